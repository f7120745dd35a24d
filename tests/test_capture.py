"""Capture without a sound server: the rate/channel fallback, overflow flags, retry backoff.

PortAudio itself is faked here only where a device would be needed; the sounddevice flag
type, the resampler and the capture logic are the real ones.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from typing import Any, ClassVar

import numpy as np
import pytest
import sounddevice as sd

from voiced.audio import capture as capture_module
from voiced.audio.capture import BACKOFF_MAX_S, BACKOFF_START_S, Capture, Device, capture_blocks
from voiced.config import AudioSettings

RATE = 16000


def a_device(*, channels: int = 2, rate: float = 48000.0) -> Device:
    return Device(
        index=3,
        name="hw:USB Mic",
        hostapi="ALSA",
        input_channels=channels,
        output_channels=0,
        default_samplerate=rate,
        default_input=True,
        default_output=False,
    )


class StereoOnlyStream:
    """An InputStream on a raw ALSA device that records 2 channels at 48 kHz and nothing else."""

    opened: ClassVar[list[StereoOnlyStream]] = []

    def __init__(self, *, device, samplerate, channels, dtype, blocksize, callback) -> None:
        if channels != 2 or samplerate != 48000:
            raise sd.PortAudioError("Invalid number of channels [PaErrorCode -9998]")
        self.device, self.samplerate, self.channels = device, samplerate, channels
        self.dtype, self.blocksize, self.callback = dtype, blocksize, callback
        self.active = False
        StereoOnlyStream.opened.append(self)

    def start(self) -> None:
        self.active = True

    def close(self, ignore_errors: bool = True) -> None:
        self.active = False


@pytest.fixture
def stereo_only_device(monkeypatch: pytest.MonkeyPatch) -> Device:
    device = a_device()

    def check_input_settings(*, device, channels, dtype, samplerate) -> None:
        if channels != 2 or samplerate != 48000:
            raise sd.PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    monkeypatch.setattr(capture_module, "find_device", lambda spec, kind="input": device)
    monkeypatch.setattr(sd, "check_input_settings", check_input_settings)
    monkeypatch.setattr(sd, "InputStream", StereoOnlyStream)
    StereoOnlyStream.opened.clear()
    return device


def tone(freq: float, seconds: float, rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level_at(audio: np.ndarray, freq: float, rate: int = RATE) -> float:
    """Amplitude of the ``freq`` component (Hann-windowed FFT, normalised to a sine's peak)."""
    window = np.hanning(audio.size)
    spectrum = np.abs(np.fft.rfft(audio * window)) / (window.sum() / 2)
    return float(spectrum[round(freq * audio.size / rate)])


def test_a_stereo_only_device_at_its_own_rate_gives_16_khz_mono_blocks(
    stereo_only_device: Device,
) -> None:
    settings = AudioSettings(block_ms=30, blocks_per_callback=2)
    with Capture(settings) as capture:
        (stream,) = StereoOnlyStream.opened
        assert (stream.samplerate, stream.channels, stream.dtype) == (48000, 2, "float32")
        assert stream.blocksize == 48000 * 60 // 1000  # two 30 ms blocks per callback
        # Left and right share a 440 Hz voice; a 3 kHz tone in opposite phase cancels in mono.
        voice = tone(440, 1.2, 48000, 0.25)
        hiss = tone(3000, 1.2, 48000, 0.25)
        stereo = np.stack([voice + hiss, voice - hiss], axis=1)
        for offset in range(0, stereo.shape[0], stream.blocksize):
            chunk = stereo[offset : offset + stream.blocksize]
            stream.callback(chunk, chunk.shape[0], None, sd.CallbackFlags())
        blocks = []
        while (block := capture.read(timeout=0.01)) is not None:
            blocks.append(block)
    assert len(blocks) >= 35  # 1.2 s, less the resampler's delay
    assert all(b.samples.dtype == np.int16 and b.samples.shape == (480,) for b in blocks)
    assert [b.start_s for b in blocks] == pytest.approx([i * 0.030 for i in range(len(blocks))])
    mono = np.concatenate([b.samples for b in blocks[5:]]).astype(np.float32) / 32768.0
    assert level_at(mono, 440) == pytest.approx(0.25, rel=0.05)  # the pitch kept: 16 kHz out
    assert level_at(mono, 3000) < 0.25 / 100  # averaged, not one channel taken


def test_a_device_with_mono_at_its_own_rate_is_recorded_in_mono(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Averaging two channels can cancel a mic array whose second channel is phase-inverted:
    # mono at the device's rate comes first.
    opened: list[dict[str, Any]] = []

    def check_input_settings(*, device, channels, dtype, samplerate) -> None:
        if samplerate != 48000:
            raise sd.PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    class Stream:
        def __init__(self, **settings: Any) -> None:
            opened.append(settings)
            self.active = False

        def start(self) -> None:
            self.active = True

        def close(self, ignore_errors: bool = True) -> None:
            self.active = False

    monkeypatch.setattr(capture_module, "find_device", lambda spec, kind="input": a_device())
    monkeypatch.setattr(sd, "check_input_settings", check_input_settings)
    monkeypatch.setattr(sd, "InputStream", Stream)
    with Capture(AudioSettings()):
        pass
    assert [(s["samplerate"], s["channels"]) for s in opened] == [(48000, 1)]


def test_a_portaudio_input_overflow_is_counted_and_logged(
    stereo_only_device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voiced.audio.capture")
    with Capture(AudioSettings(blocks_per_callback=1)) as capture:
        (stream,) = StereoOnlyStream.opened
        silence = np.zeros((stream.blocksize, 2), dtype=np.float32)
        ok, overflowed = sd.CallbackFlags(), sd.CallbackFlags(sd._lib.paInputOverflow)
        blocks = []
        for status in [ok] * 5 + [overflowed] + [ok] * 5:
            stream.callback(silence, stream.blocksize, None, status)
            while (block := capture.read(timeout=0.01)) is not None:
                blocks.append(block)
    assert capture.overflows == 1 and capture.dropped_blocks == 0
    # The first block, and the first one after the overflow, say audio was lost before them.
    lost_before = [i for i, b in enumerate(blocks) if b.discontinuity]
    assert len(lost_before) == 2 and lost_before[0] == 0
    assert blocks[lost_before[1]].start_s == pytest.approx(5 * 0.030, abs=0.030)
    (warning,) = [r.getMessage() for r in caplog.records if "overflow" in r.getMessage()]
    assert "1 block(s) lost" in warning and "1 PortAudio overflows" in warning


class StopAfter(threading.Event):
    """A stop event that records each backoff wait and is set after ``waits`` of them."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits = waits
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waited.append(timeout)
        if len(self.waited) >= self.waits:
            self.set()
        return self.is_set()


def test_retries_back_off_doubling_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_device(spec: Any, kind: str = "input") -> Device:
        raise capture_module.DeviceError("no input device found (is a sound server running?)")

    monkeypatch.setattr(capture_module, "find_device", no_device)
    caplog.set_level(logging.ERROR, logger="voiced.audio.capture")
    stop = StopAfter(waits=8)
    assert list(capture_blocks(AudioSettings(), stop=stop, in_process=True)) == []
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert (expected[0], expected[-1]) == (BACKOFF_START_S, BACKOFF_MAX_S)
    assert stop.waited == expected
    logged = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"retrying in ([\d.]+) s", r.getMessage()))
    ]
    assert logged == expected


CHATTY_RESCANS = """
import logging, sys, threading, time
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
from voiced.audio.capture import rescan_devices
def chatter():
    for i in range(400):
        logging.info("line %d", i)
        time.sleep(0.001)
thread = threading.Thread(target=chatter)
thread.start()
for _ in range(5):
    rescan_devices()
    time.sleep(0.02)
thread.join()
"""


def test_no_log_line_is_lost_while_portaudio_is_rescanned() -> None:
    # PortAudio's initialisation points stderr at /dev/null for the whole process; a daemon
    # retrying for its microphone must not lose other threads' log lines (journald's copy).
    result = subprocess.run(
        [sys.executable, "-c", CHATTY_RESCANS],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PULSE_SERVER": "unix:/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(400)]
