"""The transcript journal: durability, permissions, daily files, retention, torn lines."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from voiced import paths, transcripts
from voiced.cli import main
from voiced.config import Settings, TranscriptsSettings
from voiced.transcripts import Journal, _ends_with_newline, make_record, read_file

LOCAL = dt.datetime.now().astimezone().tzinfo


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_records_land_in_private_daily_files(voiced_home: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the permissions
    try:
        journal = Journal()
        today = dt.date.today()
        yesterday = today - dt.timedelta(days=1)
        first = journal.add("dictation", "hello there", start=at(yesterday, 23))
        second = journal.add("dictation", "good morning", start=at(today, 8))
    finally:
        os.umask(old_umask)
    directory = paths.transcripts_dir()
    assert directory == voiced_home / "transcripts"
    assert mode(directory) == 0o700
    files = sorted(p.name for p in directory.iterdir())
    assert files == [f"{yesterday.isoformat()}.jsonl", f"{today.isoformat()}.jsonl"]
    assert all(mode(directory / name) == 0o600 for name in files)
    assert journal.days() == [yesterday, today]
    assert journal.read_day(yesterday) == [first]
    assert [r["text"] for r in journal.records()] == ["hello there", "good morning"]
    assert [r["text"] for r in journal.records(since=today)] == ["good morning"]
    # One JSON object per line, readable by any tool.
    lines = (directory / files[1]).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [second]


def test_a_loose_existing_folder_is_made_private(voiced_home: Path) -> None:
    directory = voiced_home / "transcripts"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    Journal().add("dictation", "x")
    assert mode(directory) == 0o700


def test_record_fields_and_daemon_extras_round_trip() -> None:
    journal = Journal()
    start = dt.datetime.now().astimezone()
    record = make_record(
        "turn",
        "computer what time is it",
        start=start,
        end=start + dt.timedelta(seconds=2),
        user="what time is it",
        assistant="It is ten past two.",
        tool_calls=[{"name": "time.now", "arguments": {}, "decision": "auto", "result": "14:10"}],
        error=None,
        timings={"endpoint_wait_ms": 720, "stt_ms": 180, "total_ms": 1400},
    )
    journal.append(record)
    (stored,) = journal.records()
    assert stored == record
    assert dt.datetime.fromisoformat(stored["start"]) == start.replace(
        microsecond=start.microsecond // 1000 * 1000
    )
    assert stored["id"] != make_record("turn", "x", start=start)["id"]
    assert [r["id"] for r in journal.search("TEN PAST")] == [record["id"]]
    assert list(journal.search("nothing like this")) == []


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"kind": "dictation", "text": "x"}, "lacks id, start"),
        ({**make_record("dictation", "x"), "extra": {1, 2}}, "cannot be stored"),
        ({**make_record("dictation", "x"), "score": float("nan")}, "cannot be stored"),
        ({**make_record("dictation", "x"), "start": "yesterday"}, "cannot be stored"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_lost(record: dict, message: str) -> None:
    journal = Journal()
    kept = journal.add("dictation", "keep me")
    before = journal.path_for(dt.date.today()).read_bytes()
    with pytest.raises(ValueError, match=message):
        journal.append(record)
    assert journal.path_for(dt.date.today()).read_bytes() == before
    assert list(journal.records()) == [kept]


def test_retention_deletes_only_old_daily_files() -> None:
    today = dt.date(2026, 3, 10)
    journal = Journal(retention_days=7)
    for days_ago in (0, 6, 7, 30):
        journal.append(
            make_record("dictation", f"{days_ago}", start=at(today - dt.timedelta(days_ago)))
        )
    unrelated = journal.directory / "notes.txt"
    unrelated.write_text("not a transcript")
    odd = journal.directory / "2026-13-99.jsonl"
    odd.write_text("")
    removed = journal.prune(today)
    assert sorted(p.name for p in removed) == ["2026-02-08.jsonl", "2026-03-03.jsonl"]
    assert [r["text"] for r in journal.records()] == ["6", "0"]
    assert unrelated.exists() and odd.exists()


def test_retention_zero_keeps_everything() -> None:
    journal = Journal(retention_days=0)
    journal.append(make_record("dictation", "ancient", start=at(dt.date(2001, 1, 1))))
    assert journal.prune(dt.date(2026, 1, 1)) == []
    assert [r["text"] for r in journal.records()] == ["ancient"]


def test_appending_prunes_old_files() -> None:
    old_day = dt.date.today() - dt.timedelta(days=40)
    Journal(retention_days=0).append(make_record("dictation", "old", start=at(old_day)))
    journal = Journal(retention_days=30)
    journal.add("dictation", "new")
    assert [r["text"] for r in journal.records()] == ["new"]


def old_and_recent_files(retention_days: int) -> tuple[Path, Path]:
    """One daily file just past ``retention_days`` and one just inside it."""
    writer = Journal(retention_days=0)
    today = dt.date.today()
    old = writer.append(
        make_record("dictation", "old", start=at(today - dt.timedelta(days=retention_days)))
    )
    recent = writer.append(
        make_record("dictation", "recent", start=at(today - dt.timedelta(days=retention_days - 1)))
    )
    return old, recent


def test_opening_a_configured_journal_prunes_old_files() -> None:
    old, recent = old_and_recent_files(7)
    settings = Settings(transcripts=TranscriptsSettings(retention_days=7))
    journal = Journal.from_settings(settings)
    assert not old.exists() and recent.exists()
    assert [r["text"] for r in journal.records()] == ["recent"]
    old, recent = old_and_recent_files(7)
    Journal.from_settings(settings, prune=False)  # as `voiced transcripts` reads it
    assert old.exists() and recent.exists()


def test_a_failed_prune_on_opening_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old, _ = old_and_recent_files(7)

    def refuse(path: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "unlink", refuse)
    Journal.from_settings(Settings(transcripts=TranscriptsSettings(retention_days=7)))
    assert old.exists()
    assert any("Permission denied" in r.getMessage() for r in caplog.records)


class ListenerStub:
    """Stands in for the microphone loop: `voiced listen` hears nothing and stops."""

    journals: ClassVar[list[Journal | None]] = []

    def __init__(self, settings: Settings, stt: object, *, fmt: str, journal: Journal | None):
        ListenerStub.journals.append(journal)

    def run(self) -> None:
        pass


def listen_with_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml: str):
    from voiced.commands import listen

    monkeypatch.setattr(listen, "_load_stt", lambda settings: object())
    monkeypatch.setattr(listen, "Listener", ListenerStub)
    ListenerStub.journals.clear()
    config = tmp_path / "config.yaml"
    config.write_text(yaml)
    result = CliRunner().invoke(main, ["--config", str(config), "listen"])
    assert result.exit_code == 0, result.output
    (journal,) = ListenerStub.journals
    return journal


def test_listen_prunes_by_the_configured_retention_though_it_hears_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, recent = old_and_recent_files(3)
    journal = listen_with_config(tmp_path, monkeypatch, "transcripts:\n  retention_days: 3\n")
    assert journal is not None and journal.retention_days == 3
    assert not old.exists() and recent.exists()


def test_listen_keeps_no_journal_when_transcripts_are_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, recent = old_and_recent_files(3)
    yaml = "transcripts:\n  enabled: false\n  retention_days: 3\n"
    assert listen_with_config(tmp_path, monkeypatch, yaml) is None
    assert old.exists() and recent.exists()  # switched off: not written, not pruned either


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_clean() -> None:
    journal = Journal()
    first = journal.add("dictation", "first")
    path = journal.path_for(dt.date.today())
    with open(path, "ab") as handle:
        handle.write(b'{"id": "torn", "start": "2026-')  # what a killed writer leaves
    assert list(read_file(path)) == [first]
    second = journal.add("dictation", "second")
    assert list(journal.records()) == [first, second]
    assert len(path.read_bytes().splitlines()) == 3


def test_a_full_disk_leaves_no_part_of_the_refused_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal()
    first = journal.add("dictation", "first")
    path = journal.path_for(dt.date.today())

    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(transcripts, "_write_all", half_then_full)
        refused = make_record("dictation", "refused")
        with pytest.raises(OSError):
            journal.append(refused)
    assert path.read_bytes().endswith(b"\n")
    journal.append(refused)  # the daemon's retry, once there is space
    assert list(journal.records()) == [first, refused]
    assert "incomplete" not in caplog.text


BIG = 8_000_000
WRITER = r"""
import sys
from voiced.transcripts import Journal
journal = Journal()
size = int(sys.argv[1])
i = 0
while True:
    journal.add("dictation", f"record {i} " + "x" * size, run=int(sys.argv[2]), number=i)
    i += 1
