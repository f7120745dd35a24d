"""The speaker: a streamed reply's text in, its sentences heard one by one.

text pieces -> :class:`SentenceSplitter` -> :func:`speakable` -> Piper on a worker thread ->
:class:`~voiced.audio.playback.Player`, so the first sentence plays while later text is still
arriving and being synthesised.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from voiced.audio.playback import Player, SpokenReport
from voiced.speech.sentences import SentenceSplitter, speakable

if TYPE_CHECKING:
    from voiced.speech.tts import TextToSpeech

log = logging.getLogger(__name__)

# Piper starts every sentence with 40-60 ms of near silence; played as is, it delays the
# first sound of a reply by that much. Frames of 5 ms quieter than this are cut from the
# front, keeping LEAD_KEEP_MS before the first louder one.
LEAD_FLOOR_DBFS = -50.0
LEAD_KEEP_MS = 10


def trim_lead(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` without its leading near-silence (see :data:`LEAD_FLOOR_DBFS`)."""
    frame = max(1, sample_rate // 200)
    whole = audio[: audio.size // frame * frame].reshape(-1, frame)
    if not whole.size:
        return audio
    power = np.mean(np.square(whole, dtype=np.float64), axis=1)
    loud = np.flatnonzero(power > 10 ** (LEAD_FLOOR_DBFS / 10))
    if not loud.size:
        return audio
    start = max(0, loud[0] * frame - sample_rate * LEAD_KEEP_MS // 1000)
    return audio[start:]


class Speaker:
    """Speaks text as it arrives: sentences are synthesised on a worker thread and queued.

    Use :meth:`feed` for each piece of a streamed reply and :meth:`finish` at its end, then
    :meth:`wait` for it to be heard; or :meth:`stop` to interrupt. Both return a
    :class:`SpokenReport`. A speaker can be reused for the next reply.

    ``on_sentence`` is called from the worker thread with each sentence as soon as its audio
    has been queued on the player (when the player is idle, it is heard one output latency
    later).
    """

    def __init__(
        self,
        tts: TextToSpeech,
        player: Player,
        *,
        max_sentence_chars: int = 300,
        on_sentence: Callable[[str], None] | None = None,
    ) -> None:
        self.tts = tts
        self.player = player
        self._splitter = SentenceSplitter(max_sentence_chars)
        self._on_sentence = on_sentence
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: collections.deque[str] = collections.deque()  # not yet queued for playback
        self._all_queued = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._silence = tts.silence()
        self._worker = threading.Thread(target=self._work, name="voiced-tts", daemon=True)
        self._worker.start()

    @property
    def speaking(self) -> bool:
        """Whether a sentence is waiting for synthesis or audio is playing."""
        with self._lock:
            pending = bool(self._pending)
        return pending or self.player.speaking

    @property
    def last_sound_end(self) -> float:
        """``time.monotonic()`` at which the last sound queued so far leaves the speaker."""
        return self.player.last_sound_end

    def feed(self, piece: str) -> None:
        """Add a piece of the reply; complete sentences start being synthesised at once."""
        for sentence in self._splitter.feed(piece):
            self._submit(sentence)

    def finish(self) -> None:
        """The reply is complete: speak whatever text is left."""
        for sentence in self._splitter.flush():
            self._submit(sentence)

    def say(self, text: str) -> None:
        """Queue a whole text (``feed`` + ``finish``)."""
        self.feed(text)
        self.finish()

    def _submit(self, sentence: str) -> None:
        with self._lock:
            self._pending.append(sentence)
            generation = self._generation
        self._queue.put((generation, sentence))

    def wait(self, timeout: float | None = None) -> SpokenReport:
        """Finish the reply and wait until all of it has been heard."""
        self.finish()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._all_queued:
            while self._pending and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("speech synthesis did not finish in time")
                self._all_queued.wait(left)
            error, self._error = self._error, None
        if error is not None:
            self.stop()
            raise error
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.player.wait(left)

    def stop(self) -> SpokenReport:
        """Interrupt: silence now, drop all queued and unsynthesised text, report what was heard."""
        with self._lock:
            self._generation += 1
            pending, self._pending = list(self._pending), collections.deque()
            self._all_queued.notify_all()
        report = self.player.stop()
        unsent = self._splitter.flush()
        report.unspoken += pending + unsent
        report.interrupted = report.interrupted or bool(pending or unsent)
        return report

    def close(self) -> None:
        """Stop speaking and end the worker thread (the player is left to its owner)."""
        self.stop()
        self._queue.put(None)
        self._worker.join(5)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            generation, sentence = job
            if generation != self._generation:
                continue
            queued = False
            try:
                text = speakable(sentence)
                began = time.perf_counter()
                pieces = list(self.tts.sentences(text)) if text else []
                if pieces:
                    pieces[0] = trim_lead(pieces[0], self.tts.sample_rate)
                log.debug(
                    "synthesised %d characters in %.0f ms",
                    len(text),
                    (time.perf_counter() - began) * 1000,
                )
                # Text with nothing to say (a code block) is still queued, as empty audio, so
                # that the report keeps the reply's sentences in order.
                audio = np.concatenate([*pieces, self._silence]) if pieces else self._silence[:0]
                with self._lock:
                    if generation != self._generation:
                        continue  # interrupted while this sentence was synthesised
                    # Queued and taken off the pending list in one step: stop() sees it once.
                    self.player.play(audio, sentence)
                    self._pending.popleft()
                    queued = True
                    self._all_queued.notify_all()
                if self._on_sentence is not None:
                    self._on_sentence(sentence)
            except Exception as exc:  # handed to the caller of wait()
                log.debug("speech failed", exc_info=True)
                with self._lock:
                    self._error = exc
                    if not queued and generation == self._generation and self._pending:
                        self._pending.popleft()
                    self._all_queued.notify_all()
