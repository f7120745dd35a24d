"""Where voiced keeps its files.

``VOICED_HOME`` moves all data and state (models, transcripts, audit log, logs) under one
folder, the way ``LLM_USER_PATH`` does for simonw/llm; tests always point it at a temp dir.
Without it, the XDG base directories are used.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def home() -> Path | None:
    """The ``VOICED_HOME`` override, or None."""
    value = os.environ.get("VOICED_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Models and other downloaded or generated data."""
    override = home()
    return override if override else _xdg("XDG_DATA_HOME", ".local/share") / "voiced"


def state_dir() -> Path:
    """Transcripts, the audit log and other records of what voiced did."""
    override = home()
    return override if override else _xdg("XDG_STATE_HOME", ".local/state") / "voiced"


def models_dir() -> Path:
    return data_dir() / "models"


def transcripts_dir() -> Path:
    return state_dir() / "transcripts"


def audit_log_path() -> Path:
    return state_dir() / "audit.jsonl"


def user_config_path() -> Path:
    """The user's config file: ``VOICED_CONFIG``, else ``$XDG_CONFIG_HOME/voiced/config.yaml``.

    With ``VOICED_HOME`` set (and no ``VOICED_CONFIG``), the config lives in that folder too.
    """
    explicit = os.environ.get("VOICED_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    override = home()
    if override:
        return override / "config.yaml"
    return _xdg("XDG_CONFIG_HOME", ".config") / "voiced" / "config.yaml"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
