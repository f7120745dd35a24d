"""`voiced transcribe` end to end, in subprocesses, with the real whisper.cpp model."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.media import encode
from tests.speech import noise, synthesize, wer, write_wav
from tests.subtitles import assert_valid_timeline, parse_srt, parse_vtt

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Turn off the lights in the kitchen and lock the back door.",
    "Please send the report to the whole team before lunch.",
]


def voiced(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voiced", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=300,
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    gap = noise(1.2, seed=7)
    talk = np.concatenate(
        [np.concatenate([synthesize(s, seed=i), gap]) for i, s in enumerate(SENTENCES)]
    )
    files = {
        "one": write_wav(folder / "one.wav", synthesize(SENTENCES[0], seed=3)),
        "talk": encode(folder / "talk.mp3", talk, 16000, channels=2, to_rate=44100),
        "two": encode(folder / "two.flac", synthesize(SENTENCES[1], seed=4), 16000, to_rate=22050),
        "silence": write_wav(folder / "silence.wav", np.zeros(16000 * 4, dtype=np.float32)),
        "room": write_wav(folder / "room.wav", noise(5.0, dbfs=-60, seed=11)),
        "hiss": write_wav(folder / "hiss.wav", noise(5.0, dbfs=-25, seed=12)),
    }
    (folder / "notes.wav").write_text("this is a text file with a .wav name\n" * 20)
    files["notes"] = folder / "notes.wav"
    (folder / "empty.mp3").write_bytes(b"")
    files["empty"] = folder / "empty.mp3"
    good = files["one"].read_bytes()
    (folder / "cut.wav").write_bytes(good[: len(good) // 3])
    files["cut"] = folder / "cut.wav"
    talk = files["talk"].read_bytes()
    (folder / "half.mp3").write_bytes(talk[: len(talk) // 2])
    files["cut_mp3"] = folder / "half.mp3"
    files["zero"] = write_wav(folder / "zero.wav", np.zeros(0, dtype=np.float32))
    codec = bytearray(good)
    fmt = codec.find(b"fmt ") + 8
    codec[fmt : fmt + 2] = (0x1234).to_bytes(2, "little")  # a format tag no decoder knows
    (folder / "codec.wav").write_bytes(codec)
    files["codec"] = folder / "codec.wav"
    return files


def test_one_file_to_stdout_is_accurate(media: dict[str, Path]) -> None:
    result = voiced("transcribe", str(media["one"]))
    assert result.returncode == 0, result.stderr
    assert wer(SENTENCES[0], result.stdout) <= 0.10
    assert result.stderr == ""  # whisper.cpp's logs and progress never leak


def test_all_formats_to_folder_are_valid(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "subs"
    result = voiced("transcribe", str(media["talk"]), "-f", "all", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == [
        "talk.json",
        "talk.srt",
        "talk.txt",
        "talk.vtt",
    ]
    document = json.loads((out / "talk.json").read_text())
    assert set(document) == {"file", "duration", "language", "task", "model", "text", "segments"}
    assert document["file"] == str(media["talk"])
    assert document["language"] == "en" and document["model"] == "tiny.en-q8_0"
    duration = document["duration"]
    assert isinstance(duration, float) and 13 < duration < 20
    assert wer(" ".join(SENTENCES), document["text"]) <= 0.10
    segments = document["segments"]
    assert segments and all(set(s) == {"start", "end", "text"} for s in segments)
    assert all(isinstance(s["start"], float) and isinstance(s["end"], float) for s in segments)
    assert_valid_timeline([(s["start"], s["end"]) for s in segments], duration)

    srt = parse_srt((out / "talk.srt").read_text())
    assert [c[0] for c in srt] == list(range(1, len(srt) + 1))
    assert_valid_timeline([(c[1], c[2]) for c in srt], duration)
    assert wer(" ".join(SENTENCES), " ".join(c[3] for c in srt)) <= 0.10

    vtt = parse_vtt((out / "talk.vtt").read_text())
    assert_valid_timeline([(c[0], c[1]) for c in vtt], duration)
    assert [c[2] for c in vtt] == [c[3] for c in srt]
    # The last sentence starts after two sentences and two gaps: timestamps are real.
    last = next(c for c in srt if "report" in c[3].lower())
    assert last[1] > 7.0
    assert (out / "talk.txt").read_text().splitlines() == [c[3] for c in srt]


def test_bad_files_get_one_line_each_and_good_files_still_work(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "missing.ogg"
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    bad = [
        media["notes"],
        media["empty"],
        media["cut"],
        media["cut_mp3"],
        media["zero"],
        media["codec"],
        missing,
        folder,
    ]
    result = voiced(
        "transcribe",
        str(media["one"]),
        *map(str, bad),
        str(media["two"]),
        "-f",
        "srt",
        "-o",
        str(out),
    )
    assert result.returncode == 1
    *lines, summary = result.stderr.strip().splitlines()
    assert summary.startswith("voiced: done: 10 files: 2 transcribed, 8 failed"), summary
    assert len(lines) == len(bad), result.stderr
    expected = {
        media["notes"]: "not a readable audio file",
        media["empty"]: "empty file",
        media["cut"]: "truncated",
        media["cut_mp3"]: "truncated",
        media["zero"]: "contains no audio (0 samples)",
        media["codec"]: "unsupported audio codec",
        missing: "no such file",
        folder: "is a directory",
    }
    for path, reason in expected.items():
        assert any(line.startswith(f"voiced: error: {path}: ") and reason in line for line in lines)
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["one.srt", "two.srt"]  # nothing half-written
    assert (
        wer(SENTENCES[1], " ".join(c[3] for c in parse_srt((out / "two.srt").read_text()))) <= 0.1
    )


def test_a_write_failing_midway_keeps_the_old_file_and_leaves_no_part_file(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process, so that the disk can "fill up" halfway through writing one.srt.
    from click.testing import CliRunner

    from voiced.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "one.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nold subtitles\n")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, file) -> None:
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd: int, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        return FullDisk(file) if os.readlink(f"/proc/self/fd/{fd}").endswith(".part") else file

    monkeypatch.setattr(os, "fdopen", fdopen)
    result = CliRunner().invoke(
        main, ["transcribe", str(media["one"]), "-f", "srt", "-o", str(out)]
    )
    assert result.exit_code == 1
    assert f"{out / 'one.srt'}: cannot write: No space left on device" in result.stderr
    assert (out / "one.srt").read_text().endswith("old subtitles\n")
    assert [p.name for p in out.iterdir()] == ["one.srt"]


def test_an_unexpected_decoder_failure_is_one_line_and_the_batch_goes_on(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from voiced import decode
    from voiced.cli import main

    real_decode = decode.decode_file

    def flaky_decode(path: Path, **kwargs):
        if Path(path).name == "talk.mp3":
            raise ValueError("layout not supported")
        return real_decode(path, **kwargs)

    monkeypatch.setattr(decode, "decode_file", flaky_decode)
    out = tmp_path / "out"
    args = ["transcribe", str(media["talk"]), str(media["one"]), "-f", "txt", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    error, summary = result.stderr.splitlines()
    assert (
        error == f"voiced: error: {media['talk']}: cannot decode (ValueError: layout not supported)"
    )
    assert summary.startswith("voiced: done: 2 files: 1 transcribed, 1 failed;"), summary
    assert wer(SENTENCES[0], (out / "one.txt").read_text()) <= 0.1


def test_several_files_print_text_with_headers(media: dict[str, Path]) -> None:
    result = voiced("transcribe", str(media["one"]), str(media["two"]))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split(f"==> {media['two']} <==\n")
    assert first.startswith(f"==> {media['one']} <==\n")
    assert wer(SENTENCES[0], first.split("\n", 1)[1]) <= 0.1
    assert wer(SENTENCES[1], second) <= 0.1


def test_silence_and_noise_give_no_text(media: dict[str, Path], tmp_path: Path) -> None:
    files = [media["silence"], media["room"], media["hiss"]]
    result = voiced("transcribe", *map(str, files), "-f", "json", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for path in files:
        document = json.loads((tmp_path / f"{path.stem}.json").read_text())
        assert document["segments"] == [], (path.name, document["text"])
        assert document["text"] == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "srt", "a.wav", "b.wav"], "needs an output folder"),
        (["-f", "all", "a.wav"], "-f all writes several files"),
        (["-f", "docx", "a.wav"], "Invalid value for '-f'"),
        ([], "Missing argument 'FILES...'"),
        (["-o", "out", "x/a.wav", "y/a.mp3"], "would both write"),
        (["-t", "0", "a.wav"], "Invalid value for '-t'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = voiced("transcribe", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_unusable_output_folder_is_one_line_before_the_model_loads(
    media: dict[str, Path], tmp_path: Path
) -> None:
    # A model that cannot load would fail with exit 1: exit 2 shows -o was checked first.
    no_model = str(tmp_path / "ggml-nope.bin")
    for folder, reason in [
        (media["one"] / "sub", "Not a directory"),
        (Path("/proc/sys/voiced-test"), "No such file or directory"),
    ]:
        result = voiced("transcribe", "-m", no_model, "-o", str(folder), str(media["one"]))
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"voiced: error: {folder}: cannot create output folder ({reason})\n"
        )


def test_failed_stdout_write_is_one_line_without_traceback(media: dict[str, Path]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "voiced", "transcribe", str(media["one"])],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1
    assert result.stderr == (
        "voiced: error: cannot write to standard output: No space left on device\n"
    )


def test_closed_pipe_on_stdout_ends_quietly(media: dict[str, Path]) -> None:
    # Like `voiced transcribe a b | head -c1`: the reader is gone before the text comes.
    process = subprocess.Popen(
        [sys.executable, "-m", "voiced", "transcribe", str(media["one"]), str(media["two"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=300)
    assert process.returncode == 1
    assert stderr == ""


def test_missing_model_file_is_a_clear_error(media: dict[str, Path], tmp_path: Path) -> None:
    result = voiced("transcribe", "-m", str(tmp_path / "ggml-nope.bin"), str(media["one"]))
    assert result.returncode == 1
    assert "no such model file" in result.stderr
    unknown = voiced("transcribe", "-m", "enormous.en", str(media["one"]))
    assert unknown.returncode == 1 and "unknown model 'enormous.en'" in unknown.stderr
    english_only = voiced("transcribe", "-l", "de", str(media["one"]))
    assert english_only.returncode == 2 and "English-only" in english_only.stderr


def test_language_code_is_case_insensitive(media: dict[str, Path]) -> None:
    result = voiced("transcribe", "-l", "EN", "-f", "json", str(media["one"]))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["language"] == "en"
    assert wer(SENTENCES[0], document["text"]) <= 0.1


def test_max_len_splits_segments_through_whisper(media: dict[str, Path]) -> None:
    """--max-len N: whisper.cpp's -ml with token timestamps, segments split at words."""
    whole = json.loads(voiced("transcribe", "-f", "json", str(media["one"])).stdout)
    result = voiced("transcribe", "--max-len", "16", "-f", "json", str(media["one"]))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    segments = document["segments"]
    assert len(whole["segments"]) == 1 and len(segments) >= 3, segments
    assert all(len(s["text"].strip()) <= 16 for s in segments), segments
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # token timestamps
    assert all(s["start"] < s["end"] <= document["duration"] + 0.01 for s in segments)
    assert wer(SENTENCES[0], " ".join(s["text"] for s in segments)) <= 0.1


