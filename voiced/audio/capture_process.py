"""Microphone capture in a child process, so that a wedged audio library can be killed.

PortAudio 19.6 (Debian 12, Ubuntu 22.04 and 24.04) has an error path in its ALSA host that
loops forever: when the sound server goes away under an open stream, its callback thread may
spin printing ``Expression 'self->capture.ready || self->playback.ready' failed`` with
thread cancellation off, and closing the stream waits for that thread for ever. Inside one
process nothing can stop it: the capture thread hangs in ``Pa_CloseStream``, the flood fills
the journal, and the microphone never comes back. In a child process it costs one kill.

:class:`CaptureProcess` has the interface of :class:`~voiced.audio.capture.Capture`; the
child (``python -m voiced.audio.capture_process``) runs a ``Capture`` and writes its blocks
to a pipe. The child leaves when its stdin closes (the parent exited or closed it), and it
never closes a stream that failed: process exit releases it. Its log records come back
through stderr and are logged here; the audio library's own lines are logged at debug
level, and a line repeated without end means the library is stuck: the child is killed.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from voiced.audio.capture import (
    SAMPLE_RATE,
    STALL_S,
    AudioBlock,
    Capture,
    DeviceError,
)
from voiced.config import AudioSettings

log = logging.getLogger(__name__)

# Each block: the time.time() it arrived, its sample count, whether audio was lost before it.
HEADER = struct.Struct("<dI?")
LOG_MARK = "\x1evoiced\t"  # starts a log record from the child (not the audio library)
LOST_MARK = "\x1elost\t"  # starts the child's last word: why the device was lost
# The same line from the audio library this many times in a row: it is stuck in a loop.
STUCK_REPEATS = 200
START_TIMEOUT_S = 20.0
EXIT_WAIT_S = 1.0


class CaptureProcess:
    """An input stream read in a child process; use as a context manager and call :meth:`read`."""

    child_command: tuple[str, ...] = (sys.executable, "-m", "voiced.audio.capture_process")

    def __init__(
        self,
        settings: AudioSettings | None = None,
        device: int | str | None = None,
        *,
        stream_offset_s: float = 0.0,
    ) -> None:
        self.settings = settings or AudioSettings()
        self.device_spec = device if device is not None else self.settings.input_device
        self.device_name = ""
        self._samples = round(stream_offset_s * SAMPLE_RATE)
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._last_block_at = 0.0
        self._stderr_thread: threading.Thread | None = None
        self._stuck_line: str | None = None
        self._last_error: str | None = None

    @property
    def stream_time_s(self) -> float:
        return self._samples / SAMPLE_RATE

    def describe(self) -> str:
        return self.device_name or "the input device"

    def open(self) -> CaptureProcess:
        request = {"settings": self.settings.model_dump(mode="json"), "device": self.device_spec}
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [*self.child_command, json.dumps(request)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        self._stderr_thread = threading.Thread(
            target=self._relay_stderr, name="voiced-capture-log", daemon=True
        )
        self._stderr_thread.start()
        line = self._read_line(START_TIMEOUT_S)
        try:
            hello = json.loads(line) if line else {}
        except ValueError:
            hello = {}
        if "device" not in hello:
            self._kill()
            self.close()
            raise DeviceError(
                hello.get("error") or self._last_error or "the capture process did not start"
            )
        self.device_name = str(hello["device"])
        self._last_block_at = time.monotonic()
        return self

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()  # the child's signal to leave
        except OSError:
            pass
        try:
            process.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            log.debug("the capture process did not leave; killing it")
            process.kill()
            process.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(EXIT_WAIT_S)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> CaptureProcess:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout: float = 0.5) -> AudioBlock | None:
        """The next block, or None after ``timeout`` seconds without one.

        Raises :class:`DeviceError` when the child reports a lost device, ends, stalls or is
        stuck in the audio library (it is then killed).
        """
        process = self._process
        if process is None:
            raise DeviceError("the input stream is not open")
        deadline = time.monotonic() + timeout
        while True:
            block = self._next_block()
            if block is not None:
                self._last_block_at = time.monotonic()
                return block
            if self._stuck_line is not None:
                self._kill()
                raise DeviceError(
                    f"{self.describe()} failed and the audio library is stuck in a loop "
                    f"({self._stuck_line!r}; a PortAudio 19.6 bug); restarted the capture"
                )
            if time.monotonic() - self._last_block_at > STALL_S:
                self._kill()
                raise DeviceError(
                    f"{self.describe()} delivered no audio for {STALL_S:.0f} s (disconnected?)"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._fill(min(left, 0.1)):
                process.wait()
                if self._stderr_thread is not None:
                    self._stderr_thread.join(EXIT_WAIT_S)  # the child's last word
                raise DeviceError(
                    self._last_error
                    or f"the capture process ended unexpectedly (exit status {process.returncode})"
                )

    def _fill(self, timeout: float) -> bool:
        """Read what the pipe has within ``timeout``; False at its end."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return True
        data = os.read(fd, 1 << 16)
        if not data:
            return False
        self._buffer += data
        return True

    def _next_block(self) -> AudioBlock | None:
        if len(self._buffer) < HEADER.size:
            return None
        captured_at, count, discontinuity = HEADER.unpack_from(self._buffer)
        end = HEADER.size + 2 * count
        if len(self._buffer) < end:
            return None
        samples = np.frombuffer(bytes(self._buffer[HEADER.size : end]), dtype=np.int16)
        del self._buffer[:end]
        block = AudioBlock(samples, self._samples / SAMPLE_RATE, captured_at, discontinuity)
        self._samples += count
        return block

    def _read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(min(left, 0.1)):
                return b""
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def _relay_stderr(self) -> None:
        """Log the child's records; collapse the audio library's repeats; spot a loop."""
        assert self._process is not None and self._process.stderr is not None
        stream = self._process.stderr
        previous, repeats = "", 0
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(LOST_MARK):
                self._last_error = line[len(LOST_MARK) :]
                continue
            if line.startswith(LOG_MARK):
                level, name, message = [*line[len(LOG_MARK) :].split("\t", 2), "", ""][:3]
                logging.getLogger(name or __name__).log(
                    logging.getLevelName(level) if level.isupper() else logging.INFO,
                    "%s",
                    message.replace("\x1f", "\n"),
                )
                continue
            if line == previous:
                repeats += 1
                if repeats == STUCK_REPEATS:
                    self._stuck_line = line
                    log.warning("the audio library repeats without end: %s", line)
                    return  # stop reading: the looping thread blocks on the full pipe
                continue
            previous, repeats = line, 0
            if line.strip():
                log.debug("audio library: %s", line)


