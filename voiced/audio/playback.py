"""Speech playback that can be interrupted, and the speaker that feeds it as text streams in.

:class:`Player` plays a queue of sentence audio on an output device through a callback-driven
``sounddevice.OutputStream`` with small blocks. :meth:`Player.stop` silences it within a block
or two, drops everything queued and reports how much of each sentence was really heard, so the
assistant can cut its reply in the conversation history to what the user heard.

The player's state (:attr:`Player.speaking`, :attr:`Player.last_sound_end`, on the
``time.monotonic`` clock and corrected for the device's output latency) lets the listener
ignore the assistant's own voice. Text becomes audio above this module, in
:mod:`voiced.speech.speaker`.

``sounddevice`` (PortAudio) is imported only when a player opens a device.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BLOCK_MS = 20
# Output latency asked of PortAudio: a few blocks, so that a stop is heard quickly but a busy
# machine does not underrun.
LATENCY_S = 0.06


class PlaybackError(Exception):
    """An output device that cannot be found or opened; the message is for the user."""


@dataclass
class SpokenReport:
    """What of a reply was actually heard, after it finished or was interrupted."""

    spoken: list[str] = field(default_factory=list)
    """Sentences played to the end, in order."""
    partial: str | None = None
    """The sentence cut off by an interruption, if any."""
    partial_chars: int = 0
    """About how many characters of ``partial`` were heard (cut back to a word boundary)."""
    unspoken: list[str] = field(default_factory=list)
    """Sentences that were dropped before any of them was heard."""
    interrupted: bool = False

    @property
    def text(self) -> str:
        """The heard part of the reply as one text (what the history should keep)."""
        heard = list(self.spoken)
        if self.partial and self.partial_chars:
            heard.append(self.partial[: self.partial_chars].rstrip() + "…")
        return " ".join(heard)


def _heard_prefix_chars(text: str, fraction: float) -> int:
    """Characters of ``text`` heard when ``fraction`` of its audio played, at a word boundary."""
    if fraction <= 0.0:
        return 0
    if fraction >= 1.0:
        return len(text)
    estimate = int(len(text) * fraction)
    cut = text.rfind(" ", 0, estimate + 1)
    return cut if cut > 0 else 0


@dataclass
class _Item:
    text: str
    audio: np.ndarray  # float32, at the device rate, mono
    played: int = 0  # frames handed to the device
    heard_at: float | None = None  # time.monotonic() at which its first frame leaves the speaker


def _device_info(device: int | str | None) -> dict[str, Any]:
    import sounddevice as sd

    try:
        info = sd.query_devices(device, "output")
    except (ValueError, sd.PortAudioError) as exc:
        outputs = [
            f"{index}: {entry['name']}"
            for index, entry in enumerate(sd.query_devices())
            if entry["max_output_channels"] > 0
        ]
        if not outputs:
            raise PlaybackError(
                "no audio output device found (no sound card, or no sound server running?)"
            ) from None
        what = "the default output device" if device is None else f"output device {device!r}"
        raise PlaybackError(f"cannot use {what}: {exc} (outputs: {'; '.join(outputs)})") from None
    return dict(info)


class Player:
    """Plays queued mono float32 audio on an output device; interruptible.

    ``sample_rate`` is the rate of the audio given to :meth:`play`. When the device does not
    accept it (or ``device_rate`` asks for another), audio is resampled to the device's rate.
    The stream is opened on first use and kept until :meth:`close`.

    ``on_heard`` is called from the audio callback (keep it quick) with each item's text and
    the ``time.monotonic()`` at which its first frame leaves the speaker: the callback's time
    plus the device's output latency plus the frames ahead of it in the block.
    """

    def __init__(
        self,
        sample_rate: int,
        device: int | str | None = None,
        *,
        device_rate: int | None = None,
        block_ms: int = BLOCK_MS,
        latency: float = LATENCY_S,
        on_heard: Callable[[str, float], None] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.on_heard = on_heard
        self.device = device
        self.block_ms = block_ms
        self.latency = latency
        self._wanted_rate = device_rate
        self.device_rate: int = device_rate or sample_rate
        self._channels = 1
        self._stream: Any = None
        self._lock = threading.Lock()
        self._items: collections.deque[_Item] = collections.deque()
        self._done: list[_Item] = []
        self._idle = threading.Event()
        self._idle.set()
        self._last_sound_end = 0.0
        self._speaking_since: float | None = None
        self._output_delay = latency
        self._status_errors = 0

    # --- state for the listener ----------------------------------------------------------

    @property
    def last_sound_end(self) -> float:
        """``time.monotonic()`` at which the last sample written so far leaves the speaker."""
        return self._last_sound_end

    @property
    def speaking(self) -> bool:
        """Whether audio is queued, playing, or still on its way out of the device."""
        with self._lock:
            busy = bool(self._items)
        return busy or time.monotonic() < self._last_sound_end

    @property
    def speaking_since(self) -> float | None:
        """``time.monotonic()`` when the current stretch of speech started, or None."""
        return self._speaking_since if self.speaking else None

    def current_sentence_left_s(self) -> float:
        """Seconds until the sentence playing now has been heard to its end (0 when quiet).

        Lets a daemon that is told to stop finish the current sentence and drop the rest.
        """
        now = time.monotonic()
        with self._lock:
            in_device = max(0.0, self._last_sound_end - now)
            if self._items and self._items[0].played:
                item = self._items[0]
                return in_device + (item.audio.size - item.played) / self.device_rate
            return in_device

    # --- device ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open and start the output stream (done by :meth:`play` when needed)."""
        if self._stream is not None:
            if not self._stream.active:
                began = time.perf_counter()
                self._stream.start()
                log.debug(
                    "restarted the output stream in %.0f ms", (time.perf_counter() - began) * 1000
                )
            return
        import sounddevice as sd

        info = _device_info(self.device)
        index = info["index"]
        rate = self._wanted_rate or self.sample_rate
        try:
            sd.check_output_settings(device=index, samplerate=rate, channels=1, dtype="float32")
        except sd.PortAudioError:
            if self._wanted_rate is not None:
                raise PlaybackError(
                    f"output device {info['name']!r} does not accept {rate} Hz mono"
                ) from None
            rate = int(info["default_samplerate"])
            log.info(
                "device %s does not take %d Hz: resampling to %d Hz",
                info["name"],
                self.sample_rate,
                rate,
            )
        channels = 1
        try:
            sd.check_output_settings(device=index, samplerate=rate, channels=1, dtype="float32")
        except sd.PortAudioError:
            channels = min(2, int(info["max_output_channels"]))
        self.device_rate = rate
        self._channels = channels
        try:
            self._stream = sd.OutputStream(
                device=index,
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=max(1, rate * self.block_ms // 1000),
                latency=self.latency,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise PlaybackError(f"cannot open output device {info['name']!r}: {exc}") from None
        self._output_delay = float(self._stream.latency)
        log.debug(
            "playing on %r at %d Hz, %d channel(s), latency %.0f ms",
            info["name"],
            rate,
            channels,
            self._output_delay * 1000,
        )

    def close(self) -> None:
        """Stop at once and release the device."""
        self.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)

    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queue -----------------------------------------------------------------------------

    def play(self, audio: np.ndarray, text: str = "") -> None:
        """Queue mono float32 ``audio`` (at ``sample_rate``) with the ``text`` it speaks."""
        self.open()
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if self.device_rate != self.sample_rate and audio.size:
            from voiced.decode import resample

            audio = resample(audio, self.sample_rate, self.device_rate)
        with self._lock:
            if not self._items and time.monotonic() >= self._last_sound_end:
                self._speaking_since = time.monotonic() + self._output_delay
            self._items.append(_Item(text, audio))
            self._idle.clear()

    def wait(self, timeout: float | None = None) -> SpokenReport:
        """Wait until everything queued has been heard; report it (and forget it).

        Raises :class:`PlaybackError` if the device stops taking audio (unplugged, server
        gone) and :class:`TimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._idle.wait(0.5):
            stream = self._stream
            if stream is None or not stream.active:
                self.stop()
                raise PlaybackError("the output device stopped playing")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("playback did not finish in time")
        remaining = self._last_sound_end - time.monotonic()
        if deadline is not None:
            remaining = min(remaining, deadline - time.monotonic())
        if remaining > 0:
            time.sleep(remaining)
        with self._lock:
            done, self._done = self._done, []
        return SpokenReport(spoken=[item.text for item in done if item.text])

    def stop(self) -> SpokenReport:
        """Silence the output now, drop the queue, and report what was heard."""
        now = time.monotonic()
        with self._lock:
            items, self._items = list(self._items), collections.deque()
            done, self._done = self._done, []
            unheard_frames = max(0.0, self._last_sound_end - now) * self.device_rate
            self._last_sound_end = min(self._last_sound_end, now)
            self._idle.set()
        stream = self._stream
        if stream is not None and stream.active:
            # abort() drops what is buffered in the device instead of playing it out.
            stream.abort(ignore_errors=True)
        report = SpokenReport(spoken=[item.text for item in done if item.text])
        current = items[0] if items and items[0].played else None
        if current is None and done and unheard_frames > 0:
            # The last finished sentence was still in the device buffer.
            current = _Item(done[-1].text, done[-1].audio, done[-1].audio.size)
            report.spoken = report.spoken[:-1] if done[-1].text else report.spoken
        if current is not None:
            items = items[1:] if items and current is items[0] else items
            heard = max(0.0, current.played - unheard_frames)
            fraction = heard / current.audio.size if current.audio.size else 1.0
            report.partial = current.text
            report.partial_chars = _heard_prefix_chars(current.text, fraction)
            report.interrupted = True
        report.unspoken = [item.text for item in items if item.text]
        report.interrupted = report.interrupted or bool(items)
        return report

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.output_underflow:
            self._status_errors += 1
        out = outdata[:, 0] if self._channels == 1 else np.empty(frames, np.float32)
        written = 0
        started: list[_Item] = []
        with self._lock:
            if self._items:
                now = time.monotonic()
                delay = time_info.outputBufferDacTime - time_info.currentTime
                if not 0.0 < delay < 1.0:
                    delay = self._output_delay
            while written < frames and self._items:
                item = self._items[0]
                take = min(frames - written, item.audio.size - item.played)
                if item.played == 0 and item.heard_at is None and item.audio.size:
                    item.heard_at = now + delay + written / self.device_rate
                    started.append(item)
                out[written : written + take] = item.audio[item.played : item.played + take]
                item.played += take
                written += take
                if item.played >= item.audio.size:
                    self._done.append(self._items.popleft())
            if written:
                self._last_sound_end = now + delay + written / self.device_rate
            if not self._items:
                self._idle.set()
        out[written:] = 0.0
        if self._channels != 1:
            outdata[:] = out[:, np.newaxis]
        if self.on_heard is not None:
            for item in started:
                try:
                    self.on_heard(item.text, item.heard_at or 0.0)
                except Exception:
                    log.exception("the on_heard callback failed")
