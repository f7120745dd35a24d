"""The STT engine's guards: no invented text, and a short window that falls back when it fails."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.speech import noise, synthesize, wer
from voiced.audio.speech_gate import SURE
from voiced.speech.stt import (
    SpeechToText,
    _looks_wrong,
    _loop_unit,
    _repeats,
    clean_text,
    listener_threads,
    speech_map,
)
from voiced.speech.text_filters import is_repetition_loop


@dataclass
class RawSegment:
    text: str
    t0: int = 0
    t1: int = 3000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[BLANK_AUDIO]", ""),
        (" (wind blowing) ", ""),
        ("Hello [Music] there.", "Hello there."),
        ("*laughs* Okay.", "Okay."),
        ("♪ la la la ♪", ""),
        ("It costs 5 dollars.", "It costs 5 dollars."),
        ("(horn honking)", ""),
        ("*beep*", ""),
        ("{applause}", ""),
        ("- [Music] -", ""),
        ("Hello [Music] .", "Hello."),
        ("[ Silence ] Yes, please.", "Yes, please."),
    ],
)
def test_non_speech_tags_are_removed(text: str, expected: str) -> None:
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Beep beep beep beep beep beep beep beep",
        "Beep, beep, beep, beep.",
        "Honk! Honk! Honk! Honk! Honk!",
        "Thank you. Thank you. Thank you. Thank you.",
        "Oh no, oh no, oh no, oh no.",
        "I'm going to go. I'm going to go. I'm going to go.",
    ],
)
def test_a_repetition_loop_is_recognised(text: str) -> None:
    assert is_repetition_loop(text)


@pytest.mark.parametrize(
    "text",
    [
        "no, no, no, not that one",
        "No, no, no, no, not that one.",
        "Beep beep beep",  # three beeps may be said; the speech gate judges the sound
        "I said go, go, go, go now.",
        "Watch out. Watch out. Watch out.",  # a two-word phrase needs four repeats
        "Yes.",
        "Very very good.",
        "what is the weather like what is the weather like",
        "Turn off the lights in the kitchen and lock the back door.",
    ],
)
def test_a_genuine_repeated_phrase_is_kept(text: str) -> None:
    assert not is_repetition_loop(text)


def test_repetition_detector() -> None:
    assert _repeats("what is the weather like what is the weather like".split())
    assert not _repeats("turn off the lights in the kitchen and lock the door".split())


def test_short_window_result_checks() -> None:
    sentence = "What is the weather like outside today?"
    assert not _looks_wrong([RawSegment(sentence)], 2.5, 2.0)
    assert _looks_wrong([RawSegment(sentence), RawSegment(sentence)], 2.5, 2.0)  # a loop
    assert _looks_wrong([RawSegment("yes " * 30)], 2.0, 1.5)  # far too many words
    assert _looks_wrong([], 2.5, 2.0)  # speech heard, nothing decoded
    assert not _looks_wrong([RawSegment("♪♪♪♪♪♪♪♪")], 2.5, 2.0)  # whisper calls it music
    assert not _looks_wrong([], 2.5, 0.2)


def test_a_short_loop_is_taken_for_the_phrase_it_repeats() -> None:
    loop = [RawSegment("Yes? " * 16)]
    (unit,) = _loop_unit(loop, 1.3, 0.5)
    assert (unit.text, unit.t0, unit.t1) == ("Yes?", 0, 130)
    (unit,) = _loop_unit([RawSegment("Turn off the lights. " * 4 + "Turn off")], 1.8, 1.1)
    assert unit.text == "Turn off the lights."
    assert _loop_unit([RawSegment("No, " * 8)], 1.2, 0.4)[0].text == "No"
    # Mixed with other text, a long clip, no speech heard, a phrase too long for the speech:
    # the full window decides.
    mixed = [RawSegment("Turn off the lights. " * 4), RawSegment("the white")]
    assert _loop_unit(mixed, 2.0, 1.0) is None
    assert _loop_unit([RawSegment("I think so. " * 10)], 9.0, 7.0) is None
    assert _loop_unit([RawSegment("Beep " * 12)], 2.0, 0.1) is None
    long_phrase = "one two three four five six seven eight nine ten eleven twelve. "
    assert _loop_unit([RawSegment(long_phrase * 3)], 2.0, 0.5) is None
    assert _loop_unit([RawSegment("... " * 12)], 2.0, 1.0) is None


def test_short_commands_that_loop_in_the_short_window_are_not_redone(
    stt: SpeechToText, caplog: pytest.LogCaptureFixture
) -> None:
    """In the listeners' engine (no flash attention), tiny.en loops on about one short command
    in five: each comes back right without the second-long full-window decode."""
    engine = SpeechToText(stt.model_path, model_name="tiny.en", flash_attention=False)
    repaired = 0
    for text in ["Yes.", "No.", "Okay.", "Stop.", "Computer."]:
        for seed in range(4):
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="voiced.speech.stt"):
                heard = engine.transcribe(synthesize(text, seed=seed, lead_s=0.2, tail_s=0.5))
            if "short-window loop" in caplog.text:
                repaired += 1
                assert wer(text, heard.text) == 0.0, (text, heard.text, caplog.text)
                assert "full window" not in caplog.text, caplog.text
    assert repaired, "no command looped in the short window: this test checks nothing"


@pytest.mark.parametrize(
    ("cores", "configured", "expected"), [(2, 0, 1), (1, 0, 1), (8, 0, 7), (16, 0, 8), (2, 2, 2)]
)
def test_a_listener_leaves_a_core_to_the_microphone_and_the_end_of_turn_model(
    monkeypatch: pytest.MonkeyPatch, cores: int, configured: int, expected: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert listener_threads(configured) == expected


def test_speech_map_finds_speech_not_noise() -> None:
    speech = synthesize("Turn off the lights in the kitchen.")
    assert speech_map(speech, -55.0).speech_seconds > 1.0
    assert speech_map(noise(3.0, dbfs=-60), -55.0).speech_seconds == 0.0
    assert speech_map(np.zeros(48000, dtype=np.float32), -55.0).speech_seconds == 0.0


SHORT = [
    "Turn off the lights in the kitchen and lock the back door.",
    "How much memory is free right now?",
    "Please list the files in my documents folder.",
]


def test_short_window_is_as_accurate_as_the_full_window(stt: SpeechToText) -> None:
    full = SpeechToText(stt.model_path, model_name="tiny.en", chunk_s=0)
    for i, sentence in enumerate(SHORT):
        audio = synthesize(sentence, seed=20 + i)
        fast_text, full_text = stt.transcribe(audio).text, full.transcribe(audio).text
        assert wer(sentence, fast_text) <= wer(sentence, full_text) + 0.1, (fast_text, full_text)


def test_a_window_too_small_to_work_falls_back(stt: SpeechToText) -> None:
    # With no margin the decoder tends to loop or stop; the guard must notice and redo it.
    # (Flash attention off: with it, windows are rounded up to 256 frames, a margin anyway.)
    tight = SpeechToText(
        stt.model_path, model_name="tiny.en", window_margin=0, flash_attention=False
    )
    for i, sentence in enumerate(SHORT):
        text = tight.transcribe(synthesize(sentence, seed=30 + i)).text
        assert wer(sentence, text) <= 0.15, text


def test_a_result_does_not_depend_on_what_was_decoded_before(stt: SpeechToText) -> None:
    # whisper.cpp's flash attention reads the cross-attention context padded to 256 frames
    # without a mask; windows not rounded to that would see frames left by a longer clip.
    clip = synthesize(SHORT[1], seed=5)
    longer = synthesize(" ".join(SHORT), seed=6)
    engine = SpeechToText(stt.model_path, model_name="tiny.en")
    first = engine.transcribe(clip)
    engine.transcribe(longer)
    assert engine.transcribe(clip) == first


def test_short_clip_timestamps_stay_inside_the_clip(stt: SpeechToText) -> None:
    audio = synthesize(SHORT[0], seed=3, lead_s=1.0)
    result = stt.transcribe(audio)
    assert result.segments
    assert all(0 <= s.start <= s.end <= result.duration for s in result.segments)


def test_find_speech_keeps_the_sentences_and_skips_the_pauses() -> None:
    from voiced.config import VadSettings
    from voiced.speech.stt import find_speech

    first = synthesize(SHORT[0], seed=60, lead_s=0.5, tail_s=0.5)
    second = synthesize(SHORT[1], seed=61, lead_s=0.5, tail_s=0.5)
    audio = np.concatenate([first, noise(10.0, seed=62), second])
    speech = find_speech(audio, VadSettings(), -55.0)
    start_second = (first.size + 160000) / 16000
    # All of both sentences is speech on the map; the 10 s pause is not.
    assert speech.speech_between(0.5, first.size / 16000 - 0.6) >= first.size / 16000 - 1.3
    assert speech.speech_between(first.size / 16000 + 1.0, start_second - 0.5) == 0.0
    assert speech.speech_between(start_second + 0.5, audio.size / 16000 - 0.6) > 1.0
    chunks = speech.chunks(12.8)
    decoded = sum(last - first for first, last in chunks) / 16000
    assert decoded < audio.size / 16000 - 8.0
    # The gate's verdict rides along: speech where the sentences are, nothing in the pause.
    assert speech.speech_prob_between(0.5, first.size / 16000) >= 0.45
    assert speech.speech_prob_between(first.size / 16000 + 1.0, start_second - 1.0) is None


def test_noise_alone_is_never_decoded(stt: SpeechToText) -> None:
    from tests.noises import alarm, beeps, car_horn, knocks

    for make in (car_horn, beeps, alarm, knocks):
        result = stt.transcribe(make())
        assert result.segments == () and result.speech_seconds == 0.0


def test_the_speech_prob_of_a_span_comes_from_the_gate_windows_inside_it() -> None:
    from voiced.speech.stt import SpeechMap

    # Two gate pieces: one at 0 s (speech for its first second, then doubtful noise), one at
    # 10 s that stopped early, sure of speech.
    first = np.concatenate([np.full(31, 0.99), np.full(60, 0.1)])
    second = np.full(10, 0.95)
    speech = SpeechMap(
        np.ones(500, bool), np.zeros(500), 15 * 16000, ((0, first), (160000, second))
    )
    assert speech.speech_prob_between(0.0, 1.0) == pytest.approx(0.99)
    assert speech.speech_prob_between(1.2, 2.9) == pytest.approx(0.1)  # a segment over noise
    assert speech.speech_prob_between(9.9, 11.0) == pytest.approx(0.95)
    # Past where the second piece stopped, sure: speech.
    assert speech.speech_prob_between(12.0, 14.0) == pytest.approx(SURE)
    assert SpeechMap(np.ones(5, bool), np.zeros(5)).speech_prob_between(0, 1) is None


def test_a_span_late_in_an_utterance_the_gate_was_sure_of_is_speech() -> None:
    """The gate stops scoring an utterance once sure of speech; a segment late in it must not
    be judged by the cold first windows of the next utterance alone (real prompts back to
    back lost whole sentences so)."""
    from voiced.speech.stt import SpeechMap

    sure = np.concatenate([np.full(3, 0.05), np.full(10, 0.99)])  # stopped at 0.42 s
    cold_start = np.concatenate([np.full(6, 0.02), np.full(20, 0.9)])  # the next one, at 3 s
    noise = np.full(40, 0.1)  # a third one over noise, at 5 s, right after it
    voiced = np.zeros(300, bool)
    voiced[: 7 * 1000 // 30] = True  # one run of speech frames: 0-7 s
    speech = SpeechMap(
        voiced, np.zeros(300), 9 * 16000, ((0, sure), (48000, cold_start), (80000, noise))
    )
    assert speech.speech_prob_between(2.0, 3.2) == pytest.approx(SURE)
    assert speech.speech_prob_between(5.2, 6.0) == pytest.approx(0.1)  # vouched by none


def test_max_segment_chars_splits_at_words_with_token_timestamps(stt: SpeechToText) -> None:
    sentence = "The quick brown fox jumps over the lazy dog and then runs into the forest."
    audio = synthesize(sentence, seed=8)
    split = SpeechToText(stt.model_path, model_name="tiny.en", max_segment_chars=16)
    result = split.transcribe(audio)
    assert len(result.segments) >= 4, result.segments
    assert all(len(s.text) <= 16 for s in result.segments), result.segments
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(0 <= s.start < s.end <= result.duration for s in result.segments)
    assert wer(sentence, result.text) <= 0.15, result.text


def test_beam_search_goes_through_whisper(stt: SpeechToText) -> None:
    beam = SpeechToText(stt.model_path, model_name="tiny.en", beam_size=4)
    for i, sentence in enumerate(SHORT):
        text = beam.transcribe(synthesize(sentence, seed=40 + i)).text
        assert wer(sentence, text) <= 0.15, text
    params = beam._model.get_params()  # what whisper_full was last called with
    assert params["strategy"].name == "WHISPER_SAMPLING_BEAM_SEARCH"
    assert params["beam_search"]["beam_size"] == 4


# Loads the model as the daemon does, warms it up, then decodes in the full window (the
# fallback of a short window that looks wrong) and prints how much the process grew.
_GROWTH_AFTER_WARM_UP = """
import sys
import numpy as np
import psutil
from pathlib import Path
from voiced.config import SttSettings
from voiced.speech.models import ModelStore
from voiced.speech.stt import SpeechToText