# -- the child ---------------------------------------------------------------------------------


class _ChildLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return f"{LOG_MARK}{record.levelname}\t{record.name}\t{message.replace(chr(10), chr(31))}"


def _leave_when_stdin_closes() -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os._exit(0)  # never close the stream: a failed one may hang in PortAudio


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def child_main(request_json: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ChildLogFormatter())
    logging.basicConfig(level=logging.DEBUG, handlers=[handler], force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_leave_when_stdin_closes, daemon=True).start()
    out = sys.stdout.fileno()
    request = json.loads(request_json)
    capture = Capture(AudioSettings(**request["settings"]), request["device"])
    try:
        capture.open()
    except DeviceError as exc:
        _write_all(out, json.dumps({"error": str(exc)}).encode() + b"\n")
        os._exit(2)
    name = capture.device.describe() if capture.device else ""
    _write_all(out, json.dumps({"device": name}).encode() + b"\n")
    try:
        while True:
            block = capture.read(timeout=0.5)
            if block is not None:
                header = HEADER.pack(block.captured_at, block.samples.size, block.discontinuity)
                _write_all(out, header + block.samples.tobytes())
    except DeviceError as exc:
        sys.stderr.write(f"{LOST_MARK}{exc}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    except Exception:
        log.exception("the capture process failed")
    os._exit(2)


if __name__ == "__main__":
    child_main(sys.argv[1])
