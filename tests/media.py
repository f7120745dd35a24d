"""Write test audio in any container/codec with PyAV (the same library voiced decodes with)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from voiced.decode import resample

_CODECS = {".mp3": "mp3", ".flac": "flac", ".ogg": "libopus", ".m4a": "aac", ".opus": "libopus"}


def encode(
    path: Path,
    audio: np.ndarray,
    rate: int,
    *,
    channels: int = 1,
    to_rate: int | None = None,
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> Path:
    """Encode mono float32 ``audio`` (duplicated to ``channels``) into ``path``'s format.

    The options go to ffmpeg's muxer (e.g. ``{"movflags": "+faststart"}``) and encoder
    (e.g. ``{"q": "9"}`` for VBR mp3).
    """
    out_rate = to_rate or rate
    if out_rate != rate:
        audio = resample(audio, rate, out_rate)
    layout = "mono" if channels == 1 else "stereo"
    planes = np.repeat(audio[np.newaxis, :], channels, axis=0).astype(np.float32)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(
            _CODECS[path.suffix], rate=out_rate, layout=layout, options=codec_options or {}
        )
        fmt = stream.codec_context.format.name
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, planes.shape[1], frame_size):
            chunk = np.ascontiguousarray(planes[:, start : start + frame_size])
            if fmt == "fltp":
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            elif fmt == "s16p":
                frame = av.AudioFrame.from_ndarray(
                    (chunk * 32767).astype(np.int16), format="s16p", layout=layout
                )
            elif fmt == "s16":
                frame = av.AudioFrame.from_ndarray(
                    (chunk.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout
                )
            else:
                frame = av.AudioFrame.from_ndarray(
                    chunk.T.reshape(1, -1), format="flt", layout=layout
                )
            frame.sample_rate = out_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
