"""``voiced listen``: live dictation from the microphone.

Capture (PortAudio callback -> bounded queue) feeds the VAD segmenter on the main thread;
each finished utterance goes to one STT worker thread (the model is loaded once, before the
microphone opens), whose text is printed as soon as it is recognised and appended to the
transcript journal. Ctrl-C or SIGTERM stops cleanly: an utterance being spoken is captured
until the segmenter ends it (for at most ``vad.max_utterance_s``, capped at
``STOP_WAIT_CAP_S``), transcribed and printed before the exit; with no speech in flight it
stops at once, and a second Ctrl-C stops without waiting. A device
that disappears or cannot be opened is reported on stderr and retried with backoff.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import click

from voiced.audio.capture import AudioBlock, capture_blocks
from voiced.audio.segmenter import Segmenter, UtteranceCancelled, UtteranceEnded, speech_gate
from voiced.config import Settings
from voiced.transcripts import Journal, make_record

log = logging.getLogger(__name__)

# After Ctrl-C / SIGTERM, an utterance in progress is captured to its end for at most
# vad.max_utterance_s (when a longer one would be split anyway), and never longer than this: a
# television or a second voice in the room could otherwise hold the exit for the whole limit.
STOP_WAIT_CAP_S = 10.0
UTTERANCE_QUEUE = 16


@dataclass(frozen=True)
class _Heard:
    utterance: UtteranceEnded
    start: dt.datetime
    end: dt.datetime


class _Clock:
    """Maps stream time to wall-clock time using the most recent block's arrival."""

    def __init__(self) -> None:
        self._stream_end_s = 0.0
        self._arrived = time.time()

    def update(self, block: AudioBlock) -> None:
        self._stream_end_s = block.start_s + block.duration_s
        self._arrived = block.captured_at

    def wall(self, stream_s: float) -> dt.datetime:
        stamp = self._arrived - (self._stream_end_s - stream_s)
        return dt.datetime.fromtimestamp(stamp).astimezone()


class Listener:
    """The dictation loop; :meth:`run` returns when :meth:`request_stop` was called."""

    def __init__(
        self,
        settings: Settings,
        stt: Any,
        *,
        fmt: str = "txt",
        device: int | str | None = None,
        out: TextIO | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.stt = stt
        self.fmt = fmt
        self.device = device if device is not None else settings.audio.input_device
        self.out = out or sys.stdout
        self.journal = journal
        self.device_name = ""
        self._segmenter = Segmenter(settings.vad, gate=speech_gate(settings.vad))
        self._clock = _Clock()
        self._stop_requested = threading.Event()
        self._stop_capture = threading.Event()
        self._grace_timer: threading.Timer | None = None
        self._utterances: queue.Queue[_Heard | None] = queue.Queue(UTTERANCE_QUEUE)
        self._worker = threading.Thread(target=self._transcribe_loop, name="stt", daemon=True)

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop once the speech in progress (if any) ends, waiting at most :meth:`stop_wait_s`."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        if not self._segmenter.hearing_speech:
            self._stop_capture.set()
            return
        wait_s = self.stop_wait_s
        click.echo(
            f"finishing what is being said (at most {wait_s:.0f} s; Ctrl-C again to quit now)",
            err=True,
        )
        self._grace_timer = threading.Timer(wait_s, self._stop_capture.set)
        self._grace_timer.daemon = True
        self._grace_timer.start()

    @property
    def stop_wait_s(self) -> float:
        """How long a stop request waits for the speech in progress to end."""
        return min(self.settings.vad.max_utterance_s, STOP_WAIT_CAP_S)

    def _on_device_state(self, state: str, message: str) -> None:
        if state == "open":
            self.device_name = message
            click.echo(f"listening on {message} (Ctrl-C to stop)", err=True)

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self._worker.start()
        interrupted = False
        try:
            blocks = capture_blocks(
                self.settings.audio,
                self.device,
                stop=self._stop_capture,
                on_state=self._on_device_state,
            )
            for block in blocks:
                if block.discontinuity and self._segmenter.in_utterance:
                    log.warning("audio was lost; ending the current utterance here")
                    self._handle(self._segmenter.flush())
                self._clock.update(block)
                self._handle(self._segmenter.feed(block.samples))
                if self._stop_requested.is_set() and not self._segmenter.hearing_speech:
                    break
            self._handle(self._segmenter.flush())
        except KeyboardInterrupt:
            interrupted = True  # a second Ctrl-C: leave without waiting for the worker
            raise
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._stop_capture.set()
            if not interrupted:
                self._utterances.put(None)
                self._worker.join()

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, UtteranceEnded):
                heard = _Heard(
                    event, self._clock.wall(event.start_s), self._clock.wall(event.end_s)
                )
                log.info(
                    "utterance %d: %.2f-%.2f s (%s, speech_prob %s)",
                    event.index,
                    event.start_s,
                    event.end_s,
                    event.reason,
                    _prob(event.speech_prob),
                )
                self._utterances.put(heard)
            elif isinstance(event, UtteranceCancelled):
                log.info(
                    "ignored sound at %.2f-%.2f s (%s, speech_prob %s)",
                    event.start_s,
                    event.end_s,
                    event.reason,
                    _prob(event.speech_prob),
                )

    # -- STT worker -----------------------------------------------------------------------

    def _transcribe_loop(self) -> None:
        while True:
            heard = self._utterances.get()
            if heard is None:
                return
            try:
                self._transcribe(heard)
            except BrokenPipeError:
                log.debug("stdout closed; stopping")
                self.request_stop()
                self._stop_capture.set()
            except Exception:
                log.exception("transcribing an utterance failed; listening on")

    def _transcribe(self, heard: _Heard) -> None:
        utterance = heard.utterance
        started = time.perf_counter()
        result = self.stt.transcribe(utterance.audio, gate_windows=gate_windows(utterance))
        stt_ms = round((time.perf_counter() - started) * 1000)
        text = result.text.strip()
        log.info("utterance %d transcribed in %d ms: %r", utterance.index, stt_ms, text)
        if not text:
            log.info("%.1f s of sound held no recognisable speech", utterance.duration_s)
            return
        timings = {"endpoint_wait_ms": utterance.endpoint_wait_ms, "stt_ms": stt_ms}
        speech_prob = _rounded(utterance.speech_prob)
        record = make_record(
            "dictation",
            text,
            start=heard.start,
            end=heard.end,
            source=self.device_name,
            timings=timings,
            speech_prob=speech_prob,
        )
        if utterance.reason != "silence":
            record["split"] = utterance.reason
        if self.fmt == "jsonl":
            line = json.dumps(
                {
                    "id": record["id"],
                    "start": record["start"],
                    "end": record["end"],
                    "start_s": round(utterance.start_s, 3),
                    "end_s": round(utterance.end_s, 3),
                    "speech_prob": speech_prob,
                    "text": text,
                },
                ensure_ascii=False,
            )
        else:
            line = text
        self.out.write(line + "\n")
        self.out.flush()
        if self.journal is not None:
            try:
                self.journal.append(record)
            except (OSError, ValueError) as exc:
                log.error("cannot write the transcript journal: %s", exc)


