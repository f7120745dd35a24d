"""Transcript file formats: txt, srt, vtt and json, as whisper-cli and faster-whisper write them."""

from __future__ import annotations

import dataclasses
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
        result.append(dataclasses.replace(segment, start=start, end=end))
        previous_end = end
    return result


def _cue_text(segment: Segment) -> str:
    """A subtitle cue's text: the speaker's name in front when speakers are known."""
    return f"[{segment.speaker}] {segment.text}" if segment.speaker else segment.text


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(transcription: Transcription, source: Path | None = None) -> str:
    """One line per segment; with speakers, one ``[NAME] text`` line per turn."""
    if not any(segment.speaker for segment in transcription.segments):
        return "".join(f"{segment.text}\n" for segment in transcription.segments)
    turns: list[list[str]] = []
    speaker = None
    for segment in sorted(transcription.segments, key=lambda s: s.start):
        if not turns or segment.speaker != speaker:
            speaker = segment.speaker
            turns.append([f"[{speaker}]"])
        turns[-1].append(segment.text)
    return "".join(" ".join(turn) + "\n" for turn in turns)


def to_srt(transcription: Transcription, source: Path | None = None) -> str:
    blocks = [
        f"{index}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{_cue_text(c)}\n"
        for index, c in enumerate(cues(transcription), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcription: Transcription, source: Path | None = None) -> str:
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{_cue_text(c)}\n"
        for c in cues(transcription)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_json(transcription: Transcription, source: Path | None = None) -> str:
    document = {
        "file": str(source) if source else None,
        "duration": round(transcription.duration, 3),
        "language": transcription.language,
        "task": transcription.task,
        "model": transcription.model,
        "text": transcription.text,
        "segments": [_json_segment(c) for c in cues(transcription)],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _json_segment(segment: Segment) -> dict:
    entry: dict = {
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
    }
    if segment.language:
        entry["language"] = segment.language
    if segment.speaker:
        entry["speaker"] = segment.speaker
    if segment.words:
        entry["words"] = [
            {
                "word": w.word,
                "start": round(min(max(w.start, segment.start), segment.end), 3),
                "end": round(min(max(w.end, segment.start), segment.end), 3),
                "probability": round(w.probability, 3),
            }
            for w in segment.words
        ]
    return entry


WRITERS: dict[str, Callable[[Transcription, Path | None], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
}


def render(fmt: str, transcription: Transcription, source: Path | None = None) -> str:
    return WRITERS[fmt](transcription, source)