store = ModelStore(Path(sys.argv[1]))
stt = SpeechToText.from_settings(SttSettings(), store, flash_attention=False)
stt.warm_up()
before = psutil.Process().memory_info().rss
noise = (np.random.default_rng(0).standard_normal(3 * 16000) * 0.05).astype(np.float32)
stt._decode(noise, audio_ctx=0)
print((psutil.Process().memory_info().rss - before) / 2**20)
"""


def test_the_full_window_fallback_adds_no_memory_after_the_warm_up(whisper_store: Path) -> None:
    """A daemon's memory must not step up at its first full-window decode, hours in.

    The 60-minute soak of `voiced run` saw one step of ~95 MiB at minute 17: the first
    fallback touched whisper's full-window compute buffers. Measured in a fresh process, so
    no other test's models count.
    """
    done = subprocess.run(
        [sys.executable, "-c", _GROWTH_AFTER_WARM_UP, str(whisper_store)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown_mib = float(done.stdout.strip().splitlines()[-1])
    assert grown_mib < 20, f"the first full-window decode after warm_up() added {grown_mib:.0f} MiB"


_EXIT_DURING_A_DECODE = """
import atexit, sys, threading
from pathlib import Path

in_flight = []
# Registered before voiced's own hook, so it runs after it: just before the models are freed.
atexit.register(lambda: print(f"whisper calls in flight: {len(in_flight)}", flush=True))

