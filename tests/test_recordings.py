"""The real-recording test set itself: fetched once, complete, 16 kHz, mixed at the SNR asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests import recordings as rec
from tests.recordings.fetch import MANIFEST, missing_files
from tests.speech import wer, write_wav

recordings = rec.recordings
ROOT = Path(__file__).resolve().parent.parent


def test_a_second_fetch_does_nothing(recordings: rec.Recordings) -> None:
    files = sorted(p for p in recordings.root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    result = subprocess.run(
        [sys.executable, "-m", "tests.recordings", "fetch", "--root", str(recordings.root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "is complete" in result.stderr
    assert sorted(p for p in recordings.root.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_an_incomplete_cache_is_noticed(recordings: rec.Recordings, tmp_path: Path) -> None:
    assert missing_files(tmp_path) == [MANIFEST]
    (tmp_path / MANIFEST).write_bytes((recordings.root / MANIFEST).read_bytes())
    listed = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert sorted(missing_files(tmp_path)) == sorted(listed)


@pytest.mark.parametrize("ci", [True, False], ids=["CI", "local"])
def test_a_missing_cache_fails_under_ci_and_skips_elsewhere(
    ci: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICED_REQUIRE_RECORDINGS", raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match=r"python -m tests.recordings fetch"):
        rec.require_recordings(tmp_path)


def test_every_file_is_16_khz_mono_and_every_accessor_works(recordings: rec.Recordings) -> None:
    listed = json.loads((recordings.root / MANIFEST).read_text())["files"]
    wavs = [name for name in listed if name.endswith(".wav")]
    assert len(wavs) >= 130
    for name in wavs:
        with wave.open(str(recordings.root / name)) as stream:
            assert (stream.getframerate(), stream.getnchannels(), stream.getsampwidth()) == (
                16000,
                1,
                2,
            ), name
            assert stream.getnframes() > 800, name  # at least 50 ms
    speech = [*recordings.speech_clips(), recordings.beckett(), recordings.phone_call()]
    speech += recordings.alsa_voices()
    assert len(speech) == len(rec.SPEECH_NAMES) + 2 + 8
    for clip in speech:
        assert clip.audio.dtype == np.float32 and clip.text and clip.source
        assert -40 < rec.active_dbfs(clip.audio) < 0, clip.name
    for kind in rec.KINDS:
        assert recordings.noise_clips(kind), kind
        bed = recordings.noise(kind, 7.5, seed=3)
        assert bed.dtype == np.float32 and bed.size == 7.5 * 16000, kind
        assert rec.active_dbfs(bed) == pytest.approx(rec.BED_DBFS, abs=0.5), kind
        assert np.max(np.abs(bed)) <= 0.99
        assert not np.array_equal(bed, recordings.noise(kind, 7.5, seed=4)), kind
    for kind in rec.BURSTS:
        assert np.array_equal(recordings.bursts(kind), recordings.bursts(kind))
    with pytest.raises(KeyError, match="kinds: music"):
        recordings.noise("fan", 1.0)


def _snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Written out again, independently of the module: active 30 ms frames of the speech."""
    frames = speech[: speech.size // 480 * 480].astype(np.float64).reshape(-1, 480)
    power = (frames**2).mean(axis=1)
    active = power[(power >= power.max() / 1000) & (power >= 1e-6)]
    return 10 * np.log10(active.mean() / np.mean(noise.astype(np.float64) ** 2))


@pytest.mark.parametrize("kind", ["music", "babble", "traffic", "horn", "keyboard"])
@pytest.mark.parametrize("snr_db", [20, 10, 5, -5])
def test_mix_hits_the_snr_asked(recordings: rec.Recordings, kind: str, snr_db: float) -> None:
    clip = recordings.speech("vm-nobodyavail")
    bed = recordings.noise(kind, clip.duration_s + 2.0, seed=1)
    speech, noise = rec.mix_parts(clip.audio, bed, snr_db, offset_s=1.0)
    mixed = rec.mix(clip.audio, bed, snr_db, offset_s=1.0)
    np.testing.assert_allclose(mixed, speech + noise, atol=1e-6)
    assert mixed.size == bed.size and np.max(np.abs(mixed)) <= 0.99 + 1e-6
    where = slice(16000, 16000 + clip.audio.size)
    assert _snr_db(speech[where], noise[where]) == pytest.approx(snr_db, abs=0.5)
    # The speech is where it was asked to be, unchanged but for the common scale.
    scale = float(np.max(np.abs(speech[where])) / np.max(np.abs(clip.audio)))
    np.testing.assert_allclose(speech[where], clip.audio * scale, atol=1e-5)
    assert not speech[:16000].any()


def test_clean_real_speech_is_transcribed(recordings: rec.Recordings, tmp_path: Path) -> None:
    """tiny.en on real voices, through `voiced transcribe`: measured WER 0.0 for beckett and
    0.25 for the phone call (two people on a telephone line, overlapping at times)."""
    clips = {"beckett": (recordings.beckett(), 0.10), "call": (recordings.phone_call(), 0.35)}
    for name, (clip, _) in clips.items():
        write_wav(tmp_path / f"{name}.wav", clip.audio)
    result = subprocess.run(
        [sys.executable, "-m", "voiced", "transcribe", "-f", "json", "-o", str(tmp_path / "out")]
        + [str(tmp_path / f"{name}.wav") for name in clips],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name, (clip, bound) in clips.items():
        text = json.loads((tmp_path / "out" / f"{name}.json").read_text())["text"]
        assert wer(clip.text or "", text) <= bound, text


def test_an_archive_with_another_checksum_is_refused(tmp_path: Path) -> None:
    from tests.recordings.fetch import FetchError, _check

    archive = tmp_path / "sound-theme-freedesktop_0.8-2_all.deb"
    archive.write_bytes(b"not the pinned package")
    with pytest.raises(FetchError, match=r"sha256 [0-9a-f]{64} does not match the pinned 0{64}"):
        _check(archive, "0" * 64)


def test_a_scene_places_every_clip_in_one_bed(recordings: rec.Recordings) -> None:
    clips = [recordings.speech(name) for name in rec.SPEECH_NAMES[:3]]
    audio, spans = recordings.scene(clips, "traffic", 10, gap_s=2.0, lead_s=1.0)
    assert [text for _, _, text in spans] == [c.text for c in clips]
    assert spans[0][0] == 1.0
    for (start, end, _), clip, following in zip(spans, clips, [*spans[1:], None], strict=True):
        assert end - start == pytest.approx(clip.duration_s)
        if following is not None:
            assert following[0] == pytest.approx(end + 2.0)
    assert audio.size == round((spans[-1][1] + 2.0) * 16000)
    assert np.max(np.abs(audio)) <= 0.95 + 1e-6


def test_a_folder_that_is_not_a_cache_is_never_replaced(tmp_path: Path) -> None:
    from tests.recordings.fetch import FetchError, fetch

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FetchError, match="not replacing it"):
        fetch(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
