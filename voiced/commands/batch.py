"""The batch behind ``voiced transcribe``: files and folders, worker processes, resuming, Ctrl-C.

Each worker process loads its own model once and transcribes whole files; results come back
to the main process, which prints them in order (without -o), counts them, draws one
progress bar over the batch and ends with a summary line. Outputs are written by the workers,
each file atomically, so an interrupted batch leaves finished outputs and no partial file;
``--skip-existing`` then resumes it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from voiced.speech import formats

log = logging.getLogger(__name__)

# What a folder is searched for without --glob: the audio and video files ffmpeg reads.
AUDIO_SUFFIXES = frozenset(
    ".wav .mp3 .flac .ogg .oga .opus .m4a .aac .wma .aiff .aif .amr .webm .mp4 .mkv .mov "
    ".g722 .au .caf .spx".split()
)


@dataclass(frozen=True)
class Item:
    """One input file and the name its outputs get under -o (without the suffix)."""

    index: int
    path: Path
    name: Path


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable."""

    settings_json: str
    word_timestamps: bool
    translate: bool
    language_per_segment: bool
    channel: str
    speakers: str
    speaker_names: str | None
    formats: tuple[str, ...]
    output_dir: Path | None
    headers: bool  # several files to stdout: "==> FILE <==" before each


@dataclass(frozen=True)
class Outcome:
    index: int
    path: Path
    error: str | None = None
    seconds: float = 0.0  # audio transcribed
    text: str | None = None  # for stdout
    stopped: bool = False  # interrupted before its outputs were written
    skipped: bool = False  # --skip-existing: its outputs are up to date


class InputError(Exception):
    """A command-line path that names no usable input (one error line, exit 1)."""


def expand(paths: tuple[Path, ...], glob: str | None) -> tuple[list[Item], list[tuple[Path, str]]]:
    """Files to transcribe, in order, and (path, reason) for arguments that give none.

    A file argument is taken as it is (and named by its file name under -o); a folder is
    searched recursively for ``glob`` (default: audio suffixes) and each file found is named
    by its path relative to that folder, so ``a/talk.mp3`` and ``b/talk.mp3`` never collide.
    """
    items: list[Item] = []
    problems: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_dir():
            items.append(Item(len(items), path, Path(path.name)))
            continue
        found = sorted(_search(path, glob))
        if not found:
            what = f"matching {glob!r}" if glob else "audio files"
            problems.append((path, f"is a directory with no {what}"))
        for file in found:
            items.append(Item(len(items), file, file.relative_to(path)))
    return items, problems


def _search(folder: Path, glob: str | None) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            if name.startswith("."):
                continue
            if glob is not None:
                if path.match(glob) or Path(name).match(glob):
                    yield path
            elif path.suffix.lower() in AUDIO_SUFFIXES:
                yield path


def _stem_targets(item: Item, job: Job) -> list[Path]:
    """DIR/<relative name without its suffix>.<format> for each format."""
    assert job.output_dir is not None
    base = job.output_dir / item.name.with_suffix("")
    return [base.with_name(f"{base.name}.{fmt}") for fmt in job.formats]


def probe_seconds(path: Path) -> float:
    """How long a file plays, from its header (0 when unknown or unreadable)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration:
                return container.duration / 1_000_000
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # anything unreadable is reported when it is decoded
        return 0.0
    return 0.0


def up_to_date(item: Item, job: Job) -> bool:
    """Every output exists and is newer than the input (--skip-existing)."""
    try:
        source = item.path.stat().st_mtime
        return all(t.stat().st_mtime >= source for t in _stem_targets(item, job))
    except OSError:
        return False


# -- one process's work ----------------------------------------------------------------------

_engine = None
_stop = False


def _request_stop(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def stopping() -> bool:
    return _stop


def load_engine(job: Job, threads: int | None = None):
    """This process's model (one per process, loaded on first use)."""
    global _engine
    if _engine is None:
        from voiced.config import Settings
        from voiced.speech.stt import SpeechToText

        settings = Settings.model_validate_json(job.settings_json)
        if threads:
            settings = settings.model_copy(
                update={"stt": settings.stt.model_copy(update={"threads": threads})}
            )
        _engine = SpeechToText.from_settings(
            settings.stt,
            vad=settings.vad,
            word_timestamps=job.word_timestamps,
            translate=job.translate,
            language_per_segment=job.language_per_segment,
            parallel_chunks=True,
        )
    return _engine