from tests.speech import synthesize
from voiced.config import SttSettings
from voiced.speech.models import ModelStore
from voiced.speech.stt import SpeechToText

stt = SpeechToText.from_settings(SttSettings(threads=1), ModelStore(Path(sys.argv[1])))
audio = synthesize("The quick brown fox jumps over the lazy dog near the river.", seed=3)
whisper_call = stt._model.transcribe
started = threading.Event()


def counted(*args, **kwargs):
    in_flight.append(1)
    started.set()
    try:
        return whisper_call(*args, **kwargs)
    finally:
        in_flight.pop()


stt._model.transcribe = counted
threading.Thread(target=lambda: stt.transcribe(audio), daemon=True).start()
started.wait(60)
"""


def test_a_process_ending_during_a_transcription_frees_no_model_in_use(
    whisper_store: Path,
) -> None:
    """The main thread ends while another thread is in whisper_full: Python would free the
    model under it (a segfault in about 1 of 5 such exits here). The exit waits for the
    whisper call instead, and the transcription makes no more."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_DURING_A_DECODE, str(whisper_store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1:] == ["whisper calls in flight: 0"], done


def test_a_file_s_chunks_decoded_side_by_side_give_the_same_result(stt: SpeechToText) -> None:
    """``parallel_chunks`` (voiced transcribe) decodes chunks on two contexts at once.

    The result, word times included, is the one chunk after chunk on one context gives, and
    progress is reported in order up to the end.
    """
    sentences = SHORT * 3
    pieces = []
    for i, sentence in enumerate(sentences):
        pieces += [synthesize(sentence, seed=70 + i), noise(0.9, seed=80 + i)]
    audio = np.concatenate(pieces)  # ~35 s: three chunks or more
    kwargs = dict(model_name="tiny.en", word_timestamps=True)
    alone = SpeechToText(stt.model_path, threads=1, **kwargs).transcribe(audio)
    engine = SpeechToText(stt.model_path, threads=2, parallel_chunks=True, **kwargs)
    progress: list[float] = []
    together = engine.transcribe(audio, on_progress=progress.append)
    assert engine._twin is not None  # the second context did its share
    assert together == alone
    assert wer(" ".join(sentences), together.text) <= 0.15, together.text
    assert progress == sorted(progress) and progress[-1] == pytest.approx(together.duration)
    assert len(progress) >= 3


