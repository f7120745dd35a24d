"""``voiced run`` as a process: a model or voice that cannot load, and the config's log level.

systemd sees a start that cannot work as exit status 1 with a ``STATUS=`` line saying why;
the user sees one line on stderr, not a traceback. Without ``-v`` or ``-q`` the log level is
``logging.level`` from the config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import pulse as pulse_fixtures
from tests.notify_socket import NotifySocket

NO_SOUND_SERVER = ("PULSE_SERVER", "PULSE_COOKIE", "PULSE_STATE_PATH", "PULSE_RUNTIME_PATH")


def _env(notify: NotifySocket) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in NO_SOUND_SERVER}
    env["NOTIFY_SOCKET"] = str(notify.path)
    return env


@pytest.mark.parametrize(
    ("section", "make_value", "reason"),
    [
        (
            "stt:\n  model",
            lambda tmp: _junk(tmp / "broken.bin"),
            "not a whole whisper.cpp ggml model",
        ),
        ("tts:\n  voice", lambda tmp: str(tmp / "missing.onnx"), "does not exist"),
    ],
    ids=["speech-model", "voice"],
)
def test_run_that_cannot_load_exits_1_with_a_status_for_systemd(
    tmp_path: Path, section: str, make_value, reason: str
) -> None:
    value = make_value(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"wake:\n  engine: text\n{section}: {value}\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "voiced", "--config", str(config), "run"],
            env=_env(notify),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        time.sleep(0.2)  # the datagrams are in the socket; let the reader thread take them
    finally:
        notify.close()
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()  # one line: the error, naming the file
    assert line.startswith("Error: cannot start: ") and value in line and reason in line
    assert "Traceback" not in done.stderr
    failed = [m for m in notify.messages if m.startswith("STATUS=failed: ")]
    assert failed and reason in failed[-1], notify.messages
    assert "READY=1" not in notify.messages


def _junk(path: Path) -> str:
    path.write_bytes(b"not a model" * 100)
    return str(path)


@pytest.mark.parametrize(
    ("level", "present", "absent"),
    [
        # The voice's load is logged at DEBUG; the CLI's own default would hide it.
        ("DEBUG", ["DEBUG voiced.speech.tts: loaded voice"], []),
        # Ollama being down is a WARNING, which the CLI's default would show.
        ("ERROR", [], ["WARNING ", "INFO ", "DEBUG "]),
    ],
)
def test_run_logs_at_the_configured_level(
    tmp_path: Path, level: str, present: list[str], absent: list[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"wake:\n  engine: text\nllm:\n  host: http://127.0.0.1:9\nlogging:\n  level: {level}\n"
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    log_path = tmp_path / "run.log"
    command = [sys.executable, "-m", "voiced", "--config", str(config), "run"]
    devices = ["--input-device", "no-such-mic", "--output-device", "no-such-speaker"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*command, *devices],
            env=_env(notify),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 90
        # The microphone that does not exist is logged (an ERROR) once everything has loaded.
        while "no input device matches 'no-such-mic'" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        pulse_fixtures.end_process(proc)
        notify.close()
    log = log_path.read_text()
    lines = log.splitlines()
    for text in present:
        assert any(line.startswith(text) for line in lines), log[-3000:]
    for prefix in absent:
        assert not [line for line in lines if line.startswith(prefix)], log[-3000:]
    assert any(line.startswith("ERROR voiced.audio.capture") for line in lines)
