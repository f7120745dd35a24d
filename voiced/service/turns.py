"""The turn logic of the hands-free loop, as a state machine with no audio in it.

The daemon feeds :class:`TurnMachine` events (an utterance was transcribed, playback started
or finished, a turn finished, a tool asks for confirmation, time passed) and carries out the
actions it returns (start a turn, acknowledge, interrupt, speak a question, answer a
confirmation). All times are ``time.monotonic()`` seconds supplied with the events, so tests
drive it with made-up clocks.

States:

``idle``        only utterances that start with a wake phrase (``wake.engine: text``) or hold
                a wake-word detection (``wake.engine: model``) are for the assistant;
``listening``   addressed without a wake phrase: after a wake phrase alone (acknowledged, for
                at least ``ACKNOWLEDGED_WINDOW_S``) and for ``wake.follow_up_s`` after a
                reply (the follow-up window);
``thinking``    a turn runs and nothing of its reply is playing;
``speaking``    the reply is playing;
``confirming``  a tool asked for confirmation; waiting for a spoken yes or no.

Never answering its own voice: an utterance that overlaps the assistant's playback, or the
``wake.echo_tail_s`` after it, only counts when it starts with a wake phrase (a barge-in,
which interrupts the reply); and an utterance of three words or more that mostly repeats what
the assistant said recently is dropped whatever its timing. Shorter ones ("Yes.", "No.") are
too likely to be the user's own answer: they count as echo only by their timing. While a
confirmation waits, a yes or no is checked against the question only.

With ``wake.engine: model`` a wake-word model hears every frame and the daemon posts
:class:`WakeWordDetected` at once; Whisper only runs on utterances the machine's
:meth:`TurnMachine.ears_open_until` admits or that hold a detection (``Heard.wake``, whose
audio was cut after the phrase). A detection opens the listening window (the request may be
in the same utterance or the next); while a turn runs or a confirmation waits, a detection of
the wake or stop model (``wake.stop_model``) stops it at once, before any transcription:
the stop word. The utterance that carried it still starts a turn if it holds a request
("Hey Jarvis, what about Paris?"); the phrase alone is not acknowledged after a stop.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from voiced.config import WakeSettings
from voiced.service.wake_phrase import WakeMatch, WakeMatcher, is_echo, parse_yes_no, words

log = logging.getLogger(__name__)

# How long what the assistant said is remembered for echo rejection.
ECHO_MEMORY_S = 30.0
# The longest a confirmation waits for its question to be spoken before the timeout starts.
QUESTION_GRACE_S = 30.0
# After an acknowledgement ("Computer." -> "Yes?") the request is accepted without the wake
# phrase for at least this long, even when ``wake.follow_up_s`` is shorter (or 0).
ACKNOWLEDGED_WINDOW_S = 8.0
# Utterances shorter than this (in words) are only taken for an echo by their timing: "Yes."
# repeats the acknowledgement "Yes?" word for word, yet is usually the user's answer.
SHORT_ECHO_WORDS = 3


class State(str, enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    CONFIRMING = "confirming"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Heard:
    """An utterance was transcribed: speech from ``start`` to ``end``; ``at`` = now.

    ``wake`` names the wake-word model that fired inside it (``wake.engine: model``), at
    ``wake_at``; its text is then what followed the phrase (the audio was cut there).
    """

    text: str
    start: float
    end: float
    at: float
    context: Any = field(default=None, compare=False, repr=False)  # the daemon's bookkeeping
    wake: str | None = None
    wake_at: float | None = None


@dataclass(frozen=True)
class WakeWordDetected:
    """The wake-word model ``model`` heard its phrase, ending at ``at``."""

    model: str
    at: float
    probability: float = 0.0


@dataclass(frozen=True)
class PlaybackStarted:
    """Audio of ``text`` was handed to the speaker (the first of a stretch opens it)."""

    at: float
    text: str = ""


@dataclass(frozen=True)
class PlaybackFinished:
    """The speaker went quiet at ``at`` (its last sound left the device)."""

    at: float


@dataclass(frozen=True)
class TurnFinished:
    """Turn ``turn_id`` is over: the reply was generated and heard (or cut off)."""

    turn_id: int
    at: float


@dataclass(frozen=True)
class ConfirmationRequested:
    """A tool call in the running turn needs a yes or no from the user."""

    request_id: int
    question: str
    at: float


@dataclass(frozen=True)
class Tick:
    at: float


Event = (
    Heard
    | WakeWordDetected
    | PlaybackStarted
    | PlaybackFinished
    | TurnFinished
    | ConfirmationRequested
    | Tick
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartTurn:
    """Send ``text`` (wake phrase stripped) to the assistant as turn ``turn_id``."""

    turn_id: int
    text: str
    heard: Heard


@dataclass(frozen=True)
class Acknowledge:
    """Say the short acknowledgement: the wake phrase came alone."""

    text: str
    heard: Heard


@dataclass(frozen=True)
class Interrupt:
    """Barge-in: stop playback now, cancel turn ``turn_id``, keep only what was spoken.

    Caused by ``heard`` (a wake phrase in a transcript) or by ``detection`` (the stop word).
    """

    turn_id: int
    heard: Heard | None
    detection: WakeWordDetected | None = None


@dataclass(frozen=True)
class Ask:
    """Speak a confirmation question."""

    request_id: int
    question: str


@dataclass(frozen=True)
class Answer:
    """The answer to confirmation ``request_id``; ``reason``: yes, no, timeout, interrupted."""

    request_id: int
    approved: bool
    reason: str


@dataclass(frozen=True)
class Ignore:
    """An utterance that is not for the assistant, and why (for the log and tests)."""

    heard: Heard
    reason: str


Action = StartTurn | Acknowledge | Interrupt | Ask | Answer | Ignore


# --------------------------------------------------------------------------- the machine


@dataclass
class _Confirmation:
    request_id: int
    question: str
    deadline: float
    asked: bool = False  # the question has been heard to its end


class TurnMachine:
    """See the module docstring. Not thread-safe: drive it from one thread."""

    def __init__(self, settings: WakeSettings | None = None) -> None:
        self.settings = settings or WakeSettings()
        self.matcher = _matcher(self.settings)
        self.state = State.IDLE
        self.active_turn: int | None = None
        self._next_turn = 1
        self._playing = False
        self._intervals: deque[list[float]] = deque()  # [start, end] of the speaker's sound
        self._spoken: deque[tuple[float, str]] = deque()  # (time, text) said recently
        self._opened_at = 0.0  # when the listening window opened
        self._window = False  # a listening window was opened and no turn started since
        self._window_s = self.settings.follow_up_s  # how long it stays open after the last sound
        self._confirmation: _Confirmation | None = None
        self._stopped_by: float | None = None  # the detection that last stopped a turn

    def reconfigure(self, settings: WakeSettings) -> None:
        """New wake settings (after a reload); the state and timers carry over."""
        self.settings = settings
        self.matcher = _matcher(settings)

    @property
    def uses_model(self) -> bool:
        """Wake-word model engine: detections, not transcripts, say who is addressed."""
        return self.settings.engine == "model"

    # -- queries ---------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._playing

    def listening_until(self) -> float:
        """When the follow-up window closes (meaningful in ``listening``)."""
        last_sound = self._intervals[-1][1] if self._intervals else 0.0
        return max(self._opened_at, last_sound) + self._window_s

    def overlaps_playback(self, start: float, end: float) -> bool:
        """Whether speech from ``start`` to ``end`` overlaps the assistant's sound + tail."""
        tail = self.settings.echo_tail_s
        for sound_start, sound_end in self._intervals:
            if start < sound_end + tail and end > sound_start:
                return True
        return False

    def recently_spoken(self) -> list[str]:
        return [text for _, text in self._spoken]

    def ears_open_until(self) -> float:
        """Utterances that start before this time are transcribed without a wake word.

        Always (``inf``) with the text engine, which looks for the phrase in every
        transcript. With the model engine: while a confirmation waits, in the listening
        window (after a detection, an acknowledgement or a reply) and never otherwise
        (``-inf``): an utterance with no detection in it then costs no Whisper at all.
        """
        if not self.uses_model or self.matcher.always_addressed:
            return math.inf
        if self._confirmation is not None:
            return math.inf
        if self._window:
            return math.inf if self._playing else self.listening_until()
        return -math.inf

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions the daemon must carry out, in order."""
        if isinstance(event, Heard):
            actions = self._heard(event)
        elif isinstance(event, WakeWordDetected):
            actions = self._wake_word(event)
        elif isinstance(event, PlaybackStarted):
            actions = self._playback_started(event)
        elif isinstance(event, PlaybackFinished):
            actions = self._playback_finished(event)
        elif isinstance(event, TurnFinished):
            actions = self._turn_finished(event)
        elif isinstance(event, ConfirmationRequested):
            actions = self._confirmation_requested(event)
        elif isinstance(event, Tick):
            actions = self._tick(event.at)
        else:
            raise TypeError(f"unknown event {event!r}")
        return actions

    def _set(self, state: State) -> None:
        if state is not self.state:
            log.debug("state %s -> %s", self.state.value, state.value)
            self.state = state

    def _forget_old(self, now: float) -> None:
        while self._spoken and self._spoken[0][0] < now - ECHO_MEMORY_S:
            self._spoken.popleft()
        while len(self._intervals) > 1 and self._intervals[0][1] < now - ECHO_MEMORY_S:
            self._intervals.popleft()

    def _playback_started(self, event: PlaybackStarted) -> list[Action]:
        self._forget_old(event.at)
        if not self._playing:
            self._playing = True
            self._intervals.append([event.at, float("inf")])
        if event.text:
            self._spoken.append((event.at, event.text))
        if self.state is State.THINKING and self.active_turn is not None:
            self._set(State.SPEAKING)
        return []

    def _playback_finished(self, event: PlaybackFinished) -> list[Action]:
        if self._playing:
            self._playing = False
            self._intervals[-1][1] = max(event.at, self._intervals[-1][0])
        confirmation = self._confirmation
        if confirmation is not None and not confirmation.asked:
            confirmation.asked = True
            confirmation.deadline = event.at + self.settings.confirm_timeout_s
        if self.state is State.SPEAKING:
            self._set(State.THINKING)  # the reply may go on (tool rounds, more sentences)
        return []

    def _turn_finished(self, event: TurnFinished) -> list[Action]:
        if event.turn_id != self.active_turn:
            return []  # a turn that was interrupted and replaced
        self.active_turn = None
        actions: list[Action] = []
        if self._confirmation is not None:  # the turn ended without waiting for the answer
            actions.append(Answer(self._confirmation.request_id, False, "turn_over"))
            self._confirmation = None
        self._open_window(event.at)
        return actions

    def _open_window(self, at: float) -> None:
        self._opened_at = at
        self._window_s = self.settings.follow_up_s
        self._window = self.settings.follow_up_s > 0 and not self.matcher.always_addressed
        self._set(State.LISTENING if self._window else State.IDLE)

    def _in_window(self, start: float) -> bool:
        """Whether speech that began at ``start`` falls in the open listening window."""
        return self._window and (self._playing or start <= self.listening_until())

    def _confirmation_requested(self, event: ConfirmationRequested) -> list[Action]:
        actions: list[Action] = []
        if self._confirmation is not None:
            actions.append(Answer(self._confirmation.request_id, False, "superseded"))
        self._confirmation = _Confirmation(
            event.request_id,
            event.question,
            deadline=event.at + self.settings.confirm_timeout_s + QUESTION_GRACE_S,
        )
        self._set(State.CONFIRMING)
        actions.append(Ask(event.request_id, event.question))
        return actions

    def _tick(self, now: float) -> list[Action]:
        self._forget_old(now)
        if self.state is State.LISTENING and not self._playing and now > self.listening_until():
            self._set(State.IDLE)
        confirmation = self._confirmation
        if (
            self.state is State.CONFIRMING
            and confirmation is not None
            and not self._playing
            and now > confirmation.deadline
        ):
            self._confirmation = None
            self._set(State.THINKING)
            return [Answer(confirmation.request_id, False, "timeout")]
        return []

    # -- utterances ------------------------------------------------------------------------

    def _heard(self, heard: Heard) -> list[Action]:
        # A confirmation that timed out before this was transcribed is answered first.
        timed_out = self._tick(heard.at)
        return timed_out + self._classify(heard)

    def _wake_word(self, event: WakeWordDetected) -> list[Action]:
        actions = self._tick(event.at)
        settings = self.settings
        if not self.uses_model or event.model not in (settings.model, settings.stop_model):
            return actions
        if self.active_turn is not None or self._confirmation is not None:
            # The stop word: no transcription in the loop, playback stops now.
            if self._confirmation is not None:
                actions.append(Answer(self._confirmation.request_id, False, "stopped"))
                self._confirmation = None
            if self.active_turn is not None:
                actions.append(Interrupt(self.active_turn, None, event))
                self.active_turn = None
            self._stopped_by = event.at
            self._open_window(event.at)
        elif event.model == settings.model:
            self._open_ears(event.at)  # the request may come in this utterance or the next
        return actions

    def _wake_of(self, heard: Heard, text: str) -> WakeMatch | None:
        """The wake phrase of ``heard``: in its text (text engine) or its detection (model)."""
        if not self.uses_model:
            return self.matcher.match(text)
        if heard.wake is None:
            return None
        # The audio was cut after the phrase; strip what may be left of it in the text.
        match = self.matcher.match(text)
        rest = match.rest if match is not None else text
        return WakeMatch(phrase=heard.wake, heard="", rest=rest, distance=0)

    def _classify(self, heard: Heard) -> list[Action]:
        text = heard.text.strip()
        wake = self._wake_of(heard, text)
        if not words(text) and wake is None:
            return [Ignore(heard, "empty")]
        stopped = heard.wake_at is not None and heard.wake_at == self._stopped_by
        if wake is not None and wake.alone and stopped:
            return [Ignore(heard, "stopped")]  # the stop word, said alone
        overlaps = self.overlaps_playback(heard.start, heard.end)
        if wake is None and overlaps:
            return [Ignore(heard, "during_playback")]
        if self._is_echo(text, wake, overlaps):
            return [Ignore(heard, "echo")]

        if self.state is State.CONFIRMING:
            return self._heard_confirming(heard, wake)
        if self.state in (State.THINKING, State.SPEAKING):
            if wake is None:
                return [Ignore(heard, "busy")]
            return self._barge_in(heard, wake.rest)
        addressed = self.matcher.always_addressed or self._in_window(heard.start)
        if wake is not None:
            if wake.alone:
                return self._acknowledge(heard)
            return [self._start(wake.rest, heard)]
        if addressed:
            return [self._start(text, heard)]
        return [Ignore(heard, "no_wake_phrase")]

    def _is_echo(self, text: str, wake: Any, overlaps: bool) -> bool:
        """Whether ``text`` repeats what the assistant said (see the module docstring)."""
        spoken = self.recently_spoken()
        if not overlaps:
            if len(words(text)) < SHORT_ECHO_WORDS:
                return False
            confirmation = self._confirmation
            answer = wake.rest if wake is not None else text
            if confirmation is not None and parse_yes_no(answer) is not None:
                # Only a late echo of the question itself ("... Say yes or no.") is no answer.
                spoken = [confirmation.question]
        return is_echo(text, spoken)

    def _heard_confirming(self, heard: Heard, wake: Any) -> list[Action]:
        confirmation = self._confirmation
        assert confirmation is not None
        answer_text = wake.rest if wake is not None else heard.text
        answer = parse_yes_no(answer_text)
        if answer is None:
            if wake is not None and not wake.alone:
                # "Computer, what's the weather" instead of an answer: a new request.
                return self._barge_in(heard, wake.rest)
            return [Ignore(heard, "unclear_answer")]
        self._confirmation = None
        self._set(State.THINKING)
        return [Answer(confirmation.request_id, answer, "yes" if answer else "no")]

    def _barge_in(self, heard: Heard, rest: str) -> list[Action]:
        actions: list[Action] = []
        if self._confirmation is not None:
            actions.append(Answer(self._confirmation.request_id, False, "interrupted"))
            self._confirmation = None
        if self.active_turn is not None:
            actions.append(Interrupt(self.active_turn, heard))
            self.active_turn = None
        if words(rest):
            actions.append(self._start(rest, heard))
        else:
            actions.extend(self._acknowledge(heard))
        return actions

    def _acknowledge(self, heard: Heard) -> list[Action]:
        self._open_ears(heard.at)
        return [Acknowledge(self.settings.acknowledgement, heard)]

    def _open_ears(self, at: float) -> None:
        """Listen without a wake phrase from ``at`` on (an acknowledged window)."""
        self._opened_at = at
        self._window_s = max(self.settings.follow_up_s, ACKNOWLEDGED_WINDOW_S)
        self._window = True
        self._set(State.LISTENING)

    def _start(self, text: str, heard: Heard) -> StartTurn:
        turn_id = self._next_turn
        self._next_turn += 1
        self.active_turn = turn_id
        self._window = False
        self._set(State.THINKING)
        return StartTurn(turn_id, text, heard)


def wake_model_phrase(model: str) -> str:
    """The phrase of a bundled wake-word model, from its name ("hey_jarvis" -> "hey jarvis")."""
    return model.replace("_", " ").replace("-", " ")


def _matcher(settings: WakeSettings) -> WakeMatcher:
    if settings.engine == "model":
        # Only to strip what is left of the phrase after the audio was cut at the detection.
        return WakeMatcher([wake_model_phrase(settings.model)], settings.fuzziness)
    return WakeMatcher(settings.phrases, settings.fuzziness)
