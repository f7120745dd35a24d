"""The player's device negotiation, with a fake sound library: no sound server needed.

What reaches a real speaker is tested through PulseAudio in test_say_pulse.py; this covers the
fallbacks a PulseAudio sink never needs: a device that takes neither the voice's rate nor mono.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sounddevice as sd

from voiced.audio.playback import PlaybackError, Player
from voiced.decode import resample

VOICE_RATE = 22050


class FakeStream:
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.active = False
        self.latency = 0.05

    def start(self) -> None:
        self.active = True

    def abort(self, ignore_errors: bool = True) -> None:
        self.active = False

    def close(self, ignore_errors: bool = True) -> None:
        self.active = False


@pytest.fixture
def hw_device(monkeypatch: pytest.MonkeyPatch) -> list[FakeStream]:
    """A 48 kHz stereo-only device, like a raw ALSA hw: device; returns the streams opened."""
    streams: list[FakeStream] = []
    info = {
        "index": 3,
        "name": "hw:0,0",
        "default_samplerate": 48000.0,
        "max_output_channels": 2,
    }

    def check_output_settings(*, samplerate: int, channels: int, **_: Any) -> None:
        if samplerate != 48000 or channels != 2:
            raise sd.PortAudioError("Invalid sample rate or channel count")

    def output_stream(**settings: Any) -> FakeStream:
        streams.append(FakeStream(**settings))
        return streams[-1]

    monkeypatch.setattr(sd, "query_devices", lambda *a, **k: dict(info))
    monkeypatch.setattr(sd, "check_output_settings", check_output_settings)
    monkeypatch.setattr(sd, "OutputStream", output_stream)
    return streams


def _pull(player: Player, frames: int) -> np.ndarray:
    """What the device asks for in one callback: ``frames`` frames of all its channels."""
    out = np.full((frames, player._channels), np.nan, np.float32)
    timing = SimpleNamespace(outputBufferDacTime=1.05, currentTime=1.0)
    player._callback(out, frames, timing, SimpleNamespace(output_underflow=False))
    return out


def test_a_device_that_refuses_the_voice_gets_resampled_stereo(hw_device: list) -> None:
    audio = np.sin(np.arange(VOICE_RATE) * 2 * np.pi * 440 / VOICE_RATE).astype(np.float32)
    player = Player(VOICE_RATE)
    player.play(audio, "A tone.")
    (stream,) = hw_device
    assert stream.settings["samplerate"] == 48000 and stream.settings["channels"] == 2
    assert player.device_rate == 48000

    expected = resample(audio, VOICE_RATE, 48000)
    assert abs(expected.size - 48000) <= 1
    pulled = np.concatenate([_pull(player, 480) for _ in range(expected.size // 480 + 2)])
    assert np.array_equal(pulled[:, 0], pulled[:, 1])  # the same sound on both sides
    np.testing.assert_allclose(pulled[: expected.size, 0], expected, atol=1e-6)
    assert not pulled[expected.size :].any()  # then silence, not stale samples
    assert player.wait(1).spoken == ["A tone."]


def test_a_forced_rate_the_device_refuses_is_a_clear_error(hw_device: list) -> None:
    player = Player(VOICE_RATE, device_rate=44100)
    with pytest.raises(PlaybackError, match=r"does not accept 44100 Hz"):
        player.play(np.zeros(100, np.float32))
    assert hw_device == []