def test_language_auto_with_an_english_model_is_english(media: dict[str, Path]) -> None:
    """-l auto goes through whisper; an English-only model reports English (whisper.cpp's
    language detection needs a multilingual model, and none is available offline)."""
    result = voiced("transcribe", "-l", "auto", "-f", "json", str(media["one"]))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["language"] == "en"
    assert wer(SENTENCES[0], document["text"]) <= 0.1


def test_channel_option_picks_one_side(tmp_path: Path) -> None:
    speech = synthesize(SENTENCES[1], seed=5)
    stereo = np.stack([speech, noise(speech.size / 16000, dbfs=-60, seed=9)[: speech.size]], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo.reshape(-1), channels=2)
    left = voiced("transcribe", "--channel", "left", str(path))
    right = voiced("transcribe", "--channel", "right", str(path))
    assert wer(SENTENCES[1], left.stdout) <= 0.1
    assert right.returncode == 0 and right.stdout.strip() == ""


def test_eight_channel_file_is_transcribed_in_a_batch(
    media: dict[str, Path], tmp_path: Path
) -> None:
    speech = synthesize(SENTENCES[2], seed=6)
    path = write_wav(tmp_path / "eight.wav", np.repeat(speech, 8), channels=8)
    result = voiced("transcribe", str(path), str(media["one"]))
    assert result.returncode == 0, result.stderr
    eight, one = result.stdout.split(f"==> {media['one']} <==\n")
    assert wer(SENTENCES[2], eight.split("\n", 1)[1]) <= 0.1
    assert wer(SENTENCES[0], one) <= 0.1


