"""``voiced run`` end to end with tool calls, spoken confirmations and SIGHUP reloads.

Real PulseAudio, whisper, Piper and webrtcvad; the scripted Ollama server plays gpt-oss and
makes the tool calls. One daemon process serves the module (models load once) and the tests
run in order against it, like a user talking to it:

- a read-only tool (read_file) runs without a question;
- write_file is asked aloud and done on a spoken "yes", not done on "no", and not done when
  nobody answers (voiced says "I'll take that as a no.");
- SIGHUP (a real signal to the process) applies each section that has its own reload branch:
  ``logging`` (the level), ``stt`` (a new SpeechToText), ``vad`` (the capture restarts with a
  new segmenter), ``transcripts`` (the journal) and ``tts`` (a new Piper voice and player).

The daemon runs without ``-v``: its log level comes from the config (``logging.level``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import daemon as daemon_fixtures
from tests import pulse as pulse_fixtures
from tests.daemon import DaemonHandle, voiced_run
from tests.ollama_server import OllamaTestServer, Reply, ToolCall
from tests.speech import heard_speech, synthesize
from tests.store import seed_models

pytestmark = pytest.mark.pulse
pulse_server = pulse_fixtures.pulse_server
ollama = daemon_fixtures.ollama

# Long enough for "Yes, go ahead." to be said and transcribed after the question, on a busy
# 2-core machine (6 s was too short there once in 4 runs).
CONFIRM_TIMEOUT_S = 6.0
# The wait for an answer when the test gives none (ask_to_write takes 1.2 s of it).
UNANSWERED_S = 2.0
UTTERANCES = {
    "read": "Computer, what is on my shopping list?",
    "write": "Computer, make a packing list.",
    "yes": "Yes, go ahead.",
    "no": "No, don't.",
    "time": "Computer, what time is it?",
}
_SPEECH: dict[str, np.ndarray] = {}


def wake_section(confirm_timeout_s: float = CONFIRM_TIMEOUT_S) -> str:
    # The text engine ("Computer"); no follow-up window, so every request says it.
    return f"  engine: text\n  follow_up_s: 0\n  confirm_timeout_s: {confirm_timeout_s}\n"


def base_config(ollama: OllamaTestServer, files: Path, **sections: str) -> str:
    """The daemon's config; ``sections`` replace whole sections (YAML text, indented)."""
    parts = {
        "llm": f"  host: {ollama.url}\n",
        "wake": wake_section(),
        "tools": f"  enabled: [files, time]\n  file_roots: [{str(files)!r}]\n",
        "stt": "  threads: 1\n",
        "logging": "  level: DEBUG\n",
        **sections,
    }
    return "".join(f"{name}:\n{body}" for name, body in parts.items())


class Handle(DaemonHandle):
    config: Path
    files: Path

    def reload(self, text: str) -> int:
        """Write the config, send a real SIGHUP and wait until the daemon is ready again.

        Returns the log position before the signal."""
        self.config.write_text(text)
        mark = len(self.log())
        seen = len(self.notifications)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90
        while True:
            after = [m for _, m in list(self.notifications)[seen:]]
            if "RELOADING=1" in after and "READY=1" in after[after.index("RELOADING=1") :]:
                return mark
            assert self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"no reload; log:\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def wait_for_status(self, status: str, after: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while f"STATUS={status}" not in [m for _, m in list(self.notifications)[after:]]:
            assert self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"never {status}; log:\n{self.log()[-3000:]}"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def daemon(
    pulse_server, ollama: OllamaTestServer, whisper_store: Path, tmp_path_factory
) -> Iterator[Handle]:
    for index, (key, text) in enumerate(UTTERANCES.items()):
        _SPEECH[key] = synthesize(text, seed=index)
    home = tmp_path_factory.mktemp("daemon_home")
    seed_models(home, whisper_store)
    # The user's home holds the files (outside VOICED_HOME, which tools never touch): the
    # questions then say "~/files/packing.txt", not a pytest folder that takes 4 s to read.
    user_home = tmp_path_factory.mktemp("user_home")
    files = user_home / "files"
    files.mkdir()
    (files / "shopping.txt").write_text("eggs, milk and bread\n")
    config = home / "config.yaml"
    config.write_text(base_config(ollama, files))
    # No -v: logging.level decides.
    with voiced_run(
        pulse_server, ollama, home, options=[], env={"HOME": str(user_home)}, handle_type=Handle
    ) as handle:
        handle.config, handle.files = config, files
        yield handle


