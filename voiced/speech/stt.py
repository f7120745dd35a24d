"""Speech-to-text with whisper.cpp (pywhispercpp), guarded against invented text.

Whisper happily "hears" words in silence and noise ("Thank you.", "[BLANK_AUDIO]",
"Beep beep beep beep ..."). Every transcription therefore passes these gates:

1. a speech map of the audio, made by the same detector as the microphone's
   (:class:`voiced.audio.segmenter.Segmenter`: webrtcvad and an energy gate propose, the
   Silero speech gate decides): only the speech regions of a file, padded and packed into
   chunks, are decoded, and segment times are put back on the file's time line. An utterance
   that a live segmenter already judged comes with its verdict and is not searched again.
   ``stt.vad_filter: false`` (``voiced transcribe --no-vad``) decodes everything instead;
2. whisper.cpp's own no-speech and log-probability thresholds;
3. per segment (:mod:`voiced.speech.text_filters`): non-speech tags ("[Music]",
   "(horn honking)", "*beep*") are removed, a segment that is one word or short phrase
   repeated many times is dropped, and so is a segment whose time span holds no speech on
   the map or whose audio the speech gate scores below ``vad.speech_threshold``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiced.config import SttSettings, VadSettings
from voiced.decode import SAMPLE_RATE
from voiced.speech.text_filters import clean_text, is_repetition_loop
from voiced.speech.text_filters import words as spoken_words

log = logging.getLogger(__name__)

_FRAME_S = 0.03
_FRAME = int(SAMPLE_RATE * _FRAME_S)
# Less voiced audio than this in a whole clip, or around a segment, is not speech.
_MIN_SPEECH_S = 0.12
# Whisper's segment times are loose; look this far around a segment for speech.
_SEGMENT_SLACK_S = 0.3
_FULL_CTX = 1500
_CTX_STEP = 256
# Audio kept around each stretch of speech when files are cut into chunks.
_CHUNK_PAD_S = 0.3
# Long speech is cut in a pause: this long, within this much of the quietest stretch, which
# is this much under the median level.
_PAUSE_S = 0.24
_PAUSE_DB = 10.0
_PAUSE_BELOW_DB = 15.0
# In a file, speech under loud noise (real music, babble, traffic at 5 dB SNR) clears the
# microphone's 10 dB energy margin a word or more late. Files have no endpoint to hurry, and
# the speech gate judges every region, so they use a lower margin and a longer pre-roll:
# measured on real prompts in those noises, a 10 dB margin started regions 1.3-3.5 s into
# the speech, 6 dB at its start.
FILE_PRE_ROLL_MS = 500
FILE_NOISE_MARGIN_DB = 6.0
# Chunk length with chunk_s = 0 (whisper's own 30 s windows).
_FULL_CHUNK_S = 28.0
# Speech rarely passes ~4 words (~6 tokens) a second; beyond twice that a decoder is looping.
_MAX_WORDS_PER_S = 8.0
# The speech gate's windows, in samples.
_GATE_WINDOW = 512
# A short window's decoder loop on a clip of at most this much audio, holding at least this
# much speech, is taken for the phrase it repeats (see _loop_unit).
_UNIT_MAX_CLIP_S = 4.0
_UNIT_MIN_SPEECH_S = 0.3


class SttError(Exception):
    """The model could not be loaded or used; the message is for the user."""


class LanguageError(SttError):
    """A language the model cannot hear (anything but English on an ``.en`` model)."""


class TranscriptionAborted(Exception):
    """:meth:`SpeechToText.transcribe` stopped because its ``abort`` callback said so."""


@dataclass(frozen=True)
class Word:
    """One word of a segment (``word_timestamps``): times in seconds, whisper's probability."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised speech; times in seconds from the start of the audio.

    ``language`` is the language whisper heard in it (set when it was detected, not forced),
    ``words`` its words with times (only with ``word_timestamps``), ``speaker`` who said it
    (``voiced transcribe --speakers channels``).
    """

    start: float
    end: float
    text: str
    avg_logprob: float = float("nan")
    language: str | None = None
    words: tuple[Word, ...] = ()
    speaker: str | None = None


@dataclass(frozen=True)
class Transcription:
    """``language``: the one forced, else the one heard in most of the speech.
    ``task``: "transcribe", or "translate" (English text of speech in another language)."""

    segments: tuple[Segment, ...]
    duration: float
    language: str
    model: str
    speech_seconds: float = 0.0
    task: str = "transcribe"

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments).strip()


@dataclass(frozen=True)
class SpeechMap:
    """Which 30 ms frames of a clip hold speech, and how loud each frame is (dBFS).

    ``gate`` holds the speech gate's window probabilities where it judged the clip, as
    ``(first sample, probabilities)`` pieces (512-sample windows); empty when no gate ran.
    """

    voiced: np.ndarray = field(repr=False)
    levels: np.ndarray = field(repr=False)
    samples: int = 0
    gate: tuple[tuple[int, np.ndarray], ...] = field(default=(), repr=False)

    def speech_prob_between(self, start: float, end: float) -> float | None:
        """The gate's speech probability over ``start``-``end`` s; None where it never ran.

        The windows of every gate piece whose middle falls in the span, in order, summarised
        as an utterance is (see :func:`voiced.audio.speech_gate.summarise`). A span that
        reaches past where a piece's gate stopped, sure of speech, is speech (at least
        ``SURE``; see :attr:`_sure`). Otherwise a span with no scored window is unknown (None):
        outside a file's speech regions, which the speech map already rules out.
        """
        if not self.gate:
            return None
        from voiced.audio.speech_gate import SURE, summarise

        lo, hi = start * SAMPLE_RATE, end * SAMPLE_RATE
        inside = []
        for first, probs in self.gate:
            middles = first + _GATE_WINDOW / 2 + _GATE_WINDOW * np.arange(len(probs))
            inside.append(np.asarray(probs)[(middles >= lo) & (middles <= hi)])
        vouched = any(
            lo < unscored_end and hi > scored_end for scored_end, unscored_end in self._sure
        )
        found = np.concatenate(inside) if inside else np.zeros(0)
        prob = summarise(found) if found.size else None
        return max(prob or 0.0, SURE) if vouched else prob

    @functools.cached_property
    def _sure(self) -> list[tuple[int, int]]:
        """Where each gate piece stopped scoring, sure of speech, and where the rest of its
        utterance (its run of speech frames, up to the next piece) ends; worked out once.

        A segment late in such an utterance is speech: judged by the windows inside its span
        alone, it was judged by the next utterance's first, cold windows, and real speech was
        dropped."""
        from voiced.audio.speech_gate import SURE, summarise

        spans = []
        starts = [first for first, _ in self.gate[1:]] + [self.samples]
        for (first, probs), next_first in zip(self.gate, starts, strict=True):
            scored_end = first + len(probs) * _GATE_WINDOW
            unscored_end = min(self._voiced_run_end(first), next_first)
            if len(probs) and scored_end < unscored_end and summarise(np.asarray(probs)) >= SURE:
                spans.append((scored_end, unscored_end))
        return spans

    def _voiced_run_end(self, sample: int) -> int:
        """The sample where the run of speech frames holding ``sample`` ends."""
        frame = sample // _FRAME
        while frame < self.voiced.size and self.voiced[frame]:
            frame += 1
        return frame * _FRAME

    @property
    def speech_seconds(self) -> float:
        return float(self.voiced.sum()) * _FRAME_S

    def speech_between(self, start: float, end: float) -> float:
        first = max(0, int(start / _FRAME_S))
        last = max(first, math.ceil(end / _FRAME_S))
        return float(self.voiced[first:last].sum()) * _FRAME_S

    def chunks(self, max_s: float, *, pack: bool = True) -> list[tuple[int, int]]:
        """Sample ranges of at most ``max_s`` that hold all the speech, cut in silences.

        Speech runs (with _CHUNK_PAD_S of audio around them) are packed together while they
        fit (``pack=False``: each run is a chunk of its own); long silence between chunks is
        never decoded, and speech longer than ``max_s`` is cut at its quietest frame.
        """
        limit = max(1, int(max_s / _FRAME_S))
        pad = int(_CHUNK_PAD_S / _FRAME_S)
        n = self.voiced.size
        # Runs of frames within ``pad`` of a speech frame.
        counts = np.concatenate([[0], np.cumsum(self.voiced, dtype=np.int64)])
        index = np.arange(n)
        near = counts[np.minimum(n, index + pad + 1)] > counts[np.maximum(0, index - pad)]
        edges = np.flatnonzero(np.diff(np.concatenate([[False], near, [False]]).astype(np.int8)))
        regions = [[int(lo), int(hi)] for lo, hi in zip(edges[::2], edges[1::2], strict=True)]
        chunks: list[list[int]] = []
        for lo, hi in regions:
            if pack and chunks and hi - chunks[-1][0] <= limit:
                chunks[-1][1] = hi
                continue
            while hi - lo > limit:
                cut = self._cut(lo, lo + limit)
                chunks.append([lo, cut])
                lo = cut
            chunks.append([lo, hi])
        frame = _FRAME
        ranges = [(lo * frame, hi * frame) for lo, hi in chunks]
        if ranges and chunks[-1][1] >= n:  # the partial frame at the very end
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], self.samples))
        return ranges

    def _cut(self, lo: int, hi: int) -> int:
        """Where to end a chunk of speech that starts at frame ``lo`` and may reach ``hi``.

        In the middle of the last pause in its second half: a stretch of _PAUSE_S whose
        loudest frame is within _PAUSE_DB of the quietest such stretch there, which is at
        least _PAUSE_BELOW_DB under the median level (else there is no pause: at the
        quietest frame of the last third). The last pause keeps chunks near their limit, so
        a file is encoded in fewer windows: on the 147 s benchmark file (sentences 0.9 s
        apart) chunks averaged 10.5 s cut at the quietest frame, 11.3 s at the last pause.
        """
        start = lo + (hi - lo) // 2
        levels = self.levels[start:hi]
        run = round(_PAUSE_S / _FRAME_S)
        if levels.size > run:
            loudest = np.lib.stride_tricks.sliding_window_view(levels, run).max(axis=1)
            floor = float(loudest.min())
            if floor <= float(np.median(levels)) - _PAUSE_BELOW_DB:
                quiet = loudest <= floor + _PAUSE_DB
                last = int(np.flatnonzero(quiet)[-1])
                first = last
                while first > 0 and quiet[first - 1]:
                    first -= 1
                return start + (first + last + run) // 2
        third = lo + (hi - lo) * 2 // 3
        return third + int(np.argmin(self.levels[third:hi]))


def speech_map(audio: np.ndarray, energy_floor_dbfs: float, aggressiveness: int = 3) -> SpeechMap:
    """Frames that webrtcvad calls speech and that are louder than the energy floor."""
    import webrtcvad

    n_frames = audio.size // _FRAME
    if n_frames == 0:
        return SpeechMap(np.zeros(0, dtype=bool), np.zeros(0), audio.size)
    frames = audio[: n_frames * _FRAME].reshape(n_frames, _FRAME)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    levels = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = levels > energy_floor_dbfs
    pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
    vad = webrtcvad.Vad(aggressiveness)
    voiced = np.fromiter(
        (
            bool(is_loud) and vad.is_speech(row.tobytes(), SAMPLE_RATE)
            for row, is_loud in zip(pcm, loud, strict=True)
        ),
        dtype=bool,
        count=n_frames,
    )
    return SpeechMap(voiced, levels, audio.size)


def everything_map(audio: np.ndarray) -> SpeechMap:
    """A speech map that calls every frame speech: whisper hears the whole clip."""
    n_frames = audio.size // _FRAME
    frames = audio[: n_frames * _FRAME].reshape(n_frames, _FRAME)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    levels = 20 * np.log10(np.maximum(rms, 1e-10))
    return SpeechMap(np.ones(n_frames, dtype=bool), levels, audio.size)


def find_speech(
    audio: np.ndarray,
    vad: VadSettings,
    energy_floor_dbfs: float | None = None,
    on_partial: Callable[[SpeechMap, int], None] | None = None,
) -> SpeechMap:
    """Where a clip holds speech, found as the microphone finds it.

    The clip goes through a :class:`~voiced.audio.segmenter.Segmenter` with a speech gate
    (unless ``vad.speech_threshold`` is 0): the frames of each utterance it keeps, pre- and
    post-roll included, are speech on the map, and the gate's window probabilities come
    along. ``energy_floor_dbfs`` (``stt.energy_floor_dbfs``) replaces the microphone's
    ``vad.energy_floor_dbfs``: files are often recorded quieter than a microphone is set;
    the energy margin and pre-roll are those of ``FILE_NOISE_MARGIN_DB``/``FILE_PRE_ROLL_MS``
    where they are looser.

    ``on_partial(map, settled)`` is called whenever an utterance has been added to the map,
    with the map so far and the sample before which it can no longer change (chunks that
    end before it can be decoded while the rest of the clip is searched).
    """
    from voiced.audio.segmenter import (
        Segmenter,
        UtteranceCancelled,
        UtteranceEnded,
        UtteranceStarted,
        speech_gate,
    )

    update: dict[str, float] = {
        "pre_roll_ms": max(vad.pre_roll_ms, FILE_PRE_ROLL_MS),
        "noise_margin_db": min(vad.noise_margin_db, FILE_NOISE_MARGIN_DB),
    }
    if energy_floor_dbfs is not None:
        update["energy_floor_dbfs"] = energy_floor_dbfs
    vad = vad.model_copy(update=update)
    base = everything_map(audio)
    voiced = np.zeros_like(base.voiced)
    pieces: list[tuple[int, np.ndarray]] = []
    # An utterance reaches back this far before the audio fed when it starts (pre-roll, the
    # gate's reach-back and the onset frames), with room to spare.
    reach = round((vad.pre_roll_ms + 2000) / 1000 * SAMPLE_RATE)
    open_start: int | None = None  # first sample of the utterance in flight
    gate = speech_gate(vad)
    try:
        segmenter = Segmenter(vad, SAMPLE_RATE, gate=gate)
        block = SAMPLE_RATE  # one second at a time keeps the events' audio copies small
        for offset in range(0, audio.size + block, block):
            if offset < audio.size:
                events = segmenter.feed(audio[offset : offset + block])
            else:
                events = segmenter.flush()
            added = False
            for event in events:
                if isinstance(event, UtteranceStarted):
                    open_start = round(event.audio_start_s * SAMPLE_RATE)
                elif isinstance(event, UtteranceCancelled):
                    open_start = None
                elif isinstance(event, UtteranceEnded):
                    open_start = None
                    first = round(event.audio_start_s * SAMPLE_RATE)
                    last = round(event.audio_end_s * SAMPLE_RATE)
                    voiced[first // _FRAME : math.ceil(last / _FRAME)] = True
                    if event.window_probs is not None:
                        pieces.append((first, event.window_probs))
                    added = True
            if on_partial is not None and added and offset < audio.size:
                settled = offset + block - reach
                if segmenter.in_utterance:
                    settled = min(settled, open_start if open_start is not None else 0) - reach
                partial = SpeechMap(voiced.copy(), base.levels, audio.size, tuple(pieces))
                on_partial(partial, max(0, settled))
    finally:
        if gate is not None:
            gate.close()
    return SpeechMap(voiced, base.levels, audio.size, tuple(pieces))


def _max_tokens(duration: float) -> int:
    return int(duration * 2 * _MAX_WORDS_PER_S) + 16


# whisper's log-mel spectrogram: 25 ms windows every 10 ms, 201 FFT bins.
_N_FFT = 400
_HOP = 160
_HANN = (0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(_N_FFT) / _N_FFT))).astype(np.float32)


def read_mel_filters(model_path: Path) -> np.ndarray:
    """The mel filter bank a ggml whisper file carries: (n_mel, 201) float32."""
    with model_path.open("rb") as f:
        head = f.read(56)  # magic, 11 hyper-parameters, n_mel, n_fft
        n_mel, n_fft = np.frombuffer(head[48:56], dtype="<i4")
        data = np.frombuffer(f.read(4 * int(n_mel) * int(n_fft)), dtype="<f4")
    if n_fft != _N_FFT // 2 + 1 or data.size != n_mel * n_fft:
        raise SttError(f"{model_path}: unexpected mel filters ({n_mel} x {n_fft})")
    return data.reshape(int(n_mel), int(n_fft))


def _filter_bands(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each mel filter's nonzero FFT bins and their weights, padded to the widest (14 bins).

    Applied by indexing rather than as a matrix product: numpy hands a product of this size
    to OpenBLAS, whose threads spin on both cores while the two whisper contexts decode
    (16 ms of CPU a chunk instead of 6 ms alone, far more under load).
    """
    width = max(1, int((filters != 0).sum(axis=1).max()))
    bins = np.zeros((filters.shape[0], width), dtype=np.intp)
    weights = np.zeros((filters.shape[0], width), dtype=np.float32)
    for band, row in enumerate(filters):
        nonzero = np.flatnonzero(row)
        bins[band, : nonzero.size] = nonzero
        weights[band, : nonzero.size] = row[nonzero]
    return bins, weights


