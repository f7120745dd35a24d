"""Microphone capture: 16 kHz mono int16 blocks from a sounddevice InputStream.

The PortAudio callback does nothing but copy the block onto a bounded queue
(``audio.queue_blocks``); a full queue drops the block and counts it, as do PortAudio input
overflows, and the reader logs both. When the device cannot give 16 kHz mono, the stream
runs at its own rate with up to two channels, and the reader downmixes and resamples.

:func:`capture_blocks` is what long-running listeners use: it opens the device, yields
:class:`AudioBlock` objects, and when the device disappears or cannot be opened it says so
in the log and retries with backoff until asked to stop.

``sounddevice`` (PortAudio) is imported only when a device is listed or opened.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from voiced.config import AudioSettings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# No callback for this long while the stream claims to run: the device is gone.
STALL_S = 3.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0

Kind = Literal["input", "output"]


class DeviceError(Exception):
    """A device that cannot be found, opened or kept; the message is for the user."""


@contextlib.contextmanager
def _log_records_held() -> Iterator[None]:
    """Make other threads' log records wait while PortAudio initialises.

    sounddevice points file descriptor 2 at /dev/null for the whole process during
    ``Pa_Initialize`` (to hide ALSA's probing noise), so a record written meanwhile would be
    lost, journald's copy included. Holding the root handlers' locks delays them instead.
    """
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.acquire()
    try:
        yield
    finally:
        for handler in reversed(handlers):
            handler.release()


def _sounddevice() -> ModuleType:
    try:
        with _log_records_held():
            import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        raise DeviceError(
            f"cannot load PortAudio ({exc}); install it (Debian: apt install libportaudio2)"
        ) from None
    return sounddevice


def rescan_devices() -> None:
    """Re-initialise PortAudio so that devices added or restarted since are seen.

    This closes every open PortAudio stream in the process: only call it when none is open.
    """
    sd = _sounddevice()
    with _log_records_held():
        sd._terminate()
        sd._initialize()


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi: str
    input_channels: int
    output_channels: int
    default_samplerate: float
    default_input: bool
    default_output: bool

    def channels(self, kind: Kind) -> int:
        return self.input_channels if kind == "input" else self.output_channels

    def describe(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi})"


def list_devices() -> list[Device]:
    """Every PortAudio device with its host API and default marks."""
    sd = _sounddevice()
    try:
        entries = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    default_in, default_out = _defaults(sd)
    return [
        Device(
            index=index,
            name=entry["name"],
            hostapi=hostapis[entry["hostapi"]]["name"],
            input_channels=entry["max_input_channels"],
            output_channels=entry["max_output_channels"],
            default_samplerate=float(entry["default_samplerate"]),
            default_input=index == default_in,
            default_output=index == default_out,
        )
        for index, entry in enumerate(entries)
    ]


def _defaults(sd: ModuleType) -> tuple[int, int]:
    try:
        default_in, default_out = sd.default.device
    except (TypeError, ValueError):
        return -1, -1
    devices = sd.query_devices()

    def index_of(value: Any, kind: Kind) -> int:
        if value is None or value == -1:
            try:
                return int(sd.query_devices(kind=kind)["index"])
            except (sd.PortAudioError, KeyError, ValueError):
                return -1
        if isinstance(value, str):
            names = [d["name"] for d in devices]
            return names.index(value) if value in names else -1
        return int(value)

    return index_of(default_in, "input"), index_of(default_out, "output")


def find_device(spec: int | str | None, kind: Kind = "input") -> Device:
    """The device named by ``spec``: None = the default, an index, or a name substring.

    Raises :class:`DeviceError` naming the candidates when nothing fits.
    """
    devices = list_devices()
    candidates = [d for d in devices if d.channels(kind) > 0]
    listing = "; ".join(d.describe() for d in candidates) or "none"
    if spec is None:
        for device in candidates:
            if device.default_input if kind == "input" else device.default_output:
                return device
        if candidates:
            return candidates[0]
        raise DeviceError(f"no {kind} device found (is a sound server running?)")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        for device in candidates:
            if device.index == index:
                return device
        raise DeviceError(f"no {kind} device with index {index}; {kind}s: {listing}")
    wanted = spec.strip().casefold()
    exact = [d for d in candidates if d.name.casefold() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in candidates if wanted in d.name.casefold()]
    if not matches:
        raise DeviceError(f"no {kind} device matches {spec!r}; {kind}s: {listing}")
    if len(matches) > 1:
        log.info(
            "%r matches several %s devices (%s); using %s",
            spec,
            kind,
            "; ".join(d.describe() for d in matches),
            matches[0].describe(),
        )
    return matches[0]


@dataclass(frozen=True)
class AudioBlock:
    """One block of captured audio: int16 mono at 16 kHz.

    ``start_s`` is the stream time of its first sample (samples delivered so far / rate,
    continuous across reconnects); ``captured_at`` the ``time.time()`` at which the block
    arrived; ``discontinuity`` is true when audio before it was lost (first block after a
    (re)open, or blocks dropped on overflow).
    """

    samples: np.ndarray
    start_s: float
    captured_at: float
    discontinuity: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


class _Resampler:
    """Streaming float32 mono resampler (libswresample via PyAV) for odd device rates."""

    def __init__(self, rate_in: int) -> None:
        import av

        self._av = av
        self.rate_in = rate_in
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, dtype=np.float32)[np.newaxis, :],
            format="flt",
            layout="mono",
        )
        frame.sample_rate = self.rate_in
        pieces = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


class Capture:
    """An open input stream; use as a context manager and call :meth:`read`."""

    def __init__(
        self,
        settings: AudioSettings | None = None,
        device: int | str | None = None,
        *,
        stream_offset_s: float = 0.0,
    ) -> None:
        self.settings = settings or AudioSettings()
        self.device_spec = device if device is not None else self.settings.input_device
        self.block_samples = SAMPLE_RATE * self.settings.block_ms // 1000
        self.device: Device | None = None
        self.overflows = 0  # PortAudio input overflows
        self.dropped_blocks = 0  # blocks lost because the queue was full
        self._queue: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(self.settings.queue_blocks)
        self._stream: Any = None
        self._resampler: _Resampler | None = None
        self._pending = np.zeros(0, dtype=np.int16)
        self._samples = round(stream_offset_s * SAMPLE_RATE)
        self._reported_losses = 0
        self._first = True
        self._last_block_at = 0.0
        self._arrived = 0.0

    # The PortAudio callback: copy, enqueue, count. No logging, no allocation beyond the copy.
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait((indata.copy(), time.time()))
        except queue.Full:
            self.dropped_blocks += self.settings.blocks_per_callback

    def open(self) -> Capture:
        sd = _sounddevice()
        device = find_device(self.device_spec, "input")
        self.device = device
        try:
            sd.check_input_settings(
                device=device.index, channels=1, dtype="int16", samplerate=SAMPLE_RATE
            )
            rate, channels, dtype = SAMPLE_RATE, 1, "int16"
        except sd.PortAudioError:
            rate, dtype = int(device.default_samplerate), "float32"
            try:
                sd.check_input_settings(
                    device=device.index, channels=1, dtype=dtype, samplerate=rate
                )
                channels = 1
            except sd.PortAudioError:
                # Raw ALSA hw: devices often record stereo only; _add averages the channels.
                channels = max(1, min(2, device.input_channels))
            self._resampler = _Resampler(rate)
            log.info(
                "%s cannot record 16 kHz mono; recording %d channel(s) at %d Hz and converting",
                device.name,
                channels,
                rate,
            )
        # Each callback wakes two threads; blocks are still handed out block_ms at a time.
        per_callback = self.settings.block_ms * self.settings.blocks_per_callback
        blocksize = rate * per_callback // 1000
        try:
            self._stream = sd.InputStream(
                device=device.index,
                samplerate=rate,
                channels=channels,
                dtype=dtype,
                blocksize=blocksize,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self.close()
            raise DeviceError(f"cannot open input device {device.describe()}: {exc}") from None
        self._last_block_at = time.monotonic()
        log.info("recording from %s", device.describe())
        return self

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close(ignore_errors=True)
            except Exception as exc:  # a dead device may fail in any way
                log.debug("closing the input stream failed: %s", exc)

    def describe(self) -> str:
        return self.device.describe() if self.device else "the input device"

    def __enter__(self) -> Capture:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stream_time_s(self) -> float:
        return self._samples / SAMPLE_RATE

    def read(self, timeout: float = 0.5) -> AudioBlock | None:
        """The next block, or None after ``timeout`` seconds without one.

        Raises :class:`DeviceError` when the stream stopped or stalled (device gone).
        """
        if self._stream is None:
            raise DeviceError("the input stream is not open")
        deadline = time.monotonic() + timeout
        while True:
            block = self._next_block()
            if block is not None:
                return block
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data, arrived = self._queue.get(timeout=min(left, 0.1))
            except queue.Empty:
                self._check_alive()
                continue
            self._last_block_at = time.monotonic()
            self._add(data, arrived)

    def _add(self, data: np.ndarray, arrived: float) -> None:
        if self._resampler is not None:
            mono = data.mean(axis=1) if data.ndim == 2 else data
            resampled = self._resampler(mono)
            samples = (np.clip(resampled, -1.0, 1.0) * 32767.0).round().astype(np.int16)
        else:
            samples = data.reshape(-1)
        self._pending = np.concatenate([self._pending, samples]) if self._pending.size else samples
        self._arrived = arrived

    def _next_block(self) -> AudioBlock | None:
        if self._pending.size < self.block_samples:
            return None
        samples = self._pending[: self.block_samples].copy()
        self._pending = self._pending[self.block_samples :]
        # The callback's time is that of its last sample; earlier blocks in it were whole sooner.
        arrived = self._arrived - self._pending.size / SAMPLE_RATE
        losses = self.overflows + self.dropped_blocks
        discontinuity = self._first or losses > self._reported_losses
        if losses > self._reported_losses:
            log.warning(
                "audio input overflow: %d block(s) lost so far (%d dropped by a full queue, "
                "%d PortAudio overflows); the machine may be too busy",
                losses,
                self.dropped_blocks,
                self.overflows,
            )
            self._reported_losses = losses
        self._first = False
        block = AudioBlock(samples, self._samples / SAMPLE_RATE, arrived, discontinuity)
        self._samples += samples.size
        return block

    def _check_alive(self) -> None:
        stream = self._stream
        if stream is None:
            raise DeviceError("the input stream was closed")
        name = self.device.describe() if self.device else "the input device"
        if not stream.active:
            raise DeviceError(f"{name} stopped delivering audio (disconnected?)")
        if time.monotonic() - self._last_block_at > STALL_S:
            raise DeviceError(f"{name} delivered no audio for {STALL_S:.0f} s (disconnected?)")


def capture_blocks(
    settings: AudioSettings | None = None,
    device: int | str | None = None,
    *,
    stop: threading.Event | None = None,
    rescan: bool = False,
    on_state: Callable[[str, str], None] | None = None,
    in_process: bool = False,
) -> Iterator[AudioBlock]:
    """Yield blocks until ``stop`` is set, reopening the device with backoff when it fails.

    The stream runs in a child process (:mod:`voiced.audio.capture_process`), which a
    wedged audio library cannot take down with it; each retry starts a fresh one, so a
    restarted sound server or a re-plugged device is found again. ``in_process`` keeps the
    stream in this process instead; then ``rescan`` re-initialises PortAudio before each
    retry (only when no other stream is open in the process).
    ``on_state(state, message)`` is told ``"open"`` and ``"lost"`` transitions.
    """
    from voiced.audio.capture_process import CaptureProcess

    stop = stop or threading.Event()
    backoff = BACKOFF_START_S
    offset = 0.0
    failures = 0
    while not stop.is_set():
        opener = Capture if in_process else CaptureProcess
        capture = opener(settings, device, stream_offset_s=offset)
        try:
            with capture:
                if on_state:
                    on_state("open", capture.describe())
                if failures:
                    log.warning("audio input is back: %s", capture.describe())
                while not stop.is_set():
                    block = capture.read(timeout=0.2)
                    if block is not None:
                        failures, backoff = 0, BACKOFF_START_S
                        yield block
        except DeviceError as exc:
            failures += 1
            log.error("%s; retrying in %.1f s", exc, backoff)
            if on_state:
                on_state("lost", str(exc))
            offset = capture.stream_time_s
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            if rescan and in_process:
                try:
                    rescan_devices()
                except Exception as scan_error:  # keep retrying regardless
                    log.debug("PortAudio rescan failed: %s", scan_error)
            continue
        offset = capture.stream_time_s
