"""sd_notify over a real NOTIFY_SOCKET datagram socket opened by the test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from voiced.service.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.ready("idle") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval_s is None
    assert not notifier.watchdog_due()
    notifier.close()


def test_messages_arrive_as_datagrams(notify_socket) -> None:
    address, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("listening")
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening"
    assert notifier.status("thinking\nhard")
    assert sock.recv(4096) == b"STATUS=thinking hard"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.reloading()
    reloading = sock.recv(4096).decode().splitlines()
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()
    assert notifier.ready() is False


def test_abstract_socket_address() -> None:
    name = f"voiced-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert notifier.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec(notify_socket) -> None:
    address, sock = notify_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000"}
    notifier = Notifier(environ=env)
    assert notifier.watchdog_interval_s == 1.5
    assert notifier.watchdog_due(now=1e9)
    notifier.watchdog()
    sock.recv(4096)
    assert not notifier.watchdog_due()
    assert notifier.watchdog_due(now=notifier._last_watchdog + 1.6)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_environment(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ={"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval_s == (
        expected
    )


def test_a_listener_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    notifier = Notifier(address=str(path))
    sent = [notifier.status(f"state {i}") for i in range(5000)]  # far beyond the queue
    assert sent[0] is True
    assert sent[-1] is False  # dropped, not waited for
    listener.close()
