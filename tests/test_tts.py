"""Piper speech: the engine, voice lookup and install, and ``voiced say -o`` checked by our STT."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.speech import wer
from voiced.audio.playback import SpokenReport
from voiced.cli import main
from voiced.config import SttSettings, TtsSettings
from voiced.decode import decode_file
from voiced.speech.speaker import Speaker
from voiced.speech.tts import (
    BUNDLED_VOICE,
    TextToSpeech,
    VoiceError,
    WavWriter,
    install_voice,
    list_voices,
    resolve_voice,
    voices_dir,
)

# Long enough that one ambiguous word ("memory use is" / "memory uses") stays under 10 %:
# `voiced say` renders with Piper's random noise, so each run sounds a little different.
REPLY = (
    "Your computer has been running for three days. "
    "The disk is half full and the memory use is low. "
    "Nothing needs your attention right now, so you can get back to work."
)


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    return TextToSpeech.from_settings(TtsSettings())


@pytest.fixture(scope="module")
def stt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from voiced.speech.stt import SpeechToText

    # Module fixtures run before the per-test VOICED_HOME: give the model store its own home.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOICED_HOME", str(tmp_path_factory.mktemp("stt_home")))
        yield SpeechToText.from_settings(SttSettings())


def _read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        pcm = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
        return pcm, wav.getframerate(), wav.getnchannels(), wav.getsampwidth()


def _say(*args: str, input: str | None = None) -> object:
    return CliRunner().invoke(main, ["say", *args], input=input, catch_exceptions=False)


def _fake_voice(folder: Path, name: str, sample_rate: int | None = None) -> Path:
    """A copy of the bundled voice under another name (a real, loadable Piper voice).

    With ``sample_rate`` its config states another rate, which every WAV it writes then
    has: a test can tell this voice from the bundled one.
    """
    model, config = resolve_voice(BUNDLED_VOICE)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.onnx"
    shutil.copyfile(model, target)
    settings = json.loads(config.read_text(encoding="utf-8"))
    if sample_rate is not None:
        settings["audio"]["sample_rate"] = sample_rate
    (folder / f"{name}.onnx.json").write_text(json.dumps(settings), encoding="utf-8")
    return target


# --- the engine ------------------------------------------------------------------------------


def test_sentences_are_synthesised_separately(tts: TextToSpeech) -> None:
    pieces = list(tts.sentences("One sentence here. And another one there."))
    assert len(pieces) == 2
    for piece in pieces:
        assert piece.dtype == np.float32
        assert 0.3 < piece.size / tts.sample_rate < 5.0
        assert np.abs(piece).max() > 0.3  # speech, normalised by Piper


def test_synthesize_joins_with_sentence_silence(tts: TextToSpeech) -> None:
    gap = TextToSpeech(tts.voice, TtsSettings(sentence_silence_s=1.0), tts.name)
    audio = gap.synthesize("First. Second.")
    # A full second of exact silence sits between the two sentences.
    silent = np.abs(audio) < 1e-6
    run = longest = 0
    for value in silent:
        run = run + 1 if value else 0
        longest = max(longest, run)
    assert longest >= tts.sample_rate


def test_empty_text_gives_no_audio(tts: TextToSpeech) -> None:
    assert list(tts.sentences("  ")) == []
    assert tts.synthesize("").size == 0


def test_length_scale_and_volume_are_applied(tts: TextToSpeech) -> None:
    text = "Speaking slowly and quietly."
    slow = TextToSpeech(tts.voice, TtsSettings(length_scale=2.0, volume=0.5), tts.name)
    normal_audio = tts.synthesize(text)
    slow_audio = slow.synthesize(text)
    assert slow_audio.size > 1.6 * normal_audio.size
    assert 0.45 < np.abs(slow_audio).max() <= 0.5 + 1e-6


def test_length_scale_is_relative_to_the_voices_own_pace(tts: TextToSpeech) -> None:
    text = "Some voices are configured to speak slowly."
    slow_voice = copy.copy(tts.voice)
    slow_voice.config = dataclasses.replace(tts.voice.config, length_scale=2.0)
    by_default = TextToSpeech(slow_voice, TtsSettings(), tts.name).synthesize(text)
    assert by_default.size > 1.6 * tts.synthesize(text).size
    faster = TextToSpeech(slow_voice, TtsSettings(length_scale=0.5), tts.name).synthesize(text)
    assert 0.75 < faster.size / tts.synthesize(text).size < 1.25


# --- voices ----------------------------------------------------------------------------------


def test_bundled_voice_is_listed_and_resolved() -> None:
    voices = {voice.name: voice for voice in list_voices()}
    bundled = voices[BUNDLED_VOICE]
    assert bundled.source == "bundled"
    assert bundled.sample_rate == 22050
    assert resolve_voice(BUNDLED_VOICE) == (bundled.model_path, bundled.config_path)


def test_resolve_by_path_accepts_model_or_config(tmp_path: Path) -> None:
    model = _fake_voice(tmp_path, "en_US-copy-medium")
    config = model.with_name(model.name + ".json")
    assert resolve_voice(str(model)) == (model, config)
    assert resolve_voice(config) == (model, config)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-voice", "unknown voice 'no-such-voice'"),
        ("/nowhere/voice.onnx", "does not exist"),
        ("", "no voice given"),
    ],
)
def test_resolve_errors(spec: str, message: str) -> None:
    with pytest.raises(VoiceError, match=message):
        resolve_voice(spec)


def test_model_without_config_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "lonely.onnx"
    model.write_bytes(b"x")
    with pytest.raises(VoiceError, match=r"no config beside it .*lonely\.onnx\.json"):
        resolve_voice(model)


def test_install_voice_then_use_it_by_name(tmp_path: Path) -> None:
    source = _fake_voice(tmp_path / "downloads", "en_GB-test-low")
    installed = install_voice(source)
    assert installed == voices_dir() / "en_GB-test-low.onnx"
    assert installed.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in voices_dir().iterdir()) == [
        "en_GB-test-low.onnx",
        "en_GB-test-low.onnx.json",
    ]  # no temporary files left behind
    listed = {voice.name: voice for voice in list_voices()}
    assert listed["en_GB-test-low"].source == "installed"
    assert listed["en_GB-test-low"].sample_rate == 22050
    engine = TextToSpeech.from_settings(TtsSettings(voice="en_GB-test-low"))
    assert engine.name == "en_GB-test-low"
    assert engine.synthesize("Hello.").size > 0


def test_install_rejects_broken_voice_and_installs_nothing(tmp_path: Path) -> None:
    source = _fake_voice(tmp_path, "broken-voice")
    source.write_bytes(b"this is not an onnx model")
    with pytest.raises(VoiceError, match="cannot load voice model"):
        install_voice(source)
    assert not voices_dir().exists() or not any(voices_dir().iterdir())


def test_install_rejects_config_that_is_not_piper(tmp_path: Path) -> None:
    source = _fake_voice(tmp_path, "odd-voice")
    source.with_name(source.name + ".json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(VoiceError, match=r"no audio\.sample_rate"):
        install_voice(source, verify=False)


def test_broken_installed_voice_is_skipped_in_listing(tmp_path: Path) -> None:
    install_voice(_fake_voice(tmp_path, "good-voice"), verify=False)
    (voices_dir() / "bad-voice.onnx").write_bytes(b"x")
    (voices_dir() / "bad-voice.onnx.json").write_text("{not json")
    names = [voice.name for voice in list_voices()]
    assert names == [BUNDLED_VOICE, "good-voice"]


# --- WAV writing -----------------------------------------------------------------------------


def test_wav_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    with pytest.raises(RuntimeError), WavWriter(target, 22050) as writer:
        writer.write(np.zeros(100, np.float32))
        raise RuntimeError("synthesis failed")
    assert list(tmp_path.iterdir()) == []


def test_wav_writer_replaces_existing_file_only_when_done(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")
    writer = WavWriter(target, 16000)
    writer.write(np.full(1600, 0.5, np.float32))
    assert target.read_bytes() == b"old"
    writer.close()
    audio, rate, channels, width = _read_wav(target)
    assert (rate, channels, width, audio.size) == (16000, 1, 2, 1600)
    assert list(tmp_path.iterdir()) == [target]


# --- voiced say -o ---------------------------------------------------------------------------


def test_say_to_wav_is_understood_by_our_stt(
    tmp_path: Path, stt: object, tts: TextToSpeech
) -> None:
    target = tmp_path / "x.wav"
    result = _say("-o", str(target), REPLY)
    assert result.exit_code == 0, result.output
    audio, rate, channels, width = _read_wav(target)
    assert (rate, channels, width) == (22050, 1, 2)
    assert 3.0 < audio.size / rate < 12.0
    text = stt.transcribe(decode_file(target)).text  # type: ignore[attr-defined]
    assert wer(REPLY, text) <= 0.10, text


def test_say_reads_standard_input_and_speaks_markdown_sensibly(tmp_path: Path, stt: object) -> None:
    target = tmp_path / "md.wav"
    markdown = (
        "# Backup report\n- **Your files** are *safely* backed up.\n"
        "- The details are in the link https://example.com/a today.\n"
    )
    result = _say("-o", str(target), "-", input=markdown)
    assert result.exit_code == 0, result.output
    text = stt.transcribe(decode_file(target)).text  # type: ignore[attr-defined]
    expected = (
        "Backup report. Your files are safely backed up. The details are in the link link today."
    )
    assert wer(expected, text) <= 0.10, text
    assert "http" not in text.lower() and "asterisk" not in text.lower()


def test_say_speed_shortens_the_speech(tmp_path: Path) -> None:
    normal, fast = tmp_path / "normal.wav", tmp_path / "fast.wav"
    assert _say("-o", str(normal), "Counting one two three four five.").exit_code == 0
    assert _say("--speed", "2", "-o", str(fast), "Counting one two three four five.").exit_code == 0
    assert _read_wav(fast)[0].size < 0.7 * _read_wav(normal)[0].size


def test_say_with_voice_path(tmp_path: Path) -> None:
    voice = _fake_voice(tmp_path / "voices", "en_US-other-medium", sample_rate=16000)
    target = tmp_path / "v.wav"
    result = _say("--voice", str(voice), "-o", str(target), "Hello from another voice.")
    assert result.exit_code == 0, result.output
    assert _read_wav(target)[1] == 16000  # the bundled voice would give 22050


def test_voice_installed_with_voiced_models_is_listed_and_spoken_by_name(
    tmp_path: Path, voiced_home: Path
) -> None:
    downloads = tmp_path / "downloads"
    by_config = _fake_voice(downloads, "en_GB-config-low", sample_rate=16000)
    renamed = _fake_voice(downloads, "en_GB-download-low", sample_rate=24000)
    models = voiced_home / "models"

    result = CliRunner().invoke(main, ["models", "install", f"{by_config}.json"])
    assert result.exit_code == 0, result.output
    assert result.output == f"installed {models / 'voices' / 'en_GB-config-low.onnx'}\n"
    result = CliRunner().invoke(main, ["models", "install", str(renamed), "--name", "my-voice"])
    assert result.exit_code == 0, result.output
    assert result.output == f"installed {models / 'voices' / 'my-voice.onnx'}\n"
    bad_name = CliRunner().invoke(main, ["models", "install", str(renamed), "--name", "a/b"])
    assert bad_name.exit_code == 1
    assert "cannot install voice 'a/b'" in bad_name.output

    listing = CliRunner().invoke(main, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    rows = {line.split()[0]: line.split() for line in listing.output.splitlines()[1:]}
    assert rows["en_GB-config-low"][1:3] == ["piper", "installed"]
    assert rows["my-voice"][1:3] == ["piper", "installed"]
    assert rows["my-voice"][-1] == str(models / "voices" / "my-voice.onnx")
    assert "en_GB-download-low" not in rows

    for name, rate in (("en_GB-config-low", 16000), ("my-voice", 24000)):
        target = tmp_path / f"{name}.wav"
        result = _say("--voice", name, "-o", str(target), "Hello from an installed voice.")
        assert result.exit_code == 0, result.output
        assert _read_wav(target)[1] == rate


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--voice", "nobody", "-o", "{dir}/a.wav", "hi"], 2, "unknown voice 'nobody'"),
        (["-o", "{dir}/missing/a.wav", "hi"], 1, "folder {dir}/missing does not exist"),
        (["-o", "{dir}", "hi"], 2, "is a directory"),
        (["-o", "{dir}/a.wav", "**", "``"], 1, "nothing to say"),
        (["--speed", "2", "--length-scale", "1", "-o", "{dir}/a.wav", "hi"], 2, "not both"),
        (["--output-device", "x", "-o", "{dir}/a.wav", "hi"], 2, "no effect with -o"),
        (["--speed", "0", "-o", "{dir}/a.wav", "hi"], 2, "--speed"),
        (["hello", "-", "-o", "{dir}/a.wav"], 2, "cannot be mixed"),
    ],
)
def test_say_errors_are_clear_and_write_nothing(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = _say(*(arg.format(dir=tmp_path) for arg in args))
    assert result.exit_code == code, result.output
    assert message.format(dir=tmp_path) in result.output
    assert list(tmp_path.iterdir()) == []


def test_say_with_unreadable_voice_file_is_a_runtime_error(tmp_path: Path) -> None:
    source = _fake_voice(tmp_path / "voices", "corrupt")
    source.write_bytes(b"garbage")
    config = tmp_path / "voiced.yaml"
    config.write_text(f"tts:\n  voice: {source}\n")
    result = CliRunner().invoke(main, ["--config", str(config), "say", "-o", "out.wav", "hi"])
    assert result.exit_code == 1, result.output
    assert "cannot load voice model" in result.output


def test_say_to_wav_puts_the_configured_silence_between_sentences(tmp_path: Path) -> None:
    config = tmp_path / "voiced.yaml"
    config.write_text("tts:\n  sentence_silence_s: 1.0\n")
    target = tmp_path / "gap.wav"
    result = CliRunner().invoke(
        main, ["--config", str(config), "say", "-o", str(target), "First one. Second one."]
    )
    assert result.exit_code == 0, result.output
    samples, rate = _read_wav(target)[:2]
    quiet = np.abs(samples) == 0
    # The longest run of exact silence: the configured second (Piper's own pauses are shorter).
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    longest = int(np.max(edges[1::2] - edges[::2]))
    assert rate <= longest < 1.5 * rate


# --- the speaker ----------------------------------------------------------------------------


class _QueueingPlayer:
    """Takes what a Speaker queues (no device)."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, np.ndarray]] = []
        self.speaking = False

    def play(self, audio: np.ndarray, text: str = "") -> None:
        self.queued.append((text, audio))

    def wait(self, timeout: float | None = None) -> SpokenReport:
        return SpokenReport(spoken=[text for text, _ in self.queued])

    def stop(self) -> SpokenReport:
        return SpokenReport()


