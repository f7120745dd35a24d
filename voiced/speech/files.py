"""Transcribing one audio file: the code ``voiced transcribe`` runs, usable as a library.

    import voiced

    result = voiced.transcribe_file("talk.mp3", model="base", language="auto")
    for segment in result.segments:
        print(segment.start, segment.end, segment.language, segment.text)

:func:`transcribe_file` loads the model once per process (per set of options) and returns a
:class:`~voiced.speech.stt.Transcription`; a batch over many files (a notebook, a Ray or Dask
task) calls it in a loop. :func:`transcribe_path` is the same work with an engine the caller
already holds, as the CLI's workers do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from voiced.speech.stt import Segment, SpeechToText, Transcription

Speakers = Literal["none", "channels"]
CHANNEL_SPEAKERS = ("left", "right")


class SpeakerError(ValueError):
    """``--speakers channels`` on a file that has no two different channels."""


def speaker_names(names: str | Sequence[str] | None) -> tuple[str, str]:
    """Two names for the left and right channel ("left", "right" without names).

    Raises :class:`ValueError` unless exactly two non-empty names are given.
    """
    if names is None:
        return CHANNEL_SPEAKERS
    parts = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"give two speaker names, left channel first, as A,B (not {names!r})")
    return parts[0], parts[1]


def transcribe_path(
    stt: SpeechToText,
    path: str | Path,
    *,
    channel: Literal["mix", "left", "right"] = "mix",
    speakers: Speakers = "none",
    names: str | Sequence[str] | None = None,
    on_progress: Callable[[float], None] | None = None,
    abort: Callable[[], bool] | None = None,
) -> Transcription:
    """Decode ``path`` and transcribe it with ``stt``.

    ``speakers="channels"``: a stereo call recording with one person per channel; each
    channel is transcribed on its own and the segments are merged in time order, each with
    its ``speaker`` (``names``: left first; default "left" and "right").
    Raises :class:`voiced.decode.DecodeError` for a file that cannot be read and
    :class:`SpeakerError` for ``speakers="channels"`` on a file without two channels.
    """
    from voiced.decode import SAMPLE_RATE, decode_file

    if speakers != "channels":
        return stt.transcribe(decode_file(path, channel=channel), on_progress=on_progress)
    labels = speaker_names(names)
    left = decode_file(path, channel="left")
    right = decode_file(path, channel="right")
    if left.size == right.size and (left == right).all():
        raise SpeakerError("--speakers channels needs two different channels (mono file?)")
    half = left.size / SAMPLE_RATE

    def progress_of(done_before: float) -> Callable[[float], None] | None:
        if on_progress is None:
            return None
        return lambda done: on_progress((done_before + done) / 2)

    sides = [
        stt.transcribe(left, on_progress=progress_of(0.0), abort=abort),
        stt.transcribe(right, on_progress=progress_of(half), abort=abort),
    ]
    return merge_speakers(sides, labels)


def merge_speakers(sides: Sequence[Transcription], labels: Sequence[str]) -> Transcription:
    """One transcription of several channels: segments in time order, each with its speaker."""
    segments: list[Segment] = []
    heard: dict[str, float] = {}
    for side, label in zip(sides, labels, strict=True):
        for segment in side.segments:
            segments.append(dataclasses.replace(segment, speaker=label))
        heard[side.language] = heard.get(side.language, 0.0) + side.speech_seconds
    segments.sort(key=lambda s: (s.start, s.end))
    first = sides[0]
    return Transcription(
        tuple(segments),
        max(side.duration for side in sides),
        max(heard, key=heard.__getitem__),
        first.model,
        sum(side.speech_seconds for side in sides),
        task=first.task,
    )


@functools.lru_cache(maxsize=2)
def _engine(settings_json: str, word_timestamps: bool, translate: bool, per_segment: bool):
    from voiced.config import Settings

    settings = Settings.model_validate_json(settings_json)
    return SpeechToText.from_settings(
        settings.stt,
        vad=settings.vad,
        word_timestamps=word_timestamps,
        translate=translate,
        language_per_segment=per_segment,
    )


def transcribe_file(
    path: str | Path,
    *,
    model: str | None = None,
    language: str | None = None,
    threads: int | None = None,
    word_timestamps: bool = False,
    translate: bool = False,
    language_per_segment: bool = False,
    channel: Literal["mix", "left", "right"] = "mix",
    speakers: Speakers = "none",
    speaker_names: str | Sequence[str] | None = None,
    vad_filter: bool | None = None,
    max_segment_chars: int | None = None,
) -> Transcription:
    """Transcribe one audio file as ``voiced transcribe`` does; options as its flags.

    Options left at None come from the configuration (``stt.model``, ``stt.language``, ...).
    ``language_per_segment`` and ``translate`` imply ``language="auto"``. The model stays
    loaded for the next call with the same options. Raises
    :class:`voiced.decode.DecodeError` (unreadable file),
    :class:`voiced.speech.models.ModelError` (model missing) and
    :class:`voiced.speech.stt.SttError` (a language the model cannot do).
    """
    from voiced import config

    if (language_per_segment or translate) and language is None:
        language = "auto"
    overrides = {
        "stt.model": model,
        "stt.language": language,
        "stt.threads": threads,
        "stt.vad_filter": vad_filter,
        "stt.max_segment_chars": max_segment_chars,
    }
    settings = config.load(overrides={k: v for k, v in overrides.items() if v is not None})
    stt = _engine(settings.model_dump_json(), word_timestamps, translate, language_per_segment)
    return transcribe_path(stt, path, channel=channel, speakers=speakers, names=speaker_names)
