"""The wake-word detector on Piper speech (espeak misses some of the models: use Piper)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.speech import noise, synthesize
from voiced.audio.wakeword import (
    WakeWordDetector,
    WakeWordError,
    detect,
    list_models,
    model_info,
)

PHRASES = {
    "hey_jarvis": "Hey Jarvis.",
    "okay_nabu": "Okay Nabu.",
    "hey_mycroft": "Hey Mycroft.",
    "alexa": "Alexa.",
}
# None of these is hey_jarvis's phrase; some come close in sound ("Jarvis", "Hey Jack").
OTHER_SENTENCES = [
    "What is the weather like today?",
    "Computer, what time is it?",
    "The capital of France is the city of Paris.",
    "Hey, are you there? Jarvis is a name.",
    "I told Jarvis to stop.",
    "Hey Jack, what's this?",
    "Please, pass the jars of jam.",
    "Hey Mycroft, how is the weather?",
    "Alexa, what time is it?",
]


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return loud[0] / 16000, loud[-1] / 16000


def test_the_bundled_models_are_listed_with_their_phrases() -> None:
    models = {info.name: info for info in list_models()}
    assert set(PHRASES) <= set(models)
    assert models["hey_jarvis"].phrase == "Hey Jarvis"
    assert models["okay_nabu"].phrase == "Okay Nabu"
    assert all(0 < info.threshold < 1 and info.path.is_file() for info in models.values())
    assert model_info("alexa").source == "pymicro-wakeword"


@pytest.mark.parametrize("model", sorted(PHRASES))
def test_each_model_fires_once_on_its_own_phrase(model: str) -> None:
    audio = synthesize(PHRASES[model])
    detections = detect(audio, [model])
    assert len(detections) == 1, detections
    (detection,) = detections
    start, end = speech_span(audio)
    assert detection.model == model and detection.phrase == model_info(model).phrase
    assert start < detection.time_s <= end + 0.4  # when the phrase has just been said
    assert detection.probability > model_info(model).threshold


def test_the_phrase_at_the_start_of_a_request_is_found_before_the_request() -> None:
    audio = synthesize("Hey Jarvis, what time is it?")
    (detection,) = detect(audio, ["hey_jarvis"])
    start, end = speech_span(audio)
    assert start < detection.time_s < end - 0.5  # "what time is it" is still to come


@pytest.mark.parametrize("text", OTHER_SENTENCES)
def test_no_detection_on_other_sentences(text: str) -> None:
    with WakeWordDetector(["hey_jarvis"]) as detector:
        assert detector.feed(synthesize(text)) == []
        assert detector.peaks()["hey_jarvis"] < 0.9  # measured: at most 0.32


def test_no_detection_on_noise_and_silence() -> None:
    rng = np.random.default_rng(3)
    room = noise(20.0, dbfs=-45.0, seed=3)
    for start in rng.uniform(0, 19.5, size=12):  # knocks, a cup, a door
        index = int(start * 16000)
        room[index : index + 4000] += noise(0.25, dbfs=-12.0, seed=int(start * 100))
    silence = np.zeros(16000 * 5, dtype=np.float32)
    models = sorted(PHRASES)
    assert detect(np.concatenate([silence, room]), models) == []


def test_refractory_period_one_detection_per_phrase() -> None:
    phrase = synthesize("Hey Jarvis.")
    # Without a refractory period the model stays over its cutoff for several frames.
    assert len(detect(phrase, ["hey_jarvis"], refractory_s=0.0)) > 1
    twice = np.concatenate(
        [synthesize("Hey Jarvis.", tail_s=0.2), synthesize("Hey Jarvis.", lead_s=0.2, seed=1)]
    )
    once = detect(twice, ["hey_jarvis"], refractory_s=2.0)  # the second one is inside it
    assert len(once) == 1
    both = detect(twice, ["hey_jarvis"], refractory_s=0.6)
    assert len(both) == 2 and both[1].time_s - both[0].time_s > 0.6


def test_blocks_of_any_size_and_int16_give_the_same_detection() -> None:
    audio = synthesize("Hey Jarvis.")
    (whole,) = detect(audio, ["hey_jarvis"])
    with WakeWordDetector(["hey_jarvis"]) as detector:
        pieces = []
        for offset in range(0, audio.size, 137):
            pieces += detector.feed(audio[offset : offset + 137])
        assert detector.stream_time_s == pytest.approx(audio.size / 16000)
    assert pieces == [whole]
    pcm = (audio * 32767).astype(np.int16)
    assert detect(pcm, ["hey_jarvis"]) == [whole]


def test_several_models_share_one_stream() -> None:
    audio = np.concatenate([synthesize("Hey Jarvis."), synthesize("Alexa.", seed=1)])
    detections = detect(audio, ["hey_jarvis", "alexa"])
    assert [d.model for d in detections] == ["hey_jarvis", "alexa"]


def test_threshold_override_and_reset() -> None:
    audio = synthesize("Hey Jarvis.")
    assert detect(audio, ["hey_jarvis"], thresholds={"hey_jarvis": 0.999}) == []
    with WakeWordDetector(["hey_jarvis"], thresholds={"hey_jarvis": 0.5}) as detector:
        assert detector.threshold("hey_jarvis") == 0.5
        first = detector.feed(audio)
        detector.reset()
        assert detector.stream_time_s == 0.0
        assert detector.feed(audio) == first  # the same stream again, from time 0


def test_bad_models_and_bad_audio_are_clear_errors() -> None:
    with pytest.raises(WakeWordError, match=r"unknown wake-word model 'hey_computer'.*hey_jarvis"):
        WakeWordDetector(["hey_computer"])
    with pytest.raises(WakeWordError, match="no wake-word model"):
        WakeWordDetector([])
    with pytest.raises(ValueError, match="between 0 and 1"):
        WakeWordDetector(["alexa"], thresholds={"alexa": 1.5})
    with WakeWordDetector(["alexa"]) as detector:
        with pytest.raises(ValueError, match="mono"):
            detector.feed(np.zeros((480, 2), dtype=np.float32))
        with pytest.raises(ValueError, match="int16 or float"):
            detector.feed(np.zeros(480, dtype=np.int32))
