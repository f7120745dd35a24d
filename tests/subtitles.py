"""Parse SRT and WebVTT back and check a subtitle timeline against the formats' rules."""

from __future__ import annotations

import re

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    """(number, start, end, text) per cue; fails on a malformed cue or an empty text."""
    cues = []
    for block in text.strip().split("\n\n"):
        number, timing, *lines = block.split("\n")
        match = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", timing)
        assert match, timing
        parts = [int(g) for g in match.groups()]
        start = parts[0] * 3600 + parts[1] * 60 + parts[2] + parts[3] / 1000
        end = parts[4] * 3600 + parts[5] * 60 + parts[6] + parts[7] / 1000
        assert lines and all(line.strip() for line in lines)
        cues.append((int(number), start, end, " ".join(lines)))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue, after checking the WEBVTT header."""
    header, *blocks = text.strip().split("\n\n")
    assert header == "WEBVTT"
    cues = []
    for block in blocks:
        timing, *lines = block.split("\n")
        match = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing)
        assert match, timing
        parts = [int(g) for g in match.groups()]
        start = parts[0] * 3600 + parts[1] * 60 + parts[2] + parts[3] / 1000
        end = parts[4] * 3600 + parts[5] * 60 + parts[6] + parts[7] / 1000
        cues.append((start, end, " ".join(lines)))
    return cues


def assert_valid_timeline(spans: list[tuple[float, float]], duration: float) -> None:
    """In order, end >= start, no overlaps, and inside the audio's ``duration``."""
    previous_end = 0.0
    for start, end in spans:
        assert end >= start
        assert start >= previous_end - 1e-9, "cues overlap"
        assert end <= duration + 1e-3
        previous_end = end
