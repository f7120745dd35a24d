"""``voiced tools list|call|audit`` and tool calls from ``voiced chat``: one path, one audit log."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from ollama._types import Tool as OllamaTool

from tests import ollama_fixtures
from tests.ollama_server import OllamaTestServer, Reply, ToolCall
from voiced.brain.tools.audit import read_records
from voiced.brain.tools.policy import build_registry
from voiced.cli import main
from voiced.config import Settings, ToolsSettings

ollama_server = ollama_fixtures.ollama_server

ALL_TOOLS = {
    "current_time",
    "days_until",
    "transcribe_audio",
    "speak_to_file",
    "list_audio_devices",
    "system_summary",
    "processes",
    "memory",
    "disk_usage",
    "network_connections",
    "find_large_files",
    "read_file",
    "list_directory",
    "find_files",
    "write_file",
    "delete_file",
    "run_command",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "notes.txt").write_text("call the plumber\n")
    return folder


@pytest.fixture
def config(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tools": {"file_roots": [str(root)]}}))
    return path


def voiced(config: Path, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["--config", str(config), *args], input=stdin)


def test_list_names_every_tool_with_its_arguments(config: Path) -> None:
    result = voiced(config, "tools", "list")
    assert result.exit_code == 0, result.output
    headers = {line.split(" (")[0] for line in result.stdout.splitlines() if line[:1] != " "}
    assert headers == ALL_TOOLS
    assert "delete_file (files, asks first)" in result.stdout
    assert "    sort_by (cpu | memory, optional): " in result.stdout
    assert "    args (array of string, optional): " in result.stdout


def test_list_json_is_exactly_what_the_model_gets(config: Path, root: Path) -> None:
    result = voiced(config, "tools", "list", "--json")
    assert result.exit_code == 0, result.output
    schemas = json.loads(result.stdout)
    settings = Settings(tools=ToolsSettings(file_roots=[str(root)]))
    assert schemas == build_registry(settings).schemas()
    for schema in schemas:  # every schema survives the ollama client's own type
        assert (
            OllamaTool.model_validate(schema).model_dump(exclude_none=True)["function"]["name"]
            == schema["function"]["name"]
        )


def test_call_prints_the_result(config: Path, root: Path) -> None:
    result = voiced(config, "tools", "call", "read_file", "--args", '{"path": "notes.txt"}')
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{root}/notes.txt (17 bytes):\ncall the plumber\n\n"
    record = list(read_records())[-1]
    assert record["source"] == "cli" and record["decision"] == "allowed"


def test_call_without_yes_declines_and_changes_nothing(config: Path, root: Path) -> None:
    result = voiced(config, "tools", "call", "delete_file", "--args", '{"path": "notes.txt"}')
    assert result.exit_code == 1
    assert f"Delete {root}/notes.txt? Say yes or no. (no terminal to ask on; use --yes)" in (
        result.stderr
    )
    assert "voiced: delete_file: declined: the user did not confirm" in result.stderr
    assert (root / "notes.txt").exists()
    assert list(read_records())[-1]["decision"] == "declined"


def test_call_with_yes_runs_the_destructive_tool(config: Path, root: Path) -> None:
    result = voiced(
        config, "tools", "call", "delete_file", "--args", '{"path": "notes.txt"}', "--yes"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"deleted {root}/notes.txt (17 bytes)\n"
    assert not (root / "notes.txt").exists()
    assert list(read_records())[-1]["decision"] == "confirmed"


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("read_file", '{"path": "/etc/passwd"}', "refused: '/etc/passwd' is outside the folders"),
        ("run_command", '{"command": "rm", "args": ["-rf", "."]}', "refused: rm is not on"),
        ("read_file", '{"path": 5}', "invalid: invalid arguments: path:"),
        ("shell", '{"cmd": "id"}', "unknown: there is no tool named 'shell'"),
    ],
)
def test_refusals_exit_non_zero_with_the_reason(
    config: Path, root: Path, name: str, arguments: str, message: str
) -> None:
    result = voiced(config, "tools", "call", name, "--args", arguments, "--yes")
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stdout == ""
    assert (root / "notes.txt").exists()
    assert list(read_records())[-1]["tool"] == name


def test_bad_json_is_refused_and_audited(config: Path, root: Path) -> None:
    result = voiced(config, "tools", "call", "delete_file", "--args", "{path: notes.txt}", "--yes")
    assert result.exit_code == 1
    assert "voiced: delete_file: invalid: arguments are not valid JSON: " in result.stderr
    assert (root / "notes.txt").exists()
    record = list(read_records())[-1]
    assert (record["tool"], record["decision"], record["source"]) == (
        "delete_file",
        "invalid",
        "cli",
    )
    assert record["arguments"] == "{path: notes.txt}"


@pytest.mark.parametrize("given", ["absolute", "relative", "symlink"])
@pytest.mark.parametrize("tool", ["write_file", "read_file", "delete_file"])
def test_the_config_file_in_use_is_off_limits(
    root: Path, monkeypatch: pytest.MonkeyPatch, given: str, tool: str
) -> None:
    # A config inside the file roots, chosen with --config: one "yes" must not let the model
    # widen its own sandbox for the next start.
    config = root / "my.yaml"
    original = yaml.safe_dump({"tools": {"file_roots": [str(root)]}})
    config.write_text(original)
    monkeypatch.chdir(root)
    option = {"absolute": str(config), "relative": "my.yaml", "symlink": str(root / "link.yaml")}
    if given == "symlink":
        (root / "link.yaml").symlink_to(config)
    arguments: dict[str, str] = {"path": "my.yaml"}
    if tool == "write_file":
        arguments["content"] = yaml.safe_dump({"tools": {"file_roots": ["/"]}})
    call = ["tools", "call", tool, "--args", json.dumps(arguments), "--yes"]
    result = CliRunner().invoke(main, ["--config", option[given], *call])
    assert result.exit_code == 1, result.output
    assert f"voiced: {tool}: refused: " in result.stderr and "voiced's own files" in result.stderr
    assert config.read_text() == original
    record = list(read_records())[-1]
    assert (record["tool"], record["decision"]) == (tool, "refused")
    assert "VOICED_CONFIG" not in os.environ  # nothing leaks out of the command


def test_audit_shows_the_calls(config: Path) -> None:
    voiced(config, "tools", "call", "memory")
    voiced(config, "tools", "call", "read_file", "--args", '{"path": "../x"}')
    result = voiced(config, "tools", "audit")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert " cli memory {} -> allowed" in lines[0]
    assert ' cli read_file {"path": "../x", "max_bytes": 4000} -> refused: refused: ' in lines[1]
    as_json = voiced(config, "tools", "audit", "--json", "-n", "1")
    assert [json.loads(line)["tool"] for line in as_json.stdout.splitlines()] == ["read_file"]


def test_a_real_subprocess_call_is_audited_with_private_permissions(
    config: Path, root: Path, voiced_home: Path
) -> None:
    arguments = json.dumps({"path": "new.txt", "content": "hello"})
    command = [sys.executable, "-m", "voiced", "--config", str(config), "tools", "call"]
    done = subprocess.run(
        [*command, "write_file", "--args", arguments],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 1 and "declined" in done.stderr
    assert not (root / "new.txt").exists()
    log_path = voiced_home / "audit.jsonl"
    assert log_path.stat().st_mode & 0o777 == 0o600
    assert voiced_home.stat().st_mode & 0o777 == 0o700
    record = json.loads(log_path.read_text().splitlines()[-1])
    assert record["tool"] == "write_file" and record["decision"] == "declined"


def test_chat_tool_calls_go_through_the_same_gate(
    ollama_server: OllamaTestServer, config: Path, root: Path
) -> None:
    ollama_server.script(
        Reply(tool_calls=[ToolCall("read_file", {"path": "notes.txt"})]),
        Reply(tool_calls=[ToolCall("delete_file", {"path": "notes.txt"})]),
        Reply(tool_calls=[ToolCall("read_file", {"path": "/etc/shadow"})]),
        Reply(content=["I read your note but did not delete it."]),
    )
    result = voiced(config, "chat", "--host", ollama_server.url, stdin="tidy my notes\n")
    assert result.exit_code == 0, result.output
    assert (root / "notes.txt").exists()  # piped chat cannot confirm: declined
    messages = ollama_server.chat_requests[-1]["messages"]
    tool_replies = [m["content"] for m in messages if m["role"] == "tool"]
    assert tool_replies[0] == f"{root}/notes.txt (17 bytes):\ncall the plumber\n"
    assert tool_replies[1].startswith("error: the user did not confirm")
    assert tool_replies[2].startswith("error: refused: '/etc/shadow' is outside the folders")
    records = list(read_records())
    assert [(r["source"], r["tool"], r["decision"]) for r in records] == [
        ("chat", "read_file", "allowed"),
        ("chat", "delete_file", "declined"),
        ("chat", "read_file", "refused"),
    ]


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {marker!r}; got {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                chunk = b""
            assert chunk, f"terminal closed before {marker!r}; got {bytes(seen)!r}"
            seen += chunk


@pytest.mark.parametrize(("answer", "deleted"), [(b"y\n", True), (b"n\n", False)])
def test_interactive_chat_asks_on_the_terminal(
    ollama_server: OllamaTestServer, config: Path, root: Path, answer: bytes, deleted: bool
) -> None:
    ollama_server.script(
        Reply(tool_calls=[ToolCall("delete_file", {"path": "notes.txt"})]),
        Reply(content=["Done."]),
    )
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "voiced", "--config", str(config), "chat"]
    chat = subprocess.Popen(
        [*command, "--host", ollama_server.url],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(controller, b"> ", seen)
        os.write(controller, b"please delete my notes\n")
        _read_until(controller, f"Delete {root}/notes.txt? Say yes or no.".encode(), seen)
        os.write(controller, answer)
        _read_until(controller, b"> ", bytearray())  # the next prompt: the turn is over
        os.write(controller, b"\x04")  # Ctrl-D ends the chat
        stdout, _ = chat.communicate(timeout=120)
    finally:
        if chat.poll() is None:
            chat.kill()
        os.close(controller)
    assert chat.returncode == 0
    assert stdout.decode() == "Done.\n"
    assert (root / "notes.txt").exists() is not deleted
    record = list(read_records())[-1]
    assert record["tool"] == "delete_file"
    assert record["decision"] == ("confirmed" if deleted else "declined")
