"""Run `voiced run` for a benchmark: private PulseAudio, the scripted Ollama server, a temp home.

The same pieces the end-to-end tests use (tests/pulse.py, tests/ollama_server.py), so a
benchmark needs no sound card and no Ollama.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ollama_server import OllamaTestServer, Reply
from tests.pulse import PulseServer
from voiced.speech.models import ModelStore
from voiced.transcripts import Journal

REPLY = Reply(content=["It is ", "three o'clock in the ", "afternoon. ", "Anything else?"])


@dataclass
class Daemon:
    proc: subprocess.Popen
    home: Path
    pulse: PulseServer
    ollama: OllamaTestServer
    log_path: Path | None = None

    def log_since(self, offset: int) -> str:
        """The daemon's log from byte ``offset`` on (its size is the offset for later)."""
        if self.log_path is None:
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path is not None else 0

    def records(self) -> list[dict]:
        return [r for r in Journal(self.home / "transcripts").records() if r.get("kind") == "turn"]

    def wait_for_records(self, count: int, timeout: float = 120.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if len(records) >= count:
                return records
            if self.proc.poll() is not None:
                raise RuntimeError("voiced run exited; see its log")
            time.sleep(0.05)
        raise TimeoutError(f"no turn record #{count} within {timeout:.0f} s")


@contextmanager
def audio_and_llm() -> Iterator[tuple[PulseServer, OllamaTestServer, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="voiced-bench-"))
    pulse = PulseServer(folder / "pulse")
    pulse.start()
    ollama = OllamaTestServer().start()
    ollama.default_reply = REPLY
    try:
        yield pulse, ollama, folder
    finally:
        ollama.stop()
        pulse.stop()
        logs = sorted(folder.glob("*.log"))
        keep = Path(tempfile.gettempdir()) / "voiced-bench-logs"
        keep.mkdir(exist_ok=True)
        for log_file in logs:  # the daemons' logs outlive the run, for a look afterwards
            shutil.copy(log_file, keep / log_file.name)
        shutil.rmtree(folder, ignore_errors=True)


def _drain(sock: socket.socket) -> None:
    """Keep reading status and watchdog messages, as systemd does."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        return


@contextmanager
def voiced_run(
    pulse: PulseServer,
    ollama: OllamaTestServer,
    folder: Path,
    name: str,
    config: str = "",
    wake_engine: str = "text",
    llm_config: str = "",
    verbose: int = 0,
) -> Iterator[Daemon]:
    """Start `voiced run` with the given extra YAML config; yields once it reports READY.

    ``wake_engine`` is wake.engine: "text" (the wake phrase "Computer" found by Whisper,
    which the scripted turns say) or "model" (the hey_jarvis wake-word model).
    ``llm_config``: more indented lines for the ``llm`` section. ``verbose``: how many ``-v``
    to give it (2: debug logs, for a bench that explains its failures).
    """
    home = folder / name
    home.mkdir(exist_ok=True)  # a caller may have prepared it (a tmpfs for the transcripts)
    ModelStore(home / "models").ensure_default()  # converted before timing starts
    (home / "config.yaml").write_text(
        f"llm:\n  host: {ollama.url}\n{llm_config}"
        f"wake:\n  engine: {wake_engine}\n  follow_up_s: 0.0\n"
        f"tools:\n  enabled: [time]\n{config}"
    )
    notify_path = folder / f"{name}.notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(300)
    env = {**pulse.env, "VOICED_HOME": str(home), "NOTIFY_SOCKET": str(notify_path)}
    log_path = folder / f"{name}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voiced", *([f"-{'v' * verbose}"] if verbose else []), "run"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        notify.settimeout(None)
        threading.Thread(target=_drain, args=(notify,), daemon=True).start()
        yield Daemon(proc, home, pulse, ollama, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        notify.close()
        log.close()
        os.unlink(notify_path)
