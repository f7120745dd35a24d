"""The ``system`` tool group: what this computer is doing, read-only, through psutil and /proc.

No shell and no parsing of ``ps``/``df``/``free`` output: psutil reads /proc directly. Results
are compact text with human sizes. Process names are shown but never command lines (they can
hold passwords). Paths (``disk_usage``, ``find_large_files``) go through the sandbox, and
folder scans stop at a time budget, saying so.
"""

from __future__ import annotations

import heapq
import os
import platform
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from voiced.brain.tools.registry import PolicyDecision, Tool, ToolError
from voiced.brain.tools.sandbox import Sandbox, human_size, plural, printable, walk_budget_s
from voiced.config import ToolsSettings

CPU_SAMPLE_S = 0.5
MAX_PROCESSES = 200
MAX_CONNECTIONS = 200
MAX_LARGE_FILES = 100
DISK_ENTRIES = 15


def human_duration(seconds: float) -> str:
    """``93784`` -> ``"1 day 2 hours 3 minutes"`` (at most the two largest units)."""
    seconds = int(max(0, seconds))
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "0%"


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    name: str
    user: str
    cpu_percent: float
    rss: int
    memory_percent: float


def process_name(process: psutil.Process) -> str:
    """The kernel's name of a process (``comm``, at most 15 characters), escaped.

    Not ``psutil``'s ``name()``: for a name of exactly 15 characters it takes the first word
    of the command line instead, and that can carry a password (``mysqldumpbackup--password=x``).
    """
    try:
        with open(f"/proc/{process.pid}/comm", encoding="utf-8", errors="replace") as comm:
            name = comm.read().rstrip("\n")
    except FileNotFoundError:
        raise psutil.NoSuchProcess(process.pid) from None
    except OSError:
        name = "?"
    return printable(name) or "?"


