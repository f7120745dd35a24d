"""Turn latency of `voiced run`: from the endpoint decision to the first reply audio.

Speech (~3 s, "Computer, ..." made with Piper at a room noise floor) is played into the
private PulseAudio server's virtual microphone; the LLM is the scripted test server, which
answers at once, so what is measured is voiced's own share of a turn. Timings are read from
the transcript records the daemon writes. The same run measures voiced starting speech
recognition only at the endpoint (`stt.start_in_pause: false`), and as the baseline a daemon
that also decodes whisper's full 30 s window (`stt.chunk_s: 0`), the way whisper.cpp's own
tools do.

    python -m bench.turn_latency [--turns 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.harness import Daemon, audio_and_llm, voiced_run
from tests.speech import synthesize

QUESTIONS = [
    "Computer, what time is it right now?",
    "Computer, how much memory is free?",
    "Computer, what is filling up my disk?",
    "Computer, which program uses the most processor?",
    "Computer, is the network connected?",
    "Computer, how long has this machine been up?",
]
KEYS = (
    "endpoint_wait_ms",
    "stt_ms",
    "stt_ready_ms",
    "llm_first_token_ms",
    "first_audio_ms",
    "total_ms",
)


CONFIGS = {
    "voiced": "",
    "at-endpoint": "stt:\n  start_in_pause: false\n",
    "full-window": "stt:\n  chunk_s: 0.0\n  start_in_pause: false\n",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=12)
    args = parser.parse_args()
    clips = [synthesize(q, seed=i, lead_s=0.3, tail_s=0.2) for i, q in enumerate(QUESTIONS)]
    results = {}
    with audio_and_llm() as (pulse, ollama, folder):
        for name, config in CONFIGS.items():
            with voiced_run(pulse, ollama, folder, name, config) as daemon:
                measure_after(daemon, clips[:1], 1)  # a first turn, not counted
                results[name] = measure_after(daemon, clips, args.turns)
    print(f"{args.turns} turns of ~3 s speech, instant scripted LLM, real PulseAudio")
    header = "".join(f"{name + ' p50/p90':>26}" for name in CONFIGS)
    print(f"\n{'ms':<22}{header}")
    for key in KEYS:
        row = f"{key:<22}"
        for name in CONFIGS:
            values = results[name][key]
            if values:
                row += f"{percentile(values, 0.5):>18.0f} /{percentile(values, 0.9):>6.0f}"
            else:
                row += f"{'-':>26}"
        print(row)
    for name in CONFIGS:
        if results[name]["missed"]:
            print(f"{name}: {len(results[name]['missed'])} of {args.turns} turns gave no record")
    fast = statistics.median(results["voiced"]["first_audio_ms"])
    late = statistics.median(results["at-endpoint"]["first_audio_ms"])
    full = statistics.median(results["full-window"]["first_audio_ms"])
    print(
        f"\nendpoint -> first audio, p50: {fast:.0f} ms (target <= 400); "
        f"STT started at the endpoint {late:.0f} ms; full window {full:.0f} ms; "
        f"ratio to full window {fast / full:.2f}"
    )


def measure_after(daemon: Daemon, clips: list[np.ndarray], turns: int) -> dict[str, list[float]]:
    """Measure ``turns`` turns after those already recorded; a turn with no record is missed."""
    timings: dict[str, list[float]] = {key: [] for key in KEYS}
    timings["missed"] = []
    for turn in range(turns):
        already = len(daemon.records())
        daemon.pulse.play_into_mic(clips[turn % len(clips)])
        try:
            record = daemon.wait_for_records(already + 1, timeout=30.0)[-1]
        except TimeoutError:
            timings["missed"].append(turn)
            continue
        for key in KEYS:
            value = (record.get("timings") or {}).get(key)
            if value is not None:
                timings[key].append(float(value))
        time.sleep(1.5)
    return timings


if __name__ == "__main__":
    main()
