"""Synthetic noise for tests: the sounds whisper turns into text, and steady room noise.

Each maker returns float32 mono 16 kHz audio with a -60 dBFS room floor under it. They stand in
for real recordings (tests/recordings.py) where a test needs a sound of a known shape.
"""

from __future__ import annotations

import numpy as np

from tests.speech import noise

RATE = 16000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * RATE)) / RATE


def _at(audio: np.ndarray, dbfs: float) -> np.ndarray:
    """``audio`` scaled so that its loud part (frames above -70 dBFS) has RMS ``dbfs``."""
    loud = audio[np.abs(audio) > 10 ** (-70 / 20)]
    rms = np.sqrt(np.mean(loud**2)) if loud.size else 1.0
    return audio * (10 ** (dbfs / 20) / rms)


def _room(audio: np.ndarray, seed: int) -> np.ndarray:
    lead = np.zeros(RATE // 2)
    out = np.concatenate([lead, audio, lead])
    return (out + noise(out.size / RATE, seed=seed)[: out.size]).astype(np.float32)


def car_horn(seconds: float = 2.0, dbfs: float = -20.0, seed: int = 0) -> np.ndarray:
    """Two honks of a two-tone horn (~420 and 520 Hz with harmonics, slightly rough)."""
    t = _t(seconds)
    tone = sum((np.sin(2 * np.pi * f * k * t) / k) for f in (420.0, 523.0) for k in range(1, 6)) * (
        1 + 0.1 * np.sin(2 * np.pi * 30 * t)
    )
    gate = ((t % 1.0) < 0.6).astype(float)
    return _room(_at(tone * gate, dbfs), seed)


def beeps(seconds: float = 3.0, dbfs: float = -20.0, seed: int = 1) -> np.ndarray:
    """A reversing truck: 1 kHz beeps of 250 ms every 500 ms."""
    t = _t(seconds)
    tone = np.sin(2 * np.pi * 1000 * t) * ((t % 0.5) < 0.25)
    return _room(_at(tone, dbfs), seed)


def alarm(seconds: float = 3.0, dbfs: float = -20.0, seed: int = 2) -> np.ndarray:
    """A siren sweeping 600-1200 Hz twice a second, with harmonics."""
    t = _t(seconds)
    freq = 900 + 300 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    tone = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    return _room(_at(tone, dbfs), seed)


def knocks(seconds: float = 3.0, dbfs: float = -20.0, seed: int = 3) -> np.ndarray:
    """Knocking on a door: decaying bursts of low thud and noise, three per second."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE))
    n = int(0.08 * RATE)
    env = np.exp(-np.arange(n) / (0.012 * RATE))
    thud = np.sin(2 * np.pi * 180 * np.arange(n) / RATE)
    for start in range(0, out.size - n, RATE // 3):
        out[start : start + n] += env * (thud + 0.5 * rng.standard_normal(n))
    return _room(_at(out, dbfs), seed)


def pink_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """Pink noise at ``dbfs`` RMS (no room floor)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * RATE))
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(white.size, 1 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    pink = np.fft.irfft(spectrum, white.size)
    pink *= 10 ** (dbfs / 20) / np.sqrt(np.mean(pink**2))
    return pink.astype(np.float32)


def mix(speech: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` with ``background`` (looped to its length) at ``snr_db`` below its loud part."""
    bed = np.resize(background, speech.size).astype(np.float64)
    loud = speech[np.abs(speech) > 0.01]
    speech_power = np.mean(loud.astype(np.float64) ** 2)
    bed *= np.sqrt(speech_power / np.mean(bed**2) / 10 ** (snr_db / 10))
    return np.clip(speech + bed, -1.0, 1.0).astype(np.float32)


def reverberate(audio: np.ndarray, rt60_s: float, seed: int = 0) -> np.ndarray:
    """``audio`` in a reverberant room: convolved with decaying noise (60 dB down at ``rt60_s``).

    Reverberation smears a voice's rise and fall between syllables, as in a real room; the
    peak level is kept.
    """
    n = int(rt60_s * RATE)
    rng = np.random.default_rng(seed)
    response = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    response[0] = 1.0
    wet = np.convolve(audio, response)[: audio.size]
    return (wet / np.abs(wet).max() * np.abs(audio).max()).astype(np.float32)
