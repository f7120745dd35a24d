"""The segmenter on arrays: Piper speech with a -60 dBFS noise floor, noise, taps, long speech."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.noises import pink_noise
from tests.speech import noise, synthesize
from voiced.audio.segmenter import (
    Segmenter,
    SpeechPaused,
    SpeechResumed,
    UtteranceCancelled,
    UtteranceEnded,
    UtteranceStarted,
    segment,
    to_int16,
)
from voiced.audio.speech_gate import SpeechGate
from voiced.config import VadSettings

RATE = 16000
FRAME_S = 0.030
# webrtcvad's own hangover after the last voiced sound (measured 0-60 ms on Piper speech).
HANGOVER_S = 0.090
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "What time is it?",
    "Turn the volume down a little, please.",
    "Yes.",
    "No.",
]


# The segmenter as voiced runs it: with the speech gate (Silero) as the second opinion.
GATE = SpeechGate(VadSettings().speech_threshold)


def blocks(audio: np.ndarray, size: int = 480) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, audio.size, size)]


def run(
    audio: np.ndarray,
    settings: VadSettings | None = None,
    size: int = 480,
    *,
    report_pauses: bool = False,
    gate: SpeechGate | None = GATE,
) -> list:
    return list(segment(blocks(audio, size), settings, report_pauses=report_pauses, gate=gate))


def ended(events: list) -> list[UtteranceEnded]:
    return [e for e in events if isinstance(e, UtteranceEnded)]


def speech_bounds(text: str, lead_s: float, tail_s: float) -> tuple[float, float]:
    """Where the speech really is: first and last sample above -40 dBFS in a clean rendering."""
    clean = synthesize(text, noise_dbfs=-150.0, lead_s=lead_s, tail_s=tail_s)
    loud = np.flatnonzero(np.abs(clean) > 0.01)
    return loud[0] / RATE, (loud[-1] + 1) / RATE


def audible_onset(text: str, lead_s: float, tail_s: float, floor_dbfs: float) -> float:
    """Start of the first 30 ms frame of a clean rendering whose level passes ``floor_dbfs``.

    A soft consonant ("Wh...") can whisper along under the floor for 100-200 ms; the segmenter
    starts at the first frame loud enough to be speech and keeps the rest by pre-roll.
    """
    clean = synthesize(text, noise_dbfs=-150.0, lead_s=lead_s, tail_s=tail_s)
    frame = int(FRAME_S * RATE)
    frames = clean[: clean.size // frame * frame].reshape(-1, frame)
    level = 20 * np.log10(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-10))
    return float(np.flatnonzero(level > floor_dbfs)[0]) * FRAME_S


def mains_hum(seconds: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 8))
    hum *= 10 ** (dbfs / 20) / np.sqrt(np.mean(hum**2))
    return hum.astype(np.float32)


@pytest.mark.parametrize("text", SENTENCES)
def test_onset_and_offset_of_speech_within_a_frame(text: str) -> None:
    audio = synthesize(text, lead_s=1.0, tail_s=1.5)
    first_sound, offset = speech_bounds(text, 1.0, 1.5)
    onset = audible_onset(text, 1.0, 1.5, VadSettings().energy_floor_dbfs)
    events = run(audio)
    assert [type(e) for e in events] == [UtteranceStarted, UtteranceEnded]
    started, utterance = events
    assert abs(started.start_s - onset) <= FRAME_S
    assert utterance.audio_start_s <= first_sound  # the pre-roll keeps the soft beginning
    assert utterance.start_s == started.start_s
    assert -FRAME_S <= utterance.end_s - offset <= HANGOVER_S + FRAME_S
    # The endpoint is decided after exactly vad.silence_ms of silence (rounded up to frames).
    assert utterance.reason == "silence"
    assert utterance.endpoint_wait_ms == 720
    assert utterance.endpoint_s == pytest.approx(utterance.end_s + 0.720)
    assert started.detected_s >= started.start_s


def test_pre_roll_and_post_roll_audio_is_kept_bit_exact() -> None:
    audio = synthesize(SENTENCES[0], lead_s=1.0, tail_s=1.5)
    settings = VadSettings(pre_roll_ms=300, post_roll_ms=240)
    (utterance,) = ended(run(audio, settings))
    assert utterance.audio_start_s == pytest.approx(utterance.start_s - 0.300)
    assert utterance.audio_end_s == pytest.approx(utterance.end_s + 0.240)
    first = round(utterance.audio_start_s * RATE)
    last = round(utterance.audio_end_s * RATE)
    expected = to_int16(audio)[first:last].astype(np.float32) / 32768.0
    np.testing.assert_array_equal(utterance.audio, expected)
    assert utterance.audio.dtype == np.float32


def test_pre_roll_is_limited_to_the_audio_before_the_onset() -> None:
    audio = synthesize(SENTENCES[1], lead_s=0.1, tail_s=1.0)
    (utterance,) = ended(run(audio, VadSettings(pre_roll_ms=600)))
    assert utterance.audio_start_s == 0.0
    assert utterance.audio.size == round(utterance.audio_end_s * RATE)


def test_two_sentences_with_a_pause_are_two_utterances() -> None:
    first = synthesize(SENTENCES[0], lead_s=0.5, tail_s=0.6, seed=1)
    second = synthesize(SENTENCES[1], lead_s=0.6, tail_s=1.0, seed=2)
    utterances = ended(run(np.concatenate([first, second])))
    assert len(utterances) == 2
    assert utterances[0].end_s < first.size / RATE < utterances[1].start_s


def test_a_short_pause_does_not_split_an_utterance() -> None:
    first = synthesize(SENTENCES[0], lead_s=0.5, tail_s=0.15, seed=1)
    second = synthesize(SENTENCES[2], lead_s=0.15, tail_s=1.0, seed=2)
    assert len(ended(run(np.concatenate([first, second])))) == 1


@pytest.mark.parametrize("block", [160, 333, 480, 4000])
def test_block_size_does_not_change_the_result(block: int) -> None:
    audio = synthesize(SENTENCES[2], lead_s=0.8, tail_s=1.0)
    reference = ended(run(audio, size=480))
    result = ended(run(audio, size=block))
    assert [(u.start_s, u.end_s) for u in result] == [(u.start_s, u.end_s) for u in reference]
    np.testing.assert_array_equal(result[0].audio, reference[0].audio)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_every_webrtcvad_frame_length_works(frame_ms: int) -> None:
    audio = synthesize(SENTENCES[0], lead_s=1.0, tail_s=1.5)
    onset, offset = speech_bounds(SENTENCES[0], 1.0, 1.5)
    (utterance,) = ended(run(audio, VadSettings(frame_ms=frame_ms)))
    assert abs(utterance.start_s - onset) <= FRAME_S
    assert -FRAME_S <= utterance.end_s - offset <= HANGOVER_S + FRAME_S


def test_int16_and_float_input_give_the_same_result() -> None:
    audio = synthesize(SENTENCES[1], lead_s=0.8, tail_s=1.0)
    from_float = ended(run(audio))
    from_int16 = ended(run(to_int16(audio)))
    np.testing.assert_array_equal(from_float[0].audio, from_int16[0].audio)


def test_long_speech_is_split_never_dropped() -> None:
    text = " ".join(
        [SENTENCES[0]] * 4 + ["Then it ran home and slept for the rest of the day."] * 2
    )
    audio = synthesize(text, lead_s=1.0, tail_s=1.5)
    onset, offset = speech_bounds(text, 1.0, 1.5)
    events = run(audio, VadSettings(max_utterance_s=5.0))
    assert not [e for e in events if isinstance(e, UtteranceCancelled)]
    pieces = ended(events)
    assert len(pieces) >= 3
    assert [p.reason for p in pieces[:-1]] == ["max_length"] * (len(pieces) - 1)
    assert all(p.end_s - p.start_s <= 5.0 + 1e-9 for p in pieces)
    # Nothing dropped: pieces never overlap, and what lies between two pieces is silence.
    for before, after in itertools.pairwise(pieces):
        assert after.audio_start_s >= before.audio_end_s - 1e-9
        gap = audio[round(before.audio_end_s * RATE) : round(after.audio_start_s * RATE)]
        assert gap.size == 0 or 20 * np.log10(np.sqrt(np.mean(gap**2))) < -50
    assert pieces[0].start_s <= onset + FRAME_S
    assert pieces[-1].end_s >= offset - FRAME_S
    # Starts and ends alternate, one start per piece.
    starts = [e for e in events if isinstance(e, UtteranceStarted)]
    assert [s.index for s in starts] == [p.index for p in pieces]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: noise(8, dbfs=-40, seed=3), id="white-40dBFS"),
        pytest.param(lambda: noise(8, dbfs=-30, seed=3), id="white-30dBFS"),
        pytest.param(lambda: noise(8, dbfs=-20, seed=3), id="white-20dBFS"),
        pytest.param(lambda: pink_noise(8, -30), id="pink-30dBFS"),
        pytest.param(lambda: pink_noise(8, -20), id="pink-20dBFS"),
        pytest.param(lambda: mains_hum(8, -30) + noise(8, seed=4), id="hum-30dBFS"),
    ],
)
def test_steady_noise_is_not_segmented(make) -> None:
    steady = make()
    assert ended(run(steady)) == []
    # Also when it switches on after a quiet room: webrtcvad may start an utterance, and the
    # speech gate cancels it.
    events = run(np.concatenate([noise(1.0, seed=5), steady]))
    assert ended(events) == []
    for event in events:
        if isinstance(event, UtteranceCancelled):
            assert event.reason in ("not_speech", "too_short")
            if event.reason == "not_speech":
                assert event.speech_prob < VadSettings().speech_threshold


def test_noise_stepping_between_levels_is_not_segmented() -> None:
    steps = np.concatenate(
        [
            noise(1.0, seed=10),
            noise(3.0, dbfs=-30, seed=11),
            noise(3.0, dbfs=-20, seed=12),
            pink_noise(3.0, -25, seed=13),
            mains_hum(3.0, -25) + noise(3.0, seed=14),
        ]
    )
    events = run(steps)
    assert ended(events) == []
    cancelled = [e for e in events if isinstance(e, UtteranceCancelled)]
    assert cancelled, "the level steps should have started (and then cancelled) utterances"
    assert all(e.reason == "not_speech" and e.speech_prob < 0.45 for e in cancelled)


def test_speech_in_moderate_noise_is_still_found() -> None:
    speech = synthesize(SENTENCES[2], lead_s=3.0, tail_s=1.5)
    background = pink_noise(speech.size / RATE, -35.0, seed=6)[: speech.size]
    (utterance,) = ended(run(speech + background))
    onset, offset = speech_bounds(SENTENCES[2], 3.0, 1.5)
    # Weak final consonants drown in the noise; the pre- and post-roll still keep all speech.
    assert utterance.audio_start_s <= onset <= utterance.start_s + FRAME_S
    assert utterance.audio_end_s >= offset


def a_tap() -> np.ndarray:
    """A 120 ms decaying burst (a finger on the desk) in a room's noise floor."""
    tap = noise(3.0, seed=7)
    burst = np.random.default_rng(8).standard_normal(int(0.12 * RATE)) * 0.3
    envelope = np.exp(-np.arange(burst.size) / (0.03 * RATE))
    tap[RATE : RATE + burst.size] += (burst * envelope).astype(np.float32)
    return tap