def test_help_reads_like_a_cli() -> None:
    top = voiced("--help")
    assert top.returncode == 0
    for command in ("transcribe", "models", "config"):
        assert command in top.stdout
    help_text = voiced("transcribe", "--help").stdout
    for option in (
        "-f, --format",
        "-o, --output-dir",
        "-m, --model",
        "-l, --language",
        "-t, --threads",
        "--no-progress",
        "Examples:",
    ):
        assert option in help_text


def _run_with_terminal_stderr(*args: str) -> tuple[int, str, str]:
    """Run voiced with stderr on a pseudo-terminal, as an interactive user would."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "voiced", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=os.environ.copy(),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = process.stdout.read().decode()
    process.wait(timeout=300)
    os.close(leader)
    return process.returncode, stdout, b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal_and_never_on_stdout(media: dict[str, Path]) -> None:
    # One sentence (the bar is the same for any length; "talk" is three times as long).
    code, stdout, terminal = _run_with_terminal_stderr("transcribe", str(media["two"]))
    assert code == 0
    assert "%|" in terminal and "two.flac" in terminal
    assert "%|" not in stdout and wer(SENTENCES[1], stdout) <= 0.1
    code, _, quiet = _run_with_terminal_stderr("transcribe", "--no-progress", str(media["one"]))
    assert code == 0 and quiet == ""


def test_batch_transcription_needs_no_audio_device_library(media: dict[str, Path]) -> None:
    script = (
        "import sys; sys.modules['sounddevice'] = None\n"
        "from voiced.cli import main\n"
        f"main(['transcribe', {str(media['one'])!r}])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert wer(SENTENCES[0], result.stdout) <= 0.1


def test_horns_beeps_alarms_and_knocks_give_no_text(tmp_path: Path) -> None:
    from tests.noises import alarm, beeps, car_horn, knocks

    sounds = np.concatenate([car_horn(), beeps(), alarm(), knocks(), car_horn(dbfs=-10.0)])
    path = write_wav(tmp_path / "street.wav", sounds)
    result = voiced("transcribe", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_long_silences_are_skipped_and_timestamps_stay_on_the_file(tmp_path: Path) -> None:
    # Three sentences at known places, 9 s of a quiet room between them.
    gap = 9.0
    pieces, places, at = [], [], 0.0
    for i, sentence in enumerate(SENTENCES):
        clip = synthesize(sentence, seed=40 + i, lead_s=0.5, tail_s=0.5)
        clean = synthesize(sentence, seed=40 + i, lead_s=0.5, tail_s=0.5, noise_dbfs=-150.0)
        loud = np.flatnonzero(np.abs(clean) > 0.01)
        places.append((at + loud[0] / 16000, at + (loud[-1] + 1) / 16000))
        pieces += [clip, noise(gap, seed=50 + i)]
        at += clip.size / 16000 + gap
    path = write_wav(tmp_path / "pauses.wav", np.concatenate(pieces))
    result = voiced("transcribe", str(path), "-f", "json", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "out" / "pauses.json").read_text())
    assert wer(" ".join(SENTENCES), document["text"]) <= 0.1, document["text"]
    # Each sentence's segments cover it on the file's time line. Whisper's times are loose:
    # a chunk's first segment tends to start where the chunk does (pre-roll and padding,
    # 0.6 s before the voice), nowhere near the 9 s gaps.
    for sentence, (onset, offset) in zip(SENTENCES, places, strict=True):
        mine = [s for s in document["segments"] if onset - 1.0 <= s["start"] < offset]
        assert mine, (sentence, onset, document["segments"])
        assert onset - 1.0 <= mine[0]["start"] <= onset + 0.3, (mine, onset)
        assert offset - 0.5 <= mine[-1]["end"] <= offset + 1.0, (mine, offset)
        assert wer(sentence, " ".join(s["text"] for s in mine)) <= 0.15
    # The same words as whisper hearing the whole file.
    whole = voiced("transcribe", "--no-vad", str(path))
    assert whole.returncode == 0, whole.stderr
    assert wer(whole.stdout, document["text"]) <= 0.1, (whole.stdout, document["text"])
