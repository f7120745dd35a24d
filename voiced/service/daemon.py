"""The hands-free loop behind ``voiced run``.

Threads, so that heavy work never blocks capture::

    capture  -- PortAudio blocks -> Segmenter -> utterance queue (bounded)
    stt      -- utterance queue -> SpeechToText -> Heard events
    turn     -- turn queue -> Assistant.ask (streamed) -> sentences -> Speaker (TTS + playback)
    main     -- event queue -> TurnMachine -> actions; speaker state polling; watchdog; signals

With ``wake.engine: model`` the capture thread also runs the wake-word model on every block
and posts each detection at once (the stop word acts on it without waiting for Whisper); it
hands the STT thread only utterances that hold a detection (cut just before the detection,
so the wake phrase is not in the text) or that the turn machine's ears admit (the listening
window, a pending confirmation). Everything else is dropped unheard: a talking TV costs no
Whisper.

All decisions about who is talking to whom live in :class:`voiced.service.turns.TurnMachine`; this
module only measures, moves data between threads and carries out the machine's actions. Each
turn becomes one transcript record (``kind: turn``) with timings in milliseconds from the
moment the segmenter decided the utterance was over.

Faults: a failing Ollama gets a short spoken error and the next turn simply tries again (the
client reconnects per request); a lost input device is retried with backoff by
:func:`voiced.audio.capture.capture_blocks`; an exception in one turn is logged and recorded, and
the loop goes on. SIGTERM/SIGINT finish the sentence being spoken (within a budget) and exit 0;
SIGHUP reloads the configuration and restarts what changed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voiced import config as config_mod
from voiced.brain.assistant import LOADING_SENTENCE
from voiced.config import Settings
from voiced.service.notify import Notifier
from voiced.service.turns import (
    QUESTION_GRACE_S,
    Acknowledge,
    Action,
    Answer,
    Ask,
    ConfirmationRequested,
    Event,
    Heard,
    Ignore,
    Interrupt,
    PlaybackFinished,
    PlaybackStarted,
    StartTurn,
    State,
    Tick,
    TurnFinished,
    TurnMachine,
    WakeWordDetected,
)
from voiced.speech.sentences import SentenceSplitter
from voiced.transcripts import Journal, make_record

log = logging.getLogger(__name__)

# Spoken when a yes/no question got no answer within wake.confirm_timeout_s.
UNANSWERED = "I'll take that as a no."
UTTERANCE_QUEUE = 4
EVENT_QUEUE = 256
TURN_QUEUE = 4
# The main loop wakes this often while a turn, a reply or a follow-up window is going on...
LOOP_S = 0.05
# ...and this often when nothing is (events still wake it at once).
IDLE_LOOP_S = 0.5
# SIGTERM: the sentence being spoken may finish within this budget; then speech is cut.
STOP_SPEECH_BUDGET_S = 1.2
STOP_JOIN_S = 0.4
# At most this long for whisper's warm-up to end before the process does (it is one decode of
# a second of silence in the full window: 1.2-1.6 s on one thread of the 2-core VM).
STT_WARM_UP_JOIN_S = 30.0
CAPTURE_RESTART_S = 5.0
MIC_REOPEN_WAIT_S = 5.0
# A reload that takes longer than this is hung: the watchdog pings stop, systemd restarts us.
RELOAD_WATCHDOG_LIMIT_S = 600.0
STOP_REPORT_WAIT_S = 2.0
# Turn records kept in memory while the disk refuses them (full, read-only).
UNWRITTEN_MAX = 1000
# Split pieces of one utterance are joined up to this length for transcription.
MAX_JOINED_S = 60.0
# An utterance with a wake-word detection is transcribed from this long before the detection.
# The detection comes 0.05-0.15 s after the phrase ends; cutting right at it clipped the first
# word of a request said without a pause ("Hey Jarvis what time" -> "time is it"), 0.15 s
# before it kept every request whole and left nothing of the phrase (Piper speech, 4 models).
WAKE_CUT_BACK_S = 0.15
# The end-of-turn model hears "Hey Jarvis," (a comma pause) as a finished turn: the phrase
# alone was acknowledged and the question, said over the "Yes?", was lost (the fault storm
# lost 1 probe in 10 so). A pause that ends within this long after a wake word is not
# judged; it ends the utterance only after vad.silence_ms, as without the model. The
# detection comes 0.05-0.15 s after the phrase and the pause is vad.turn_pause_ms (240 ms)
# long: 0.5 s covers the phrase alone, while a request of a few words after it ("Hey Jarvis,
# lights off") is still judged by the model and not held for the full silence.
WAKE_PAUSE_S = 0.5
# The reply's first sentence is spoken from its first clause boundary (a comma, semicolon or
# colon followed by a space) at or after this many characters: Piper's time grows with the
# text, and a long first sentence would hold up the first sound (issue 19).
FIRST_CLAUSE_CHARS = 24
SENTENCE_CHARS = 300


@dataclass
class EarlyTranscript:
    """An utterance transcribed in the pause before its endpoint (see ``stt.start_in_pause``).

    The segmenter reports the pause with the exact audio the utterance will have if it ends
    there; the STT thread transcribes it while the endpoint is still being waited for. If
    the utterance does end there, its text is this one; if speech comes back, the work is
    abandoned (and aborted if it is running).
    """

    index: int
    audio_start_s: float
    audio_end_s: float
    audio: Any
    abandoned: threading.Event = field(default_factory=threading.Event)
    gate_windows: list[tuple[int, Any]] = field(default_factory=list)
    wake_s: float | None = None  # stream time of the wake-word detection it was cut at
    text: str | None = None  # set by the STT thread when done
    stt_ms: int = 0
    started_at: float = 0.0  # monotonic
    done_at: float = 0.0

    def is_for(self, ended: Any) -> bool:
        return (ended.index, ended.audio_start_s, ended.audio_end_s) == (
            self.index,
            self.audio_start_s,
            self.audio_end_s,
        )


@dataclass(frozen=True)
class Utterance:
    """What the capture thread knows about one utterance, carried along to the record."""

    audio: Any
    start: float  # monotonic
    end: float
    endpoint_at: float  # monotonic time of the segmenter's decision
    endpoint_wait_ms: int
    started_wall: dt.datetime
    # What ended it: the end-of-turn model, silence, the length limit (the segmenter's reason).
    endpoint: str | None = None
    stt_ms: int = 0  # transcription's own time
    stt_ready_ms: int = 0  # from the endpoint decision until the text was ready
    early: EarlyTranscript | None = None
    # The speech gate's verdict (None without a gate) and its windows, for SpeechToText.
    speech_prob: float | None = None
    gate_windows: list[tuple[int, np.ndarray]] = field(default_factory=list)
    wake: str | None = None  # the wake-word model that fired in it (audio cut after it)
    wake_at: float | None = None  # monotonic time of that detection
    # (capture run, segmenter index) of its last piece: a later utterance may take it back.
    key: tuple[int, int] | None = None


@dataclass
class _TurnJob:
    turn_id: int
    text: str
    utterance: Utterance | None
    cancel: threading.Event = field(default_factory=threading.Event)
    heard: list[str] = field(default_factory=list)  # what was heard of the reply so far
    # Set once a barge-in's stop report is in ``heard`` (the stop wakes the turn up earlier).
    stop_reported: threading.Event = field(default_factory=threading.Event)
    first_audio_at: float | None = None  # the first reply sentence was queued for playback
    first_heard_at: float | None = None  # its first sample left the speaker
    # Taken back: the user went on speaking after the end-of-turn model ended the utterance;
    # nothing of this turn is spoken, recorded or remembered.
    withdrawn: bool = False


class SplitJoiner:
    """Joins the pieces of one long utterance that the segmenter split at its maximum length.

    A request is transcribed whole; otherwise its second half would arrive without the wake
    phrase and be ignored. After a split, speech may go on in a piece that starts at once (the
    split fell inside speech) or after a pause shorter than ``gap_s`` (the split fell in a
    pause); such a piece is joined to the ones before. The utterance is complete when a piece
    ends normally, when no speech followed within ``gap_s``, when the next piece is cancelled
    (a short noisy tail), or when the joined audio reaches ``max_s``.

    :meth:`feed` takes the segmenter's events and its stream time, and returns
    ``(first, last, audio, gate_windows)`` for each complete utterance: its first and last
    ended pieces, the joined audio, and the speech gate's window probabilities of the pieces
    as ``(first sample in audio, probabilities)``.
    """

    def __init__(self, gap_s: float, max_s: float = MAX_JOINED_S) -> None:
        self.gap_s = gap_s
        self.max_s = max_s
        self._pieces: list[Any] = []
        self._continued = False  # the segmenter's current utterance continues the pieces

    @property
    def holding(self) -> bool:
        """Pieces of a split utterance are waiting for the rest."""
        return bool(self._pieces)

    def feed(self, events: list[Any], now_s: float) -> list[tuple[Any, Any, np.ndarray, list]]:
        from voiced.audio.segmenter import UtteranceCancelled, UtteranceEnded, UtteranceStarted

        complete = []
        for event in events:
            if isinstance(event, UtteranceStarted) and self._pieces:
                if event.start_s - self._pieces[-1].end_s <= self.gap_s:
                    self._continued = True
                else:
                    complete.append(self._join())
            elif isinstance(event, UtteranceCancelled) and self._pieces:
                complete.append(self._join())
            elif isinstance(event, UtteranceEnded):
                self._pieces.append(event)
                self._continued = False
                held_s = sum(piece.audio.size for piece in self._pieces) / event.sample_rate
                if event.reason != "max_length" or held_s >= self.max_s:
                    complete.append(self._join())
        if self._pieces and not self._continued and now_s - self._pieces[-1].end_s > self.gap_s:
            complete.append(self._join())
        return complete

    def _join(self) -> tuple[Any, Any, np.ndarray, list]:
        pieces, self._pieces = self._pieces, []
        self._continued = False
        windows, offset = [], 0
        for piece in pieces:
            if piece.window_probs is not None:
                windows.append((offset, piece.window_probs))
            offset += piece.audio.size
        return pieces[0], pieces[-1], np.concatenate([piece.audio for piece in pieces]), windows


class _StreamClock:
    """Maps the capture stream's time (seconds of audio) to ``time.monotonic()``."""

    def __init__(self) -> None:
        self._stream_end = 0.0
        self._arrived = time.monotonic()

    def update(self, block: Any) -> None:
        self._stream_end = block.start_s + block.duration_s
        self._arrived = time.monotonic() - max(0.0, time.time() - block.captured_at)

    def monotonic(self, stream_s: float) -> float:
        return self._arrived - (self._stream_end - stream_s)


