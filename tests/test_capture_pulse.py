"""Capture through a real PulseAudio server: devices, blocks, bit-exact audio, overflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from tests.pulse import PulseServer
from tests.speech import synthesize
from voiced.audio.capture import (
    Capture,
    DeviceError,
    _Resampler,
    capture_blocks,
    find_device,
    list_devices,
)
from voiced.config import AudioSettings

RATE = 16000
pulse_server = pulse_fixtures.pulse_server


def test_devices_are_listed_with_host_api_and_default_marks(pulse_server) -> None:
    devices = list_devices()
    names = [d.name for d in devices]
    assert "pulse" in names and "default" in names
    assert all(d.hostapi == "ALSA" for d in devices)
    assert sum(d.default_input for d in devices) == 1
    assert sum(d.default_output for d in devices) == 1
    assert find_device(None, "input").default_input


def test_voiced_devices_prints_a_table_and_json(pulse_server) -> None:
    run = [sys.executable, "-m", "voiced", "devices"]
    table = subprocess.run(run, capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "in", "out", "rate", "host", "API", "name"]
    default_line = next(line for line in lines if "default input" in line)
    assert default_line.startswith("><") and "ALSA" in default_line
    as_json = subprocess.run(
        [*run, "--json", "--kind", "input"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {r["name"] for r in records} >= {"pulse", "default"}
    assert all(r["input_channels"] > 0 and r["hostapi"] == "ALSA" for r in records)


def test_devices_are_found_by_index_or_name_substring(pulse_server) -> None:
    pulse = find_device("PULS", "input")
    assert pulse.name == "pulse"
    assert find_device(pulse.index, "input") == pulse
    assert find_device(str(pulse.index), "input") == pulse
    assert find_device("default", "output").name == "default"


@pytest.mark.parametrize("spec", ["no such microphone", 99])
def test_an_unknown_device_is_a_clear_error_listing_candidates(pulse_server, spec) -> None:
    with pytest.raises(DeviceError) as error:
        find_device(spec, "input")
    message = str(error.value)
    assert str(spec) in message
    assert "'pulse' (ALSA)" in message and "'default' (ALSA)" in message


def _capture_while_playing(server: PulseServer, audio: np.ndarray, settings: AudioSettings) -> list:
    blocks = []
    with Capture(settings) as capture:
        playback = server.play_into_mic(audio, wait=False)
        deadline = time.monotonic() + audio.size / RATE + 10
        while time.monotonic() < deadline:
            block = capture.read(timeout=0.5)
            if block is not None:
                blocks.append(block)
                # Once pacat has played it all, the first block of digital silence comes
                # after the whole clip (its noise floor never gives one).
                if playback.finished() and not block.samples.any():
                    break
        playback.wait()
    return blocks


@pytest.mark.parametrize("block_ms", [10, 20, 30])
def test_captured_blocks_hold_exactly_what_was_played(pulse_server, block_ms: int) -> None:
    speech = synthesize("Capture me exactly, please.", seed=4)
    blocks = _capture_while_playing(pulse_server, speech, AudioSettings(block_ms=block_ms))
    size = RATE * block_ms // 1000
    assert all(b.samples.dtype == np.int16 and b.samples.shape == (size,) for b in blocks)
    starts = [b.start_s for b in blocks]
    assert starts == pytest.approx([i * size / RATE for i in range(len(blocks))])
    assert blocks[0].discontinuity and not any(b.discontinuity for b in blocks[1:])
    captured = np.concatenate([b.samples for b in blocks]).astype(np.float64)
    played = np.round(np.clip(speech, -1, 1) * 32767).astype(np.float64)
    # Find the whole clip in the recording: the virtual microphone is bit-exact.
    lag = int(np.argmax(np.correlate(captured, played, mode="valid")))
    np.testing.assert_array_equal(captured[lag : lag + played.size], played)


def test_a_full_queue_counts_and_logs_overflow(pulse_server, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="voiced.audio.capture")
    settings = AudioSettings(block_ms=10, queue_blocks=10)
    with Capture(settings) as capture:
        time.sleep(1.0)  # nobody reads: 100 blocks arrive for 10 places
        first = capture.read(timeout=1.0)
        later = [capture.read(timeout=1.0) for _ in range(20)]
    assert capture.dropped_blocks >= 50
    assert first is not None and first.discontinuity
    assert any("overflow" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)
    # A later loss is flagged on the block that follows it, not on every block.
    assert sum(b.discontinuity for b in later if b is not None) <= 1


def test_capture_blocks_yields_until_stopped(pulse_server) -> None:
    stop = threading.Event()
    states = []
    received = 0
    for block in capture_blocks(
        AudioSettings(), stop=stop, on_state=lambda s, m: states.append((s, m))
    ):
        received += 1
        if received == 20:
            stop.set()
        assert block.samples.size == 480
    assert received == 20
    assert states[0][0] == "open" and "default" in states[0][1]


def test_streaming_resampler_matches_the_rate_and_pitch() -> None:
    rate_in = 48000
    t = np.arange(rate_in * 2) / rate_in
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = _Resampler(rate_in)
    out = np.concatenate([resampler(tone[i : i + 1440]) for i in range(0, tone.size, 1440)])
    assert abs(out.size - 2 * RATE) <= 64
    spectrum = np.abs(np.fft.rfft(out[2000:18000]))
    peak_hz = np.argmax(spectrum) * RATE / 16000
    assert abs(peak_hz - 440) <= 2
