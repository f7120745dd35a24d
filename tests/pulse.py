"""A real PulseAudio server for tests: a virtual microphone and a virtual speaker.

The machines that run the tests have no sound card. This module starts a private
``pulseaudio`` (see ``shared/notes/audio-in-tests.md``) with two null sinks:

* ``spk`` (48 kHz stereo) is the **default sink**: what the program under test plays ends
  up there; record it from ``spk.monitor`` (:meth:`PulseServer.record_speaker`).
* ``micsink`` (16 kHz mono) feeds the remap source ``vmic``, the **default source**: what a
  test plays into ``micsink`` (:meth:`PulseServer.play_into_mic`) is what the program
  records from its default input device.

Both sinks use ``norewinds=1``: without it capture from a monitor stops after 3-4 s.

Usage::

    from tests import pulse as pulse_fixtures

    pulse_server = pulse_fixtures.pulse_server  # makes the fixture visible in this module

    def test_something(pulse_server):
        pulse_server.play_into_mic(audio_float32)            # blocks until played
        with pulse_server.play_into_mic(audio, wait=False):  # plays in the background
            ...
        audio = pulse_server.record_speaker(2.0)             # float32, 16 kHz mono
        recording = pulse_server.start_speaker_recording()
        ...
        audio = recording.stop()
        with pulse_server.loopback():                        # speaker -> microphone
            ...
        subprocess.run([...], env=pulse_server.env)          # env is also set in os.environ

API (all methods are safe to call from any test using the fixture):

* fixture ``pulse_server`` (session scope) -> :class:`PulseServer`. While it is alive the
  client variables ``PULSE_SERVER``, ``PULSE_COOKIE``, ``PULSE_STATE_PATH`` and
  ``PULSE_RUNTIME_PATH`` point at the private server in ``os.environ`` (so subprocesses
  inherit them); they are restored at teardown. ``HOME`` and ``XDG_RUNTIME_DIR`` are left
  alone (other tests depend on them); with these variables libpulse writes nothing there.
  If ``sounddevice`` was already imported, PortAudio is re-initialised so that its
  ``default`` device is the server (:func:`reinit_portaudio`; call it yourself if you
  import sounddevice in another way before the server starts).
* ``PulseServer.env`` -> dict: a full environment for subprocesses.
* ``PulseServer.play_into_mic(audio, rate=16000, wait=True)``: audio is a 1-D float32 array
  in [-1, 1] or int16; played through ``pacat`` into ``micsink``; with ``wait=False`` it
  returns a :class:`Playback` (``.wait()``, ``.finished()``, ``.stop()``, context manager).
* ``PulseServer.record_speaker(seconds, rate=16000)`` -> float32 mono array of what
  ``spk`` played during the next ``seconds``.
* ``PulseServer.start_speaker_recording(rate=16000)`` -> :class:`Recording`;
  ``.stop()`` returns the float32 audio since the start.
* ``PulseServer.record_mic(seconds)`` -> what the default source ``vmic`` hears.
* ``PulseServer.load_module(name, *args)`` -> module index; ``unload_module(index)``;
  ``loopback(source="spk.monitor", sink="micsink", latency_msec=30)`` context manager
  routes the speaker back into the microphone (self-hearing tests).
* ``PulseServer.pactl(*args)`` -> stdout of ``pactl``.
* ``PulseServer(directory).start()`` / ``.stop()``: a second, private server for tests that
  need to take the sound server away (device-lost tests); ``start()`` after ``stop()``
  brings it back on the same socket. Give its ``env`` to subprocesses only.

The server runs in its own session with ``PR_SET_PDEATHSIG`` so that even ``kill -9`` of
pytest takes it down; teardown terminates it and removes its temp folder, and the next
session removes the folders of sessions that were killed. Without the
Debian packages (``pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins``) the
tests that use the fixture are skipped, unless ``CI`` or ``VOICED_REQUIRE_PULSE`` is set,
in which case they fail: CI must really run them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from voiced.decode import to_int16

SPEAKER_SINK = "spk"
MIC_SINK = "micsink"
MIC_SOURCE = "vmic"

_PR_SET_PDEATHSIG = 1
_START_DEADLINE_S = 10.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def reinit_portaudio() -> None:
    """Make an already imported sounddevice see the current PulseAudio server."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


