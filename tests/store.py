"""Give a test's VOICED_HOME the session's converted model without converting it again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from voiced.speech.models import MANIFEST


def seed_models(home: Path, whisper_store: Path) -> Path:
    """Fill ``home/models`` from the session store; returns that folder.

    Model files are hard links to the session's copies: a test that damages a stored model
    must replace the file (unlink, then write), never modify it in place.
    """
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    for entry in whisper_store.iterdir():
        if entry.name == MANIFEST:
            shutil.copy(entry, models / entry.name)
        elif entry.is_file():
            os.link(entry, models / entry.name)
    return models