def test_the_second_context_gets_every_option_of_the_first(stt: SpeechToText) -> None:
    """The side-by-side context is built from ``_twin_args``, copied by hand from the
    constructor's: an option added to one and not the other would decode half a file's
    chunks differently."""
    import inspect

    own = set(inspect.signature(SpeechToText.__init__).parameters) - {"self"}
    # The model file, its share of the threads, and no third context.
    assert set(stt._twin_args) == own - {"model_path", "threads", "parallel_chunks"}


def test_side_by_side_chunks_stop_when_aborted(stt: SpeechToText) -> None:
    from voiced.speech.stt import TranscriptionAborted

    audio = np.concatenate([synthesize(" ".join(SHORT), seed=90 + i) for i in range(3)])
    engine = SpeechToText(stt.model_path, model_name="tiny.en", threads=2, parallel_chunks=True)
    calls: list[int] = []

    def abort() -> bool:
        calls.append(1)
        return len(calls) > 20

    with pytest.raises(TranscriptionAborted):
        engine.transcribe(audio, abort=abort)
    assert engine._twin is not None
    # Both contexts are free again: a transcription after the abort works.
    assert wer(SHORT[0], engine.transcribe(synthesize(SHORT[0], seed=99)).text) <= 0.15


def test_long_speech_is_cut_in_its_last_pause_not_in_a_word() -> None:
    from voiced.speech.stt import SpeechMap

    # 19 s of speech at -25 dBFS with a 0.45 s pause at 7 s and a single deep dip (a stop
    # consonant) at 11 s: the first chunk ends in the pause, not in the word at the dip.
    frames = round(19 / 0.03)
    levels = np.full(frames, -25.0)
    levels[round(7.0 / 0.03) : round(7.45 / 0.03)] = -60.0
    levels[round(11.0 / 0.03)] = -90.0
    speech = SpeechMap(np.ones(frames, bool), levels, frames * 480)
    chunks = speech.chunks(12.8)
    assert 7.0 <= chunks[0][1] / 16000 <= 7.45, chunks
    assert all(last - first <= 12.8 * 16000 for first, last in chunks)
    assert chunks[-1][1] == frames * 480 and len(chunks) == 2


