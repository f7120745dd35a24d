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
# Compressed containers state their length less exactly (encoder delay, padding, edit lists),
# so a file counts as cut only when well over a second and a tenth of it is missing.
_COMPRESSED_SHORTFALL_S = 1.0
_COMPRESSED_PRESENT_FRACTION = 0.9
# Containers whose header states the length. For others (Ogg, raw AAC, mp3 without a
# Xing/Info/VBRI header) ffmpeg estimates it from the last page or the bitrate, which says
# nothing about a cut and, for VBR, can promise far more audio than a good file holds.
_STATED_LENGTH_FORMATS = frozenset(
    {"mp3", "flac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "aiff", "caf"}
)


class DecodeError(Exception):
    """A file that cannot be turned into audio; the message says why, for the user."""


def decode_file(
    path: str | Path, *, channel: Channel = "mix", sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``.

    ``channel`` picks the downmix of all channels (``"mix"``), or only the first
    (``"left"``) or second (``"right"``) one; a mono file has only one to offer.
    Raises :class:`DecodeError` for anything that is not decodable audio, including a file
    that decodes to clearly less audio than its header states (truncated).
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
        pick: int | None = None
        if channel != "mix":
            if (stream.codec_context.channels or 1) < 2:
                log.warning(
                    "%s: mono audio has no %s channel; using its only channel", path, channel
                )
            else:
                pick = 0 if channel == "left" else 1
        stated = _stated_seconds(container, stream, path)
        audio = _decode_stream(container, stream, pick, sample_rate)
    if audio.size == 0:
        raise DecodeError("contains no audio (0 samples)")
    present = audio.size / sample_rate
    missing = _riff_shortfall_seconds(path)
    if missing > _TRUNCATION_TOLERANCE_S:
        raise _truncated(missing, present)
    if stated is not None:
        missing = stated - present
        if missing > _COMPRESSED_SHORTFALL_S and present < _COMPRESSED_PRESENT_FRACTION * stated:
            raise _truncated(missing, present)
    return audio


def _truncated(missing: float, present: float) -> DecodeError:
    return DecodeError(
        f"truncated: {missing:.1f} s of the audio its header promises are missing "
        f"(only {present:.1f} s present)"
    )


def _stated_seconds(
    container: av.container.InputContainer, stream: av.audio.AudioStream, path: Path
) -> float | None:
    """The length the header states for the audio, or None where it is unknown or estimated.

    The container's duration is its longest stream's: in a recording whose audio ends before
    its video it is not the audio's, so only the audio stream's own length counts then.
    """
    if container.format.name not in _STATED_LENGTH_FORMATS:
        return None
    if container.format.name == "mp3" and not _mp3_states_frame_count(path):
        return None
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if len(container.streams) > 1 or not container.duration:
        return None
    return container.duration / av.time_base


def _mp3_states_frame_count(path: Path) -> bool:
    """Whether the first mp3 frame is a Xing/Info or VBRI header with the number of frames."""
    with path.open("rb") as f:
        head = f.read(10)
        if head[:3] == b"ID3" and len(head) == 10:
            size = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
            f.seek(size + (10 if head[5] & 0x10 else 0))
        else:
            f.seek(0)
        data = f.read(4096)
    sync = next(
        (i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0), None
    )
    if sync is None:
        return False
    # The tag sits after the frame header and side information: at most 36 bytes in.
    first_frame = data[sync : sync + 48]
    if b"VBRI" in first_frame:
        return True
    for tag in (b"Xing", b"Info"):
        at = first_frame.find(tag)
        if at >= 0 and len(first_frame) >= at + 8:
            flags = int.from_bytes(first_frame[at + 4 : at + 8], "big")
            return bool(flags & 1)
    return False


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    pick: int | None,
    sample_rate: int,
) -> np.ndarray:
    """All of ``stream`` as mono: the mean of its channels, or channel ``pick`` alone."""
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