def say(pulse_server, key: str) -> None:
    pulse_server.play_into_mic(_SPEECH[key])


def wait_for_question_spoken(
    daemon: Handle, recording: pulse_fixtures.Recording, mark: int, quiet_s: float = 1.2
) -> None:
    """Until the question's last sentence ("Say yes or no.", which Piper logs as it starts
    synthesising it) has played and the speaker has been quiet for ``quiet_s`` (the echo
    tail, during which an answer is not taken). A busy machine may leave gaps between the
    question's earlier pieces; those are not its end."""
    daemon.wait_for_log("text=Say yes or no.", after=mark)
    start = recording.samples_so_far()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        audio = recording.audio_so_far()[start:]
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        if loud.size and (audio.size - loud[-1]) / recording.rate >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the question was never spoken")


def ask_to_write(daemon: Handle, pulse_server, name: str) -> pulse_fixtures.Recording:
    """Script write_file for ``name``, make the request, and wait until the question is over."""
    daemon.ollama.script(
        Reply(tool_calls=[ToolCall("write_file", {"path": name, "content": "socks and a hat"})]),
        Reply(content=["All right."]),
    )
    seen, mark = len(daemon.notifications), len(daemon.log())
    recording = pulse_server.start_speaker_recording()
    say(pulse_server, "write")
    daemon.wait_for_status("confirming", seen)
    wait_for_question_spoken(daemon, recording, mark)
    return recording


# ------------------------------------------------------------------------- tool calls


