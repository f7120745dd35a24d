"""Subtitle and JSON writers keep the formats' rules whatever segments the engine returns."""

from __future__ import annotations

import json

import pytest

from tests.subtitles import assert_valid_timeline, parse_srt, parse_vtt
from voiced.speech import formats
from voiced.speech.stt import Segment, Transcription

DURATION = 10.0
# Whisper's timestamps can overlap, run backwards or past the end of the audio.
AWKWARD = Transcription(
    segments=(
        Segment(6.0, 7.0, "listed out of order"),
        Segment(0.5, 2.0, "first"),
        Segment(1.5, 3.0, "overlaps the first"),
        Segment(4.0, 3.5, "ends before it starts"),
        Segment(5.0, 5.0, "zero length"),
        Segment(9.5, 12.0, "runs past the end"),
        Segment(11.0, 13.0, "starts past the end"),
    ),
    duration=DURATION,
    language="en",
    model="tiny.en-q8_0",
)
IN_TIME_ORDER = [
    "first",
    "overlaps the first",
    "ends before it starts",
    "zero length",
    "listed out of order",
    "runs past the end",
    "starts past the end",
]


def test_srt_vtt_and_json_keep_every_segment_on_a_valid_timeline() -> None:
    srt = parse_srt(formats.render("srt", AWKWARD))
    vtt = parse_vtt(formats.render("vtt", AWKWARD))
    document = json.loads(formats.render("json", AWKWARD))

    assert [number for number, *_ in srt] == list(range(1, len(IN_TIME_ORDER) + 1))
    assert [text for *_, text in srt] == IN_TIME_ORDER
    assert [text for *_, text in vtt] == IN_TIME_ORDER
    assert [s["text"] for s in document["segments"]] == IN_TIME_ORDER

    srt_spans = [(start, end) for _, start, end, _ in srt]
    assert_valid_timeline(srt_spans, DURATION)
    assert [(start, end) for start, end, _ in vtt] == srt_spans
    assert [(s["start"], s["end"]) for s in document["segments"]] == srt_spans
    assert document["duration"] == DURATION


def test_clamping_moves_only_what_breaks_the_rules() -> None:
    spans = {c.text: (c.start, c.end) for c in formats.cues(AWKWARD)}
    assert spans["first"] == (0.5, 2.0)
    assert spans["overlaps the first"] == (2.0, 3.0)
    assert spans["ends before it starts"] == (4.0, 4.0)
    assert spans["zero length"] == (5.0, 5.0)
    assert spans["runs past the end"] == (9.5, DURATION)
    assert spans["starts past the end"] == (DURATION, DURATION)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_no_segments_give_an_empty_but_valid_file(fmt: str) -> None:
    empty = Transcription(segments=(), duration=3.0, language="en", model="m")
    text = formats.render(fmt, empty)
    assert text == ("" if fmt == "srt" else "WEBVTT\n\n")
    assert json.loads(formats.render("json", empty))["segments"] == []
