"""The audit log: one JSON line per tool call, whatever its outcome.

Every call that reaches :meth:`voiced.brain.tools.registry.ToolRegistry.call` (unknown tools and
invalid arguments included) ends in the registry's ``on_call`` hook; :class:`AuditLog` is that
hook. A record holds the time, where the call came from (chat, daemon, cli), the tool, its
arguments (long strings shortened), the decision (allowed, confirmed, declined, refused,
invalid, unknown), the reason, the duration, the result's size, whether it was truncated, and
the error. A call abandoned at its time limit gets a second record, ``late``: true, when it
really ends (stopped, or done after all). The file (``paths.audit_log_path()``) is created
0600 in a 0700 folder and only ever appended to, one ``write`` per record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voiced import paths
from voiced.brain.tools.registry import ToolOutcome

log = logging.getLogger(__name__)

MAX_STRING_CHARS = 200
MAX_ARGUMENTS_CHARS = 4000
MAX_ERROR_CHARS = 500


def _shorten(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with long strings cut and odd types as text."""
    if isinstance(value, str):
        if len(value) <= MAX_STRING_CHARS:
            return value
        return f"{value[:MAX_STRING_CHARS]}… [{len(value)} characters]"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 4:
        return _shorten(repr(value))
    if isinstance(value, dict):
        return {str(key)[:100]: _shorten(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shorten(item, depth + 1) for item in value[:50]]
    return _shorten(repr(value))


def record_for(outcome: ToolOutcome, source: str = "") -> dict[str, Any]:
    """The audit record of one call."""
    arguments = _shorten(outcome.arguments)
    encoded = json.dumps(arguments, ensure_ascii=False)
    if len(encoded) > MAX_ARGUMENTS_CHARS:
        arguments = f"{encoded[:MAX_ARGUMENTS_CHARS]}… [{len(encoded)} characters]"
    error = outcome.error
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "…"
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "source": source,
        "pid": os.getpid(),
        "tool": outcome.name[:200],
        "arguments": arguments,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "ok": outcome.ok,
        "error": error,
        "duration_ms": round(outcome.duration_s * 1000, 1),
        "result_chars": outcome.result_chars,
        "truncated": outcome.truncated,
        "late": outcome.late,
    }


class AuditLog:
    """Appends one record per tool call to the audit log; use it as the ``on_call`` hook."""

    def __init__(self, path: Path | None = None, *, source: str = "") -> None:
        self.path = path or paths.audit_log_path()
        self.source = source
        self._lock = threading.Lock()

    def __call__(self, outcome: ToolOutcome) -> None:
        self.append(record_for(outcome, self.source))

    def append(self, record: dict[str, Any]) -> None:
        line = _encode(record)
        with self._lock:
            paths.ensure_private_dir(self.path.parent)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, line)
            finally:
                os.close(fd)


def _encode(record: dict[str, Any]) -> bytes:
    """One line of UTF-8 for ``record``, whatever text is in it.

    A lone surrogate (a file name that is not UTF-8, or ``"\\udc80"`` in the model's JSON)
    cannot be encoded; written as the JSON escape ``\\udc80`` it still reads back the same.
    """
    try:
        text = json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError) as exc:
        fallback = {key: record.get(key) for key in ("time", "source", "pid", "tool", "decision")}
        fallback["unrecordable"] = f"{type(exc).__name__}: {exc}"
        text = json.dumps(fallback, ensure_ascii=False, default=repr)
    return (text + "\n").encode("utf-8", errors="backslashreplace")


def read_records(path: Path | None = None) -> Iterator[dict[str, Any]]:
    """The records in the audit log, oldest first; a torn or foreign line is skipped."""
    path = path or paths.audit_log_path()
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: not a JSON record; skipped", path, number)
                continue
            if isinstance(record, dict):
                yield record


__all__ = ["AuditLog", "read_records", "record_for"]
