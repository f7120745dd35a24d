"""Speech for benchmarks: Piper-made utterances with a room noise floor, or the user's own files.

With ``--audio DIR``, each ``NAME.wav`` (any format PyAV reads) needs a ``NAME.txt`` holding
its reference transcript.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.speech import noise, synthesize, wer
from voiced.decode import decode_file

SHORT = [
    "What time is it?",
    "Turn up the volume.",
    "How much space is left on my disk?",
    "Open the terminal please.",
    "How much memory is free right now?",
    "Remind me to water the plants tomorrow.",
    "Which process is using the most processor time?",
    "Read me the first line of my notes file.",
    "Is the network connected?",
    "Set a timer for twenty minutes.",
    "What is the weather like outside today?",
    "Stop.",
    "Yes, delete it.",
    "No, keep the file.",
    "Show me the largest files in my downloads folder.",
    "How long has this computer been running?",
    "Play some quiet music in the background.",
    "Write a note that says call the plumber on Monday.",
    "Who wrote the book about the old man and the sea?",
    "Tell me a short joke about computers.",
    "What is the capital city of Australia?",
    "Please list the files in my documents folder.",
    "Shut down the music player.",
    "Thank you, that will be all.",
]

# What people say most to an assistant, one to four words: the wake phrase alone, answers to
# a question, a stop. Whisper's short window loops on these far more often than on questions.
COMMANDS = [
    "Computer.",
    "Yes.",
    "No.",
    "Okay.",
    "Stop.",
    "Cancel.",
    "Thanks.",
    "Turn off the lights.",
]

LONG = [
    "Good morning everyone, and thank you for joining this short talk about local speech tools.",
    "Most voice assistants send every word you say to a server far away.",
    "The idea behind this project is simple: keep the microphone, the model and the answers on "
    "your own machine.",
    "Speech recognition runs with a small whisper model that fits in less than one hundred "
    "megabytes.",
    "It listens for a pause, cuts the speech out of the silence, and writes down what it heard.",
    "The language model runs on the same computer and can look at the disk, the memory and the "
    "running programs.",
    "Before it deletes or changes anything, it asks you, and it waits for a clear yes.",
    "Every answer is spoken by a neural voice that starts talking after the first sentence is "
    "ready.",
    "Transcripts of every turn are kept on disk, so you can search what was said last week.",
    "Batch transcription works the same way and writes subtitles for a whole folder of recordings.",
    "On a laptop with two cores, a minute of audio takes only a few seconds.",
    "The tests use a virtual microphone and speaker, so they run on servers without sound cards.",
    "Questions are welcome at the end, and the slides will be shared after the session.",
]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def short_clips(audio_dir: Path | None) -> list[tuple[str, np.ndarray]]:
    """(reference, audio) pairs of 1.5-5 s utterances."""
    if audio_dir is not None:
        return _user_clips(audio_dir)
    return [
        (text, synthesize(text, seed=i, lead_s=0.3, tail_s=0.4)) for i, text in enumerate(SHORT)
    ]


def command_clips() -> list[tuple[str, np.ndarray]]:
    """(reference, audio) pairs of short commands, four takes of each."""
    return [
        (text, synthesize(text, seed=seed, lead_s=0.2, tail_s=0.5))
        for text in COMMANDS
        for seed in range(4)
    ]


def long_recording(audio_dir: Path | None) -> tuple[str, np.ndarray]:
    """One recording of a few minutes and its reference."""
    if audio_dir is not None:
        clips = _user_clips(audio_dir)
        return " ".join(t for t, _ in clips), np.concatenate([a for _, a in clips])
    pieces = []
    for i, text in enumerate(LONG * 2):
        pieces.append(synthesize(text, seed=100 + i, lead_s=0.0, tail_s=0.0))
        pieces.append(noise(0.9, seed=200 + i))
    return " ".join(LONG * 2), np.concatenate(pieces)


def _user_clips(audio_dir: Path) -> list[tuple[str, np.ndarray]]:
    clips = []
    for text_file in sorted(audio_dir.glob("*.txt")):
        audio_file = next(
            (p for p in audio_dir.glob(text_file.stem + ".*") if p.suffix != ".txt"), None
        )
        if audio_file is not None:
            clips.append((text_file.read_text().strip(), decode_file(audio_file)))
    if not clips:
        raise SystemExit(f"{audio_dir}: no NAME.<audio> with NAME.txt pairs found")
    return clips


__all__ = [
    "COMMANDS",
    "LONG",
    "SHORT",
    "command_clips",
    "long_recording",
    "median",
    "short_clips",
    "wer",
]
