"""``voiced run`` with remote engines: another process's ``voiced serve`` hears and speaks for it.

Real PulseAudio, whisper, Piper and the scripted Ollama server, as in test_daemon_e2e.py; the
daemon's stt.server and tts.server point at a ``voiced serve`` on loopback. The first turn is
heard and spoken by the server; then the server dies in the middle of a turn (after hearing
it, before speaking the reply), and the daemon speaks the reply with its own voice and keeps
listening.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from tests.ollama_server import OllamaTestServer, Reply
from tests.speech import heard_speech, synthesize, wer
from tests.store import seed_models
from voiced.transcripts import Journal

pytestmark = pytest.mark.pulse
pulse_server = pulse_fixtures.pulse_server

UTTERANCES = ["Computer, what time is it?", "Computer, what day is it today?"]


class Processes:
    def __init__(self, home: Path, serve: subprocess.Popen, serve_log: Path) -> None:
        self.home = home
        self.serve = serve
        self.serve_log = serve_log
        self.run: subprocess.Popen | None = None
        self.run_log = home / "run.log"

    def log(self) -> str:
        return self.run_log.read_text(errors="replace")

    def records(self) -> list[dict]:
        records = Journal(self.home / "transcripts").records()
        return [record for record in records if record.get("kind") == "turn"]

    def wait_for(self, check, what: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            assert self.run is not None and self.run.poll() is None, self.log()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"{what} never happened; log:\n{self.log()[-3000:]}")


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaTestServer]:
    server = OllamaTestServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    return {text: synthesize(text, seed=i) for i, text in enumerate(UTTERANCES)}


@pytest.fixture(scope="module")
def processes(
    pulse_server, ollama: OllamaTestServer, whisper_store: Path, tmp_path_factory, speech
) -> Iterator[Processes]:
    server_home = tmp_path_factory.mktemp("serve_home")
    seed_models(server_home, whisper_store)
    serve_log = server_home / "serve.log"
    with open(serve_log, "wb") as log_file:
        serve = subprocess.Popen(
            [sys.executable, "-m", "voiced", "-v", "serve", "--uri", "tcp://127.0.0.1:0"],
            env={**pulse_server.env, "VOICED_HOME": str(server_home)},
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    line = serve.stdout.readline() if serve.stdout else ""
    assert line.startswith("listening on tcp://"), serve_log.read_text()
    uri = line.strip().removeprefix("listening on ")
    home = tmp_path_factory.mktemp("run_home")
    seed_models(home, whisper_store)
    (home / "config.yaml").write_text(
        f"llm:\n  host: {ollama.url}\n"
        "wake:\n  engine: text\n  follow_up_s: 0\n"
        "tools:\n  enabled: [time]\n"
        f"stt:\n  threads: 1\n  server: {uri}\n"
        f"tts:\n  server: {uri}\n"
    )
    handle = Processes(home, serve, serve_log)
    env = {**pulse_server.env, "VOICED_HOME": str(home)}
    env.pop("VOICED_CONFIG", None)
    env.pop("OLLAMA_HOST", None)
    with open(handle.run_log, "wb") as log_file:
        handle.run = subprocess.Popen(
            [sys.executable, "-m", "voiced", "-v", "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    handle.wait_for(lambda: "ready: say" in handle.log(), "the daemon ready")
    try:
        yield handle
    finally:
        pulse_fixtures.end_process(handle.run, grace_s=10)
        pulse_fixtures.end_process(serve, grace_s=10)


def test_a_turn_heard_and_spoken_by_the_server(
    processes: Processes, pulse_server, ollama: OllamaTestServer, speech, stt
) -> None:
    ollama.script(Reply(content=["It is ", "three o'clock in the afternoon."]))
    recording = pulse_server.start_speaker_recording()
    pulse_server.play_into_mic(speech[UTTERANCES[0]])
    (record,) = processes.wait_for(processes.records, "a turn record")
    time.sleep(0.5)
    audio = recording.stop()
    assert wer("what time is it", record["user"]) <= 0.25, record
    assert record["error"] is None
    serve_log = processes.serve_log.read_text()
    assert "of audio in" in serve_log  # the server transcribed the utterance
    assert "synthesized" in serve_log  # and spoke the reply
    assert "working locally" not in processes.log()
    heard = heard_speech(stt, audio)
    assert wer("It is three o'clock in the afternoon.", heard) <= 0.3, heard


def test_the_server_dies_mid_turn_and_the_daemon_speaks_itself(
    processes: Processes, pulse_server, ollama: OllamaTestServer, speech, stt
) -> None:
    gate = threading.Event()
    ollama.script(Reply(content=["Today is ", "a fine Wednesday."], gate=gate, gate_after=0))
    requests_before = len(ollama.chat_requests)
    recording = pulse_server.start_speaker_recording()
    pulse_server.play_into_mic(speech[UTTERANCES[1]])
    # The server heard the question; the model is "thinking": the server goes away now.
    processes.wait_for(lambda: len(ollama.chat_requests) > requests_before, "the chat request")
    pulse_fixtures.end_process(processes.serve)
    gate.set()
    records = processes.wait_for(lambda: processes.records()[1:], "the second turn record")
    time.sleep(0.5)
    audio = recording.stop()
    assert wer("what day is it today", records[0]["user"]) <= 0.25, records
    assert records[0]["assistant"] == "Today is a fine Wednesday."
    assert "text-to-speech server" in processes.log() and "working locally" in processes.log()
    heard = heard_speech(stt, audio)
    assert wer("Today is a fine Wednesday.", heard) <= 0.3, heard
    assert processes.run is not None and processes.run.poll() is None  # still listening
