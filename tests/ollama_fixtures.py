"""Pytest fixtures around :mod:`tests.ollama_server`.

Bind them in a test module (an assignment rather than an import keeps ruff's F811 quiet)::

    from tests import ollama_fixtures

    ollama_server = ollama_fixtures.ollama_server
    dead_ollama_url = ollama_fixtures.dead_ollama_url
    unanswered_ollama_url = ollama_fixtures.unanswered_ollama_url
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from tests.ollama_server import OllamaTestServer


@pytest.fixture
def ollama_server() -> Iterator[OllamaTestServer]:
    """A fresh scripted Ollama on a free port, serving gpt-oss:20b."""
    with OllamaTestServer() as server:
        yield server


@pytest.fixture
def dead_ollama_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def unanswered_ollama_url() -> Iterator[str]:
    """A URL whose TCP connects time out, like a firewalled or dead host.

    A listening socket that never accepts, with its accept queue filled: the kernel then drops
    further SYNs, so a connect gets no answer at all (no refusal either).
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            for _ in range(16):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect_ex(("127.0.0.1", port))
                _, writable, _ = select.select([], [filler], [], 0.3)
                if not writable:
                    break  # this SYN went unanswered: the queue is full
            else:
                pytest.skip("could not fill a listen backlog on this kernel")
            yield f"http://127.0.0.1:{port}"
        finally:
            for filler in fillers:
                filler.close()