"""


def test_sigkill_while_writing_never_corrupts_an_earlier_record() -> None:
    journal = Journal()
    path = journal.path_for(dt.date.today())
    torn = 0
    for run in range(6):
        size = BIG if run % 2 else 200
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(size), str(run)], env=os.environ.copy()
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > 0 and _runs_in(path) > run:
                break
            time.sleep(0.005)
        if run % 2:
            # Big records: aim the kill at a moment when a line is half written.
            while time.monotonic() < deadline and _ends_with_newline(path):
                pass
        else:
            time.sleep(0.01 * run)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        lines = path.read_bytes().split(b"\n")
        complete, last = lines[:-1], lines[-1]
        # At most one torn line per kill; every other line is exactly what its writer wrote,
        # and a record written after a torn line (number 0 of the next run) is never lost.
        assert sum(not _is_json(line) for line in complete) <= run
        records = list(read_file(path))
        assert records, "the writer never wrote a record"
        for record in records:
            expected_size = BIG if record["run"] % 2 else 200
            assert record["text"] == f"record {record['number']} " + "x" * expected_size
        # Within each run the numbers are consecutive from 0: no record vanished.
        for r in {record["run"] for record in records}:
            numbers = [record["number"] for record in records if record["run"] == r]
            assert numbers == list(range(len(numbers)))
        assert last == b"" or not _is_json(last)
        torn += last != b""
    assert {record["run"] for record in journal.records()} == set(range(6))
    assert torn >= 1, "no kill landed inside a write: the torn-line case was not exercised"


def _runs_in(path: Path) -> int:
    return len({record["run"] for record in read_file(path)})


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
