"""Pytest fixtures around :mod:`tests.ollama_server`.

Import them into a test module::

    from tests.ollama_fixtures import dead_ollama_url, ollama_server
"""

from __future__ import annotations

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
