"""Wake-word models that listen to every frame: microWakeWord through ``pymicro-wakeword``.

The models ship inside the wheel (PyPI ``pymicro-wakeword``, Apache-2.0, with the TensorFlow
Lite C library): ``okay_nabu``, ``hey_jarvis``, ``hey_mycroft`` and ``alexa``, 50-80 KB each.
Audio goes through ``pymicro-features`` (a 40-band log filterbank every 10 ms); each model
takes three feature frames per call (one inference per 30 ms) and averages its last
``sliding_window_size`` outputs; a detection is that average going over the model's
probability cutoff (from its JSON file, or ``threshold``).

:class:`WakeWordDetector` takes 16 kHz mono blocks of any length (int16, or float in
[-1, 1]), runs one or more models over shared features, and returns a :class:`Detection`
with its stream time (seconds of audio fed so far, at the feature frame where it fired) and
probability. After a detection a model is deaf for ``refractory_s`` of stream time, so one
phrase gives one detection (Home Assistant's linux-voice-assistant uses 2 s).

Nothing here downloads anything. No "stop" model ships in the wheel: a stop word is one of
these models used in a second role (see the daemon).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# pymicro-features emits a feature frame per 10 ms of audio, over a 30 ms window: frame k
# (from 1) covers the audio up to (k + 2) * 10 ms.
_FEATURE_STEP_S = 0.010
_FEATURE_WINDOW_S = 0.030
DEFAULT_REFRACTORY_S = 2.0


class WakeWordError(Exception):
    """A wake-word model that is unknown or cannot be loaded (the message says which)."""


@dataclass(frozen=True)
class WakeModelInfo:
    """A wake-word model that can be loaded by name."""

    name: str  # e.g. "hey_jarvis"
    phrase: str  # what to say, e.g. "Hey Jarvis"
    threshold: float  # the model's own probability cutoff
    languages: tuple[str, ...]
    path: Path  # its JSON description
    source: str  # the package it ships in


@dataclass(frozen=True)
class Detection:
    """A model heard its phrase, ending near ``time_s`` seconds into the stream."""

    model: str
    phrase: str
    time_s: float
    probability: float


def _package_dir() -> Path:
    try:
        import pymicro_wakeword
    except ImportError as exc:  # pragma: no cover - a dependency; broken installs only
        raise WakeWordError(
            "pymicro-wakeword is not installed (pip install pymicro-wakeword)"
        ) from exc
    return Path(pymicro_wakeword.__file__).parent


def list_models() -> list[WakeModelInfo]:
    """The wake-word models that ship with pymicro-wakeword, by name."""
    models = []
    for path in sorted((_package_dir() / "models").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            models.append(
                WakeModelInfo(
                    name=path.stem,
                    phrase=str(data["wake_word"]),
                    threshold=float(data["micro"]["probability_cutoff"]),
                    languages=tuple(data.get("trained_languages", [])),
                    path=path,
                    source="pymicro-wakeword",
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping the wake-word model %s: %s", path, exc)
    return models


def model_info(name: str) -> WakeModelInfo:
    """The model called ``name``, or a :class:`WakeWordError` naming the ones there are."""
    models = list_models()
    for info in models:
        if info.name == name:
            return info
    names = ", ".join(info.name for info in models) or "none"
    raise WakeWordError(f"unknown wake-word model {name!r} (available: {names})")


class _Model:
    """One loaded model and its detection state."""

    def __init__(self, info: WakeModelInfo, threshold: float | None) -> None:
        from pymicro_wakeword import MicroWakeWord

        try:
            self.engine = MicroWakeWord.from_config(info.path)
        except Exception as exc:
            raise WakeWordError(f"cannot load the wake-word model {info.name}: {exc}") from exc
        self.info = info
        self.threshold = info.threshold if threshold is None else threshold
        self.deaf_until_s = -1.0
        self.peak = 0.0  # the highest probability since the last reset_peak()

    def close(self) -> None:
        self.engine.close()


class WakeWordDetector:
    """Runs wake-word models over a 16 kHz audio stream; see the module docstring.

    ``models`` are names from :func:`list_models`; ``thresholds`` may override a model's
    probability cutoff (name -> 0..1). Not thread-safe: feed it from one thread.
    """

    def __init__(
        self,
        models: Sequence[str],
        *,
        thresholds: dict[str, float] | None = None,
        refractory_s: float = DEFAULT_REFRACTORY_S,
    ) -> None:
        from pymicro_wakeword import MicroWakeWordFeatures

        if not models:
            raise WakeWordError("no wake-word model given")
        if refractory_s < 0:
            raise ValueError(f"refractory_s must be >= 0, got {refractory_s}")
        thresholds = thresholds or {}
        for name, value in thresholds.items():
            if not 0.0 < value < 1.0:
                raise ValueError(f"threshold for {name} must be between 0 and 1, got {value}")
        self.refractory_s = refractory_s
        self._models: list[_Model] = []
        try:
            for name in dict.fromkeys(models):  # each model once, in order
                self._models.append(_Model(model_info(name), thresholds.get(name)))
        except Exception:
            self.close()
            raise
        self._features = MicroWakeWordFeatures()
        self._frames = 0  # feature frames produced so far (10 ms each)
        self._samples = 0

    @property
    def models(self) -> list[WakeModelInfo]:
        return [model.info for model in self._models]

    @property
    def stream_time_s(self) -> float:
        """Seconds of audio fed so far."""
        return self._samples / SAMPLE_RATE

    def threshold(self, name: str) -> float:
        for model in self._models:
            if model.info.name == name:
                return model.threshold
        raise KeyError(name)

    def peaks(self) -> dict[str, float]:
        """Each model's highest probability since the last call (for logs and measurements)."""
        peaks = {}
        for model in self._models:
            peaks[model.info.name] = model.peak
            model.peak = 0.0
        return peaks

    def feed(self, samples: np.ndarray) -> list[Detection]:
        """Feed the next block of audio; return the detections it completed."""
        pcm = _to_pcm16(samples)
        self._samples += pcm.size
        detections = []
        for features in self._features.process_streaming(pcm.tobytes()):
            self._frames += 1
            now_s = self._frames * _FEATURE_STEP_S + _FEATURE_WINDOW_S - _FEATURE_STEP_S
            for model in self._models:
                probability = model.engine.process_streaming_prob(features)
                if probability is None:  # the model was closed
                    continue
                model.peak = max(model.peak, probability)
                if probability > model.threshold and now_s >= model.deaf_until_s:
                    model.deaf_until_s = now_s + self.refractory_s
                    detection = Detection(
                        model.info.name, model.info.phrase, now_s, float(probability)
                    )
                    log.debug(
                        "wake word %s at %.2f s (p=%.3f)",
                        detection.model,
                        now_s,
                        probability,
                    )
                    detections.append(detection)
        return detections

    def reset(self) -> None:
        """Forget the stream (a new one starts at time 0), e.g. after a gap in the audio."""
        self._features.reset()
        for model in self._models:
            model.engine.reset()
            model.deaf_until_s = -1.0
            model.peak = 0.0
        self._frames = 0
        self._samples = 0

    def close(self) -> None:
        for model in self._models:
            model.close()
        self._models = []

    def __enter__(self) -> WakeWordDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (one channel), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples
    if np.issubdtype(samples.dtype, np.floating):
        return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    raise ValueError(f"expected int16 or float audio, got {samples.dtype}")


def detect(
    audio: np.ndarray,
    models: Iterable[str],
    *,
    thresholds: dict[str, float] | None = None,
    refractory_s: float = DEFAULT_REFRACTORY_S,
) -> list[Detection]:
    """All detections in a whole 16 kHz recording (a convenience for files and tests)."""
    with WakeWordDetector(
        list(models), thresholds=thresholds, refractory_s=refractory_s
    ) as detector:
        return detector.feed(audio)
