"""``voiced transcribe FILE...``: batch transcription, like whisper-cli.

Needs no sound card: nothing here imports an audio-device library.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

from voiced.speech import formats

log = logging.getLogger(__name__)

FORMAT_CHOICES = (*formats.FORMATS, "all")


@dataclass(frozen=True)
class _Plan:
    formats: tuple[str, ...]
    output_dir: Path | None


def _plan(items: list, fmt: str, output_dir: Path | None) -> _Plan:
    chosen = formats.FORMATS if fmt == "all" else (fmt,)
    if output_dir is None:
        if fmt == "all":
            raise click.UsageError("-f all writes several files: give an output folder with -o DIR")
        if len(items) > 1 and fmt != "txt":
            raise click.UsageError(
                f"-f {fmt} for several files needs an output folder (-o DIR); "
                "without -o, several files are printed as text"
            )
        return _Plan(chosen, None)
    targets: dict[Path, Path] = {}
    for item in items:
        name = item.name.with_suffix("")
        previous = targets.setdefault(name, item.path)
        if previous != item.path:
            raise click.UsageError(
                f"{previous} and {item.path} would both write {output_dir / name}.*; "
                "transcribe them into different folders"
            )
    return _Plan(chosen, output_dir)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default="txt",
    show_default=True,
    help="Output format; 'all' writes every format (needs -o).",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write DIR/<name>.<format> for each file instead of printing.",
)
@click.option("-m", "--model", help="Model name or ggml file path  [default: stt.model]")
@click.option("-l", "--language", help="Spoken language code, or 'auto'  [default: stt.language]")
@click.option(
    "-t", "--threads", type=click.IntRange(min=1), help="CPU threads  [default: one per core]"
)
@click.option(
    "--channel",
    type=click.Choice(["mix", "left", "right"]),
    default="mix",
    show_default=True,
    help="Which channel of a stereo file to transcribe.",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=0),
    help="Split segments longer than this many characters (0 = off).",
)
@click.option(
    "--vad/--no-vad",
    "vad",
    default=None,
    help="Send only the speech the detector finds to whisper (the default, stt.vad_filter); "
    "--no-vad: the whole file.",
)
@click.option(
    "--translate",
    is_flag=True,
    help="English text for speech in any language (whisper's translate task; multilingual "
    "models such as base).",
)
@click.option(
    "--language-per-segment",
    is_flag=True,
    help="Detect the language of each stretch of speech, for files that switch language "
    "(implies -l auto; json reports it per segment).",
)
@click.option(
    "--word-timestamps",
    is_flag=True,
    help="Time every word (json: 'words' per segment; srt/vtt with --max-len break cues "
    "between words).",
)
@click.option(
    "--speakers",
    type=click.Choice(["none", "channels"]),
    default="none",
    show_default=True,
    help="channels: a stereo call with one person per channel; each channel is transcribed "
    "and the turns are merged in time order with their speaker.",
)
@click.option(
    "--speaker-names",
    metavar="A,B",
    help="Names of the left and right channel's speakers  [default: left,right]",
)
@click.option(
    "--glob",
    metavar="PATTERN",
    help="In folders, transcribe the files matching PATTERN ('*.mp3')  "
    "[default: audio and video file suffixes]",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=64),
    help="Worker processes, each with its own model; the cores are shared out between them "
    "unless -t is given  [default: 1, or one per core (up to 4) for 16 files or more]",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip files whose outputs (-o) exist and are newer than the file: an interrupted "
    "batch resumes.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    help="Progress bar on stderr (only shown when stderr is a terminal).",
)
@click.pass_obj
def transcribe(
    app,
    files: tuple[Path, ...],
    fmt: str,
    output_dir: Path | None,
    model: str | None,
    language: str | None,
    threads: int | None,
    channel: str,
    max_len: int | None,
    vad: bool | None,
    translate: bool,
    language_per_segment: bool,
    word_timestamps: bool,
    speakers: str,
    speaker_names: str | None,
    glob: str | None,
    jobs: int | None,
    skip_existing: bool,
    progress: bool,
) -> None:
    """Transcribe audio FILES (wav, mp3, flac, ogg, m4a, ... anything ffmpeg reads).

    \b
    One file and no -o: the transcript goes to stdout.
    Several files and no -o: their text goes to stdout, each after a "==> FILE <==" line.
    With -o DIR: DIR/<name>.<format> per file and format, each written atomically.

    Only the speech in a file goes to whisper: the microphone's detector (webrtcvad, then
    the Silero speech model) finds it, long stretches without speech are skipped, and
    timestamps stay on the file's time line. Horns, beeps and music give no text.
    --no-vad sends the whole file.

    A file that cannot be read gets one error line on stderr and the others are still
    transcribed. Exit status: 0 all files done, 1 some file failed, 2 usage error
    (including an output folder that cannot be created).

    \b
    Examples:
      voiced transcribe talk.mp3
      voiced transcribe *.mp3 -f srt -o subs/
      voiced transcribe -m ~/models/ggml-base.en.bin -f all -o out/ interview.m4a
      voiced transcribe -m base -l auto -f json -o out/ interviews/*.mp3
      voiced transcribe -m base --language-per-segment -f json lecture.mp3
      voiced transcribe --speakers channels --speaker-names Agent,Caller -f srt call.wav
    """
    from voiced.commands import batch
    from voiced.speech.files import speaker_names as parse_names
    from voiced.speech.models import ModelError
    from voiced.speech.stt import LanguageError, SttError

    if speaker_names is not None:
        if speakers != "channels":
            raise click.UsageError("--speaker-names needs --speakers channels")
        try:
            parse_names(speaker_names)
        except ValueError as exc:
            raise click.UsageError(f"--speaker-names: {exc}") from None
    if speakers == "channels" and channel != "mix":
        raise click.UsageError("--speakers channels transcribes both channels; drop --channel")
    if language_per_segment:
        if language is not None and language.strip().lower() != "auto":
            raise click.UsageError(
                f"--language-per-segment detects the language; it cannot be used with -l {language}"
            )
        language = "auto"
    if translate and language is None:
        language = "auto"  # the language to translate from (stt.language is for listening)
    items, problems = batch.expand(files, glob)
    plan = _plan(items, fmt, output_dir)
    if plan.output_dir is not None:
        _prepare_output_dir(plan.output_dir)
    settings = app.settings(
        **{
            "stt.model": model,
            "stt.language": language,
            "stt.threads": threads,
            "stt.max_segment_chars": max_len,
            "stt.vad_filter": vad,
        }
    )
    jobs = jobs or batch.default_jobs(len(items))
    threads_each = batch.split_threads(jobs, threads)
    job = batch.Job(
        settings_json=settings.model_dump_json(),
        word_timestamps=word_timestamps,
        translate=translate,
        language_per_segment=language_per_segment,
        channel=channel,
        speakers=speakers,
        speaker_names=speaker_names,
        formats=plan.formats,
        output_dir=plan.output_dir,
        headers=plan.output_dir is None and len(items) > 1,
    )
    try:
        # Loaded here even with workers: a missing model or a language it cannot do is one
        # error before any work starts (and -j 1 uses this copy).
        batch.set_engine(None)
        batch.load_engine(job, threads_each if jobs > 1 else None)
    except LanguageError as exc:
        raise click.UsageError(str(exc)) from None
    except (ModelError, SttError) as exc:
        click.echo(f"voiced: error: {exc}", err=True)
        sys.exit(1)
    if jobs > 1:
        batch.set_engine(None)  # the workers load their own

    failures = len(problems)
    for path, reason in problems:
        click.echo(f"voiced: error: {path}: {reason}", err=True)

    def emit(outcome: batch.Outcome) -> None:
        if outcome.error is not None:
            _clear(bar)
            click.echo(f"voiced: error: {outcome.path}: {outcome.error}", err=True)
        elif outcome.text is not None:
            _clear(bar)
            _print(outcome.text)

    bar = None
    if progress and sys.stderr.isatty() and items:
        from tqdm import tqdm

        # One bar for the batch, in seconds of audio (so its ETA is honest for files of
        # any length), with the files done in front.
        bar = tqdm(
            total=0,
            desc=items[0].path.name if len(items) == 1 else f"0/{len(items)} files",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
            "[{elapsed}<{remaining}]",
            file=sys.stderr,
            leave=False,
        )
    batch.set_skip_existing(skip_existing)
    try:
        tally = batch.run(items, job, jobs, threads_each, emit, bar)
    finally:
        if bar is not None:
            bar.close()
    failures += tally.failed
    tally.failed = failures
    if len(items) + len(problems) > 1 or tally.stopped:
        click.echo(tally.summary(len(items) + len(problems)), err=True)
    if tally.stopped:
        sys.exit(130)
    if failures:
        sys.exit(1)


def _clear(bar) -> None:
    if bar is not None:
        bar.clear()


def _prepare_output_dir(output_dir: Path) -> None:
    """Create the -o folder before the model loads, so a bad folder costs no waiting."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _unusable_output_dir(output_dir, f"cannot create output folder ({exc.strerror or exc})")
    if not os.access(output_dir, os.W_OK | os.X_OK):
        _unusable_output_dir(output_dir, "cannot write into output folder (permission denied)")


def _unusable_output_dir(output_dir: Path, reason: str) -> NoReturn:
    click.echo(f"voiced: error: {output_dir}: {reason}", err=True)
    sys.exit(2)


def _print(text: str) -> None:
    """Write to stdout; a full disk or a closed reader ends the run without a traceback."""
    try:
        click.echo(text, nl=False)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # click's main ends quietly with exit 1, as for any closed pipe
        # Python would flush stdout again at exit and fail the same way: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        click.echo(f"voiced: error: cannot write to standard output: {exc.strerror}", err=True)
        sys.exit(1)
