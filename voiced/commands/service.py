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

SERVE_UNIT_NAME = "voiced-serve.service"

UNIT_TEMPLATE = """\
{header}

[Unit]
Description={description}
{after}StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
{reload}Restart=on-failure
RestartSec=5
# voiced pings every WatchdogSec/2 from its main loop; a hung loop gets restarted.
WatchdogSec=30
# Loading whisper and Piper takes a few seconds (longer on the first start: model conversion).
TimeoutStartSec=300
# {stop_note}
TimeoutStopSec=10
StandardOutput=journal
StandardError=journal
SyslogIdentifier={identifier}
Environment=PYTHONUNBUFFERED=1{environment}

# Hardening that keeps audio (the sound server's socket under $XDG_RUNTIME_DIR, ALSA devices),
# Ollama (TCP) and reading the user's files working. Writes are limited to voiced's own data;
# to let the write_file tool write elsewhere, add ReadWritePaths= in `systemctl --user edit voiced`.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={read_write_paths}
PrivateTmp=yes
RestrictAddressFamilies={families}
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
DEFAULT_SERVE_EXEC_START = "%h/.local/bin/voiced serve"

# What differs between the assistant's unit and the Wyoming server's (``--serve``).
_ROLES: dict[str, dict[str, str]] = {
    "run": {
        "header": (
            "# voiced: the hands-free voice assistant as a systemd user service.\n"
            "#   voiced service install        (writes this file with the right ExecStart)\n"
            "#   systemctl --user enable --now voiced\n"
            "#   journalctl --user -u voiced -f\n"
            "# See docs/daemon.md (echo cancellation for speakers, sandbox notes)."
        ),
        "description": "voiced hands-free voice assistant (whisper.cpp, gpt-oss on Ollama, Piper)",
        "after": (
            "# The sound server of the session; whichever of them exists.\n"
            "After=pipewire.service pipewire-pulse.service pulseaudio.service\n"
        ),
        "reload": "ExecReload=/bin/kill -HUP $MAINPID\n",
        "stop_note": (
            "SIGTERM: the sentence being spoken is finished, then voiced exits (within 2 s)."
        ),
        "identifier": "voiced",
        "families": "AF_UNIX AF_INET AF_INET6",
    },
    "serve": {
        "header": (
            "# voiced serve: the Wyoming speech server for Home Assistant as a systemd user "
            "service.\n"
            "#   voiced service install --serve   (writes this file with the right ExecStart)\n"
            "#   systemctl --user enable --now voiced-serve\n"
            "#   journalctl --user -u voiced-serve -f\n"
            "# To keep it running without a login session: loginctl enable-linger $USER.\n"
            "# Settings: serve.* in the config (README: Home Assistant)."
        ),
        "description": "voiced Wyoming speech server for Home Assistant (whisper.cpp, Piper)",
        "after": "",
        "reload": "",
        "stop_note": "SIGTERM: open connections are closed and voiced serve exits.",
        "identifier": "voiced-serve",
        # AF_NETLINK: zeroconf lists the network interfaces (serve.zeroconf).
        "families": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    },
}
DEFAULT_READ_WRITE = ("%h/.local/share/voiced", "%h/.local/state/voiced")


def _unit_value(text: str) -> str:
    return text.replace("%", "%%")


def render_unit(
    exec_start: str = DEFAULT_EXEC_START,
    read_write: tuple[str, ...] = DEFAULT_READ_WRITE,
    environment: dict[str, str] | None = None,
    role: str = "run",
) -> str:
    """The unit text; ``read_write`` folders may be missing (``-`` prefix).

    ``role`` is ``run`` (the assistant, voiced.service) or ``serve`` (the Wyoming server,
    voiced-serve.service).
    """
    extra = "".join(
        f"\nEnvironment={shlex.quote(f'{key}={value}')}"
        for key, value in (environment or {}).items()
    )
    return UNIT_TEMPLATE.format(
        **_ROLES[role],
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


def installed_unit(config_path: Path | None = None, role: str = "run") -> str:
    """The unit for this installation: its interpreter, its data folders, its VOICED_HOME."""
    folders = tuple(dict.fromkeys(_home_relative(p) for p in (paths.data_dir(), paths.state_dir())))
    environment = {}
    if paths.home() is not None:
        environment["VOICED_HOME"] = _unit_value(str(paths.home().resolve()))
    return render_unit(exec_start(config_path, role), folders, environment, role)


def exec_start(config_path: Path | None = None, role: str = "run") -> str:
    """The command that runs ``voiced run`` (or ``voiced serve``) from this installation."""
    command = [sys.executable, "-m", "voiced"]
    if config_path is not None:
        command += ["--config", str(Path(config_path).expanduser().resolve())]
    command.append(role)
    # systemd unquotes like a shell for simple words; "%" must be doubled in unit files.
    return _unit_value(" ".join(shlex.quote(part) for part in command))


def unit_dir() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "systemd" / "user"


def unit_path(role: str = "run") -> Path:
    return unit_dir() / (SERVE_UNIT_NAME if role == "serve" else UNIT_NAME)


_SERVE_OPTION = click.option(
    "--serve",
    is_flag=True,
    help="The Wyoming server (voiced serve, voiced-serve.service) instead of the assistant.",
)


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
@_SERVE_OPTION
@click.pass_obj
def install(app: Any, force: bool, serve: bool) -> None:
    """Write ~/.config/systemd/user/voiced.service (or voiced-serve.service) for this install."""
    app.settings()  # refuse to install a service over a broken config
    role = "serve" if serve else "run"
    text = installed_unit(app.config_path, role)
    path = unit_path(role)
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
    name = path.name.removesuffix(".service")
    click.echo(f"start it now and at every login with: systemctl --user enable --now {name}")


@service.command()
@_SERVE_OPTION
def uninstall(serve: bool) -> None:
    """Stop and disable the service and remove its unit file."""
    path = unit_path("serve" if serve else "run")
    if not path.exists():
        click.echo(f"{path} is not installed")
        return
    result = _systemctl("disable", "--now", path.name)
    if result is not None and result.returncode != 0:
        click.echo(f"could not stop the service: {result.stderr.strip()}", err=True)
    path.unlink()
    click.echo(f"removed {path}")
    _daemon_reload()


@service.command()
@_SERVE_OPTION
def status(serve: bool) -> None:
    """Show whether the unit is installed, and what systemd says about it."""
    path = unit_path("serve" if serve else "run")
    if not path.exists():
        flag = " --serve" if serve else ""
        click.echo(f"not installed ({path} missing); run: voiced service install{flag}")
        raise SystemExit(3)
    click.echo(f"unit: {path}")
    for line in path.read_text().splitlines():
        if line.startswith("ExecStart="):
            click.echo(f"runs: {line.removeprefix('ExecStart=')}")
    result = _systemctl("status", "--no-pager", "--lines=5", path.name)
    if result is None:
        click.echo("systemctl not found: cannot ask systemd about it")
        return
    click.echo(result.stdout.rstrip() or result.stderr.rstrip())
    # systemctl status: 0 running, 3 not running; pass it on for scripts.
    if result.returncode not in (0,):
        raise SystemExit(result.returncode)