def test_a_read_only_tool_runs_without_a_question(daemon: Handle, pulse_server) -> None:
    shopping = str(daemon.files / "shopping.txt")
    daemon.ollama.script(
        Reply(tool_calls=[ToolCall("read_file", {"path": shopping})]),
        Reply(content=["Eggs, milk and bread."]),
    )
    say(pulse_server, "read")
    (record,) = daemon.wait_for_records(1)
    (call,) = record["tool_calls"]
    assert call["name"] == "read_file" and call["decision"] == "allowed"
    assert "eggs, milk and bread" in call["result"]
    assert record["assistant"] == "Eggs, milk and bread."
    tool_message = daemon.conversation_requests()[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "eggs, milk and bread" in tool_message["content"]
    assert not daemon.messages("STATUS=confirming")


def test_write_file_confirmed_by_a_spoken_yes(daemon: Handle, pulse_server, stt) -> None:
    count = len(daemon.records())
    recording = ask_to_write(daemon, pulse_server, "packing.txt")
    asked = recording.stop()
    assert not (daemon.files / "packing.txt").exists()  # nothing before the answer
    say(pulse_server, "yes")
    record = daemon.wait_for_records(count + 1)[-1]
    question = heard_speech(stt, asked).lower()  # checked after the answer: a failure here
    assert "yes or no" in question and "hat" in question, question  # leaves no question open
    (call,) = record["tool_calls"]
    assert call["name"] == "write_file" and call["decision"] == "confirmed", record
    assert (daemon.files / "packing.txt").read_text() == "socks and a hat"
    assert "Say yes or no." in record["assistant"]  # the question is part of what was said


def test_write_file_refused_by_a_spoken_no(daemon: Handle, pulse_server) -> None:
    count = len(daemon.records())
    recording = ask_to_write(daemon, pulse_server, "refused.txt")
    recording.stop()
    say(pulse_server, "no")
    record = daemon.wait_for_records(count + 1)[-1]
    assert not (daemon.files / "refused.txt").exists()
    (call,) = record["tool_calls"]
    assert call["decision"] == "declined" and "did not answer" not in call["result"], record


def test_write_file_unanswered_is_a_spoken_no(daemon: Handle, pulse_server, stt) -> None:
    # Nobody answers here: no time for an answer is needed. A reload of the wake section
    # alone restarts nothing (no model, no capture).
    daemon.reload(base_config(daemon.ollama, daemon.files, wake=wake_section(UNANSWERED_S)))
    try:
        count = len(daemon.records())
        recording = ask_to_write(daemon, pulse_server, "unanswered.txt")
        record = daemon.wait_for_records(count + 1)[-1]  # nobody answers: UNANSWERED_S
        time.sleep(0.5)
    finally:
        daemon.reload(base_config(daemon.ollama, daemon.files))
    heard = heard_speech(stt, recording.stop()).lower()
    assert not (daemon.files / "unanswered.txt").exists()
    (call,) = record["tool_calls"]
    assert call["decision"] == "declined" and "did not answer" in call["result"], record
    assert "I'll take that as a no." in record["assistant"]
    assert "take that as a no" in heard.replace(",", ""), heard


# ---------------------------------------------------------------------------- reloads


def turn(daemon: Handle, pulse_server, reply: str = "It is noon.") -> dict:
    count = len(daemon.records())
    daemon.ollama.script(Reply(content=[reply]))
    say(pulse_server, "time")
    return daemon.wait_for_records(count + 1)[-1]


def test_sighup_applies_the_logging_level(daemon: Handle, pulse_server) -> None:
    files, ollama = daemon.files, daemon.ollama
    daemon.reload(base_config(ollama, files, logging="  level: WARNING\n"))
    mark = len(daemon.log())  # after "received SIGHUP", logged before the reload
    turn(daemon, pulse_server)
    lines = daemon.log()[mark:].splitlines()
    assert not [line for line in lines if line.startswith(("INFO ", "DEBUG "))], lines
    mark = daemon.reload(base_config(ollama, files))
    assert (
        "INFO voiced.service.daemon: reloaded the configuration; changed: logging"
        in (daemon.log()[mark:])
    )


def test_sighup_loads_the_new_speech_to_text(daemon: Handle, pulse_server) -> None:
    """stt.energy_floor_dbfs above any speech: the new SpeechToText hears no words."""
    files, ollama = daemon.files, daemon.ollama
    count = len(daemon.records())
    requests = len(daemon.conversation_requests())
    mark = daemon.reload(
        base_config(ollama, files, stt="  threads: 1\n  energy_floor_dbfs: -1.0\n")
    )
    say(pulse_server, "time")
    daemon.wait_for_log("no words in", after=mark)
    assert len(daemon.records()) == count and len(daemon.conversation_requests()) == requests
    daemon.reload(base_config(ollama, files))
    assert turn(daemon, pulse_server)["assistant"] == "It is noon."


def test_sighup_restarts_the_capture_with_the_new_vad(daemon: Handle, pulse_server) -> None:
    """vad.silence_ms is the segmenter's: only a restarted capture waits the new time."""
    files, ollama = daemon.files, daemon.ollama
    # By silence alone, 1800 ms: before the restart, 700 ms or the end-of-turn model ended it.
    daemon.reload(base_config(ollama, files, vad="  silence_ms: 1800\n  end_of_turn: silence\n"))
    record = turn(daemon, pulse_server)
    assert record["endpoint"] == "silence" and record["timings"]["endpoint_wait_ms"] >= 1800
    daemon.reload(base_config(ollama, files))


def test_sighup_turns_the_transcripts_off_and_on(daemon: Handle, pulse_server) -> None:
    files, ollama = daemon.files, daemon.ollama
    count = len(daemon.records())
    requests = len(daemon.conversation_requests())
    mark = daemon.reload(base_config(ollama, files, transcripts="  enabled: false\n"))
    ollama.script(Reply(content=["Off the record."]))
    say(pulse_server, "time")
    daemon.wait_for_log("timings:", after=mark)  # the turn is over
    assert len(daemon.conversation_requests()) == requests + 1
    assert len(daemon.records()) == count
    daemon.reload(base_config(ollama, files))
    assert turn(daemon, pulse_server, "On the record.")["assistant"] == "On the record."


def test_sighup_loads_the_new_voice(daemon: Handle, pulse_server) -> None:
    """tts.volume: the reloaded Piper voice speaks at a quarter of the loudness."""
    files, ollama = daemon.files, daemon.ollama

    def loudness() -> float:
        recording = pulse_server.start_speaker_recording()
        turn(daemon, pulse_server, "It is a quarter past nine.")
        time.sleep(0.3)
        audio = recording.stop()
        return float(np.sqrt(np.mean(audio[np.abs(audio) > 0.005] ** 2)))

    before = loudness()
    daemon.reload(base_config(ollama, files, tts="  volume: 0.25\n"))
    after = loudness()
    daemon.reload(base_config(ollama, files))
    assert 0.15 < after / before < 0.4, (before, after)
