"""`voiced transcribe` over folders of many files: workers, resuming, Ctrl-C, one summary.

Most of the 200 files are a second of quiet room noise: the speech detector finds nothing
and whisper never runs, so the batch machinery (listing, workers, outputs, counts) is what
the test pays for; a few files hold Piper speech and must come out right.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.speech import noise, synthesize, wer, write_wav
from tests.test_transcribe_cli import voiced

SENTENCE = "Please send the report to the whole team before lunch."


def test_a_folder_of_200_files_and_two_broken_ones_with_two_workers(tmp_path: Path) -> None:
    source = tmp_path / "archive"
    speech = synthesize(SENTENCE)
    quiet = noise(1.0, dbfs=-60, seed=3)
    spoken = set()
    for i in range(200):
        folder = source / f"box{i % 4}"  # box0/file0.wav ... and the same names in box1..3
        folder.mkdir(parents=True, exist_ok=True)
        if i % 40 == 0:
            spoken.add(Path(f"box{i % 4}/file{i // 4}.txt"))
        write_wav(folder / f"file{i // 4}.wav", speech if i % 40 == 0 else quiet)
    (source / "box1" / "broken.mp3").write_text("not audio\n" * 50)
    (source / "box2" / "empty.wav").write_bytes(b"")
    (source / "box3" / "notes.txt").write_text("not an audio suffix: not looked at\n")
    out = tmp_path / "out"

    result = voiced("transcribe", "-j", "2", "-o", str(out), str(source))
    assert result.returncode == 1, result.stderr
    *errors, summary = result.stderr.strip().splitlines()
    assert sorted(errors) == [
        f"voiced: error: {source / 'box1' / 'broken.mp3'}: not a readable audio file "
        "(Invalid data found when processing input)",
        f"voiced: error: {source / 'box2' / 'empty.wav'}: empty file (0 bytes)",
    ], result.stderr
    assert summary.startswith("voiced: done: 202 files: 200 transcribed, 2 failed;"), summary
    outputs = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(outputs) == 200 and all(p.suffix == ".txt" for p in outputs)
    assert {p.parent.name for p in outputs} == {"box0", "box1", "box2", "box3"}
    for path in outputs:
        text = (out / path).read_text()
        assert (wer(SENTENCE, text) <= 0.1) if path in spoken else text == "", (path, text)

    before = {p: (out / p).stat().st_mtime_ns for p in outputs}
    again = voiced("transcribe", "-j", "2", "--skip-existing", "-o", str(out), str(source))
    assert again.returncode == 1
    assert "0 transcribed, 2 failed, 200 skipped" in again.stderr.splitlines()[-1], again.stderr
    assert {p: (out / p).stat().st_mtime_ns for p in outputs} == before


def test_ctrl_c_midway_keeps_finished_outputs_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    source = tmp_path / "talks"
    source.mkdir()
    speech = np.concatenate([synthesize(SENTENCE)] * 3)  # ~10 s: a few chunks each
    for i in range(12):
        write_wav(source / f"talk{i:02d}.wav", speech)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "voiced", "transcribe", "-j", "2", "-f", "all"]
    process = subprocess.Popen(
        [*command, "-o", str(out), str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.json"))) < 2:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("voiced: interrupted: 12 files: "), stderr
    assert "Traceback" not in stderr
    left = [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".part"]
    assert left == []  # no partial file
    finished = {p.stem for p in out.iterdir()}
    assert 2 <= len(finished) < 12, finished
    for stem in finished:  # every talk either has all four outputs, whole, or none
        assert sorted(p.suffix for p in out.glob(f"{stem}.*")) == [".json", ".srt", ".txt", ".vtt"]
        assert wer(" ".join([SENTENCE] * 3), (out / f"{stem}.txt").read_text()) <= 0.1
