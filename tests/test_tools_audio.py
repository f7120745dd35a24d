"""Audio tools with the real engines: whisper.cpp STT, Piper TTS, PortAudio through PulseAudio."""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import pulse as pulse_fixtures
from tests.speech import noise, synthesize, wer, write_wav
from voiced.audio.capture import list_devices
from voiced.brain.tools import audio
from voiced.brain.tools.audit import read_records
from voiced.brain.tools.policy import build_registry
from voiced.brain.tools.registry import ConfirmationRequest, ToolRegistry
from voiced.config import Settings, ToolsSettings

pulse_server = pulse_fixtures.pulse_server

SENTENCE = "Please remind me to water the plants in the kitchen tomorrow morning."


def registry_for(root: Path, stt: Any = None, answer: bool = False, **tools: Any) -> ToolRegistry:
    # A generous time limit: the machines running the tests are shared and slow.
    tools.setdefault("timeout_s", 300.0)
    settings = Settings(tools=ToolsSettings(file_roots=[str(root)], enabled=["audio"], **tools))

    def confirm(request: ConfirmationRequest) -> bool:
        return answer

    return build_registry(
        settings, confirm=confirm, source="test", stt=stt, audio_devices=list_devices
    )


def frames_of(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()


def test_transcribe_audio_hears_what_was_said(tmp_path: Path, stt) -> None:
    write_wav(tmp_path / "memo.wav", synthesize(SENTENCE))
    outcome = registry_for(tmp_path, stt).call("transcribe_audio", {"path": "memo.wav"})
    assert outcome.ok, outcome.error
    prefix = f"{tmp_path}/memo.wav ("
    assert outcome.result.startswith(prefix) and " s, en): " in outcome.result
    heard = outcome.result.split(" s, en): ", 1)[1]
    assert wer(SENTENCE, heard) < 0.2, heard


def test_transcribe_audio_loads_the_model_lazily_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "_stt_engines", {})
    write_wav(tmp_path / "memo.wav", synthesize(SENTENCE))
    registry = registry_for(tmp_path)  # no engine handed in: loaded from the model store
    assert audio._stt_engines == {}
    first = registry.call("transcribe_audio", {"path": "memo.wav"})
    assert first.ok, first.error
    engine = next(iter(audio._stt_engines.values()))
    second = registry_for(tmp_path).call("transcribe_audio", {"path": "memo.wav"})
    assert second.result == first.result
    assert list(audio._stt_engines.values()) == [engine]


def test_silence_and_noise_give_no_invented_text(tmp_path: Path, stt) -> None:
    write_wav(tmp_path / "quiet.wav", noise(3.0, dbfs=-60.0))
    outcome = registry_for(tmp_path, stt).call("transcribe_audio", {"path": "quiet.wav"})
    assert (
        outcome.ok and outcome.result == f"no speech found in {tmp_path}/quiet.wav (3.0 s of audio)"
    )


def test_a_file_that_is_not_audio_is_a_clear_error(tmp_path: Path, stt) -> None:
    (tmp_path / "notes.wav").write_text("this is text, not audio")
    outcome = registry_for(tmp_path, stt).call("transcribe_audio", {"path": "notes.wav"})
    assert outcome.decision == "allowed" and not outcome.ok
    assert outcome.error.startswith(f"cannot read {tmp_path}/notes.wav as audio: ")


def test_audio_longer_than_the_limit_is_refused(tmp_path: Path, stt) -> None:
    write_wav(tmp_path / "long.wav", synthesize(SENTENCE))
    outcome = registry_for(tmp_path, stt, max_audio_s=1.0).call(
        "transcribe_audio", {"path": "long.wav"}
    )
    assert not outcome.ok and "at most 1 seconds can be transcribed" in outcome.error


