"""Cut a live 16 kHz audio stream into utterances.

:class:`Segmenter` is pure logic: feed it int16 (or float) mono blocks of any length and it
returns typed events. It runs webrtcvad on exact 10/20/30 ms int16 frames and adds what
webrtcvad lacks:

* an energy gate: a frame only counts as speech if webrtcvad says so *and* it is louder than
  ``vad.energy_floor_dbfs`` and ``vad.noise_margin_db`` above the recent noise floor (the
  quietest frame of the last ``vad.noise_window_s``). webrtcvad flags steady hum, fans and
  loud white or pink noise as speech; the gate keeps them out.
* an onset rule: an utterance starts after ``vad.speech_start_ms`` of consecutive speech
  frames; the utterance audio also holds ``vad.pre_roll_ms`` from before the onset.
* an endpoint rule: it ends after ``vad.silence_ms`` without speech frames; the audio keeps
  ``vad.post_roll_ms`` of that silence.
* ``vad.min_utterance_ms``: shorter ones (taps, clicks) are cancelled, not emitted.
* a second opinion: with a :class:`~voiced.audio.speech_gate.SpeechGate` (Silero VAD), each
  candidate utterance's frames, pre-roll included, are fed to the gate as they arrive (nothing
  runs while no utterance is in flight), and an utterance whose ``speech_prob`` stays below
  ``vad.speech_threshold`` is cancelled as ``not_speech``. Nothing else drops an utterance
  for what it sounds like: webrtcvad and the energy gate only propose.
* reach-back (with the gate): at an onset the gate also scores up to :data:`REACH_BACK_MS`
  before the pre-roll, and when the speech it hears there runs on into the pre-roll, the
  utterance starts where that speech starts. The energy gate needs the voice well over the
  noise; in loud noise it opens a word late, and that word would be lost.
* ``vad.max_utterance_s``: longer speech is split at the quietest recent frame into several
  utterances, never dropped. Speech that goes on after a split (at once, or after less than
  ``vad.silence_ms`` of silence) starts an utterance marked ``continues``, which is never
  cancelled, however short: without the split it would have been part of the one before.
* ``judge_turns`` (the daemon with ``vad.end_of_turn: model``): a :class:`TurnPause` after
  ``vad.turn_pause_ms`` of silence, and the listener has the pause judged by an end-of-turn
  model off this thread, handing the verdict back with :meth:`Segmenter.verdict`: finished
  ends the utterance at once (reason ``model``, with the audio a :class:`SpeechPaused`
  reported), not finished makes it wait up to
  ``vad.turn_max_silence_ms`` of silence for more speech, and with no verdict yet it ends
  after ``vad.silence_ms`` as usual. Speech that starts within ``vad.silence_ms`` of a
  model-decided end (it would have been the same utterance without the model) takes it
  back (``UtteranceStarted.rejoins``), until :meth:`Segmenter.forget_rejoin`.
* with ``report_pauses``: a :class:`SpeechPaused` event once the post-roll of silence follows
  the speech (``vad.post_roll_ms``; ``vad.turn_post_roll_ms`` when judging turns), carrying
  exactly the audio the utterance will have if it ends at this pause, and
  :class:`SpeechResumed` if speech comes back before the endpoint. A listener can start
  transcribing in the pause and have the text when the endpoint is decided. When judging
  turns that is before the model is asked: its verdict then finds the text (nearly) ready.

Times are stream times in seconds: samples fed so far divided by the sample rate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import webrtcvad

from voiced.audio.speech_gate import WINDOW, SpeechGate, score_alone, summarise
from voiced.config import VadSettings
from voiced.decode import to_int16

SAMPLE_RATE = 16000

# Non-speech frames tolerated inside the voiced run that starts an utterance.
_ONSET_GAP_MS = 200  # stop closures inside a word ("Wha-t time") last up to ~150 ms
# With the speech gate: how far before the pre-roll an utterance may reach back over audio
# the gate calls speech, the gaps between words it may cross, and the audio kept before the
# first speech window found there. In loud noise (5 dB SNR) the energy gate opens a word or
# two late; Silero still hears those words (measured on the real recordings in tests/).
REACH_BACK_MS = 2000
_REACH_GAP_MS = 200
_REACH_PAD_MS = 150
_REACH_PROBE = 16 * WINDOW  # 512 ms: what the gate hears before the pre-roll decides
# Speech scored before a pause when the gate checks that the pause is silent (Silero scores
# a clip from a clean state and needs what came before to judge it).
_TAIL_CONTEXT_FRAMES = 10

EndReason = Literal["silence", "model", "max_length", "flush"]
CancelReason = Literal["too_short", "not_speech"]


@dataclass(frozen=True)
class UtteranceStarted:
    """Speech began at ``start_s`` (the onset; audio from ``audio_start_s`` is kept).

    ``continues`` is true when this utterance goes on with the speech of the one before, which
    was split at ``vad.max_utterance_s``; such an utterance is never cancelled.
    """

    index: int
    start_s: float
    audio_start_s: float
    detected_s: float  # stream time at which the onset was decided
    continues: bool = False
    rejoins: int | None = None  # the model-ended utterance this one takes back (see verdict)


@dataclass(frozen=True)
class UtteranceEnded:
    """An utterance is complete; ``audio`` is float32 mono at ``sample_rate``.

    ``end_s`` is the end of the last speech frame; ``endpoint_s`` the stream time of the
    decision; ``endpoint_wait_ms`` the silence waited between the two (0 for a split or a
    flush). ``audio`` runs from ``audio_start_s`` (pre-roll included) to ``audio_end_s``.

    With a speech gate, ``speech_prob`` is the gate's verdict on ``audio`` and
    ``window_probs`` its probability for each whole 512-sample window of ``audio``, in
    order; without one they are None.
    """

    index: int
    start_s: float
    end_s: float
    endpoint_s: float
    endpoint_wait_ms: int
    reason: EndReason
    audio: np.ndarray = field(repr=False)
    audio_start_s: float
    audio_end_s: float
    sample_rate: int = SAMPLE_RATE
    speech_prob: float | None = None
    window_probs: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class UtteranceCancelled:
    """A started utterance turned out not to be speech; nothing to transcribe.

    ``reason`` is ``too_short`` (below ``vad.min_utterance_ms``: taps, clicks) or
    ``not_speech`` (the speech gate's ``speech_prob`` stayed below ``vad.speech_threshold``:
    horns, beeps, knocks, music, steady noise). ``speech_prob`` is the gate's verdict when a
    gate was asked (None for a too-short sound it never had to judge).
    """

    index: int
    start_s: float
    end_s: float
    reason: CancelReason = "too_short"
    speech_prob: float | None = None


@dataclass(frozen=True)
class SpeechPaused:
    """``vad.post_roll_ms`` of silence followed the speech of utterance ``index``.

    With ``vad.end_of_turn: model`` the pause comes after ``vad.turn_post_roll_ms``.
    If no speech comes back before the endpoint, the :class:`UtteranceEnded` that follows has
    the same ``index``, ``audio_start_s`` and ``audio_end_s``, and exactly this ``audio``.
    Not reported when that utterance would be cancelled (too short, or not speech to the
    speech gate). ``speech_prob`` and ``window_probs`` are those the ended utterance will have.
    """

    index: int
    audio: np.ndarray = field(repr=False)
    audio_start_s: float
    audio_end_s: float
    sample_rate: int = SAMPLE_RATE
    speech_prob: float | None = None
    window_probs: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TurnPause:
    """``vad.turn_pause_ms`` of silence followed the speech of utterance ``index`` (only
    when judging turns): time to ask the end-of-turn model.

    ``audio`` is the utterance so far, this whole pause included (what the model hears);
    ``audio_end_s`` is where the utterance's kept audio ends, which names the pause in
    :meth:`Segmenter.verdict`. Not reported when that utterance would be cancelled.
    """

    index: int
    audio: np.ndarray = field(repr=False)
    audio_start_s: float
    audio_end_s: float
    sample_rate: int = SAMPLE_RATE


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back after a :class:`SpeechPaused` or :class:`TurnPause`: utterance
    ``index`` goes on."""

    index: int
    at_s: float


