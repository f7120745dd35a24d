"""``voiced run`` as a child process for end-to-end tests: started on the test PulseAudio server
with its own VOICED_HOME, its systemd notifications collected from a NOTIFY_SOCKET, and a
handle to wait on its transcripts, log and status."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests import pulse as pulse_fixtures
from tests.notify_socket import NotifySocket
from tests.ollama_server import OllamaTestServer
from voiced.transcripts import Journal


@dataclass
class DaemonHandle:
    proc: subprocess.Popen
    home: Path
    log_path: Path
    ollama: OllamaTestServer
    notifications: list[tuple[float, str]] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        return list(Journal(self.home / "transcripts").records())

    def conversation_requests(self) -> list[dict]:
        """Chat requests that carry a conversation (not the warm-up load)."""
        return [r for r in self.ollama.chat_requests if r.get("messages")]

    def wait_for_records(self, count: int, timeout: float = 90.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if len(records) >= count:
                return records
            assert self.proc.poll() is None, self.log()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"no transcript record #{count}; log:\n{self.log()[-3000:]}")

    def wait_for_log(self, text: str, after: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never logged; log:\n{self.log()[-3000:]}")

    def messages(self, prefix: str) -> list[str]:
        return [m for _, m in list(self.notifications) if m.startswith(prefix)]

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """Until the daemon's latest status is idle: no turn, nothing playing, and the
        follow-up window of the last reply closed (speech now needs the wake phrase).

        Call it after a turn's record: its statuses (thinking, speaking) were sent before the
        record was written, so an idle from before the turn is never the latest."""
        deadline = time.monotonic() + timeout
        while self.messages("STATUS=")[-1:] != ["STATUS=idle"]:
            assert self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"never idle; log:\n{self.log()[-3000:]}"
            time.sleep(0.02)


Handle = TypeVar("Handle", bound=DaemonHandle)


@contextmanager
def voiced_run(
    pulse_server: pulse_fixtures.PulseServer,
    ollama: OllamaTestServer,
    home: Path,
    *,
    options: Sequence[str] = ("-vv",),
    env: dict[str, str | None] | None = None,
    handle_type: type[Handle] = DaemonHandle,  # type: ignore[assignment]
    ready_timeout_s: float = 120.0,
) -> Iterator[Handle]:
    """``voiced [options] run`` on ``home`` (its config.yaml and models already there), until
    READY=1; it is ended (SIGTERM, then SIGKILL after 10 s) when the block exits.

    The test environment's VOICED_CONFIG and OLLAMA_HOST are dropped (the config names the
    server); ``env`` adds to or overrides the rest, and drops the names it maps to None."""
    notify = NotifySocket(home / "notify.sock")
    child_env = {**pulse_server.env, "VOICED_HOME": str(home), "NOTIFY_SOCKET": str(notify.path)}
    for name in ("VOICED_CONFIG", "OLLAMA_HOST"):
        child_env.pop(name, None)
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    log_path = home / "daemon.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voiced", *options, "run"],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    handle = handle_type(proc, home, log_path, ollama, notify.timed)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not handle.messages("READY=1"):
            assert proc.poll() is None, handle.log()
            assert time.monotonic() < deadline, f"no READY=1; log:\n{handle.log()}"
            time.sleep(0.05)
        yield handle
    finally:
        pulse_fixtures.end_process(proc, grace_s=10)
        notify.close()


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaTestServer]:
    """The scripted Ollama server, one for the module's daemon."""
    server = OllamaTestServer().start()
    yield server
    server.stop()
