"""A ``NOTIFY_SOCKET`` like systemd's, for tests that run the daemon as a process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """Binds ``path`` and collects every sd_notify line the daemon sends, on a thread:
    ``messages`` holds the lines, ``timed`` the same with when each came (time.monotonic)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.timed: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while True:
            try:
                lines = self._sock.recv(4096).decode().splitlines()
            except OSError:
                return
            now = time.monotonic()
            self.timed.extend((now, line) for line in lines)
            self.messages.extend(lines)

    def close(self) -> None:
        self._sock.close()
