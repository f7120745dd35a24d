"""The ``time`` tool group: the current date and time, and days until a date. Harmless."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voiced.brain.tools.registry import Tool, ToolError
from voiced.config import ToolsSettings


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or not name.strip() or name.strip().lower() == "local":
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin"
        ) from None


def current_time(timezone: str | None = None) -> str:
    """Get the current date and time, with the time zone and UTC offset.

    Args:
        timezone: IANA time zone name such as Europe/Berlin or America/New_York; leave it out
            for this computer's local time.
    """
    zone = _zone(timezone)
    now = datetime.now(zone).astimezone(zone) if zone else datetime.now().astimezone()
    offset = now.strftime("%z")
    label = timezone.strip() if zone else (now.tzname() or "local time")
    return f"{now:%A} {now.day} {now:%B %Y}, {now:%H:%M:%S} {label} (UTC{offset[:3]}:{offset[3:]})"


def days_until(day: str) -> str:
    """Count the days from today until a date (negative if it is in the past).

    Args:
        day: The date in YYYY-MM-DD form, for example 2026-12-24.
    """
    try:
        target = date.fromisoformat(day.strip())
    except ValueError:
        raise ToolError(f"{day!r} is not a date in YYYY-MM-DD form") from None
    today = date.today()
    delta = (target - today).days
    when = f"{target:%A} {target.day} {target:%B %Y}"
    if delta == 0:
        return f"{when} is today"
    if delta > 0:
        return (
            f"{delta} day{'s' if delta != 1 else ''} from today ({today.isoformat()}) until {when}"
        )
    return f"{when} was {-delta} day{'s' if delta != -1 else ''} ago (today is {today.isoformat()})"


def tools(settings: ToolsSettings) -> list[Tool]:
    return [
        Tool.from_function(current_time, group="time"),
        Tool.from_function(days_until, group="time"),
    ]