def _loud_ms(audio: np.ndarray, rate: int, dbfs: float = -45.0) -> np.ndarray:
    """Start times (ms) of the 5 ms frames louder than ``dbfs``."""
    frame = rate // 200
    frames = audio[: audio.size // frame * frame].reshape(-1, frame).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return np.flatnonzero(level > dbfs) * 5.0


def _first_loud_ms(audio: np.ndarray, rate: int) -> float:
    return float(_loud_ms(audio, rate)[0])


def test_speaker_queues_each_sentence_without_pipers_leading_silence(tts: TextToSpeech) -> None:
    # Piper opens each sentence with 40-60 ms of near silence: the reply's first sound (and
    # speech_end_to_first_audio_ms, which counts to the first sample played) came that late.
    sentence = "It is three o'clock in the afternoon."
    raw = tts.synthesize(sentence)
    assert _first_loud_ms(raw, tts.sample_rate) >= 30  # what Piper gives
    player = _QueueingPlayer()
    speaker = Speaker(tts, player)  # type: ignore[arg-type]
    try:
        speaker.say(sentence + " Anything else?")
        report = speaker.wait(60)
    finally:
        speaker.close()
    assert report.spoken == [sentence, "Anything else?"]
    for _, audio in player.queued:
        assert _first_loud_ms(audio, tts.sample_rate) <= 15
    # Only the silence went: the speech is all there (Piper varies a little between runs).
    raw_span, span = (np.ptp(_loud_ms(a, tts.sample_rate)) for a in (raw, player.queued[0][1]))
    assert abs(raw_span - span) < 150
