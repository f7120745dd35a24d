"""The silence an utterance keeps before transcription starts, and what it costs whisper.

With ``vad.end_of_turn: model`` a pause is transcribed after ``vad.turn_post_roll_ms`` when
the speech gate hears that stretch as silence, else after min(post_roll_ms, turn_pause_ms).
This measures whisper's WER (as ``voiced run`` loads it) on what the segmenter keeps, on the
real Asterisk prompts clean and in real noise (tests/RECORDINGS.md) and on Piper questions,
for: the default (the gate decides), the short post-roll always, the long one always.

    python -m bench.post_roll [--noises music,traffic,machinery] [--snrs 10,5]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.end_of_turn import COMPLETE
from tests.recordings import require_recordings
from tests.speech import synthesize, wer
from voiced.audio.segmenter import Segmenter, UtteranceEnded, speech_gate
from voiced.config import Settings, VadSettings
from voiced.speech.stt import SpeechToText, listener_threads


def kept(audio: np.ndarray, settings: VadSettings, always_quiet: bool) -> list[UtteranceEnded]:
    """The utterances the segmenter ends (by silence: no verdicts) in ``audio``."""
    segmenter = Segmenter(settings, gate=speech_gate(settings), judge_turns=True)
    if always_quiet:
        segmenter._quiet_tail = lambda: True  # type: ignore[method-assign]
    events = [e for o in range(0, audio.size, 960) for e in segmenter.feed(audio[o : o + 960])]
    return [e for e in events + segmenter.flush() if isinstance(e, UtteranceEnded)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noises", default="music,traffic,machinery")
    parser.add_argument("--snrs", default="10,5")
    args = parser.parse_args()
    settings = Settings()
    stt = SpeechToText.from_settings(
        settings.stt, flash_attention=False, threads=listener_threads(settings.stt.threads)
    )
    stt.warm_up()
    recordings = require_recordings()
    rng = np.random.default_rng(0)
    items: list[tuple[str, str, np.ndarray]] = []
    for clip in recordings.speech_clips():
        silence = np.zeros(8000, np.float32)
        audio = np.concatenate([silence, clip.audio, silence, silence, silence])
        floor = rng.standard_normal(audio.size).astype(np.float32) * 10 ** (-60 / 20)
        items.append(("real clean", clip.text or "", audio + floor))
        for kind in args.noises.split(","):
            for snr in (float(s) for s in args.snrs.split(",")):
                _, noisy = recordings.noisy(clip.name, kind, snr)
                items.append((f"real {kind} {snr:.0f} dB", clip.text or "", noisy))
    for i, question in enumerate(COMPLETE):
        items.append(("piper", question, synthesize(question, seed=i, tail_s=1.5)))

    quick = settings.vad.turn_post_roll_ms
    full = min(settings.vad.post_roll_ms, settings.vad.turn_pause_ms)
    variants: dict[str, tuple[VadSettings, bool]] = {
        f"gate decides ({quick}/{full})": (settings.vad, False),
        f"always {quick}": (settings.vad, True),
        f"always {full}": (settings.vad.model_copy(update={"turn_post_roll_ms": full}), False),
    }
    print(f"{len(items)} clips; WER % (short post-roll taken / utterances)")
    table: dict[str, dict[str, list[float]]] = {}
    shorts: dict[str, dict[str, list[int]]] = {}
    for name, (vad, always_quiet) in variants.items():
        for group, text, audio in items:
            ended = kept(audio, vad, always_quiet)
            heard = " ".join(stt.transcribe(e.audio).text.strip() for e in ended)
            table.setdefault(group, {}).setdefault(name, []).append(wer(text, heard))
            ms = [round((e.audio_end_s - e.end_s) * 1000) for e in ended]
            shorts.setdefault(group, {}).setdefault(name, []).extend(m == quick for m in ms)

    def cell(group: str, name: str) -> str:
        short = shorts[group][name]
        return f"{np.mean(table[group][name]) * 100:5.1f} ({sum(short)}/{len(short)})"

    print(f"{'':22}" + "".join(f"{n:>26}" for n in variants))
    for group in table:
        print(f"{group:22}" + "".join(f"{cell(group, n):>26}" for n in variants))
    noisy = [g for g in table if g.startswith("real ") and g != "real clean"]
    means = [np.mean([w for g in noisy for w in table[g][n]]) * 100 for n in variants]
    print(f"{'mean in noise':22}" + "".join(f"{m:>26.2f}" for m in means))


if __name__ == "__main__":
    main()