def gate_windows(utterance: UtteranceEnded) -> list:
    """What ``SpeechToText.transcribe`` needs to know of the speech gate's verdict."""
    if utterance.window_probs is None:
        return []
    return [(0, utterance.window_probs)]


def _rounded(prob: float | None) -> float | None:
    return None if prob is None else round(prob, 3)


def _prob(prob: float | None) -> str:
    return "n/a" if prob is None else f"{prob:.2f}"


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def _load_stt(settings: Settings) -> Any:
    from voiced.speech.stt import SpeechToText

    try:
        return SpeechToText.from_settings(settings.stt, flash_attention=False, vad=settings.vad)
    except Exception as exc:  # SttError, ModelError, OSError: all end the command
        raise click.ClickException(f"cannot load the speech model: {exc}") from None


@click.command()
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["txt", "jsonl"]),
    default="txt",
    show_default=True,
    help="txt: one line of text per utterance; jsonl: start/end times and text.",
)
@click.option(
    "--input-device",
    help="Microphone: index or part of its name (see `voiced devices`)  "
    "[default: audio.input_device]",
)
@click.option("-m", "--model", help="Whisper model name or ggml path  [default: stt.model]")
@click.pass_obj
def listen(app: Any, fmt: str, input_device: str | None, model: str | None) -> None:
    """Print what is said into the microphone, one utterance per line, as it is recognised.

    Every utterance is also appended to the transcript journal (unless
    transcripts.enabled is false). Stop with Ctrl-C.
    """
    settings = app.settings(**{"audio.input_device": _device(input_device), "stt.model": model})
    stt = _load_stt(settings)
    journal = Journal.from_settings(settings) if settings.transcripts.enabled else None
    from voiced.audio.speech_gate import SpeechGateError

    try:
        listener = Listener(settings, stt, fmt=fmt, journal=journal)
    except SpeechGateError as exc:
        raise click.ClickException(str(exc)) from None

    interrupts = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        log.info("stopping (%s)", signal.Signals(signum).name)
        listener.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        listener.run()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
