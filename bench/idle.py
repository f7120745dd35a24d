"""What `voiced run` costs while nobody talks: CPU (% of one core) and memory (RSS).

The daemon listens for 30 s to silence and then for 30 s to room noise (-60 dBFS white noise
with a few louder bumps) played into the private PulseAudio server's virtual microphone. The
peer is the cheapest possible listener, `parec` recording the same microphone, measured over
the same windows in the same run.

    python -m bench.idle [--seconds 30]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import numpy as np
import psutil

from bench.harness import audio_and_llm, voiced_run
from tests.speech import noise


def room(seconds: float) -> np.ndarray:
    audio = noise(seconds, dbfs=-60, seed=5)
    rng = np.random.default_rng(6)
    for start in rng.uniform(0, seconds - 0.2, size=int(seconds / 6)):  # a chair, a cup
        i = int(start * 16000)
        audio[i : i + 1600] += noise(0.1, dbfs=-30, seed=int(start * 100))
    return audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = []
    with (
        audio_and_llm() as (pulse, ollama, folder),
        voiced_run(pulse, ollama, folder, "idle") as daemon,
    ):
        voiced = psutil.Process(daemon.proc.pid)
        parec = subprocess.Popen(
            ["parec", "--device=vmic", "--rate=16000", "--channels=1", "--format=s16le"],
            env=pulse.env,
            stdout=subprocess.DEVNULL,
        )
        peer = psutil.Process(parec.pid)
        try:
            time.sleep(5)  # start-up work (warm-up, first allocations) is not idling
            for label, audio in [("silence", None), ("room noise", room(args.seconds))]:
                playback = pulse.play_into_mic(audio, wait=False) if audio is not None else None
                ours, theirs = cpu_percent_pair(voiced, peer, args.seconds)
                if playback is not None:
                    playback.stop()
                rows.append((label, ours, theirs, voiced.memory_info().rss / 2**20))
        finally:
            parec.terminate()
    print(f"`voiced run` idling, {args.seconds:.0f} s per condition (tiny.en + joe voice loaded)")
    columns = ("voiced CPU %", "parec CPU %", "ratio", "voiced RSS MiB")
    print(f"\n{'condition':<12}" + "".join(f" {c:>14}" for c in columns))
    for label, ours, theirs, rss in rows:
        ratio = ours / theirs if theirs > 0 else float("inf")
        print(f"{label:<12} {ours:14.2f} {theirs:14.2f} {ratio:14.1f} {rss:14.0f}")
    print("\ntargets: <= 2 % of one core, RSS <= 450 MiB")


def cpu_percent_pair(a: psutil.Process, b: psutil.Process, seconds: float) -> tuple[float, float]:
    before = (a.cpu_times(), b.cpu_times())
    time.sleep(seconds)
    after = (a.cpu_times(), b.cpu_times())
    return tuple(  # type: ignore[return-value]
        100.0 * ((x.user - y.user) + (x.system - y.system)) / seconds
        for x, y in zip(after, before, strict=True)
    )


if __name__ == "__main__":
    main()
