"""``voiced devices``: the audio inputs and outputs PortAudio sees, with default marks.

The default device is often the wrong one (HDMI, a webcam): this list shows what
``audio.input_device`` / ``audio.output_device`` (an index or part of a name) can pick.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from voiced.audio.capture import Device, DeviceError, list_devices


def _marks(device: Device) -> str:
    marks = []
    if device.default_input:
        marks.append("default input")
    if device.default_output:
        marks.append("default output")
    return f"  ({', '.join(marks)})" if marks else ""


def format_table(devices: list[Device]) -> str:
    """Devices as an aligned table; ``>`` marks the default input, ``<`` the default output."""
    rows = [("", "#", "in", "out", "rate", "host API", "name")]
    for d in devices:
        mark = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
        rows.append(
            (
                mark,
                str(d.index),
                str(d.input_channels),
                str(d.output_channels),
                f"{d.default_samplerate:.0f}",
                d.hostapi,
                d.name + _marks(d),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in (1, 2, 3, 4) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
@click.option(
    "--kind",
    type=click.Choice(["all", "input", "output"]),
    default="all",
    show_default=True,
    help="Only devices that can record (input) or play (output).",
)
@click.pass_obj
def devices(app: Any, as_json: bool, kind: str) -> None:
    """List audio devices: index, channels, rate, host API and name.

    Pick one with audio.input_device / audio.output_device in the config, or
    --input-device / --output-device on a command, by index or by part of its name.
    """
    try:
        found = list_devices()
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    if kind == "input":
        found = [d for d in found if d.input_channels > 0]
    elif kind == "output":
        found = [d for d in found if d.output_channels > 0]
    if as_json:
        for device in found:
            click.echo(json.dumps(asdict(device)))
        return
    if not found:
        click.echo("no audio devices found (is a sound server running?)", err=True)
        return
    click.echo(format_table(found))
