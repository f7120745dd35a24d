"""voiced: a private, local voice assistant for the Linux desktop.

As a library: ``voiced.transcribe_file(path, **options)`` (see :mod:`voiced.speech.files`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "transcribe_file"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import voiced` (the CLI, every submodule) stays light.
    if name == "transcribe_file":
        from voiced.speech.files import transcribe_file

        return transcribe_file
    raise AttributeError(f"module 'voiced' has no attribute {name!r}")
