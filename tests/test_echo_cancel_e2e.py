"""``voiced run`` with ``audio.echo_cancel: true`` on the real PulseAudio canceller, with the
speaker looped back into the microphone (``module-loopback``): its own reply never starts a
turn. With the wake-word model (hey_jarvis, the default engine).

tests/test_echo_cancel.py shows the wake word said over a reply detected on the cancelled
source (and missed on the raw microphone). Through the daemon's own playback the stop word over
the reply was heard in only about half of the runs here (the canceller's residue varies with
PortAudio's underruns on this loaded 2-core machine), so that case is not a test yet: it is open
in issue 13.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from tests.daemon import DaemonHandle, voiced_run
from tests.ollama_server import OllamaTestServer, Reply
from tests.speech import synthesize
from tests.store import seed_models
from voiced.audio import echo_cancel as ec

pytestmark = pytest.mark.pulse
pulse_server = pulse_fixtures.pulse_server

FOLLOW_UP_S = 2.0
SAID = ["Hey Jarvis, how far away is the moon?", "Hey Jarvis, tell me a story.", "Hey Jarvis."]
_SPEECH: dict[str, np.ndarray] = {}


def say(pulse_server, text: str) -> None:
    pulse_server.play_into_mic(_SPEECH[text])


@pytest.fixture(scope="module")
def daemon(pulse_server, whisper_store: Path, tmp_path_factory) -> Iterator[DaemonHandle]:
    for index, text in enumerate(SAID):
        _SPEECH[text] = synthesize(text, seed=10 + index)
    ollama = OllamaTestServer().start()
    home = tmp_path_factory.mktemp("aec_daemon_home")
    seed_models(home, whisper_store)
    (home / "config.yaml").write_text(
        "audio:\n  echo_cancel: true\n"
        f"llm:\n  host: {ollama.url}\n"
        f"wake:\n  engine: model\n  model: hey_jarvis\n  follow_up_s: {FOLLOW_UP_S}\n"
        "tools:\n  enabled: [time]\n"
        "stt:\n  threads: 1\n"
    )
    # The echo path: monitors can start at 33 %, so full volume makes the echo loud.
    for source in (f"{pulse_fixtures.SPEAKER_SINK}.monitor", pulse_fixtures.MIC_SOURCE):
        pulse_server.pactl("set-source-volume", source, "100%")
    loopback = pulse_server.load_module(
        "module-loopback",
        f"source={pulse_fixtures.SPEAKER_SINK}.monitor",
        f"sink={pulse_fixtures.MIC_SINK}",
        "latency_msec=30",
    )
    try:
        with voiced_run(
            pulse_server, ollama, home, env={"PULSE_SOURCE": None, "PULSE_SINK": None}
        ) as handle:
            yield handle
    finally:
        ollama.stop()
        pulse_server.unload_module(loopback)
        ec.disable()


def wait_until_idle(daemon: DaemonHandle, seen: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        statuses = [m for m in daemon.messages("STATUS=")[seen:]]
        if "STATUS=speaking" in statuses and statuses[-1] == "STATUS=idle":
            return
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.05)


def test_the_daemon_loads_the_canceller_and_talks_through_it(daemon, pulse_server) -> None:
    modules = pulse_server.pactl("list", "short", "modules")
    assert modules.count(f"source_name={ec.SOURCE_NAME}") == 1
    # The desktop's defaults are left alone: only voiced's own streams are routed.
    info = pulse_server.pactl("info")
    assert f"Default Source: {pulse_fixtures.MIC_SOURCE}" in info
    assert f"Default Sink: {pulse_fixtures.SPEAKER_SINK}" in info
    assert "echo cancellation on" in daemon.log()
    sources = [
        line.split("\t") for line in pulse_server.pactl("list", "short", "sources").splitlines()
    ]
    (index,) = [fields[0] for fields in sources if fields[1] == ec.SOURCE_NAME]
    outputs = [
        line.split("\t")
        for line in pulse_server.pactl("list", "short", "source-outputs").splitlines()
    ]
    # voiced's microphone stream (a client, not a module) records from the cancelled source.
    assert any(f[1] == index and f[3] == "protocol-native.c" for f in outputs), outputs


def test_its_own_reply_never_starts_a_turn(daemon, pulse_server) -> None:
    # The reply is looped back into the microphone: nothing of it may start a turn.
    reply = (
        "The moon is about three hundred eighty thousand kilometres away. "
        "Computer models say it drifts away by about four centimetres a year."
    )
    daemon.ollama.script(Reply(content=[reply]))
    before = len(daemon.conversation_requests())
    count = len(daemon.records())
    seen = len(daemon.messages("STATUS="))
    say(pulse_server, "Hey Jarvis, how far away is the moon?")
    (record,) = daemon.wait_for_records(count + 1)[count:]
    wait_until_idle(daemon, seen)
    time.sleep(FOLLOW_UP_S + 1.5)
    assert len(daemon.conversation_requests()) == before + 1
    assert len(daemon.records()) == count + 1
    assert record["assistant"] == reply and not record.get("interrupted")
