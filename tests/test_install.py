"""install.sh's own output: what a user needs, not setuptools' banners."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_editable_install_step_prints_no_banner(tmp_path: Path) -> None:
    """install.sh's pip lines, run as it runs them (after its pip upgrade) in a fresh venv:
    nothing on stdout or stderr (dependencies left out: the step under test is the build)."""
    lines = [
        line.strip()
        for line in (ROOT / "install.sh").read_text().splitlines()
        if re.search(r"\.venv/bin/python -m pip install", line)
    ]
    (upgrade,) = [line for line in lines if "--upgrade pip" in line]
    (editable,) = [line for line in lines if " -e " in line]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    for line in (upgrade, editable + " --no-deps"):
        command = line.replace(".venv/bin/python", str(venv / "bin" / "python"))
        result = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
    # This machine's pip configuration may name package mirrors it cannot see; a user's
    # does not. Anything else is noise to a user.
    noise = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not re.match(r"WARNING: Location '.*' is ignored", line)
    ]
    assert noise == [], "\n".join(noise)
