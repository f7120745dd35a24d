"""Reference data from other projects, fetched once from a pinned package and cached.

OpenAI's own mel filterbank (``whisper/assets/mel_filters.npz``, MIT), the file Whisper
computes its log-mel input with and whisper.cpp's ``convert-pt-to-ggml.py`` copies into every
ggml model: the independent reference for :func:`voiced.speech.ggml.mel_filters`. It comes from
the pinned ``openai-whisper`` source archive on PyPI (``pip download --no-deps``, checked
against its sha256); only the .npz is kept, under ``~/.cache/voiced/reference``.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

WHISPER_SDIST = "openai_whisper-20250625.tar.gz"
WHISPER_VERSION = "20250625"
WHISPER_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
MEMBER = f"openai_whisper-{WHISPER_VERSION}/whisper/assets/mel_filters.npz"


def reference_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voiced" / "reference"


def _fetch(target: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary"]
        command += [":all:", "-d", folder, f"openai-whisper=={WHISPER_VERSION}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        sdist = Path(folder) / WHISPER_SDIST
        if result.returncode != 0 or not sdist.is_file():
            raise RuntimeError(f"pip download openai-whisper failed: {result.stderr[-600:]}")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != WHISPER_SHA256:
            raise RuntimeError(f"{WHISPER_SDIST}: sha256 {digest}, expected {WHISPER_SHA256}")
        with tarfile.open(sdist) as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise RuntimeError(f"{WHISPER_SDIST} has no {MEMBER}")
            data = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)


def openai_mel_filters(n_mels: int = 80) -> np.ndarray:
    """OpenAI's mel filterbank for ``n_mels`` (80 or 128) bands, shape (n_mels, 201).

    Fails (under CI) or skips (elsewhere) with the reason when it cannot be fetched.
    """
    target = reference_root() / f"openai-whisper-{WHISPER_VERSION}-mel_filters.npz"
    try:
        if not target.is_file():
            _fetch(target)
        with np.load(io.BytesIO(target.read_bytes())) as npz:
            return np.array(npz[f"mel_{n_mels}"])
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        reason = f"OpenAI's mel filters unavailable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