Event = (
    UtteranceStarted
    | UtteranceEnded
    | UtteranceCancelled
    | SpeechPaused
    | TurnPause
    | SpeechResumed
)


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (-120 for digital silence)."""
    power = float(np.mean(np.square(frame, dtype=np.float64))) / (32768.0 * 32768.0)
    return 10.0 * math.log10(power) if power > 1e-12 else -120.0


@dataclass
class _Frame:
    index: int
    samples: np.ndarray
    speech: bool
    dbfs: float


class Segmenter:
    """Stateful VAD segmenter; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        settings: VadSettings | None = None,
        sample_rate: int = SAMPLE_RATE,
        *,
        report_pauses: bool = False,
        gate: SpeechGate | None = None,
        judge_turns: bool = False,
    ) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz audio, got {sample_rate} Hz")
        if gate is not None and sample_rate != 16000:
            raise ValueError(f"the speech gate needs 16 kHz audio, got {sample_rate} Hz")
        self.settings = settings or VadSettings()
        self.sample_rate = sample_rate
        self.gate = gate
        s = self.settings
        self.frame_ms = s.frame_ms
        # The listener judges pauses with the end-of-turn model (vad.end_of_turn: model).
        self.model_turns = judge_turns
        self.report_pauses = report_pauses
        self.frame_samples = sample_rate * s.frame_ms // 1000
        self._frame_s = s.frame_ms / 1000.0
        self._vad = webrtcvad.Vad(s.aggressiveness)
        self._start_frames = max(1, math.ceil(s.speech_start_ms / s.frame_ms))
        self._silence_frames = max(1, math.ceil(s.silence_ms / s.frame_ms))
        post_roll_ms = min(s.post_roll_ms, s.turn_pause_ms) if self.model_turns else s.post_roll_ms
        self._post_roll_frames = min(self._silence_frames, post_roll_ms // s.frame_ms)
        self._turn_pause_frames = min(self._silence_frames, max(1, s.turn_pause_ms // s.frame_ms))
        # Judging turns with the speech gate, a pause whose first vad.turn_post_roll_ms the
        # gate hears as silence keeps only that much (and is reported for transcription then,
        # before the model is asked, so the text is ready when it has answered). In noise the
        # energy gate can miss a weak last word or consonant, which the longer post-roll keeps.
        self._quick_frames = (
            min(self._post_roll_frames, max(1, s.turn_post_roll_ms // s.frame_ms))
            if self.model_turns and gate is not None and s.turn_post_roll_ms < post_roll_ms
            else None
        )
        self._max_silence_frames = max(
            self._silence_frames, math.ceil(s.turn_max_silence_ms / s.frame_ms)
        )
        self._gap_frames = max(1, _ONSET_GAP_MS // s.frame_ms)
        self._min_frames = math.ceil(s.min_utterance_ms / s.frame_ms)
        self._max_frames = max(self._start_frames + 1, int(s.max_utterance_s * 1000 // s.frame_ms))
        self._split_search_frames = max(1, min(self._max_frames // 2, 2000 // s.frame_ms))
        self._noise_levels: deque[float] = deque(
            maxlen=max(1, int(s.noise_window_s * 1000) // s.frame_ms)
        )

        self._pending = np.zeros(0, dtype=np.int16)
        self._next_index = 0  # frames seen
        self._pre_roll_frames = max(0, s.pre_roll_ms // s.frame_ms)
        reach_frames = (s.pre_roll_ms + REACH_BACK_MS) // s.frame_ms if gate is not None else 0
        self._history: deque[_Frame] = deque(maxlen=max(self._pre_roll_frames, reach_frames))
        self._run: list[_Frame] = []  # consecutive speech frames while idle
        self._utterance: list[_Frame] | None = None
        self._utterance_start = 0  # frame index of the onset
        self._last_speech = 0  # frame index of the last speech frame in the utterance
        self._silent_run = 0
        self._paused = False  # a SpeechPaused was reported for the current utterance
        self._judging = False  # a TurnPause was reported for the current utterance
        self._tail_frames: int | None = None  # the post-roll decided for the current pause
        # Asked (the utterance's audio start and the stream time, in s) before a pause's
        # silence is checked with the speech gate (about 25 ms of one core): a listener that
        # will ignore the utterance (no wake word) says no, and the pause keeps the longer
        # post-roll. None: always check.
        self.pause_wanted: Callable[[float, float], bool] | None = None
        self._unfinished = False  # the end-of-turn model heard this pause as unfinished
        # After a model-decided end: that utterance's frames and every frame since, until
        # vad.silence_ms after its speech; speech starting before then takes it back.
        self._rejoin: list[_Frame] | None = None
        self._rejoin_index = 0
        self._rejoin_start = 0
        self._rejoin_until = 0
        self._continues = False  # the current utterance goes on after a split
        self._continues_before = 0  # an onset before this frame index continues a split
        self._utterance_count = 0
        self._gate_from = 0  # frame index of the first frame fed to the gate

    # -- public ---------------------------------------------------------------------------

    @property
    def in_utterance(self) -> bool:
        return self._utterance is not None

    @property
    def rejoin_open(self) -> int | None:
        """The model-ended utterance that speech may still take back (see :meth:`verdict`),
        or None once that can no longer happen."""
        return self._rejoin_index if self._rejoin is not None else None

    @property
    def hearing_speech(self) -> bool:
        """An utterance is in flight, or speech frames are counting towards an onset."""
        return self._utterance is not None or any(f.speech for f in self._run)

    @property
    def stream_time_s(self) -> float:
        return (self._next_index * self.frame_samples + self._pending.size) / self.sample_rate

    def is_speech(self, frame: np.ndarray) -> bool:
        """The gated speech decision for one exact int16 frame (updates the noise floor)."""
        return self._classify(frame)[0]

    def feed(self, audio: np.ndarray) -> list[Event]:
        """Add mono audio (int16, or float in [-1, 1]) of any length; return new events."""
        samples = to_int16(audio)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        events: list[Event] = []
        whole = samples.size // self.frame_samples * self.frame_samples
        for offset in range(0, whole, self.frame_samples):
            events.extend(self._step(samples[offset : offset + self.frame_samples].copy()))
        self._pending = samples[whole:].copy()
        return events

    def flush(self) -> list[Event]:
        """End the utterance in flight (at end of stream or on shutdown)."""
        if self._utterance is None:
            return []
        if self._pending.size:
            tail = np.zeros(self.frame_samples, dtype=np.int16)
            tail[: self._pending.size] = self._pending
            self._utterance.append(_Frame(self._next_index, tail, False, -120.0))
            if self.gate is not None:
                self.gate.feed(tail)
            self._next_index += 1
            self._pending = np.zeros(0, dtype=np.int16)
        return [self._end("flush")]

    def verdict(self, index: int, audio_end_s: float, finished: bool) -> list[Event]:
        """The end-of-turn model's verdict on the pause of utterance ``index`` whose audio
        ended at ``audio_end_s`` (as its :class:`TurnPause` said).

        Finished: the utterance ends now (an :class:`UtteranceEnded` with reason ``model``).
        Not finished: it waits up to ``vad.turn_max_silence_ms`` for more speech. A verdict on
        a pause that speech has since broken (or on another utterance) changes nothing.
        """
        if (
            self._utterance is None
            or not self._judging
            or index != self._utterance_count
            or abs(audio_end_s - self._time(self._kept(self._utterance)[0][-1].index + 1)) > 1e-6
        ):
            return []
        if finished:
            frames = self._utterance
            start = self._utterance_start
            # Speech within vad.silence_ms would have been this utterance without the model.
            until = self._last_speech + 1 + self._silence_frames
            ended = self._end("model")
            if isinstance(ended, UtteranceEnded):
                self._rejoin, self._rejoin_index = frames, ended.index
                self._rejoin_start, self._rejoin_until = start, until
            return [ended]
        self._unfinished = True
        return []

    def forget_rejoin(self) -> None:
        """Speech from now on starts a new utterance, even soon after a model-decided end
        (call it once the reply to that utterance can be heard)."""
        self._rejoin = None

    # -- internals ------------------------------------------------------------------------

    def _time(self, frame_index: int) -> float:
        return frame_index * self._frame_s

    def _classify(self, samples: np.ndarray) -> tuple[bool, float]:
        level = frame_dbfs(samples)
        floor = min(self._noise_levels) if self._noise_levels else level
        self._noise_levels.append(level)
        threshold = max(self.settings.energy_floor_dbfs, floor + self.settings.noise_margin_db)
        # webrtcvad adapts to what it sees: give it every frame, then apply the gate.
        voiced = self._vad.is_speech(samples.tobytes(), self.sample_rate)
        return voiced and level >= threshold, level

    def _step(self, samples: np.ndarray) -> list[Event]:
        speech, level = self._classify(samples)
        frame = _Frame(self._next_index, samples, speech, level)
        self._next_index += 1
        if self._utterance is None:
            return self._step_idle(frame)
        return self._step_speaking(frame)

    def _step_idle(self, frame: _Frame) -> list[Event]:
        if self._rejoin is not None:
            # What counts is when the speech starts, not when the onset is decided.
            onset = self._run[0].index if self._run else frame.index
            if onset < self._rejoin_until:
                self._rejoin.append(frame)
            else:
                self._rejoin = None
        if frame.speech:
            self._run.append(frame)
            if sum(f.speech for f in self._run) >= self._start_frames:
                return [self._start()]
            return []
        if self._run and sum(1 for _ in _trailing_silence(self._run)) < self._gap_frames:
            self._run.append(frame)  # a short dip inside speech does not reset the onset
            return []
        for earlier in self._run:
            self._history.append(earlier)
        self._run = []
        self._history.append(frame)
        return []

    def _start(self) -> UtteranceStarted:
        if self._rejoin is not None:
            return self._start_rejoined()
        onset = self._run[0].index
        before = list(self._history)
        pre_roll = before[len(before) - self._pre_roll_frames :] if self._pre_roll_frames else []
        if self.gate is not None and len(before) > len(pre_roll):
            before = self._reach_back(before, len(before) - len(pre_roll))
        else:
            before = pre_roll
        self._utterance = [*before, *self._run]
        self._history.clear()
        self._run = []
        self._utterance_start = onset
        self._last_speech = self._utterance[-1].index
        self._silent_run = 0
        self._no_pause()
        self._continues = onset < self._continues_before
        self._gate_restart(self._utterance)
        return UtteranceStarted(
            index=self._utterance_count,
            start_s=self._time(onset),
            audio_start_s=self._time(self._utterance[0].index),
            detected_s=self._time(self._next_index),
            continues=self._continues,
        )

    def _start_rejoined(self) -> UtteranceStarted:
        """Speech came back soon after a model-decided end: the new utterance holds that one
        and everything since (it is never cancelled, however short the new part)."""
        assert self._rejoin is not None
        frames, self._rejoin = self._rejoin, None
        self._utterance = frames
        self._history.clear()
        self._run = []
        self._utterance_start = self._rejoin_start
        self._last_speech = frames[-1].index
        self._silent_run = 0
        self._no_pause()
        self._continues = True
        self._gate_restart(frames)
        return UtteranceStarted(
            index=self._utterance_count,
            start_s=self._time(self._rejoin_start),
            audio_start_s=self._time(frames[0].index),
            detected_s=self._time(self._next_index),
            continues=True,
            rejoins=self._rejoin_index,
        )

    def _reach_back(self, before: list[_Frame], pre_roll_at: int) -> list[_Frame]:
        """The frames of ``before`` to keep: from the pre-roll (``before[pre_roll_at:]``), or
        from where speech the gate hears running on into the pre-roll starts."""
        assert self.gate is not None
        threshold = self.settings.speech_threshold
        # Most onsets (a quiet room, a knock) have no speech just before the pre-roll: find
        # out from a short stretch first, and score the whole reach only when there is.
        probe = np.concatenate([f.samples for f in before[:pre_roll_at]])[-_REACH_PROBE:]
        if self._gate_scores(probe)[-1:].tolist() < [threshold]:
            return before[pre_roll_at:]
        probs = self._gate_scores(np.concatenate([f.samples for f in [*before, *self._run]]))
        speech = probs >= threshold
        gap_windows = max(1, _REACH_GAP_MS * SAMPLE_RATE // 1000 // WINDOW)
        window = pre_roll_at * self.frame_samples // WINDOW
        earliest, gap = None, 0
        for k in range(min(window, speech.size) - 1, -1, -1):
            if speech[k]:
                earliest, gap = k, 0
            elif earliest is None or (gap := gap + 1) > gap_windows:
                break
        if earliest is None:
            return before[pre_roll_at:]
        start = max(0, earliest * WINDOW - _REACH_PAD_MS * SAMPLE_RATE // 1000)
        return before[min(pre_roll_at, start // self.frame_samples) :]

    def _gate_scores(self, audio: np.ndarray) -> np.ndarray:
        """The gate's window probabilities over ``audio`` alone, scored to its end."""
        assert self.gate is not None
        sure, self.gate.stop_when_sure = self.gate.stop_when_sure, False
        try:
            return self.gate.probabilities(audio)
        finally:
            self.gate.stop_when_sure = sure

    def _step_speaking(self, frame: _Frame) -> list[Event]:
        assert self._utterance is not None
        self._utterance.append(frame)
        if self.gate is not None:
            self.gate.feed(frame.samples)
        events: list[Event] = []
        if frame.speech:
            self._last_speech = frame.index
            self._silent_run = 0
            if self._paused or self._judging:
                events.append(SpeechResumed(self._utterance_count, self._time(frame.index)))
            self._no_pause()
        else:
            self._silent_run += 1
            if self._silent_run == self._quick_frames and self._pause_wanted():
                self._tail_frames = self._quick_frames if self._quiet_tail() else None
        limit = self._max_silence_frames if self._unfinished else self._silence_frames
        if self._silent_run >= limit:
            return [*events, self._end("silence")]
        if frame.index + 1 - self._utterance_start >= self._max_frames:
            self._no_pause()
            return [*events, *self._split()]
        # From here on the kept audio cannot change unless speech comes back. (After a split
        # the silence may already be longer than the post-roll: report the pause at once.)
        if (
            self.report_pauses
            and not self._paused
            and self._silent_run >= max(1, self._post_roll())
        ):
            events.extend(self._pause())
        if self.model_turns and not self._judging and self._silent_run >= self._turn_pause_frames:
            events.extend(self._turn_pause())
        return events

    def _no_pause(self) -> None:
        """Forget the current pause: what was reported of it, its post-roll and verdict."""
        self._paused = self._judging = False
        self._tail_frames = None
        self._unfinished = False

    def _pause(self) -> list[Event]:
        frames = self._utterance
        assert frames is not None
        kept, speech_end = self._kept(frames)
        verdict = self._verdict(kept)
        if self._cancel_reason(kept, speech_end, verdict) is not None:
            return []
        self._paused = True
        prob, window_probs = verdict if verdict is not None else (None, None)
        return [
            SpeechPaused(
                index=self._utterance_count,
                audio=np.concatenate([f.samples for f in kept]).astype(np.float32) / 32768.0,
                audio_start_s=self._time(kept[0].index),
                audio_end_s=self._time(kept[-1].index + 1),
                sample_rate=self.sample_rate,
                speech_prob=prob,
                window_probs=window_probs,
            )
        ]

    def _turn_pause(self) -> list[Event]:
        frames = self._utterance
        assert frames is not None
        kept, speech_end = self._kept(frames)
        if self._cancel_reason(kept, speech_end, self._verdict(kept)) is not None:
            return []
        self._judging = True
        return [
            TurnPause(
                index=self._utterance_count,
                audio=np.concatenate([f.samples for f in frames]).astype(np.float32) / 32768.0,
                audio_start_s=self._time(frames[0].index),
                audio_end_s=self._time(kept[-1].index + 1),
                sample_rate=self.sample_rate,
            )
        ]

    def _post_roll(self) -> int:
        """The post-roll of the current pause, in frames."""
        return self._post_roll_frames if self._tail_frames is None else self._tail_frames

    def _pause_wanted(self) -> bool:
        assert self._utterance is not None
        if self.pause_wanted is None:
            return True
        return self.pause_wanted(self._time(self._utterance[0].index), self.stream_time_s)

    def _quiet_tail(self) -> bool:
        """Whether the speech gate hears no speech in the pause so far (the silent frames
        after the last speech frame), scored with the speech before it for context."""
        assert self._utterance is not None and self._quick_frames is not None
        context = self._utterance[-(self._quick_frames + _TAIL_CONTEXT_FRAMES) :]
        probs = score_alone(np.concatenate([f.samples for f in context]))
        pause_from = (len(context) - self._quick_frames) * self.frame_samples
        # Silero's probability lags the sound by about a window: after clean speech the first
        # window of the pause still scores 0.5-0.9. The windows that start later count.
        tail = probs[-(-(pause_from + WINDOW) // WINDOW) :]
        return bool(tail.size) and float(tail.max()) < self.settings.speech_threshold

    def _kept(self, frames: list[_Frame]) -> tuple[list[_Frame], int]:
        """The frames an utterance ending now keeps, and the index after its last speech."""
        speech_end = self._last_speech + 1
        keep_until = min(speech_end + self._post_roll(), frames[-1].index + 1)
        return [f for f in frames if f.index < keep_until], speech_end

    def _gate_restart(self, frames: list[_Frame]) -> None:
        """Start judging a new candidate utterance: these are its frames so far."""
        if self.gate is None:
            return
        self.gate.reset()
        self._gate_from = frames[0].index
        for frame in frames:
            self.gate.feed(frame.samples)

    def _verdict(self, kept: list[_Frame]) -> tuple[float, np.ndarray] | None:
        """The gate's (speech_prob, window probabilities) for the kept audio, or None.

        Only whole windows inside the kept audio count, so a pause and the end that follows
        it without more speech give the same verdict.
        """
        if self.gate is None:
            return None
        first = (kept[0].index - self._gate_from) * self.frame_samples
        last = (kept[-1].index + 1 - self._gate_from) * self.frame_samples
        probs = self.gate.window_probabilities
        # The kept audio starts where the gate started (first == 0) except after a split.
        lo = -(-first // WINDOW)
        window_probs = probs[lo : last // WINDOW]
        return summarise(window_probs), window_probs

    def _cancel_reason(
        self, kept: list[_Frame], speech_end: int, verdict: tuple[float, np.ndarray] | None
    ) -> CancelReason | None:
        """Why an utterance with these frames is not speech, or None."""
        if self._continues:
            return None  # the speech before the split vouches for it
        if speech_end - self._utterance_start < self._min_frames:
            return "too_short"
        if verdict is not None and verdict[0] < self.settings.speech_threshold:
            return "not_speech"
        return None

    def _end(self, reason: EndReason) -> UtteranceEnded | UtteranceCancelled:
        frames = self._utterance
        assert frames is not None
        kept, speech_end = self._kept(frames)
        keep_until = kept[-1].index + 1
        leftover = [f for f in frames if f.index >= keep_until]
        self._utterance = None
        self._no_pause()
        for f in leftover[-self._history.maxlen :] if self._history.maxlen else []:
            self._history.append(f)
        index = self._utterance_count
        self._utterance_count += 1
        verdict = self._verdict(kept)
        cancelled = self._cancel_reason(kept, speech_end, verdict)
        self._continues = False
        prob, window_probs = verdict if verdict is not None else (None, None)
        if cancelled is not None:
            return UtteranceCancelled(
                index=index,
                start_s=self._time(self._utterance_start),
                end_s=self._time(speech_end),
                reason=cancelled,
                speech_prob=prob if cancelled == "not_speech" else None,
            )
        wait_frames = self._next_index - speech_end if reason != "max_length" else 0
        return UtteranceEnded(
            index=index,
            start_s=self._time(self._utterance_start),
            end_s=self._time(speech_end),
            endpoint_s=self._time(self._next_index),
            endpoint_wait_ms=wait_frames * self.frame_ms,
            reason=reason,
            audio=np.concatenate([f.samples for f in kept]).astype(np.float32) / 32768.0,
            audio_start_s=self._time(kept[0].index),
            audio_end_s=self._time(keep_until),
            sample_rate=self.sample_rate,
            speech_prob=prob,
            window_probs=window_probs,
        )

    def _split(self) -> list[Event]:
        """Split an over-long utterance at the quietest recent frame; keep all audio."""
        frames = self._utterance
        assert frames is not None
        search = frames[-self._split_search_frames :]
        quietest = min(search, key=lambda f: (f.speech, f.dbfs))
        cut = quietest.index + 1  # the quiet frame ends the first part
        head = [f for f in frames if f.index < cut]
        tail = [f for f in frames if f.index >= cut]
        index = self._utterance_count
        self._utterance_count += 1
        verdict = self._verdict(head)
        prob, window_probs = verdict if verdict is not None else (None, None)
        ended = UtteranceEnded(
            index=index,
            start_s=self._time(self._utterance_start),
            end_s=self._time(cut),
            endpoint_s=self._time(self._next_index),
            endpoint_wait_ms=0,
            reason="max_length",
            audio=np.concatenate([f.samples for f in head]).astype(np.float32) / 32768.0,
            audio_start_s=self._time(head[0].index),
            audio_end_s=self._time(cut),
            sample_rate=self.sample_rate,
            speech_prob=prob,
            window_probs=window_probs,
        )
        speech_frames = [f.index for f in tail if f.speech]
        if not speech_frames:
            # The split fell at the end of the speech: wait for the next onset as usual; one
            # that comes before vad.silence_ms of silence would have been in this utterance.
            self._utterance = None
            self._continues = False
            self._continues_before = self._last_speech + self._silence_frames + 1
            for frame in tail[-self._history.maxlen :] if self._history.maxlen else []:
                self._history.append(frame)
            return [ended]
        self._utterance = tail
        self._utterance_start = cut
        self._last_speech = speech_frames[-1]
        self._silent_run = sum(1 for _ in _trailing_silence(tail))
        self._continues = True
        self._gate_restart(tail)
        started = UtteranceStarted(
            index=self._utterance_count,
            start_s=self._time(cut),
            audio_start_s=self._time(cut),
            detected_s=self._time(self._next_index),
            continues=True,
        )
        return [ended, started]


def _trailing_silence(frames: list[_Frame]) -> Iterator[_Frame]:
    for frame in reversed(frames):
        if frame.speech:
            return
        yield frame


def speech_gate(settings: VadSettings) -> SpeechGate | None:
    """The speech gate ``settings`` ask for (None with ``speech_threshold`` 0).

    It stops scoring an utterance once it is sure that it is speech: an utterance in doubt
    (a verdict between the threshold and :data:`~voiced.audio.speech_gate.SURE`) is scored
    to its end, one that is clearly speech costs a few hundred milliseconds of scoring.
    """
    if settings.speech_threshold <= 0:
        return None
    return SpeechGate(settings.speech_threshold, stop_when_sure=True)


def segment(
    blocks: Iterable[np.ndarray],
    settings: VadSettings | None = None,
    sample_rate: int = SAMPLE_RATE,
    *,
    report_pauses: bool = False,
    gate: SpeechGate | None = None,
) -> Iterator[Event]:
    """Run a :class:`Segmenter` over ``blocks`` and flush at the end."""
    segmenter = Segmenter(settings, sample_rate, report_pauses=report_pauses, gate=gate)
    for block in blocks:
        yield from segmenter.feed(block)
    yield from segmenter.flush()