def _late_record(timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        late = [r for r in read_records() if r.get("late")]
        if late:
            return late[-1]
        time.sleep(0.05)
    raise AssertionError("the abandoned transcription never reported its end")


def test_a_transcription_past_its_time_limit_is_aborted_and_frees_the_engine(
    tmp_path: Path, stt, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentence = synthesize(SENTENCE)
    long_speech = np.tile(sentence, int(280 * 16000 / sentence.size))
    write_wav(tmp_path / "long.wav", long_speech)
    write_wav(tmp_path / "memo.wav", synthesize(SENTENCE))
    seconds = long_speech.size / 16000
    tool = registry_for(tmp_path, stt, timeout_s=1.0).get("transcribe_audio")
    limit = tool.time_limit({"path": "long.wav", "language": None}, 1.0)
    assert limit == pytest.approx(1.0 + seconds * audio.TRANSCRIBE_SECONDS_PER_AUDIO_SECOND, 0.01)
    started = time.monotonic()
    registry_for(tmp_path, stt).call("transcribe_audio", {"path": "memo.wav"})
    normal_s = time.monotonic() - started

    # No time per second of audio: the limit is the plain 1 s, far too short for 280 s.
    monkeypatch.setattr(audio, "TRANSCRIBE_SECONDS_PER_AUDIO_SECOND", 0.0)
    outcome = registry_for(tmp_path, stt, timeout_s=1.0).call(
        "transcribe_audio", {"path": "long.wav"}
    )
    stopped = f"transcribing {tmp_path}/long.wav was stopped at its time limit (1 seconds)"
    if outcome.error != stopped:  # whisper noticed the deadline a moment after the registry
        assert outcome.error == "transcribe_audio did not finish within 1 seconds and was stopped"
        record = _late_record(timeout_s=30.0)
        assert record["tool"] == "transcribe_audio" and record["error"] == stopped
    started = time.monotonic()
    second = registry_for(tmp_path, stt).call("transcribe_audio", {"path": "memo.wav"})
    assert second.ok, second.error
    assert wer(SENTENCE, second.result.split(" s, en): ", 1)[1]) < 0.2
    # Free right away: no waiting for the rest of the 280 s (minutes of work on this CPU).
    assert time.monotonic() - started < 5 * normal_s + 5.0


def test_an_english_only_model_says_so_for_other_languages(tmp_path: Path, stt) -> None:
    write_wav(tmp_path / "memo.wav", synthesize(SENTENCE))
    outcome = registry_for(tmp_path, stt).call(
        "transcribe_audio", {"path": "memo.wav", "language": "de"}
    )
    assert not outcome.ok and "English-only" in outcome.error


def test_speak_to_file_writes_a_wav_that_transcribes_back(tmp_path: Path, stt) -> None:
    registry = registry_for(tmp_path, stt)
    outcome = registry.call("speak_to_file", {"text": SENTENCE, "path": "reminder.wav"})
    assert outcome.decision == "allowed" and outcome.ok, outcome.error
    assert outcome.result.startswith(f"wrote {tmp_path}/reminder.wav: ")
    assert outcome.result.endswith("voice en_US-joe-medium")
    channels, width, rate, frames = frames_of(tmp_path / "reminder.wav")
    assert (channels, width, rate) == (1, 2, 22050) and frames > rate * 2
    heard = registry.call("transcribe_audio", {"path": "reminder.wav"})
    assert heard.ok, heard.error
    assert wer(SENTENCE, heard.result.split(" s, en): ", 1)[1]) < 0.2, heard.result


def test_speed_changes_the_length(tmp_path: Path) -> None:
    registry = registry_for(tmp_path)
    registry.call("speak_to_file", {"text": SENTENCE, "path": "normal.wav"})
    registry.call("speak_to_file", {"text": SENTENCE, "path": "fast.wav", "speed": 1.6})
    normal = frames_of(tmp_path / "normal.wav")[3]
    fast = frames_of(tmp_path / "fast.wav")[3]
    assert fast < normal * 0.8


def test_replacing_a_wav_needs_a_yes(tmp_path: Path) -> None:
    target = tmp_path / "old.wav"
    write_wav(target, np.zeros(1600, np.float32))
    before = target.read_bytes()
    declined = registry_for(tmp_path, answer=False).call(
        "speak_to_file", {"text": "New words.", "path": "old.wav"}
    )
    assert declined.decision == "declined" and target.read_bytes() == before
    confirmed = registry_for(tmp_path, answer=True).call(
        "speak_to_file", {"text": "New words.", "path": "old.wav"}
    )
    assert confirmed.decision == "confirmed" and confirmed.result.startswith("replaced ")
    assert target.read_bytes() != before


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"text": "hi", "path": "x.wav", "voice": "no-such-voice"}, "unknown voice"),
        ({"text": "hi", "path": "x.wav", "voice": "/etc/passwd"}, "unknown voice"),
        ({"text": "hi", "path": "x.wav", "speed": 9.0}, "speed must be between"),
        ({"text": "   ", "path": "x.wav"}, "give the text"),
        ({"text": "hi", "path": "missing/x.wav"}, "does not exist"),
    ],
)
def test_bad_speech_requests_are_refused(
    tmp_path: Path, arguments: dict[str, Any], reason: str
) -> None:
    outcome = registry_for(tmp_path).call("speak_to_file", arguments)
    assert outcome.decision == "refused" and reason in outcome.reason
    assert list(tmp_path.iterdir()) == []
    assert list(read_records())[-1]["decision"] == "refused"


