"""``voiced audio echo-cancel`` against the real PulseAudio test server, and what the
sound server's echo canceller (module-echo-cancel, WebRTC) does to voiced's own voice.

The echo path is ``module-loopback`` from the speaker's monitor into the microphone's sink:
a pure delay, easier than a real room, but the canceller is the real one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from tests import pulse as pulse_fixtures
from tests.speech import synthesize
from voiced.audio import echo_cancel as ec
from voiced.cli import main

log = logging.getLogger(__name__)
pytestmark = pytest.mark.pulse
pulse_server = pulse_fixtures.pulse_server

REPLY = (
    "The moon is about three hundred eighty thousand kilometres away, and its light "
    "takes a little over one second to reach us."
)


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def modules(pulse_server) -> list[list[str]]:
    return [
        line.split("\t") for line in pulse_server.pactl("list", "short", "modules").splitlines()
    ]


def ours(pulse_server) -> list[list[str]]:
    return [
        m
        for m in modules(pulse_server)
        if m[1] == ec.MODULE and f"source_name={ec.SOURCE_NAME}" in m[2]
    ]


def defaults(pulse_server) -> tuple[str, str]:
    info = dict(
        line.split(": ", 1) for line in pulse_server.pactl("info").splitlines() if ": " in line
    )
    return info["Default Source"], info["Default Sink"]


def volume_percent(pulse_server, source: str) -> str:
    lines = pulse_server.pactl("list", "sources").splitlines()
    start = lines.index(f"\tName: {source}")
    volume = next(line for line in lines[start:] if line.strip().startswith("Volume:"))
    return volume.split("/")[1].strip()


@pytest.fixture
def clean_server(pulse_server) -> Iterator[pulse_fixtures.PulseServer]:
    """The test server as the fixture made it, before and after the test."""
    yield pulse_server
    for module in ours(pulse_server):
        pulse_server.unload_module(int(module[0]))
    pulse_server.pactl("set-default-source", pulse_fixtures.MIC_SOURCE)
    pulse_server.pactl("set-default-sink", pulse_fixtures.SPEAKER_SINK)


# --------------------------------------------------------------------------- the command


def test_on_is_idempotent_and_off_removes_only_ours(clean_server) -> None:
    server = clean_server
    bystander = server.load_module("module-null-sink", "sink_name=bystander", "norewinds=1")
    # Someone else's echo canceller, under other names: never ours to touch.
    foreign = server.load_module(
        "module-echo-cancel",
        "aec_method=webrtc",
        f"source_master={pulse_fixtures.MIC_SOURCE}",
        f"sink_master={pulse_fixtures.SPEAKER_SINK}",
        "source_name=their_ec_source",
        "sink_name=their_ec_sink",
    )
    try:
        off = invoke("audio", "echo-cancel", "status")
        assert off.exit_code == 3, off.output
        assert "echo cancel: off" in off.stdout

        first = invoke("audio", "echo-cancel", "on")
        assert first.exit_code == 0, first.output
        assert "loaded" in first.stdout and "already" not in first.stdout
        second = invoke("audio", "echo-cancel", "on")
        assert second.exit_code == 0, second.output
        assert "already loaded" in second.stdout
        (module,) = ours(server)
        assert f"source_master={pulse_fixtures.MIC_SOURCE}" in module[2]
        assert f"sink_master={pulse_fixtures.SPEAKER_SINK}" in module[2]
        assert defaults(server) == (ec.SOURCE_NAME, ec.SINK_NAME)

        status = invoke("audio", "echo-cancel", "status", "--json")
        assert status.exit_code == 0, status.output
        report = json.loads(status.stdout)
        assert report["on"] and report["module"] == int(module[0])
        assert report["source_master"] == pulse_fixtures.MIC_SOURCE
        assert report["sink_master"] == pulse_fixtures.SPEAKER_SINK
        assert report["voiced_source"] == ec.SOURCE_NAME and report["voiced_cancelled"] is True
        text = invoke("audio", "echo-cancel", "status").stdout
        assert f"microphone: {pulse_fixtures.MIC_SOURCE} -> {ec.SOURCE_NAME}" in text
        assert "voiced: listens on voiced_aec_source (cancelled)" in text

        # A microphone named in the config bypasses the sound server's default.
        config = server.dir / "hw.yaml"
        config.write_text("audio:\n  input_device: not-a-server-device\n")
        bypass = json.loads(
            invoke("--config", str(config), "audio", "echo-cancel", "status", "--json").stdout
        )
        assert bypass["voiced_source"] is None and bypass["voiced_cancelled"] is False

        gone = invoke("audio", "echo-cancel", "off")
        assert gone.exit_code == 0, gone.output
        assert ours(server) == []
        indexes = {int(m[0]) for m in modules(server)}
        assert {bystander, foreign} <= indexes
        assert defaults(server) == (pulse_fixtures.MIC_SOURCE, pulse_fixtures.SPEAKER_SINK)
        assert invoke("audio", "echo-cancel", "off").stdout.strip() == "echo cancel was not on"
        assert invoke("audio", "echo-cancel", "status").exit_code == 3
    finally:
        server.unload_module(foreign)
        server.unload_module(bystander)


def test_keep_defaults_and_a_named_master(clean_server) -> None:
    # Not micsink: a canceller that plays into its own microphone's sink hangs the server.
    other = clean_server.load_module("module-null-sink", "sink_name=otherspk", "norewinds=1")
    try:
        result = invoke("audio", "echo-cancel", "on", "--keep-defaults", "--speaker", "otherspk")
        assert result.exit_code == 0, result.output
        assert "audio.echo_cancel: true" in result.stderr
        assert defaults(clean_server) == (pulse_fixtures.MIC_SOURCE, pulse_fixtures.SPEAKER_SINK)
        (module,) = ours(clean_server)
        assert "sink_master=otherspk" in module[2]
        again = invoke("audio", "echo-cancel", "on", "--keep-defaults")
        assert again.exit_code == 0 and "already loaded" in again.stdout  # no master named: kept
        # Asking for another speaker replaces our module; still one.
        moved = invoke("audio", "echo-cancel", "on", "--keep-defaults", "--speaker", "spk")
        assert moved.exit_code == 0, moved.output
        (module,) = ours(clean_server)
        assert "sink_master=spk" in module[2]
    finally:
        for module in ours(clean_server):
            clean_server.unload_module(int(module[0]))
        clean_server.unload_module(other)


def test_clear_errors(clean_server) -> None:
    missing = invoke("audio", "echo-cancel", "on", "--mic", "no_such_mic")
    assert missing.exit_code == 1
    (line,) = missing.stderr.strip().splitlines()
    assert "no source (microphone) named 'no_such_mic'" in line and "vmic" in line
    assert ours(clean_server) == []

    env = {"PULSE_SERVER": f"unix:{clean_server.dir}/no-such-socket"}
    for action in ("on", "off", "status"):
        dead = invoke("audio", "echo-cancel", action, env=env)
        assert dead.exit_code == 1, dead.output
        (line,) = dead.stderr.strip().splitlines()
        assert "no sound server answers" in line, line

    no_pactl = invoke("audio", "echo-cancel", "status", env={"PATH": str(clean_server.dir)})
    assert no_pactl.exit_code == 1
    assert "pactl not found" in no_pactl.stderr and "pulseaudio-utils" in no_pactl.stderr


def test_doctor_says_whether_voiced_hears_a_cancelled_source(clean_server) -> None:
    skip = [f"--skip={name}" for name in ("stt", "tts", "input", "output", "ollama", "model")]
    before = invoke("doctor", *skip)
    assert before.exit_code == 0, before.output  # a warning is not a failure
    assert "warn echo cancel: no echo canceller" in before.stdout
    assert "voiced audio echo-cancel on" in before.stdout
    invoke("audio", "echo-cancel", "on", "--keep-defaults")
    loaded = invoke("doctor", *skip).stdout
    assert "warn echo cancel: the echo canceller is loaded, but voiced listens on vmic" in loaded
    invoke("audio", "echo-cancel", "on")
    after = invoke("doctor", *skip).stdout
    assert "ok   echo cancel: voiced listens on voiced_aec_source (cancelled)" in after


# --------------------------------------------------------------------------- the canceller


def rms_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9))


@pytest.fixture(scope="module")
def echo_path(pulse_server) -> Iterator[pulse_fixtures.PulseServer]:
    """voiced's canceller over vmic/spk, and the speaker looped back into the microphone.

    One for the module: the canceller the first test converges is the one the next one uses.
    """
    server = pulse_server
    ec.enable(make_default=False)
    # Monitors and remapped sources can start at 33 %: full volume, so the echo is loud.
    for source in (f"{pulse_fixtures.SPEAKER_SINK}.monitor", pulse_fixtures.MIC_SOURCE):
        server.pactl("set-source-volume", source, "100%")
    try:
        with server.loopback():
            yield server
    finally:
        for module in ours(server):
            server.unload_module(int(module[0]))
        server.pactl("set-default-source", pulse_fixtures.MIC_SOURCE)
        server.pactl("set-default-sink", pulse_fixtures.SPEAKER_SINK)


def record_both(server, play: list[tuple[np.ndarray, str, float]], seconds: float):
    """Record the raw microphone and the cancelled source while ``play`` runs.

    ``play``: (audio, sink, delay_s) started in order in the background.
    """
    raw = server.start_recording(pulse_fixtures.MIC_SOURCE)
    cancelled = server.start_recording(ec.SOURCE_NAME)
    time.sleep(0.3)
    started = time.monotonic()
    players = []
    for audio, sink, delay in play:
        time.sleep(max(0.0, started + delay - time.monotonic()))
        players.append(server.play_into_mic(audio, sink=sink, wait=False))
    for player in players:
        player.wait(seconds + 10)
        player.stop()
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    return raw.stop(), cancelled.stop()


@pytest.fixture(scope="module")
def reply_alone(echo_path) -> tuple[np.ndarray, np.ndarray]:
    """The reply played alone over the echo path: (raw microphone, cancelled source).

    Played once for the module: it also lets the canceller converge, as it has during any
    earlier reply, before the wake word is said over the reply.
    """
    reply = synthesize(REPLY, seed=3)
    return record_both(echo_path, [(reply, ec.SINK_NAME, 0.0)], reply.size / 16000 + 0.5)


def test_the_canceller_removes_voiceds_own_voice(echo_path, reply_alone) -> None:
    raw, cancelled = reply_alone
    echo_db, left_db = rms_db(raw), rms_db(cancelled)
    log.info(f"echo on the raw mic {echo_db:.1f} dBFS, on the cancelled source {left_db:.1f} dBFS")
    assert echo_db > -35.0  # the echo really reached the microphone
    assert left_db < echo_db - 12.0  # measured here: 23-27 dB lower
    # The microphone's own volume is left alone (WebRTC's analog AGC would turn it down).
    assert volume_percent(echo_path, pulse_fixtures.MIC_SOURCE) == "100%"


def wake_probability(audio: np.ndarray) -> float:
    """The highest "hey jarvis" probability microWakeWord gives anywhere in ``audio``."""
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

    model = MicroWakeWord.from_builtin(Model.HEY_JARVIS)
    features = MicroWakeWordFeatures()
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
    best = 0.0
    for chunk in features.process_streaming(pcm):
        probability = model.process_streaming_prob(chunk)
        if probability is not None:
            best = max(best, probability)
    return best


def test_a_wake_word_over_the_reply_is_heard_on_the_cancelled_source(
    echo_path, reply_alone
) -> None:
    """microWakeWord directly; voiced's own detector replaces it when it lands."""
    pytest.importorskip("pymicro_wakeword")
    reply = synthesize(REPLY, seed=3)
    wake = synthesize("Hey Jarvis.", seed=4)
    # The reply alone (played by the fixture, which let the canceller converge), without the
    # wake word, wakes nothing on the cancelled source.
    _, alone = reply_alone
    assert wake_probability(alone) < 0.5
    raw_scores, cancelled_scores = [], []
    # Said at four places in the reply: WebRTC's double-talk handling varies from one place
    # to the next (measured here: 3-4 of 4 heard on the cancelled source, 0-1 on the raw mic).
    for offset in (1.5, 2.5, 3.5, 4.5):
        # The reply is cut 0.5 s after the wake word: what comes later cannot change the score.
        until = offset + wake.size / 16000 + 0.5
        raw, cancelled = record_both(
            echo_path,
            [
                (reply[: int(until * 16000)], ec.SINK_NAME, 0.0),
                (wake, pulse_fixtures.MIC_SINK, offset),
            ],
            until + 0.3,
        )
        raw_scores.append(wake_probability(raw))
        cancelled_scores.append(wake_probability(cancelled))
    log.info(f"hey jarvis over the reply: raw {raw_scores}, cancelled {cancelled_scores}")
    heard_raw = sum(score >= 0.9 for score in raw_scores)
    heard_cancelled = sum(score >= 0.9 for score in cancelled_scores)
    assert heard_cancelled >= 2, cancelled_scores
    assert heard_cancelled > heard_raw, (raw_scores, cancelled_scores)
