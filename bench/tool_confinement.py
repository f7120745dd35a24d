"""What the kernel confinement of the tools costs per call (issue 18).

``run_command`` through the registry, confined (the ``confine.py`` helper: one ``python -I -S``
start, Landlock, ``exec``) against the same call unconfined (the old direct start with
rlimits in ``preexec_fn``, what runs where the kernel has no Landlock), alternating, in one
run; and the descriptor-based ``list_directory`` and ``find_files`` on a tree of files. The
end-to-end ``voiced tools call run_command`` (a fresh process, as a user types it) is timed
too, since that is what has to feel instant.

    .venv/bin/python -m bench.tool_confinement [--runs 30] [--files 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voiced.brain.tools import commands
from voiced.brain.tools.confine import landlock_abi
from voiced.brain.tools.policy import build_registry
from voiced.config import Settings, ToolsSettings


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.1f} ms"


def _timed(registry: Any, tool: str, arguments: dict[str, Any]) -> float:
    started = time.perf_counter()
    outcome = registry.call(tool, arguments)
    elapsed = time.perf_counter() - started
    if not outcome.ok:
        raise SystemExit(f"{tool} failed: {outcome.error}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--files", type=int, default=3000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        os.environ["VOICED_HOME"] = str(Path(tmp) / "home")
        for index in range(options.files):
            folder = root / f"d{index % 30}" / f"e{index % 7}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{index}.txt").write_text("some text\n")
        (root / "notes.txt").write_text("buy milk\n" * 50)
        settings = Settings(tools=ToolsSettings(file_roots=[str(root)]))
        registry = build_registry(settings, source="bench")
        abi = landlock_abi()
        print(f"Landlock ABI {abi}; {options.runs} runs each, alternating; medians")
        calls = {
            "cat notes.txt": {"command": "cat", "args": ["notes.txt"]},
            "ls -l d1": {"command": "ls", "args": ["-l", "d1"]},
            "uptime": {"command": "uptime"},
        }
        for label, arguments in calls.items():
            confined: list[float] = []
            plain: list[float] = []
            for _ in range(options.runs):
                if abi >= 1:
                    confined.append(_timed(registry, "run_command", arguments))
                original = commands.landlock_abi
                commands.landlock_abi = lambda: 0  # type: ignore[assignment]
                try:
                    plain.append(_timed(registry, "run_command", arguments))
                finally:
                    commands.landlock_abi = original
            extra = ""
            if confined:
                cost = statistics.median(confined) - statistics.median(plain)
                extra = f"  confined {_median_ms(confined)}  cost {cost * 1000:+6.1f} ms"
            print(f"run_command {label:<14} unconfined {_median_ms(plain)}{extra}")
        for tool, arguments in (
            ("list_directory", {"path": "d1/e1"}),
            ("find_files", {"pattern": "f1*.txt"}),
            ("find_large_files", {}),
        ):
            samples = [_timed(registry, tool, arguments) for _ in range(options.runs)]
            print(f"{tool:<26} {_median_ms(samples)}  ({options.files} files in the tree)")
        cli = [sys.executable, "-m", "voiced", "tools", "call", "run_command"]
        cli += ["--args", '{"command": "cat", "args": ["notes.txt"]}']
        environment = {**os.environ, "VOICED_CONFIG": str(Path(tmp) / "config.yaml")}
        Path(tmp, "config.yaml").write_text(f"tools:\n  file_roots: [{root}]\n")
        walls = []
        for _ in range(max(3, options.runs // 5)):
            started = time.perf_counter()
            done = subprocess.run(cli, capture_output=True, text=True, env=environment)
            walls.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise SystemExit(f"voiced tools call failed: {done.stderr[-500:]}")
        print(f"voiced tools call run_command (a fresh process) {_median_ms(walls)}")


if __name__ == "__main__":
    main()