def _joined_prob(windows: list[tuple[int, Any]], first: Any) -> float | None:
    """The speech gate's verdict on a (possibly joined) utterance: the best of its pieces."""
    from voiced.audio.speech_gate import summarise

    if not windows:
        return first.speech_prob
    return max(summarise(probs) for _, probs in windows)


def _listener_stt(settings: Settings) -> Any:
    """The daemon's speech-to-text: whisper loaded for utterances, behind the Wyoming server
    of ``stt.server`` when one is set (the local model is the fallback). Its warm-up is
    started by :meth:`Daemon._start_stt_warm_up`."""
    from voiced.speech.remote import remote_stt
    from voiced.speech.stt import SpeechToText, listener_threads

    local = SpeechToText.from_settings(
        settings.stt,
        flash_attention=False,
        vad=settings.vad,
        threads=listener_threads(settings.stt.threads),
    )
    return remote_stt(settings.stt, local)


def wall_time(monotonic_s: float) -> dt.datetime:
    """The local wall-clock time of a ``time.monotonic()`` instant."""
    return dt.datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic_s)).astimezone()


def _shifted(windows: list[tuple[int, Any]], samples: int) -> list[tuple[int, Any]]:
    """Speech gate windows placed on audio that lost ``samples`` from its start."""
    return [(first - samples, probs) for first, probs in windows] if samples else windows


def _ms(later: float | None, earlier: float) -> int | None:
    return None if later is None else max(0, round((later - earlier) * 1000))


