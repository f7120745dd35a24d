"""Check-then-use races: a local process swaps a checked folder with a symlink to the outside.

Another process exchanges ``top/race`` (a folder inside the roots) and ``top/racelink`` (a
symlink to a private folder outside) with ``renameat2(RENAME_EXCHANGE)`` as fast as it can,
while every tool that takes a path is called 50+ times through the full registry. No outside
content, name or size may ever show, and every call ends in a result and an audit record.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voiced.brain.tools.audit import read_records
from voiced.brain.tools.confine import landlock_abi
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import PolicyDecision, Tool
from voiced.config import Settings, ToolsSettings

SECRET = "OUTSIDE-SECRET-CONTENT-0815"
OUTSIDE_NAME = "outside-only-name"
CALLS = 50

SWAPPER = textwrap.dedent(
    """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = (p.encode() for p in sys.argv[1:3])
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        libc.renameat2(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
    """
)


@pytest.fixture
def race(tmp_path: Path, voiced_home: Path) -> Iterator[dict[str, Path]]:
    root = tmp_path / "root"
    top = root / "top"
    inside = top / "race"
    outside = tmp_path / "outside" / "private"
    (inside / "inner").mkdir(parents=True)
    (inside / "secret.txt").write_text("inside\n")
    (inside / "inner" / "inner.txt").write_text("inside too\n")
    (outside / f"{OUTSIDE_NAME}-folder").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / f"{OUTSIDE_NAME}.txt").write_text(SECRET + "\n")
    (outside / f"{OUTSIDE_NAME}-folder" / f"{OUTSIDE_NAME}-deep.txt").write_text(SECRET)
    (outside / "big.bin").write_bytes(b"\x01" * (3 << 20))
    (top / "racelink").symlink_to(outside)
    yield {"root": root, "top": top, "outside": outside.parent}


def _registry(world: dict[str, Path]) -> Any:
    settings = Settings(
        tools=ToolsSettings(file_roots=[str(world["root"])], command_timeout_s=5.0, timeout_s=20)
    )
    return build_registry(settings, confirm=lambda request: True, source="test")


@contextlib.contextmanager
def swapping(race: dict[str, Path]) -> Iterator[None]:
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(race["top"] / "race"), str(race["top"] / "racelink")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == "ready\n"
        time.sleep(0.05)
        yield
    finally:
        swapper.kill()
        swapper.wait()


def _calls(registry: Any, tool: str, arguments: dict[str, Any], count: int = CALLS) -> list[Any]:
    """``count`` calls; each must return an outcome (never raise) and leave an audit record."""
    before = sum(1 for record in read_records() if record["tool"] == tool)
    outcomes = [registry.call(tool, arguments) for _ in range(count)]
    after = sum(1 for record in read_records() if record["tool"] == tool)
    assert after - before == count, f"{tool}: {count} calls, {after - before} audit records"
    return outcomes


def _assert_nothing_from_outside(outcomes: list[Any], *, size_too: bool = False) -> None:
    for outcome in outcomes:
        text = outcome.result + (outcome.error or "")
        assert SECRET not in text, text
        assert OUTSIDE_NAME not in text, text
        assert "big.bin" not in text, text
        if size_too:  # the outside holds 3 MiB; the inside a few bytes
            assert "MiB" not in text, text


def test_listing_and_walks_never_show_the_outside(race: dict[str, Path]) -> None:
    registry = _registry(race)
    # Without the swaps, the calls see the inside.
    assert "inner.txt" in registry.call("find_files", {"pattern": "*", "path": "top"}).result
    with swapping(race):
        shown = []
        shown += _calls(registry, "list_directory", {"path": "top/race"})
        shown += _calls(registry, "list_directory", {"path": "top/race/inner"})
        shown += _calls(registry, "find_files", {"pattern": "*", "path": "top"})
        shown += _calls(registry, "find_large_files", {"path": "top", "limit": 20})
        sizes = _calls(registry, "disk_usage", {"path": "top"})
    _assert_nothing_from_outside(shown)
    _assert_nothing_from_outside(sizes, size_too=True)


@pytest.mark.skipif(landlock_abi() < 1, reason="needs Landlock (kernel confinement)")
def test_commands_never_read_or_list_the_outside(race: dict[str, Path]) -> None:
    registry = _registry(race)
    cat = {"command": "cat", "args": ["top/race/secret.txt"]}
    ls = {"command": "ls", "args": ["-l", "top/race"]}
    assert "inside" in registry.call("run_command", cat).result
    assert "inner" in registry.call("run_command", ls).result
    with swapping(race):
        shown = _calls(registry, "run_command", cat) + _calls(registry, "run_command", ls)
    _assert_nothing_from_outside(shown)


def test_reads_writes_and_deletes_always_answer(race: dict[str, Path]) -> None:
    registry = _registry(race)
    write = {"path": "top/race/new.txt", "content": "planted"}
    with swapping(race):
        outcomes = _calls(registry, "read_file", {"path": "top/race/secret.txt"})
        outcomes += _calls(registry, "write_file", write)
        outcomes += _calls(registry, "delete_file", {"path": "top/race/new.txt"})
    _assert_nothing_from_outside(outcomes)
    assert not (race["outside"] / "private" / "new.txt").exists()
    for outcome in outcomes:
        # Refusals say what changed, in the sandbox's words: no internal failure, no errno dump.
        assert outcome.ok or "OSError" not in outcome.error, outcome
        assert outcome.ok or "failed" not in outcome.error, outcome


def test_a_failing_question_or_check_still_ends_in_an_outcome_and_a_record(
    voiced_home: Path,
) -> None:
    """The filesystem can fail anywhere (EINVAL from a link swapped under realpath)."""

    def flaky(values: dict[str, Any]) -> str:
        raise OSError(22, "Invalid argument")

    def touch(path: str) -> str:
        """Touch a file.

        Args:
            path: The file.
        """
        return "touched"

    registry = build_registry(Settings(tools=ToolsSettings(enabled=["time"])), source="test")
    registry.confirm = lambda request: True
    registry.register(
        Tool.from_function(touch, group="time", needs_confirmation=True, question=flaky)
    )
    outcome = registry.call("touch", {"path": "x"})
    assert outcome.decision == "refused" and "could not be put" in (outcome.error or "")
    record = list(read_records())[-1]
    assert record["tool"] == "touch" and record["decision"] == "refused"

    def broken_policy(tool: Tool, values: dict[str, Any]) -> Any:
        raise OSError(22, "Invalid argument")

    registry.policy = broken_policy
    registry.confirm = None
    registry.call("touch", {"path": "y"})  # the policy's failure is a refusal already
    registry.policy = lambda tool, values: PolicyDecision.confirm("ask")
    registry.confirm = lambda request: (_ for _ in ()).throw(OSError(5, "I/O error"))
    outcome = registry.call("touch", {"path": "z"})
    assert not outcome.ok and list(read_records())[-1]["arguments"] == {"path": "z"}
