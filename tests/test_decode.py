from __future__ import annotations

import re
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import encode
from voiced.decode import DecodeError, decode_file, resample

RATE = 16000


def tone(seconds: float, freq: float, amplitude: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio))))


def write_pcm_wav(path: Path, frames: np.ndarray, rate: int, width: int) -> Path:
    """``frames``: float32 (samples, channels) written as integer PCM of ``width`` bytes."""
    scale = {1: 127, 2: 32767, 3: 8388607, 4: 2147483647}[width]
    ints = np.round(np.clip(frames, -1, 1) * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        little = ints.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :width]
        raw = little.tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(raw)
    return path


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_of_any_rate_and_width_becomes_16k_mono_float(
    tmp_path: Path, rate: int, width: int
) -> None:
    source = tone(1.0, 440, 0.5, rate)[:, np.newaxis]
    path = write_pcm_wav(tmp_path / "x.wav", source, rate, width)
    audio = decode_file(path)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(audio.size - RATE) <= 32
    assert rms(audio) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


def test_stereo_is_downmixed_or_one_channel_picked(tmp_path: Path) -> None:
    left, right = tone(1.0, 440, 0.8, 44100), tone(1.0, 440, 0.2, 44100)
    path = write_pcm_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), 44100, 2)
    mixed = decode_file(path)
    assert rms(mixed) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # mean of the channels
    assert rms(decode_file(path, channel="left")) == pytest.approx(0.8 / np.sqrt(2), rel=0.02)
    assert rms(decode_file(path, channel="right")) == pytest.approx(0.2 / np.sqrt(2), rel=0.02)


def test_loud_identical_channels_do_not_clip(tmp_path: Path) -> None:
    loud = tone(1.0, 300, 0.95, 48000)
    path = write_pcm_wav(tmp_path / "loud.wav", np.stack([loud, loud], axis=1), 48000, 2)
    assert np.abs(decode_file(path)).max() < 0.97


