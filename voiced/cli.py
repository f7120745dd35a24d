"""The ``voiced`` command line.

Subcommands live in :mod:`voiced.commands` and are imported only when invoked, so that
``voiced transcribe`` on a server never loads PortAudio, Piper or the Ollama client.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from voiced import __version__
from voiced import config as config_mod

# name -> (module, attribute, short help shown in `voiced --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "transcribe": ("voiced.commands.transcribe", "transcribe", "Transcribe audio files."),
    "listen": ("voiced.commands.listen", "listen", "Live dictation from the microphone."),
    "say": ("voiced.commands.say", "say", "Speak text aloud or into a WAV file."),
    "chat": ("voiced.commands.chat", "chat", "Text chat with the assistant."),
    "run": ("voiced.commands.run", "run", "Run the hands-free assistant."),
    "serve": ("voiced.commands.serve", "serve", "Serve Home Assistant over Wyoming."),
    "models": ("voiced.commands.models", "models", "List, install and check models."),
    "devices": ("voiced.commands.devices", "devices", "List audio input and output devices."),
    "audio": ("voiced.commands.audio", "audio", "Set up the sound server (echo cancellation)."),
    "llm": ("voiced.commands.llm", "llm", "Inspect and set up the Ollama model."),
    "tools": ("voiced.commands.tools", "tools", "List and call the assistant's tools."),
    "transcripts": ("voiced.commands.transcripts", "transcripts", "Read recorded turns."),
    "config": ("voiced.commands.config", "config", "Show and check the configuration."),
    "service": ("voiced.commands.service", "service", "Install the systemd user service."),
    "doctor": ("voiced.commands.doctor", "doctor", "Check that everything voiced needs works."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; unbuilt ones stay hidden."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if importlib.util.find_spec(COMMANDS[name][0])]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or importlib.util.find_spec(entry[0]) is None:
            return None
        module = importlib.import_module(entry[0])
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from COMMANDS so that `voiced --help` imports nothing heavy.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@dataclass
class AppContext:
    """What every subcommand gets: where the config came from, and how to load it."""

    config_path: Path | None

    def settings(self, **overrides: Any) -> config_mod.Settings:
        """Effective settings with dotted-key command-line overrides applied."""
        try:
            return config_mod.load(self.config_path, overrides)
        except config_mod.ConfigError as exc:
            raise click.UsageError(str(exc)) from None


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity if verbosity >= 0 else logging.ERROR
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voiced")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="VOICED_CONFIG",
    help="Config file (default: $XDG_CONFIG_HOME/voiced/config.yaml; env VOICED_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """voiced: a private, local voice assistant for the Linux desktop.

    It listens with whisper.cpp, thinks with gpt-oss on Ollama and answers with Piper,
    all on this machine. Data lives under $VOICED_HOME when set, else the XDG folders.
    """
    setup_logging(-1 if quiet else verbose)
    if config_path is not None:
        _announce_config(ctx, config_path)
    ctx.obj = AppContext(config_path=config_path)


def _announce_config(ctx: click.Context, config_path: Path) -> None:
    """Make the chosen config the one ``VOICED_CONFIG`` names, for as long as the command runs.

    The tools' sandbox keeps the config in use off limits through it (else one confirmed
    write_file could widen the sandbox for the next start), and child processes read the
    same file.
    """
    previous = os.environ.get("VOICED_CONFIG")
    os.environ["VOICED_CONFIG"] = os.path.abspath(os.path.expanduser(config_path))

    def restore() -> None:
        if previous is None:
            os.environ.pop("VOICED_CONFIG", None)
        else:
            os.environ["VOICED_CONFIG"] = previous

    ctx.call_on_close(restore)
