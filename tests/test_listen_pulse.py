"""`voiced listen` end to end: Piper speech played into a real PulseAudio virtual microphone."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from tests.noises import alarm, beeps, car_horn, knocks
from tests.pulse import PulseServer
from tests.speech import noise, synthesize, wer
from voiced.config import VadSettings
from voiced.speech.models import ModelStore
from voiced.transcripts import Journal

pulse_server = pulse_fixtures.pulse_server

SENTENCES = [
    "Turn off the lights in the kitchen and lock the back door.",
    "Please send the report to the whole team before lunch.",
]
# Generous: two cores shared with other work make whisper slow; nothing here asserts speed.
WAIT_S = 180.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model converted once for the module, passed to `voiced listen -m`."""
    return ModelStore(tmp_path_factory.mktemp("models")).resolve_whisper("tiny.en")


class Listen:
    """A `voiced listen` subprocess whose stdout lines and stderr are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voiced", "-v", "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**(env or os.environ), "PYTHONFAULTHANDLER": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._stderr_changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._stderr_changed:
                self.stderr.append(line)
                self._stderr_changed.notify_all()

    def wait_for_stderr(self, needle: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._stderr_changed:
            while sum(needle in line for line in self.stderr) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail(f"no {needle!r} on stderr; got:\n{''.join(self.stderr)}")
                self._stderr_changed.wait(min(left, 0.2))

    def next_line(self, timeout: float = WAIT_S) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout:.0f} s; stderr:\n{''.join(self.stderr)}")

    def stop(self, sig: int | None = signal.SIGTERM) -> tuple[int, list[str]]:
        """Signal it (``None``: it was signalled), wait for the exit; return the exit status
        and the remaining lines."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            time.sleep(1.0)
            self.kill()
            pytest.fail(f"voiced listen did not exit; stderr:\n{''.join(self.stderr)}")
        time.sleep(0.1)  # let the reader threads drain the pipes
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rc, rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listen_process():
    started: list[Listen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Listen:
        process = Listen(*args, env=env)
        started.append(process)
        process.wait_for_stderr("listening on")
        return process

    yield start
    for process in started:
        process.kill()


def test_spoken_sentences_are_printed_and_journaled(
    pulse_server: PulseServer, listen_process, model_path: Path, voiced_home: Path
) -> None:
    listen = listen_process("--format", "jsonl", "-m", str(model_path))
    talk = np.concatenate(
        [synthesize(SENTENCES[0], seed=1), noise(1.0, seed=2), synthesize(SENTENCES[1], seed=3)]
    )
    pulse_server.play_into_mic(talk)
    records = [json.loads(listen.next_line()) for _ in SENTENCES]
    rc, rest = listen.stop()
    assert rc == 0, "".join(listen.stderr)
    assert rest == [], "a pause between two sentences must give exactly two utterances"
    for record, sentence in zip(records, SENTENCES, strict=True):
        assert wer(sentence, record["text"]) <= 0.15, record["text"]
        assert 0 <= record["start_s"] < record["end_s"]
        assert VadSettings().speech_threshold <= record["speech_prob"] <= 1.0
        start = dt.datetime.fromisoformat(record["start"])
        end = dt.datetime.fromisoformat(record["end"])
        assert start.tzinfo is not None and start < end
        # Times on the stream and on the wall clock tell the same story.
        assert (end - start).total_seconds() == pytest.approx(
            record["end_s"] - record["start_s"], abs=0.01
        )
    assert records[0]["end_s"] < records[1]["start_s"]
    # The journal holds the same utterances, privately.
    directory = voiced_home / "transcripts"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert [f.name for f in files] == [f"{dt.date.today().isoformat()}.jsonl"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    journal = list(Journal(directory).records())
    assert [r["text"] for r in journal] == [r["text"] for r in records]
    assert [r["id"] for r in journal] == [r["id"] for r in records]
    assert [r["speech_prob"] for r in journal] == [r["speech_prob"] for r in records]
    for entry in journal:
        assert entry["kind"] == "dictation"
        assert entry["timings"]["endpoint_wait_ms"] == 720
        assert entry["timings"]["stt_ms"] > 0
        assert "default" in entry["source"]


def test_silence_and_noise_give_no_text(
    pulse_server: PulseServer, listen_process, model_path: Path, voiced_home: Path
) -> None:
    listen = listen_process("-m", str(model_path))
    # Each sound long enough to open the energy gate and be judged (the in-process tests of
    # test_speech_gate.py and test_hearing_real.py play longer and real ones).
    t = np.arange(2 * 16000) / 16000
    hum = (0.05 * np.sin(2 * np.pi * 50 * t) + 0.02 * np.sin(2 * np.pi * 150 * t)).astype(
        np.float32
    )
    sounds = np.concatenate(
        [
            np.zeros(8000, dtype=np.float32),  # digital silence
            noise(1.0, dbfs=-60, seed=3),  # a quiet room
            noise(2.0, dbfs=-30, seed=4),  # a fan switching on
            noise(2.0, dbfs=-20, seed=5),  # a loud one
            hum + noise(2.0, seed=6),  # mains hum
            noise(1.0, dbfs=-60, seed=7),
            car_horn(),  # what whisper writes "Beep beep beep ..." for
            beeps(2.0),
            alarm(2.0),
            knocks(2.0),
        ]
    )
    pulse_server.play_into_mic(sounds)
    time.sleep(1.0)
    rc, lines = listen.stop()
    assert rc == 0, "".join(listen.stderr)
    assert lines == []
    assert list(Journal(voiced_home / "transcripts").records()) == []


STOP_SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
# About 7 s of speech: most of it comes after the signal, far more than a short grace.
LONG_SENTENCE = (
    "Please remind me to water the plants tomorrow morning, and then call my sister "
    "to ask whether she still wants to come over for dinner on Friday."
)


@pytest.fixture(scope="module")
def stopped_mid_utterance(
    pulse_server: PulseServer, model_path: Path
) -> Iterator[dict[int, tuple[int, list[str], list[str]]]]:
    """One `voiced listen` per stop signal, all hearing the same long sentence; each gets its
    signal a second into the speech. signal -> (exit status, lines printed after it, stderr)."""
    listens = {sig: Listen("-m", str(model_path)) for sig in STOP_SIGNALS.values()}
    try:
        for listen in listens.values():
            listen.wait_for_stderr("listening on")
        speech = synthesize(LONG_SENTENCE, seed=8, lead_s=0.5, tail_s=1.5)
        with pulse_server.play_into_mic(speech, wait=False) as playback:
            time.sleep(0.5 + 0.25 + 1.0)  # lead, the playback buffer, then a second of speech
            for sig, listen in listens.items():
                listen.proc.send_signal(sig)
            stopped = {sig: listen.stop(None) for sig, listen in listens.items()}
            playback.wait()
        yield {sig: (*stopped[sig], listens[sig].stderr) for sig in listens}
    finally:
        for listen in listens.values():
            listen.kill()


@pytest.mark.parametrize("name", list(STOP_SIGNALS))
def test_a_stop_signal_finishes_the_utterance_in_flight(stopped_mid_utterance, name: str) -> None:
    rc, lines, stderr = stopped_mid_utterance[STOP_SIGNALS[name]]
    assert rc == 0, "".join(stderr)
    assert any("Ctrl-C again to quit now" in line for line in stderr), stderr
    assert len(lines) == 1, lines
    assert wer(LONG_SENTENCE, lines[0]) <= 0.15, lines[0]


def test_a_lost_sound_server_is_reported_and_reconnected(
    listen_process, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = PulseServer(tmp_path_factory.mktemp("pulse-b", numbered=True))
    server.start()
    try:
        env = {**os.environ, **server.env_vars}
        listen = listen_process("-m", str(model_path), env=env)
        server.stop()
        listen.wait_for_stderr("retrying in")
        assert any("disconnected" in line or "no audio" in line for line in listen.stderr)
        assert listen.proc.poll() is None
        server.start()
        listen.wait_for_stderr("listening on", count=2, timeout=60)
        sentence = SENTENCES[0]
        server.play_into_mic(synthesize(sentence, seed=9))
        text = listen.next_line()
        rc, _ = listen.stop()
    finally:
        server.stop()
    assert rc == 0, "".join(listen.stderr)
    assert wer(sentence, text) <= 0.15, text


def test_an_unknown_device_is_reported_with_candidates_and_retried(
    pulse_server: PulseServer, model_path: Path
) -> None:
    listen = Listen("-m", str(model_path), "--input-device", "no such mic")
    try:
        listen.wait_for_stderr("retrying in", count=2)
        message = next(line for line in listen.stderr if "no such mic" in line)
        assert "no input device matches 'no such mic'" in message
        assert "'pulse' (ALSA)" in message and "'default' (ALSA)" in message
        rc, lines = listen.stop()
    finally:
        listen.kill()
    assert rc == 0
    assert lines == []


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voiced", "listen", "-m", str(tmp_path / "nope.bin")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot load the speech model" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
