"""``voiced config show|check``."""

from __future__ import annotations

from pathlib import Path

import click

from voiced import config as config_mod
from voiced import paths


@click.group()
def config() -> None:
    """Show and check the configuration."""


@config.command()
@click.pass_obj
def show(app) -> None:
    """Print the effective configuration as YAML."""
    click.echo(config_mod.to_yaml(app.settings()), nl=False)


@config.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def check(app, path: Path | None) -> None:
    """Validate a config file (default: the one voiced would use).

    Exits 0 when valid, 1 with the file, key and what was expected when not.
    """
    target = path or app.config_path or paths.user_config_path()
    if path is None and app.config_path is None and not target.exists():
        click.echo(f"{target}: no config file; built-in defaults are in use")
        return
    try:
        config_mod.load(target)
    except config_mod.ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{target}: ok")
