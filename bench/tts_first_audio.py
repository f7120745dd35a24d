"""Time to first audio for a three-sentence reply: streaming per sentence vs whole-text synthesis.

Two ways to turn a reply into speech, measured in the same run on the same loaded voice:

* streaming: the reply goes through voiced's :class:`~voiced.audio.playback.Speaker` (sentence
  splitter -> TTS worker thread); first audio is the moment the first sentence's audio is
  handed to the player.
* whole text: wait for the complete reply, synthesise all of it with Piper in one call, then
  hand it to the player (what a TTS that waits for the whole LLM reply does).

Each is measured for a reply that is available at once (``voiced say``) and for one that
arrives as an LLM streams it (``--chars-per-s``). Runs alternate between the two methods;
medians are printed with the ratio whole/streaming. The player here only timestamps the
audio it is given (no sound device needed), so the numbers are synthesis-side latency;
a device adds its output latency (about 60 ms here) to both.

    /work/venv/bin/python bench/tts_first_audio.py [--runs 7] [--chars-per-s 80]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from voiced.audio.playback import SpokenReport
from voiced.config import TtsSettings
from voiced.speech.speaker import Speaker
from voiced.speech.tts import TextToSpeech

REPLY = (
    "Your computer has been up for three days and everything looks healthy. "
    "The disk in your home folder is about half full, with most of the space in videos. "
    "If you want, I can list the ten largest files so you can decide what to delete."
)


class TimingPlayer:
    """Stands in for the sound device: records when the first audio arrives."""

    def __init__(self) -> None:
        self.first_audio: float | None = None
        self.seconds = 0.0
        self.done = threading.Event()
        self.speaking = False
        self.last_sound_end = 0.0

    def play(self, audio: np.ndarray, text: str = "") -> None:
        if self.first_audio is None and audio.size:
            self.first_audio = time.perf_counter()
        self.seconds += audio.size / 22050

    def wait(self, timeout: float | None = None) -> SpokenReport:
        return SpokenReport()

    def stop(self) -> SpokenReport:
        return SpokenReport()


def _pieces(text: str, chars_per_s: float | None) -> list[tuple[float, str]]:
    """(delay before, piece) for a reply that streams in 4-character tokens."""
    if chars_per_s is None:
        return [(0.0, text)]
    return [(4 / chars_per_s, text[i : i + 4]) for i in range(0, len(text), 4)]


def streaming_first_audio(tts: TextToSpeech, chars_per_s: float | None) -> float:
    player = TimingPlayer()
    speaker = Speaker(tts, player)  # type: ignore[arg-type]
    start = time.perf_counter()
    for delay, piece in _pieces(REPLY, chars_per_s):
        if delay:
            time.sleep(delay)
        speaker.feed(piece)
    speaker.wait()
    speaker.close()
    assert player.first_audio is not None
    return player.first_audio - start


def whole_text_first_audio(tts: TextToSpeech, chars_per_s: float | None) -> float:
    player = TimingPlayer()
    start = time.perf_counter()
    received = []
    for delay, piece in _pieces(REPLY, chars_per_s):
        if delay:
            time.sleep(delay)
        received.append(piece)
    player.play(tts.synthesize("".join(received)), REPLY)
    assert player.first_audio is not None
    return player.first_audio - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--chars-per-s", type=float, default=80.0, help="LLM streaming speed (default 80)"
    )
    args = parser.parse_args()

    load_start = time.perf_counter()
    tts = TextToSpeech.from_settings(TtsSettings())
    load_s = time.perf_counter() - load_start
    audio_s = tts.synthesize(REPLY).size / tts.sample_rate  # also warms up onnxruntime
    print(f"voice {tts.name}: loaded in {load_s:.2f} s; reply is {audio_s:.1f} s of speech")
    print(f"{args.runs} runs each, alternating; medians\n")

    scenarios = [
        ("text all at once (voiced say)", None),
        (f"LLM stream at {args.chars_per_s:g} chars/s", args.chars_per_s),
    ]
    print(f"{'reply arrives as':<34}{'streaming':>12}{'whole text':>12}{'ratio':>8}")
    for label, speed in scenarios:
        streaming, whole = [], []
        for run in range(args.runs):
            pair = [(streaming, streaming_first_audio), (whole, whole_text_first_audio)]
            for results, measure in pair if run % 2 == 0 else reversed(pair):
                results.append(measure(tts, speed))
        s_med, w_med = statistics.median(streaming), statistics.median(whole)
        print(f"{label:<34}{s_med * 1000:>9.0f} ms{w_med * 1000:>9.0f} ms{w_med / s_med:>7.1f}x")
        spread = (
            f"  streaming {min(streaming) * 1000:.0f}-{max(streaming) * 1000:.0f} ms, "
            f"whole {min(whole) * 1000:.0f}-{max(whole) * 1000:.0f} ms"
        )
        print(spread)


if __name__ == "__main__":
    main()
