"""The README's test command says loudly what it skipped for lack of a tool; CI fails instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest_without_systemd_analyze(**env: str) -> subprocess.CompletedProcess[str]:
    # No PATH: systemd-analyze (and every other tool) is missing; the unit tests need it.
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "PATH")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_service.py"],
        cwd=ROOT,
        env={**environ, "PATH": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_without_a_tool_ends_with_a_line_saying_what_was_skipped() -> None:
    result = _pytest_without_systemd_analyze()
    assert result.returncode == 0, result.stdout[-3000:]
    tail = result.stdout.splitlines()[-8:]
    assert any("SKIPPED because this machine lacks what they need" in line for line in tail), tail
    assert any("x systemd-analyze not installed" in line for line in tail), tail
    assert any("./install.sh" in line and "CI=1" in line for line in tail), tail


def test_the_same_run_under_ci_fails() -> None:
    result = _pytest_without_systemd_analyze(CI="true")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "CI must verify the unit: systemd-analyze not installed" in result.stdout