def test_taps_and_clicks_are_cancelled_as_too_short() -> None:
    assert ended(run(a_tap())) == []


def test_silence_gives_no_events() -> None:
    assert run(noise(7.0, seed=9)) == []


def test_digital_silence_is_not_speech() -> None:
    assert ended(run(np.zeros(5 * RATE, dtype=np.int16))) == []


def test_flush_finishes_the_utterance_in_flight() -> None:
    audio = synthesize(SENTENCES[0], lead_s=0.5, tail_s=0.0)
    segmenter = Segmenter()
    events = segmenter.feed(audio[: audio.size - 1000])
    assert segmenter.in_utterance
    assert [type(e) for e in events] == [UtteranceStarted]
    (utterance,) = segmenter.flush()
    assert isinstance(utterance, UtteranceEnded)
    assert utterance.reason == "flush"
    assert utterance.audio_end_s >= (audio.size - 1000) / RATE
    assert segmenter.flush() == []


def test_a_pause_carries_exactly_the_audio_of_the_utterance_that_ends_there() -> None:
    audio = synthesize(SENTENCES[0], lead_s=1.0, tail_s=1.5)
    settings = VadSettings(post_roll_ms=240, silence_ms=700)
    events = run(audio, settings, report_pauses=True)
    kinds = [type(e) for e in events]
    assert kinds == [UtteranceStarted, SpeechPaused, UtteranceEnded]
    paused, utterance = events[1], events[2]
    assert paused.index == utterance.index
    assert (paused.audio_start_s, paused.audio_end_s) == (
        utterance.audio_start_s,
        utterance.audio_end_s,
    )
    np.testing.assert_array_equal(paused.audio, utterance.audio)
    # Reported 240 ms after the speech, while the endpoint waits 700 ms.
    assert paused.audio_end_s == pytest.approx(utterance.end_s + 0.240)
    # Without report_pauses the events are as before.
    assert [type(e) for e in run(audio, settings)] == [UtteranceStarted, UtteranceEnded]


