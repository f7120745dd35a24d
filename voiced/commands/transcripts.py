"""``voiced transcripts``: read the journal of what was heard and said.

``list`` (the default) shows the days on record, ``show DATE`` one day, ``search TEXT`` every
record mentioning TEXT, ``export --format txt|json`` everything (or a range of days) at once.
Records come from :mod:`voiced.transcripts`: dictation from ``voiced listen`` and turns of
``voiced run`` (user, assistant as spoken, tool calls, error, timings).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import click

from voiced.transcripts import Journal


def _journal(app: Any) -> Journal:
    return Journal.from_settings(app.settings(), prune=False)  # reading deletes nothing


def _parse_day(value: str) -> dt.date:
    today = dt.date.today()
    named = {"today": today, "yesterday": today - dt.timedelta(days=1)}
    if value.lower() in named:
        return named[value.lower()]
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD, today, yesterday)"
        ) from None


class _Day(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.date:
        if isinstance(value, dt.date):
            return value
        return _parse_day(str(value))


DAY = _Day()


def _time_of(record: dict[str, Any]) -> str:
    try:
        return dt.datetime.fromisoformat(record["start"]).strftime("%Y-%m-%d %H:%M:%S")
    except (KeyError, ValueError):
        return str(record.get("start", "?"))


def format_record(record: dict[str, Any]) -> str:
    """A record as a few readable lines."""
    when = _time_of(record)
    pad = " " * len(when)
    if record.get("kind") != "turn":
        return f"{when}  heard: {record.get('text', '')}"
    lines = [f"{when}  you: {record.get('user', record.get('text', ''))}"]
    for call in record.get("tool_calls") or []:
        arguments = json.dumps(call.get("arguments"), ensure_ascii=False)
        lines.append(
            f"{pad}  tool: {call.get('name')}({arguments}) {call.get('decision')}"
            f" -> {call.get('result', '')}"
        )
    if record.get("assistant"):
        cut = " [interrupted]" if record.get("interrupted") else ""
        lines.append(f"{pad}  voiced: {record['assistant']}{cut}")
    if record.get("error"):
        lines.append(f"{pad}  error: {record['error']}")
    timings = record.get("timings") or {}
    felt = timings.get("speech_end_to_first_audio_ms")
    if felt is not None:
        lines.append(
            f"{pad}  timing: first audio {felt} ms after you stopped,"
            f" {timings.get('total_ms')} ms in all"
        )
    elif timings.get("first_audio_ms") is not None:
        # Records from before speech_end_to_first_audio_ms: counted from the endpoint decision,
        # which came vad.silence_ms after the user stopped.
        lines.append(
            f"{pad}  timing: first audio {timings['first_audio_ms']} ms after the end of your"
            f" turn was decided, {timings.get('total_ms')} ms in all"
        )
    return "\n".join(lines)


def _write(records: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> int:
    count = 0
    if fmt == "json":
        items = list(records)
        out.write(json.dumps(items, ensure_ascii=False, indent=2) + "\n")
        return len(items)
    for record in records:
        if fmt == "jsonl":
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.write(format_record(record) + "\n")
        count += 1
    return count


@click.group(invoke_without_command=True)
@click.pass_context
def transcripts(ctx: click.Context) -> None:
    """Read what voiced heard and said (default: list the days on record)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_days)


@transcripts.command("list")
@click.pass_obj
def list_days(app: Any) -> None:
    """Days with transcripts, and how many records and turns each has."""
    journal = _journal(app)
    days = journal.days()
    if not days:
        click.echo(f"no transcripts yet in {journal.directory}", err=True)
        return
    for day in days:
        records = journal.read_day(day)
        turns = sum(1 for r in records if r.get("kind") == "turn")
        click.echo(f"{day.isoformat()}  {len(records):5d} records  {turns:5d} turns")


@transcripts.command()
@click.argument("day", type=DAY)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_obj
def show(app: Any, day: dt.date, as_json: bool) -> None:
    """Everything recorded on DAY (YYYY-MM-DD, today or yesterday)."""
    records = _journal(app).read_day(day)
    if not records:
        raise click.ClickException(f"no transcripts for {day.isoformat()}")
    _write(records, "jsonl" if as_json else "txt", sys.stdout)


@transcripts.command()
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_obj
def search(app: Any, text: str, as_json: bool) -> None:
    """Records whose words (yours or voiced's) contain TEXT; exit 1 when none do."""
    found = _write(_journal(app).search(text), "jsonl" if as_json else "txt", sys.stdout)
    if not found:
        click.echo(f"nothing matches {text!r}", err=True)
        raise SystemExit(1)


@transcripts.command()
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["txt", "json", "jsonl"]),
    default="txt",
    show_default=True,
    help="txt: readable; json: one JSON array; jsonl: one record per line.",
)
@click.option("--since", type=DAY, help="First day (YYYY-MM-DD).")
@click.option("--until", type=DAY, help="Last day (YYYY-MM-DD).")
@click.option(
    "-o", "--output", type=click.File("w", encoding="utf-8"), default="-", help="Output file."
)
@click.pass_obj
def export(
    app: Any, fmt: str, since: dt.date | None, until: dt.date | None, output: TextIO
) -> None:
    """All records (or those from --since to --until) in one go."""
    count = _write(_journal(app).records(since=since, until=until), fmt, output)
    click.echo(f"exported {count} record(s)", err=True)
