"""``voiced run`` end to end with the wake-word model (``wake.engine: model``, hey_jarvis).

Real PulseAudio, the microWakeWord model, whisper, Piper and the scripted Ollama server, as in
test_daemon_e2e.py; one daemon serves the module and the tests run in order against it. What
is checked: the request reaches the model without the wake phrase; speech without the wake
word is never transcribed (the log says so, and whisper's "heard" line never comes); the wake
word said while a reply plays stops it before any transcription, and the history keeps only
what was heard; the wake word alone is acknowledged and opens the ears for the request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import daemon as daemon_fixtures
from tests import pulse as pulse_fixtures
from tests.daemon import DaemonHandle, voiced_run
from tests.ollama_server import OllamaTestServer, Reply
from tests.speech import heard_speech, synthesize, wer
from tests.store import seed_models
from tests.test_daemon_e2e import paused_request_is_one_turn, phrase_pause_request

pytestmark = pytest.mark.pulse
pulse_server = pulse_fixtures.pulse_server
ollama = daemon_fixtures.ollama

FOLLOW_UP_S = 2.0

# Synthesised before the daemon starts (synthesis on a busy machine takes a while).
UTTERANCES = [
    "Hey Jarvis, what time is it?",
    "What is the weather like today?",
    "Hey Jarvis, tell me a story.",
    "Hey Jarvis.",
    "Hey Jarvis, how far away is the moon?",
    "How much memory is free?",
    "What time is it?",
]
_SPEECH: dict[str, np.ndarray] = {}
PAUSED = "Hey Jarvis, ... what time is it?"
PAUSE_S = 0.4


def say_into_mic(pulse_server, text: str) -> None:
    pulse_server.play_into_mic(_SPEECH[text])


@pytest.fixture(scope="module")
def daemon(
    pulse_server, ollama: OllamaTestServer, whisper_store: Path, tmp_path_factory
) -> Iterator[DaemonHandle]:
    for index, text in enumerate(UTTERANCES):
        _SPEECH[text] = synthesize(text, seed=index)
    # "Hey Jarvis, ... what time is it?": a breath after the phrase, longer than
    # vad.turn_pause_ms and shorter than vad.silence_ms.
    _SPEECH[PAUSED] = phrase_pause_request("Hey Jarvis.", PAUSE_S, seed=7)
    home = tmp_path_factory.mktemp("wake_daemon_home")
    seed_models(home, whisper_store)
    (home / "config.yaml").write_text(
        f"llm:\n  host: {ollama.url}\n"
        f"wake:\n  engine: model\n  model: hey_jarvis\n  follow_up_s: {FOLLOW_UP_S}\n"
        "tools:\n  enabled: [time]\n"
        "stt:\n  threads: 1\n"
    )
    with voiced_run(pulse_server, ollama, home, options=["-v"]) as handle:
        yield handle


def wait_until_speaking(daemon: DaemonHandle, seen: int) -> None:
    deadline = time.monotonic() + 60
    while "STATUS=speaking" not in [m for _, m in daemon.notifications[seen:]]:
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.02)


def test_the_request_reaches_the_model_without_the_wake_phrase(
    daemon: DaemonHandle, pulse_server
) -> None:
    assert "ready: say 'Hey Jarvis'" in daemon.log()
    daemon.ollama.script(Reply(content=["It is a quarter past nine."]))
    say_into_mic(pulse_server, "Hey Jarvis, what time is it?")
    (record,) = daemon.wait_for_records(1)
    (request,) = daemon.conversation_requests()
    user = request["messages"][-1]
    assert user["role"] == "user"
    assert "jarvis" not in user["content"].lower(), user
    assert wer("what time is it", user["content"]) <= 0.25, user
    assert record["user"] == user["content"]
    assert record["assistant"] == "It is a quarter past nine."
    log = daemon.log()
    assert "wake word hey_jarvis (p=" in log and "heard the wake word and" in log


def test_speech_without_the_wake_word_is_never_transcribed(
    daemon: DaemonHandle, pulse_server
) -> None:
    daemon.wait_until_idle()  # past the follow-up window of the first reply
    before = len(daemon.conversation_requests())
    mark = len(daemon.log())
    say_into_mic(pulse_server, "What is the weather like today?")
    daemon.wait_for_log("no wake word:", after=mark)
    time.sleep(1.0)
    new = daemon.log()[mark:]
    assert " heard " not in new and "not for me" not in new, new  # whisper never ran
    assert "wake word hey_jarvis" not in new
    assert len(daemon.conversation_requests()) == before


def test_the_wake_word_stops_the_reply_and_the_history_keeps_what_was_heard(
    daemon: DaemonHandle, pulse_server, stt
) -> None:
    story = [
        "Once upon a time, a lighthouse keeper lived alone on a rock in the sea. ",
        "Every night he climbed one hundred and twenty steps to light the lamp. ",
        "One stormy night, a small boat appeared between the waves. ",
        "He ran down the steps with a lantern in his hand. ",
        "The waves were higher than the roof of his little house. ",
        "He shouted to the sailors and waved the light above his head. ",
        "At last they saw him and steered towards the quiet side of the rock. ",
        "In the morning he gave them bread and tea, and tied their boat with a rope. ",
    ]
    daemon.ollama.script(Reply(content=story), Reply(content=["About a light second away."]))
    count = len(daemon.records())
    seen = len(daemon.notifications)
    say_into_mic(pulse_server, "Hey Jarvis, tell me a story.")
    wait_until_speaking(daemon, seen)
    time.sleep(1.0)
    mark = len(daemon.log())
    recording = pulse_server.start_speaker_recording()
    say_into_mic(pulse_server, "Hey Jarvis.")  # the stop word (the wake model, by default)
    (interrupted,) = daemon.wait_for_records(count + 1)[count:]
    daemon.wait_for_log("not for me (stopped)", after=mark)
    time.sleep(1.0)
    after_stop = recording.stop()
    new = daemon.log()[mark:]
    # Stopped on the detection, before whisper had transcribed the utterance.
    assert new.index("stop word: stopped speaking") < new.index("heard the wake word")
    assert "acknowledging" not in new  # the stop word alone gets no "Yes?"
    assert interrupted["interrupted"] is True, interrupted
    heard = interrupted["assistant"]
    full = "".join(story).strip()
    assert heard.startswith("Once upon a time") and len(heard) < len(full)
    assert "rope" not in heard
    # The speaker went quiet: at most the tail of the sentence in flight after the phrase.
    tail = after_stop[int(2.5 * 16000) :]
    assert not tail.size or np.abs(tail).max() < 0.01, heard_speech(stt, after_stop)

    say_into_mic(pulse_server, "Hey Jarvis, how far away is the moon?")
    records = daemon.wait_for_records(count + 2)
    assert records[-1]["assistant"] == "About a light second away."
    history = daemon.conversation_requests()[-1]["messages"]
    assert {"role": "assistant", "content": heard} in history  # clipped to what was heard
    assert all("rope" not in m["content"] for m in history)
    assert "jarvis" not in history[-1]["content"].lower()


def test_the_wake_word_alone_is_acknowledged_and_the_request_needs_none(
    daemon: DaemonHandle, pulse_server
) -> None:
    daemon.wait_until_idle()  # the last reply's window is over
    daemon.ollama.script(Reply(content=["Six gigabytes are free."]))
    count = len(daemon.records())
    mark = len(daemon.log())
    say_into_mic(pulse_server, "Hey Jarvis.")
    daemon.wait_for_log("acknowledging", after=mark)
    time.sleep(1.5)  # "Yes?" and its echo tail: speech over it only counts with the wake word
    say_into_mic(pulse_server, "How much memory is free?")
    record = daemon.wait_for_records(count + 1)[-1]
    assert wer("how much memory is free", record["user"]) <= 0.25, record
    assert record["assistant"] == "Six gigabytes are free."


def test_a_pause_after_the_wake_word_does_not_end_the_turn(
    daemon: DaemonHandle, pulse_server
) -> None:
    # The end-of-turn model hears "Hey Jarvis." as finished: without the wake pause rule the
    # phrase was acknowledged and the question, said over the "Yes?", was dropped.
    daemon.wait_until_idle()  # the last reply's window is over
    paused_request_is_one_turn(daemon, pulse_server, _SPEECH[PAUSED])
