"""Transcript file formats: txt, srt, vtt and json, as whisper-cli and faster-whisper write them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from voiced.speech.stt import Segment, Transcription

FORMATS = ("txt", "srt", "vtt", "json")


def cues(transcription: Transcription) -> list[Segment]:
    """Segments made safe for subtitles: in order, inside the audio, end >= start, no overlap."""
    result: list[Segment] = []
    previous_end = 0.0
    for segment in sorted(transcription.segments, key=lambda s: s.start):
        start = min(max(segment.start, previous_end), transcription.duration)
        end = min(max(segment.end, start), transcription.duration)
        result.append(Segment(start, end, segment.text, segment.avg_logprob))
        previous_end = end
    return result


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(transcription: Transcription, source: Path | None = None) -> str:
    return "".join(f"{segment.text}\n" for segment in transcription.segments)


def to_srt(transcription: Transcription, source: Path | None = None) -> str:
    blocks = [
        f"{index}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n"
        for index, c in enumerate(cues(transcription), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcription: Transcription, source: Path | None = None) -> str:
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text}\n"
        for c in cues(transcription)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_json(transcription: Transcription, source: Path | None = None) -> str:
    document = {
        "file": str(source) if source else None,
        "duration": round(transcription.duration, 3),
        "language": transcription.language,
        "model": transcription.model,
        "text": transcription.text,
        "segments": [
            {"start": round(c.start, 3), "end": round(c.end, 3), "text": c.text}
            for c in cues(transcription)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


WRITERS: dict[str, Callable[[Transcription, Path | None], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
}


def render(fmt: str, transcription: Transcription, source: Path | None = None) -> str:
    return WRITERS[fmt](transcription, source)
