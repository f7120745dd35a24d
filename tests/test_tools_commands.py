"""run_command: the default allow list really runs; limits, environment and folder really apply."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import pytest

from voiced.brain.tools.audit import read_records
from voiced.brain.tools.commands import CommandRefused, CommandRunner
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import ToolOutcome, ToolRegistry
from voiced.config import CommandRule, Settings, ToolsSettings

# A 61-digit number whose factoring takes GNU factor minutes of CPU.
SLOW_TO_FACTOR = "1000000000000000000000000000000000000000000000000000000000003"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "fruit.txt").write_text("apple\nbanana\ncherry\nbanana split\n")
    return folder


def registry_for(root: Path, extra: dict[str, CommandRule] | None = None, **tools: Any):
    commands = dict(ToolsSettings().commands)
    commands.update(extra or {})
    settings = Settings(
        tools=ToolsSettings(
            file_roots=[str(root)], enabled=["commands"], commands=commands, **tools
        )
    )
    return build_registry(settings, source="test")


def run(registry: ToolRegistry, command: str, *args: str, cwd: str | None = None) -> ToolOutcome:
    arguments: dict[str, Any] = {"command": command, "args": list(args)}
    if cwd:
        arguments["cwd"] = cwd
    return registry.call("run_command", arguments)


def output_of(outcome: ToolOutcome) -> tuple[str, str, str]:
    assert outcome.ok, outcome.error
    shown, status, rest = [*outcome.result.split("\n", 2), "", ""][:3]
    return shown, status, rest


def test_the_default_commands_run_for_real(root: Path) -> None:
    registry = registry_for(root)
    fruit = str(root / "sub" / "fruit.txt")
    cases = [
        (("uptime",), "load average"),
        (("uname", "-s"), "Linux"),
        (("date", "+%Y-%m-%d"), date.today().isoformat()),
        (("free", "-h"), "Mem:"),
        (("df", "-h", "."), "Filesystem"),
        (("ls", "-l", "sub"), "fruit.txt"),
        (("cat", "sub/fruit.txt"), "apple\nbanana\ncherry"),
        (("grep", "-n", "banana", "sub/fruit.txt"), "2:banana\n4:banana split"),
        (("wc", "-l", "sub/fruit.txt"), f"4 {fruit}"),
        (("head", "-n", "1", "sub/fruit.txt"), "apple"),
        (("tail", "--lines=1", "sub/fruit.txt"), "banana split"),
    ]
    for (command, *args), expected in cases:
        shown, status, out = output_of(run(registry, command, *args))
        assert shown.startswith(f"$ {command}"), shown
        assert status == "exit status 0", (command, status, out)
        assert expected in out, (command, out)


def test_path_arguments_are_passed_as_resolved_absolute_paths(root: Path) -> None:
    outcome = run(registry_for(root), "cat", "-n", "sub/../sub/fruit.txt")
    shown, _, out = output_of(outcome)
    assert shown == f"$ cat -n {root}/sub/fruit.txt"
    assert "1\tapple" in out


def test_a_failing_command_reports_its_status_and_stderr(root: Path) -> None:
    _, status, out = output_of(run(registry_for(root), "ls", "missing"))
    assert status == "exit status 2"
    assert out.startswith("[stderr] ls: cannot access")
    _, status, out = output_of(run(registry_for(root), "grep", "durian", "sub/fruit.txt"))
    assert status == "exit status 1" and out == "(no output)"


def test_the_working_folder_is_inside_the_roots(root: Path) -> None:
    _, _, out = output_of(run(registry_for(root), "ls", cwd="sub"))
    assert out == "fruit.txt"
    _, _, out = output_of(run(registry_for(root), "ls"))
    assert out == "sub"


def test_the_environment_is_minimal(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICED_TEST_SECRET", "should-not-leak")
    monkeypatch.delenv("TZ", raising=False)
    registry = registry_for(root, {"env": CommandRule()})
    _, status, out = output_of(run(registry, "env"))
    assert status == "exit status 0"
    names = sorted(line.split("=", 1)[0] for line in out.splitlines())
    assert names == ["HOME", "LANG", "LC_ALL", "PATH", "TERM"]
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in out.splitlines()


def test_limits_apply_to_the_running_process(root: Path) -> None:
    registry = registry_for(
        root,
        {"sleep": CommandRule(text_operands=1, text_pattern="[0-9]+")},
        command_timeout_s=3.0,
        command_cpu_s=7,
        command_memory_mb=300,
    )
    box: dict[str, ToolOutcome] = {}
    worker = threading.Thread(target=lambda: box.setdefault("o", run(registry, "sleep", "30")))
    worker.start()
    child = None
    for _ in range(100):
        child = next((c for c in psutil.Process().children() if c.name() == "sleep"), None)
        if child is not None:
            break
        time.sleep(0.02)
    assert child is not None, "the command did not start"
    assert child.rlimit(psutil.RLIMIT_CPU) == (7, 8)
    assert child.rlimit(psutil.RLIMIT_AS) == (300 * 1024**2, 300 * 1024**2)
    assert child.rlimit(psutil.RLIMIT_FSIZE) == (0, 0)
    assert child.rlimit(psutil.RLIMIT_CORE) == (0, 0)
    assert child.nice() == os.nice(0) + 10
    assert Path(child.cwd()) == root
    assert os.getsid(child.pid) == child.pid != os.getsid(0)  # its own session and group
    worker.join(30)
    assert "killed after 3 seconds (time limit)" in box["o"].result
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE


def test_a_kill_from_outside_is_not_blamed_on_the_cpu_limit(root: Path) -> None:
    # The kernel's out-of-memory killer sends SIGKILL, as the CPU hard limit does; the CPU
    # time the command used tells them apart.
    registry = registry_for(
        root,
        {"sleep": CommandRule(text_operands=1, text_pattern="[0-9]+")},
        command_timeout_s=60.0,
        timeout_s=90.0,
    )
    box: dict[str, ToolOutcome] = {}
    worker = threading.Thread(target=lambda: box.setdefault("o", run(registry, "sleep", "300")))
    worker.start()
    child = None
    for _ in range(200):
        child = next((c for c in psutil.Process().children() if c.name() == "sleep"), None)
        if child is not None:
            break
        time.sleep(0.02)
    assert child is not None, "the command did not start"
    child.kill()
    worker.join(30)
    _, status, _ = output_of(box["o"])
    assert status == "killed by SIGKILL, not by a limit of mine (out of memory?)"
    record = list(read_records())[-1]
    assert record["tool"] == "run_command" and record["decision"] == "allowed"


def test_the_memory_limit_stops_a_greedy_command(root: Path) -> None:
    (root / "one-line.txt").write_bytes(b"a" * (24 * 1024 * 1024))  # grep must hold it all
    greedy = run(registry_for(root, command_memory_mb=16), "grep", "-c", "b", "one-line.txt")
    _, status, out = output_of(greedy)
    assert status == "exit status 2" and "memory exhausted" in out
    _, status, out = output_of(run(registry_for(root), "grep", "-c", "b", "one-line.txt"))
    assert status == "exit status 1" and out == "0"


def test_the_cpu_limit_stops_a_busy_command(root: Path) -> None:
    factor = {"factor": CommandRule(text_operands=1, text_pattern="[0-9]{1,80}")}
    registry = registry_for(root, factor, command_cpu_s=1, command_timeout_s=60.0, timeout_s=90.0)
    _, status, _ = output_of(run(registry, "factor", SLOW_TO_FACTOR))
    assert status == "killed at the CPU limit (1 s)"


def test_the_output_limit_ends_a_chatty_command(root: Path) -> None:
    registry = registry_for(root, {"yes": CommandRule()}, max_output_chars=1000)
    outcome = run(registry, "yes")
    _, status, out = output_of(outcome)
    assert status == "stopped after 800 bytes of output (output limit)"
    assert set(out.split("\n")) == {"y"} and len(out) == 799
    assert not outcome.truncated


def test_refusals_happen_before_anything_runs(root: Path) -> None:
    runner = CommandRunner(ToolsSettings(file_roots=[str(root)]))
    with pytest.raises(CommandRefused, match="not on the allowed command list"):
        runner.prepare("touch", ["x"])
    with pytest.raises(CommandRefused, match="does not allow '-R'"):
        runner.prepare("ls", ["-laR"])
    assert runner.prepare("ls", ["-la", "--", "sub"]).argv == ("-la", "--", str(root / "sub"))
    assert runner.prepare("head", ["-n5", "sub/fruit.txt"]).argv[0] == "-n5"
    assert runner.prepare("grep", ["-m", "2", "a b", "sub/fruit.txt"]).argv[:3] == (
        "-m",
        "2",
        "a b",
    )


def test_command_calls_are_audited(root: Path) -> None:
    registry = registry_for(root)
    run(registry, "uptime")
    run(registry, "rm", "-rf", "sub")
    records = list(read_records())
    assert [(r["tool"], r["decision"], r["arguments"]["command"]) for r in records] == [
        ("run_command", "allowed", "uptime"),
        ("run_command", "refused", "rm"),
    ]
    assert "not on the allowed command list" in records[1]["reason"]
    assert (root / "sub" / "fruit.txt").exists()


def test_the_tool_description_names_the_allowed_commands(root: Path) -> None:
    tool = registry_for(root).get("run_command")
    assert tool is not None
    assert tool.schema["function"]["description"].endswith(
        "Allowed commands: cat, date, df, free, grep, head, ls, tail, uname, uptime, wc."
    )


def test_resource_module_limits_are_not_changed_in_the_parent(root: Path) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    output_of(run(registry_for(root), "uptime"))
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert subprocess.run(["true"], check=False).returncode == 0


@pytest.mark.parametrize(
    ("command", "rule", "why"),
    [
        ("rm", {"paths": True}, "changes files; use write_file/delete_file"),
        ("mv", {"paths": True}, "changes files; use write_file/delete_file"),
        ("ln", {"flags": ["-s"], "paths": True}, "changes files"),
        ("chmod", {"text_operands": 1, "paths": True}, "changes files"),
        ("touch", {"paths": True}, "changes files"),
        ("dd", {"text_operands": 2}, "changes files"),
        ("tee", {"paths": True}, "changes files"),
        ("truncate", {"options": {"-s": "number"}, "paths": True}, "changes files"),
        ("shred", {"paths": True}, "changes files"),
        ("perl", {"flags": ["-i", "-p"], "text_operands": 1, "paths": True}, "runs other"),
        ("python3.12", {"text_operands": 1}, "runs other programs"),
        ("bash", {"text_operands": 1}, "runs other programs"),
        ("xargs", {"paths": True}, "runs other programs"),
        ("awk", {"text_operands": 1, "paths": True}, "runs other programs"),
        ("find", {"flags": ["-delete"], "paths": True}, "find -delete changes files"),
        ("find", {"flags": ["-name"], "options": {"-exec": "text"}, "paths": True}, "-exec"),
        ("find", {"options": {"-fprint": "text"}, "paths": True}, "find -fprint"),
        ("sed", {"flags": ["-i"], "text_operands": 1, "paths": True}, "sed -i changes files"),
        ("sed", {"flags": ["--in-place"], "text_operands": 1, "paths": True}, "--in-place"),
        ("sed", {"flags": ["--in"], "text_operands": 1, "paths": True}, "sed --in"),
    ],
)
def test_commands_that_change_files_cannot_be_configured(
    tmp_path: Path, command: str, rule: dict[str, Any], why: str
) -> None:
    from voiced import config

    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"tools": {"commands": {command: rule}}}))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert f"tools.commands: {command}" in str(info.value) or command in str(info.value)
    assert why in str(info.value), str(info.value)


def test_find_and_sed_stay_read_only(root: Path) -> None:
    registry = registry_for(
        root,
        {
            "find": CommandRule(flags=["-name", "-type", "-d"], text_operands=0, paths=True),
            "sed": CommandRule(flags=["-n", "-E", "-s"], text_operands=1, paths=True),
        },
    )
    target = root / "sub" / "fruit.txt"
    found = run(registry, "find", "sub")
    assert found.ok and "fruit.txt" in found.result, found.error
    printed = run(registry, "sed", "-n", "2p", "sub/fruit.txt")
    assert printed.ok and printed.result.endswith("banana"), printed.result
    # GNU sed can write files (w) and run commands (e) from its script: --sandbox stops that.
    for script in ("w sub/copy.txt", "1e touch sub/ran", "s/apple/pear/w sub/copy.txt"):
        outcome = run(registry, "sed", script, "sub/fruit.txt")
        assert "exit status 0" not in outcome.result, outcome.result
    for args in (["-ni", "p", "sub/fruit.txt"], ["-si", "p", "sub/fruit.txt"]):
        outcome = run(registry, "sed", *args)
        assert outcome.decision == "refused", outcome
    outcome = run(registry, "find", "sub", "-delete")
    assert outcome.decision == "refused" and "-delete" in outcome.reason, outcome
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["fruit.txt"]
    assert target.read_text().startswith("apple\n")
