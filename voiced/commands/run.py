"""``voiced run``: the hands-free assistant (what the systemd user service runs).

Loads the speech models, opens the microphone and speaker, and loops until SIGTERM or
Ctrl-C: listen, check the wake phrase, think with the model, answer aloud. SIGHUP reloads
the configuration. See :mod:`voiced.service.daemon` and docs/daemon.md.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from typing import Any

import click

log = logging.getLogger(__name__)


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


@click.command()
@click.option("--input-device", help="Microphone: index or part of its name (audio.input_device).")
@click.option("--output-device", help="Speaker: index or part of its name (audio.output_device).")
@click.option("--host", help="Ollama server URL (llm.host, $OLLAMA_HOST).")
@click.option("--model", help="Ollama model (llm.model).")
@click.option(
    "--no-wake", is_flag=True, help="Treat every utterance as addressed to the assistant."
)
@click.pass_obj
def run(
    app: Any,
    input_device: str | None,
    output_device: str | None,
    host: str | None,
    model: str | None,
    no_wake: bool,
) -> None:
    """Run the hands-free assistant until stopped (SIGTERM or Ctrl-C; SIGHUP reloads config).

    Say the wake word (wake.model, "Hey Jarvis" by default; or with wake.engine: text, a
    phrase from wake.phrases such as "computer") and then your request; after a reply you
    can go on without it for wake.follow_up_s seconds. Each turn is recorded in
    the transcript journal (`voiced transcripts`).
    """
    from voiced.service.daemon import Daemon
    from voiced.service.notify import Notifier

    overrides: dict[str, Any] = {
        "audio.input_device": _device(input_device),
        "audio.output_device": _device(output_device),
        "llm.host": host,
        "llm.model": model,
    }
    if no_wake:
        overrides["wake.engine"] = "text"  # no wake-word model: every transcript counts
        overrides["wake.phrases"] = []
    root = logging.getLogger()
    if root.level != logging.WARNING:  # -v or -q: the command line decides, on reloads too
        overrides["logging.level"] = logging.getLevelName(root.level)
    settings = app.settings(**overrides)
    root.setLevel(settings.logging.level)

    notifier = Notifier()
    daemon = Daemon(settings, config_path=app.config_path, notifier=notifier, overrides=overrides)

    def on_stop(signum: int, frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        daemon.request_stop()

    def on_reload(signum: int, frame: object) -> None:
        log.info("received SIGHUP: reloading the configuration")
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    # `kill -USR1 PID` writes every thread's stack to the journal: for a daemon that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        daemon.load()
    except Exception as exc:  # models or voice that cannot load: nothing to run
        notifier.status(f"failed: {exc}")
        raise click.ClickException(f"cannot start: {exc}") from None
    code = daemon.run()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Worker threads may sit inside whisper.cpp or onnxruntime; do not wait for them or let
    # interpreter teardown run under their feet.
    os._exit(code)