def test_speech_after_a_pause_resumes_the_same_utterance() -> None:
    first = synthesize(SENTENCES[0], lead_s=0.5, tail_s=0.45, seed=1)
    second = synthesize(SENTENCES[2], lead_s=0.1, tail_s=1.0, seed=2)
    events = run(np.concatenate([first, second]), VadSettings(post_roll_ms=240), report_pauses=True)
    kinds = [type(e) for e in events]
    assert kinds == [UtteranceStarted, SpeechPaused, SpeechResumed, SpeechPaused, UtteranceEnded]
    early, resumed, late, utterance = events[1:]
    assert early.index == resumed.index == late.index == utterance.index == 0
    assert early.audio_end_s < resumed.at_s < late.audio_end_s == utterance.audio_end_s
    np.testing.assert_array_equal(late.audio, utterance.audio)
    assert early.audio.size < utterance.audio.size


def test_no_pause_is_reported_for_what_will_be_cancelled() -> None:
    events = run(a_tap(), report_pauses=True)
    assert [type(e) for e in events] == [UtteranceStarted, UtteranceCancelled]
    assert not [e for e in events if isinstance(e, (SpeechPaused, UtteranceEnded))]


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mono"):
        Segmenter().feed(np.zeros((480, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="int16"):
        Segmenter().feed(np.zeros(480, dtype=np.int32))
    with pytest.raises(ValueError, match="kHz"):
        Segmenter(sample_rate=44100)


@pytest.mark.parametrize("max_utterance_s", [1.2, 2.0, 2.4])
def test_speech_after_a_split_is_never_cancelled(max_utterance_s: float) -> None:
    # The split falls inside the first sentence (1.2 s) or in the 250 ms pause after it
    # (2.0, 2.4 s); either way "No." continues the same utterance, however short it is.
    first = synthesize(SENTENCES[2], lead_s=0.5, tail_s=0.0, seed=1)
    second = synthesize(SENTENCES[4], lead_s=0.25, tail_s=1.0, seed=2)
    audio = np.concatenate([first, second])
    _, no_end = speech_bounds(SENTENCES[4], 0.25, 1.0)
    settings = VadSettings(min_utterance_ms=600, max_utterance_s=max_utterance_s)
    events = run(audio, settings, report_pauses=True)
    assert not [e for e in events if isinstance(e, UtteranceCancelled)]
    pieces = ended(events)
    assert len(pieces) >= 2
    assert pieces[-1].audio_end_s >= first.size / RATE + no_end
    for before, after in itertools.pairwise(pieces):
        assert after.audio_start_s >= before.audio_end_s - 1e-9
    starts = [e for e in events if isinstance(e, UtteranceStarted)]
    assert [s.index for s in starts] == [p.index for p in pieces]
    assert [s.continues for s in starts] == [False] + [True] * (len(pieces) - 1)
    # The last piece is reported in its pause with exactly the audio it ends with.
    (paused,) = [e for e in events if isinstance(e, SpeechPaused) and e.index == pieces[-1].index]
    np.testing.assert_array_equal(paused.audio, pieces[-1].audio)


# -- settings other than the defaults change the segmentation as documented ---------------


@pytest.mark.parametrize(("silence_ms", "pieces"), [(900, 1), (300, 2)])
def test_silence_ms_decides_whether_a_pause_ends_the_utterance(
    silence_ms: int, pieces: int
) -> None:
    first = synthesize(SENTENCES[0], lead_s=0.5, tail_s=0.25, seed=1)
    second = synthesize(SENTENCES[2], lead_s=0.25, tail_s=1.5, seed=2)
    utterances = ended(run(np.concatenate([first, second]), VadSettings(silence_ms=silence_ms)))
    assert len(utterances) == pieces
    assert all(u.endpoint_wait_ms == silence_ms for u in utterances)  # both whole frames
    assert utterances[0].start_s < first.size / RATE < utterances[-1].end_s


def test_speech_start_ms_is_the_voiced_run_that_starts_an_utterance() -> None:
    yes = synthesize("Yes.", lead_s=0.5, tail_s=1.0)
    assert len(ended(run(yes))) == 1
    assert run(yes, VadSettings(speech_start_ms=450)) == []
    # A sentence starts at the same onset, decided only after the longer voiced run.
    sentence = synthesize(SENTENCES[0], lead_s=0.5, tail_s=1.0)
    quick = next(e for e in run(sentence) if isinstance(e, UtteranceStarted))
    slow = next(
        e
        for e in run(sentence, VadSettings(speech_start_ms=600))
        if isinstance(e, UtteranceStarted)
    )
    assert slow.start_s == quick.start_s
    assert slow.detected_s - slow.start_s >= 0.600 > quick.detected_s - quick.start_s


def test_min_utterance_ms_cancels_what_is_shorter() -> None:
    yes = synthesize("Yes.", lead_s=0.5, tail_s=1.0)
    question = synthesize(SENTENCES[1], lead_s=0.5, tail_s=1.0)
    longer = VadSettings(min_utterance_ms=600)
    assert len(ended(run(yes))) == 1
    events = run(yes, longer)
    assert ended(events) == []
    (cancelled,) = [e for e in events if isinstance(e, UtteranceCancelled)]
    assert cancelled.reason == "too_short" and cancelled.end_s - cancelled.start_s < 0.600
    assert len(ended(run(question, longer))) == 1


def test_aggressiveness_decides_whether_a_fan_after_speech_holds_the_utterance() -> None:
    # A quiet fan (-45 dBFS) switches on as the sentence ends and runs for 2 s. webrtcvad at
    # its least aggressive calls it speech (loud enough for the energy gate, whose floor is
    # still the quiet room's); at its most aggressive it does not.
    speech = synthesize(SENTENCES[0], lead_s=1.0, tail_s=0.0, seed=1)
    fan_end_s = speech.size / RATE + 2.0
    audio = np.concatenate([speech, pink_noise(2.0, -45.0, seed=11), noise(1.5, seed=5)])
    _, offset = speech_bounds(SENTENCES[0], 1.0, 0.0)
    (strict,) = ended(run(audio, VadSettings(aggressiveness=3)))
    (lenient,) = ended(run(audio, VadSettings(aggressiveness=0)))
    assert strict.end_s <= offset + HANGOVER_S + FRAME_S
    assert lenient.end_s >= fan_end_s - 0.3
