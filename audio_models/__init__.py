"""The catalogue of speech models voiced knows (see README.md in this folder)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def catalogue() -> dict[str, dict[str, Any]]:
    """Known models by name, as listed in catalogue.json."""
    text = resources.files(__name__).joinpath("catalogue.json").read_text(encoding="utf-8")
    return json.loads(text)["models"]
