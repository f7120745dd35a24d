"""systemd's notification protocol (``sd_notify``), in plain socket code.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an
abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Each
notification is one datagram of ``KEY=value`` lines: ``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``. Without ``NOTIFY_SOCKET`` every call is a
no-op, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, address: str | None = None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval_s = _watchdog_interval(env)
        self._socket: socket.socket | None = None
        self._last_watchdog = 0.0
        if self.address:
            # Non-blocking: a listener that stops reading must never stall the main loop
            # (a full datagram queue makes a blocking sendto wait forever).
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when not sent."""
        if self._socket is None or not fields:
            return False
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        target = self.address or ""
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            self._socket.sendto(payload.encode("utf-8"), target)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", payload, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        return self.notify(status=text.replace("\n", " "))

    def reloading(self) -> bool:
        return self.notify(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(stopping=1)
        return self.notify(stopping=1, status=status)

    def watchdog(self) -> bool:
        self._last_watchdog = time.monotonic()
        return self.notify(watchdog=1)

    def watchdog_due(self, now: float | None = None) -> bool:
        """Whether it is time for the next ``WATCHDOG=1`` (every half of ``WatchdogSec``)."""
        if self.watchdog_interval_s is None or self._socket is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self._last_watchdog >= self.watchdog_interval_s

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return value / 2_000_000 if value > 0 else None