def set_engine(engine) -> None:
    global _engine
    _engine = engine


def _worker_init(job: Job, threads: int) -> None:
    signal.signal(signal.SIGINT, _request_stop)
    load_engine(job, threads)


def work(item: Item, job: Job, on_progress: Callable[[float], None] | None = None) -> Outcome:
    """Transcribe one file and write its outputs (or return its text for stdout)."""
    from voiced.decode import DecodeError
    from voiced.speech.files import SpeakerError, transcribe_path
    from voiced.speech.models import atomic_output
    from voiced.speech.stt import TranscriptionAborted

    if _stop:
        return Outcome(item.index, item.path, stopped=True)
    stt = load_engine(job)
    try:
        result = transcribe_path(
            stt,
            item.path,
            channel=job.channel,  # type: ignore[arg-type]
            speakers=job.speakers,  # type: ignore[arg-type]
            names=job.speaker_names,
            on_progress=on_progress,
            abort=stopping,
        )
    except TranscriptionAborted:
        return Outcome(item.index, item.path, stopped=True)
    except (DecodeError, SpeakerError) as exc:
        return Outcome(item.index, item.path, error=str(exc))
    except Exception as exc:  # a decoder bug on one odd file must not end the batch
        log.debug("decoding %s failed", item.path, exc_info=True)
        return Outcome(item.index, item.path, error=f"cannot decode ({type(exc).__name__}: {exc})")
    if _stop:
        return Outcome(item.index, item.path, stopped=True)
    if job.output_dir is None:
        header = ""
        if job.headers:
            found = f" [language: {result.language}]" if stt.language == "auto" else ""
            header = f"==> {item.path} <=={found}\n"
        text = header + formats.render(job.formats[0], result, item.path)
        return Outcome(item.index, item.path, seconds=result.duration, text=text)
    for chosen, target in zip(job.formats, _stem_targets(item, job), strict=True):
        try:
            with atomic_output(target) as out:
                out.write(formats.render(chosen, result, item.path).encode("utf-8"))
        except OSError as exc:
            return Outcome(item.index, item.path, error=f"{target}: cannot write: {exc.strerror}")
        log.info("wrote %s", target)
    return Outcome(item.index, item.path, seconds=result.duration)


