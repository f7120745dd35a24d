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

import logging
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiced.config import SttSettings, VadSettings
from voiced.decode import SAMPLE_RATE
from voiced.speech.text_filters import clean_text, is_repetition_loop

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


class SttError(Exception):
    """The model could not be loaded or used; the message is for the user."""


class TranscriptionAborted(Exception):
    """:meth:`SpeechToText.transcribe` stopped because its ``abort`` callback said so."""


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised speech; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    avg_logprob: float = float("nan")


@dataclass(frozen=True)
class Transcription:
    segments: tuple[Segment, ...]
    duration: float
    language: str
    model: str
    speech_seconds: float = 0.0

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
        as an utterance is (see :func:`voiced.audio.speech_gate.summarise`). A span with no
        scored window is unknown (None): outside a file's speech regions (which the speech
        map already rules out), or past the point where the gate stopped, sure of speech.
        """
        if not self.gate:
            return None
        from voiced.audio.speech_gate import summarise

        lo, hi = start * SAMPLE_RATE, end * SAMPLE_RATE
        inside = []
        for first, probs in self.gate:
            middles = first + _GATE_WINDOW / 2 + _GATE_WINDOW * np.arange(len(probs))
            inside.append(np.asarray(probs)[(middles >= lo) & (middles <= hi)])
        found = np.concatenate(inside) if inside else np.zeros(0)
        return summarise(found) if found.size else None

    @property
    def speech_seconds(self) -> float:
        return float(self.voiced.sum()) * _FRAME_S

    def speech_between(self, start: float, end: float) -> float:
        first = max(0, int(start / _FRAME_S))
        last = max(first, math.ceil(end / _FRAME_S))
        return float(self.voiced[first:last].sum()) * _FRAME_S

    def chunks(self, max_s: float) -> list[tuple[int, int]]:
        """Sample ranges of at most ``max_s`` that hold all the speech, cut in silences.

        Speech runs (with _CHUNK_PAD_S of audio around them) are packed together while they
        fit; long silence between chunks is never decoded, and speech longer than ``max_s``
        is cut at its quietest frame.
        """
        limit = max(1, int(max_s / _FRAME_S))
        pad = int(_CHUNK_PAD_S / _FRAME_S)
        n = self.voiced.size
        regions: list[list[int]] = []
        for index in np.flatnonzero(self.voiced):
            lo, hi = max(0, index - pad), min(n, index + 1 + pad)
            if regions and lo <= regions[-1][1]:
                regions[-1][1] = hi
            else:
                regions.append([lo, hi])
        chunks: list[list[int]] = []
        for lo, hi in regions:
            if chunks and hi - chunks[-1][0] <= limit:
                chunks[-1][1] = hi
                continue
            while hi - lo > limit:
                cut = self._quietest(lo + limit * 2 // 3, lo + limit)
                chunks.append([lo, cut])
                lo = cut
            chunks.append([lo, hi])
        frame = _FRAME
        ranges = [(lo * frame, hi * frame) for lo, hi in chunks]
        if ranges and chunks[-1][1] >= n:  # the partial frame at the very end
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], self.samples))
        return ranges

    def _quietest(self, lo: int, hi: int) -> int:
        return lo + int(np.argmin(self.levels[lo:hi]))


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
    audio: np.ndarray, vad: VadSettings, energy_floor_dbfs: float | None = None
) -> SpeechMap:
    """Where a clip holds speech, found as the microphone finds it.

    The clip goes through a :class:`~voiced.audio.segmenter.Segmenter` with a speech gate
    (unless ``vad.speech_threshold`` is 0): the frames of each utterance it keeps, pre- and
    post-roll included, are speech on the map, and the gate's window probabilities come
    along. ``energy_floor_dbfs`` (``stt.energy_floor_dbfs``) replaces the microphone's
    ``vad.energy_floor_dbfs``: files are often recorded quieter than a microphone is set;
    the energy margin and pre-roll are those of ``FILE_NOISE_MARGIN_DB``/``FILE_PRE_ROLL_MS``
    where they are looser.
    """
    from voiced.audio.segmenter import Segmenter, UtteranceEnded, speech_gate

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
    gate = speech_gate(vad)
    try:
        segmenter = Segmenter(vad, SAMPLE_RATE, gate=gate)
        block = SAMPLE_RATE  # one second at a time keeps the events' audio copies small
        events = []
        for offset in range(0, audio.size, block):
            events += segmenter.feed(audio[offset : offset + block])
        events += segmenter.flush()
    finally:
        if gate is not None:
            gate.close()
    for event in events:
        if not isinstance(event, UtteranceEnded):
            continue
        first = round(event.audio_start_s * SAMPLE_RATE)
        last = round(event.audio_end_s * SAMPLE_RATE)
        voiced[first // _FRAME : math.ceil(last / _FRAME)] = True
        if event.window_probs is not None:
            pieces.append((first, event.window_probs))
    return SpeechMap(voiced, base.levels, audio.size, tuple(pieces))


def _max_tokens(duration: float) -> int:
    return int(duration * 2 * _MAX_WORDS_PER_S) + 16


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


def whisper_languages() -> list[str]:
    """The language codes a multilingual Whisper model knows ("en", "zh", "de", ...)."""
    import _pywhispercpp as pw

    return [pw.whisper_lang_str(i) for i in range(pw.whisper_lang_max_id() + 1)]


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


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
    ) -> None:
        from voiced.speech.models import inspect_ggml

        # pywhispercpp builds a model with a null context from a bad path and then segfaults.
        info = inspect_ggml(Path(model_path))
        language = language.strip().lower()  # whisper's codes are lower case: "EN" is "en"
        if not info.multilingual and language not in ("en", "auto"):
            raise SttError(
                f"model {model_name or model_path} is English-only; "
                f"use a multilingual model for language {language!r}"
            )
        self.model_path = Path(model_path)
        self.model_name = model_name or self.model_path.name
        self.multilingual = info.multilingual
        self.language = "en" if not info.multilingual else language
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
        self._model = self._load()

    @classmethod
    def from_settings(
        cls,
        settings: SttSettings,
        store: object | None = None,
        *,
        flash_attention: bool = True,
        vad: VadSettings | None = None,
    ) -> SpeechToText:
        """Resolve ``settings.model`` through the model store and load it.

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
            threads=settings.threads,
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
            context_params={"flash_attn": self.flash_attention},
        )
        if not getattr(model, "_ctx", None):
            raise SttError(f"whisper.cpp could not load {self.model_path}")
        return model

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
        if gate_windows is not None:
            speech = speech_map(audio, self.energy_floor_dbfs)
            speech = SpeechMap(speech.voiced, speech.levels, speech.samples, tuple(gate_windows))
        elif self.vad_filter:
            speech = find_speech(audio, self.vad, self.energy_floor_dbfs)
        else:
            speech = everything_map(audio)
        if speech.speech_seconds < _MIN_SPEECH_S:
            log.debug("no speech in %.1f s of audio; not decoding", duration)
            if on_progress:
                on_progress(duration)
            return Transcription((), duration, language, self.model_name, 0.0)

        raw: list[tuple[float, float, str, float]] = []  # start, end, text, logprob
        with self._lock:
            for first, last in speech.chunks(self.chunk_s or _FULL_CHUNK_S):
                offset = first / SAMPLE_RATE
                chunk = audio[first:last]
                for t0, t1, text, logprob in self._decode_chunk(
                    chunk, speech, offset, abort, language
                ):
                    raw.append((t0 + offset, t1 + offset, text, logprob))
                if on_progress:
                    on_progress(last / SAMPLE_RATE)
            language = self._detected_language(language)
        segments = []
        for start, end, text, logprob in raw:
            text = clean_text(text)
            end = min(end, duration)
            if not text:
                continue
            heard = speech.speech_between(start - _SEGMENT_SLACK_S, end + _SEGMENT_SLACK_S)
            if heard < _MIN_SPEECH_S:
                log.debug("dropping %r at %.2f-%.2f s: no speech there", text, start, end)
                continue
            if is_repetition_loop(text):
                log.debug("dropping %r at %.2f-%.2f s: a repetition loop", text, start, end)
                continue
            prob = speech.speech_prob_between(start - _SEGMENT_SLACK_S, end + _SEGMENT_SLACK_S)
            if prob is not None and prob < self.vad.speech_threshold:
                log.debug("dropping %r at %.2f-%.2f s: speech_prob %.2f", text, start, end, prob)
                continue
            segments.append(Segment(start, max(start, end), text, logprob))
        if on_progress:
            on_progress(duration)
        return Transcription(
            tuple(segments), duration, language, self.model_name, speech.speech_seconds
        )

    def _decode_chunk(
        self,
        chunk: np.ndarray,
        speech: SpeechMap,
        offset: float,
        abort: Callable[[], bool] | None = None,
        language: str | None = None,
    ) -> list[tuple[float, float, str, float]]:
        """Decode one chunk in a window cut to its length; redo it in the full window if wrong."""
        duration = chunk.size / SAMPLE_RATE
        heard = speech.speech_between(offset, offset + duration)
        raw = None
        if self.chunk_s > 0:
            raw = self._decode(
                chunk, audio_ctx=self._short_ctx(duration), abort=abort, language=language
            )
            if _looks_wrong(raw, duration, heard):
                log.debug("short-window result %r looks wrong; using the full window", raw)
                raw = None
        if raw is None:
            raw = self._decode(chunk, audio_ctx=0, abort=abort, language=language)
        logprobs = self._segment_logprobs(len(raw))
        return [
            (r.t0 / 100, min(r.t1 / 100, duration), r.text, lp)
            for r, lp in zip(raw, logprobs, strict=True)
        ]

    def warm_up(self) -> None:
        """Decode one second of silence in the full window: every buffer is touched at start.

        whisper.cpp reserves its compute buffers for the full window when it loads, but
        only the pages a decode touches become resident, and without flash attention the
        encoder's attention grows with the square of the window: a short window touches a
        few MiB of it, the full one (the fallback of :meth:`_decode_chunk`) about 95 MiB more
        (tiny.en). Touched here, that memory is part of the baseline rather than a step in a
        long-running daemon's memory at its first fallback, and no utterance pays for setting
        it up.
        """
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        with self._lock:
            self._decode(silence, audio_ctx=0)  # 0: the full window, as the fallback decodes

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
        duration = audio.size / SAMPLE_RATE
        segments = self._model.transcribe(
            audio,
            abort_callback=abort,
            language=language or self.language,
            n_threads=self.threads,
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
            token_timestamps=self.max_segment_chars > 0,
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
                raise SttError(
                    f"model {self.model_name} is English-only; it cannot hear {language!r}"
                )
            return "en"
        if language != "auto" and language not in whisper_languages():
            raise SttError(f"whisper knows no language {language!r}")
        return language

    def _detected_language(self, language: str | None = None) -> str:
        language = language or self.language
        if language != "auto":
            return language
        import _pywhispercpp as pw

        return pw.whisper_lang_str(pw.whisper_full_lang_id(self._model._ctx))
