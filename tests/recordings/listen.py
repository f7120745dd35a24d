"""Run the code of ``voiced listen`` over an array instead of a microphone.

:func:`listen_to` builds the same :class:`voiced.commands.listen.Listener` the command builds
(segmenter, speech-to-text worker, output formatting) and feeds it the audio as the capture
layer would: 60 ms blocks of int16 with stream times. Only the device is replaced, so whatever
the listener does to decide what is speech (today webrtcvad and the segmenter's rules; later a
neural gate) is what runs. No PulseAudio needed; used by the real-recording tests and by
``bench/hearing.py``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np

from voiced.audio.capture import AudioBlock
from voiced.config import Settings
from voiced.decode import to_int16

BLOCK = 960  # 60 ms: two 30 ms frames per callback, as audio.blocks_per_callback: 2 delivers


def load_listen_stt(settings: Settings | None = None, store: object | None = None) -> Any:
    """The speech-to-text engine as ``voiced listen`` loads it (no flash attention)."""
    from voiced.speech.stt import SpeechToText

    settings = settings or Settings()
    return SpeechToText.from_settings(settings.stt, store, flash_attention=False)


def _blocks(audio: np.ndarray, stop: threading.Event) -> Iterator[AudioBlock]:
    samples = to_int16(np.asarray(audio, dtype=np.float32))
    now = time.time()
    for index, start in enumerate(range(0, samples.size, BLOCK)):
        if stop.is_set():
            return
        block = samples[start : start + BLOCK]
        yield AudioBlock(block, start / 16000, now + start / 16000, discontinuity=index == 0)


def listen_to(
    audio: np.ndarray, stt: Any, settings: Settings | None = None, *, tail_s: float = 1.5
) -> list[dict]:
    """What ``voiced listen --format jsonl`` prints for ``audio``: one dict per utterance.

    ``tail_s`` of digital silence is appended so that the last utterance ends by the endpoint
    rule (as when the room goes quiet), not by a flush.
    """
    from voiced.commands import listen as listen_command

    settings = settings or Settings()
    stream = np.concatenate([np.asarray(audio, dtype=np.float32), np.zeros(round(tail_s * 16000))])
    out = io.StringIO()
    listener = listen_command.Listener(settings, stt, fmt="jsonl", out=out, journal=None)

    def capture_blocks(*args: Any, stop: threading.Event | None = None, **kwargs: Any):
        return _blocks(stream, stop or threading.Event())

    with mock.patch.object(listen_command, "capture_blocks", capture_blocks):
        listener.run()
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
