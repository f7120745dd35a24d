"""Speech engines on another machine, over Wyoming (``stt.server``, ``tts.server``).

A small machine running ``voiced run`` keeps the microphone, the speech gate and the wake
word local, and sends each utterance to a Wyoming ASR server and each sentence to a Wyoming
TTS server: another machine's ``voiced serve``, or any other Wyoming server
(wyoming-faster-whisper, wyoming-piper). The events and their framing are PyPI ``wyoming``'s;
audio is converted with its :class:`AudioChunkConverter`.

:class:`RemoteSpeechToText` and :class:`RemoteTextToSpeech` stand in for the local engines
(same methods) and hold the local engine as their fallback: when the server cannot be
reached, times out, hangs up mid-request or answers with an error, the request is done
locally and a warning says why, and the server is left alone for :data:`RETRY_AFTER_S`
(a dead host does not cost every utterance a connect timeout).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, read_event, write_event
from wyoming.tts import Synthesize

from voiced.decode import SAMPLE_RATE, to_int16
from voiced.speech.stt import Segment, Transcription, TranscriptionAborted
from voiced.speech.tts import join_sentences

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
# After a failure, the server is tried again only after this long.
RETRY_AFTER_S = 30.0
_CHUNK_SAMPLES = 1600  # 100 ms at 16 kHz


class RemoteError(Exception):
    """The server could not be used for one request; the message says why."""


class _Server:
    """One Wyoming server's address, and whether it is believed down."""

    def __init__(self, uri: str, what: str) -> None:
        parsed = urlparse(uri)
        if parsed.scheme not in ("tcp", "unix") or (
            parsed.scheme == "tcp" and (not parsed.hostname or parsed.port is None)
        ):
            raise ValueError(f"{what} server {uri!r}: use tcp://HOST:PORT or unix://PATH")
        self.uri = uri
        self.what = what
        self._parsed = parsed
        self._down_until = 0.0
        self._lock = threading.Lock()

    def available(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._down_until

    def failed(self, reason: str) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER_S
        log.warning(
            "%s server %s: %s; working locally (trying it again in %.0f s)",
            self.what,
            self.uri,
            reason,
            RETRY_AFTER_S,
        )

    def request(self, events: list[Event], until: Callable[[Event], bool]) -> list[Event]:
        """Send ``events`` on a fresh connection; return what comes back up to ``until``."""
        try:
            with self._connect() as sock, sock.makefile("rwb") as stream:
                for event in events:
                    write_event(event, stream)
                stream.flush()
                answers = []
                while True:
                    event = read_event(stream)
                    if event is None:
                        raise RemoteError("it hung up before answering")
                    if Error.is_type(event.type):
                        raise RemoteError(f"it answered: {Error.from_event(event).text}")
                    answers.append(event)
                    if until(event):
                        return answers
        except TimeoutError:
            raise RemoteError("no answer in time") from None
        except (BrokenPipeError, ConnectionResetError):
            raise RemoteError("it hung up mid-request") from None
        except OSError as exc:
            raise RemoteError(exc.strerror or str(exc)) from None

    def _connect(self) -> socket.socket:
        parsed = self._parsed
        if parsed.scheme == "tcp":
            sock = socket.create_connection((parsed.hostname, parsed.port), CONNECT_TIMEOUT_S)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect(parsed.path)
            except OSError:
                sock.close()
                raise
        sock.settimeout(READ_TIMEOUT_S)
        return sock


class RemoteSpeechToText:
    """Transcribes on a Wyoming ASR server; ``local`` (a SpeechToText) when it cannot."""

    def __init__(self, uri: str, local: Any, language: str = "en") -> None:
        self.server = _Server(uri, "speech-to-text")
        self.local = local
        self.language = language
        self.model_name = f"{uri}"

    @property
    def vad(self) -> Any:
        return self.local.vad

    @vad.setter
    def vad(self, value: Any) -> None:
        self.local.vad = value

    def warm_up(self) -> None:
        self.local.warm_up()

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        on_progress: Callable[[float], None] | None = None,
        abort: Callable[[], bool] | None = None,
        gate_windows: list[tuple[int, np.ndarray]] | None = None,
        language: str | None = None,
    ) -> Transcription:
        """As :meth:`SpeechToText.transcribe`, on the server when it is there."""
        if self.server.available():
            try:
                return self._remote(audio, language or self.language, abort)
            except RemoteError as exc:
                self.server.failed(str(exc))
        return self.local.transcribe(
            audio,
            on_progress=on_progress,
            abort=abort,
            gate_windows=gate_windows,
            language=language,
        )

    def _remote(
        self, audio: np.ndarray, language: str, abort: Callable[[], bool] | None
    ) -> Transcription:
        pcm = to_int16(np.asarray(audio, dtype=np.float32)).astype("<i2").tobytes()
        events = [
            Transcribe(language=language).event(),
            AudioStart(rate=SAMPLE_RATE, width=2, channels=1).event(),
        ]
        step = _CHUNK_SAMPLES * 2
        for start in range(0, len(pcm), step):
            piece = pcm[start : start + step]
            events.append(AudioChunk(rate=SAMPLE_RATE, width=2, channels=1, audio=piece).event())
        events.append(AudioStop().event())
        answers = self.server.request(events, lambda event: Transcript.is_type(event.type))
        if abort is not None and abort():
            raise TranscriptionAborted("transcription aborted")
        transcript = Transcript.from_event(answers[-1])
        text = transcript.text.strip()
        duration = audio.size / SAMPLE_RATE
        segments = (Segment(0.0, duration, text),) if text else ()
        return Transcription(
            segments, duration, transcript.language or language, self.model_name, duration
        )


