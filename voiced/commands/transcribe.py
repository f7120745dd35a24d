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


def _plan(files: tuple[Path, ...], fmt: str, output_dir: Path | None) -> _Plan:
    chosen = formats.FORMATS if fmt == "all" else (fmt,)
    if output_dir is None:
        if fmt == "all":
            raise click.UsageError("-f all writes several files: give an output folder with -o DIR")
        if len(files) > 1 and fmt != "txt":
            raise click.UsageError(
                f"-f {fmt} for several files needs an output folder (-o DIR); "
                "without -o, several files are printed as text"
            )
        return _Plan(chosen, None)
    targets: dict[str, Path] = {}
    for path in files:
        previous = targets.setdefault(path.stem, path)
        if previous != path:
            raise click.UsageError(
                f"{previous} and {path} would both write {output_dir / path.stem}.*; "
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
    from voiced.decode import DecodeError
    from voiced.speech.files import SpeakerError
    from voiced.speech.files import speaker_names as parse_names
    from voiced.speech.models import ModelError, atomic_output
    from voiced.speech.stt import LanguageError, SpeechToText, SttError

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
    plan = _plan(files, fmt, output_dir)
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
    try:
        stt = SpeechToText.from_settings(
            settings.stt,
            vad=settings.vad,
            word_timestamps=word_timestamps,
            translate=translate,
            language_per_segment=language_per_segment,
        )
    except LanguageError as exc:
        raise click.UsageError(str(exc)) from None
    except (ModelError, SttError) as exc:
        click.echo(f"voiced: error: {exc}", err=True)
        sys.exit(1)

    show_progress = progress and sys.stderr.isatty()
    failures = 0
    detecting = stt.language == "auto"
    for index, path in enumerate(files, start=1):
        label = f"[{index}/{len(files)}] {path.name}" if len(files) > 1 else path.name
        try:
            result = _transcribe_one(
                stt, path, label, show_progress, channel, speakers, speaker_names
            )
        except (DecodeError, SpeakerError) as exc:
            click.echo(f"voiced: error: {path}: {exc}", err=True)
            failures += 1
            continue
        except Exception as exc:  # a decoder bug on one odd file must not end the batch
            log.debug("decoding %s failed", path, exc_info=True)
            click.echo(
                f"voiced: error: {path}: cannot decode ({type(exc).__name__}: {exc})", err=True
            )
            failures += 1
            continue
        if plan.output_dir is None:
            header = ""
            if len(files) > 1:
                found = f" [language: {result.language}]" if detecting else ""
                header = f"==> {path} <=={found}\n"
            _print(header + formats.render(plan.formats[0], result, path))
            continue
        for chosen in plan.formats:
            target = plan.output_dir / f"{path.stem}.{chosen}"
            try:
                with atomic_output(target) as out:
                    out.write(formats.render(chosen, result, path).encode("utf-8"))
            except OSError as exc:
                click.echo(f"voiced: error: {target}: cannot write: {exc.strerror}", err=True)
                failures += 1
                break
            log.info("wrote %s", target)
    if failures:
        sys.exit(1)


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


def _transcribe_one(
    stt,
    path: Path,
    label: str,
    show_progress: bool,
    channel: str,
    speakers: str,
    names: str | None,
):
    from voiced.speech.files import transcribe_path

    options = {"channel": channel, "speakers": speakers, "names": names}
    if not show_progress:
        return transcribe_path(stt, path, **options)
    from tqdm import tqdm

    with tqdm(
        total=None,
        desc=label,
        unit="s",
        unit_scale=False,
        bar_format="{desc}: {n:.0f} s audio [{elapsed}]",
        file=sys.stderr,
        leave=False,
    ) as bar:

        def advance(done: float) -> None:
            bar.update(round(done, 1) - bar.n)

        return transcribe_path(stt, path, on_progress=advance, **options)
