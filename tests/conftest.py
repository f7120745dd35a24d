"""Shared fixtures. Every test runs with VOICED_HOME in a fresh temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.missing import pytest_terminal_summary  # noqa: F401 (the hook)
from tests.multilingual import base_store  # noqa: F401 (the session fixture)
from tests.store import seed_models
from voiced.speech.models import ModelStore


@pytest.fixture(scope="session")
def whisper_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the default model, converted once per test session."""
    root = tmp_path_factory.mktemp("models")
    ModelStore(root).ensure_default()
    return root


@pytest.fixture(autouse=True)
def voiced_home(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    whisper_store: Path,
) -> Path:
    """A fresh VOICED_HOME whose model store already holds the default model (see seed_models)."""
    home = tmp_path_factory.mktemp("voiced_home")
    seed_models(home, whisper_store)
    monkeypatch.setenv("VOICED_HOME", str(home))
    monkeypatch.delenv("VOICED_CONFIG", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    return home


@pytest.fixture(scope="session")
def stt(whisper_store: Path):
    """The default speech-to-text engine, loaded once per session."""
    from voiced.config import SttSettings
    from voiced.speech.stt import SpeechToText

    return SpeechToText.from_settings(SttSettings(), ModelStore(whisper_store))
