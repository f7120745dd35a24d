"""``voiced serve``: a Wyoming server for Home Assistant and its voice satellites.

See :mod:`voiced.service.wyoming_server` for what it offers and how it treats bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import click

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--uri",
    help="Where to listen: tcp://HOST:PORT or unix://PATH (serve.uri; tcp://0.0.0.0:10300).",
)
@click.option(
    "--zeroconf",
    "zeroconf_name",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Announce the server over mDNS (_wyoming._tcp.local.) as NAME "
    "(serve.zeroconf, serve.zeroconf_name).",
)
@click.option(
    "--conversation/--no-conversation",
    default=None,
    help="Offer the assistant as a conversation agent (serve.conversation).",
)
@click.option("--host", help="Ollama server URL for the conversation (llm.host, $OLLAMA_HOST).")
@click.pass_obj
def serve(
    app: Any,
    uri: str | None,
    zeroconf_name: str | None,
    conversation: bool | None,
    host: str | None,
) -> None:
    """Serve speech to text, text to speech, wake words and the assistant over Wyoming.

    Home Assistant adds it under Settings → Devices & services → Add integration → Wyoming
    Protocol, with this machine's host name and the port (10300), or finds it by itself
    when it is announced with --zeroconf. `describe` lists the Whisper models, Piper voices
    and wake-word models installed here. Stops on SIGTERM or Ctrl-C.
    """
    from voiced.service.notify import Notifier
    from voiced.service.wyoming_server import Engines
    from voiced.service.wyoming_server import serve as run_server

    overrides: dict[str, Any] = {
        "serve.uri": uri,
        "serve.conversation": conversation,
        "llm.host": host,
    }
    if zeroconf_name is not None:
        overrides["serve.zeroconf"] = True
        if zeroconf_name:
            overrides["serve.zeroconf_name"] = zeroconf_name
    settings = app.settings(**overrides)
    root = logging.getLogger()
    if root.level == logging.WARNING:  # no -v / -q given: the config decides
        root.setLevel(settings.logging.level)
    notifier = Notifier()
    notifier.status("loading models")
    try:
        engines = Engines.load(settings)
    except Exception as exc:  # a model or voice that cannot load: nothing to serve
        notifier.status(f"failed: {exc}")
        raise click.ClickException(f"cannot start: {exc}") from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def ready(address: str) -> None:
            # The address goes to stdout: with port 0 it is how a caller learns the port.
            click.echo(f"listening on {address}")
            notifier.ready(f"serving on {address}")

        watchdog = asyncio.ensure_future(_watchdog(notifier))
        try:
            await run_server(
                engines,
                settings.serve.uri,
                zeroconf_name=settings.serve.zeroconf_name if settings.serve.zeroconf else None,
                on_ready=ready,
                stop=stop,
            )
        finally:
            watchdog.cancel()
            notifier.stopping()

    try:
        asyncio.run(main())
    except OSError as exc:  # the port is taken, the socket folder is missing
        raise click.ClickException(f"cannot listen on {settings.serve.uri}: {exc}") from None


async def _watchdog(notifier: Any) -> None:
    """Ping systemd's watchdog from the event loop: a hung loop gets the service restarted."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            if notifier.watchdog_due():
                notifier.watchdog()
            await asyncio.sleep(0.5)
