"""What `voiced run` costs while nobody talks to it: CPU (% of one core) and memory (RSS).

For each wake engine (``text``: Whisper transcribes every utterance and looks for the wake
phrase; ``model``: the hey_jarvis wake-word model hears every block and Whisper only runs
after a detection) the daemon listens for 30 s to silence, 30 s to room noise (-60 dBFS white
noise with a few louder bumps) and 30 s of talk with no wake word in it (Piper sentences with
short pauses, like a TV), played into the private PulseAudio server's virtual microphone. The
peer is the cheapest possible listener, `parec` recording the same microphone, measured over
the same windows in the same run.

    python -m bench.idle [--seconds 30] [--engine text|model ...]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import numpy as np
import psutil

from bench.harness import audio_and_llm, voiced_run
from tests.speech import noise, synthesize

# Talk that is not for the assistant (no wake word, no "computer").
TALK = [
    "And now the weather for the weekend.",
    "Clouds will move in from the west on Saturday afternoon.",
    "Expect light rain in the evening and a cool breeze near the coast.",
    "On Sunday the sun returns, with highs around twenty degrees.",
    "Next, a look at the traffic on the main roads.",
    "The bridge is open again after last week's repairs.",
]


def room(seconds: float) -> np.ndarray:
    audio = noise(seconds, dbfs=-60, seed=5)
    rng = np.random.default_rng(6)
    for start in rng.uniform(0, seconds - 0.2, size=int(seconds / 6)):  # a chair, a cup
        i = int(start * 16000)
        audio[i : i + 1600] += noise(0.1, dbfs=-30, seed=int(start * 100))
    return audio


def talk(seconds: float) -> np.ndarray:
    pieces, total = [], 0
    while total < seconds * 16000:
        for index, text in enumerate(TALK):
            piece = synthesize(text, seed=index, lead_s=0.3, tail_s=0.9)
            pieces.append(piece)
            total += piece.size
    return np.concatenate(pieces)[: int(seconds * 16000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--engine", action="append", choices=["text", "model"], help="default: both"
    )
    args = parser.parse_args()
    rows = []
    with audio_and_llm() as (pulse, ollama, folder):
        for engine in args.engine or ["text", "model"]:
            rows += measure(pulse, ollama, folder, engine, args.seconds)
    print(f"`voiced run` idling, {args.seconds:.0f} s per condition (tiny.en + joe voice loaded)")
    columns = ("voiced CPU %", "parec CPU %", "ratio", "voiced RSS MiB", "transcribed")
    print(f"\n{'engine':<7} {'condition':<12}" + "".join(f" {c:>14}" for c in columns))
    for engine, label, ours, theirs, rss, heard in rows:
        ratio = ours / theirs if theirs > 0 else float("inf")
        print(
            f"{engine:<7} {label:<12} {ours:14.2f} {theirs:14.2f} {ratio:14.1f} {rss:14.0f}"
            f" {heard:14d}"
        )
    print("\ntargets: <= 2 % of one core, RSS <= 450 MiB")


def measure(pulse, ollama, folder, engine: str, seconds: float) -> list[tuple]:
    rows = []
    with voiced_run(pulse, ollama, folder, f"idle-{engine}", wake_engine=engine) as daemon:
        voiced = psutil.Process(daemon.proc.pid)
        parec = subprocess.Popen(
            ["parec", "--device=vmic", "--rate=16000", "--channels=1", "--format=s16le"],
            env=pulse.env,
            stdout=subprocess.DEVNULL,
        )
        peer = psutil.Process(parec.pid)
        log_path = daemon.home.parent / f"idle-{engine}.log"
        conditions = [("silence", None), ("room noise", room(seconds)), ("talk", talk(seconds))]
        try:
            time.sleep(5)  # start-up work (warm-up, first allocations) is not idling
            for label, audio in conditions:
                heard_before = log_path.read_text().count(" heard ")
                playback = pulse.play_into_mic(audio, wait=False) if audio is not None else None
                ours, theirs = cpu_percent_pair(voiced, peer, seconds)
                if playback is not None:
                    playback.stop()
                time.sleep(1.0)  # the last utterance's endpoint and transcription
                heard = log_path.read_text().count(" heard ") - heard_before
                rss = tree_rss_mib(voiced)
                rows.append((engine, label, ours, theirs, rss, heard))
        finally:
            parec.terminate()
    return rows


def _tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and its children: voiced's microphone is read by a child process."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(process: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of the process and each child, by pid."""
    seconds = {}
    for member in _tree(process):
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[member.pid] = times.user + times.system
    return seconds


def tree_rss_mib(process: psutil.Process) -> float:
    """Memory of the process and its children together: the RSS of a lone process, and the
    sum of proportional set sizes (shared pages split between sharers) for a family."""
    members = _tree(process)
    total = 0
    for member in members:
        try:
            info = member.memory_full_info() if len(members) > 1 else member.memory_info()
        except psutil.NoSuchProcess:
            continue
        total += getattr(info, "pss", info.rss)
    return total / 2**20


def cpu_percent_pair(a: psutil.Process, b: psutil.Process, seconds: float) -> tuple[float, float]:
    """Each process's CPU (children included) over ``seconds``, in % of one core."""
    before = (tree_cpu_s(a), tree_cpu_s(b))
    time.sleep(seconds)
    after = (tree_cpu_s(a), tree_cpu_s(b))
    return tuple(  # type: ignore[return-value]
        100.0 * sum(used - start.get(pid, 0.0) for pid, used in end.items()) / seconds
        for end, start in zip(after, before, strict=True)
    )


if __name__ == "__main__":
    main()