@pytest.mark.parametrize(
    ("suffix", "rate"), [(".mp3", 44100), (".flac", 22050), (".ogg", 48000), (".m4a", 44100)]
)
@pytest.mark.parametrize("channels", [1, 2])
def test_compressed_formats(tmp_path: Path, suffix: str, rate: int, channels: int) -> None:
    path = encode(
        tmp_path / f"x{suffix}", tone(2.0, 300, 0.3), RATE, channels=channels, to_rate=rate
    )
    audio = decode_file(path)
    assert abs(audio.size - 2 * RATE) < 0.05 * RATE
    assert rms(audio) == pytest.approx(0.3 / np.sqrt(2), rel=0.08)


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    good = write_pcm_wav(tmp_path / "good.wav", tone(3.0, 440, 0.5)[:, None], RATE, 2)
    data = good.read_bytes()
    cases = {
        "missing.wav": (None, "no such file"),
        "empty.wav": (b"", "empty file"),
        "header_only.wav": (data[:30], "not a readable audio file"),
        "truncated.wav": (data[: len(data) // 2], "truncated"),
        "notes.wav": (b"shopping list: eggs, milk\n" * 40, "not a readable audio file"),
    }
    for name, (content, _) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    with wave.open(str(tmp_path / "zero.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
    cases["zero.wav"] = (None, "no audio (0 samples)")
    codec = bytearray(data)
    fmt = codec.find(b"fmt ") + 8
    codec[fmt : fmt + 2] = (0x1234).to_bytes(2, "little")
    (tmp_path / "codec.wav").write_bytes(codec)
    cases["codec.wav"] = (None, "unsupported audio codec")
    (tmp_path / "folder.wav").mkdir()
    cases["folder.wav"] = (None, "is a directory")
    for name, (_, message) in cases.items():
        with pytest.raises(DecodeError, match=re.escape(message)):
            decode_file(tmp_path / name)


def test_resample_keeps_duration_and_level() -> None:
    source = tone(1.0, 440, 0.5, 22050)
    out = resample(source, 22050, 16000)
    assert abs(out.size - 16000) <= 16
    assert rms(out) == pytest.approx(rms(source), rel=0.02)
    ints = (source * 32767).astype(np.int16)
    assert rms(resample(ints, 22050, 22050)) == pytest.approx(rms(source), rel=0.01)


def write_layout_wav(path: Path, frames: np.ndarray, rate: int, layout: str) -> Path:
    """``frames`` (samples, channels) as 16-bit PCM with a named channel layout.

    ffmpeg writes WAVE_EXTENSIBLE with the layout's channel mask, as recorders do for 5.1/7.1.
    """
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        ints = (np.clip(frames, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(ints, format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def channel_tones(channels: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """One second of a tone whose level differs per channel: (frames, amplitudes)."""
    amplitudes = np.linspace(0.1, 0.8, channels)
    return tone(1.0, 440, 1.0, rate)[:, np.newaxis] * amplitudes, amplitudes


def assert_channels_decoded(path: Path, amplitudes: np.ndarray) -> None:
    mixed = decode_file(path)
    assert abs(mixed.size - RATE) <= 32
    assert rms(mixed) == pytest.approx(amplitudes.mean() / np.sqrt(2), rel=0.02)
    for channel, index in (("left", 0), ("right", 1)):
        picked = decode_file(path, channel=channel)
        assert rms(picked) == pytest.approx(amplitudes[index] / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("channels", [6, 8, 16])
def test_many_channels_are_downmixed_or_picked(tmp_path: Path, channels: int) -> None:
    frames, amplitudes = channel_tones(channels, 48000)
    path = write_pcm_wav(tmp_path / f"ch{channels}.wav", frames, 48000, 2)
    assert_channels_decoded(path, amplitudes)


@pytest.mark.parametrize("layout", ["5.1", "7.1"])
def test_surround_layouts_are_downmixed_or_picked(tmp_path: Path, layout: str) -> None:
    frames, amplitudes = channel_tones(av.AudioLayout(layout).nb_channels, 44100)
    assert_channels_decoded(write_layout_wav(tmp_path / "s.wav", frames, 44100, layout), amplitudes)


@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".mp3", {}), (".mp3", {"write_xing": "0"}), (".m4a", {"movflags": "+faststart"})],
)
def test_truncated_compressed_files_are_detected(
    tmp_path: Path, suffix: str, options: dict[str, str]
) -> None:
    good = encode(tmp_path / f"good{suffix}", tone(6.0, 300, 0.3), RATE, container_options=options)
    data = good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    if "write_xing" in options:
        # Without a Xing/Info header ffmpeg guesses the duration from the size, so the cut
        # cannot be seen; it decodes as the shorter audio it is.
        assert abs(decode_file(cut).size - 3 * RATE) < 0.1 * RATE
        return
    # m4a fails in the decoder already; mp3 decodes quietly and only the length shows the cut.
    with pytest.raises(DecodeError, match=r"truncated"):
        decode_file(cut)
    if suffix == ".mp3":
        with pytest.raises(DecodeError, match=r"^truncated: 3\.\d s of the audio .* missing"):
            decode_file(cut)


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.7, 9.5])
@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".mp3", {}),
        (".mp3", {"write_xing": "0"}),
        (".m4a", {}),
        (".m4a", {"movflags": "+faststart"}),
        (".ogg", {}),
        (".flac", {}),
    ],
)
def test_good_compressed_files_are_never_called_truncated(
    tmp_path: Path, suffix: str, options: dict[str, str], seconds: float
) -> None:
    path = encode(tmp_path / f"x{suffix}", tone(seconds, 300, 0.3), RATE, container_options=options)
    assert abs(decode_file(path).size - seconds * RATE) < 0.1 * RATE


def _video_with_audio(path: Path, video_s: float, audio_s: float) -> Path:
    """A small mpeg4 video with an AAC track that may end before (or after) the picture."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        samples = tone(audio_s, 300, 0.3)
        size = audio.codec_context.frame_size or 1024
        for start in range(0, samples.size, size):
            frame = av.AudioFrame.from_ndarray(
                samples[np.newaxis, start : start + size], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = RATE, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        black = np.zeros((48, 64, 3), np.uint8)
        for index in range(round(video_s * 10)):
            picture = av.VideoFrame.from_ndarray(black, format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_that_ends_before_the_video_is_not_called_truncated(
    tmp_path: Path, suffix: str
) -> None:
    # Screen and meeting recordings: the container's length is the picture's, not the sound's.
    path = _video_with_audio(tmp_path / f"screen{suffix}", video_s=20, audio_s=10)
    assert abs(decode_file(path).size - 10 * RATE) < 0.1 * RATE


def test_mp3_whose_size_misleads_ffmpeg_is_not_called_truncated(tmp_path: Path) -> None:
    # With no Xing header ffmpeg takes the first frame's bitrate for the whole file: 3 s at
    # 32 kb/s followed by 3 s at 320 kb/s (a valid stream) makes it promise 33 s.
    audio = tone(3.0, 300, 0.3)
    slow, fast = (
        encode(
            tmp_path / f"{kbps}.mp3",
            audio,
            RATE,
            to_rate=44100,
            container_options={"write_xing": "0", "id3v2_version": "0"},
            codec_options={"b": f"{kbps}k"},
        ).read_bytes()
        for kbps in (32, 320)
    )
    path = tmp_path / "joined.mp3"
    path.write_bytes(slow + fast)
    with av.open(str(path)) as container:
        assert container.duration / 1e6 > 20  # the misleading estimate
    assert abs(decode_file(path).size - 6 * RATE) < 0.1 * RATE


def test_picking_a_side_of_a_mono_file_warns_with_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_pcm_wav(tmp_path / "mono.wav", tone(1.0, 440, 0.5)[:, None], RATE, 2)
    audio = decode_file(path, channel="right")
    assert rms(audio) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert caplog.messages == [f"{path}: mono audio has no right channel; using its only channel"]