def sample_processes(interval_s: float = CPU_SAMPLE_S) -> list[ProcessRow]:
    """Every process with its CPU use over ``interval_s`` (100% = one core) and its memory."""
    processes = []
    for process in psutil.process_iter():
        try:
            process.cpu_percent(None)
            processes.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    time.sleep(interval_s)
    total = psutil.virtual_memory().total
    rows = []
    for process in processes:
        try:
            with process.oneshot():
                rss = process.memory_info().rss
                try:
                    user = process.username()
                except (KeyError, psutil.AccessDenied):
                    user = str(process.uids().real)
                rows.append(
                    ProcessRow(
                        pid=process.pid,
                        name=process_name(process),
                        user=user,
                        cpu_percent=process.cpu_percent(None),
                        rss=rss,
                        memory_percent=100.0 * rss / total if total else 0.0,
                    )
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rows


def _process_table(rows: Iterable[ProcessRow]) -> list[str]:
    lines = [f"{'PID':>7}  {'CPU%':>6}  {'MEMORY':>10}  {'MEM%':>5}  {'USER':<10}  NAME"]
    for row in rows:
        lines.append(
            f"{row.pid:>7}  {row.cpu_percent:>6.1f}  {human_size(row.rss):>10}  "
            f"{row.memory_percent:>5.1f}  {row.user[:10]:<10}  {row.name}"
        )
    return lines


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()
    except OSError:
        return platform.system()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def _filesystems() -> list[tuple[Any, Any]]:
    """(partition, usage) of the real filesystems, one per device."""
    seen: set[str] = set()
    result = []
    for partition in psutil.disk_partitions(all=False):
        if partition.device in seen or partition.mountpoint.startswith("/snap/"):
            continue
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError:
            continue
        seen.add(partition.device)
        result.append((partition, usage))
    if not result:
        result.append((None, psutil.disk_usage("/")))
    return result


def _filesystem_line(partition: Any, usage: Any) -> str:
    where = f"{partition.mountpoint} ({partition.fstype})" if partition else "/"
    return (
        f"{where}: {human_size(usage.used)} of {human_size(usage.total)} used "
        f"({usage.percent:.0f}%), {human_size(usage.free)} free"
    )


def _memory_lines() -> list[str]:
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    cache = getattr(memory, "buffers", 0) + getattr(memory, "cached", 0)
    lines = [
        f"memory: {human_size(memory.total)} total, {human_size(memory.used)} used "
        f"({memory.percent:.0f}%), {human_size(memory.available)} available, "
        f"{human_size(memory.free)} free, {human_size(cache)} buffers/cache"
    ]
    if swap.total:
        lines.append(
            f"swap: {human_size(swap.used)} of {human_size(swap.total)} used ({swap.percent:.0f}%)"
        )
    else:
        lines.append("swap: none")
    return lines


class SystemTools:
    """The system tools; each public method is one tool."""

    def __init__(self, settings: ToolsSettings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox.from_settings(settings)

    # ------------------------------------------------------------------ tools

    def system_summary(self) -> str:
        """Give an overview of this computer: OS, uptime, load, CPU, memory, disks, busiest
        processes."""
        rows = sample_processes(CPU_SAMPLE_S)
        cpu_total = sum(row.cpu_percent for row in rows)
        cores = psutil.cpu_count() or 1
        load = os.getloadavg()
        uname = platform.uname()
        lines = [
            f"{_os_name()}, Linux {uname.release} on {uname.machine}, host {socket.gethostname()}",
            f"up {human_duration(time.time() - psutil.boot_time())}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 minutes)",
            f"CPU: {_cpu_model()}, {plural(cores, 'logical core')}, "
            f"{min(100.0, cpu_total / cores):.0f}% busy",
            *_memory_lines(),
        ]
        lines.extend("disk " + _filesystem_line(p, u) for p, u in _filesystems())
        by_cpu = sorted(rows, key=lambda r: r.cpu_percent, reverse=True)[:3]
        by_memory = sorted(rows, key=lambda r: r.rss, reverse=True)[:3]
        lines.append(
            "busiest: "
            + ", ".join(f"{r.name} (pid {r.pid}) {r.cpu_percent:.0f}% CPU" for r in by_cpu)
        )
        lines.append(
            "largest: "
            + ", ".join(f"{r.name} (pid {r.pid}) {human_size(r.rss)}" for r in by_memory)
        )
        lines.append(f"{len(rows)} processes")
        return "\n".join(lines)

    def processes(self, sort_by: Literal["cpu", "memory"] = "cpu", limit: int = 10) -> str:
        """List the processes using the most CPU or memory.

        Args:
            sort_by: cpu (use over half a second; 100% is one core) or memory (resident).
            limit: How many processes to list, 1 to 200.
        """
        if not 1 <= limit <= MAX_PROCESSES:
            raise ToolError(f"limit must be between 1 and {MAX_PROCESSES}")
        rows = sample_processes(CPU_SAMPLE_S)
        if sort_by == "cpu":
            rows.sort(key=lambda r: (r.cpu_percent, r.rss), reverse=True)
        else:
            rows.sort(key=lambda r: r.rss, reverse=True)
        header = (
            f"top {min(limit, len(rows))} of {len(rows)} processes by {sort_by} "
            f"(CPU sampled over {CPU_SAMPLE_S:g} s; 100% = one core)"
        )
        return "\n".join([header, *_process_table(rows[:limit])])

    def memory(self) -> str:
        """Show memory and swap use, and the processes holding the most memory."""
        rows = sorted(sample_processes(0.0), key=lambda r: r.rss, reverse=True)[:5]
        lines = _memory_lines()
        lines.append(
            "largest: " + ", ".join(f"{r.name} (pid {r.pid}) {human_size(r.rss)}" for r in rows)
        )
        return "\n".join(lines)

    def disk_usage(self, path: str | None = None) -> str:
        """Show how full the disks are, or which entries in a folder take the most space.

        Args:
            path: A folder to break down by size (its largest files and subfolders); leave it
                out for the filesystems.
        """
        if not path or not path.strip():
            return "\n".join(_filesystem_line(p, u) for p, u in _filesystems())
        folder = self.sandbox.folder(path)
        sizes: dict[str, int] = {}
        kinds: dict[str, str] = {}
        seen_inodes: set[tuple[int, int]] = set()
        walk = self.sandbox.walk(folder, budget_s=walk_budget_s(self.settings))
        for parent, entry in walk:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                key = (info.st_dev, info.st_ino)
                if key in seen_inodes:
                    continue
                seen_inodes.add(key)
            full = parent / entry.name
            top = full.relative_to(folder).parts[0]
            sizes[top] = sizes.get(top, 0) + info.st_blocks * 512
            if parent == folder:
                kinds[top] = "/" if entry.is_dir(follow_symlinks=False) else ""
        total = sum(sizes.values())
        biggest = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:DISK_ENTRIES]
        lines = [
            f"{self.sandbox.display(folder)}: {human_size(total)} on disk in "
            f"{plural(len(sizes), 'entry', 'entries')}"
        ]
        lines.extend(
            f"{human_size(size):>10}  {printable(name)}{kinds.get(name, '')}"
            for name, size in biggest
        )
        if len(sizes) > DISK_ENTRIES:
            lines.append(f"[{len(sizes) - DISK_ENTRIES} smaller entries not listed]")
        if not walk.complete:
            lines.append(
                f"[scan stopped after {walk.entries_seen} entries; sizes are lower bounds]"
            )
        return "\n".join(lines)

    def network_connections(
        self, kind: Literal["listening", "established"] = "listening", limit: int = 50
    ) -> str:
        """List listening ports or established network connections, with their programs.

        Args:
            kind: listening (ports waiting for connections) or established (open connections).
            limit: How many to list, 1 to 200.
        """
        if not 1 <= limit <= MAX_CONNECTIONS:
            raise ToolError(f"limit must be between 1 and {MAX_CONNECTIONS}")
        try:
            connections = psutil.net_connections(kind="inet")
        except psutil.AccessDenied:
            raise ToolError("the system does not let me list network connections") from None
        names: dict[int, str] = {}

        def program(pid: int | None) -> str:
            if not pid:
                return "?"
            if pid not in names:
                try:
                    names[pid] = process_name(psutil.Process(pid))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    names[pid] = "?"
            return f"{names[pid]} (pid {pid})"

        def address(addr: Any) -> str:
            if not addr:
                return "*"
            host = f"[{addr.ip}]" if ":" in addr.ip else addr.ip
            return f"{host}:{addr.port}"

        rows = []
        for conn in connections:
            tcp = conn.type == socket.SOCK_STREAM
            proto = ("tcp" if tcp else "udp") + ("6" if conn.family == socket.AF_INET6 else "")
            if kind == "listening":
                if (tcp and conn.status != psutil.CONN_LISTEN) or (not tcp and conn.raddr):
                    continue
                rows.append((conn.laddr.port, f"{proto} {address(conn.laddr)} {program(conn.pid)}"))
            else:
                if not tcp or conn.status != psutil.CONN_ESTABLISHED:
                    continue
                rows.append(
                    (
                        conn.laddr.port,
                        f"{proto} {address(conn.laddr)} -> {address(conn.raddr)} "
                        f"{program(conn.pid)}",
                    )
                )
        rows.sort()
        lines = [f"{len(rows)} {kind} " + ("sockets" if kind == "listening" else "connections")]
        lines.extend(text for _, text in rows[:limit])
        if len(rows) > limit:
            lines.append(f"[{len(rows) - limit} more not listed]")
        return "\n".join(lines)

    def find_large_files(self, path: str | None = None, limit: int = 10) -> str:
        """Find the largest files below a folder.

        Args:
            path: The folder to search; leave it out for the first allowed folder.
            limit: How many files to list, 1 to 100.
        """
        if not 1 <= limit <= MAX_LARGE_FILES:
            raise ToolError(f"limit must be between 1 and {MAX_LARGE_FILES}")
        folder = self.sandbox.folder(path)
        largest: list[tuple[int, str]] = []
        count = 0
        walk = self.sandbox.walk(folder, budget_s=walk_budget_s(self.settings))
        for parent, entry in walk:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            count += 1
            item = (size, str(parent / entry.name))
            if len(largest) < limit:
                heapq.heappush(largest, item)
            elif item > largest[0]:
                heapq.heapreplace(largest, item)
        where = self.sandbox.display(folder)
        if not largest:
            text = f"no files under {where}"
        else:
            ordered = sorted(largest, reverse=True)
            text = f"largest {len(ordered)} of {plural(count, 'file')} under {where}:\n"
            text += "\n".join(
                f"{human_size(size):>10}  {self.sandbox.display(Path(name))}"
                for size, name in ordered
            )
        if not walk.complete:
            text += f"\n[scan stopped after {walk.entries_seen} entries; results may be partial]"
        return text

    # ------------------------------------------------------------------ policy hook

    def check_path(self, values: dict[str, Any]) -> PolicyDecision | None:
        if values.get("path") and str(values["path"]).strip():
            self.sandbox.folder(values["path"])
        return None


def tools(settings: ToolsSettings) -> list[Tool]:
    system = SystemTools(settings)
    return [
        Tool.from_function(system.system_summary, group="system"),
        Tool.from_function(system.processes, group="system"),
        Tool.from_function(system.memory, group="system"),
        Tool.from_function(system.disk_usage, group="system", check=system.check_path),
        Tool.from_function(system.network_connections, group="system"),
        Tool.from_function(system.find_large_files, group="system", check=system.check_path),
    ]
