"""The daemon's capture and STT threads with the wake-word model (``wake.engine: model``).

Piper speech is fed at a microphone's pace into the real capture loop (webrtcvad, the
microWakeWord model) and the real STT thread (whisper); what they post to the daemon's event
queue and which audio whisper was given are checked. No main loop runs, so the turn machine's
ears stay as they start: shut. Whisper may only hear what holds a detection.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.speech import synthesize, wer
from voiced.audio import capture
from voiced.config import Settings
from voiced.service.daemon import WAKE_CUT_BACK_S, Daemon
from voiced.service.notify import Notifier
from voiced.service.turns import Heard, WakeWordDetected

BLOCK = 480  # 30 ms


class WatchedStt:
    """The real engine, recording the length of the audio of each call."""

    def __init__(self, stt: object) -> None:
        self.stt = stt
        self.calls: list[int] = []

    def transcribe(self, audio: np.ndarray, **options: object):
        self.calls.append(audio.size)
        return self.stt.transcribe(audio, **options)  # type: ignore[attr-defined]


def run_capture(stream: np.ndarray, stt: object, monkeypatch, **wake: object):
    """Feed ``stream`` through capture + STT in real time; return the events and STT calls."""
    settings = Settings.model_validate(
        {"wake": {"engine": "model", **wake}, "transcripts": {"enabled": False}}
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
    events: list[object] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            events.append(daemon._events.get(timeout=1.5))
        except queue.Empty:
            break  # nothing more for 1.5 s after the stream ended
    stop.set()
    daemon._utterances.put(None)
    capture_thread.join(5)
    stt_thread.join(30)
    return events, watched.calls


def test_the_request_after_the_wake_word_is_transcribed_without_the_phrase(
    stt, monkeypatch
) -> None:
    stream = synthesize("Hey Jarvis, what time is it?", lead_s=0.6, tail_s=1.5)
    events, calls = run_capture(stream, stt, monkeypatch)
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["WakeWordDetected", "Heard"], events
    detection, heard = events
    assert isinstance(detection, WakeWordDetected) and detection.model == "hey_jarvis"
    assert isinstance(heard, Heard) and heard.wake == "hey_jarvis"
    assert heard.wake_at == detection.at
    assert heard.start < detection.at < heard.end
    assert "jarvis" not in heard.text.lower()
    assert wer("what time is it", heard.text) <= 0.25, heard.text
    # Whisper heard only what followed the phrase: from just before the detection to the
    # end of the utterance (its post-roll included), one block of slack.
    post_roll_s = Settings().vad.post_roll_ms / 1000
    after = heard.end + post_roll_s - (detection.at - WAKE_CUT_BACK_S)
    assert calls and all(size <= (after + 0.03) * 16000 for size in calls), (calls, after)
    assert heard.context.audio.size == calls[-1]


def test_speech_without_the_wake_word_never_reaches_whisper(stt, monkeypatch) -> None:
    stream = np.concatenate(
        [
            synthesize("What is the weather like today?", lead_s=0.6, tail_s=1.2, seed=1),
            synthesize("The capital of France is the city of Paris.", tail_s=1.5, seed=2),
        ]
    )
    events, calls = run_capture(stream, stt, monkeypatch)
    assert events == [] and calls == []


def test_the_wake_word_alone_is_heard_with_no_words(stt, monkeypatch) -> None:
    stream = synthesize("Hey Jarvis.", lead_s=0.6, tail_s=1.5)
    events, _ = run_capture(stream, stt, monkeypatch)
    assert [type(event).__name__ for event in events] == ["WakeWordDetected", "Heard"]
    heard = events[1]
    assert heard.wake == "hey_jarvis" and "jarvis" not in heard.text.lower()
    assert len(heard.text.split()) <= 1, heard.text


@pytest.mark.parametrize(("stop_model", "phrase"), [("alexa", "Alexa.")])
def test_the_stop_model_is_posted_but_opens_nothing(
    stt, monkeypatch, stop_model: str, phrase: str
) -> None:
    stream = synthesize(phrase, lead_s=0.6, tail_s=1.5)
    events, calls = run_capture(stream, stt, monkeypatch, stop_model=stop_model)
    assert [(type(e).__name__, getattr(e, "model", None)) for e in events] == [
        ("WakeWordDetected", stop_model)
    ]
    assert calls == []  # the stop word alone is never transcribed
