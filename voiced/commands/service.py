"""``voiced service install|uninstall|status``: the systemd user service.

``install`` writes ``voiced.service`` to ``~/.config/systemd/user/`` (``$XDG_CONFIG_HOME``)
with an ``ExecStart`` that runs this very installation (the Python interpreter it runs under,
so a virtual environment or pipx install keeps working), creates the data and state folders
the sandbox lets it write, and runs ``systemctl --user daemon-reload`` when systemctl is
there. The unit is the template below; ``systemd/voiced.service`` in the repository is the
same template rendered for ``~/.local/bin/voiced`` (a test keeps the two in step).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from voiced import paths

UNIT_NAME = "voiced.service"

UNIT_TEMPLATE = """\
# voiced: the hands-free voice assistant as a systemd user service.
#   voiced service install        (writes this file with the right ExecStart)
#   systemctl --user enable --now voiced
#   journalctl --user -u voiced -f
# See docs/daemon.md (echo cancellation for speakers, sandbox notes).

[Unit]
Description=voiced hands-free voice assistant (whisper.cpp, gpt-oss on Ollama, Piper)
# The sound server of the session; whichever of them exists.
After=pipewire.service pipewire-pulse.service pulseaudio.service
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# voiced pings every WatchdogSec/2 from its main loop; a hung loop gets restarted.
WatchdogSec=30
# Loading whisper and Piper takes a few seconds (longer on the first start: model conversion).
TimeoutStartSec=300
# SIGTERM: the sentence being spoken is finished, then voiced exits (within 2 s).
TimeoutStopSec=10
StandardOutput=journal
StandardError=journal
SyslogIdentifier=voiced
Environment=PYTHONUNBUFFERED=1{environment}

# Hardening that keeps audio (the sound server's socket under $XDG_RUNTIME_DIR, ALSA devices),
# Ollama (TCP) and reading the user's files working. Writes are limited to voiced's own data;
# to let the write_file tool write elsewhere, add ReadWritePaths= in `systemctl --user edit voiced`.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={read_write_paths}
PrivateTmp=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectHostname=yes
SystemCallArchitectures=native
UMask=0077
# Not set on purpose: PrivateDevices (hides /dev/snd), MemoryDenyWriteExecute (onnxruntime
# and whisper.cpp need executable memory on some CPUs), ProtectHome (voiced reads your files).

[Install]
WantedBy=default.target
"""

DEFAULT_EXEC_START = "%h/.local/bin/voiced run"
DEFAULT_READ_WRITE = ("%h/.local/share/voiced", "%h/.local/state/voiced")


def _unit_value(text: str) -> str:
    return text.replace("%", "%%")


def render_unit(
    exec_start: str = DEFAULT_EXEC_START,
    read_write: tuple[str, ...] = DEFAULT_READ_WRITE,
    environment: dict[str, str] | None = None,
) -> str:
    """The unit text; ``read_write`` folders may be missing (``-`` prefix)."""
    extra = "".join(
        f"\nEnvironment={shlex.quote(f'{key}={value}')}"
        for key, value in (environment or {}).items()
    )
    return UNIT_TEMPLATE.format(
        exec_start=exec_start,
        read_write_paths=" ".join(f"-{folder}" for folder in read_write),
        environment=extra,
    )


def _home_relative(path: Path) -> str:
    """``%h/...`` for folders in the home directory (the unit then survives a renamed home)."""
    try:
        return "%h/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return _unit_value(str(path.resolve()))


def installed_unit(config_path: Path | None = None) -> str:
    """The unit for this installation: its interpreter, its data folders, its VOICED_HOME."""
    folders = tuple(dict.fromkeys(_home_relative(p) for p in (paths.data_dir(), paths.state_dir())))
    environment = {}
    if paths.home() is not None:
        environment["VOICED_HOME"] = _unit_value(str(paths.home().resolve()))
    return render_unit(exec_start(config_path), folders, environment)


def exec_start(config_path: Path | None = None) -> str:
    """The command that runs ``voiced run`` from this installation."""
    command = [sys.executable, "-m", "voiced"]
    if config_path is not None:
        command += ["--config", str(Path(config_path).expanduser().resolve())]
    command.append("run")
    # systemd unquotes like a shell for simple words; "%" must be doubled in unit files.
    return _unit_value(" ".join(shlex.quote(part) for part in command))


def unit_dir() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "systemd" / "user"


def unit_path() -> Path:
    return unit_dir() / UNIT_NAME


def _systemctl(*args: str) -> subprocess.CompletedProcess[str] | None:
    if shutil.which("systemctl") is None:
        return None
    try:
        return subprocess.run(
            ["systemctl", "--user", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        click.echo(f"systemctl --user {' '.join(args)} failed: {exc}", err=True)
        return None


def _daemon_reload() -> None:
    result = _systemctl("daemon-reload")
    if result is None:
        click.echo("systemctl not found: run `systemctl --user daemon-reload` yourself", err=True)
    elif result.returncode != 0:
        click.echo(
            f"systemctl --user daemon-reload failed ({result.stderr.strip() or result.returncode});"
            " is a user session manager running?",
            err=True,
        )


@click.group()
def service() -> None:
    """Install, remove or inspect the systemd user service (voiced.service)."""


@service.command()
@click.option("--force", is_flag=True, help="Overwrite a unit that differs from this one.")
@click.pass_obj
def install(app: Any, force: bool) -> None:
    """Write ~/.config/systemd/user/voiced.service for this installation."""
    app.settings()  # refuse to install a service over a broken config
    text = installed_unit(app.config_path)
    path = unit_path()
    if path.exists() and path.read_text() != text and not force:
        raise click.ClickException(f"{path} exists and differs; use --force to replace it")
    for folder in (paths.data_dir(), paths.state_dir()):
        paths.ensure_private_dir(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    click.echo(f"wrote {path}")
    _daemon_reload()
    click.echo("start it now and at every login with: systemctl --user enable --now voiced")


@service.command()
def uninstall() -> None:
    """Stop and disable the service and remove its unit file."""
    path = unit_path()
    if not path.exists():
        click.echo(f"{path} is not installed")
        return
    result = _systemctl("disable", "--now", UNIT_NAME)
    if result is not None and result.returncode != 0:
        click.echo(f"could not stop the service: {result.stderr.strip()}", err=True)
    path.unlink()
    click.echo(f"removed {path}")
    _daemon_reload()


@service.command()
def status() -> None:
    """Show whether the unit is installed, and what systemd says about it."""
    path = unit_path()
    if not path.exists():
        click.echo(f"not installed ({path} missing); run: voiced service install")
        raise SystemExit(3)
    click.echo(f"unit: {path}")
    for line in path.read_text().splitlines():
        if line.startswith("ExecStart="):
            click.echo(f"runs: {line.removeprefix('ExecStart=')}")
    result = _systemctl("status", "--no-pager", "--lines=5", UNIT_NAME)
    if result is None:
        click.echo("systemctl not found: cannot ask systemd about it")
        return
    click.echo(result.stdout.rstrip() or result.stderr.rstrip())
    # systemctl status: 0 running, 3 not running; pass it on for scripts.
    if result.returncode not in (0,):
        raise SystemExit(result.returncode)