class Daemon:
    """Owns the models, devices and threads of ``voiced run``; :meth:`run` blocks."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        journal: Journal | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        # `voiced run`'s options (dotted keys), applied again over the file on each reload.
        self.overrides = dict(overrides or {})
        self.notifier = notifier or Notifier()
        self.journal = journal
        if journal is None and settings.transcripts.enabled:
            self.journal = Journal.from_settings(settings)
        self._unwritten: collections.deque[dict[str, Any]] = collections.deque(maxlen=UNWRITTEN_MAX)
        self._records_lock = threading.Lock()
        # Set when the microphone came back after a loss: reopen the output before speaking.
        self._output_stale = threading.Event()
        self._journal_failing = False
        self.machine = TurnMachine(settings.wake)
        # Utterances starting before this (monotonic) are transcribed without a wake word;
        # the main thread publishes the machine's answer, the capture thread reads it.
        self._ears_until = self.machine.ears_open_until()
        self.stt: Any = None
        self.tts: Any = None
        self.player: Any = None
        self.speaker: Any = None
        self.assistant: Any = None
        self._turn_model: Any = None  # vad.end_of_turn: model
        # Utterances taken back by speech that went on (Utterance.key), and the capture
        # run that numbers them; the capture thread hears when a reply became audible.
        self._withdrawn: set[tuple[int, int]] = set()
        # The utterance (run, index) that the capture thread may still take back, and the
        # acknowledgements waiting for that to be settled.
        self._rejoin_open: tuple[int, int] | None = None
        self._pending_acks: list[tuple[tuple[int, int], str]] = []
        self._capture_runs = itertools.count(1)
        self._reply_heard = threading.Event()
        self._events: queue.Queue[Event] = queue.Queue(EVENT_QUEUE)
        self._utterances: queue.Queue[Utterance | EarlyTranscript | None] = queue.Queue(
            UTTERANCE_QUEUE
        )
        self._turns: queue.Queue[_TurnJob | None] = queue.Queue(TURN_QUEUE)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._stop_capture = threading.Event()
        self._mic_open = threading.Event()
        self._current: _TurnJob | None = None
        self._jobs: dict[int, _TurnJob] = {}  # queued or running turns, by id
        self._current_lock = threading.Lock()
        # Held while a turn checks for its cancel and queues a sentence, and while a barge-in
        # cancels the turn and stops the speaker: no sentence slips in after the stop.
        self._speak_lock = threading.Lock()
        self._confirm_ids = itertools.count(1)
        # request id -> (answered, [(approved, reason)])
        self._confirmations: dict[int, tuple[threading.Event, list[tuple[bool, str]]]] = {}
        self._confirm_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._capture_thread: threading.Thread | None = None
        self._stt_warm_up: threading.Thread | None = None
        self._capture_restart_at = 0.0
        self._ready = False
        self._status = ""

    # -- setup -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the speech models and the assistant (before the microphone opens)."""
        if self.settings.audio.echo_cancel:
            from voiced.audio.echo_cancel import ensure_routed

            ensure_routed()
        self.notifier.status("loading models")
        close_detector(open_detector(self.settings))  # an unknown wake-word model fails here
        self.stt = _listener_stt(self.settings)
        self._start_stt_warm_up(self.stt)  # while the rest loads and the microphone opens
        try:
            self._check_speech_gate(self.settings)
            self._load_turn_model(self.settings)
            self._load_voice(self.settings)
            self._load_assistant(self.settings)
        except BaseException:
            # The process is about to exit: whisper must not be decoding while the
            # interpreter shuts down (that ends in a segfault, not the clear error).
            self._finish_stt_warm_up()
            raise

    def _start_stt_warm_up(self, stt: Any) -> None:
        """Warm whisper up (:meth:`SpeechToText.warm_up`) on a thread of its own.

        The first utterance then skips whisper's buffer set-up, and the daemon does not wait
        for it (1.2-1.6 s for tiny.en on one thread of the 2-core VM) before the rest loads,
        the microphone opens and READY=1 is sent: a transcription that comes sooner waits on
        the engine's lock for the rest of the warm-up, as it would have waited before.
        """

        def warm_up() -> None:
            started = time.monotonic()
            try:
                stt.warm_up()
            except Exception:  # the first utterance pays for the set-up instead
                log.exception("warming up the speech model failed")
            else:
                log.debug("the speech model is warmed up (%.2f s)", time.monotonic() - started)

        thread = threading.Thread(target=warm_up, name="voiced-stt-warm-up", daemon=True)
        thread.start()
        self._stt_warm_up = thread

    def _finish_stt_warm_up(self) -> None:
        """Wait for the warm-up (one decode of a second of silence) before the process ends."""
        if self._stt_warm_up is not None:
            self._stt_warm_up.join(STT_WARM_UP_JOIN_S)

    def _check_speech_gate(self, settings: Settings) -> None:
        """Load the speech gate's model now, so a broken install fails before listening.

        The model goes back to the process's pool, where the capture thread finds it.
        """
        from voiced.audio.segmenter import speech_gate

        gate = speech_gate(settings.vad)
        if gate is not None:
            gate.close()

    def _load_turn_model(self, settings: Settings) -> None:
        """Load the end-of-turn model that ``vad.end_of_turn: model`` needs, or drop it.

        A model that cannot be loaded (pipecat-ai not installed) is said in the log, and turns
        end after ``vad.silence_ms`` of silence: a slower assistant, not a dead service.
        ``voiced doctor`` fails the check and says what to install.
        """
        if settings.vad.end_of_turn != "model":
            self._turn_model = None
        elif self._turn_model is None:
            from voiced.audio.end_of_turn import EndOfTurnError, TurnModel

            try:
                self._turn_model = TurnModel()
            except EndOfTurnError as exc:
                log.warning(
                    "cannot load the end-of-turn model (%s); turns end after %d ms of silence",
                    exc,
                    settings.vad.silence_ms,
                )

    def _load_voice(self, settings: Settings) -> None:
        from voiced.speech.remote import remote_tts
        from voiced.speech.tts import TextToSpeech

        local = TextToSpeech.from_settings(settings.tts)
        local.synthesize("Ready.")  # onnxruntime's first run is slower: not on the first reply
        # With tts.server, sentences are spoken by that Wyoming server; the local voice is the
        # fallback (and sets the player's sample rate).
        self._open_output(remote_tts(settings.tts, local), settings)

    def _open_output(self, tts: Any, settings: Settings) -> None:
        """A fresh player and speaker (the device is opened on the first sentence)."""
        from voiced.audio.playback import Player
        from voiced.speech.speaker import Speaker

        player = Player(
            tts.sample_rate, settings.audio.output_device, on_heard=self._on_sentence_heard
        )
        speaker = Speaker(tts, player, on_sentence=self._on_sentence_playing)
        old_speaker, old_player = self.speaker, self.player
        self.tts, self.player, self.speaker = tts, player, speaker
        if old_speaker is not None:
            old_speaker.close()
            old_player.close()

    def _load_assistant(self, settings: Settings) -> None:
        from voiced.audio.capture import list_devices
        from voiced.brain.assistant import Assistant
        from voiced.brain.tools.policy import build_registry

        # The audio tools share the loaded speech model; the audit log says "daemon".
        registry = build_registry(
            settings,
            confirm=self._confirm,
            source="daemon",
            stt=getattr(self.stt, "local", self.stt),  # files are transcribed here
            audio_devices=list_devices,
        )
        self.assistant = Assistant(settings.llm, registry)
        self.start_warm_up()

    def start_warm_up(self) -> None:
        """Have Ollama load the model now, on a thread that waits until it is in memory."""
        assistant = self.assistant
        threading.Thread(
            target=self._warm_up, args=(assistant,), name="voiced-warm-up", daemon=True
        ).start()

    def _warm_up(self, assistant: Any) -> None:
        model = assistant.settings.model
        log.info(
            "loading the language model %s (Ollama answers nothing until it is in memory; "
            "waiting up to %.0f s)",
            model,
            assistant.settings.load_timeout_s,
        )
        try:
            took = assistant.warm_up()
            log.info("the language model %s is loaded (%.1f s)", model, took)
        except Exception as exc:  # Ollama down: the first turn will say so
            log.warning("could not load the language model %s yet: %s", model, exc)
        self._wake()  # the status line changes

    # -- control from other threads and signal handlers -------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._wake()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake()

    def _wake(self) -> None:
        """Wake the main loop from its idle wait (safe from a signal handler).

        A signal handler runs on the main thread, possibly while it holds the event queue's
        lock inside ``get``; posting from another thread avoids that deadlock.
        """
        event = Tick(time.monotonic())
        threading.Thread(target=self.post, args=(event,), name="voiced-wake", daemon=True).start()

    def post(self, event: Event) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.error("event queue full; dropping %s", type(event).__name__)

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until :meth:`request_stop`; returns the exit status."""
        if self.stt is None:
            self.load()
        self._start_thread(self._stt_loop, "voiced-stt")
        self._start_thread(self._turn_loop, "voiced-turn")
        self._start_capture()
        try:
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _start_thread(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _start_capture(self) -> None:
        self._stop_capture = threading.Event()
        self._capture_thread = threading.Thread(
            target=self._capture_loop,
            args=(self.settings, self._stop_capture),
            name="voiced-capture",
            daemon=True,
        )
        self._capture_thread.start()

    def _main_loop(self) -> None:
        while not self._stop.is_set():
            if self._reload.is_set() and self._idle():
                self._reload.clear()
                self._do_reload()
            try:
                event: Event | None = self._events.get(timeout=self._loop_wait_s())
            except queue.Empty:
                event = None
            if event is not None:
                self._apply(event)
            if self.machine.playing and not self.speaker.speaking:
                end = min(time.monotonic(), self.player.last_sound_end or time.monotonic())
                self._apply(PlaybackFinished(end))
            self._apply(Tick(time.monotonic()))
            self._settle_acknowledgements()
            self._check_capture()
            if not self._ready and self._mic_open.is_set():
                self._ready = True
                self.notifier.ready(self._status_text())
                wake = self.settings.wake
                if wake.engine == "model":
                    log.info("ready: say %r (wake-word model %s)", _phrase(wake.model), wake.model)
                else:
                    log.info("ready: say one of %s", wake.phrases or "anything")
            self._update_status()
            if self.notifier.watchdog_due():
                self.notifier.watchdog()

    def _loop_wait_s(self) -> float:
        quiet = self.machine.state is State.IDLE and not self.machine.playing and self._ready
        if not quiet or self._reload.is_set():
            return LOOP_S
        wait = IDLE_LOOP_S
        if self.notifier.watchdog_interval_s is not None:
            wait = min(wait, self.notifier.watchdog_interval_s / 4)
        return wait

    def _idle(self) -> bool:
        """No turn running or waiting (a reload replaces parts that turns use)."""
        with self._current_lock:
            return not self._jobs and self._current is None

    def _check_capture(self) -> None:
        """Restart the capture thread if something unexpected killed it."""
        thread = self._capture_thread
        if thread is None or thread.is_alive() or self._stop_capture.is_set():
            return
        now = time.monotonic()
        if now < self._capture_restart_at:
            return
        log.warning("the capture thread ended; restarting it")
        self._capture_restart_at = now + CAPTURE_RESTART_S
        self._start_capture()

    def _apply(self, event: Event) -> None:
        try:
            actions = self.machine.handle(event)
        except Exception:
            log.exception("the turn logic failed on %s", type(event).__name__)
            return
        for action in actions:
            try:
                self._act(action)
            except Exception:
                log.exception("carrying out %s failed", type(action).__name__)
        self._ears_until = self.machine.ears_open_until()

    def _act(self, action: Action) -> None:
        if isinstance(action, StartTurn):
            # What people say goes to the transcripts (0600), not to the journal, unless -vv.
            log.info("turn %d starts", action.turn_id)
            log.debug("turn %d: %r", action.turn_id, action.text)
            with self._current_lock:
                # A barged-in turn may still wait on its tool, but it no longer speaks.
                between_turns = all(job.cancel.is_set() for job in self._jobs.values())
            if between_turns:
                self._forget_speech()
            context = action.heard.context
            if context is not None and context.key in self._withdrawn:
                log.info("turn %d withdrawn before it started", action.turn_id)
                self.post(TurnFinished(action.turn_id, time.monotonic()))
                return
            job = _TurnJob(action.turn_id, action.text, context)
            try:
                self._turns.put_nowait(job)
                with self._current_lock:
                    self._jobs[job.turn_id] = job
            except queue.Full:
                log.error("too many turns waiting; dropping %r", action.text)
                self.post(TurnFinished(action.turn_id, time.monotonic()))
        elif isinstance(action, Acknowledge):
            context = action.heard.context
            key = context.key if context is not None else None
            if key is not None and key == self._rejoin_open:
                # "Computer, [pause] what time is it?": the end-of-turn model may end the
                # utterance after the phrase. A "Yes?" now would play over the request and
                # make it a new utterance that overlaps playback; wait until speech can no
                # longer take the phrase back (vad.silence_ms, as without the model).
                log.debug("wake phrase alone: waiting for the pause to settle")
                self._pending_acks.append((key, action.text))
            elif key is None or key not in self._withdrawn:
                log.info("wake phrase alone: acknowledging")
                self.speaker.say(action.text)
        elif isinstance(action, Interrupt):
            self._interrupt(action.turn_id, "stop word" if action.heard is None else "barge-in")
        elif isinstance(action, Ask):
            self.speaker.say(action.question)
        elif isinstance(action, Answer):
            log.info("confirmation %d: %s (%s)", action.request_id, action.approved, action.reason)
            with self._confirm_lock:
                pending = self._confirmations.pop(action.request_id, None)
            if pending is not None:
                if action.reason == "timeout":
                    self.speaker.say(UNANSWERED)  # before the reply the turn goes on to speak
                pending[1].append((action.approved, action.reason))
                pending[0].set()
        elif isinstance(action, Ignore):
            log.info("not for me (%s)", action.reason)
            log.debug("not for me: %r", action.heard.text)

    def _settle_acknowledgements(self) -> None:
        """Speak the acknowledgements whose wake phrase speech did not take back."""
        waiting = []
        for key, text in self._pending_acks:
            if key == self._rejoin_open:  # read before the withdrawals (see _capture_loop)
                waiting.append((key, text))
            elif key in self._withdrawn:
                log.debug("wake phrase alone: the request followed, no acknowledgement")
            else:
                log.info("wake phrase alone: acknowledging")
                self.speaker.say(text)
        self._pending_acks = waiting

    def _withdraw(self, key: tuple[int, int]) -> None:
        """Speech went on after utterance ``key`` was ended by the end-of-turn model: the
        utterance that goes on holds it, so drop every trace of its own turn (called on the
        capture thread; nothing of that turn has been heard yet)."""
        self._withdrawn.add(key)
        with self._current_lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.utterance is not None and job.utterance.key == key
            ]
        for job in jobs:
            with self._speak_lock:
                job.withdrawn = True
                job.cancel.set()
                if job is self._current:
                    self.speaker.stop()
            job.stop_reported.set()
            log.info("turn %d: the user goes on speaking; dropping its reply", job.turn_id)

    def _forget_speech(self) -> None:
        """Stop and forget what was said between turns (an acknowledgement, still playing or
        played to its end), so that the next turn's report holds only its own reply."""
        if self.speaker.speaking:
            self.speaker.stop()
            return
        try:
            self.speaker.wait(timeout=1.0)  # quiet: returns at once, clearing the report
        except Exception as exc:
            log.debug("could not clear the speaker's report: %s", exc)

    def _interrupt(self, turn_id: int, cause: str = "barge-in") -> None:
        with self._current_lock:
            job = self._jobs.get(turn_id)  # running, or still waiting in the queue
        with self._speak_lock:
            if job is not None:
                job.cancel.set()
            report = self.speaker.stop()
        if job is not None:
            if job is self._current:
                job.heard.append(report.text)
            job.stop_reported.set()
        log.info("%s: stopped speaking after %d characters", cause, len(report.text))

    def _status_text(self) -> str:
        text = self.machine.state.value
        if not self._mic_open.is_set():
            text = "waiting for the microphone"
        if self.assistant is not None and getattr(self.assistant, "loading", False):
            text += "; loading the language model"
        return text

    def _update_status(self) -> None:
        status = self._status_text()
        if status != self._status:
            self._status = status
            self.notifier.status(status)

    # -- capture thread ----------------------------------------------------------------------

    def _capture_loop(self, settings: Settings, stop: threading.Event) -> None:
        from voiced.audio.capture import capture_blocks
        from voiced.audio.segmenter import (
            Segmenter,
            SpeechPaused,
            SpeechResumed,
            TurnPause,
            UtteranceCancelled,
            UtteranceEnded,
            UtteranceStarted,
            speech_gate,
        )

        run = next(self._capture_runs)
        gate = speech_gate(settings.vad)  # back to the pool when the loop ends (restarts)
        judging = settings.vad.end_of_turn == "model" and self._turn_model is not None
        segmenter = Segmenter(
            settings.vad,
            report_pauses=settings.stt.start_in_pause,
            gate=gate,
            judge_turns=judging,
        )
        clock = _StreamClock()
        early: EarlyTranscript | None = None
        # vad.end_of_turn: model: pauses are judged on the judge's thread, which hands its
        # verdict to the segmenter at once rather than with the next block (up to 60 ms
        # later): under this lock, which the loop below holds while it handles a block. The
        # thread sleeps while nobody pauses.
        judge = None
        lock = threading.Lock()
        closed = False
        if judging:
            from voiced.audio.end_of_turn import TurnJudge

            def on_verdict(verdict: Any) -> None:
                with lock:
                    if closed:
                        return
                    if verdict.finished and woken_just_before(verdict.audio_end_s):
                        log.debug(
                            "pause %d right after the wake word: waiting for more speech",
                            verdict.index,
                        )
                        return
                    handle(segmenter.verdict(verdict.index, verdict.audio_end_s, verdict.finished))

            judge = TurnJudge(settings.vad.turn_threshold, on_verdict, self._turn_model)
        try:
            detector = open_detector(settings)
        except Exception:  # checked at start-up and on reload: something broke since
            log.exception("cannot load the wake-word model; the microphone stays closed")
            return
        wake_model = settings.wake.model
        # The wake model's recent detections (the stop model's do not count): stream time and
        # the monotonic time posted with them.
        wake_times: collections.deque[tuple[float, float]] = collections.deque(maxlen=32)

        def detection_in(audio_start_s: float, audio_end_s: float) -> tuple[float, float] | None:
            return next((t for t in wake_times if audio_start_s <= t[0] <= audio_end_s), None)

        def cut(audio: np.ndarray, audio_start_s: float, wake_s: float) -> tuple[np.ndarray, int]:
            """The audio from just before the detection (the request without the phrase), and
            how many samples were cut off its start."""
            index = round((wake_s - WAKE_CUT_BACK_S - audio_start_s) * segmenter.sample_rate)
            index = min(max(0, index), audio.size)
            return audio[index:], index

        def woken_just_before(pause_end_s: float) -> bool:
            return any(pause_end_s - WAKE_PAUSE_S <= t <= pause_end_s + 0.5 for t, _ in wake_times)

        def ears_open(audio_start_s: float) -> bool:
            return clock.monotonic(audio_start_s) <= self._ears_until

        lost: list[str] = []

        def on_state(state: str, message: str) -> None:
            if state == "open":
                log.info("microphone: %s", message)
                self._mic_open.set()
                if lost:
                    self._output_stale.set()  # the sound server may have restarted
                lost.clear()
            else:
                self._mic_open.clear()
                lost.append(message)
                if settings.audio.echo_cancel:
                    # A restarted sound server forgets loaded modules: load the pair again.
                    from voiced.audio.echo_cancel import ensure_routed

                    ensure_routed()

        joiner = SplitJoiner(gap_s=settings.vad.silence_ms / 1000)

        def start_early(paused: SpeechPaused) -> EarlyTranscript | None:
            if joiner.holding:  # the text will be that of several pieces joined
                return None
            audio, wake_s, shift = paused.audio, None, 0
            windows = [] if paused.window_probs is None else [(0, paused.window_probs)]
            if detector is not None:
                found = detection_in(paused.audio_start_s, paused.audio_end_s)
                wake_s = found[0] if found is not None else None
                if wake_s is not None:
                    audio, shift = cut(audio, paused.audio_start_s, wake_s)
                elif not ears_open(paused.audio_start_s):
                    return None  # not for the assistant, unless a wake word comes after
            job = EarlyTranscript(
                paused.index,
                paused.audio_start_s,
                paused.audio_end_s,
                audio,
                gate_windows=_shifted(windows, shift),
                wake_s=wake_s,
            )
            try:
                self._utterances.put_nowait(job)
            except queue.Full:  # behind already: no extra work
                return None
            return job

        def wanted(audio_start_s: float, audio_end_s: float) -> bool:
            """Whether the utterance can be for the assistant (otherwise its end does not
            matter, and nobody pays for judging it or for checking its pauses)."""
            if detector is None or ears_open(audio_start_s):
                return True
            return detection_in(audio_start_s, audio_end_s) is not None

        segmenter.pause_wanted = wanted

        def handle(events: list) -> None:
            nonlocal early
            decided = time.monotonic()
            for event in events:
                if isinstance(event, UtteranceStarted) and event.rejoins is not None:
                    self._withdraw((run, event.rejoins))
                if isinstance(event, UtteranceEnded | UtteranceCancelled):
                    log.debug(
                        "%s %d at %.2f-%.2f s: speech_prob %s",
                        "utterance" if isinstance(event, UtteranceEnded) else "ignored sound",
                        event.index,
                        event.start_s,
                        event.end_s,
                        "n/a" if event.speech_prob is None else f"{event.speech_prob:.2f}",
                    )
                if isinstance(event, SpeechPaused | SpeechResumed) and early is not None:
                    early.abandoned.set()
                    early = None
                if isinstance(event, SpeechPaused):
                    early = start_early(event)
                if (
                    isinstance(event, TurnPause)
                    and judge is not None
                    and wanted(event.audio_start_s, event.audio_end_s)
                ):
                    judge.judge(event.index, event.audio_end_s, event.audio)
            # After any withdrawal above: whoever sees the window closed sees the withdrawal.
            rejoin = segmenter.rejoin_open
            self._rejoin_open = None if rejoin is None else (run, rejoin)
            for first, last, audio, windows in joiner.feed(events, segmenter.stream_time_s):
                start = clock.monotonic(first.start_s)
                wake_s = wake_at = None
                if detector is not None:
                    found = detection_in(first.audio_start_s, last.audio_end_s)
                    wake_s, wake_at = found if found is not None else (None, None)
                    if wake_s is None and not ears_open(first.audio_start_s):
                        log.info(
                            "no wake word: %.1f s of speech not transcribed",
                            last.end_s - first.start_s,
                        )
                        if early is not None:
                            early.abandoned.set()
                            early = None
                        continue
                    if wake_s is not None and wake_s <= first.audio_end_s:
                        audio, shift = cut(audio, first.audio_start_s, wake_s)
                        windows = _shifted(windows, shift)
                matched = (
                    early
                    if early is not None
                    and first is last
                    and early.is_for(last)
                    and early.wake_s == wake_s
                    else None
                )
                if early is not None and matched is None:
                    early.abandoned.set()
                early = None
                end = clock.monotonic(last.end_s)
                # The silence heard before the decision: the segmenter counts the audio it
                # was fed, but a verdict applied between blocks comes later than that.
                waited = last.endpoint_wait_ms
                if last.reason != "max_length":
                    waited = max(waited, _ms(decided, end) or 0)
                utterance = Utterance(
                    audio=audio,
                    start=start,
                    end=end,
                    endpoint_at=decided,
                    endpoint_wait_ms=waited,
                    started_wall=wall_time(start),
                    endpoint=last.reason,
                    early=matched,
                    speech_prob=_joined_prob(windows, first),
                    gate_windows=windows,
                    wake=wake_model if wake_s is not None else None,
                    wake_at=wake_at,
                    key=(run, last.index),
                )
                try:
                    self._utterances.put_nowait(utterance)
                except queue.Full:
                    log.warning("speech recognition is behind; dropping an utterance")

        def take(block: Any) -> None:
            if block.discontinuity and segmenter.in_utterance:
                handle(segmenter.flush())
            clock.update(block)
            if detector is not None:
                offset = block.start_s - detector.stream_time_s
                for detection in detector.feed(block.samples):
                    wake_s = detection.time_s + offset
                    at = clock.monotonic(wake_s)
                    log.info("wake word %s (p=%.2f)", detection.model, detection.probability)
                    if detection.model == wake_model:
                        wake_times.append((wake_s, at))
                    self.post(WakeWordDetected(detection.model, at, detection.probability))
            if self._reply_heard.is_set():
                self._reply_heard.clear()
                segmenter.forget_rejoin()
            handle(segmenter.feed(block.samples))

        try:
            for block in capture_blocks(settings.audio, stop=stop, on_state=on_state):
                with lock:
                    take(block)
        except Exception:
            log.exception("the capture thread failed")
        finally:
            with lock:
                closed = True
            if judge is not None:
                judge.close()
            self._rejoin_open = None
            self._mic_open.clear()
            if gate is not None:
                gate.close()
            close_detector(detector)

    # -- STT thread --------------------------------------------------------------------------

    def _stt_loop(self) -> None:
        while True:
            item = self._utterances.get()
            if item is None:
                return
            if isinstance(item, EarlyTranscript):
                self._transcribe_early(item)
                continue
            utterance = item
            early = (
                utterance.early if utterance.early and utterance.early.text is not None else None
            )
            if early is not None:
                text, stt_ms, ready = early.text or "", early.stt_ms, early.done_at
            else:
                try:
                    began = time.perf_counter()
                    text = self.stt.transcribe(
                        utterance.audio, gate_windows=utterance.gate_windows
                    ).text.strip()
                    stt_ms = round((time.perf_counter() - began) * 1000)
                except Exception:
                    log.exception("speech recognition failed on one utterance")
                    continue
                ready = time.monotonic()
            if not text and utterance.wake is None:
                log.debug("no words in %.1f s of sound", utterance.end - utterance.start)
                continue
            log.info(
                "heard %s%d words (%d ms to transcribe%s)",
                "the wake word and " if utterance.wake else "",
                len(text.split()),
                stt_ms,
                ", in the pause" if early is not None else "",
            )
            log.debug("heard: %r", text)
            if utterance.key in self._withdrawn:
                log.info("speech went on after this utterance: not a turn of its own")
                continue
            context = dataclasses.replace(
                utterance, stt_ms=stt_ms, stt_ready_ms=_ms(ready, utterance.endpoint_at) or 0
            )
            self.post(
                Heard(
                    text,
                    utterance.start,
                    utterance.end,
                    time.monotonic(),
                    context,
                    wake=utterance.wake,
                    wake_at=utterance.wake_at,
                )
            )

    def _transcribe_early(self, job: EarlyTranscript) -> None:
        from voiced.speech.stt import TranscriptionAborted

        if job.abandoned.is_set():
            return
        began = time.perf_counter()
        job.started_at = time.monotonic()
        try:
            text = self.stt.transcribe(
                job.audio, abort=job.abandoned.is_set, gate_windows=job.gate_windows
            ).text.strip()
        except TranscriptionAborted:
            log.debug("speech went on; dropped the transcription started in the pause")
            return
        except Exception:
            log.exception("speech recognition failed in a pause")
            return
        job.stt_ms = round((time.perf_counter() - began) * 1000)
        job.done_at = time.monotonic()
        job.text = text

    # -- turn thread -------------------------------------------------------------------------

    def _on_sentence_playing(self, sentence: str) -> None:
        now = time.monotonic()
        job = self._current
        reply = sentence != LOADING_SENTENCE  # the notice is not the reply's first audio
        if job is not None and job.first_audio_at is None and not job.cancel.is_set() and reply:
            job.first_audio_at = now
        self.post(PlaybackStarted(now, sentence))

    def _on_sentence_heard(self, sentence: str, at: float) -> None:
        """From the audio callback: the first sample of ``sentence`` leaves the speaker at
        ``at`` (monotonic)."""
        self._reply_heard.set()  # speech that goes on from now on is a new utterance
        job = self._current
        reply = sentence != LOADING_SENTENCE
        if job is not None and job.first_heard_at is None and not job.cancel.is_set() and reply:
            job.first_heard_at = at

    def _turn_loop(self) -> None:
        while True:
            job = self._turns.get()
            if job is None:
                return
            with self._current_lock:
                self._current = job
            try:
                if job.cancel.is_set():
                    log.info("turn %d was cancelled before it started", job.turn_id)
                else:
                    self._run_turn(job)
            except Exception:
                log.exception("turn %d failed", job.turn_id)
            finally:
                with self._current_lock:
                    self._current = None
                    self._jobs.pop(job.turn_id, None)
                self.post(TurnFinished(job.turn_id, time.monotonic()))

    def _run_turn(self, job: _TurnJob) -> None:
        utterance = job.utterance
        reference = utterance.endpoint_at if utterance else time.monotonic()
        splitter = SentenceSplitter(max_chars=FIRST_CLAUSE_CHARS)
        marks: dict[str, float] = {}
        if self._output_stale.is_set() and self.tts is not None:
            # The sound server went away and came back since the last reply: the player's
            # stream belongs to the old one, and its first sentence would be lost.
            self._output_stale.clear()
            log.info("the sound server came back: reopening the output device")
            try:
                self._open_output(self.tts, self.settings)
            except Exception as exc:
                log.error("the output device cannot be reopened yet: %s", exc)
        speaker = self.speaker

        def say(text: str, *, sentence: bool = True) -> None:
            with self._speak_lock:
                if job.cancel.is_set():
                    return
                if sentence:
                    marks.setdefault("first_sentence", time.monotonic())
                speaker.say(text)

        def on_text(piece: str) -> None:
            if job.cancel.is_set():
                return
            marks.setdefault("first_token", time.monotonic())
            for sentence in splitter.feed(piece):
                splitter.max_chars = SENTENCE_CHARS  # only the first is cut at a clause
                say(sentence)

        def say_what_was_given() -> None:
            for sentence in splitter.flush():
                say(sentence)

        result = None
        error: str | None = None
        try:
            result = self.assistant.ask(
                job.text,
                on_text,
                cancel=job.cancel,
                on_tools=say_what_was_given,
                # A turn while the model loads waits for that load; after a while, say so.
                on_loading=lambda: say(LOADING_SENTENCE, sentence=False),
            )
            say_what_was_given()
            if result.error_message:
                say(result.error_message, sentence=False)
            if result.error is not None:
                error = f"{result.error.value}: {result.error_message}"
        except Exception as exc:
            log.exception("turn %d failed", job.turn_id)
            error = f"internal: {type(exc).__name__}: {exc}"
            say("Something went wrong on my side. Please try again.", sentence=False)
        try:
            # A cancelled turn's heard part is the barge-in's stop report; waiting here would
            # also wait for (and take in) what is said next, such as the acknowledgement.
            if not job.cancel.is_set():
                report = speaker.wait()
                if not job.cancel.is_set():
                    job.heard.append(report.text)
        except Exception as exc:
            log.error("could not speak the reply: %s; reopening the output device", exc)
            error = error or f"speech: {exc}"
            try:
                self._open_output(self.tts, self.settings)
            except Exception as reopen_error:
                log.error("the output device cannot be reopened yet: %s", reopen_error)
        ended = time.monotonic()
        if job.withdrawn:
            self.assistant.forget_last_turn(job.text)
            log.info("turn %d withdrawn: the user went on speaking", job.turn_id)
            return
        interrupted = job.cancel.is_set()
        if interrupted:
            job.stop_reported.wait(STOP_REPORT_WAIT_S)
        spoken = " ".join(part for part in job.heard if part).strip()
        if interrupted:
            self.assistant.clip_last_reply(spoken.replace(LOADING_SENTENCE, "").strip())
        self._record(job, result, spoken, error, interrupted, marks, reference, ended)

    def _record(
        self,
        job: _TurnJob,
        result: Any,
        spoken: str,
        error: str | None,
        interrupted: bool,
        marks: dict[str, float],
        reference: float,
        ended: float,
    ) -> None:
        utterance = job.utterance
        timings = {
            "endpoint_wait_ms": utterance.endpoint_wait_ms if utterance else None,
            "stt_ms": utterance.stt_ms if utterance else None,
            "stt_ready_ms": utterance.stt_ready_ms if utterance else None,
            "llm_first_token_ms": _ms(marks.get("first_token"), reference),
            "llm_first_sentence_ms": _ms(marks.get("first_sentence"), reference),
            "first_audio_ms": _ms(job.first_audio_at, reference),
            # What the user feels: from the end of their last speech frame (as the segmenter
            # judged it) to the first sample of the reply leaving the speaker.
            "speech_end_to_first_audio_ms": (
                _ms(job.first_heard_at, utterance.end) if utterance else None
            ),
            "total_ms": _ms(ended, reference),
        }
        tool_calls = [
            {
                "name": call.name,
                "arguments": call.arguments,
                "decision": call.decision,
                "result": call.result,
            }
            for call in (result.tool_calls if result is not None else [])
        ]
        log.info("turn %d timings: %s", job.turn_id, timings)
        if self.journal is None:
            return
        record = make_record(
            "turn",
            job.text,
            start=utterance.started_wall if utterance else None,
            user=job.text,
            assistant=spoken,
            tool_calls=tool_calls,
            error=error,
            interrupted=interrupted,
            timings=timings,
            endpoint=utterance.endpoint if utterance is not None else None,
            speech_prob=(
                round(utterance.speech_prob, 3)
                if utterance is not None and utterance.speech_prob is not None
                else None
            ),
        )
        with self._records_lock:
            if len(self._unwritten) == UNWRITTEN_MAX:
                log.error(
                    "%d transcript records wait for the disk; dropping the oldest", UNWRITTEN_MAX
                )
            self._unwritten.append(record)
            self._write_records()

    def _write_records(self) -> None:
        """Write the records waiting, oldest first; stop at the first the disk refuses.

        A full or read-only disk costs no record: they wait in memory (up to
        :data:`UNWRITTEN_MAX`) and go out with the next record once it takes them.
        """
        journal = self.journal
        while journal is not None and self._unwritten:
            try:
                journal.append(self._unwritten[0])
            except ValueError as exc:  # the record itself cannot be written, ever
                log.error("cannot write a transcript record: %s", exc)
            except OSError as exc:
                if not self._journal_failing:
                    log.error(
                        "cannot write the transcript (%s); keeping the records in memory "
                        "until the disk takes them",
                        exc,
                    )
                self._journal_failing = True
                return
            self._unwritten.popleft()
        if self._journal_failing and not self._unwritten:
            log.warning("the transcript is written again")
            self._journal_failing = False

    # -- confirmation (called on the turn thread, inside a tool call) -----------------------

    def _confirm(self, request: Any) -> bool:
        """The spoken answer to ``request``; raises ConfirmationUnanswered when none came."""
        from voiced.brain.tools.registry import ConfirmationUnanswered

        if self._stop.is_set():
            return False
        job = self._current
        request_id = next(self._confirm_ids)
        done = threading.Event()
        answer: list[tuple[bool, str]] = []
        with self._confirm_lock:
            self._confirmations[request_id] = (done, answer)
        self.post(ConfirmationRequested(request_id, request.question, time.monotonic()))
        limit = time.monotonic() + self.settings.wake.confirm_timeout_s + QUESTION_GRACE_S + 30
        while not done.wait(0.1):
            cancelled = job is not None and job.cancel.is_set()
            if self._stop.is_set() or cancelled or time.monotonic() > limit:
                with self._confirm_lock:
                    self._confirmations.pop(request_id, None)
                return False
        approved, reason = answer[0]
        if reason == "timeout":
            raise ConfirmationUnanswered(
                f"no answer within {self.settings.wake.confirm_timeout_s:g} s of the question"
            )
        return approved

    # -- reload and shutdown -----------------------------------------------------------------

    def _do_reload(self) -> None:
        self.notifier.reloading()
        try:
            settings = config_mod.load(self.config_path, self.overrides)
        except config_mod.ConfigError as exc:
            log.error("not reloading: %s", exc)
            self.notifier.ready(f"{self._status_text()} (reload failed)")
            return
        old = self.settings
        self.settings = settings
        if settings.logging != old.logging:  # first, so that the reload logs at the new level
            logging.getLogger().setLevel(settings.logging.level)
        changed = [
            name
            for name in type(settings).model_fields
            if getattr(old, name) != getattr(settings, name)
        ]
        log.info("reloaded the configuration; changed: %s", ", ".join(changed) or "nothing")
        try:
            with self._watchdog_kept_alive():
                self._apply_settings(settings, changed)
        except Exception:
            log.exception("applying the new configuration failed; some parts keep the old one")
        self.notifier.ready(self._status_text())

    @contextlib.contextmanager
    def _watchdog_kept_alive(self) -> Iterator[None]:
        """Send WATCHDOG=1 from a helper thread while the main loop is busy (loading models
        on a reload can take longer than WatchdogSec)."""
        interval = self.notifier.watchdog_interval_s
        if interval is None or not self.notifier.enabled:
            yield
            return
        done = threading.Event()
        give_up_at = time.monotonic() + RELOAD_WATCHDOG_LIMIT_S

        def ping() -> None:
            while not done.wait(interval):
                if time.monotonic() > give_up_at:
                    log.error("the reload has not finished after %.0f s", RELOAD_WATCHDOG_LIMIT_S)
                    return  # let the service manager's watchdog restart a hung daemon
                self.notifier.watchdog()

        thread = threading.Thread(target=ping, name="voiced-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(1.0)

    def _apply_settings(self, settings: Settings, changed: list[str]) -> None:
        """Restart the parts whose settings ``changed`` (section names)."""
        restart_capture = False
        if "wake" in changed:
            old = self.machine.settings
            try:
                close_detector(open_detector(settings))
            except Exception as exc:
                log.error("keeping the old wake settings: %s", exc)
                settings = settings.model_copy(update={"wake": old})
                self.settings = settings
            else:
                self.machine.reconfigure(settings.wake)
                self._ears_until = self.machine.ears_open_until()
                restart_capture = _detector_settings(old) != _detector_settings(settings.wake)
        if "stt" in changed:
            self.stt = _listener_stt(settings)
            self._start_stt_warm_up(self.stt)
        elif "vad" in changed and self.stt is not None:
            self.stt.vad = settings.vad
        if "vad" in changed:
            self._check_speech_gate(settings)
            self._load_turn_model(settings)
        if "tts" in changed or "audio" in changed:
            self._load_voice(settings)
        if {"llm", "tools"} & set(changed):
            self._load_assistant(settings)
        if "transcripts" in changed:
            self.journal = Journal.from_settings(settings) if settings.transcripts.enabled else None
        if {"audio", "vad"} & set(changed) or restart_capture:
            self._stop_capture.set()
            if self._capture_thread is not None:
                self._capture_thread.join(2.0)
            self._start_capture()
            # READY=1 follows once the microphone is open again (its process takes a moment
            # to start): speech said after `systemctl reload` returns is heard whole.
            if not self._mic_open.wait(MIC_REOPEN_WAIT_S):
                log.warning("the microphone did not reopen within %.0f s", MIC_REOPEN_WAIT_S)

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping")
        log.info("stopping")
        self._stop_capture.set()
        job = self._current
        if job is not None:
            job.cancel.set()
            job.stop_reported.set()
        with self._confirm_lock:
            for done, _ in self._confirmations.values():
                done.set()
        if self.player is not None and self.speaker is not None:
            # Finish the sentence being spoken, within the budget; drop the rest.
            deadline = time.monotonic() + STOP_SPEECH_BUDGET_S
            left = self.player.current_sentence_left_s()
            if left > 0:
                time.sleep(max(0.0, min(left, deadline - time.monotonic())))
            self.speaker.stop()
        for q in (self._utterances, self._turns):
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
        join_until = time.monotonic() + STOP_JOIN_S
        for thread in [*self._threads, self._capture_thread]:
            if thread is not None:
                thread.join(max(0.0, join_until - time.monotonic()))
        self._finish_stt_warm_up()  # over seconds after a start, unless stopped at once
        if self.player is not None:
            self.player.close()
        with self._records_lock:
            self._write_records()
            if self._unwritten:
                log.error(
                    "%d transcript records are lost: the disk never took them", len(self._unwritten)
                )
        self.notifier.close()


def _phrase(model: str) -> str:
    from voiced.service.turns import wake_model_phrase

    return wake_model_phrase(model).title()


def _detector_settings(wake: Any) -> tuple:
    return (wake.engine, wake.model, wake.stop_model, wake.threshold, wake.refractory_s)


def open_detector(settings: Settings) -> Any:
    """The wake-word detector ``settings.wake`` asks for (None with the text engine).

    Raises :class:`voiced.audio.wakeword.WakeWordError` for a model that cannot be loaded.
    """
    wake = settings.wake
    if wake.engine != "model":
        return None
    from voiced.audio.wakeword import WakeWordDetector

    models = [wake.model] + ([wake.stop_model] if wake.stop_model else [])
    thresholds = {wake.model: wake.threshold} if wake.threshold is not None else None
    return WakeWordDetector(models, thresholds=thresholds, refractory_s=wake.refractory_s)


def close_detector(detector: Any) -> None:
    if detector is not None:
        detector.close()
