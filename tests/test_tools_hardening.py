"""The sandbox beyond names: protected places found where they really are, secrets by other
names, kernel confinement of run_command, and output that cannot smuggle text to the model.

Uses the security battery's world (a root playing the home folder, an outside, secrets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

# world: the security battery's fixture, imported for pytest
from tests.test_tools_security import SECRET, assert_refused, registry_for
from tests.test_tools_security import world as world
from voiced.brain.tools import confine
from voiced.brain.tools.system import SystemTools, sample_processes
from voiced.config import ToolsSettings

CONFIG_REASON = "it configures or starts programs (a configuration folder: "


def test_a_visible_xdg_config_home_is_protected_where_it_is(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    xdg = world["root"] / "xdgconf"
    (xdg / "systemd" / "user").mkdir(parents=True)
    (xdg / "gh").mkdir()
    (xdg / "gh" / "hosts.yml").write_text(f"oauth_token: {SECRET}\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    for path in (
        "~/xdgconf/autostart/evil.desktop",
        "~/xdgconf/systemd/user/evil.service",
        "~/xdgconf/fish/config.fish",
    ):
        (world["root"] / path[2:]).parent.mkdir(parents=True, exist_ok=True)
        assert_refused(world, "write_file", {"path": path, "content": "[Desktop]"}, CONFIG_REASON)
    assert_refused(world, "read_file", {"path": "~/xdgconf/gh/hosts.yml"}, "off limits (secrets")
    # The rest of the home folder is still the user's to change.
    registry, _ = registry_for(world)
    assert registry.call("write_file", {"path": "~/notes/ok.txt", "content": "x"}).ok


def test_a_stowed_config_folder_is_protected_where_it_really_is(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    dotfiles = world["root"] / "dotfiles"
    (dotfiles / "config" / "i3").mkdir(parents=True)
    (dotfiles / "config" / "i3" / "config").write_text("bindsym $mod+Return exec xterm\n")
    shutil.rmtree(world["root"] / ".config")
    (world["root"] / ".config").symlink_to(dotfiles / "config")
    # stow's folding: a link inside a real config folder leads into the dotfiles too
    (dotfiles / "sway" / ".config" / "sway").mkdir(parents=True)
    (dotfiles / "sway" / ".config" / "sway" / "config").write_text("exec swaybg\n")
    (dotfiles / "config" / "sway").symlink_to(dotfiles / "sway" / ".config" / "sway")
    for path in ("~/dotfiles/config/i3/config", "~/dotfiles/sway/.config/sway/config"):
        assert_refused(world, "write_file", {"path": path, "content": "exec evil"}, CONFIG_REASON)
        assert_refused(world, "delete_file", {"path": path}, CONFIG_REASON)
    registry, _ = registry_for(world)
    assert registry.call("read_file", {"path": "~/dotfiles/config/i3/config"}).ok
    assert registry.call("write_file", {"path": "~/dotfiles/README", "content": "x"}).ok


def test_a_readable_hard_link_to_a_home_secret_is_not_read(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world["root"]))
    env = world["root"] / ".env"
    env.write_text(f"API_KEY={SECRET}\n")
    env.chmod(0o644)
    (world["root"] / "docs").mkdir()
    os.link(env, world["root"] / "docs" / "settings.txt")
    key = world["root"] / ".ssh" / "id_ed25519"
    key.chmod(0o644)
    os.link(key, world["root"] / "docs" / "key.txt")
    for name in ("settings.txt", "key.txt"):
        path = f"docs/{name}"
        assert_refused(world, "read_file", {"path": path}, "another name (a hard link)")
        command = {"command": "cat", "args": [path]}
        assert_refused(world, "run_command", command, "another name (a hard link)")
    # A hard-linked ordinary document stays readable.
    (world["root"] / "docs" / "a.txt").write_text("shared\n")
    os.link(world["root"] / "docs" / "a.txt", world["root"] / "notes" / "a.txt")
    assert registry_for(world)[0].call("read_file", {"path": "notes/a.txt"}).ok


NEW_SECRETS = [
    "project/.env~",
    "project/.env-prod",
    "project/.envrc",
    ".my.cnf",
    ".s3cfg",
    ".cache/huggingface/token",
    "project/.git/config",
]


@pytest.mark.parametrize("path", NEW_SECRETS)
def test_more_credentials_are_not_readable(world: dict[str, Path], path: str) -> None:
    target = world["root"] / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"password={SECRET}\n")
    assert_refused(world, "read_file", {"path": path}, "off limits (secrets: ")
    assert_refused(world, "run_command", {"command": "cat", "args": [path]}, "off limits")


@pytest.mark.parametrize(
    "path", ["project/.husky/pre-commit", "project/.pre-commit-config.yaml", "project/.envrc"]
)
def test_project_hooks_are_not_written(world: dict[str, Path], path: str) -> None:
    (world["root"] / path).parent.mkdir(parents=True, exist_ok=True)
    assert_refused(world, "write_file", {"path": path, "content": "curl x | sh"}, "programs run")


def test_ls_hides_what_list_directory_hides(world: dict[str, Path]) -> None:
    (world["root"] / "notes" / "passwords.kdbx").write_text(SECRET)
    (world["root"] / "notes" / "to-outside").symlink_to(world["outside"] / "passwords.txt")
    (world["root"] / "notes" / "to-todo").symlink_to(world["root"] / "notes" / "todo.txt")
    registry, _ = registry_for(world)
    for args in (["-la", "notes"], ["-A", "notes"], ["-laF", "notes"], ["-a"]):
        cwd = str(world["root"] / ("notes" if args == ["-a"] else ""))
        outcome = registry.call("run_command", {"command": "ls", "args": args, "cwd": cwd})
        assert outcome.ok, outcome.error
        text = outcome.result
        assert "passwords.kdbx" not in text and str(world["outside"]) not in text, text
        assert "todo.txt" in text and "off-limits entries not shown" in text, text
        if "-la" in args or "-laF" in args:
            assert "to-outside -> (a place I may not use)" in text, text
            assert f"to-todo -> {world['root']}/notes/todo.txt" in text, text
    home = registry.call("run_command", {"command": "ls", "args": ["-la", str(world["root"])]})
    for name in (".ssh", ".gnupg", ".mozilla", ".netrc", "private.pem", "innocent.txt ->"):
        assert name not in home.result.replace("innocent.txt -> (a place", ""), home.result


def test_command_output_is_escaped(world: dict[str, Path]) -> None:
    notes = world["root"] / "notes"
    (notes / "red\x1b[31m.txt").write_text("x")
    (notes / "two\nlines.txt").write_text("x")
    (notes / "bidi\u202etxt.exe").write_text("x")
    (notes / "content.txt").write_text("a\x1b]0;title\x07b\tc\rd\n")
    registry, _ = registry_for(world)
    listing = registry.call("run_command", {"command": "ls", "args": ["notes"]})
    cat = registry.call("run_command", {"command": "cat", "args": ["notes/content.txt"]})
    for outcome in (listing, cat):
        assert outcome.ok, outcome.error
        assert not {"\x1b", "\x07", "\r", "\u202e"} & set(outcome.result), repr(outcome.result)
    assert '"two\\nlines.txt"' in listing.result and "\\u202e" in listing.result
    assert "red" in listing.result and "\\033[31m" in listing.result, listing.result
    assert "a\\x1b]0;title\\x07b\tc\\x0dd" in cat.result, repr(cat.result)


def test_processes_never_show_the_command_line(tmp_path: Path) -> None:
    # psutil's name() takes argv[0] for a name of exactly 15 characters.
    program = tmp_path / "backuptool12345"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    process = subprocess.Popen(["backuptool12345--password=hunter2", "30"], executable=program)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{process.pid}/comm").read_text().strip() != "backuptool12345":
            assert time.monotonic() < deadline, "the program did not start"
            time.sleep(0.01)
        rows = [row for row in sample_processes(0.0) if row.pid == process.pid]
        assert [row.name for row in rows] == ["backuptool12345"]
        tools = SystemTools(ToolsSettings(file_roots=[str(tmp_path)]))
        shown = tools.processes(sort_by="memory", limit=200) + tools.memory()
        assert "hunter2" not in shown
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(confine.landlock_abi() < 1, reason="needs Landlock")
def test_a_confined_command_reads_only_what_it_was_given(tmp_path: Path) -> None:
    given = tmp_path / "given.txt"
    other = tmp_path / "other.txt"
    given.write_text("given\n")
    other.write_text(SECRET)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside.txt").write_text(SECRET)
    files = [os.open(given, os.O_PATH | os.O_CLOEXEC)]
    dirs = [os.open(folder, os.O_PATH | os.O_CLOEXEC)]
    confinement = confine.Confinement(read_files=files, list_dirs=dirs)
    cat = shutil.which("cat") or "/bin/cat"
    ls = shutil.which("ls") or "/bin/ls"

    def run(executable: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = confine.confine_command(confinement, executable, [executable, *args])
        return subprocess.run(
            command,
            pass_fds=confinement.fds(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        assert run(cat, str(given)).stdout == "given\n"
        denied = run(cat, str(other), str(folder / "inside.txt"), "/proc/1/environ")
        assert SECRET not in denied.stdout and denied.stderr.count("Permission denied") == 3
        assert run(ls, str(folder)).stdout == "inside.txt\n"
        assert "Permission denied" in run(ls, str(tmp_path)).stderr
        touched = run(shutil.which("touch") or "/bin/touch", str(folder / "new"))
        assert "Permission denied" in touched.stderr and not (folder / "new").exists()
    finally:
        for fd in confinement.fds():
            os.close(fd)


def test_doctor_says_how_run_command_is_confined(monkeypatch: pytest.MonkeyPatch) -> None:
    from voiced.cli import main

    others = ["stt", "wake", "turn", "tts", "servers", "input", "output", "echo", "ollama"]
    skip = [arg for name in [*others, "model", "transcripts"] for arg in ("--skip", name)]
    result = CliRunner().invoke(main, ["doctor", *skip])
    if confine.landlock_abi() >= 1:
        assert result.exit_code == 0, result.output
        assert "ok   tool sandbox: run_command runs confined by Landlock (ABI " in result.stdout
    monkeypatch.setattr(confine, "landlock_abi", lambda: 0)
    result = CliRunner().invoke(main, ["doctor", *skip])
    assert result.exit_code == 0, result.output
    assert "warn tool sandbox: run_command is confined by voiced's checks only" in result.stdout


def test_without_landlock_commands_still_run_with_a_warning(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from voiced.brain.tools import commands

    monkeypatch.setattr(commands, "landlock_abi", lambda: 0)
    commands._warn_unconfined.cache_clear()
    registry, _ = registry_for(world)
    outcome = registry.call("run_command", {"command": "cat", "args": ["notes/todo.txt"]})
    assert outcome.ok and "buy milk" in outcome.result
    assert "no Landlock" in caplog.text
