"""Turn latency of `voiced run`: from the end of speech (and from the endpoint decision) to
the first reply audio.

Speech (~3 s, "Computer, ..." made with Piper at a room noise floor) is played into the
private PulseAudio server's virtual microphone; the LLM is the scripted test server, which
answers at once, so what is measured is voiced's own share of a turn. Timings are read from
the transcript records the daemon writes. The same run measures voiced starting speech
recognition only at the endpoint (`stt.start_in_pause: false`), and as the baseline a daemon
that also decodes whisper's full 30 s window (`stt.chunk_s: 0`), the way whisper.cpp's own
tools do. Those two, and `silence`, end turns after `vad.silence_ms` of silence; the
defaults (`voiced`) have the end-of-turn model judge each pause.

`speech_end_to_first_audio_ms` (what the user feels) is also measured from outside: the
virtual microphone and the virtual speaker are recorded side by side (two `parec` streams put
on one clock by when their data arrives), and the time from the last loud frame of the
played question to the first loud frame of the reply is compared with the record's figure.

    python -m bench.turn_latency [--turns 12] [--configs voiced,at-endpoint]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time

import numpy as np

from bench.harness import Daemon, audio_and_llm, voiced_run
from tests.pulse import MIC_SOURCE, SPEAKER_SINK, PulseServer, end_process
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
    "speech_end_to_first_audio_ms",
    "outside_ms",
    "outside_minus_record_ms",
    "total_ms",
)
RATE = 16000
FRAME = RATE // 100  # 10 ms
# The question has a -60 dBFS noise floor, the speaker is digital silence between replies.
MIC_LOUD_DBFS = -45.0
SPEAKER_LOUD_DBFS = -50.0


CONFIGS = {
    "voiced": "",  # the defaults: vad.end_of_turn: model
    "silence": "vad:\n  end_of_turn: silence\n",
    "at-endpoint": "vad:\n  end_of_turn: silence\nstt:\n  start_in_pause: false\n",
    "full-window": "vad:\n  end_of_turn: silence\nstt:\n  chunk_s: 0.0\n  start_in_pause: false\n",
    # Variations of the default, measured when it was chosen (not run unless asked for):
    "pause-200": "vad:\n  turn_pause_ms: 200\n",  # the model judging sooner
    "pause-160": "vad:\n  turn_pause_ms: 160\n",
    # transcription starting after this much silence (vad.turn_post_roll_ms)
    "post-roll-120": "vad:\n  turn_post_roll_ms: 120\n",
    "post-roll-240": "vad:\n  turn_post_roll_ms: 240\n",  # with the judge, as before
    "two-threads": "stt:\n  threads: 2\n",  # whisper on every core of this 2-core VM
}
DEFAULT_CONFIGS = ("voiced", "silence", "at-endpoint", "full-window")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ClockedRecording:
    """``parec`` on one source, each sample placed on ``time.monotonic()``.

    The start of the stream is the earliest ``arrival - samples so far / rate`` over all reads
    (the read with the least buffering): two recordings of the same server taken this way
    share one clock to within a few milliseconds.
    """

    def __init__(self, pulse: PulseServer, source: str) -> None:
        pulse.pactl("set-source-volume", source, "100%")  # monitors start at 33 %
        self._proc = subprocess.Popen(
            [
                "parec",
                f"--device={source}",
                "--format=s16le",
                f"--rate={RATE}",
                "--channels=1",
                "--raw",
                "--latency-msec=10",
            ],
            env=pulse.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._chunks: list[bytes] = []
        self._bytes = 0
        self.start = float("inf")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(4096):
            self._chunks.append(chunk)
            self._bytes += len(chunk)
            self.start = min(self.start, time.monotonic() - self._bytes / 2 / RATE)

    def audio(self) -> np.ndarray:
        data = b"".join(self._chunks)
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).astype(np.float32) / 32768

    def loud(self, dbfs: float) -> np.ndarray:
        """Monotonic times of the 10 ms frames louder than ``dbfs``."""
        audio = self.audio()
        frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
        level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        return self.start + np.flatnonzero(level > dbfs) * FRAME / RATE

    def stop(self) -> None:
        end_process(self._proc)
        self._reader.join(5)


def outside_ms(
    mic: ClockedRecording, speaker: ClockedRecording, played_at: float, until: float
) -> float | None:
    """From the end of the question played after ``played_at`` to the reply's first sound."""
    spoken = mic.loud(MIC_LOUD_DBFS)
    spoken = spoken[(spoken >= played_at - 0.5) & (spoken <= until)]
    if not spoken.size:
        return None
    speech_end = spoken[-1] + FRAME / RATE
    heard = speaker.loud(SPEAKER_LOUD_DBFS)
    heard = heard[(heard >= speech_end) & (heard <= until)]
    return None if not heard.size else (heard[0] - speech_end) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=12)
    default = ",".join(DEFAULT_CONFIGS)
    parser.add_argument("--configs", default=default, help=f"comma-separated of {list(CONFIGS)}")
    args = parser.parse_args()
    names = [name for name in args.configs.split(",") if name]
    clips = [synthesize(q, seed=i, lead_s=0.3, tail_s=0.2) for i, q in enumerate(QUESTIONS)]
    results = {}
    with audio_and_llm() as (pulse, ollama, folder):
        for name in names:
            with voiced_run(pulse, ollama, folder, name, CONFIGS[name]) as daemon:
                measure_after(daemon, clips[:1], 1)  # a first turn, not counted
                results[name] = measure_after(daemon, clips, args.turns)
    print(f"{args.turns} turns of ~3 s speech, instant scripted LLM, real PulseAudio")
    header = "".join(f"{name + ' p50/p90':>26}" for name in names)
    print(f"\n{'ms':<30}{header}")
    for key in KEYS:
        row = f"{key:<30}"
        for name in names:
            values = results[name][key]
            if values:
                row += f"{percentile(values, 0.5):>18.0f} /{percentile(values, 0.9):>6.0f}"
            else:
                row += f"{'-':>26}"
        print(row)
    for name in names:
        if results[name]["missed"]:
            print(f"{name}: {len(results[name]['missed'])} of {args.turns} turns gave no record")
        off = [abs(v) for v in results[name]["outside_minus_record_ms"]]
        if off:
            within = sum(v <= 50 for v in off)
            print(
                f"{name}: outside check: {within} of {len(off)} turns within 50 ms of the "
                f"record (largest difference {max(off):.0f} ms)"
            )
    if {"silence", "at-endpoint", "full-window"} <= set(names):
        fast = statistics.median(results["silence"]["first_audio_ms"])
        late = statistics.median(results["at-endpoint"]["first_audio_ms"])
        full = statistics.median(results["full-window"]["first_audio_ms"])
        print(
            f"\nendpoint -> first audio, p50: {fast:.0f} ms; "
            f"STT started at the endpoint {late:.0f} ms; full window {full:.0f} ms; "
            f"ratio to full window {fast / full:.2f}"
        )
    for name in names:
        felt = results[name]["speech_end_to_first_audio_ms"]
        if felt:
            print(
                f"{name}: end of speech -> first audio, p50 {statistics.median(felt):.0f} ms "
                "(target <= 550)"
            )


def measure_after(daemon: Daemon, clips: list[np.ndarray], turns: int) -> dict[str, list[float]]:
    """Measure ``turns`` turns after those already recorded; a turn with no record is missed."""
    timings: dict[str, list[float]] = {key: [] for key in KEYS}
    timings["missed"] = []
    mic = ClockedRecording(daemon.pulse, MIC_SOURCE)
    speaker = ClockedRecording(daemon.pulse, f"{SPEAKER_SINK}.monitor")
    try:
        for turn in range(turns):
            already = len(daemon.records())
            played_at = time.monotonic()
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
            time.sleep(0.3)  # the recordings catch up
            outside = outside_ms(mic, speaker, played_at, time.monotonic())
            felt = (record.get("timings") or {}).get("speech_end_to_first_audio_ms")
            if outside is not None:
                timings["outside_ms"].append(outside)
                if felt is not None:
                    timings["outside_minus_record_ms"].append(outside - felt)
            time.sleep(1.2)
    finally:
        mic.stop()
        speaker.stop()
    return timings


if __name__ == "__main__":
    main()
