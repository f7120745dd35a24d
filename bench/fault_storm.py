"""Fault storm: one `voiced run` meets 100+ injected faults; does it keep answering?

One daemon (default configuration: the hey_jarvis wake-word model; bench/harness.py's private
PulseAudio and scripted Ollama; transcripts on a small tmpfs of their own) is asked a
question, then meets a fault, in rounds. The faults, in turn:

* the LLM: HTTP 500 before any chunk, a runner error after the first chunk, a dropped
  stream, a stalled stream (``llm.idle_timeout_s`` is 2 s here), a tool call Ollama could
  not parse, each scripted twice so that voiced's one retry meets it too;
* the microphone: the sound server stops for 2 s and comes back (microphone and speaker go);
* the speaker alone: the default sink is unloaded during a reply (its stream moves to a spare
  sink, as a desktop's does to its other output) and loaded again, the spare removed;
* the transcript disk: filled to the last byte during a turn, emptied afterwards;
* SIGHUP during a turn.

After every fault a probe question must be answered (a turn record with the scripted answer
and no error). At the end: faults injected, probes answered, the daemon alive, and every turn
that finished (each question said) in the journal. Needs root for the tmpfs (``mount``).

A probe that fails is asked once more (does the daemon recover, or was it one lost
question?), and the daemon's debug log of that round goes to ``--failures``.

    python -m bench.fault_storm [--faults 100] [--failures FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.harness import Daemon, audio_and_llm, voiced_run
from tests.ollama_server import Reply
from tests.pulse import SPEAKER_SINK
from tests.speech import synthesize

log = logging.getLogger("bench.fault_storm")

PROBE = "Hey Jarvis, what time is it?"
QUESTION = "Hey Jarvis, tell me about the moon."
ANSWER = Reply(content=["It is ", "a fine afternoon. ", "Anything else?"])
LONG = Reply(
    content=[
        "The moon is about three hundred eighty thousand kilometres away. ",
        "It drifts away by about four centimetres every year. ",
        "Tides and eclipses depend on that distance. ",
    ],
    chunk_delay_s=0.3,
)
LLM_CONFIG = "  idle_timeout_s: 2.0\n  request_timeout_s: 20.0\n"
TMPFS_KIB = 512


class Storm:
    def __init__(self, daemon: Daemon, transcripts: Path) -> None:
        self.daemon = daemon
        self.transcripts = transcripts
        self.said = 0
        self.clips = {text: synthesize(text, seed=i) for i, text in enumerate((PROBE, QUESTION))}

    def say(self, text: str, *, wait: bool = True) -> None:
        self.said += 1
        self.daemon.pulse.play_into_mic(self.clips[text], wait=wait)

    def turn(self, *replies: Reply, during: Callable[[], None] | None = None) -> dict | None:
        """Say the question with ``replies`` scripted; ``during`` runs while it is answered."""
        before = len(self.daemon.records())
        self.daemon.ollama.script(*replies)
        self.say(QUESTION)
        if during is not None:
            time.sleep(1.0)  # transcription done, the reply under way
            during()
        record = self._record_of("moon", before)
        self.daemon.ollama.clear_script()  # what a fault left unasked (no retry was due)
        return record

    def probe(self) -> bool:
        """Ask the probe question; True when it got the scripted answer and no error."""
        before = len(self.daemon.records())
        self.daemon.ollama.script(ANSWER)
        self.say(PROBE)
        record = self._record_of("time is it", before)
        self.daemon.ollama.clear_script()
        if record is None:
            log.warning("no record for the probe")
            return False
        ok = record.get("assistant") == "It is a fine afternoon. Anything else?"
        if not ok or record.get("error"):
            log.warning(
                "probe answered %r (error %r)", record.get("assistant"), record.get("error")
            )
        return ok and not record.get("error")

    def _record_of(self, words: str, after: int, timeout: float = 60.0) -> dict | None:
        """The first turn record after index ``after`` whose request holds ``words``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.daemon.records()[after:]:
                if words in str(record.get("text", "")).lower():
                    return record
            time.sleep(0.1)
        return None

    # -- the faults ---------------------------------------------------------------------

    def http_500(self) -> None:
        error = Reply.http_error(500, "llama runner process has terminated")
        self.turn(error, error)

    def stream_error(self) -> None:
        error = Reply.stream_error("llama runner process has terminated", after=1, content=["A"])
        self.turn(error, error)

    def dropped(self) -> None:
        drop = Reply(content=["The moon ", "is far."], drop_after=1)
        self.turn(drop, drop)

    def stalled(self) -> None:
        stall = Reply(content=["The moon ", "is far."], stall_after=1)
        self.turn(stall, stall)
        self.daemon.ollama.release_stalls()

    def mangled_tool_call(self) -> None:
        self.turn(Reply.tool_call_error(), Reply.tool_call_error())

    def microphone_gone(self) -> None:
        self.daemon.pulse.stop()
        time.sleep(2.0)
        self.daemon.pulse.start()
        time.sleep(3.0)  # the capture's backoff: 0.5 s, then 1 s

    def speaker_gone(self) -> None:
        pulse = self.daemon.pulse

        def unplug() -> None:
            # PulseAudio moves a vanished sink's streams to the default sink: make that a
            # spare (a desktop's other output), not the virtual microphone's sink.
            spare = pulse.load_module("module-null-sink", "sink_name=spare")
            pulse.pactl("set-default-sink", "spare")
            modules = pulse.pactl("list", "short", "modules").splitlines()
            (index,) = [m.split("\t")[0] for m in modules if f"sink_name={SPEAKER_SINK} " in m]
            pulse.unload_module(int(index))
            time.sleep(1.0)
            pulse.load_module(
                "module-null-sink", f"sink_name={SPEAKER_SINK}", "rate=48000", "channels=2"
            )
            pulse.pactl("set-default-sink", SPEAKER_SINK)
            pulse.unload_module(spare)

        self.turn(LONG, during=unplug)

    def disk_full(self) -> None:
        filler = self.transcripts / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * 4096)
        self.turn(ANSWER)
        filler.unlink()

    def sighup(self) -> None:
        self.turn(LONG, during=lambda: os.kill(self.daemon.proc.pid, signal.SIGHUP))


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_KIB}k", "tmpfs", str(path)], check=True
    )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument(
        "--failures",
        type=Path,
        help="write the daemon's debug log of each failed probe's round here",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kinds = [
        "http_500",
        "stream_error",
        "dropped",
        "stalled",
        "mangled_tool_call",
        "microphone_gone",
        "speaker_gone",
        "disk_full",
        "sighup",
    ]
    injected: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    answered_again: Counter[str] = Counter()
    failures: list[str] = []
    with audio_and_llm() as (pulse, ollama, folder):
        transcripts = folder / "storm" / "transcripts"
        with (
            tmpfs(transcripts),
            voiced_run(
                pulse,
                ollama,
                folder,
                "storm",
                wake_engine="model",
                llm_config=LLM_CONFIG,
                verbose=2,
            ) as daemon,
        ):
            storm = Storm(daemon, transcripts)
            storm.probe()  # warm
            for number, kind in zip(range(args.faults), itertools.cycle(kinds), strict=False):
                start = daemon.log_size()
                getattr(storm, kind)()
                injected[kind] += 1
                ok = storm.probe() and daemon.proc.poll() is None
                survived[kind] += ok
                if not ok:
                    failures.append(f"## fault {number + 1}: {kind}\n\n{daemon.log_since(start)}")
                    again = storm.probe() and daemon.proc.poll() is None
                    answered_again[kind] += again
                    log.info("fault %d %s: FAILED, asked again: %s", number + 1, kind, again)
                else:
                    log.info("fault %d %s: answered after", number + 1, kind)
            time.sleep(3)
            records = daemon.records()
            alive = daemon.proc.poll() is None
            said = storm.said
    if args.failures is not None:
        args.failures.write_text("\n\n".join(failures))
    print(f"fault storm: {sum(injected.values())} faults in one `voiced run`\n")
    print("| fault | injected | answered the next question | answered when asked again |")
    print("|---|---|---|---|")
    for kind in kinds:
        print(f"| {kind} | {injected[kind]} | {survived[kind]} | {answered_again[kind]} |")
    total = sum(survived.values())
    again = sum(answered_again.values())
    print(f"| **all** | {sum(injected.values())} | **{total}** | {again} |")
    print(
        f"\nquestions said {said}; turn records in the journal {len(records)}; "
        f"daemon still running: {'yes' if alive else 'NO'}"
    )


if __name__ == "__main__":
    main()