def log_mel(audio: np.ndarray, filters: np.ndarray, frames: int) -> np.ndarray:
    """whisper.cpp's log-mel spectrogram of ``audio``: its first ``frames`` frames, (n_mel, frames).

    As whisper_pcm_to_mel computes it (200 samples reflected at the start, zeros after the
    end, log10 clamped to 8 below the peak, scaled by (x + 4) / 4), without the 30 s of
    zeros it appends and transforms on every call; ``frames`` must reach past the audio.
    """
    n = audio.size
    reflected = min(_N_FFT // 2, max(0, n - 1))
    # Frames past these hold only zeros: log10(1e-10), as whisper.cpp fills them.
    sounding = min(frames, (n + _N_FFT // 2) // _HOP + 1)
    padded = np.zeros((sounding - 1) * _HOP + _N_FFT + _N_FFT // 2 + n, dtype=np.float32)
    padded[_N_FFT // 2 - reflected : _N_FFT // 2] = audio[1 : 1 + reflected][::-1]
    padded[_N_FFT // 2 : _N_FFT // 2 + n] = audio
    windows = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP][:sounding]
    spectrum = np.fft.rfft(windows * _HANN, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    bins, weights = _filter_bands(filters)
    mel = np.full((frames, filters.shape[0]), -10.0, dtype=np.float32)
    mel[:sounding] = np.log10(np.maximum((power[:, bins] * weights).sum(axis=2), 1e-10))
    mel = (np.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0
    return np.ascontiguousarray(mel.T, dtype=np.float32)


def _repeats(words: list[str], n: int = 4) -> bool:
    """True when some run of ``n`` words occurs twice: a decoder repeating itself."""
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def _looks_wrong(raw: list, duration: float, speech_seconds: float) -> bool:
    """Signs that a shortened window failed: a loop, too many words, or nothing heard.

    Only non-speech tags ("[BLANK_AUDIO]", "♪♪♪") is whisper's verdict on noise, not a failure.
    """
    text = " ".join(segment.text for segment in raw)
    if not text.strip():
        return speech_seconds >= 0.5
    words = re.findall(r"[\w']+", clean_text(text).lower())
    if not words:
        return False
    return len(words) > _MAX_WORDS_PER_S * duration + 2 or _repeats(words)


@dataclass(frozen=True)
class _Unit:
    """A whisper segment's shape (t0, t1 in centiseconds) for a repaired loop."""

    t0: int
    t1: int
    text: str


def _loop_unit(raw: list, duration: float, speech_seconds: float) -> list | None:
    """The phrase a looping short-window decode repeats, when that can be trusted; else None.

    In a window cut to a short clip, tiny.en often says a short command right and then again
    until its token cap ("Yes? Yes? Yes? ..."; 23 % of one- to four-word Piper commands,
    none of 3-6 s sentences). Redoing them in the full window costs a 30 s encode (about a
    second on two cores), and gave the repeated phrase in 26 of 29 such clips (the other
    three mixed the loop with other text, and are redone). Only a clip this short that the
    speech map holds speech in qualifies: a loop over noise (a horn's "Beep beep beep") is
    left to the full window and the repetition filter, and a long clip's loop can hide
    speech that the phrase does not cover.
    """
    if duration > _UNIT_MAX_CLIP_S or speech_seconds < _UNIT_MIN_SPEECH_S:
        return None
    text = " ".join(segment.text.strip() for segment in raw).strip()
    tokens = text.split()
    said = [spoken_words(token) for token in tokens]
    for size in range(1, len(tokens) // 2 + 1):
        if not all(said[i] == said[i % size] for i in range(len(tokens))):
            continue
        if not any(said[:size]) or size > _MAX_WORDS_PER_S * speech_seconds + 1:
            return None
        phrase = " ".join(tokens[:size]).rstrip(",")
        return [_Unit(raw[0].t0, min(raw[0].t0 + round(duration * 100), raw[-1].t1), phrase)]
    return None


@dataclass(frozen=True)
class _Piece:
    """One segment as whisper.cpp gave it, before the filters."""

    start: float
    end: float
    text: str
    logprob: float
    language: str | None
    words: tuple[Word, ...]

    def shifted(self, offset: float) -> _Piece:
        words = tuple(
            Word(w.word, w.start + offset, w.end + offset, w.probability) for w in self.words
        )
        return _Piece(
            self.start + offset,
            self.end + offset,
            self.text,
            self.logprob,
            self.language,
            words,
        )


# A word starts where its sound rises to within this much of the segment's loudest frame.
_ONSET_DB = 25.0


def _place_words(
    words: tuple[Word, ...], start: float, end: float, speech: SpeechMap
) -> tuple[Word, ...]:
    """Words with start and end times, monotonic and inside the segment ``start``-``end``.

    whisper.cpp's DTW gives each token the time where it ends, so a word ends at its last
    token's time and starts where the word before it ended, moved on to where the sound
    rises (a pause before it, or the silence before a segment's first word, is not the word).
    """
    levels = speech.levels
    first_frame = max(0, int(start / _FRAME_S))
    last_frame = max(first_frame + 1, math.ceil(end / _FRAME_S))
    span = levels[first_frame:last_frame]
    loud = float(span.max()) - _ONSET_DB if span.size else -math.inf
    placed: list[Word] = []
    previous_end = start
    known = [w.end for w in words if not math.isnan(w.end)]
    for index, word in enumerate(words):
        word_end = word.end
        if math.isnan(word_end):  # only punctuation or symbols: take the next known time
            later = [w.end for w in words[index + 1 :] if not math.isnan(w.end)]
            word_end = later[0] if later else (known[-1] if known else end)
        word_end = min(max(word_end, previous_end), end)
        word_start = previous_end
        lo = int(word_start / _FRAME_S)
        hi = max(lo, int(word_end / _FRAME_S))
        rising = np.flatnonzero(levels[lo:hi] >= loud)
        if rising.size:
            word_start = max(word_start, min((lo + int(rising[0])) * _FRAME_S, word_end))
        placed.append(Word(word.word, word_start, word_end, word.probability))
        previous_end = word_end
    return tuple(placed)


# whisper.cpp's alignment-head presets (enum whisper_alignment_heads_preset), by the
# encoder's size: (layers, width) -> (English-only preset, multilingual preset).
_AHEADS = {
    (4, 384): (3, 4),  # tiny.en, tiny
    (6, 512): (5, 6),  # base.en, base
    (12, 768): (7, 8),  # small.en, small
    (24, 1024): (9, 10),  # medium.en, medium
}
_AHEADS_N_TOP_MOST = 1
_AHEADS_LARGE_V2, _AHEADS_LARGE_V3, _AHEADS_LARGE_V3_TURBO = 12, 13, 14


def _alignment_heads(info) -> int:
    """The preset of cross-attention heads that align text with audio for this model."""
    if (info.n_audio_layer, info.n_audio_state) == (32, 1280):
        if info.n_mels == 128:
            return _AHEADS_LARGE_V3_TURBO if info.n_text_layer == 4 else _AHEADS_LARGE_V3
        return _AHEADS_LARGE_V2
    presets = _AHEADS.get((info.n_audio_layer, info.n_audio_state))
    if presets is None:
        return _AHEADS_N_TOP_MOST
    return presets[1] if info.multilingual else presets[0]


def whisper_languages() -> list[str]:
    """The language codes a multilingual Whisper model knows ("en", "zh", "de", ...)."""
    import _pywhispercpp as pw

    return [pw.whisper_lang_str(i) for i in range(pw.whisper_lang_max_id() + 1)]


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def listener_threads(configured: int = 0) -> int:
    """whisper.cpp threads for a live listener: ``configured`` (``stt.threads``), or one core
    fewer than :func:`default_threads` (at least one).

    While a listener transcribes in a pause, its capture thread and the end-of-turn model
    need a core too. ggml's threads spin at their barriers, so sharing every core with them
    slows a decode far more than losing a thread does: on 2 busy cores a 3 s question took
    172 ms median but 2.3 s p90 on two threads, 209 ms and 227 ms on one.
    """
    if configured:
        return configured
    return max(1, min((os.cpu_count() or 1) - 1, 8))


class _ChunkPool:
    """A file's chunks decoded on two whisper contexts at once, half the threads each.

    Each chunk is decoded exactly as it would be alone (its own window, no context carried
    between chunks), so the text is the same; only the work is shared out. On two cores,
    two contexts of one thread each decoded a 147 s file in about half the time one
    context of two threads took: whisper.cpp's threads meet at a spinning barrier after
    every graph node, and the decoder's nodes (one token at a time) are so small that the
    waiting cost more than the second thread gave, several times more while other programs
    kept the cores busy (docs/benchmarks.md, "A long file").

    Chunks can be handed in while the file is still being searched for speech
    (:meth:`submit_settled`). The caller holds ``engine``'s lock; the pool holds the
    twin's until it is closed, and waits for its threads then.
    """

    def __init__(
        self,
        engine: SpeechToText,
        audio: np.ndarray,
        abort: Callable[[], bool] | None,
        language: str | None,
        limit: float,
        pack: bool,
    ) -> None:
        import queue

        self._engine = engine
        self._twin = engine._twin_engine()
        self._audio = audio
        self._abort = abort
        self._language = language
        self._limit = limit
        self._pack = pack
        self._handed: set[tuple[int, int]] = set()
        self._last_settled = 0
        self._jobs: queue.Queue[tuple[int, int, SpeechMap] | None] = queue.Queue()
        self._done: queue.Queue[tuple[tuple[int, int], list[_Piece] | BaseException]]
        self._done = queue.Queue()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> _ChunkPool:
        self._twin._lock.acquire()
        self._engine._call_threads = self._engine._side_by_side_threads()
        for context in (self._engine, self._twin):
            worker = threading.Thread(
                target=self._work, args=(context,), name="stt-chunks", daemon=True
            )
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join()
        self._engine._call_threads = self._engine.threads
        self._twin._lock.release()

    def _work(self, context: SpeechToText) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            first, last, speech = job
            try:
                pieces = context._chunk_pieces(
                    self._audio, first, last, speech, self._abort, self._language
                )
            except BaseException as exc:  # handed to the calling thread, raised there
                self._stop.set()
                self._done.put(((first, last), exc))
                return
            self._done.put(((first, last), pieces))

    def _submit(self, chunk: tuple[int, int], speech: SpeechMap) -> None:
        self._handed.add(chunk)
        self._jobs.put((*chunk, speech))

    def submit_settled(self, partial: SpeechMap, settled: int) -> None:
        """Hand in the chunks of ``partial`` that can no longer change (see find_speech).

        Every chunk but the last that ends well before ``settled``: a later utterance can
        only add speech after it (a chunk's padding reaches twice _CHUNK_PAD_S back).
        """
        if settled - self._last_settled < self._limit * SAMPLE_RATE / 2:
            return  # not worth chunking the map again yet
        self._last_settled = settled
        reach = 2 * round(_CHUNK_PAD_S / _FRAME_S) * _FRAME + _FRAME
        for chunk in partial.chunks(self._limit, pack=self._pack)[:-1]:
            if chunk[1] <= settled - reach and chunk not in self._handed:
                self._submit(chunk, partial)

    def results(
        self,
        chunks: list[tuple[int, int]],
        speech: SpeechMap,
        on_progress: Callable[[float], None] | None,
    ) -> list[list[_Piece]]:
        """The pieces of each of ``chunks`` (the file's own), decoding those not handed in yet.

        Progress is reported from the calling thread, for the chunks done in order.
        """
        for chunk in chunks:
            if chunk not in self._handed:
                self._submit(chunk, speech)
        stale = self._handed - set(chunks)
        if stale:  # the rule in submit_settled failed; the work is wasted, not wrong
            log.warning("%d chunks decoded early do not match the final speech map", len(stale))
        done: dict[tuple[int, int], list[_Piece]] = {}
        reported = 0
        while len(done) < len(self._handed):
            chunk, result = self._done.get()
            if isinstance(result, BaseException):
                raise result
            done[chunk] = result
            while reported < len(chunks) and chunks[reported] in done:
                reported += 1
                if on_progress:
                    on_progress(chunks[reported - 1][1] / SAMPLE_RATE)
        return [done[chunk] for chunk in chunks]


# Every loaded engine, for the wait at exit (see _let_decodes_finish).
_engines: weakref.WeakSet[SpeechToText] = weakref.WeakSet()
_exiting = threading.Event()
# How long the process waits at exit for a decode in flight on another thread: one whisper
# call, as the rest of a transcription stops before its next call.
EXIT_WAIT_S = 15.0


def _let_decodes_finish() -> None:
    """At exit, let whisper calls on other threads end before the models are freed.

    Python frees a model while the interpreter shuts down, even while a daemon thread is in
    whisper_full on it: such exits segfaulted (about 1 in 5 here), and a test run once ended
    in "terminate called without an active exception" with its main thread in whisper_free.
    Transcriptions stop before their next whisper call from here on, and each engine's lock,
    taken and kept, means none is in one.
    """
    _exiting.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    for engine in list(_engines):
        if not engine._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("exiting while %s is still transcribing", engine.model_name)


atexit.register(_let_decodes_finish)


class SpeechToText:
    """One whisper.cpp model, loaded once; :meth:`transcribe` is safe to call from any thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str | None = None,
        language: str = "en",
        threads: int = 0,
        beam_size: int = 1,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        energy_floor_dbfs: float = -55.0,
        max_segment_chars: int = 0,
        chunk_s: float = 12.8,
        window_margin: int = 128,
        flash_attention: bool = True,
        vad_filter: bool = True,
        vad: VadSettings | None = None,
        word_timestamps: bool = False,
        translate: bool = False,
        language_per_segment: bool = False,
        parallel_chunks: bool = False,
    ) -> None:
        """``word_timestamps``: each segment gets its words with times, aligned by dynamic
        time warping over the model's alignment heads (which turns flash attention off).
        ``translate``: English text for speech in any language (whisper's translate task;
        multilingual models). ``language_per_segment``: detect the language of each stretch
        of speech separately, for files that switch language (needs language "auto").
        ``parallel_chunks``: with two or more threads, a file's chunks are decoded side by
        side on two whisper contexts of half the threads each (see :meth:`_side_by_side`);
        the second context (a second copy of the model) is loaded when first needed."""
        from voiced.speech.models import inspect_ggml

        # pywhispercpp builds a model with a null context from a bad path and then segfaults.
        info = inspect_ggml(Path(model_path))
        self.model_path = Path(model_path)
        self.model_name = model_name or self.model_path.name
        self.multilingual = info.multilingual
        self.language = "en"
        self.language = self.resolve_language(language)
        if translate and not info.multilingual:
            raise LanguageError(
                f"model {self.model_name} is English-only and cannot translate; "
                "use a multilingual model (voiced models install base)"
            )
        if language_per_segment and self.language != "auto":
            raise LanguageError(
                "detecting the language per segment needs language 'auto' "
                f"(not {self.language!r}) and a multilingual model"
            )
        self.word_timestamps = word_timestamps
        self.translate = translate
        self.language_per_segment = language_per_segment
        self._aheads = _alignment_heads(info) if word_timestamps else None
        self.threads = threads or default_threads()
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.energy_floor_dbfs = energy_floor_dbfs
        self.max_segment_chars = max_segment_chars
        self.chunk_s = chunk_s
        self.window_margin = window_margin
        self.flash_attention = flash_attention
        self.vad_filter = vad_filter
        self.vad = vad or VadSettings()
        self._lock = threading.Lock()
        self._last_ctx: int | None = None  # the audio_ctx of the last whisper_full call
        self._call_threads = self.threads  # whisper_full's threads (fewer while side by side)
        self.parallel_chunks = parallel_chunks
        # What a second context for side-by-side chunks is made with (see _twin_engine).
        self._twin_args = dict(
            model_name=self.model_name,
            language=language,
            beam_size=beam_size,
            no_speech_threshold=no_speech_threshold,
            logprob_threshold=logprob_threshold,
            energy_floor_dbfs=energy_floor_dbfs,
            max_segment_chars=max_segment_chars,
            chunk_s=chunk_s,
            window_margin=window_margin,
            flash_attention=flash_attention,
            vad_filter=vad_filter,
            vad=vad,
            word_timestamps=word_timestamps,
            translate=translate,
            language_per_segment=language_per_segment,
        )
        self._twin: SpeechToText | None = None
        self._model = self._load()
        _engines.add(self)
        self._mel_filters = read_mel_filters(self.model_path)
        if word_timestamps:
            self.flash_attention = False  # whisper.cpp turns it off for DTW alignment

    @classmethod
    def from_settings(
        cls,
        settings: SttSettings,
        store: object | None = None,
        *,
        flash_attention: bool = True,
        vad: VadSettings | None = None,
        word_timestamps: bool = False,
        translate: bool = False,
        language_per_segment: bool = False,
        threads: int | None = None,
        parallel_chunks: bool = False,
    ) -> SpeechToText:
        """Resolve ``settings.model`` through the model store and load it.

        ``threads`` overrides ``settings.threads`` (listeners: :func:`listener_threads`).

        ``vad`` (the ``vad`` section) sets how speech is found in files and the speech
        gate's threshold; without it the defaults apply.

        Listeners pass ``flash_attention=False``: their utterances (2.6-7.6 s with pre- and
        post-roll) would mostly be rounded up to 512-frame windows, which measured slower than
        exact windows without flash attention; files, cut into 12.8 s chunks that fill
        768-frame windows, gain from it.
        """
        from voiced.speech.models import ModelStore

        store = store if isinstance(store, ModelStore) else ModelStore()
        path = store.resolve_whisper(settings.model)
        return cls(
            path,
            model_name=settings.model,
            language=settings.language,
            threads=settings.threads if threads is None else threads,
            beam_size=settings.beam_size,
            no_speech_threshold=settings.no_speech_threshold,
            logprob_threshold=settings.logprob_threshold,
            energy_floor_dbfs=settings.energy_floor_dbfs,
            max_segment_chars=settings.max_segment_chars,
            chunk_s=settings.chunk_s,
            window_margin=settings.window_margin,
            flash_attention=flash_attention,
            vad_filter=settings.vad_filter,
            vad=vad,
            word_timestamps=word_timestamps,
            translate=translate,
            language_per_segment=language_per_segment,
            parallel_chunks=parallel_chunks,
        )

    def _load(self):
        logging.getLogger("pywhispercpp").setLevel(logging.WARNING)
        from pywhispercpp.model import Model

        model = Model(
            str(self.model_path),
            redirect_whispercpp_logs_to=None,
            params_sampling_strategy=0 if self.beam_size == 1 else 1,
            n_threads=self.threads,
            print_progress=False,
            print_realtime=False,
            print_timestamps=False,
            # Flash attention makes the encoder 1.5-2x faster here. Its cross-attention reads
            # the context padded to a multiple of 256 without a mask, so _short_ctx rounds
            # windows up to such multiples (else results would depend on earlier calls).
            context_params=self._context_params(),
        )
        if not getattr(model, "_ctx", None):
            raise SttError(f"whisper.cpp could not load {self.model_path}")
        return model

    def _context_params(self) -> dict:
        if self._aheads is None:
            return {"flash_attn": self.flash_attention}
        import _pywhispercpp as pw

        return {
            "flash_attn": False,
            "dtw_token_timestamps": True,
            "dtw_aheads_preset": pw.whisper_alignment_heads_preset(self._aheads),
        }

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        on_progress: Callable[[float], None] | None = None,
        abort: Callable[[], bool] | None = None,
        gate_windows: list[tuple[int, np.ndarray]] | None = None,
        language: str | None = None,
    ) -> Transcription:
        """Transcribe mono float32 16 kHz audio.

        ``on_progress`` is called with the seconds of audio done so far. ``abort`` is polled
        while whisper works (between encoder and decoder steps); once it returns True the
        work stops and :class:`TranscriptionAborted` is raised.

        ``gate_windows`` is for audio a live segmenter already judged (an utterance): the
        speech gate's window probabilities as ``(first sample, probabilities)`` pieces
        (empty when it ran without a gate). Such audio is not searched for speech again;
        without it, the audio is searched as a file is (see :func:`find_speech`), or not at
        all with ``vad_filter`` off.

        ``language`` overrides the model's language for this call (a multilingual model
        only; an English-only model takes "en" or "auto" and hears English either way).
        """
        language = self.resolve_language(language)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = audio.size / SAMPLE_RATE
        limit, pack = self.chunk_s or _FULL_CHUNK_S, not self.language_per_segment
        raw: list[_Piece] = []
        heard: dict[str, float] = {}  # language -> seconds of segments heard in it

        def collect(pieces: list[_Piece]) -> None:
            for piece in pieces:
                raw.append(piece)
                if piece.language:
                    heard[piece.language] = heard.get(piece.language, 0.0) + max(
                        piece.end - piece.start, 0.01
                    )

        def known(language: str) -> bool:  # each chunk is decoded in the same language
            return language != "auto" or self.language_per_segment

        with contextlib.ExitStack() as stack:
            pool: _ChunkPool | None = None
            # A file whose language is known: its chunks are decoded on two contexts while
            # the rest of it is still searched for speech.
            early = (
                gate_windows is None
                and self.vad_filter
                and known(language)
                and self._side_by_side_threads() > 0
            )
            if early:
                stack.enter_context(self._lock)
                pool = stack.enter_context(_ChunkPool(self, audio, abort, language, limit, pack))
            if gate_windows is not None:
                speech = speech_map(audio, self.energy_floor_dbfs)
                speech = SpeechMap(
                    speech.voiced, speech.levels, speech.samples, tuple(gate_windows)
                )
            elif self.vad_filter:
                on_partial = pool.submit_settled if pool is not None else None
                speech = find_speech(audio, self.vad, self.energy_floor_dbfs, on_partial)
            else:
                speech = everything_map(audio)
            if speech.speech_seconds < _MIN_SPEECH_S:
                log.debug("no speech in %.1f s of audio; not decoding", duration)
                if on_progress:
                    on_progress(duration)
                return Transcription(
                    (),
                    duration,
                    "en" if language == "auto" else language,
                    self.model_name,
                    0.0,
                    task="translate" if self.translate else "transcribe",
                )

            chunks = speech.chunks(limit, pack=pack)
            if not early:
                stack.enter_context(self._lock)
            index = 0
            while index < len(chunks):
                side_by_side = len(chunks) - index > 1 and self._side_by_side_threads() > 0
                if pool is not None or (known(language) and side_by_side):
                    if pool is None:
                        pool = stack.enter_context(
                            _ChunkPool(self, audio, abort, language, limit, pack)
                        )
                    for pieces in pool.results(chunks[index:], speech, on_progress):
                        collect(pieces)
                    break
                first, last = chunks[index]
                collect(self._chunk_pieces(audio, first, last, speech, abort, language))
                if language == "auto" and heard and not self.language_per_segment:
                    # Like faster-whisper: the language found in the first speech holds for
                    # the file (a chunk of a few words would often be guessed wrong).
                    language = max(heard, key=heard.__getitem__)
                if on_progress:
                    on_progress(last / SAMPLE_RATE)
                index += 1
        if language == "auto":
            language = max(heard, key=heard.__getitem__) if heard else "en"
        segments = []
        for piece in raw:
            start, end = piece.start, min(piece.end, duration)
            text = clean_text(piece.text)
            if not text:
                continue
            near = speech.speech_between(start - _SEGMENT_SLACK_S, end + _SEGMENT_SLACK_S)
            if near < _MIN_SPEECH_S:
                log.debug("dropping %r at %.2f-%.2f s: no speech there", text, start, end)
                continue
            if is_repetition_loop(text):
                log.debug("dropping %r at %.2f-%.2f s: a repetition loop", text, start, end)
                continue
            prob = speech.speech_prob_between(start - _SEGMENT_SLACK_S, end + _SEGMENT_SLACK_S)
            if prob is not None and prob < self.vad.speech_threshold:
                log.debug("dropping %r at %.2f-%.2f s: speech_prob %.2f", text, start, end, prob)
                continue
            end = max(start, end)
            words = _place_words(piece.words, start, end, speech) if self.word_timestamps else ()
            segments.append(
                Segment(start, end, text, piece.logprob, language=piece.language, words=words)
            )
        if on_progress:
            on_progress(duration)
        return Transcription(
            tuple(segments),
            duration,
            language,
            self.model_name,
            speech.speech_seconds,
            task="translate" if self.translate else "transcribe",
        )

    def _chunk_pieces(
        self,
        audio: np.ndarray,
        first: int,
        last: int,
        speech: SpeechMap,
        abort: Callable[[], bool] | None,
        language: str | None,
    ) -> list[_Piece]:
        """The pieces of ``audio[first:last]``, on the file's time line."""
        offset = first / SAMPLE_RATE
        chunk = audio[first:last]
        pieces = self._decode_chunk(chunk, speech, offset, abort, language)
        if self.language_per_segment and len(pieces) > 1:
            pieces = self._relabel(chunk, pieces, speech, offset, abort)
        return [piece.shifted(offset) for piece in pieces]

    def _side_by_side_threads(self) -> int:
        """Threads for each of two contexts decoding a file's chunks side by side; 0: don't."""
        if not self.parallel_chunks or self.threads < 2:
            return 0
        return self.threads // 2

    def _twin_engine(self) -> SpeechToText:
        """The second context for side-by-side chunks (loaded once, on first use)."""
        if self._twin is None:
            self._twin = SpeechToText(self.model_path, threads=self.threads // 2, **self._twin_args)
        return self._twin

    def _decode_chunk(
        self,
        chunk: np.ndarray,
        speech: SpeechMap,
        offset: float,
        abort: Callable[[], bool] | None = None,
        language: str | None = None,
    ) -> list[_Piece]:
        """Decode one chunk in a window cut to its length; redo it in the full window if wrong.

        Times are relative to the chunk. With language "auto", each piece carries the
        language whisper detected for the chunk.
        """
        duration = chunk.size / SAMPLE_RATE
        heard = speech.speech_between(offset, offset + duration)
        if (language or self.language) == "auto":
            self._prime(self._short_ctx(duration) if self.chunk_s > 0 else 0)
        raw = None
        if self.chunk_s > 0:
            raw = self._decode(
                chunk, audio_ctx=self._short_ctx(duration), abort=abort, language=language
            )
            if _looks_wrong(raw, duration, heard):
                unit = None if self.word_timestamps else _loop_unit(raw, duration, heard)
                if unit is not None:
                    log.debug("short-window loop %r taken for %r", raw, unit[0].text)
                else:
                    log.debug("short-window result %r looks wrong; using the full window", raw)
                raw = unit
        if raw is None:
            raw = self._decode(chunk, audio_ctx=0, abort=abort, language=language)
        logprobs = self._segment_logprobs(len(raw))
        auto = (language or self.language) == "auto"
        detected = self._detected_language(language) if auto else None
        pieces = []
        for index, (r, lp) in enumerate(zip(raw, logprobs, strict=True)):
            words = self._segment_words(index, duration) if self.word_timestamps else ()
            pieces.append(
                _Piece(r.t0 / 100, min(r.t1 / 100, duration), r.text, lp, detected, words)
            )
        return pieces

    def _relabel(
        self,
        chunk: np.ndarray,
        pieces: list[_Piece],
        speech: SpeechMap,
        offset: float,
        abort: Callable[[], bool] | None,
    ) -> list[_Piece]:
        """Detect the language of each segment of a chunk; decode again those that differ.

        whisper detects one language per call, from the start of the chunk; a speaker who
        switches language inside it keeps the first language's label (and often its words).
        """
        result: list[_Piece] = []
        found_in: list[tuple[str, float] | None] = []
        # In the window of the chunk's decode (left by it): a short one, so each costs little.
        for piece in pieces:
            first = max(0, int((piece.start - 0.1) * SAMPLE_RATE))
            last = min(chunk.size, int((piece.end + 0.1) * SAMPLE_RATE))
            if last - first < SAMPLE_RATE // 2:
                found_in.append(None)
                continue
            found, probability = self._model.auto_detect_language(
                chunk[first:last], 0, self._call_threads
            )[0]
            found_in.append((found, float(probability)))
        for piece, verdict in zip(pieces, found_in, strict=True):
            if verdict is None or verdict[0] == piece.language:
                result.append(piece)
                continue
            found, probability = verdict
            first = max(0, int((piece.start - 0.1) * SAMPLE_RATE))
            last = min(chunk.size, int((piece.end + 0.1) * SAMPLE_RATE))
            part = chunk[first:last]
            log.debug(
                "segment %.2f-%.2f s is %s (p=%.2f), not %s; decoding it again",
                piece.start + offset,
                piece.end + offset,
                found,
                probability,
                piece.language,
            )
            start = first / SAMPLE_RATE
            for again in self._decode_chunk(part, speech, offset + start, abort, found):
                shifted = again.shifted(start)
                result.append(dataclasses.replace(shifted, language=found))
        return result

    def _segment_words(self, index: int, duration: float) -> tuple[Word, ...]:
        """Segment ``index``'s words from its tokens: a token that starts with a space starts
        a word. A word ends at the DTW time of its last token with a letter or digit (which
        whisper.cpp puts where the token ends); its start is refined by _place_words."""
        import _pywhispercpp as pw

        ctx = self._model._ctx
        eot = pw.whisper_token_eot(ctx)
        words: list[list] = []  # bytes, end, probabilities
        for j in range(pw.whisper_full_n_tokens(ctx, index)):
            data = pw.whisper_full_get_token_data(ctx, index, j)
            if data.id >= eot:
                continue
            # Bytes, not text: a token may hold half of a character ("ñ" is two tokens).
            piece = bytes(pw.whisper_token_to_bytes(ctx, data.id))
            end = min(max(data.t_dtw, data.t0) / 100, duration)
            wordy = any(chr(b).isalnum() or b >= 0x80 for b in piece)
            if not words or piece.startswith(b" "):
                words.append([piece, end if wordy else None, [data.p]])
                continue
            words[-1][0] += piece
            words[-1][2].append(data.p)
            if wordy:
                words[-1][1] = end
        result = []
        for raw, end, probs in words:
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                end = float("nan") if end is None else end
                result.append(Word(text, float("nan"), end, float(np.mean(probs))))
        return tuple(result)

    def _prime(self, audio_ctx: int) -> None:
        """Make whisper.cpp's next language detection look at a window of ``audio_ctx``.

        whisper_full detects the language before it applies its own ``audio_ctx``, in the
        window the previous call left behind (the full 30 s one on the first call): the same
        chunk would be judged differently depending on what was decoded before it. A decode
        of a little silence in the chunk's own window first makes the verdict depend on the
        chunk alone. The full window was measured a little surer on an ambiguous clip
        (Spanish p 0.54-0.69 against 0.47-0.60, Catalan second) but cost two 30 s encodes
        per detection (5-6 s each for base on the loaded 2-core VM); the chunk's window
        costs a fraction of that.
        """
        if self._last_ctx != audio_ctx:
            silence = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
            self._decode(silence, audio_ctx=audio_ctx, language="en")

    def warm_up(self) -> None:
        """Decode one second of silence in the full window: every buffer is touched at start.

        whisper.cpp reserves its compute buffers for the full window when it loads, but
        only the pages a decode touches become resident, and without flash attention the
        encoder's attention grows with the square of the window: a short window touches a
        few MiB of it, the full one (the fallback of :meth:`_decode_chunk`) about 95 MiB more
        (tiny.en). Touched here, that memory is part of the baseline rather than a step in a
        long-running daemon's memory at its first fallback, and no utterance pays for setting
        it up. With ``parallel_chunks`` the second context is loaded here too.
        """
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        with self._lock:
            self._decode(silence, audio_ctx=0)  # 0: the full window, as the fallback decodes
            if self._side_by_side_threads():
                self._twin_engine()

    def _short_ctx(self, duration: float) -> int:
        """Encoder frames for a short clip: its length (50 per second) plus a margin.

        whisper.cpp encodes a full 30 s window for every clip; a 3 s utterance needs a
        tenth of it. Too small a margin makes the decoder loop (see _looks_wrong).

        Rounded up to a multiple of 256, the padding whisper.cpp's flash attention reads
        unmasked: every frame it reads was then encoded by this call. The full window (1500)
        reads 36 padding frames that no call ever writes.
        """
        frames = math.ceil(duration * 50) + self.window_margin
        if self.flash_attention:
            frames = -(-frames // _CTX_STEP) * _CTX_STEP
        return min(_FULL_CTX, frames)

    def _decode(
        self,
        audio: np.ndarray,
        *,
        audio_ctx: int,
        abort: Callable[[], bool] | None = None,
        language: str | None = None,
    ) -> list:
        """One whisper_full call on a chunk of at most 30 s.

        Tokens are capped by duration and whisper's temperature fallback (up to five more
        decodes of five candidates each, which made 6 s of noise cost 20 s) is off; a loop is
        caught by _looks_wrong instead.
        """
        if _exiting.is_set():
            raise TranscriptionAborted("the process is exiting")
        duration = audio.size / SAMPLE_RATE
        self._last_ctx = audio_ctx
        media, duration_ms = audio, 0
        if audio_ctx and not (self.max_segment_chars > 0 or self.word_timestamps):
            media, duration_ms = self._set_mel(audio, audio_ctx)
        segments = self._model.transcribe(
            media,
            duration_ms=duration_ms,
            abort_callback=abort,
            language=language or self.language,
            translate=self.translate,
            n_threads=self._call_threads,
            audio_ctx=audio_ctx,
            max_tokens=_max_tokens(duration),
            temperature_inc=0.0,
            # Earlier text as a prompt dropped whole sentences at window boundaries.
            n_max_text_ctx=0,
            no_context=True,
            no_timestamps=False,
            single_segment=False,
            suppress_blank=True,
            suppress_nst=True,
            # Like whisper-cli -ml: split segments at word boundaries past this length.
            max_len=self.max_segment_chars,
            split_on_word=True,
            token_timestamps=self.max_segment_chars > 0 or self.word_timestamps,
            no_speech_thold=self.no_speech_threshold,
            logprob_thold=self.logprob_threshold,
            temperature=0.0,
            beam_search={
                "beam_size": self.beam_size if self.beam_size > 1 else -1,
                "patience": -1.0,
            },
        )
        if abort is not None and abort():
            raise TranscriptionAborted("transcription aborted")
        return segments

    def _set_mel(self, audio: np.ndarray, audio_ctx: int) -> tuple[np.ndarray, int]:
        """Hand whisper.cpp the chunk's log-mel spectrogram, computed here for its window only.

        whisper_full otherwise computes it for the audio plus 30 s of zeros, with a slow FFT,
        on every call: 4-6 % of a long file's time went there. The spectrogram covers the
        audio and two windows of padding (a decode that moves on inside the chunk reads one
        window past where it is); ``duration_ms`` stops whisper.cpp at the audio's last
        frame, where its own spectrogram would. Returns what to call whisper_full with: no
        samples (it keeps this spectrogram) and that duration. Not with token timestamps,
        which whisper.cpp weighs with the energy of the samples.
        """
        import _pywhispercpp as pw

        frames = audio.size // _HOP + 3 + 2 * audio_ctx
        mel = log_mel(audio, self._mel_filters, frames)
        if pw.whisper_set_mel(self._model._ctx, mel, frames, mel.shape[0]) != 0:
            raise SttError("whisper.cpp refused the log-mel spectrogram")
        audio_frames = 1 + math.trunc((audio.size + _N_FFT // 2 - _N_FFT) / _HOP)
        return np.zeros(0, dtype=np.float32), max(0, audio_frames) * 10

    def _segment_logprobs(self, n_segments: int) -> list[float]:
        import _pywhispercpp as pw

        ctx = self._model._ctx
        eot = pw.whisper_token_eot(ctx)
        result = []
        for i in range(n_segments):
            logs = [
                math.log(max(pw.whisper_full_get_token_p(ctx, i, j), 1e-10))
                for j in range(pw.whisper_full_n_tokens(ctx, i))
                if pw.whisper_full_get_token_id(ctx, i, j) < eot
            ]
            result.append(sum(logs) / len(logs) if logs else float("nan"))
        return result

    def resolve_language(self, language: str | None) -> str:
        """The language to decode in: ``language`` if given and usable, else the model's."""
        if not language:
            return self.language
        language = language.strip().lower()
        if not self.multilingual:
            if language not in ("en", "auto"):
                raise LanguageError(
                    f"model {self.model_name} is English-only; it cannot hear {language!r}"
                )
            return "en"
        if language != "auto" and language not in whisper_languages():
            raise LanguageError(f"whisper knows no language {language!r}")
        return language

    def _detected_language(self, language: str | None = None) -> str:
        language = language or self.language
        if language != "auto":
            return language
        import _pywhispercpp as pw

        return pw.whisper_lang_str(pw.whisper_full_lang_id(self._model._ctx))
