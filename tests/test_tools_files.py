"""File tools on real files made by the tests, through the fully configured registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from voiced.brain.tools.audit import read_records
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import ConfirmationRequest, ToolRegistry
from voiced.brain.tools.sandbox import Sandbox, human_size
from voiced.config import Settings, ToolsSettings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "docs" / "2024").mkdir(parents=True)
    (folder / "docs" / "2024" / "Report-Q1.PDF").write_bytes(b"%PDF-1.4 fake")
    (folder / "docs" / "notes.txt").write_text("first line\nsecond line\n")
    (folder / "music").mkdir()
    (folder / "music" / "song.mp3").write_bytes(b"\xff\xfb" + bytes(3070))
    return folder


def make_registry(root: Path, answers: list[bool] | None = None, **tools: Any) -> ToolRegistry:
    questions: list[str] = []

    def confirm(request: ConfirmationRequest) -> bool:
        questions.append(request.question)
        return answers.pop(0) if answers else False

    settings = Settings(tools=ToolsSettings(file_roots=[str(root)], **tools))
    registry = build_registry(settings, confirm=confirm, source="test")
    registry.questions = questions  # type: ignore[attr-defined]
    return registry


def test_read_file_returns_the_content_with_its_size(root: Path) -> None:
    outcome = make_registry(root).call("read_file", {"path": "docs/notes.txt"})
    assert outcome.ok
    assert outcome.result == f"{root}/docs/notes.txt (23 bytes):\nfirst line\nsecond line\n"


def test_read_file_by_home_relative_path(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(root))
    outcome = make_registry(root).call("read_file", {"path": "~/docs/notes.txt"})
    assert outcome.ok and outcome.result.startswith("~/docs/notes.txt (23 bytes):")


def test_read_file_cuts_at_max_bytes_without_breaking_a_character(root: Path) -> None:
    (root / "umlauts.txt").write_text("äöü" * 100, encoding="utf-8")  # 600 bytes
    outcome = make_registry(root).call("read_file", {"path": "umlauts.txt", "max_bytes": 5})
    assert outcome.ok
    header, text = outcome.result.split("\n", 1)
    assert header.endswith("(first 5 bytes of 600 bytes):")
    assert text == "äö"  # the half of ü at byte 5 is dropped, not shown as garbage


def test_read_file_refuses_to_dump_binary_and_explains_folders(root: Path) -> None:
    registry = make_registry(root)
    binary = registry.call("read_file", {"path": "music/song.mp3"})
    assert binary.ok and "binary file (3.0 KiB)" in binary.result
    folder = registry.call("read_file", {"path": "docs"})
    assert not folder.ok and "is a folder" in folder.error
    missing = registry.call("read_file", {"path": "docs/nope.txt"})
    assert not missing.ok and "does not exist" in missing.error


def test_list_directory_shows_folders_files_and_sizes(root: Path) -> None:
    outcome = make_registry(root).call("list_directory", {"path": "docs"})
    assert outcome.ok
    lines = outcome.result.splitlines()
    assert lines[0] == f"{root}/docs: 1 folder, 1 file"
    assert lines[1] == "2024/"
    assert lines[2].startswith("notes.txt  23 bytes  ")
    default = make_registry(root).call("list_directory", {})
    assert default.ok and "docs/" in default.result and "music/" in default.result


def test_find_files_walks_subfolders_ignoring_case(root: Path) -> None:
    registry = make_registry(root)
    outcome = registry.call("find_files", {"pattern": "report*.pdf"})
    assert outcome.ok
    assert outcome.result == (
        f"1 file matching 'report*.pdf' under {root}:\n{root}/docs/2024/Report-Q1.PDF"
    )
    by_path = registry.call("find_files", {"pattern": "docs/*/*.pdf"})
    assert by_path.ok and "Report-Q1.PDF" in by_path.result
    none = registry.call("find_files", {"pattern": "*.docx", "path": "music"})
    assert none.ok and none.result == f"no files matching '*.docx' under {root}/music"


def test_write_file_creates_after_confirmation(root: Path) -> None:
    registry = make_registry(root, answers=[True])
    outcome = registry.call("write_file", {"path": "docs/todo.txt", "content": "milk\neggs\n"})
    assert outcome.decision == "confirmed" and outcome.ok
    assert outcome.result == f"created {root}/docs/todo.txt (10 bytes)"
    assert (root / "docs" / "todo.txt").read_text() == "milk\neggs\n"
    assert (root / "docs" / "todo.txt").stat().st_mode & 0o777 == 0o644
    assert registry.questions == [  # type: ignore[attr-defined]
        f'Create {root}/docs/todo.txt with 10 characters of text starting "milk eggs"? '
        "Say yes or no."
    ]
    assert not [p for p in (root / "docs").iterdir() if p.name.endswith(".part")]


def test_write_file_replaces_keeping_the_mode(root: Path) -> None:
    notes = root / "docs" / "notes.txt"
    notes.chmod(0o600)
    registry = make_registry(root, answers=[True])
    outcome = registry.call("write_file", {"path": str(notes), "content": "new"})
    assert outcome.ok and outcome.result.startswith("replaced ")
    assert notes.read_text() == "new" and notes.stat().st_mode & 0o777 == 0o600
    assert registry.questions[0].startswith("Replace ")  # type: ignore[attr-defined]


def test_writing_over_a_link_inside_the_roots_replaces_the_link(root: Path) -> None:
    target = root / "docs" / "notes.txt"
    link = root / "shortcut.txt"
    link.symlink_to(target)
    outcome = make_registry(root, answers=[True]).call(
        "write_file", {"path": "shortcut.txt", "content": "own file"}
    )
    assert outcome.ok
    assert not link.is_symlink() and link.read_text() == "own file"
    assert target.read_text() == "first line\nsecond line\n"


def test_write_file_needs_an_existing_folder(root: Path) -> None:
    outcome = make_registry(root, answers=[True]).call(
        "write_file", {"path": "nowhere/x.txt", "content": "x"}
    )
    assert outcome.decision == "refused" and "does not exist" in outcome.reason
    assert not (root / "nowhere").exists()


def test_delete_file_after_confirmation(root: Path) -> None:
    registry = make_registry(root, answers=[True])
    outcome = registry.call("delete_file", {"path": "music/song.mp3"})
    assert outcome.decision == "confirmed"
    assert outcome.result == f"deleted {root}/music/song.mp3 (3.0 KiB)"
    assert not (root / "music" / "song.mp3").exists()
    assert registry.questions == [f"Delete {root}/music/song.mp3? Say yes or no."]  # type: ignore[attr-defined]
    missing = make_registry(root, answers=[True]).call("delete_file", {"path": "music/song.mp3"})
    assert missing.decision == "refused" and "does not exist" in missing.reason


def test_every_call_is_in_the_audit_log(root: Path) -> None:
    registry = make_registry(root, answers=[True])
    registry.call("read_file", {"path": "docs/notes.txt"})
    registry.call("write_file", {"path": "docs/x.txt", "content": "x" * 300})
    registry.call("delete_file", {"path": "docs/x.txt"})  # no answer left: declined
    records = list(read_records())
    assert [(r["tool"], r["decision"]) for r in records] == [
        ("read_file", "allowed"),
        ("write_file", "confirmed"),
        ("delete_file", "declined"),
    ]
    first, second, _ = records
    assert first["arguments"] == {"path": "docs/notes.txt", "max_bytes": 4000}
    assert first["ok"] and first["result_chars"] == len(f"{root}/docs/notes.txt (23 bytes):\n") + 23
    assert first["duration_ms"] >= 0 and first["source"] == "test" and first["pid"] == os.getpid()
    # Long arguments are shortened in the log.
    assert second["arguments"]["content"].startswith("x" * 200 + "… [300 characters]")


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 bytes",
        "1023 bytes",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]


def test_relative_paths_start_in_the_first_root_and_roots_are_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    sandbox = Sandbox([str(alias)])
    assert sandbox.roots == (real,)
    assert sandbox.resolve("a/../b.txt") == real / "b.txt"


def test_a_fifo_is_refused_without_hanging(root: Path) -> None:
    os.mkfifo(root / "pipe")
    registry = make_registry(root, timeout_s=5.0)
    outcome = registry.call("read_file", {"path": "pipe"})
    assert not outcome.ok and outcome.error == f"{root}/pipe is not a regular file"
    transcribe = registry.call("transcribe_audio", {"path": "pipe"})
    assert transcribe.decision == "refused" and "is not a file" in transcribe.reason


def test_replacing_an_executable_drops_its_execute_bits(root: Path) -> None:
    script = root / "docs" / "backup.sh"
    script.write_text("#!/bin/sh\nrsync -a ~/docs /mnt/backup\n")
    script.chmod(0o755)
    registry = make_registry(root, answers=[True, True])
    outcome = registry.call("write_file", {"path": "docs/backup.sh", "content": "#!/bin/sh\n"})
    assert outcome.ok, outcome.error
    assert script.read_text() == "#!/bin/sh\n" and script.stat().st_mode & 0o777 == 0o644
    assert "no longer executable" in outcome.result
    plain = registry.call("write_file", {"path": "docs/notes.txt", "content": "x"})
    assert plain.ok and "no longer executable" not in plain.result
