"""The transcript journal: what voiced heard (and, for the daemon, said), on disk.

Layout: one JSON object per line in daily files ``YYYY-MM-DD.jsonl`` (the local date of
the record's start) under :func:`voiced.paths.transcripts_dir`; the folder is 0700, the
files 0600. Every record is written with one ``write`` and then ``fsync``-ed, so after a
crash or ``kill -9`` at most the last line of a file is incomplete; readers skip it (with a
warning) and the next append starts on a fresh line. What a full disk took of a refused
record is cut off again, so the retry leaves no broken line behind. Files older than
``transcripts.retention_days`` are deleted when a writer opens the journal
(:meth:`Journal.from_settings`: ``voiced listen``, ``voiced run``) and on the first append of
each day; readers (``voiced transcripts``) delete nothing.

A record always has:

``id``       sortable unique id (start time + random suffix)
``start``    ISO 8601 start time with the local UTC offset
``kind``     what produced it: ``dictation`` (``voiced listen``) or ``turn`` (``voiced run``)
``text``     what was heard (the user's words; may be empty)

and may have ``end``, ``source`` (e.g. the input device) and any JSON-serialisable extras:
the daemon adds ``user``, ``assistant``, ``tool_calls``, ``error`` and ``timings``
(milliseconds). ``voiced listen`` and the daemon add ``speech_prob``: the speech gate's
verdict (0-1) on the audio the text came from, or null when no gate ran. Readers must ignore
keys they do not know.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from voiced import paths

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def now() -> dt.datetime:
    """The current local time, timezone-aware."""
    return dt.datetime.now().astimezone()


def new_id(start: dt.datetime) -> str:
    return f"{start.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


def make_record(
    kind: str,
    text: str,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A journal record with ``id``, ``start``, ``kind``, ``text`` (+ ``end`` and extras)."""
    start = (start or now()).astimezone()
    record: dict[str, Any] = {
        "id": new_id(start),
        "start": start.isoformat(timespec="milliseconds"),
        "kind": kind,
        "text": text,
    }
    if end is not None:
        record["end"] = end.astimezone().isoformat(timespec="milliseconds")
    record.update(extra)
    return record


def _day_of(record: Mapping[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(record["start"]).date()


def _day_from_name(path: Path) -> dt.date | None:
    if path.suffix != SUFFIX:
        return None
    try:
        return dt.date.fromisoformat(path.stem)
    except ValueError:
        return None


class Journal:
    """Append and read transcript records; safe to share between threads."""

    def __init__(self, directory: Path | None = None, retention_days: int = 30) -> None:
        self.directory = directory if directory is not None else paths.transcripts_dir()
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._pruned_on: dt.date | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, prune: bool = True) -> Journal:
        """A journal configured by ``settings.transcripts`` (a :class:`voiced.config.Settings`).

        With ``prune`` (for writers) it deletes files older than the configured retention at
        once, so a session that never appends a record still honours the retention.
        """
        journal = cls(retention_days=settings.transcripts.retention_days)
        if not prune:
            return journal
        with journal._lock:
            try:
                journal._prune_once_a_day()
            except OSError as exc:  # not a reason to stop listening; appends retry tomorrow
                log.warning("cannot prune old transcripts in %s: %s", journal.directory, exc)
        return journal

    def path_for(self, day: dt.date) -> Path:
        return self.directory / f"{day.isoformat()}{SUFFIX}"

    # -- writing --------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> Path:
        """Write one record durably to its day's file; returns that file.

        Raises ``ValueError`` for a record without ``id``/``start``/``kind``/``text`` or one
        that is not JSON-serialisable, and ``OSError`` when the disk refuses; nothing already
        in the journal is touched in either case.
        """
        missing = [key for key in ("id", "start", "kind", "text") if key not in record]
        if missing:
            raise ValueError(f"transcript record lacks {', '.join(missing)}")
        try:
            day = _day_of(record)
            line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"transcript record cannot be stored: {exc}") from None
        data = line.encode("utf-8")
        with self._lock:
            paths.ensure_private_dir(self.directory)
            self._prune_once_a_day()
            path = self.path_for(day)
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                if not created and not _ends_with_newline(path):
                    # A previous writer died mid-line: close that line off, keep ours whole.
                    data = b"\n" + data
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError:
                    # A full disk takes part of a line: take it back, so the retry that
                    # follows is not preceded by a broken line every reader warns about.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)
        return path

    def add(self, kind: str, text: str, **fields: Any) -> dict[str, Any]:
        """Build a record with :func:`make_record`, append it and return it."""
        record = make_record(kind, text, **fields)
        self.append(record)
        return record

    # -- retention ------------------------------------------------------------------------

    def _prune_once_a_day(self) -> None:
        today = dt.date.today()
        if self._pruned_on != today:
            self._pruned_on = today
            self._prune(today)

    def prune(self, today: dt.date | None = None) -> list[Path]:
        """Delete daily files older than ``retention_days`` (0 keeps everything)."""
        with self._lock:
            return self._prune(today or dt.date.today())

    def _prune(self, today: dt.date) -> list[Path]:
        if self.retention_days <= 0 or not self.directory.is_dir():
            return []
        oldest_kept = today - dt.timedelta(days=self.retention_days - 1)
        removed = []
        for path, day in self._files():
            if day < oldest_kept:
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
        if removed:
            log.info("removed %d transcript file(s) older than %s", len(removed), oldest_kept)
        return removed

    # -- reading --------------------------------------------------------------------------

    def _files(self) -> list[tuple[Path, dt.date]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            day = _day_from_name(path)
            if day is not None and path.is_file():
                found.append((path, day))
        return sorted(found, key=lambda item: item[1])

    def days(self) -> list[dt.date]:
        """Days that have a transcript file, oldest first."""
        return [day for _, day in self._files()]

    def read_day(self, day: dt.date) -> list[dict[str, Any]]:
        """The complete records of one day (torn lines are skipped)."""
        return list(read_file(self.path_for(day)))

    def records(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> Iterator[dict[str, Any]]:
        """All complete records, oldest first, optionally limited to a range of days."""
        for path, day in self._files():
            if (since and day < since) or (until and day > until):
                continue
            yield from read_file(path)

    def search(self, text: str) -> Iterator[dict[str, Any]]:
        """Records whose text fields contain ``text`` (case-insensitive)."""
        needle = text.casefold()
        for record in self.records():
            haystack = " ".join(
                str(record.get(key) or "") for key in ("text", "user", "assistant")
            ).casefold()
            if needle in haystack:
                yield record


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """Records in one journal file; lines that are not complete JSON objects are skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            where = "last line" if number == len(lines) else f"line {number}"
            log.warning("%s: skipping incomplete record on %s", path, where)
            continue
        yield record


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        try:
            handle.seek(-1, os.SEEK_END)
        except OSError:
            return True  # empty file
        return handle.read(1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
