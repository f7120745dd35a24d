"""The daemon's threads and actions with the real assistant over the Ollama test server, but
no audio: utterances are posted as transcribed events and a timed fake speaker "plays".

This is where barge-in clipping, spoken confirmations, reloads and crashing turns are checked
through the daemon's real code paths (the end-to-end module covers real audio).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import ollama_fixtures
from tests.ollama_server import OllamaTestServer, Reply, ToolCall
from voiced import config as config_mod
from voiced.audio.playback import SpokenReport
from voiced.brain.assistant import LOADING_SENTENCE, Assistant
from voiced.brain.tools.registry import Tool, ToolRegistry
from voiced.config import Settings
from voiced.service.daemon import Daemon, Utterance, wall_time
from voiced.service.notify import Notifier
from voiced.service.turns import Heard, State
from voiced.transcripts import Journal

ollama_server = ollama_fixtures.ollama_server

SECONDS_PER_CHAR = 0.015


class FakePlayer:
    def __init__(self) -> None:
        self.last_sound_end = 0.0

    def current_sentence_left_s(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


class FakeSpeaker:
    """Plays sentences on a timeline (no sound): SECONDS_PER_CHAR per character."""

    def __init__(self, player: FakePlayer, on_sentence: Callable[[str], None]) -> None:
        self.player = player
        self.on_sentence = on_sentence
        self.said: list[str] = []
        self.log: list[str] = []  # "play <text>" and "stop", in order
        # Called with each text before it is queued: lets a test interleave other threads.
        self.before_say: Callable[[str], None] | None = None
        self._queue: list[str] = []
        self._done: list[str] = []
        self._current: tuple[str, float, float] | None = None  # text, start, end
        self._lock = threading.Condition()
        threading.Thread(target=self._play, daemon=True).start()

    @property
    def speaking(self) -> bool:
        with self._lock:
            return bool(self._queue) or self._current is not None

    def say(self, text: str) -> None:
        if self.before_say is not None:
            self.before_say(text)
        with self._lock:
            self._queue.append(text)
            self._lock.notify_all()

    def _play(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                text = self._queue.pop(0)
                start = time.monotonic()
                self._current = (text, start, start + len(text) * SECONDS_PER_CHAR)
                self.said.append(text)
                self.log.append(f"play {text}")
            self.on_sentence(text)
            with self._lock:
                while self._current is not None and time.monotonic() < self._current[2]:
                    self._lock.wait(self._current[2] - time.monotonic())
                if self._current is not None and self._current[0] == text:
                    self._done.append(text)
                    self._current = None
                    self.player.last_sound_end = time.monotonic()
                self._lock.notify_all()

    def wait(self, timeout: float | None = None) -> SpokenReport:
        with self._lock:
            while self._queue or self._current is not None:
                self._lock.wait(0.05)
            done, self._done = self._done, []
        return SpokenReport(spoken=done)

    def stop(self) -> SpokenReport:
        with self._lock:
            self.log.append("stop")
            report = SpokenReport(spoken=self._done, unspoken=list(self._queue))
            self._done, self._queue = [], []
            if self._current is not None:
                text, start, end = self._current
                fraction = (time.monotonic() - start) / (end - start)
                cut = text.rfind(" ", 0, int(len(text) * fraction) + 1)
                report.partial, report.partial_chars = text, max(cut, 0)
                report.interrupted = True
                self._current = None
                self.player.last_sound_end = time.monotonic()
            self._lock.notify_all()
        return report


class Loop:
    """A daemon running on a thread with fakes for the sound parts."""

    def __init__(
        self,
        settings: Settings,
        registry: ToolRegistry | None,
        config: Path,
        overrides: dict | None = None,
        *,
        warm_up: bool = False,
    ) -> None:
        self.daemon = Daemon(
            settings,
            config_path=config,
            notifier=Notifier(environ={}),
            journal=Journal(retention_days=0),
            overrides=overrides,
        )
        daemon = self.daemon
        daemon.stt = object()  # never used: utterances arrive transcribed
        daemon.player = FakePlayer()
        daemon.speaker = FakeSpeaker(daemon.player, daemon._on_sentence_playing)
        if registry is not None:
            registry.confirm = daemon._confirm
        daemon.assistant = Assistant(settings.llm, registry)
        daemon._start_capture = daemon._mic_open.set  # no microphone
        if warm_up:  # as load() does when `voiced run` starts
            daemon.start_warm_up()
        self.thread = threading.Thread(target=daemon.run, daemon=True)
        self.thread.start()

    @property
    def speaker(self) -> FakeSpeaker:
        return self.daemon.speaker

    def say(self, text: str, duration: float = 1.0) -> None:
        """The user said ``text``, ending now; it was transcribed 0.1 s later."""
        now = time.monotonic()
        start = now - duration
        context = Utterance(
            audio=None,
            start=start,
            end=now,
            endpoint_at=now,
            endpoint_wait_ms=720,
            started_wall=wall_time(start),
            stt_ms=100,
            speech_prob=0.987654,
        )
        self.daemon.post(Heard(text, start, now, now + 0.1, context))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition never became true"
            time.sleep(0.02)

    def records(self) -> list[dict]:
        return list(self.daemon.journal.records())

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


TEXT_ENGINE = "wake:\n  engine: text\n"


def make_settings(url: str, **wake) -> Settings:
    return Settings.model_validate(
        {
            "llm": {"host": url},
            # The text engine: these tests post transcripts, with the wake phrase in the text.
            "wake": {"engine": "text", "follow_up_s": 5.0, "confirm_timeout_s": 3.0, **wake},
        }
    )


@pytest.fixture
def loop_factory(ollama_server: OllamaTestServer, tmp_path: Path) -> Iterator[Callable[..., Loop]]:
    loops: list[Loop] = []

    def make(registry: ToolRegistry | None = None, **wake) -> Loop:
        config = tmp_path / "config.yaml"
        config.write_text(f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}")
        loop = Loop(make_settings(ollama_server.url, **wake), registry, config)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop()


def conversation(server: OllamaTestServer) -> list[dict]:
    return [r for r in server.chat_requests if r.get("messages")]


# ------------------------------------------------------------------------- model load


def test_a_turn_right_after_start_waits_for_the_model_load_and_says_so(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    # The model takes longer to load than the idle limit (gpt-oss:20b: 45 s against 30 s; here
    # 4 s against 1 s). Ollama sends nothing meanwhile, and drops the load if voiced hangs up.
    ollama_server.load_s = 4.0
    ollama_server.script(Reply(content=["It is noon."]))
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}")
    settings = Settings.model_validate(
        {"llm": {"host": ollama_server.url, "idle_timeout_s": 1.0}, "wake": {"engine": "text"}}
    )
    loop = Loop(settings, None, config, warm_up=True)
    try:
        loop.wait_for(lambda: "loading the language model" in loop.daemon._status_text())
        loop.say("Computer, what time is it?")
        loop.wait_for(lambda: len(loop.records()) == 1, timeout=30)
        record = loop.records()[0]
        assert record["error"] is None and record["assistant"].endswith("It is noon.")
        assert loop.speaker.said == [LOADING_SENTENCE, "It is noon."]
        # One load: the warm-up's, held to its end; the turn waited for it.
        assert [load.outcome for load in ollama_server.loads] == ["loaded"]
        assert len(conversation(ollama_server)) == 1
        loop.wait_for(lambda: "loading" not in loop.daemon._status_text())
    finally:
        loop.stop()


# ------------------------------------------------------------------------- barge-in


def test_barge_in_stops_speech_and_clips_history(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    first = "Once upon a time there was a king who had three daughters."
    ollama_server.script(
        Reply(content=[first, " The eldest loved gold above all things.", " The end."]),
        Reply(content=["It is noon."]),
    )
    loop = loop_factory()
    loop.say("Computer, tell me a story.")
    loop.wait_for(lambda: loop.daemon.machine.state is State.SPEAKING)
    time.sleep(len(first) * SECONDS_PER_CHAR * 0.6)  # most of the first sentence is heard
    loop.say("Computer, stop. What time is it?", duration=0.8)
    loop.wait_for(lambda: len(loop.records()) == 2)

    story, answer = loop.records()
    assert story["interrupted"] is True
    assert story["assistant"].startswith("Once upon a time")
    assert story["assistant"].endswith("…") and "gold" not in story["assistant"]
    assert answer["user"] == "Stop. What time is it?" and answer["assistant"] == "It is noon."
    second = conversation(ollama_server)[1]["messages"]
    assert second[2] == {"role": "assistant", "content": story["assistant"]}
    assert "The eldest" not in " ".join(loop.speaker.said)


def test_speech_without_the_phrase_during_a_reply_changes_nothing(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    ollama_server.script(Reply(content=["The kitchen light is on, and so is the hall light."]))
    loop = loop_factory()
    loop.say("Computer, which lights are on?")
    loop.wait_for(lambda: loop.daemon.machine.state is State.SPEAKING)
    loop.say("the kitchen light is on and", duration=0.5)  # its own voice through the mic
    loop.wait_for(lambda: len(loop.records()) == 1)
    (record,) = loop.records()
    assert record["interrupted"] is False
    assert record["assistant"] == "The kitchen light is on, and so is the hall light."
    assert len(conversation(ollama_server)) == 1


def test_barge_in_with_the_phrase_alone_keeps_the_acknowledgement_out_of_the_reply(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    ollama_server.script(
        Reply(
            content=["Once upon a time there was a king.", " He had three daughters.", " The end."],
            chunk_delay_s=0.6,
        ),
        Reply(content=["It is noon."]),
    )
    loop = loop_factory()
    loop.say("Computer, tell me a story.")
    loop.wait_for(lambda: loop.daemon.machine.state is State.SPEAKING)
    time.sleep(0.3)
    loop.say("Computer.", duration=0.5)
    loop.wait_for(lambda: len(loop.records()) == 1)
    loop.wait_for(lambda: "Yes?" in loop.speaker.said and not loop.speaker.speaking)
    (story,) = loop.records()
    assert story["interrupted"] is True
    assert story["assistant"].startswith("Once upon a time")
    assert "Yes?" not in story["assistant"]
    time.sleep(1.5)  # the request (0.8 s long) starts after the echo tail (0.5 s)
    loop.say("What time is it?", duration=0.8)
    loop.wait_for(lambda: len(loop.records()) == 2)
    history = conversation(ollama_server)[1]["messages"]
    assert history[2] == {"role": "assistant", "content": story["assistant"]}
    assert all("Yes?" not in m["content"] for m in history)


def test_a_barged_in_turn_waiting_on_its_tool_leaves_no_acknowledgement_in_the_next(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    release = threading.Event()

    def look_up(topic: str) -> str:
        """Look something up (slowly).

        Args:
            topic: What to look up.
        """
        release.wait(10)
        return f"nothing about {topic}"

    ollama_server.script(
        Reply(
            content=["Let me look that up for you, it will take a moment."],
            tool_calls=[ToolCall("look_up", {"topic": "kings"})],
        ),
        Reply(content=["It is noon."]),
    )
    loop = loop_factory(ToolRegistry([Tool.from_function(look_up, group="system")]))
    loop.say("Computer, look up kings.")
    loop.wait_for(lambda: loop.daemon.machine.state is State.SPEAKING)
    time.sleep(0.2)
    loop.say("Computer.", duration=0.5)  # a barge-in while the first turn waits on its tool
    loop.wait_for(lambda: "Yes?" in loop.speaker.said and not loop.speaker.speaking)
    time.sleep(1.5)  # the request (0.8 s long) starts after the echo tail (0.5 s)
    loop.say("What time is it?", duration=0.8)
    time.sleep(0.3)
    release.set()
    loop.wait_for(lambda: len(loop.records()) == 2)
    first, second = loop.records()
    assert first["interrupted"] is True
    assert second["user"] == "What time is it?"
    assert second["assistant"] == "It is noon."


def test_no_sentence_of_a_reply_is_queued_after_a_barge_in(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    """The turn thread checks for the cancel and queues a sentence; a barge-in in between
    must not let that sentence play after the interrupt."""
    ollama_server.script(
        Reply(
            content=["Once upon a time there was a king.", " He had three daughters.", " The end."],
            chunk_delay_s=0.3,
        ),
        Reply(content=["It is noon."]),
    )
    loop = loop_factory()
    interrupted = threading.Event()

    def barge_in_now(text: str) -> None:
        if "daughters" not in text or interrupted.is_set():
            return
        interrupted.set()
        loop.say("Computer, stop. What time is it?", duration=0.8)
        # Give the main loop the chance to interrupt before this sentence is queued (with
        # the fix it cannot: the interrupt waits for the queueing to finish).
        job = loop.daemon._jobs.get(1)
        if job is not None:
            job.stop_reported.wait(1.0)

    loop.speaker.before_say = barge_in_now
    loop.say("Computer, tell me a story.")
    loop.wait_for(lambda: len(loop.records()) == 2)
    assert interrupted.is_set()
    log = loop.speaker.log
    stopped = log.index("stop")
    assert not [entry for entry in log[stopped:] if "daughters" in entry or "end" in entry], log
    story, answer = loop.records()
    assert story["interrupted"] is True and answer["assistant"] == "It is noon."


# ------------------------------------------------------------------------- confirmation


def confirm_registry(deleted: list[str]) -> ToolRegistry:
    def delete_note(name: str) -> str:
        """Delete a note.

        Args:
            name: The note's name.
        """
        deleted.append(name)
        return f"deleted {name}"

    tool = Tool.from_function(
        delete_note,
        group="files",
        needs_confirmation=True,
        question=lambda args: f"Delete the note {args['name']}? Say yes or no.",
    )
    return ToolRegistry([tool])


def script_delete(server: OllamaTestServer) -> None:
    server.script(
        Reply(tool_calls=[ToolCall("delete_note", {"name": "shopping"})]),
        Reply(content=["Done."]),
    )


def ask_and_wait(loop: Loop) -> None:
    loop.say("Computer, delete my shopping note.")
    question = "Delete the note shopping? Say yes or no."
    loop.wait_for(lambda: question in loop.speaker.said and not loop.speaker.speaking)
    assert loop.daemon.machine.state is State.CONFIRMING
    time.sleep(1.2)  # the answer starts after the question and its echo tail (0.5 s)


@pytest.mark.parametrize(
    ("answer", "decision", "deleted_names"),
    [("Yes, go ahead.", "confirmed", ["shopping"]), ("No, don't.", "declined", [])],
)
def test_spoken_confirmation(
    loop_factory, ollama_server: OllamaTestServer, answer, decision, deleted_names
) -> None:
    deleted: list[str] = []
    script_delete(ollama_server)
    loop = loop_factory(confirm_registry(deleted))
    ask_and_wait(loop)
    loop.say(answer, duration=0.6)
    loop.wait_for(lambda: len(loop.records()) == 1)
    (record,) = loop.records()
    assert deleted == deleted_names
    (call,) = record["tool_calls"]
    assert set(call) == {"name", "arguments", "decision", "result"}
    assert call["name"] == "delete_note" and call["decision"] == decision
    assert call["arguments"] == {"name": "shopping"}
    assert isinstance(call["result"], str) and 0 < len(call["result"]) <= 200
    assert ("deleted shopping" in call["result"]) is bool(deleted_names)
    start = dt.datetime.fromisoformat(record["start"])
    assert start.utcoffset() is not None  # ISO 8601 with the time zone
    assert abs((start - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    tool_message = conversation(ollama_server)[1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert ("deleted shopping" in tool_message["content"]) is bool(deleted_names)
    assert "Delete the note shopping?" in record["assistant"]  # the question was spoken


@pytest.mark.parametrize(
    ("answer", "decision", "deleted_names"),
    [("Yes.", "confirmed", ["shopping"]), ("No.", "declined", [])],
)
def test_short_answer_after_the_acknowledgement(
    loop_factory, ollama_server: OllamaTestServer, answer, decision, deleted_names
) -> None:
    """ "Computer." -> "Yes?" -> request -> question -> "Yes." (the same word as the
    acknowledgement) is an answer, not an echo."""
    deleted: list[str] = []
    script_delete(ollama_server)
    loop = loop_factory(confirm_registry(deleted))
    loop.say("Computer.", duration=0.5)
    loop.wait_for(lambda: loop.speaker.said == ["Yes?"] and not loop.speaker.speaking)
    time.sleep(2.0)  # the request (1 s long) starts after the acknowledgement's echo tail
    loop.say("Delete my shopping note.")
    question = "Delete the note shopping? Say yes or no."
    loop.wait_for(lambda: question in loop.speaker.said and not loop.speaker.speaking)
    time.sleep(1.2)
    loop.say(answer, duration=0.5)
    loop.wait_for(lambda: len(loop.records()) == 1)
    assert deleted == deleted_names
    assert loop.records()[0]["tool_calls"][0]["decision"] == decision


def test_acknowledgement_opens_a_window_with_zero_follow_up(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    ollama_server.script(Reply(content=["It is noon."]))
    loop = loop_factory(follow_up_s=0.0)
    loop.say("Computer.", duration=0.5)
    loop.wait_for(lambda: loop.speaker.said == ["Yes?"] and not loop.speaker.speaking)
    time.sleep(2.0)  # the request (1 s long) starts after the acknowledgement's echo tail
    loop.say("What time is it?", duration=0.8)
    loop.wait_for(lambda: len(loop.records()) == 1)
    assert loop.records()[0]["assistant"] == "It is noon."
    assert loop.records()[0]["speech_prob"] == 0.988  # the speech gate's verdict, rounded


def test_confirmation_times_out_to_no(loop_factory, ollama_server: OllamaTestServer) -> None:
    deleted: list[str] = []
    script_delete(ollama_server)
    # Nobody answers: the shortest wait the config allows (3 s is for the tests that answer).
    loop = loop_factory(confirm_registry(deleted), confirm_timeout_s=1.0)
    ask_and_wait(loop)
    loop.wait_for(lambda: len(loop.records()) == 1)  # confirm_timeout_s = 1.0, nobody answers
    assert deleted == []
    (record,) = loop.records()
    (call,) = record["tool_calls"]
    assert call["decision"] == "declined"
    # Said aloud, after the question and before the reply, and recorded as unanswered.
    question = "Delete the note shopping? Say yes or no."
    assert loop.speaker.said[-3:] == [question, "I'll take that as a no.", "Done."]
    assert "I'll take that as a no." in record["assistant"]
    assert "did not answer" in call["result"] and "taken as a no" in call["result"]
    tool_message = conversation(ollama_server)[1]["messages"][-1]
    assert "did not answer" in tool_message["content"]  # the model is told, too


def test_a_no_is_not_taken_for_an_unanswered_question(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    deleted: list[str] = []
    script_delete(ollama_server)
    loop = loop_factory(confirm_registry(deleted))
    ask_and_wait(loop)
    loop.say("No.", duration=0.5)
    loop.wait_for(lambda: len(loop.records()) == 1)
    assert "I'll take that as a no." not in loop.speaker.said
    assert "did not answer" not in loop.records()[0]["tool_calls"][0]["result"]


# ------------------------------------------------------------------------- robustness


def test_a_crashing_turn_is_recorded_and_the_loop_goes_on(
    loop_factory, ollama_server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ollama_server.script(Reply(content=["Second time lucky."]))
    loop = loop_factory()
    real_ask = loop.daemon.assistant.ask
    calls = []

    def flaky_ask(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise RuntimeError("a bug in the brain")
        return real_ask(*args, **kwargs)

    monkeypatch.setattr(loop.daemon.assistant, "ask", flaky_ask)
    loop.say("Computer, first try.")
    loop.wait_for(lambda: len(loop.records()) == 1)
    failed = loop.records()[0]
    assert failed["error"] == "internal: RuntimeError: a bug in the brain"
    assert failed["assistant"] == "Something went wrong on my side. Please try again."
    loop.say("Computer, second try.")
    loop.wait_for(lambda: len(loop.records()) == 2)
    assert loop.records()[1]["assistant"] == "Second time lucky."
    assert loop.thread.is_alive()


def test_sighup_reload_applies_new_wake_settings(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    loop = loop_factory()
    config = loop.daemon.config_path
    config.write_text(
        f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}  phrases: [jarvis]\n"
        "  acknowledgement: Listening.\n"
    )
    loop.daemon.request_reload()
    loop.wait_for(lambda: loop.daemon.machine.matcher.phrases == ["jarvis"])
    loop.say("Computer.", duration=0.5)
    loop.say("Jarvis.", duration=0.5)
    loop.wait_for(lambda: "Listening." in loop.speaker.said)
    assert loop.speaker.said == ["Listening."]


def test_reload_keeps_the_run_options(ollama_server: OllamaTestServer, tmp_path: Path) -> None:
    """`voiced run --no-wake --model M --host H` still applies after a SIGHUP reload."""
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  host: http://127.0.0.1:9\n  model: gpt-oss:120b\n")
    overrides = {
        "wake.engine": "text",
        "wake.phrases": [],
        "llm.host": ollama_server.url,
        "llm.model": "gpt-oss:20b",
    }
    settings = config_mod.load(config, overrides)
    loop = Loop(settings, None, config, overrides)
    try:
        config.write_text(
            "llm:\n  host: http://127.0.0.1:9\n  model: gpt-oss:120b\n"
            f"{TEXT_ENGINE}  acknowledgement: Listening.\n"
        )
        loop.daemon.request_reload()
        loop.wait_for(lambda: loop.daemon.settings.wake.acknowledgement == "Listening.")
        assert loop.daemon.settings.wake.phrases == []
        assert loop.daemon.machine.matcher.always_addressed
        assert loop.daemon.settings.llm.host == ollama_server.url
        assert loop.daemon.settings.llm.model == "gpt-oss:20b"
    finally:
        loop.stop()


def test_watchdog_goes_on_while_a_reload_loads_models(
    ollama_server: OllamaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.1)
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}")
    loop = Loop(make_settings(ollama_server.url), None, config)
    loop.daemon.notifier = Notifier(
        environ={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    )
    loading = threading.Event()

    def slow_voice(settings: Settings) -> None:  # a big voice, or a model being converted
        loading.set()
        time.sleep(2.0)

    monkeypatch.setattr(loop.daemon, "_load_voice", slow_voice)
    try:
        config.write_text(
            f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}tts:\n  sentence_silence_s: 0.33\n"
        )
        loop.daemon.request_reload()
        loop.wait_for(loading.is_set)
        pings = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if b"WATCHDOG=1" in sock.recv(4096):
                    pings.append(time.monotonic())
        # Every half WatchdogSec (0.2 s): far more than one ping in the 2 s of loading.
        assert len(pings) >= 5, pings
    finally:
        loop.stop()
        sock.close()


def test_reload_with_a_broken_file_keeps_the_old_settings(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    loop = loop_factory()
    loop.daemon.config_path.write_text(f"{TEXT_ENGINE}  phrases: 7\n")
    loop.daemon.request_reload()
    time.sleep(0.5)
    assert loop.daemon.machine.matcher.phrases == ["computer", "hey computer"]
    loop.say("Computer.", duration=0.5)
    loop.wait_for(lambda: loop.speaker.said == ["Yes?"])


def test_reload_to_the_wake_word_model_and_to_one_that_does_not_exist(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    loop = loop_factory()
    daemon = loop.daemon
    daemon.config_path.write_text("wake:\n  engine: model\n  model: hey_computer\n")
    daemon.request_reload()
    time.sleep(0.5)
    assert daemon.settings.wake.engine == "text"  # the old wake settings stay
    assert not daemon.machine.uses_model
    daemon.config_path.write_text("wake:\n  engine: model\n  model: alexa\n")
    daemon.request_reload()
    loop.wait_for(lambda: daemon.machine.uses_model)
    assert daemon.settings.wake.model == "alexa"
    loop.wait_for(lambda: daemon._ears_until == -math.inf)  # Whisper hears nothing unasked
    loop.say("Computer, what time is it?")  # a transcript without a detection
    time.sleep(0.5)
    assert loop.records() == [] and daemon.machine.active_turn is None


def test_reload_waits_for_the_turn_in_progress(
    loop_factory, ollama_server: OllamaTestServer
) -> None:
    ollama_server.script(Reply(content=["One, ", "two, ", "three."], chunk_delay_s=0.3))
    loop = loop_factory()
    loop.say("Computer, count to three.")
    loop.wait_for(lambda: loop.daemon.machine.active_turn is not None)
    loop.daemon.config_path.write_text(
        f"llm:\n  host: {ollama_server.url}\n{TEXT_ENGINE}  phrases: [jarvis]\n"
    )
    loop.daemon.request_reload()
    time.sleep(0.3)
    assert loop.daemon.machine.matcher.phrases == ["computer", "hey computer"]
    loop.wait_for(lambda: len(loop.records()) == 1)
    loop.wait_for(lambda: loop.daemon.machine.matcher.phrases == ["jarvis"])
    assert loop.records()[0]["assistant"] == "One, two, three."


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_long_request_split_by_the_segmenter_is_transcribed_whole(seed: int) -> None:
    from tests.speech import synthesize
    from voiced.audio.segmenter import Segmenter, UtteranceEnded
    from voiced.config import VadSettings
    from voiced.service.daemon import SplitJoiner

    request = synthesize(
        "Computer, what is the capital of France, and what about Germany?", seed=seed
    )
    other = synthesize("Thank you.", seed=seed + 10, lead_s=1.0)
    stream = np.concatenate([request, other])
    settings = VadSettings(max_utterance_s=1.5)
    segmenter = Segmenter(settings)
    joiner = SplitJoiner(gap_s=settings.silence_ms / 1000)
    events: list = []
    complete: list = []
    # Fed in 30 ms blocks, as the capture thread does.
    for offset in range(0, stream.size, 480):
        new = segmenter.feed(stream[offset : offset + 480])
        events += new
        complete += joiner.feed(new, segmenter.stream_time_s)
    tail = segmenter.flush()
    events += tail
    complete += joiner.feed(tail, segmenter.stream_time_s)
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    described = [(e.reason, round(e.start_s, 2), round(e.end_s, 2)) for e in ended]
    assert any(e.reason == "max_length" for e in ended), described
    assert len(complete) == 2, described
    (first, last, joined, _), (other_first, other_last, other_audio, _) = complete
    boundary = request.size / 16000
    assert first.start_s < 1.0 and boundary - 1.5 < last.end_s < boundary, described
    request_pieces = [e for e in ended if e.start_s < boundary]
    assert len(request_pieces) > 1
    assert joined.size == sum(e.audio.size for e in request_pieces)
    assert other_first is other_last and other_first.start_s > boundary
    assert other_audio.size == other_first.audio.size


def test_joined_speech_is_capped() -> None:
    from voiced.audio.segmenter import UtteranceEnded
    from voiced.service.daemon import SplitJoiner

    def piece(start: float) -> UtteranceEnded:
        audio = np.zeros(16000, np.float32)
        return UtteranceEnded(
            0, start, start + 1, start + 1, 0, "max_length", audio, start, start + 1
        )

    joiner = SplitJoiner(gap_s=0.7, max_s=2.5)
    assert joiner.feed([piece(0.0)], 1.0) == []
    assert joiner.feed([piece(1.0)], 2.0) == []
    (done,) = joiner.feed([piece(2.0)], 3.0)
    assert done[2].size == 3 * 16000
    # A split piece with no speech after it completes once the gap has passed.
    assert joiner.feed([piece(10.0)], 11.5) == []
    (alone,) = joiner.feed([], 11.8)
    assert alone[0] is alone[1]


def test_a_full_disk_costs_no_transcript_record(
    loop_factory, ollama_server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Records the disk refuses wait in memory and go out, in order, once it takes them."""
    import errno

    ollama_server.script(
        Reply(content=["One."]), Reply(content=["Two."]), Reply(content=["Three."])
    )
    loop = loop_factory()
    journal = loop.daemon.journal
    real_append = journal.append
    full = threading.Event()
    full.set()
    refused = []

    def append(record):
        if full.is_set():
            refused.append(record["text"])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(record)

    monkeypatch.setattr(journal, "append", append)
    loop.say("Computer, first.")
    loop.wait_for(lambda: len(refused) == 1)
    loop.say("Computer, second.")
    loop.wait_for(lambda: len(loop.daemon._unwritten) == 2)
    assert refused == ["First.", "First."]  # tried again first, in order; the disk still full
    assert loop.records() == []
    assert loop.thread.is_alive()
    full.clear()  # space again
    loop.say("Computer, third.")
    loop.wait_for(lambda: len(loop.records()) == 3)
    assert [r["text"] for r in loop.records()] == ["First.", "Second.", "Third."]
    assert [r["assistant"] for r in loop.records()] == ["One.", "Two.", "Three."]
    # Said once the waiting records are out: the test may see them a moment before.
    loop.wait_for(lambda: any("written again" in r.getMessage() for r in caplog.records))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write the transcript" in m for m in messages) == 1  # said once


def test_a_long_first_sentence_is_spoken_from_its_first_clause(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    # Piper's time grows with the text: the first sound comes sooner when the first sentence
    # is spoken from its first clause boundary on; later sentences are spoken whole.
    first = "Sure, the capital of France is Paris, a city of about two million people."
    second = "It lies on the Seine, in the north of the country."
    ollama_server.script(Reply(content=[first[:20], first[20:], " ", second]))
    loop = Loop(make_settings(ollama_server.url), None, tmp_path / "config.yaml")
    try:
        loop.say("Computer, what is the capital of France?")
        loop.wait_for(lambda: len(loop.records()) == 1)
        assert loop.speaker.said == [
            "Sure, the capital of France is Paris,",
            "a city of about two million people.",
            second,
        ]
        assert loop.records()[0]["assistant"] == f"{first} {second}"
    finally:
        loop.stop()
