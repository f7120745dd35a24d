"""End of turn by silence or by the model (``vad.end_of_turn``), offline on Piper speech.

Complete questions and hesitant requests ("..., um," + a pause + the rest) go through the
segmenter as 60 ms blocks; with ``model`` each pause is judged by Smart Turn at once (its own
time is reported apart; in ``voiced run`` the verdict comes that much, plus up to a block,
later). For each mode: the silence waited before a complete question's turn ended, how many
questions stayed one turn, and how many hesitant requests stayed one turn (both parts in
it) instead of being cut at the pause.

    python -m bench.end_of_turn [--pauses 0.9,1.2] [--turn-pauses 240,160]

--turn-pauses: the model mode at each ``vad.turn_pause_ms`` (the default's first); "taken
back" counts turns the model ended that the speech going on took back (each one wasted an
early transcription in ``voiced run``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.turn_latency import QUESTIONS
from tests.speech import synthesize
from voiced.audio.end_of_turn import TurnModel
from voiced.audio.segmenter import (
    Segmenter,
    TurnPause,
    UtteranceEnded,
    UtteranceStarted,
    speech_gate,
)
from voiced.config import VadSettings

COMPLETE = [
    *QUESTIONS,
    "Computer, set a timer for ten minutes.",
    "Computer, what is the weather like in Berlin, today?",
    "Computer, play some jazz.",
    "Computer, turn it off.",
]
HESITANT = [
    ("Computer, set a timer for, um,", "ten minutes."),
    ("Computer, remind me to, uh,", "call my mother tomorrow."),
    ("Computer, what is the, um,", "the weather like in Berlin?"),
    ("Computer, play some, uh,", "jazz music."),
    ("Computer, I need to, um,", "check my disk space."),
    ("Computer, how much space is left on, um,", "my home folder?"),
]


def run(audio: np.ndarray, settings: VadSettings, model: TurnModel, took: list[float]) -> list:
    segmenter = Segmenter(
        settings, gate=speech_gate(settings), judge_turns=settings.end_of_turn == "model"
    )
    events: list = []
    for offset in range(0, audio.size, 960):
        new = segmenter.feed(audio[offset : offset + 960])
        for event in list(new):
            if isinstance(event, TurnPause):
                began = time.perf_counter()
                finished = model.probability(event.audio) >= settings.turn_threshold
                took.append((time.perf_counter() - began) * 1000)
                new += segmenter.verdict(event.index, event.audio_end_s, finished)
        events += new
    return events + segmenter.flush()


def rejoined(events: list) -> int:
    return sum(isinstance(e, UtteranceStarted) and e.rejoins is not None for e in events)


def final(events: list) -> list[UtteranceEnded]:
    taken_back = {e.rejoins for e in events if isinstance(e, UtteranceStarted)} - {None}
    return [e for e in events if isinstance(e, UtteranceEnded) and e.index not in taken_back]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pauses", default="0.9,1.2")
    parser.add_argument("--turn-pauses", default=str(VadSettings().turn_pause_ms))
    args = parser.parse_args()
    pauses = [float(p) for p in args.pauses.split(",")]
    model = TurnModel()
    modes = {"silence": VadSettings(end_of_turn="silence")}
    for turn_pause in (int(p) for p in args.turn_pauses.split(",")):
        modes[f"model {turn_pause}"] = VadSettings(end_of_turn="model", turn_pause_ms=turn_pause)
    complete = [synthesize(q, seed=i, tail_s=2.0) for i, q in enumerate(COMPLETE)]
    hesitant = [
        (pause, np.concatenate([synthesize(a, seed=i, tail_s=pause), synthesize(b, lead_s=0)]))
        for i, (a, b) in enumerate(HESITANT)
        for pause in pauses
    ]
    took: list[float] = []
    print(f"{len(COMPLETE)} complete questions, {len(hesitant)} hesitant requests, pauses {pauses}")
    for name, settings in modes.items():
        waits, whole, taken_back = [], 0, 0
        for text, audio in zip(COMPLETE, complete, strict=True):
            events = run(audio, settings, model, took)
            taken_back += sum(
                isinstance(e, UtteranceStarted) and e.rejoins is not None for e in events
            )
            ended = final(events)
            whole += len(ended) == 1
            waits += [e.endpoint_wait_ms for e in ended[-1:]]
            if ended and ended[-1].endpoint_wait_ms > settings.silence_ms + settings.frame_ms:
                print(f"  {name}: {text!r} waited {ended[-1].endpoint_wait_ms} ms")
        kept = 0
        for _, audio in hesitant:
            events = run(audio, settings, model, took)
            taken_back += sum(
                isinstance(e, UtteranceStarted) and e.rejoins is not None for e in events
            )
            kept += len(final(events)) == 1
        print(
            f"{name:>9}: silence before the end of a complete question p50 "
            f"{statistics.median(waits):.0f} ms (max {max(waits)}); questions kept whole "
            f"{whole}/{len(complete)}; hesitant requests kept whole {kept}/{len(hesitant)}; "
            f"turns taken back {taken_back}"
        )
    if took:
        print(
            f"model: {len(took)} verdicts, p50 {statistics.median(took):.0f} ms, "
            f"max {max(took):.0f} ms each"
        )


if __name__ == "__main__":
    main()
