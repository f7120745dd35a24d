"""``voiced audio echo-cancel on|off|status``: the sound server's echo canceller for voiced.

``on`` loads ``module-echo-cancel`` (WebRTC) over a microphone and a speaker as the named
pair ``voiced_aec_source`` / ``voiced_aec_sink`` and, unless ``--keep-defaults``, makes the
pair the default source and sink, which is what PortAudio's ``default`` device follows.
Running it twice loads one module. ``off`` unloads only that module and gives the defaults
back to the microphone and speaker under it. ``status`` exits 0 when the pair is loaded
and 3 when it is not. Every error is one line on stderr with exit status 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from voiced.audio import echo_cancel as ec

STATUS_OFF_EXIT = 3


@click.group()
def audio() -> None:
    """Set up the sound server for voiced."""


@audio.group("echo-cancel")
def echo_cancel() -> None:
    """Full duplex on speakers: the sound server's echo canceller (PulseAudio, PipeWire).

    voiced then hears you over its own voice: say the wake phrase while it talks to
    interrupt it. Needs pactl (Debian: pulseaudio-utils).
    """


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _portaudio_name(spec: int | str | None, kind: str) -> str | None:
    """The PortAudio device name a config value picks (None: PortAudio's default)."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec.strip().casefold() in ec.SERVER_DEVICES:
        return spec
    from voiced.audio.capture import DeviceError, find_device

    try:
        return find_device(spec, "input" if kind == "input" else "output").name
    except DeviceError:
        return str(spec)


def route_of(settings: Any, state: ec.ServerState) -> ec.Route:
    """Where ``voiced run`` with ``settings`` records from and plays to on the server."""
    return ec.voiced_route(
        _portaudio_name(settings.audio.input_device, "input"),
        _portaudio_name(settings.audio.output_device, "output"),
        state,
        echo_cancel_key=settings.audio.echo_cancel,
    )


def describe_route(route: ec.Route) -> str:
    source = route.source or "a device outside the sound server"
    sink = route.sink or "a device outside the sound server"
    mark_in = " (cancelled)" if route.source == ec.SOURCE_NAME else ""
    mark_out = " (cancelled)" if route.sink == ec.SINK_NAME else ""
    return f"listens on {source}{mark_in}, plays to {sink}{mark_out}"


@echo_cancel.command("on")
@click.option(
    "--mic",
    metavar="SOURCE",
    help="Microphone to clean (a source name from "
    "`pactl list short sources`; default: the current default source).",
)
@click.option(
    "--speaker",
    metavar="SINK",
    help="Speaker voiced talks through (a sink name "
    "from `pactl list short sinks`; default: the current default sink).",
)
@click.option(
    "--keep-defaults",
    is_flag=True,
    help="Do not make the pair the default source "
    "and sink (then set audio.echo_cancel: true so that voiced uses it).",
)
@click.pass_obj
def on(app: Any, mic: str | None, speaker: str | None, keep_defaults: bool) -> None:
    """Load the echo canceller (once) and make it the default source and sink."""
    try:
        module, created = ec.enable(mic, speaker, make_default=not keep_defaults)
    except ec.SoundServerError as exc:
        raise _fail(exc) from None
    verb = "loaded" if created else "already loaded"
    click.echo(
        f"echo cancel on ({verb}, module {module.module}): {ec.SOURCE_NAME} cleans "
        f"{module.source_master}, {ec.SINK_NAME} plays to {module.sink_master}"
    )
    if keep_defaults:
        click.echo(
            "the defaults are unchanged: set audio.echo_cancel: true in the config so that "
            "`voiced run` records from and plays to the pair",
            err=True,
        )
    else:
        click.echo(
            f"{ec.SOURCE_NAME} and {ec.SINK_NAME} are now the default source and sink; "
            "voiced uses them with audio.input_device and audio.output_device left at null "
            "(restart a running `voiced run`)",
            err=True,
        )


@echo_cancel.command("off")
@click.pass_obj
def off(app: Any) -> None:
    """Unload voiced's echo canceller; nothing else is touched."""
    try:
        removed = ec.disable()
    except ec.SoundServerError as exc:
        raise _fail(exc) from None
    if not removed:
        click.echo("echo cancel was not on")
        return
    first = removed[0]
    click.echo(
        f"echo cancel off (unloaded module {', '.join(str(m.module) for m in removed)}); "
        f"the microphone is {first.source_master} again, the speaker {first.sink_master}"
    )


@echo_cancel.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def status(app: Any, as_json: bool) -> None:
    """Whether the echo canceller is loaded, over what, and whether voiced uses it.

    Exits 0 when it is loaded, 3 when it is not.
    """
    settings = app.settings()
    try:
        state = ec.status()
    except ec.SoundServerError as exc:
        raise _fail(exc) from None
    route = route_of(settings, state)
    module = state.echo_cancel
    if as_json:
        click.echo(
            json.dumps(
                {
                    "on": state.on,
                    "server": state.server,
                    "module": module.module if module else None,
                    "source": ec.SOURCE_NAME if module else None,
                    "sink": ec.SINK_NAME if module else None,
                    "source_master": module.source_master if module else None,
                    "sink_master": module.sink_master if module else None,
                    "default_source": state.default_source,
                    "default_sink": state.default_sink,
                    "voiced_source": route.source,
                    "voiced_sink": route.sink,
                    "voiced_cancelled": route.cancelled and state.on,
                }
            )
        )
    else:
        if module is None:
            click.echo(f"echo cancel: off ({state.server})")
        else:
            click.echo(f"echo cancel: on (module {module.module}, {state.server})")
            click.echo(f"microphone: {module.source_master} -> {ec.SOURCE_NAME}")
            click.echo(f"speaker: {ec.SINK_NAME} -> {module.sink_master}")
        click.echo(f"defaults: source {state.default_source}, sink {state.default_sink}")
        click.echo(f"voiced: {describe_route(route)}")
    if not state.on:
        raise SystemExit(STATUS_OFF_EXIT)
