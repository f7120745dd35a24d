"""``voiced tools``: list the assistant's tools, call one by hand, read the audit log.

``voiced tools call`` goes through exactly the path the assistant's calls take
(:func:`voiced.brain.tools.policy.build_registry`): argument validation, the policy, confirmation,
time and output limits, and the audit log. Confirmation is asked on the terminal, given in
advance with ``--yes``, and declined when stdin is not a terminal. Anything but a successful
call exits 1 with the reason on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from voiced.audio.capture import list_devices
from voiced.brain.tools.policy import approve_all, build_registry, deny_all, terminal_confirm
from voiced.brain.tools.registry import Confirm, ConfirmationRequest, Tool


@click.group()
def tools() -> None:
    """List, call and audit the assistant's tools."""


def _describe(tool: Tool) -> str:
    lines = [f"{tool.name} ({tool.group}{', asks first' if tool.needs_confirmation else ''})"]
    lines.append(f"  {tool.description}")
    parameters = tool.schema["function"]["parameters"]
    required = set(parameters.get("required", []))
    for name, prop in parameters["properties"].items():
        kind = prop.get("type", "string")
        if kind == "array":
            kind = f"array of {prop.get('items', {}).get('type', 'string')}"
        if "enum" in prop:
            kind = " | ".join(str(value) for value in prop["enum"])
        need = "required" if name in required else "optional"
        lines.append(f"    {name} ({kind}, {need}): {prop.get('description', '')}")
    return "\n".join(lines)


@tools.command("list")
@click.option("--json", "as_json", is_flag=True, help="The tool schemas sent to the model.")
@click.pass_obj
def list_tools(app: Any, as_json: bool) -> None:
    """The tools of the enabled groups, with descriptions and argument schemas."""
    registry = build_registry(app.settings(), source="cli", audio_devices=list_devices)
    if as_json:
        click.echo(json.dumps(registry.schemas(), indent=2, ensure_ascii=False))
        return
    click.echo("\n".join(_describe(tool) for tool in registry.tools()))


def _confirmation(yes: bool) -> Confirm:
    if yes:
        return approve_all
    if sys.stdin.isatty():
        return terminal_confirm()

    def declined(request: ConfirmationRequest) -> bool:
        click.echo(f"{request.question} (no terminal to ask on; use --yes)", err=True)
        return deny_all(request)

    return declined


@tools.command("call")
@click.argument("name")
@click.option(
    "--args",
    "arguments",
    default="{}",
    show_default=True,
    metavar="JSON",
    help='The arguments as a JSON object, e.g. \'{"path": "~/notes.txt"}\'.',
)
@click.option("--yes", "-y", is_flag=True, help="Confirm a tool that asks first.")
@click.pass_obj
def call_tool(app: Any, name: str, arguments: str, yes: bool) -> None:
    """Call tool NAME as the assistant would, and print its result."""
    registry = build_registry(
        app.settings(), confirm=_confirmation(yes), source="cli", audio_devices=list_devices
    )
    # The raw text, as a model's arguments come: bad JSON is refused and audited there.
    outcome = registry.call(name, arguments)
    if outcome.ok:
        click.echo(outcome.result)
        return
    click.echo(f"voiced: {outcome.name}: {outcome.decision}: {outcome.error}", err=True)
    raise SystemExit(1)


@tools.command("audit")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The records as JSON lines.")
def audit(limit: int, as_json: bool) -> None:
    """The latest tool calls from the audit log."""
    from collections import deque

    from voiced.brain.tools.audit import read_records

    records = deque(read_records(), maxlen=limit)
    for record in records:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        arguments = json.dumps(record.get("arguments"), ensure_ascii=False)
        if len(arguments) > 120:
            arguments = arguments[:119] + "…"
        line = (
            f"{record.get('time', '?')} {record.get('source') or '-'} {record.get('tool')} "
            f"{arguments} -> {record.get('decision')}"
        )
        if record.get("error"):
            line += f": {record['error']}"
        if record.get("late"):
            line += " [how it ended, after its time limit]"
        click.echo(line)
