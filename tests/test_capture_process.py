"""Capture in a child process: a wedged audio library costs a kill, never the listener.

The wedged children here are small scripts that behave as PortAudio 19.6's ALSA thread does
when the sound server goes away (the same error line printed without end, the blocks stop,
a closed stdin ignored); the real loss of a real sound server is in test_daemon_device.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from voiced.audio.capture import DeviceError
from voiced.audio.capture_process import STUCK_REPEATS, CaptureProcess
from voiced.config import AudioSettings

pulse_server = pulse_fixtures.pulse_server

PORTAUDIO_LOOP = (
    "Expression 'self->capture.ready || self->playback.ready' failed in "
    "'src/hostapi/alsa/pa_linux_alsa.c', line: 3958"
)


def scripted_child(tmp_path: Path, body: str) -> tuple[str, ...]:
    """A child command that says hello, sends ``blocks`` blocks of ramps, then runs ``body``."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, signal, struct, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            out = sys.stdout.fileno()
            os.write(out, json.dumps({"device": "0 'scripted' (ALSA)"}).encode() + b"\\n")
            for i in range(5):
                data = bytes(range(256)) * 3 + bytes(range(192))
                os.write(out, struct.pack("<dI?", time.time(), 480, i == 0) + data)
            """
        )
        + textwrap.dedent(body)
    )
    return (sys.executable, str(script))


class Scripted(CaptureProcess):
    def __init__(self, command: tuple[str, ...]) -> None:
        super().__init__(AudioSettings())
        self.child_command = command


def read_until_error(capture: CaptureProcess, limit_s: float = 30.0) -> tuple[int, DeviceError]:
    blocks = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if capture.read(timeout=0.2) is not None:
                blocks += 1
        except DeviceError as exc:
            return blocks, exc
    raise AssertionError("the capture never gave up on its child")


def test_a_child_stuck_in_the_audio_library_loop_is_killed(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    command = scripted_child(
        tmp_path,
        f"""
        line = {PORTAUDIO_LOOP!r} + "\\n"
        while True:  # as PortAudio 19.6 does: stdin closed or not, for ever
            sys.stderr.write(line)
        """,
    )
    capture = Scripted(command).open()
    process = capture._process
    try:
        blocks, error = read_until_error(capture)
    finally:
        capture.close()
    assert blocks == 5
    assert "stuck in a loop" in str(error) and "PortAudio" in str(error)
    assert process is not None and process.poll() is not None  # killed, not left spinning
    relayed = [r for r in caplog.records if "pa_linux_alsa.c" in r.getMessage()]
    # One line at debug level, one warning: never the flood.
    assert 1 <= len(relayed) <= 3, len(relayed)
    assert len(caplog.records) < STUCK_REPEATS


def test_a_child_that_goes_silent_is_a_stalled_device(tmp_path) -> None:
    command = scripted_child(tmp_path, "time.sleep(3600)\n")
    capture = Scripted(command).open()
    process = capture._process
    try:
        blocks, error = read_until_error(capture)
    finally:
        capture.close()
    assert blocks == 5
    assert "delivered no audio" in str(error) and "scripted" in str(error)
    assert process is not None and process.poll() is not None


def test_blocks_keep_their_samples_and_a_continuous_clock(tmp_path) -> None:
    command = scripted_child(tmp_path, "sys.exit(0)\n")
    capture = Scripted(command)
    capture._samples = 16000  # as after a reconnect one second into the stream
    capture.open()
    try:
        blocks = []
        with pytest.raises(DeviceError, match="ended unexpectedly"):
            while True:
                block = capture.read(timeout=0.5)
                if block is not None:
                    blocks.append(block)
    finally:
        capture.close()
    expected = np.frombuffer(bytes(range(256)) * 3 + bytes(range(192)), dtype=np.int16)
    assert [b.start_s for b in blocks] == [1.0 + i * 0.03 for i in range(5)]
    assert all(np.array_equal(b.samples, expected) for b in blocks)
    assert [b.discontinuity for b in blocks] == [True, False, False, False, False]


def test_the_child_says_why_the_device_cannot_be_opened() -> None:
    with pytest.raises(DeviceError, match="no input device matches 'no-such-microphone'"):
        CaptureProcess(AudioSettings(), "no-such-microphone").open()


@pytest.mark.pulse
def test_the_child_leaves_with_its_parent(pulse_server, tmp_path) -> None:
    """A parent killed outright (SIGKILL, OOM) leaves no capture process behind."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from voiced.audio.capture_process import CaptureProcess
                capture = CaptureProcess().open()
                assert capture.read(timeout=5) is not None
                print(capture._process.pid, flush=True)
                time.sleep(3600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        env=os.environ,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the capture process outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