def test_find_speech_hands_out_partial_maps_that_stay_true() -> None:
    """``on_partial``: while a file is searched, the map before ``settled`` is final."""
    from voiced.config import VadSettings
    from voiced.speech.stt import find_speech

    pieces = []
    for i, sentence in enumerate(SHORT * 3):
        pieces += [synthesize(sentence, seed=110 + i), noise(0.9 + 2 * (i % 2), seed=120 + i)]
    audio = np.concatenate(pieces)
    partial: list[tuple[np.ndarray, int]] = []
    final = find_speech(
        audio, VadSettings(), -55.0, lambda m, settled: partial.append((m.voiced, settled))
    )
    assert len(partial) >= 5
    settled_at = [settled for _, settled in partial]
    assert settled_at == sorted(settled_at) and settled_at[-1] > audio.size / 2
    for voiced, settled in partial:
        assert settled < audio.size
        assert np.array_equal(voiced[: settled // 480], final.voiced[: settled // 480])
        assert voiced[: settled // 480].any() or settled < 16000


def test_the_chunk_s_own_log_mel_spectrogram_decodes_as_whisper_cpp_s_does(
    stt: SpeechToText,
) -> None:
    """Short windows get a log-mel spectrogram computed here (not whisper.cpp's, which
    transforms 30 s of zeros with every chunk): same text, same times, same confidence."""
    from voiced.speech.stt import log_mel, read_mel_filters

    engine = SpeechToText(stt.model_path, model_name="tiny.en")
    filters = read_mel_filters(stt.model_path)
    assert filters.shape == (80, 201)
    for i, sentence in enumerate(SHORT):
        audio = np.concatenate(
            [synthesize(sentence, seed=130 + i), noise(0.5, seed=140 + i), synthesize(SHORT[0])]
        )
        ctx = engine._short_ctx(audio.size / 16000)
        mel = log_mel(audio, filters, audio.size // 160 + 3 + 2 * ctx)
        assert mel.shape == (80, audio.size // 160 + 3 + 2 * ctx)
        assert mel.max() == pytest.approx(mel[:, : audio.size // 160].max())
        ours = engine._decode(audio, audio_ctx=ctx)
        ours_logprobs = engine._segment_logprobs(len(ours))
        assert engine._model.get_params()["duration_ms"] > 0  # whisper.cpp got no samples
        engine._set_mel = lambda audio, ctx: (audio, 0)  # whisper.cpp's own spectrogram
        theirs = engine._decode(audio, audio_ctx=ctx)
        theirs_logprobs = engine._segment_logprobs(len(theirs))
        del engine._set_mel
        assert [(s.t0, s.t1, s.text) for s in ours] == [(s.t0, s.t1, s.text) for s in theirs]
        assert ours_logprobs == pytest.approx(theirs_logprobs, abs=0.02)