# -- the batch -------------------------------------------------------------------------------


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    stopped: bool = False
    started: float = dataclasses.field(default_factory=time.monotonic)

    def summary(self, total: int) -> str:
        wall = time.monotonic() - self.started
        speed = f", {self.seconds / wall:.1f}x real time" if wall > 0 and self.seconds else ""
        state = "interrupted" if self.stopped else "done"
        left = total - self.done - self.failed - self.skipped
        parts = [f"{self.done} transcribed", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (outputs up to date)")
        if self.stopped:
            parts.append(f"{left} not started")
        return (
            f"voiced: {state}: {total} files: {', '.join(parts)}; "
            f"{_span(self.seconds)} of audio in {_span(wall)}{speed}"
        )


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run(
    items: list[Item],
    job: Job,
    jobs: int,
    threads: int,
    emit: Callable[[Outcome], None],
    bar,
) -> Tally:
    """Transcribe ``items`` with ``jobs`` worker processes (in this process for 1).

    ``emit`` gets every outcome in input order. Ctrl-C (SIGINT) stops: no new file starts,
    the files in progress are abandoned (their outputs never written), finished ones stay.
    """
    global _stop
    tally = Tally()
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame: object) -> None:
        global _stop
        _stop = True
        for child in multiprocessing.active_children():  # `kill -INT` reaches only this one
            with contextlib.suppress(OSError, TypeError):
                os.kill(child.pid, signal.SIGINT)  # type: ignore[arg-type]

    signal.signal(signal.SIGINT, interrupted)
    pending: dict[int, Outcome] = {}
    next_index = 0

    lengths = {item.index: probe_seconds(item.path) for item in items} if bar is not None else {}
    if bar is not None:
        bar.reset(total=round(sum(lengths.values()), 1))
    counted = 0.0  # audio seconds of the files finished, for the bar

    def record(outcome: Outcome) -> None:
        nonlocal next_index, counted
        if outcome.stopped:
            tally.stopped = True
        elif outcome.error is not None:
            tally.failed += 1
        elif outcome.skipped:
            tally.skipped += 1
        else:
            tally.done += 1
            tally.seconds += outcome.seconds
        pending[outcome.index] = outcome
        while next_index in pending:
            emit(pending.pop(next_index))
            next_index += 1
        if bar is not None:
            counted += lengths.get(outcome.index, 0.0)
            bar.n = round(counted, 1)
            finished = tally.done + tally.failed + tally.skipped
            bar.set_description_str(f"{finished}/{len(items)} files", refresh=False)
            bar.refresh()

    def advance(done: float) -> None:
        if bar is not None:
            bar.n = round(counted + done, 1)
            bar.refresh()

    try:
        todo = []
        for item in items:
            if job.output_dir is not None and _skip(item, job):
                record(Outcome(item.index, item.path, skipped=True))
            else:
                todo.append(item)
        if jobs <= 1:
            for item in todo:
                if _stop:
                    break
                record(work(item, job, advance))
        else:
            _run_pool(todo, job, jobs, threads, record)
    finally:
        signal.signal(signal.SIGINT, previous)
    tally.stopped = tally.stopped or _stop
    _stop = False
    return tally


_skip_existing = False


def set_skip_existing(value: bool) -> None:
    global _skip_existing
    _skip_existing = value


def _skip(item: Item, job: Job) -> bool:
    return _skip_existing and up_to_date(item, job)


def _run_pool(
    items: list[Item], job: Job, jobs: int, threads: int, record: Callable[[Outcome], None]
) -> None:
    context = multiprocessing.get_context("forkserver")
    queue = iter(items)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(job, threads)
    ) as pool:
        running: dict[concurrent.futures.Future, Item] = {}

        def submit() -> None:
            while len(running) < 2 * jobs and not _stop:
                item = next(queue, None)
                if item is None:
                    return
                running[pool.submit(work, item, job)] = item

        submit()
        while running:
            finished, _ = concurrent.futures.wait(
                running, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                item = running.pop(future)
                try:
                    record(future.result())
                except Exception as exc:  # a worker that died (killed, out of memory)
                    if _stop:
                        record(Outcome(item.index, item.path, stopped=True))
                    else:
                        record(Outcome(item.index, item.path, error=f"worker failed: {exc}"))
            if _stop:
                for future in [f for f in running if f.cancel()]:
                    item = running.pop(future)
                    record(Outcome(item.index, item.path, stopped=True))
            submit()


# Files per worker before a second worker pays for its start (a process and a model, about
# 1-2 s). Measured on 2 cores, 40 files of 2-5 s: -j 2 took 8.1 s, -j 1 10.0 s (at a
# higher machine load 10.7 against 18.2 s).
_FILES_PER_WORKER = 8
_MAX_DEFAULT_JOBS = 4  # each worker holds a model (tiny.en ~200 MiB, base ~300 MiB)


def default_jobs(files: int) -> int:
    """-j when not given: one worker per core for big batches, one process for a few files."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_DEFAULT_JOBS, files // _FILES_PER_WORKER))


def split_threads(jobs: int, threads: int | None) -> int:
    """Threads per worker: as given, else the cores shared out (jobs x threads <= cores)."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))
