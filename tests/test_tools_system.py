"""System tools against this machine's real state (psutil, /proc), read through the registry."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from voiced.brain.tools.audit import read_records
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import ToolRegistry
from voiced.brain.tools.sandbox import human_size
from voiced.brain.tools.system import human_duration
from voiced.config import Settings, ToolsSettings

UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def registry_for(root: Path) -> ToolRegistry:
    # Room for a whole process table (the model's default cap is 4000 characters).
    settings = Settings(
        tools=ToolsSettings(file_roots=[str(root)], enabled=["system"], max_output_chars=100_000)
    )
    return build_registry(settings, source="test")


def rows(result: str) -> list[dict[str, str]]:
    """The process table of a processes() result as dicts keyed by its header."""
    lines = result.splitlines()
    header_index = next(i for i, line in enumerate(lines) if line.strip().startswith("PID"))
    header = lines[header_index].split()
    parsed = []
    for line in lines[header_index + 1 :]:
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=len(header) - 1)
        parsed.append(dict(zip(header, cells, strict=True)))
    return parsed


@pytest.fixture
def memory_hog() -> Iterator[subprocess.Popen[str]]:
    """A child process holding 200 MiB of resident memory."""
    code = "import sys, time\nx = b'v' * (200 << 20)\nprint('ready', flush=True)\ntime.sleep(120)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    yield child
    child.kill()
    child.wait()


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[str]]:
    """A child process busy on one core."""
    code = (
        "import time\nprint('ready', flush=True)\n"
        "end = time.time() + 60\nwhile time.time() < end: pass\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    yield child
    child.kill()
    child.wait()


def test_system_summary_states_the_real_machine(tmp_path: Path) -> None:
    outcome = registry_for(tmp_path).call("system_summary", {})
    assert outcome.ok, outcome.error
    text = outcome.result
    assert human_size(psutil.virtual_memory().total) + " total" in text
    assert f"{psutil.cpu_count()} logical core" in text
    assert platform.freedesktop_os_release()["PRETTY_NAME"] in text
    assert f"Linux {platform.release()}" in text
    assert f"host {socket.gethostname()}" in text
    assert human_size(psutil.disk_usage("/").total) in text
    load = os.getloadavg()
    assert "load average" in text
    match = re.search(r"load average ([\d.]+)", text)
    assert match and abs(float(match.group(1)) - load[0]) < 5
    assert re.search(r"^busiest: \S+ \(pid \d+\)", text, re.M)
    assert re.search(r"^(\d+) processes$", text, re.M)


def test_memory_shows_totals_and_the_largest_process(tmp_path: Path, memory_hog) -> None:
    outcome = registry_for(tmp_path).call("memory", {})
    assert outcome.ok
    memory = psutil.virtual_memory()
    assert outcome.result.startswith(f"memory: {human_size(memory.total)} total")
    swap = psutil.swap_memory()
    expected_swap = f"of {human_size(swap.total)} used" if swap.total else "swap: none"
    assert expected_swap in outcome.result


def test_processes_by_memory_lists_a_200_mib_child(tmp_path: Path, memory_hog) -> None:
    outcome = registry_for(tmp_path).call("processes", {"sort_by": "memory", "limit": 200})
    assert outcome.ok
    table = rows(outcome.result)
    sizes = [parse_size(row["MEMORY"]) for row in table]
    assert sizes == sorted(sizes, reverse=True)
    mine = [row for row in table if int(row["PID"]) == memory_hog.pid]
    assert mine, "the child holding 200 MiB is missing"
    assert 190 * 1024**2 < parse_size(mine[0]["MEMORY"]) < 400 * 1024**2
    assert mine[0]["NAME"].startswith("python")
    limited = registry_for(tmp_path).call("processes", {"sort_by": "memory", "limit": 3})
    assert len(rows(limited.result)) == 3


def test_processes_by_cpu_sees_a_busy_child(tmp_path: Path, spinner) -> None:
    outcome = registry_for(tmp_path).call("processes", {"sort_by": "cpu", "limit": 200})
    assert outcome.ok
    table = rows(outcome.result)
    percents = [float(row["CPU%"]) for row in table]
    assert percents == sorted(percents, reverse=True)
    mine = [row for row in table if int(row["PID"]) == spinner.pid]
    assert mine and float(mine[0]["CPU%"]) > 5.0


def test_processes_refuses_a_silly_limit(tmp_path: Path) -> None:
    outcome = registry_for(tmp_path).call("processes", {"limit": 0})
    assert not outcome.ok and "between 1 and 200" in outcome.error


def test_disk_usage_of_the_filesystems(tmp_path: Path) -> None:
    outcome = registry_for(tmp_path).call("disk_usage", {})
    assert outcome.ok
    root_usage = psutil.disk_usage("/")
    line = next(line for line in outcome.result.splitlines() if line.startswith("/ ("))
    assert f"of {human_size(root_usage.total)} used" in line


def test_disk_usage_of_a_folder_ranks_its_entries(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "note.txt").write_bytes(os.urandom(10_000))
    (tmp_path / "loose.bin").write_bytes(os.urandom(200_000))
    outcome = registry_for(tmp_path).call("disk_usage", {"path": str(tmp_path)})
    assert outcome.ok
    lines = outcome.result.splitlines()
    assert lines[0].startswith(f"{tmp_path}: 3.") and lines[0].endswith("on disk in 3 entries")
    names = [line.split()[-1] for line in lines[1:]]
    assert names == ["big/", "loose.bin", "small/"]
    assert parse_size(" ".join(lines[1].split()[:2])) >= 3 * 1024 * 1024


def test_find_large_files_orders_by_size(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "three.bin").write_bytes(bytes(3_000_000))
    (tmp_path / "a" / "two.bin").write_bytes(bytes(2_000_000))
    (tmp_path / "one.bin").write_bytes(bytes(1_000_000))
    (tmp_path / "tiny.txt").write_text("x")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "huge_key").write_bytes(bytes(9_000_000))
    outcome = registry_for(tmp_path).call("find_large_files", {"path": str(tmp_path), "limit": 3})
    assert outcome.ok
    assert outcome.result.splitlines() == [
        f"largest 3 of 4 files under {tmp_path}:",
        f"   2.9 MiB  {deep}/three.bin",
        f"   1.9 MiB  {tmp_path}/a/two.bin",
        f" 976.6 KiB  {tmp_path}/one.bin",
    ]


def test_network_connections_show_a_listening_socket_and_a_connection(tmp_path: Path) -> None:
    registry = registry_for(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        listening = registry.call("network_connections", {"kind": "listening", "limit": 200})
        assert listening.ok
        me = psutil.Process().name()
        assert f"tcp 127.0.0.1:{port} {me} (pid {os.getpid()})" in listening.result
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:
                client_port = client.getsockname()[1]
                established = registry.call(
                    "network_connections", {"kind": "established", "limit": 200}
                )
    assert established.ok
    assert f"127.0.0.1:{client_port} -> 127.0.0.1:{port}" in established.result
    assert f"127.0.0.1:{port} -> 127.0.0.1:{client_port}" in established.result
    assert f"127.0.0.1:{port}" not in [
        line.split()[1] for line in listening.result.splitlines()[1:] if "->" in line
    ]


def test_system_calls_are_audited(tmp_path: Path) -> None:
    registry = registry_for(tmp_path)
    registry.call("memory", {})
    registry.call("disk_usage", {"path": "/etc"})
    records = list(read_records())
    assert [(r["tool"], r["decision"]) for r in records] == [
        ("memory", "allowed"),
        ("disk_usage", "refused"),
    ]


def test_human_duration() -> None:
    assert human_duration(0) == "0 seconds"
    assert human_duration(61) == "1 minute 1 second"
    assert human_duration(93784) == "1 day 2 hours"
