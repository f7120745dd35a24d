"""Shared fixtures. Every test runs with VOICED_HOME in a fresh temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def voiced_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("voiced_home")
    monkeypatch.setenv("VOICED_HOME", str(home))
    monkeypatch.delenv("VOICED_CONFIG", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    return home