def test_list_audio_devices_through_pulseaudio(tmp_path: Path, pulse_server) -> None:
    outcome = registry_for(tmp_path).call("list_audio_devices", {})
    assert outcome.ok, outcome.error
    lines = outcome.result.splitlines()
    pulse = [line for line in lines if ": pulse (" in line]
    assert pulse and "input" in pulse[0] and "output" in pulse[0]
    assert any("[default input" in line for line in lines)
    assert any("default output]" in line for line in lines)


def test_list_audio_devices_without_a_lister_says_so(tmp_path: Path) -> None:
    settings = Settings(tools=ToolsSettings(file_roots=[str(tmp_path)], enabled=["audio"]))
    outcome = build_registry(settings, source="test").call("list_audio_devices", {})
    assert not outcome.ok and "without access to audio devices" in (outcome.error or "")


def test_a_failing_lister_is_one_clear_error(tmp_path: Path) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("cannot list audio devices: no sound server")

    settings = Settings(tools=ToolsSettings(file_roots=[str(tmp_path)], enabled=["audio"]))
    registry = build_registry(settings, source="test", audio_devices=broken)
    outcome = registry.call("list_audio_devices", {})
    assert not outcome.ok and outcome.error == "cannot list audio devices: no sound server"


def test_speak_to_file_has_a_limit_sized_to_the_text(tmp_path: Path) -> None:
    tool = registry_for(tmp_path, timeout_s=2.0).get("speak_to_file")
    assert tool.time_limit is not None
    short = tool.time_limit({"text": "Hi.", "path": "a.wav"}, 2.0)
    long = tool.time_limit({"text": "word " * 399, "path": "a.wav"}, 2.0)
    assert short == pytest.approx(2.0 + 3 * audio.SPEAK_SECONDS_PER_CHARACTER)
    assert long == pytest.approx(2.0 + 1995 * audio.SPEAK_SECONDS_PER_CHARACTER)


def test_speaking_past_the_limit_stops_between_sentences_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voiced.speech.tts import TextToSpeech

    # Load the voice first, so the short limit below is spent on speaking, not loading.
    assert registry_for(tmp_path).call("speak_to_file", {"text": "Hi.", "path": "w.wav"}).ok
    spoken: list[int] = []
    original = TextToSpeech.sentences

    def counted(self: TextToSpeech, text: str):
        for piece in original(self, text):
            spoken.append(piece.size)
            yield piece

    monkeypatch.setattr(TextToSpeech, "sentences", counted)
    monkeypatch.setattr(audio, "SPEAK_SECONDS_PER_CHARACTER", 0.0)
    text = " ".join(f"This is sentence number {n} of a very long reminder." for n in range(36))
    assert len(text) <= audio.MAX_SPEECH_CHARS
    outcome = registry_for(tmp_path, timeout_s=0.5).call(
        "speak_to_file", {"text": text, "path": "long.wav"}
    )
    stopped = "speak_to_file was stopped at its time limit (0.5 seconds)"
    if outcome.error != stopped:  # the registry gave up a moment before the tool stopped
        assert outcome.error == "speak_to_file did not finish within 0.5 seconds and was stopped"
        record = _late_record(timeout_s=60.0)
        assert record["tool"] == "speak_to_file" and record["error"] == stopped
    assert not (tmp_path / "long.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.wav"]  # no temporary file
    assert 0 < len(spoken) < 36  # it stopped between sentences
    assert audio._synthesis_lock.acquire(timeout=5.0)
    audio._synthesis_lock.release()
