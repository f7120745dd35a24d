"""``voiced run`` when the sound server goes away and comes back (a private PulseAudio)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.notify_socket import NotifySocket
from tests.ollama_server import OllamaTestServer, Reply
from tests.pulse import PulseServer, _missing_tools, _unavailable
from tests.speech import synthesize
from tests.store import seed_models
from voiced.transcripts import Journal

pytestmark = pytest.mark.pulse

_QUESTION = synthesize("Hey Jarvis, what time is it?", seed=2)


def _tail(log: Path, size: int = 3000) -> str:
    """The end of the daemon's log. Never the whole file: PortAudio's ALSA thread once wrote
    15 GB of "Expression ... failed" lines into it in 3 minutes after the server went away,
    and reading that whole took the test run down with it (out of memory)."""
    with log.open("rb") as file:
        file.seek(max(0, log.stat().st_size - size))
        return file.read().decode(errors="replace")


def _wait(condition, what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened; log:\n{_tail(log)}")
        time.sleep(0.05)


def _turn(server: PulseServer, ollama: OllamaTestServer, home: Path, log: Path) -> dict:
    """Ask a question aloud; the turn's record once the reply has been spoken."""
    journal = Journal(home / "transcripts")
    before = len(list(journal.records()))
    ollama.script(Reply(content=["It is noon."]))
    server.play_into_mic(_QUESTION)
    _wait(lambda: len(list(journal.records())) > before, "a turn record", log, timeout=60.0)
    return list(journal.records())[before]


def test_microphone_lost_and_back(whisper_store: Path, tmp_path: Path) -> None:
    """The sound server stops and starts again (as when PipeWire restarts): the microphone
    comes back, and so does the speaker: the first reply after it is heard whole."""
    if _missing_tools():
        _unavailable(f"{', '.join(_missing_tools())} not found")  # fails under CI
    server = PulseServer(Path(tempfile.mkdtemp(prefix="voiced-pulse-own-")))
    server.start()
    home = tmp_path / "home"
    seed_models(home, whisper_store)
    notify = NotifySocket(tmp_path / "notify")
    messages = notify.messages
    log = tmp_path / "daemon.log"
    with OllamaTestServer() as ollama, open(log, "wb") as log_file:
        (home / "config.yaml").write_text(f"llm:\n  host: {ollama.url}\ntools:\n  enabled: []\n")
        env = {
            **os.environ,
            **server.env_vars,
            "VOICED_HOME": str(home),
            "NOTIFY_SOCKET": str(notify.path),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "voiced", "-v", "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait(lambda: "READY=1" in messages, "READY=1", log)
            assert _turn(server, ollama, home, log)["assistant"] == "It is noon."  # speaker open
            ready_at = len(messages)
            server.stop()  # the microphone disappears
            _wait(
                lambda: "STATUS=waiting for the microphone" in messages[ready_at:],
                "status after the loss",
                log,
                timeout=30.0,  # the stall check fires after 3 s
            )
            assert proc.poll() is None
            assert "retrying in" in _tail(log, 1_000_000)
            lost_at = len(messages)
            server.start()  # ... and comes back
            _wait(lambda: "STATUS=idle" in messages[lost_at:], "status after the return", log)
            assert "audio input is back" in _tail(log, 1_000_000)
            after = _turn(server, ollama, home, log)
            assert after["assistant"] == "It is noon." and not after.get("error"), after
            # PortAudio 19.6 may loop printing one error line without end once the server is
            # gone; that loop lives in the capture process, which is killed: no flood here.
            assert log.stat().st_size < 1_000_000
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            server.stop()
            notify.close()
            shutil.rmtree(server.dir, ignore_errors=True)
