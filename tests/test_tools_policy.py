"""The policy gate, the confirmation callbacks, the deny list and the audit log's own guarantees."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from voiced.brain.tools.audit import AuditLog, read_records
from voiced.brain.tools.policy import ToolPolicy, build_registry, deny_all, terminal_confirm
from voiced.brain.tools.registry import (
    ConfirmationRequest,
    Decision,
    PolicyDecision,
    Tool,
    ToolError,
    ToolOutcome,
    ToolRegistry,
)
from voiced.brain.tools.sandbox import Sandbox, SandboxError
from voiced.config import Settings, ToolsSettings


def echo(text: str) -> str:
    """Say a text back.

    Args:
        text: What to say.
    """
    return text


def tool_with(check: Any, group: str = "files", **options: Any) -> Tool:
    return Tool.from_function(echo, group=group, check=check, **options)


@pytest.mark.parametrize(
    ("check", "decision"),
    [
        (None, Decision.ALLOW),
        (lambda values: None, Decision.ALLOW),
        (lambda values: PolicyDecision.allow(), Decision.ALLOW),
        (lambda values: PolicyDecision.confirm("it replaces a file"), Decision.CONFIRM),
        (lambda values: PolicyDecision.refuse("no"), Decision.REFUSE),
    ],
)
def test_the_tool_check_decides_first(check: Any, decision: Decision) -> None:
    policy = ToolPolicy(ToolsSettings())
    assert policy(tool_with(check), {"text": "hi"}).decision is decision


def test_a_check_raising_a_tool_error_refuses_with_its_message() -> None:
    def check(values: dict[str, Any]) -> None:
        raise ToolError("that file is off limits")

    verdict = ToolPolicy(ToolsSettings())(tool_with(check), {"text": "x"})
    assert verdict == PolicyDecision.refuse("that file is off limits")


def test_a_refusing_check_wins_over_confirmation() -> None:
    asked: list[ConfirmationRequest] = []
    tool = tool_with(lambda v: PolicyDecision.refuse("bad path"), needs_confirmation=True)
    registry = ToolRegistry([tool], policy=ToolPolicy(ToolsSettings()), confirm=asked.append)
    outcome = registry.call("echo", {"text": "x"})
    assert outcome.decision == "refused" and outcome.reason == "bad path" and not asked


def test_a_group_that_is_switched_off_is_refused() -> None:
    policy = ToolPolicy(ToolsSettings(enabled=["time"]))
    verdict = policy(tool_with(None, group="files"), {"text": "x"})
    assert verdict.decision is Decision.REFUSE and "files tools are switched off" in verdict.reason


def test_oversized_arguments_are_refused() -> None:
    policy = ToolPolicy(ToolsSettings(max_write_bytes=10))
    verdict = policy(tool_with(None), {"text": "x" * 70_000})
    assert verdict.decision is Decision.REFUSE and "characters long" in verdict.reason


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("yes\n", True), ("Y\n", True), ("no\n", False), ("\n", False), ("", False)],
)
def test_terminal_confirm(typed: str, expected: bool) -> None:
    out = io.StringIO()
    confirm = terminal_confirm(io.StringIO(typed), out)
    request = ConfirmationRequest("delete_file", {"path": "a"}, "Delete a? Say yes or no.")
    assert confirm(request) is expected
    assert out.getvalue() == "Delete a? Say yes or no. [y/N] "


def test_non_interactive_confirmation_denies() -> None:
    assert deny_all(ConfirmationRequest("delete_file", {}, "Delete?")) is False


def test_build_registry_loads_only_enabled_groups_and_chains_hooks(tmp_path: Path) -> None:
    seen: list[ToolOutcome] = []
    settings = Settings(tools=ToolsSettings(file_roots=[str(tmp_path)], enabled=["time", "files"]))
    registry = build_registry(settings, on_call=seen.append, source="daemon")
    assert set(registry.names()) == {
        "current_time",
        "days_until",
        "read_file",
        "list_directory",
        "find_files",
        "write_file",
        "delete_file",
    }
    outcome = registry.call("days_until", {"day": "2000-01-01"})
    assert seen == [outcome]
    assert [r["source"] for r in read_records()] == ["daemon"]


def test_a_broken_audit_log_does_not_break_the_call(tmp_path: Path, voiced_home: Path) -> None:
    (voiced_home / "audit.jsonl").mkdir()  # cannot be opened for appending
    seen: list[ToolOutcome] = []
    settings = Settings(tools=ToolsSettings(file_roots=[str(tmp_path)], enabled=["time"]))
    outcome = build_registry(settings, on_call=seen.append).call(
        "days_until", {"day": "2000-01-01"}
    )
    assert outcome.ok and seen == [outcome]


def test_concurrent_calls_each_leave_one_whole_record(tmp_path: Path) -> None:
    settings = Settings(tools=ToolsSettings(file_roots=[str(tmp_path)], enabled=["time"]))
    registry = build_registry(settings, source="test")

    def worker(n: int) -> None:
        for i in range(40):
            registry.call("days_until", {"day": f"20{n:02d}-{i // 28 + 1:02d}-{i % 28 + 1:02d}"})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = list(read_records())
    assert len(records) == 320
    assert len({r["arguments"]["day"] for r in records}) == 320


def test_audit_records_shorten_what_is_long_and_keep_odd_arguments(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl", source="x")
    huge = {"content": "a" * 10_000, "nested": {"list": list(range(100)), "deep": [[[[[["x"]]]]]]}}
    log(ToolOutcome(name="write_file", arguments=huge, decision="invalid", error="e" * 2000))
    log(ToolOutcome(name="delete_file", arguments=["not", "a", "dict"], decision="invalid"))
    first, second = read_records(tmp_path / "state" / "audit.jsonl")
    assert first["arguments"]["content"] == "a" * 200 + "… [10000 characters]"
    assert len(first["arguments"]["nested"]["list"]) == 50
    assert len(first["error"]) == 501
    assert second["arguments"] == ["not", "a", "dict"]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_a_torn_line_in_the_audit_log_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"tool": "a"}\n{"tool": "b", "argu\n{"tool": "c"}\n')
    assert [r["tool"] for r in read_records(path)] == ["a", "c"]


def test_extra_deny_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Private" / "tax").mkdir(parents=True)
    (tmp_path / "work" / "clientA" / "contracts").mkdir(parents=True)
    sandbox = Sandbox(["~"], deny=["~/Private", f"{tmp_path}/work/*/contracts", "*.kdbx"])
    for path, rule in [
        ("~/Private/tax/2024.pdf", "tools.deny: "),
        ("work/clientA/contracts/nda.pdf", "tools.deny: "),
        ("passwords.kdbx", "secrets: *.kdbx"),
    ]:
        with pytest.raises(SandboxError, match=re.escape(rule)):
            sandbox.resolve(path)
    assert sandbox.resolve("work/clientA/invoice.pdf") == tmp_path / "work/clientA/invoice.pdf"


def test_voiced_own_folders_are_denied_wherever_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    sandbox = Sandbox([str(tmp_path)])
    for path in (
        "~/.config/voiced/config.yaml",
        "~/.local/share/voiced/models/tiny.en.bin",
        "~/.local/state/voiced/audit.jsonl",
        "cfg/voiced/config.yaml",
    ):
        with pytest.raises(SandboxError, match="voiced's own files"):
            sandbox.resolve(path)


def test_a_sandbox_needs_a_root() -> None:
    with pytest.raises(ValueError, match="file_roots is empty"):
        Sandbox([" "])


def test_a_second_sandbox_translates_no_pattern_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every registry builds sandboxes from the same few hundred patterns: each is turned
    into a regular expression once per process (a sandbox took 9 -> 7 ms here)."""
    import fnmatch

    Sandbox([tmp_path], deny=["*.kdbx", f"{tmp_path}/work/*/contracts"])
    translated: list[str] = []
    real = fnmatch.translate
    monkeypatch.setattr(fnmatch, "translate", lambda part: translated.append(part) or real(part))
    sandbox = Sandbox([tmp_path], deny=["*.kdbx", f"{tmp_path}/work/*/contracts"])
    assert translated == []
    # The cached patterns still deny (any case for a name; the absolute place exactly).
    for path, rule in [("db.KDBX", "secrets: *.kdbx"), ("work/x/contracts/a.txt", "tools.deny: ")]:
        with pytest.raises(SandboxError, match=re.escape(rule)):
            sandbox.resolve(str(tmp_path / path))
    assert sandbox.resolve(str(tmp_path / "work/x/a.txt")) == tmp_path / "work/x/a.txt"
