"""The systemd user unit and ``voiced service install|uninstall|status``.

``systemctl`` is a fake on PATH that records its arguments: the real ``systemctl --user
disable --now voiced.service`` would stop a developer's own voiced.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from voiced.cli import main
from voiced.commands.service import render_unit

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "voiced.service"


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


FAKE_SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
case "$*" in
  *" status "*) echo "voiced.service (fake)"; echo "   Active: inactive"; exit 3;;
esac
exit 0
"""


@pytest.fixture(autouse=True)
def systemctl_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """A fake ``systemctl`` first on PATH; the fixture reads back each call's arguments."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return lambda: log.read_text().splitlines() if log.exists() else []


def _verify(unit: Path, home: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        reason = "systemd-analyze not installed (Debian: apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must verify the unit: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _directives(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, value)
    return found


def test_repository_unit_is_the_rendered_template() -> None:
    assert UNIT.read_text() == render_unit()


def test_unit_has_notify_watchdog_restart_and_hardening() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == "notify"
    assert int(unit["WatchdogSec"]) > 0
    assert unit["Restart"] == "on-failure"
    assert unit["StandardError"] == "journal"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict"
    assert unit["PrivateTmp"] == "yes"
    assert unit["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "%h/.local/state/voiced" in unit["ReadWritePaths"]
    assert "PrivateDevices" not in unit  # would hide the sound devices
    assert unit["WantedBy"] == "default.target"


def test_systemd_analyze_accepts_the_repository_unit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "voiced").symlink_to(sys.executable)
    result = _verify(UNIT, home)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings (unknown keys...) count too


def test_systemd_analyze_rejects_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "voiced.service"
    broken.write_text(UNIT.read_text().replace("ExecStart=%h/.local/bin/voiced", "ExecStart=%h/x"))
    result = _verify(broken, tmp_path)
    assert result.returncode != 0 or result.stderr.strip()


def test_install_writes_a_unit_for_this_installation(
    config_home: Path, voiced_home: Path, tmp_path: Path, systemctl_calls
) -> None:
    result = CliRunner().invoke(main, ["service", "install"])
    assert result.exit_code == 0, result.output
    # systemd learns of the unit; enabling and starting it is left to the user.
    assert systemctl_calls() == ["--user daemon-reload"]
    assert "systemctl --user enable --now voiced" in result.stdout
    path = config_home / "systemd" / "user" / "voiced.service"
    assert f"wrote {path}" in result.stdout
    text = path.read_text()
    unit = _directives(text)
    command = shlex.split(unit["ExecStart"])
    assert command == [sys.executable, "-m", "voiced", "run"]
    assert unit["Environment"] == "PYTHONUNBUFFERED=1"
    assert f"VOICED_HOME={voiced_home.resolve()}" in text
    # The command really starts this voiced.
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "hands-free" in done.stdout
    verified = _verify(path, tmp_path)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr

    # Installing again is a no-op; a changed file is only replaced with --force.
    assert CliRunner().invoke(main, ["service", "install"]).exit_code == 0
    path.write_text(text.replace("WatchdogSec=30", "WatchdogSec=60"))
    refused = CliRunner().invoke(main, ["service", "install"])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert "WatchdogSec=60" in path.read_text()
    forced = CliRunner().invoke(main, ["service", "install", "--force"])
    assert forced.exit_code == 0 and path.read_text() == text


def test_install_keeps_the_config_option(config_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "my config.yaml"
    config.write_text("wake:\n  follow_up_s: 3.0\n")
    result = CliRunner().invoke(main, ["--config", str(config), "service", "install"])
    assert result.exit_code == 0, result.output
    text = (config_home / "systemd" / "user" / "voiced.service").read_text()
    command = shlex.split(_directives(text)["ExecStart"])
    assert command == [sys.executable, "-m", "voiced", "--config", str(config.resolve()), "run"]


def test_install_refuses_a_broken_config(config_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("wake:\n  follow_up: 3\n")
    result = CliRunner().invoke(main, ["--config", str(config), "service", "install"])
    assert result.exit_code != 0 and "wake.follow_up: unknown key" in result.output
    assert not (config_home / "systemd" / "user" / "voiced.service").exists()


def test_status_and_uninstall(config_home: Path, systemctl_calls) -> None:
    path = config_home / "systemd" / "user" / "voiced.service"
    missing = CliRunner().invoke(main, ["service", "status"])
    assert missing.exit_code == 3 and "voiced service install" in missing.stdout
    assert systemctl_calls() == []  # nothing to ask systemd about
    assert CliRunner().invoke(main, ["service", "install"]).exit_code == 0
    status = CliRunner().invoke(main, ["service", "status"])
    assert f"unit: {path}" in status.stdout and f"runs: {sys.executable}" in status.stdout
    assert "Active: inactive" in status.stdout and status.exit_code == 3  # systemctl's code
    assert systemctl_calls()[-1] == "--user status --no-pager --lines=5 voiced.service"
    before = len(systemctl_calls())
    removed = CliRunner().invoke(main, ["service", "uninstall"])
    assert removed.exit_code == 0 and not path.exists()
    assert systemctl_calls()[before:] == [
        "--user disable --now voiced.service",
        "--user daemon-reload",
    ]
    again = CliRunner().invoke(main, ["service", "uninstall"])
    assert again.exit_code == 0 and "not installed" in again.stdout
    assert len(systemctl_calls()) == before + 2


def test_systemd_analyze_is_required_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemd-analyze
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as raised:  # a skip would be a BaseException too
        _verify(UNIT, tmp_path)
    assert raised.type is pytest.fail.Exception and "CI must verify" in str(raised.value)


SERVE_UNIT = REPO / "systemd" / "voiced-serve.service"


def test_repository_serve_unit_is_the_rendered_template() -> None:
    assert SERVE_UNIT.read_text() == render_unit("%h/.local/bin/voiced serve", role="serve")


def test_serve_unit_has_the_same_readiness_watchdog_and_hardening(tmp_path: Path) -> None:
    run_unit, serve_unit = _directives(UNIT.read_text()), _directives(SERVE_UNIT.read_text())
    assert serve_unit["ExecStart"] == "%h/.local/bin/voiced serve"
    assert "ExecReload" not in serve_unit  # serve has no configuration reload on SIGHUP
    # zeroconf lists the network interfaces over netlink; otherwise the same sandbox.
    assert serve_unit["RestrictAddressFamilies"].split() == [
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    ]
    same = set(run_unit) - {"ExecStart", "ExecReload", "After", "Description"}
    same -= {"SyslogIdentifier", "RestrictAddressFamilies"}
    assert {key: serve_unit.get(key) for key in same} == {key: run_unit[key] for key in same}
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "voiced").symlink_to(sys.executable)
    result = _verify(SERVE_UNIT, home)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_install_status_uninstall_serve(config_home: Path, tmp_path: Path, systemctl_calls) -> None:
    result = CliRunner().invoke(main, ["service", "install", "--serve"])
    assert result.exit_code == 0, result.output
    assert "systemctl --user enable --now voiced-serve" in result.stdout
    path = config_home / "systemd" / "user" / "voiced-serve.service"
    command = shlex.split(_directives(path.read_text())["ExecStart"])
    assert command == [sys.executable, "-m", "voiced", "serve"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Wyoming" in done.stdout
    verified = _verify(path, tmp_path)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    assert not (config_home / "systemd" / "user" / "voiced.service").exists()
    CliRunner().invoke(main, ["service", "status", "--serve"])
    assert systemctl_calls()[-1] == "--user status --no-pager --lines=5 voiced-serve.service"
    removed = CliRunner().invoke(main, ["service", "uninstall", "--serve"])
    assert removed.exit_code == 0 and not path.exists()
    assert "--user disable --now voiced-serve.service" in systemctl_calls()
