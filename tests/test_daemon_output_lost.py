"""``voiced run`` when the sound server restarts in the middle of a reply (a private PulseAudio).

The reply that was playing is cut and recorded with a ``speech:`` error; the daemon reopens
its output, its microphone comes back, and the next reply is heard on the speaker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.notify_socket import NotifySocket
from tests.ollama_server import OllamaTestServer, Reply
from tests.pulse import PulseServer, _missing_tools, _unavailable
from tests.speech import synthesize, wer
from tests.store import seed_models
from voiced.transcripts import Journal

pytestmark = pytest.mark.pulse

STORY = [
    "Once upon a time, a lighthouse keeper lived alone on a rock in the sea. ",
    "Every night he climbed one hundred and twenty steps to light the lamp. ",
    "One stormy night, a small boat appeared between the waves. ",
    "He ran down the steps with a lantern in his hand. ",
]
ANSWER = "The library opens at nine in the morning."


def _tail(log: Path, size: int = 3000) -> str:
    """The end of the log only: PortAudio's ALSA thread can flood it when the server goes."""
    with log.open("rb") as file:
        file.seek(max(0, log.stat().st_size - size))
        return file.read().decode(errors="replace")


def _wait(condition, what: str, log: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the daemon exited; log:\n{_tail(log)}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened; log:\n{_tail(log)}")
        time.sleep(0.05)


def test_sound_server_restarts_mid_reply_and_the_next_reply_is_heard(
    whisper_store: Path, tmp_path: Path, stt
) -> None:
    if _missing_tools():
        _unavailable(f"{', '.join(_missing_tools())} not found")  # fails under CI
    story_request = synthesize("Computer, tell me a story.", seed=1)
    question = synthesize("Computer, when does the library open?", seed=2)
    server = PulseServer(Path(tempfile.mkdtemp(prefix="voiced-pulse-own-")))
    server.start()
    home = tmp_path / "home"
    seed_models(home, whisper_store)
    notify = NotifySocket(tmp_path / "notify")
    messages = notify.messages
    log = tmp_path / "daemon.log"
    journal = Journal(home / "transcripts")
    with OllamaTestServer() as ollama, open(log, "wb") as log_file:
        (home / "config.yaml").write_text(
            f"llm:\n  host: {ollama.url}\ntools:\n  enabled: []\n"
            "wake:\n  engine: text\n  follow_up_s: 0\nstt:\n  threads: 1\n"
        )
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
            _wait(lambda: "READY=1" in messages, "READY=1", log, proc, timeout=120)
            ollama.script(Reply(content=STORY), Reply(content=[ANSWER]))
            seen = len(messages)
            server.play_into_mic(story_request)
            _wait(lambda: "STATUS=speaking" in messages[seen:], "speaking", log, proc)
            time.sleep(1.0)  # inside the first sentence
            server.stop()  # the sound server goes away mid-reply ...
            time.sleep(0.5)
            server.start()  # ... and comes back (same socket, same sinks)
            _wait(lambda: len(list(journal.records())) == 1, "the cut reply's record", log, proc)
            (cut,) = journal.records()
            assert cut["error"] and cut["error"].startswith("speech:"), cut
            assert "lantern" not in cut["assistant"]  # the last sentence was never heard
            # The microphone comes back on its own; then the next request is answered aloud.
            back = len(messages)
            _wait(
                lambda: "STATUS=idle" in messages[back:] or "audio input is back" in _tail(log),
                "the microphone's return",
                log,
                proc,
            )
            recording = server.start_speaker_recording()
            server.play_into_mic(question)
            _wait(lambda: len(list(journal.records())) == 2, "the next turn", log, proc)
            time.sleep(0.5)
            audio = recording.stop()
            answer = list(journal.records())[-1]
            assert answer["error"] is None and answer["assistant"] == ANSWER, answer
            loud = np.flatnonzero(np.abs(audio) > 0.01)
            assert loud.size, f"nothing was heard after the restart; log:\n{_tail(log)}"
            heard = stt.transcribe(audio[max(0, loud[0] - 1600) : loud[-1] + 1600]).text
            assert wer(ANSWER, heard) <= 0.25, heard
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            server.stop()
            notify.close()
            shutil.rmtree(server.dir, ignore_errors=True)
