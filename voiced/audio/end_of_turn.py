"""Has the speaker finished? Pipecat's Smart Turn v3 judges it from the audio.

Silence alone cannot tell "What time is it?" (done) from "set a timer for, um," (more to
come). Smart Turn v3.2 (BSD-2, by Daily) is a small Whisper-encoder classifier that hears the
intonation and the words of the last 8 s of speech and gives the probability that the turn is
complete. Its ONNX file (8.7 MB) ships inside PyPI ``pipecat-ai``; voiced finds it through the
package's metadata and never imports pipecat (its dependencies are heavy). The Whisper-style
features are computed by the numpy module that sits next to the model in that package, loaded
on its own. onnxruntime comes with piper-tts.

:class:`TurnModel` runs the model; :class:`TurnJudge` runs it on a thread of its own, so the
thread that reads the microphone never waits for it, and nothing runs while nobody pauses.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 8  # the model hears the last 8 s
DISTRIBUTION = "pipecat-ai"
MODEL_PATH = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES_PATH = "pipecat/audio/turn/smart_turn/_whisper_features.py"
INSTALL_HINT = (
    "the end-of-turn model ships inside the Python package pipecat-ai: install it with "
    "`pip install --no-deps pipecat-ai` (voiced only reads its model file), or set "
    "vad.end_of_turn: silence"
)


class EndOfTurnError(Exception):
    """The end-of-turn model cannot be found or loaded; the message says what to do."""


def _package_file(relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EndOfTurnError(f"{DISTRIBUTION} is not installed; {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise EndOfTurnError(
            f"{DISTRIBUTION} {dist.version} has no {relative}; {INSTALL_HINT} (1.14 has it)"
        )
    return path


def model_path() -> Path:
    """The Smart Turn ONNX file inside the installed pipecat-ai."""
    return _package_file(MODEL_PATH)


def _features_module() -> ModuleType:
    path = _package_file(FEATURES_PATH)
    spec = importlib.util.spec_from_file_location("voiced_smart_turn_features", path)
    if spec is None or spec.loader is None:
        raise EndOfTurnError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only: pipecat itself is never imported
    return module


class TurnModel:
    """Smart Turn v3: :meth:`probability` that the speech in ``audio`` is a finished turn."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        path = model_path()
        self._features = _features_module().compute_whisper_log_mel_features
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a damaged file
            raise EndOfTurnError(f"cannot load the end-of-turn model {path}: {exc}") from None

    def probability(self, audio: np.ndarray) -> float:
        """``audio``: float32 mono at 16 kHz, ending where the pause is; only the last 8 s
        count (shorter audio is padded with silence in front, as the model was trained)."""
        samples = WINDOW_S * SAMPLE_RATE
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)[-samples:]
        if audio.size < samples:
            audio = np.pad(audio, (samples - audio.size, 0))
        features = self._features(audio, do_normalize=True)[np.newaxis]
        (out,) = self._session.run(None, {"input_features": features})[:1]
        return float(np.asarray(out).reshape(-1)[0])


@dataclass(frozen=True)
class Verdict:
    """The model's verdict on utterance ``index`` paused at stream time ``audio_end_s``."""

    index: int
    audio_end_s: float
    probability: float
    finished: bool
    took_ms: int


class TurnJudge:
    """Runs :class:`TurnModel` on its own thread: :meth:`judge` returns at once and
    ``on_verdict`` is called from that thread with the :class:`Verdict`.

    Only the newest request counts: one that waits while another is judged replaces it. The
    thread sleeps on a queue while nobody pauses.
    """

    def __init__(
        self,
        threshold: float,
        on_verdict: Callable[[Verdict], None],
        model: TurnModel | None = None,
    ) -> None:
        self.threshold = threshold
        self.on_verdict = on_verdict
        self.model = model or TurnModel()
        self._requests: queue.Queue[tuple[int, float, np.ndarray] | None] = queue.Queue(1)
        self._thread = threading.Thread(target=self._run, name="voiced-end-of-turn", daemon=True)
        self._thread.start()

    def judge(self, index: int, audio_end_s: float, audio: np.ndarray) -> None:
        self._put_newest((index, audio_end_s, audio))

    def close(self) -> None:
        self._put_newest(None)
        self._thread.join(2.0)

    def _put_newest(self, request: tuple[int, float, np.ndarray] | None) -> None:
        while True:
            try:
                self._requests.put_nowait(request)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._requests.get_nowait()  # an older pause: no longer of interest

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            index, audio_end_s, audio = request
            began = time.perf_counter()
            try:
                probability = self.model.probability(audio)
            except Exception:
                log.exception("the end-of-turn model failed; waiting for silence instead")
                continue
            took_ms = round((time.perf_counter() - began) * 1000)
            verdict = Verdict(
                index, audio_end_s, probability, probability >= self.threshold, took_ms
            )
            log.debug(
                "end of turn %d: p=%.3f (%s, %d ms)",
                index,
                probability,
                "finished" if verdict.finished else "not finished",
                took_ms,
            )
            try:
                self.on_verdict(verdict)
            except Exception:
                log.exception("handling the end-of-turn verdict failed")