class RemoteTextToSpeech:
    """Speaks on a Wyoming TTS server; ``local`` (a TextToSpeech) when it cannot.

    Audio comes back at the local voice's sample rate (converted if the server's differs),
    so the player opened for the local voice plays either.
    """

    def __init__(self, uri: str, local: Any) -> None:
        self.server = _Server(uri, "text-to-speech")
        self.local = local
        self.settings = local.settings
        self.sample_rate: int = local.sample_rate
        self.name = f"{uri}"

    def silence(self) -> np.ndarray:
        return self.local.silence()

    def sentences(self, text: str) -> Iterator[np.ndarray]:
        """``text`` as float32 audio: one array (the speaker hands over one sentence at a time)."""
        if not text.strip():
            return
        if self.server.available():
            try:
                yield self._remote(text)
                return
            except RemoteError as exc:
                self.server.failed(str(exc))
        yield from self.local.sentences(text)

    def synthesize(self, text: str) -> np.ndarray:
        return join_sentences(list(self.sentences(text)), self.silence())

    def _remote(self, text: str) -> np.ndarray:
        answers = self.server.request(
            [Synthesize(text=text).event()], lambda event: AudioStop.is_type(event.type)
        )
        converter = AudioChunkConverter(rate=self.sample_rate, width=2, channels=1)
        pcm = b"".join(
            converter.convert(AudioChunk.from_event(event)).audio
            for event in answers
            if AudioChunk.is_type(event.type)
        )
        if not pcm:
            raise RemoteError("it sent no audio")
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def describe(uri: str, what: str) -> Any:
    """The server's ``info`` (a :class:`wyoming.info.Info`); RemoteError when it cannot."""
    from wyoming.info import Describe, Info

    answers = _Server(uri, what).request(
        [Describe().event()], lambda event: Info.is_type(event.type)
    )
    return Info.from_event(answers[-1])


def remote_stt(settings: Any, local: Any) -> Any:
    """``local`` behind ``stt.server`` when one is set, else ``local`` itself."""
    if not settings.server:
        return local
    return RemoteSpeechToText(settings.server, local, settings.language)


def remote_tts(settings: Any, local: Any) -> Any:
    """``local`` behind ``tts.server`` when one is set, else ``local`` itself."""
    if not settings.server:
        return local
    return RemoteTextToSpeech(settings.server, local)
