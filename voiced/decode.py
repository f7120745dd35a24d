"""Audio files in, 16 kHz mono float32 out, decoded in process with PyAV.

PyAV carries ffmpeg's libraries inside its wheel, so every format ffmpeg reads (wav of any
rate, width and channel count, mp3, flac, ogg, opus, m4a, video soundtracks...) works without
an ffmpeg binary or a subprocess.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Literal

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
Channel = Literal["mix", "left", "right"]

# A file whose header promises noticeably more audio than could be decoded is truncated.
_TRUNCATION_TOLERANCE_S = 0.5


class DecodeError(Exception):
    """A file that cannot be turned into audio; the message says why, for the user."""


def decode_file(
    path: str | Path, *, channel: Channel = "mix", sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``.

    ``channel`` picks the downmix of all channels (``"mix"``), or only the first
    (``"left"``) or second (``"right"``) one; a mono file has only one to offer.
    Raises :class:`DecodeError` for anything that is not decodable audio.
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError("no such file")
    if path.is_dir():
        raise DecodeError("is a directory")
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.PermissionError:
        raise DecodeError("permission denied") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"not a readable audio file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise DecodeError("contains no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None or stream.codec_context.codec is None:
            raise DecodeError("unsupported audio codec")
        source_channels = stream.codec_context.channels or 1
        audio = _decode_stream(container, stream, channel, source_channels, sample_rate)
    if audio.size == 0:
        raise DecodeError("contains no audio (0 samples)")
    missing = _riff_shortfall_seconds(path)
    if missing > _TRUNCATION_TOLERANCE_S:
        raise DecodeError(
            f"truncated: {missing:.1f} s of the audio its header promises are missing "
            f"(only {audio.size / sample_rate:.1f} s present)"
        )
    return audio


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    channel: Channel,
    source_channels: int,
    sample_rate: int,
) -> np.ndarray:
    pick: int | None = None
    if channel != "mix":
        if source_channels < 2:
            log.warning("%s: mono audio has no %s channel; using its only channel", stream, channel)
        else:
            pick = 0 if channel == "left" else 1
    # Packed float at the source layout, then an average of the channels: ffmpeg's own
    # stereo-to-mono matrix adds them at -3 dB each and can push loud audio past full scale.
    # Packed, not planar: PyAV 18's to_ndarray() on a planar frame of 8 or more channels reads
    # past its plane list and crashes the process.
    resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=sample_rate)
    pieces: list[np.ndarray] = []

    def keep(frames: list[av.AudioFrame]) -> None:
        for out in frames:
            samples = out.to_ndarray().reshape(-1, len(out.layout.channels))
            pieces.append(samples.mean(axis=1) if pick is None else samples[:, pick])

    try:
        for frame in container.decode(stream):
            keep(resampler.resample(frame))
        keep(resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise DecodeError(f"corrupt or truncated audio ({_reason(exc)})") from None
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(pieces).astype(np.float32, copy=False)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def _riff_shortfall_seconds(path: Path) -> float:
    """Seconds of audio a RIFF/WAVE header promises beyond the end of the file.

    ffmpeg silently decodes what is there, so a WAV cut short in transfer would otherwise
    pass as a shorter recording.
    """
    with path.open("rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return 0.0
        bytes_per_second = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return 0.0
            size = struct.unpack("<I", chunk[4:])[0]
            if chunk[:4] == b"fmt ":
                fmt = f.read(size + (size & 1))
                if len(fmt) >= 12:
                    bytes_per_second = struct.unpack("<I", fmt[8:12])[0]
                continue
            if chunk[:4] == b"data":
                available = path.stat().st_size - f.tell()
                if not bytes_per_second or size in (0, 0xFFFFFFFF) or available >= size:
                    return 0.0
                return (size - available) / bytes_per_second
            f.seek(size + (size & 1), 1)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or type(exc).__name__


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 (or int16) audio with libswresample; returns float32."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if rate_in == rate_out or audio.size == 0:
        return audio.copy()
    frame = av.AudioFrame.from_ndarray(audio[np.newaxis, :], format="fltp", layout="mono")
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate_out)
    pieces = [out.to_ndarray()[0] for out in resampler.resample(frame)]
    pieces += [out.to_ndarray()[0] for out in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else audio[:0]


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Mono float audio in [-1, 1] (or int16) as int16."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"expected float32 or int16 audio, got {audio.dtype}")
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)
