"""Soak `voiced run`: hours of speech, real noise and silence; does anything grow or get lost?

`voiced run` with its default configuration (the hey_jarvis wake-word model, the speech gate)
on the private PulseAudio server (bench/harness.py) hears, over and over: a request that makes
the scripted gpt-oss call the `current_time` tool and then answer, real noise without speech
(tests/recordings: music, traffic, machinery, keyboard, horns ...; fetched by
``python -m tests.recordings fetch``), a plain question and answer, and silence. The
microphone runs in real time: PulseAudio plays into it as a room would, so an hour of soak is
an hour of wall time (the in-process listen path, which can run faster, is what
bench/hearing.py measures).

Every ``--sample-s`` it records the daemon's memory (its capture child included: PSS summed),
threads and open file descriptors. At the end: growth after the warm-up, and the turns the
daemon was asked for (requests that reached the scripted LLM and were answered) against the
turn records in its journal.

Targets (issue 16): RSS growth < 5 % after warm-up; no thread or descriptor growth; no
record lost.

``--fast-hours H`` soaks the path that can run faster than real time instead: the code of
`voiced listen` (tests/recordings/listen.py: the same segmenter, speech gate and whisper,
the device replaced by an array) hears H hours of the same mix in 5-minute pieces with one
engine loaded once; this process's memory is sampled after each piece, and every request
must come out as one text (the TV and babble beds hold real voices, which `voiced listen`
rightly writes down; they are counted apart).

    python -m bench.soak [--minutes 60] [--warm-up-minutes 3] [--sample-s 30]
    python -m bench.soak --fast-hours 3
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import psutil

from bench.harness import audio_and_llm, voiced_run
from bench.idle import tree_rss_mib
from tests.ollama_server import Reply, ToolCall
from tests.recordings import STEADY, require_recordings
from tests.speech import synthesize

log = logging.getLogger("bench.soak")

REQUESTS = [
    ("Hey Jarvis, what time is it?", True),
    ("Hey Jarvis, how far away is the moon?", False),
    ("Hey Jarvis, what time is it in Tokyo?", True),
    ("Hey Jarvis, tell me something nice.", False),
]
ANSWER = Reply(content=["It is ", "a fine afternoon. ", "Anything else?"])
NOISE_S = 20.0
SILENCE_S = 8.0


@dataclass
class Sample:
    at_s: float
    rss_mib: float
    threads: int
    fds: int


def sample(process: psutil.Process, started: float) -> Sample:
    children = process.children(recursive=True)
    fds = process.num_fds() + sum(child.num_fds() for child in children)
    return Sample(time.monotonic() - started, tree_rss_mib(process), process.num_threads(), fds)


def noises() -> itertools.cycle:
    recordings = require_recordings()
    beds = []
    for index, kind in enumerate(STEADY):
        audio = recordings.noise(kind, NOISE_S, seed=index)
        level = np.sqrt(np.mean(audio**2)) or 1.0
        beds.append((kind, (audio * 10 ** (-26 / 20) / level).astype(np.float32)))
    return itertools.cycle(beds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warm-up-minutes", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--fast-hours", type=float, help="soak the listen path instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.fast_hours:
        fast_soak(args.fast_hours)
        return
    spoken = [
        (synthesize(text, seed=i, lead_s=0.3, tail_s=0.3), tool)
        for i, (text, tool) in enumerate(REQUESTS)
    ]
    beds = noises()
    samples: list[Sample] = []
    asked = 0
    with audio_and_llm() as (pulse, ollama, folder):
        ollama.default_reply = ANSWER
        with voiced_run(pulse, ollama, folder, "soak", wake_engine="model") as daemon:
            process = psutil.Process(daemon.proc.pid)
            started = time.monotonic()
            next_sample = 0.0
            end = args.minutes * 60
            for audio, tool in itertools.cycle(spoken):
                elapsed = time.monotonic() - started
                if elapsed >= end:
                    break
                if tool:
                    ollama.script(Reply(tool_calls=[ToolCall("current_time", {})]), ANSWER)
                before = len(daemon.records())
                pulse.play_into_mic(audio)
                asked += 1
                try:
                    daemon.wait_for_records(before + 1, timeout=60)
                except TimeoutError:
                    log.warning("no turn record for request %d", asked)
                kind, bed = next(beds)
                log.debug("noise: %s", kind)
                pulse.play_into_mic(bed)
                time.sleep(SILENCE_S)
                if time.monotonic() - started >= next_sample:
                    samples.append(sample(process, started))
                    next_sample += args.sample_s
                    log.info("%s", samples[-1])
            time.sleep(5)
            samples.append(sample(process, started))
            records = daemon.records()
            alive = daemon.proc.poll() is None
    report(samples, args.warm_up_minutes * 60, asked, records, alive)


def report(
    samples: list[Sample], warm_up_s: float, asked: int, records: list[dict], alive: bool
) -> None:
    warm = [s for s in samples if s.at_s >= warm_up_s] or samples
    first, last = warm[0], samples[-1]
    growth = 100.0 * (last.rss_mib - first.rss_mib) / first.rss_mib
    print(f"soak of `voiced run`: {samples[-1].at_s / 60:.1f} min, {asked} requests said")
    print("\n| minute | memory MiB (PSS, with the capture child) | threads | open fds |")
    print("|---|---|---|---|")
    for s in samples:
        print(f"| {s.at_s / 60:.1f} | {s.rss_mib:.0f} | {s.threads} | {s.fds} |")
    print(
        f"\nafter warm-up ({warm_up_s / 60:.0f} min): memory {first.rss_mib:.0f} -> "
        f"{last.rss_mib:.0f} MiB ({growth:+.1f} %, target < 5 %), threads {first.threads} -> "
        f"{last.threads}, fds {first.fds} -> {last.fds}"
    )
    answered = sum(1 for r in records if r.get("assistant") and not r.get("error"))
    print(
        f"requests said {asked}; turn records {len(records)} ({answered} answered, "
        f"{len(records) - answered} with an error or no answer; target: one answered record "
        f"per request, none from noise); daemon still running: {'yes' if alive else 'NO'}"
    )


PIECE_S = 300.0


def fast_soak(hours: float) -> None:
    from tests.recordings.listen import listen_to, load_listen_stt

    stt = load_listen_stt()
    spoken = [
        synthesize(text, seed=i, lead_s=0.3, tail_s=0.3) for i, (text, _) in enumerate(REQUESTS)
    ]
    beds = noises()
    silence = np.zeros(round(SILENCE_S * 16000), dtype=np.float32)
    process = psutil.Process()
    started = time.monotonic()
    samples = [sample(process, started)]
    said = heard = from_noise = 0
    audio_s = 0.0
    requests = itertools.cycle(spoken)
    while audio_s < hours * 3600:
        parts, count = [], 0
        while sum(p.size for p in parts) < PIECE_S * 16000:
            parts += [next(requests), silence, next(beds)[1], silence]
            count += 1
        piece = np.concatenate(parts)
        texts = [u["text"] for u in listen_to(piece, stt)]
        said += count
        jarvis = [t for t in texts if "jarvis" in t.lower() or "travis" in t.lower()]
        heard += len(jarvis)
        from_noise += len(texts) - len(jarvis)
        audio_s += piece.size / 16000
        samples.append(sample(process, started))
        log.info("%.0f min of audio: %s", audio_s / 60, samples[-1])
    took = time.monotonic() - started
    print(
        f"fast soak of `voiced listen`'s path: {audio_s / 3600:.1f} h of audio in "
        f"{took / 60:.1f} min ({audio_s / took:.1f}x real time)"
    )
    print("\n| audio minutes | memory MiB (this process) | threads |")
    print("|---|---|---|")
    step = max(1, len(samples) // 12)
    for index, s in enumerate(samples):
        if index % step == 0 or index == len(samples) - 1:
            print(f"| {index * PIECE_S / 60:.0f} | {s.rss_mib:.0f} | {s.threads} |")
    first, last = samples[1], samples[-1]
    growth = 100.0 * (last.rss_mib - first.rss_mib) / first.rss_mib
    print(
        f"\nafter the first piece: memory {first.rss_mib:.0f} -> {last.rss_mib:.0f} MiB "
        f"({growth:+.1f} %), threads {first.threads} -> {last.threads}; requests said {said}, "
        f"heard {heard}; other texts (the voices in the TV and babble beds) {from_noise}"
    )


if __name__ == "__main__":
    main()
