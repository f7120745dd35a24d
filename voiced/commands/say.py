"""``voiced say [TEXT | -]``: speak text aloud, or write it as a WAV file.

Text comes from the arguments, or from standard input (``-`` or no text); input is spoken
sentence by sentence as it arrives, so ``some-llm | voiced say`` starts talking after the
first sentence. ``-o FILE.wav`` writes the speech to a file instead (written atomically:
the file appears only when complete).
"""

from __future__ import annotations

import codecs
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from voiced.speech.sentences import SentenceSplitter, speakable
from voiced.speech.tts import TextToSpeech, VoiceError, WavWriter

log = logging.getLogger(__name__)


def _stdin_pieces() -> Iterator[str]:
    """Standard input as it arrives (not line by line: a reply may come without newlines)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = sys.stdin.buffer
    while True:
        data = stream.read1(4096)  # whatever has arrived, without waiting for more
        if not data:
            break
        text = decoder.decode(data)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _text_pieces(text: tuple[str, ...]) -> Iterator[str]:
    """The text to speak, checked now, read lazily (standard input as it arrives)."""
    if text and text != ("-",):
        if "-" in text:
            raise click.UsageError("'-' (read standard input) cannot be mixed with text")
        return iter([" ".join(text)])
    if not text and sys.stdin.isatty():
        raise click.UsageError("no text given: pass TEXT, or '-' and text on standard input")
    return _stdin_pieces()


def _check_writable(output: Path) -> None:
    folder = output.parent
    if output.is_dir():
        raise click.ClickException(f"cannot write {output}: it is a folder")
    if not folder.is_dir():
        raise click.ClickException(f"cannot write {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"cannot write {output}: folder {folder} is not writable")


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def _write_wav(tts: TextToSpeech, pieces: Iterator[str], output: Path) -> int:
    """Synthesise into ``output`` sentence by sentence; return the number of frames."""
    splitter = SentenceSplitter()
    silence = tts.silence()
    try:
        writer = WavWriter(output, tts.sample_rate)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    with writer:
        first = True
        for sentences in _sentences(splitter, pieces):
            for sentence in sentences:
                for audio in tts.sentences(speakable(sentence)):
                    if not first:
                        writer.write(silence)
                    writer.write(audio)
                    first = False
        if first:
            raise click.ClickException("nothing to say: the text has no speakable words")
    return writer.frames


def _sentences(splitter: SentenceSplitter, pieces: Iterator[str]) -> Iterator[list[str]]:
    for piece in pieces:
        yield splitter.feed(piece)
    yield splitter.flush()


def _speak(tts: TextToSpeech, pieces: Iterator[str], device: int | str | None) -> None:
    from voiced.audio.playback import PlaybackError, Player
    from voiced.speech.speaker import Speaker

    player = Player(tts.sample_rate, device)
    try:
        player.open()  # device problems show up before any text is read
        speaker = Speaker(tts, player)
        try:
            for piece in pieces:
                speaker.feed(piece)
            report = speaker.wait()
            if not report.spoken:
                log.warning("nothing to say: the text has no speakable words")
        except KeyboardInterrupt:
            report = speaker.stop()
            log.info("interrupted after: %s", report.text or "(nothing)")
            raise
        finally:
            speaker.close()
    except PlaybackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        player.close()


@click.command()
@click.argument("text", nargs=-1)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a WAV file (16-bit mono at the voice's rate) instead of playing.",
)
@click.option("--voice", help="Piper voice name or .onnx path  [default: tts.voice]")
@click.option(
    "--speed",
    type=click.FloatRange(min=0.25, max=4.0),
    help="Speaking speed, 2 = twice as fast (sets tts.length_scale to 1/SPEED).",
)
@click.option(
    "--length-scale",
    type=click.FloatRange(min=0.25, max=4.0),
    help="Piper length scale, >1 slower  [default: tts.length_scale]",
)
@click.option(
    "--volume", type=click.FloatRange(min=0.0, max=4.0), help="Volume  [default: tts.volume]"
)
@click.option(
    "--output-device",
    help="Output device: index or part of its name (see `voiced devices`)  "
    "[default: audio.output_device]",
)
@click.pass_obj
def say(
    app: Any,
    text: tuple[str, ...],
    output: Path | None,
    voice: str | None,
    speed: float | None,
    length_scale: float | None,
    volume: float | None,
    output_device: str | None,
) -> None:
    """Speak TEXT (or standard input) on the output device, or write it to a WAV file."""
    if speed is not None and length_scale is not None:
        raise click.UsageError("give --speed or --length-scale, not both")
    if speed is not None:
        length_scale = min(4.0, max(0.25, 1.0 / speed))
    if output is not None and output_device is not None:
        raise click.UsageError("--output-device has no effect with -o: pick one")
    settings = app.settings(
        **{
            "tts.voice": voice,
            "tts.length_scale": length_scale,
            "tts.volume": volume,
            "audio.output_device": _device(output_device),
        }
    )
    pieces = _text_pieces(text)
    if output is not None:
        _check_writable(output)
    try:
        tts = TextToSpeech.from_settings(settings.tts)
    except VoiceError as exc:
        if voice is not None:
            raise click.BadParameter(str(exc), param_hint="--voice") from None
        raise click.ClickException(str(exc)) from None
    try:
        if output is not None:
            frames = _write_wav(tts, pieces, output)
            log.info("wrote %s (%.1f s)", output, frames / tts.sample_rate)
        else:
            _speak(tts, pieces, settings.audio.output_device)
    except KeyboardInterrupt:
        sys.exit(130)
