"""The package's rooms and the one rule between them: imports point down only.

foundation (config, paths, decode, transcripts) < audio < speech < brain < service < commands/cli,
except that brain never imports audio (the assistant opens no device). Every import counts,
including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "voiced"

# room -> the rooms it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "foundation": {"foundation"},
    "audio": {"foundation", "audio"},
    "speech": {"foundation", "audio", "speech"},
    "brain": {"foundation", "speech", "brain"},
    "service": {"foundation", "audio", "speech", "brain", "service"},
    "commands": {"foundation", "audio", "speech", "brain", "service", "commands"},
}
ROOM_PACKAGES = {"audio", "speech", "brain", "service", "commands"}
TOP_LEVEL = {"cli", "__main__"}  # the entry points sit above everything


def room_of(module: str) -> str:
    """The room of a dotted ``voiced.…`` module name."""
    parts = module.split(".")
    assert parts[0] == "voiced", module
    if len(parts) == 1:  # the package's public API (voiced.transcribe_file) sits on top
        return "commands"
    if parts[1] in ROOM_PACKAGES:
        return parts[1]
    if parts[1] in TOP_LEVEL:
        return "commands"
    return "foundation"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def voiced_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a ``voiced`` module in ``source``."""
    found = []
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "voiced":  # from voiced import paths: the name is the module
                found += [(node.lineno, f"voiced.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name.split(".")[0] == "voiced"]


def violations(source: str, module: str) -> list[str]:
    room = room_of(module)
    bad = []
    for line, imported in voiced_imports(source, module):
        if imported == "voiced" or imported in {"voiced.__init__"}:
            continue
        target = room_of(imported)
        if target not in ALLOWED[room]:
            bad.append(f"{module}:{line} ({room}) imports {imported} ({target})")
    return bad


def test_every_import_points_down() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30  # the walk found the package
    problems = []
    for path in modules:
        problems += violations(path.read_text(), module_name(path))
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("voiced.audio.capture", "from voiced.speech.stt import SpeechToText"),
        ("voiced.speech.stt", "def f():\n    from voiced.brain.assistant import Assistant\n"),
        ("voiced.brain.tools.audio", "from voiced.audio import capture"),
        (
            "voiced.brain.assistant",
            "if TYPE_CHECKING:\n    import voiced.audio.playback\n",
        ),
        ("voiced.config", "from voiced.speech import tts"),
        ("voiced.transcripts", "from voiced.service.turns import Heard"),
        ("voiced.service.daemon", "from voiced.commands.run import run"),
        ("voiced.service.daemon", "from ..commands import run"),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    assert violations(source, module)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("voiced.speech.speaker", "from voiced.audio.playback import Player"),
        ("voiced.brain.tools.audio", "from voiced.speech.tts import TextToSpeech"),
        ("voiced.service.daemon", "from voiced.audio.capture import capture_blocks"),
        ("voiced.cli", "from voiced.commands import run"),
        ("voiced.audio.segmenter", "from voiced.decode import to_int16"),
        ("voiced.audio.segmenter", "from . import capture"),
    ],
)
def test_a_downward_import_is_allowed(module: str, source: str) -> None:
    assert violations(source, module) == []


def test_each_room_says_what_it_is_for() -> None:
    for room in ROOM_PACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 12, room
