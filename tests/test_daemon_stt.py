"""The daemon's capture and speech-recognition threads on real speech, without a sound server.

Blocks of Piper speech are fed at the pace of a microphone; what the STT thread posts is read
from the daemon's event queue. The point is ``stt.start_in_pause``: transcription starts in
the pause before the endpoint, and its text is used only if the utterance really ended there.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

from tests.speech import synthesize, wer
from voiced.audio import capture
from voiced.config import Settings
from voiced.service.daemon import Daemon
from voiced.service.notify import Notifier
from voiced.service.turns import Heard
from voiced.speech.stt import TranscriptionAborted

BLOCK = 480  # 30 ms


class WatchedStt:
    """The real engine, recording each call: its audio length and how it ended."""

    def __init__(self, stt: object) -> None:
        self.stt = stt
        self.calls: list[tuple[int, str]] = []

    def transcribe(self, audio: np.ndarray, **options: object):
        try:
            result = self.stt.transcribe(audio, **options)  # type: ignore[attr-defined]
        except TranscriptionAborted:
            self.calls.append((audio.size, "aborted"))
            raise
        self.calls.append((audio.size, "done"))
        return result


def heard_from(stream: np.ndarray, stt: object, monkeypatch, *, start_in_pause: bool = True):
    """Run capture + STT over ``stream`` in real time; return the Heard events and the calls."""
    settings = Settings.model_validate(
        {
            "stt": {"start_in_pause": start_in_pause},
            "wake": {"engine": "text"},  # whisper hears everything (see test_daemon_wake.py)
            "transcripts": {"enabled": False},
        }
    )
    daemon = Daemon(settings, notifier=Notifier(environ={}))
    watched = WatchedStt(stt)
    daemon.stt = watched
    fed = threading.Event()

    def microphone(*args: object, stop: threading.Event, **kwargs: object) -> Iterator:
        started = time.monotonic()
        for number, offset in enumerate(range(0, stream.size, BLOCK)):
            time.sleep(max(0.0, started + number * BLOCK / 16000 - time.monotonic()))
            samples = (stream[offset : offset + BLOCK] * 32767).astype(np.int16)
            yield capture.AudioBlock(samples, offset / 16000, time.time(), number == 0)
        fed.set()
        stop.wait()

    monkeypatch.setattr(capture, "capture_blocks", microphone)
    stt_thread = threading.Thread(target=daemon._stt_loop, daemon=True)
    stt_thread.start()
    stop = threading.Event()
    capture_thread = threading.Thread(
        target=daemon._capture_loop, args=(settings, stop), daemon=True
    )
    capture_thread.start()
    assert fed.wait(60)
    heard: list[Heard] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            event = daemon._events.get(timeout=0.5 if heard else deadline - time.monotonic())
        except queue.Empty:
            break  # nothing more within half a second of the first
        if isinstance(event, Heard):
            heard.append(event)
    stop.set()
    daemon._utterances.put(None)
    capture_thread.join(5)
    stt_thread.join(30)
    return heard, watched.calls


def test_the_text_is_ready_when_the_endpoint_is_decided(stt, monkeypatch) -> None:
    question = "Computer, what is the capital of France?"
    stream = synthesize(question, lead_s=0.6, tail_s=1.5)
    (heard,), calls = heard_from(stream, stt, monkeypatch)
    assert wer(question, heard.text) <= 0.15, heard.text
    utterance = heard.context
    assert utterance.early is not None and utterance.early.text == heard.text
    # The speech gate judged it while it was spoken; its windows went to whisper with it.
    assert utterance.speech_prob >= Settings().vad.speech_threshold
    assert utterance.early.gate_windows and utterance.gate_windows
    assert calls == [(utterance.early.audio.size, "done")]  # transcribed once, in the pause
    # It began 300 ms into the silence, while the endpoint (700 ms) was still awaited.
    assert utterance.early.started_at < utterance.endpoint_at


def test_speech_after_the_pause_drops_the_early_work(stt, monkeypatch) -> None:
    first, second = "Computer, set a timer", "for ten minutes, please."
    stream = np.concatenate(
        [
            synthesize(first, lead_s=0.6, tail_s=0.45, seed=1),
            synthesize(second, lead_s=0.0, tail_s=1.5, seed=2),
        ]
    )
    (heard,), calls = heard_from(stream, stt, monkeypatch)
    assert wer(f"{first} {second}", heard.text) <= 0.2, heard.text
    utterance = heard.context
    # The early work on the first half was aborted or never started; the text is the whole's.
    assert [outcome for _, outcome in calls][-1] == "done"
    assert all(size < calls[-1][0] for size, _ in calls[:-1])
    assert len(calls) <= 2
    assert utterance.early is not None and utterance.early.audio.size == calls[-1][0]


def test_without_start_in_pause_the_endpoint_starts_the_work(stt, monkeypatch) -> None:
    question = "What time is it?"
    stream = synthesize(question, lead_s=0.6, tail_s=1.5)
    (heard,), calls = heard_from(stream, stt, monkeypatch, start_in_pause=False)
    assert wer(question, heard.text) <= 0.25, heard.text
    assert heard.context.early is None
    assert len(calls) == 1


def test_loading_does_not_wait_for_the_speech_models_warm_up(monkeypatch) -> None:
    """Whisper's full-window warm-up runs on its own thread: the models load, the microphone
    opens and READY=1 goes out without waiting for it (1.2-1.6 s of a start-up here)."""
    from voiced.speech.stt import SpeechToText

    began, release = threading.Event(), threading.Event()
    warmed: list[object] = []

    def held_warm_up(self: SpeechToText) -> None:
        began.set()
        release.wait(120)
        warmed.append(self)

    monkeypatch.setattr(SpeechToText, "warm_up", held_warm_up)
    settings = Settings.model_validate(
        {
            "wake": {"engine": "text"},
            "transcripts": {"enabled": False},
            "llm": {"host": "http://127.0.0.1:9"},  # nobody: the LLM warm-up fails, logged
        }
    )
    daemon = Daemon(settings, notifier=Notifier(environ={}))
    loader = threading.Thread(target=daemon.load, daemon=True)
    try:
        loader.start()
        loader.join(30)  # a few seconds here (Piper, whisper, the turn model)
        assert not loader.is_alive(), "load() waited for the speech model's warm-up"
        assert began.is_set() and not warmed  # started, and still going on
        assert daemon.stt is not None and daemon.speaker is not None
    finally:
        release.set()
    loader.join(60)
    assert daemon._stt_warm_up is not None
    daemon._stt_warm_up.join(10)
    assert warmed == [daemon.stt]  # the engine the daemon transcribes with was warmed up
