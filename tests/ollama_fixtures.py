"""Pytest fixtures around :mod:`tests.ollama_server`.

Bind them in a test module (an assignment rather than an import keeps ruff's F811 quiet)::

    from tests import ollama_fixtures

    ollama_server = ollama_fixtures.ollama_server
    dead_ollama_url = ollama_fixtures.dead_ollama_url
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
