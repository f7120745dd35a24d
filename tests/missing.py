"""A loud line at the end of a test run for tests skipped because the machine lacks something.

The README's test command (``.venv/bin/python -m pytest``) skips the tests that need the
PulseAudio test server, systemd-analyze, the real recordings or a reference file when those are
missing (CI, with ``CI`` set, fails them instead). ``-ra`` lists each skip among many lines;
this says once, in its own section at the end, how many tests did not run, why, and how to fix it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Skip reasons (their start) that mean "this machine lacks something the tests need".
MISSING = (
    "PulseAudio test server unavailable",
    "systemd-analyze not installed",
    "real test recordings unavailable",
    "OpenAI's mel filters unavailable",
    "multilingual extra not installed",
)


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = Counter(
        reason for reason in (_reason(report) for report in skipped) if reason.startswith(MISSING)
    )
    if not reasons:
        return
    total = sum(reasons.values())
    write = terminalreporter.write_line
    terminalreporter.section("voiced: tests that did not run", sep="!", red=True, bold=True)
    write(f"{total} test(s) were SKIPPED because this machine lacks what they need:", red=True)
    for reason, count in reasons.most_common():
        write(f"  {count:4d} x {reason}")
    write(
        "Run ./install.sh to install it all; with CI=1 (as .ci/run sets) these are failures.",
        bold=True,
    )
