"""Speech through a real PulseAudio server: what reaches the virtual speaker, and interrupts.

The speaker sink ``spk`` is recorded from its monitor (16 kHz mono, see tests/pulse.py). Its
silence is exact zeros, so any sample above a tiny threshold is sound that was played.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.pulse import PulseServer, pulse_server  # noqa: F401 (fixture)
from voiced.audio.playback import PlaybackError, Player
from voiced.config import TtsSettings
from voiced.speech.speaker import Speaker
from voiced.speech.tts import TextToSpeech

pytestmark = pytest.mark.pulse
log = logging.getLogger(__name__)

RATE = 16000
BLOCK = RATE // 100  # 10 ms
SOUND = 1e-3  # about -60 dBFS; the null sink's silence is exactly zero

REPLY = (
    "Here is what I found on your computer today. "
    "The disk in your home folder is about half full. "
    "Memory use is low and nothing is running hot. "
    "There are three updates waiting to be installed. "
    "Would you like me to list them for you now?"
)


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    return TextToSpeech.from_settings(TtsSettings())


@pytest.fixture
def player(pulse_server: PulseServer, tts: TextToSpeech) -> Iterator[Player]:  # noqa: F811
    with Player(tts.sample_rate) as player:
        yield player


def _active_blocks(audio: np.ndarray) -> np.ndarray:
    blocks = audio[: audio.size // BLOCK * BLOCK].reshape(-1, BLOCK)
    return np.abs(blocks).max(axis=1) > SOUND


def _sound_span(audio: np.ndarray) -> tuple[float, float]:
    """(start, end) in seconds of the sound in a recording; fails if there is none."""
    active = np.flatnonzero(_active_blocks(audio))
    assert active.size, "no sound reached the speaker"
    return active[0] / 100, (active[-1] + 1) / 100


def _voiced(*args: str, pulse: PulseServer, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "voiced", *args],
        env=pulse.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[arg-type]
    )


def test_voiced_say_plays_the_whole_text_on_the_speaker(
    pulse_server: PulseServer,  # noqa: F811
    tts: TextToSpeech,
) -> None:
    text = "Good morning. The backup finished without errors."
    expected_s = tts.synthesize(text).size / tts.sample_rate
    recording = pulse_server.start_speaker_recording(RATE)
    proc = _voiced("say", text, pulse=pulse_server)
    _, stderr = proc.communicate(timeout=120)
    time.sleep(0.3)
    audio = recording.stop()
    assert proc.returncode == 0, stderr.decode()
    start, end = _sound_span(audio)
    speech = audio[int(start * RATE) : int(end * RATE)]
    assert 20 * np.log10(np.sqrt(np.mean(speech**2))) > -35.0  # speech level, not a trickle
    # Piper's timing varies a little from run to run; the whole text must have been played.
    assert 0.8 * expected_s < end - start < 1.25 * expected_s


def test_voiced_say_starts_speaking_before_the_text_is_complete(
    pulse_server: PulseServer,  # noqa: F811
) -> None:
    recording = pulse_server.start_speaker_recording(RATE)
    proc = _voiced("say", "-", pulse=pulse_server, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(b"This is the first sentence of the answer.\n")
    proc.stdin.flush()
    heard_while_open = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _active_blocks(pulse_server.record_speaker(0.3, RATE)).any():
            heard_while_open = True
            break
    assert heard_while_open, "nothing was played while standard input was still open"
    proc.stdin.write(b"And this is the second one.\n")
    proc.stdin.close()
    assert proc.wait(60) == 0, proc.stderr.read().decode() if proc.stderr else ""
    time.sleep(0.3)
    start, end = _sound_span(recording.stop())
    assert end - start > 3.0  # both sentences were spoken


def test_unknown_output_device_is_a_clear_error(pulse_server: PulseServer) -> None:  # noqa: F811
    proc = _voiced("say", "--output-device", "no-such-card", "hello", pulse=pulse_server)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    message = stderr.decode()
    assert "no-such-card" in message and "outputs:" in message and "pulse" in message
    with pytest.raises(PlaybackError, match="no-such-card"):
        Player(22050, "no-such-card").open()


def test_output_device_by_name(pulse_server: PulseServer, tts: TextToSpeech) -> None:  # noqa: F811
    recording = pulse_server.start_speaker_recording(RATE)
    with Player(tts.sample_rate, "pulse") as player:
        player.play(tts.synthesize("Testing the named device."), "Testing the named device.")
        report = player.wait(30)
    time.sleep(0.2)
    _sound_span(recording.stop())
    assert report.spoken == ["Testing the named device."]


def test_player_resamples_to_the_device_rate(
    pulse_server: PulseServer,  # noqa: F811
    tts: TextToSpeech,
) -> None:
    audio = tts.synthesize("Played at forty eight kilohertz.")
    recording = pulse_server.start_speaker_recording(RATE)
    with Player(tts.sample_rate, device_rate=48000) as player:
        player.play(audio, "Played at forty eight kilohertz.")
        player.wait(30)
        assert player.device_rate == 48000
    time.sleep(0.2)
    start, end = _sound_span(recording.stop())
    duration = audio.size / tts.sample_rate
    assert 0.8 * duration < end - start <= duration + 0.05


def test_speaking_state_follows_playback(player: Player, tts: TextToSpeech) -> None:
    assert not player.speaking and player.speaking_since is None
    player.play(tts.synthesize("Short and sweet."), "Short and sweet.")
    assert player.speaking
    assert player.speaking_since is not None
    report = player.wait(30)
    assert report.spoken == ["Short and sweet."]
    assert not player.speaking
    assert player.last_sound_end <= time.monotonic()
    assert player.speaking_since is None


def test_speaking_state_matches_the_sound_on_the_speaker(
    pulse_server: PulseServer,  # noqa: F811
    player: Player,
    tts: TextToSpeech,
) -> None:
    # The listener trusts these timestamps to tell the assistant's own voice from the user's.
    audio = tts.synthesize("The listener relies on these times.")
    recording = pulse_server.start_speaker_recording(RATE)
    deadline = time.monotonic() + 10
    while recording.samples_so_far() < RATE // 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    # Anchor the recording's clock at the arrival of a fresh chunk of samples.
    count = recording.samples_so_far()
    while (anchor_samples := recording.samples_so_far()) == count:
        time.sleep(0.001)
    anchor_time = time.monotonic()
    player.play(audio, "The listener relies on these times.")
    since = player.speaking_since
    player.wait(30)
    last_sound_end = player.last_sound_end
    time.sleep(0.3)
    start, end = _sound_span(recording.stop())

    def at(seconds: float) -> float:
        return anchor_time + seconds - anchor_samples / RATE

    # Piper's audio starts and ends with a little near-silence that the recording cannot see.
    loud = np.flatnonzero(np.abs(audio) > SOUND)
    lead = loud[0] / tts.sample_rate
    tail = (audio.size - loud[-1]) / tts.sample_rate
    assert since is not None
    log.info(
        "speaking_since %+.3f s, last_sound_end %+.3f s off the recording",
        since + lead - at(start),
        last_sound_end - tail - at(end),
    )
    # Within 100 ms, plus the 20 ms the recording itself may lag.
    assert abs(since + lead - at(start)) < 0.12, (
        f"speaking_since off by {since + lead - at(start):+.3f} s"
    )
    assert abs(last_sound_end - tail - at(end)) < 0.12, (
        f"last_sound_end off by {last_sound_end - tail - at(end):+.3f} s"
    )


def _speak_until_mid_sentence(speaker: Speaker, player: Player) -> None:
    """Stream the reply in small pieces, like an LLM, and return while a sentence plays."""
    for start in range(0, len(REPLY), 12):
        speaker.feed(REPLY[start : start + 12])
        time.sleep(0.01)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        since = player.speaking_since
        if since is not None and time.monotonic() > since + 1.6:
            return
        time.sleep(0.01)
    pytest.fail("the reply never started playing")


def test_interrupt_stops_the_sound_at_once_and_drops_the_rest(
    pulse_server: PulseServer,  # noqa: F811
    player: Player,
    tts: TextToSpeech,
) -> None:
    speaker = Speaker(tts, player)
    recording = pulse_server.start_speaker_recording(RATE)
    try:
        _speak_until_mid_sentence(speaker, player)
        # Samples recorded up to now: sound after this index was heard after stop() began.
        stop_index = recording.samples_so_far()
        report = speaker.stop()
        assert not player.speaking
        time.sleep(1.5)  # anything still queued would play now
        audio = recording.stop()
    finally:
        speaker.close()
    active = _active_blocks(audio)
    before_stop = active[max(0, stop_index // BLOCK - 30) : stop_index // BLOCK]
    assert before_stop.any(), "not speaking when interrupted"
    last_sound = (np.flatnonzero(active)[-1] + 1) * BLOCK
    latency_ms = (last_sound - stop_index) / RATE * 1000
    # The bound; measured with the monitor's capture delay on top, so it is generous.
    assert latency_ms <= 150, f"sound went on for {latency_ms:.0f} ms after stop()"
    log.info("interrupt: sound ended %.0f ms after stop() (upper bound)", latency_ms)

    assert report.interrupted
    assert report.unspoken, "later sentences should have been dropped"
    assert report.unspoken[-1] == "Would you like me to list them for you now?"
    heard = [*report.spoken, *([report.partial] if report.partial else [])]
    assert " ".join(heard + report.unspoken) == REPLY  # every sentence accounted for, in order
    assert report.partial is not None
    assert 0 < report.partial_chars < len(report.partial)
    assert REPLY.startswith(report.text.rstrip("…"))


def test_speaker_is_usable_again_after_an_interrupt(
    pulse_server: PulseServer,  # noqa: F811
    player: Player,
    tts: TextToSpeech,
) -> None:
    speaker = Speaker(tts, player)
    try:
        speaker.say("This first reply will be cut off in the middle. It has a second sentence.")
        time.sleep(0.8)
        speaker.stop()
        recording = pulse_server.start_speaker_recording(RATE)
        speaker.say("Back again.")
        report = speaker.wait(60)
        time.sleep(0.3)
        audio = recording.stop()
    finally:
        speaker.close()
    assert report.spoken == ["Back again."]
    start, end = _sound_span(audio)
    assert end - start < 2.0  # only the new reply, none of the interrupted one


def test_silent_sentences_keep_their_place_in_the_report(player: Player, tts: TextToSpeech) -> None:
    speaker = Speaker(tts, player)
    try:
        speaker.feed("Run this:\n```bash\nls -la\n```\n")
        speaker.feed("It lists the files.")
        report = speaker.wait(60)
    finally:
        speaker.close()
    assert report.spoken == ["Run this:", "```bash\nls -la\n```", "It lists the files."]
    assert not report.interrupted