def end_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Terminate ``proc`` if it still runs; kill it if it ignores that for ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Playback:
    """``pacat`` playing a buffer into a sink, in the background."""

    def __init__(self, proc: subprocess.Popen[bytes], data: bytes) -> None:
        self._proc = proc
        self._writer = threading.Thread(target=self._feed, args=(data,), daemon=True)
        self._writer.start()

    def _feed(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # stopped early

    def finished(self) -> bool:
        """Whether everything was played (pacat drains before it exits)."""
        return self._proc.poll() is not None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until everything was played (pacat drains before it exits)."""
        self._writer.join(timeout)
        rc = self._proc.wait(timeout)
        if rc != 0:
            stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"pacat exited with {rc}: {stderr.strip()}")

    def stop(self) -> None:
        end_process(self._proc)
        self._writer.join(5)
        for stream in (self._proc.stdin, self._proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def __enter__(self) -> Playback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Recording:
    """``parec`` recording a source as 16-bit mono, collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen[bytes], rate: int) -> None:
        self.rate = rate
        self._proc = proc
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while True:
            chunk = self._proc.stdout.read1(65536)
            if not chunk:
                return
            self._chunks.append(chunk)

    def samples_so_far(self) -> int:
        return sum(len(c) for c in self._chunks) // 2

    def audio_so_far(self) -> np.ndarray:
        """What has been recorded until now (float32 mono); the recording goes on."""
        data = b"".join(list(self._chunks))
        data = data[: len(data) // 2 * 2]
        return np.frombuffer(data, dtype=np.int16).astype(np.float32) / 32768.0

    def stop(self) -> np.ndarray:
        """Stop recording; return float32 mono audio at ``rate``."""
        end_process(self._proc)
        self._reader.join(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        data = b"".join(self._chunks)
        data = data[: len(data) // 2 * 2]
        return np.frombuffer(data, dtype=np.int16).astype(np.float32) / 32768.0

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self.stop()


class PulseServer:
    """A running private PulseAudio server; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "native"
        # What clients need; libpulse then keeps its cookie and state out of the real home.
        self.env_vars = {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_COOKIE": str(directory / "cookie"),
            "PULSE_STATE_PATH": str(directory / "state"),
            "PULSE_RUNTIME_PATH": str(directory / "xdg" / "pulse"),
        }
        # The server itself also gets a private home and runtime folder.
        self.server_env_vars = {
            **self.env_vars,
            "XDG_RUNTIME_DIR": str(directory / "xdg"),
            "HOME": str(directory / "home"),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def env(self) -> dict[str, str]:
        """The current environment with the client variables for this server."""
        return {**os.environ, **self.env_vars}

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`: same socket, same sinks)."""
        for name in ("xdg", "home", "state", "xdg/pulse"):
            (self.dir / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        script = self.dir / "test.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SPEAKER_SINK} norewinds=1"
            " rate=48000 channels=2\n"
            f"load-module module-null-sink sink_name={MIC_SINK} norewinds=1 rate=16000 channels=1\n"
            f"load-module module-remap-source source_name={MIC_SOURCE} master={MIC_SINK}.monitor\n"
            f"set-default-sink {SPEAKER_SINK}\n"
            f"set-default-source {MIC_SOURCE}\n"
        )
        self._log = open(self.dir / "pulseaudio.log", "ab")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm",
                "--realtime=no",
                "--high-priority=no",
                "--log-target=stderr",
                "-F",
                str(script),
            ],
            env={**os.environ, **self.server_env_vars},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self._proc.returncode}: {self.log()}")
            probe = subprocess.run(
                ["pactl", "info"], env=self.env, capture_output=True, timeout=5, check=False
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer within 10 s: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        path = self.dir / "pulseaudio.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pactl(self, *args: str) -> str:
        result = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def load_module(self, name: str, *args: str) -> int:
        return int(self.pactl("load-module", name, *args).strip())

    def unload_module(self, index: int) -> None:
        self.pactl("unload-module", str(index))

    @contextmanager
    def loopback(
        self, source: str = f"{SPEAKER_SINK}.monitor", sink: str = MIC_SINK, latency_msec: int = 30
    ) -> Iterator[int]:
        """Route ``source`` into ``sink`` (default: speaker into microphone) while inside."""
        index = self.load_module(
            "module-loopback", f"source={source}", f"sink={sink}", f"latency_msec={latency_msec}"
        )
        try:
            yield index
        finally:
            self.unload_module(index)

    def play_into_mic(
        self, audio: np.ndarray, rate: int = 16000, *, wait: bool = True, sink: str = MIC_SINK
    ) -> Playback:
        """Play mono audio into the virtual microphone (or another ``sink``).

        pacat keeps 250 ms buffered in the server: with less, a busy machine starves the
        stream and the sink plays gaps of silence.
        """
        data = to_int16(audio).tobytes()
        proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                f"--device={sink}",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=1",
                "--raw",
                "--latency-msec=250",
            ],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        playback = Playback(proc, data)
        if wait:
            timeout = len(data) / 2 / rate + 10.0
            try:
                playback.wait(timeout)
            finally:
                playback.stop()
        return playback

    def start_recording(self, source: str, rate: int = 16000) -> Recording:
        proc = subprocess.Popen(
            [
                "parec",
                f"--device={source}",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=1",
                "--raw",
                "--latency-msec=20",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        return Recording(proc, rate)

    def start_speaker_recording(self, rate: int = 16000) -> Recording:
        """Record what is played on the default sink, until ``.stop()``."""
        return self.start_recording(f"{SPEAKER_SINK}.monitor", rate)

    def _record_for(self, source: str, seconds: float, rate: int) -> np.ndarray:
        recording = self.start_recording(source, rate)
        wanted = int(seconds * rate)
        deadline = time.monotonic() + seconds + 10.0
        while recording.samples_so_far() < wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        return recording.stop()[:wanted]

    def record_speaker(self, seconds: float, rate: int = 16000) -> np.ndarray:
        """Record the virtual speaker for ``seconds``; float32 mono."""
        return self._record_for(f"{SPEAKER_SINK}.monitor", seconds, rate)

    def record_mic(self, seconds: float, rate: int = 16000) -> np.ndarray:
        """Record the virtual microphone (default source) for ``seconds``; float32 mono."""
        return self._record_for(MIC_SOURCE, seconds, rate)


_PREFIX = "voiced-pulse-"
_OWNER = "owner.pid"


def _remove_orphans() -> None:
    """Remove folders left by test sessions that were killed (their server died with them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((folder / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "pactl", "pacat", "parec") if not shutil.which(tool)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("VOICED_REQUIRE_PULSE"):
        pytest.fail(f"PulseAudio test server required but unavailable: {reason}")
    pytest.skip(f"PulseAudio test server unavailable: {reason}")


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio server for the whole session; client env set in os.environ."""
    missing = _missing_tools()
    if missing:
        _unavailable(
            f"{', '.join(missing)} not found (apt-get install pulseaudio pulseaudio-utils "
            "libportaudio2 libasound2-plugins)"
        )
    _remove_orphans()
    directory = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (directory / _OWNER).write_text(str(os.getpid()))
    server = PulseServer(directory)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        _unavailable(str(exc))
    saved = {name: os.environ.get(name) for name in server.env_vars}
    os.environ.update(server.env_vars)
    reinit_portaudio()
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        # No PortAudio re-initialisation here: without the server, libpulse would go looking
        # for one in the real home. The process is ending anyway.
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
