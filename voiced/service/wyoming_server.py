"""``voiced serve``: this install's ears, voice and brain over Wyoming, for Home Assistant.

Wyoming is the protocol Home Assistant and its satellites speak to speech services: JSON-line
events, some with a binary payload (audio). All framing, event types and the TCP/Unix server
come from PyPI ``wyoming`` (the protocol's own library), as in ``wyoming-faster-whisper`` and
``wyoming-piper``: :class:`Engines` (settings, models and the ``info`` answer) is built once at
start and shared; each connection gets a small :class:`WyomingHandler` that keeps that
connection's state (an audio stream, a streamed text, a conversation).

What a client can do (``describe`` lists exactly what this install has):

- ASR: ``transcribe`` (optional: model ``name``, ``language``), then ``audio-start``,
  ``audio-chunk``... ``audio-stop`` -> ``transcript-start``, one ``transcript-chunk`` per
  segment, ``transcript``, ``transcript-stop``. Audio of any rate, width and channel count is
  converted to 16 kHz 16-bit mono by the library's :class:`AudioChunkConverter`.
- TTS: ``synthesize`` -> ``audio-start``, ``audio-chunk``..., ``audio-stop``, spoken sentence
  by sentence (the first sentence's audio goes out while the rest is synthesised); streaming
  ``synthesize-start``, ``synthesize-chunk``..., ``synthesize-stop`` speaks each sentence as
  soon as its text is complete and ends with ``synthesize-stopped``.
- Wake word: ``detect`` (optional model names), then audio -> ``detection`` for each hit and
  ``not-detected`` at ``audio-stop`` when there was none.
- Conversation (``serve.conversation``): a ``transcript`` sent to the server is one assistant
  turn -> ``handled-start``, ``handled-chunk``..., ``handled``, ``handled-stop``; or
  ``not-handled`` with a short reason when the turn fails (the LLM unreachable). One
  conversation per connection; tools that need confirmation are declined.

Bad input never takes the server down. An unknown event, audio in a format that cannot be
converted, empty audio, a request over ``serve.max_audio_s`` or ``serve.max_text_chars``, an
unknown model or voice or language: an ``error`` event (``text`` says what, ``code`` is a
short key) and the connection goes on. A line that is not a Wyoming event (or an event larger
than :data:`MAX_EVENT_BYTES`), or silence for ``serve.idle_timeout_s``: an ``error`` and the
connection is closed. Model work runs on ``serve.workers`` threads; ``serve.max_pending``
more requests may wait and any beyond are answered ``busy`` at once, so a slow or vanished
client holds up nobody (a vanished client's transcription is aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    SelectProgram,
    TtsProgram,
    TtsVoice,
    TtsVoiceSpeaker,
    WakeModel,
    WakeProgram,
)
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)
from wyoming.wake import Detect, Detection, NotDetected

from voiced import __version__
from voiced.config import Settings
from voiced.decode import SAMPLE_RATE, to_int16

log = logging.getLogger(__name__)

T = TypeVar("T")

# The largest JSON data or payload one event may carry (an audio chunk is a few KB; a second
# of 48 kHz stereo 32-bit audio is 384 KB). Larger is refused before it is read.
MAX_EVENT_BYTES = 4 * 1024 * 1024
# Audio sent back per audio-chunk, in samples (as wyoming-piper).
SAMPLES_PER_CHUNK = 1024
_WIDTH = 2  # 16-bit
_ATTRIBUTION = Attribution(name="voiced", url="https://github.com/voiced")
_WHISPER = Attribution(
    name="OpenAI Whisper (whisper.cpp)", url="https://github.com/ggerganov/whisper.cpp"
)
_PIPER = Attribution(name="Piper", url="https://github.com/OHF-Voice/piper1-gpl")
_MICRO = Attribution(name="microWakeWord", url="https://github.com/kahrendt/microWakeWord")
_OLLAMA = Attribution(name="Ollama", url="https://ollama.com")


class RequestError(Exception):
    """A request this server answers with an ``error`` event; the connection goes on."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Busy(RequestError):
    def __init__(self) -> None:
        super().__init__("busy", "the server is busy with other requests; try again shortly")


# -- engines: loaded once, shared by every connection ------------------------------------


class WorkQueue:
    """Runs model work on at most ``workers`` threads; ``max_pending`` may wait, others are Busy."""

    def __init__(self, workers: int, max_pending: int) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self._semaphore: asyncio.Semaphore | None = None
        self._waiting = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.workers)
        if self._semaphore.locked() and self._waiting >= self.max_pending:
            raise Busy()
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._semaphore.release()


@dataclass
class Engines:
    """The configuration, the loaded models and the ``info`` answer, built once at start.

    The configured Whisper model and Piper voice are loaded at once; other installed ones are
    loaded the first time a client names them (each once).
    """

    settings: Settings
    stt_models: dict[str, Any]  # name -> SpeechToText, or None until first used
    voices: dict[str, Any]  # name -> TextToSpeech, or None until first used
    wake_models: tuple[str, ...]
    info: Info
    queue: WorkQueue
    _load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, settings: Settings) -> Engines:
        from voiced.speech.models import ModelStore
        from voiced.speech.stt import SpeechToText
        from voiced.speech.tts import TextToSpeech, list_voices

        store = ModelStore()
        # Utterances: exact windows without flash attention (as the listeners load it).
        default_stt = SpeechToText.from_settings(
            settings.stt, store, flash_attention=False, vad=settings.vad
        )
        stt_models: dict[str, Any] = {
            info.name: None for info in store.list() if info.installed and info.kind == "whisper"
        }
        stt_models[settings.stt.model] = default_stt
        default_tts = TextToSpeech.from_settings(settings.tts)
        voices: dict[str, Any] = {voice.name: None for voice in list_voices()}
        voices[default_tts.name] = default_tts
        wake_models = _wake_models()
        serve = settings.serve
        engines = cls(
            settings=settings,
            stt_models=stt_models,
            voices=voices,
            wake_models=wake_models,
            info=Info(),
            queue=WorkQueue(serve.workers, serve.max_pending),
        )
        engines.info = build_info(engines)
        return engines

    @property
    def programs(self) -> list[str]:
        """The names of the programs in ``info`` (one of each kind: select-program is a no-op)."""
        info = self.info
        kinds: list[Any] = [*info.asr, *info.tts, *info.wake, *info.handle]
        return [program.name for program in kinds]

    @property
    def default_stt_name(self) -> str:
        return self.settings.stt.model

    @property
    def default_voice_name(self) -> str:
        return next(name for name, tts in self.voices.items() if tts is not None)

    def stt(self, name: str | None) -> Any:
        """The Whisper model called ``name`` (None: the configured one), loaded once."""
        return self._get(self.stt_models, name or self.default_stt_name, "model", self._load_stt)

    def tts(self, name: str | None) -> Any:
        """The Piper voice called ``name`` (None: the configured one), loaded once."""
        return self._get(self.voices, name or self.default_voice_name, "voice", self._load_tts)

    def _get(self, table: dict[str, Any], name: str, kind: str, load: Callable[[str], Any]) -> Any:
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise RequestError(f"unknown-{kind}", f"no {kind} {name!r} here (have: {known})")
        with self._load_lock:
            if table[name] is None:
                log.info("loading %s %s", kind, name)
                table[name] = load(name)
            return table[name]

    def _load_stt(self, name: str) -> Any:
        from voiced.speech.stt import SpeechToText

        stt_settings = self.settings.stt.model_copy(update={"model": name, "language": "auto"})
        vad = self.settings.vad
        return SpeechToText.from_settings(stt_settings, flash_attention=False, vad=vad)

    def _load_tts(self, name: str) -> Any:
        from voiced.speech.tts import TextToSpeech

        return TextToSpeech.from_settings(self.settings.tts, name)


def _wake_models() -> tuple[str, ...]:
    from voiced.audio.wakeword import WakeWordError, list_models

    try:
        return tuple(info.name for info in list_models())
    except WakeWordError as exc:
        log.warning("no wake-word models: %s", exc)
        return ()


def _whisper_languages(path: Any) -> list[str]:
    from voiced.speech.models import inspect_ggml
    from voiced.speech.stt import whisper_languages

    try:
        multilingual = inspect_ggml(path).multilingual
    except Exception as exc:  # a broken file: list it as English, transcribing will say why
        log.warning("cannot inspect %s: %s", path, exc)
        multilingual = False
    return whisper_languages() if multilingual else ["en"]


def build_info(engines: Engines) -> Info:
    """The ``info`` answer: what this install has, read once from the stores and packages."""
    from voiced.audio.wakeword import list_models
    from voiced.speech.models import ModelStore
    from voiced.speech.tts import list_voices, read_voice_config

    settings = engines.settings
    store_rows = {info.name: info for info in ModelStore().list() if info.installed}
    asr_models = []
    for name, loaded in engines.stt_models.items():
        row = store_rows.get(name)
        path = loaded.model_path if loaded is not None else (row.path if row else None)
        asr_models.append(
            AsrModel(
                name=name,
                description=(row.description if row and row.description else f"Whisper {name}"),
                attribution=_WHISPER,
                installed=True,
                version=None,
                languages=_whisper_languages(path) if path else ["en"],
            )
        )
    tts_voices = []
    for voice in list_voices():
        try:
            config = read_voice_config(voice.config_path)
        except Exception as exc:
            log.warning("skipping voice %s in info: %s", voice.name, exc)
            continue
        language = (config.get("language") or {}).get("code") or voice.name.split("-")[0]
        speakers = [TtsVoiceSpeaker(name=str(s)) for s in (config.get("speaker_id_map") or {})]
        tts_voices.append(
            TtsVoice(
                name=voice.name,
                description=f"Piper {voice.name} ({voice.sample_rate} Hz, {voice.source})",
                attribution=_PIPER,
                installed=True,
                version=None,
                languages=[language, language.split("_")[0]] if "_" in language else [language],
                speakers=speakers or None,
            )
        )
    info = Info(
        asr=[
            AsrProgram(
                name="voiced-whisper",
                description="voiced speech to text (whisper.cpp behind a speech gate)",
                attribution=_ATTRIBUTION,
                installed=True,
                version=__version__,
                models=asr_models,
                supports_transcript_streaming=True,
            )
        ],
        tts=[
            TtsProgram(
                name="voiced-piper",
                description="voiced text to speech (Piper), sentence by sentence",
                attribution=_ATTRIBUTION,
                installed=True,
                version=__version__,
                voices=tts_voices,
                supports_synthesize_streaming=True,
            )
        ],
    )
    wake = [info_ for info_ in list_models() if info_.name in engines.wake_models]
    if wake:
        info.wake = [
            WakeProgram(
                name="voiced-wakeword",
                description="voiced wake words (microWakeWord models from pymicro-wakeword)",
                attribution=_ATTRIBUTION,
                installed=True,
                version=__version__,
                models=[
                    WakeModel(
                        name=model.name,
                        description=model.phrase,
                        phrase=model.phrase,
                        attribution=_MICRO,
                        installed=True,
                        version=None,
                        languages=list(model.languages) or ["en"],
                    )
                    for model in wake
                ],
            )
        ]
    if settings.serve.conversation:
        info.handle = [
            HandleProgram(
                name="voiced-assistant",
                description="voiced's assistant with its tools (confirmation-free ones only)",
                attribution=_ATTRIBUTION,
                installed=True,
                version=__version__,
                models=[
                    HandleModel(
                        name=settings.llm.model,
                        description=f"{settings.llm.model} on Ollama",
                        attribution=_OLLAMA,
                        installed=True,
                        version=None,
                        languages=["en"],
                    )
                ],
                supports_handled_streaming=True,
            )
        ]
    return info


# -- one connection -----------------------------------------------------------------------


@dataclass
class _AudioIn:
    """One incoming audio stream, converted to 16 kHz 16-bit mono, with a byte bound."""

    purpose: str  # "asr" or "wake"
    limit_bytes: int
    converter: AudioChunkConverter = field(
        default_factory=lambda: AudioChunkConverter(rate=SAMPLE_RATE, width=_WIDTH, channels=1)
    )
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes so far; -1 once refused (the rest is dropped until audio-stop)


def check_format(rate: Any, width: Any, channels: Any, audio: bytes | None = None) -> None:
    """Raise a ``bad-audio-format`` RequestError for a format the converter cannot take."""
    problems = []
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384_000:
        problems.append(f"rate {rate!r} (1000-384000 Hz)")
    if width not in (1, 2, 3, 4) or isinstance(width, bool):
        problems.append(f"width {width!r} (1, 2, 3 or 4 bytes)")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 16:
        problems.append(f"channels {channels!r} (1-16)")
    if not problems and audio is not None and len(audio) % (width * channels):
        frame = width * channels
        problems.append(f"{len(audio)} bytes is not a whole number of {frame}-byte frames")
    if problems:
        raise RequestError("bad-audio-format", "cannot use this audio: " + "; ".join(problems))


def pcm_chunks(audio: np.ndarray, rate: int) -> Iterator[AudioChunk]:
    """Float32 mono audio as 16-bit ``audio-chunk`` events of :data:`SAMPLES_PER_CHUNK`."""
    pcm = to_int16(audio).astype("<i2").tobytes()
    step = SAMPLES_PER_CHUNK * _WIDTH
    for start in range(0, len(pcm), step):
        yield AudioChunk(rate=rate, width=_WIDTH, channels=1, audio=pcm[start : start + step])


class WyomingHandler(AsyncEventHandler):
    """One client connection: the events it sends, and that connection's state only."""

    def __init__(
        self,
        engines: Engines,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(reader, writer)
        self.engines = engines
        self.serve = engines.settings.serve
        _bound_reads(reader)
        self._transcribe: Transcribe | None = None
        self._audio: _AudioIn | None = None
        self._detector: Any = None  # WakeWordDetector while a detect is on
        self._detected = False
        self._synth_stream: Any = None  # SentenceSplitter while a synthesize stream is on
        self._synth_voice: str | None = None
        self._synth_started = False
        self._synth_chars = 0
        self._assistant: Any = None
        self._gone = threading.Event()  # the client left: abort its work
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local client"

    # -- the read loop: the library's reader, with a time limit and error answers

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(
                        async_read_event(self.reader), self.serve.idle_timeout_s
                    )
                except asyncio.TimeoutError:
                    await self._error(
                        "idle-timeout",
                        f"nothing received for {self.serve.idle_timeout_s:g} s; closing",
                    )
                    break
                except (KeyError, TypeError, AttributeError, asyncio.IncompleteReadError):
                    event = None  # JSON without a type, data that is not an object, cut short
                    if not self.reader.at_eof():
                        await self._malformed()
                        break
                if event is None or not isinstance(event.data, dict):
                    if event is not None or not self.reader.at_eof():
                        await self._malformed()
                    break
                try:
                    keep = await self.handle_event(event)
                except RequestError as exc:
                    log.info("%s: %s: %s", self.peer, event.type, exc.text)
                    await self._error(exc.code, exc.text)
                    keep = True
                except (KeyError, TypeError, ValueError) as exc:
                    # The event's data lacks a field or has one of the wrong type.
                    log.info("%s: bad %s event: %r", self.peer, event.type, exc)
                    await self._error("bad-event", f"bad {event.type!r} event: {exc!r}")
                    keep = True
                if not keep:
                    break
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection lost: %s", self.peer, exc)
        except Exception:
            log.exception("%s: unexpected failure; closing this connection", self.peer)
            with contextlib.suppress(Exception):
                await self._error("internal", "internal server error; closing")
        finally:
            await self.disconnect()
            self.writer.close()

    async def _malformed(self) -> None:
        log.info("%s: malformed event; closing", self.peer)
        await self._error(
            "malformed-event",
            f"not a Wyoming event (a JSON line with a type; data and payload at most "
            f"{MAX_EVENT_BYTES} bytes); closing",
        )

    async def _error(self, code: str, text: str) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.write_event(Error(text=text, code=code).event())

    async def disconnect(self) -> None:
        self._gone.set()
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    # -- dispatch

    async def handle_event(self, event: Event) -> bool:
        kind = event.type
        if Describe.is_type(kind):
            await self.write_event(self.engines.info.event())
        elif SelectProgram.is_type(kind):
            name = SelectProgram.from_event(event).name
            if name not in self.engines.programs:
                have = ", ".join(self.engines.programs)
                raise RequestError("unknown-program", f"no program {name!r} here (have: {have})")
        elif Ping.is_type(kind):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(kind):
            self._transcribe = Transcribe.from_event(event)
            self._audio = None
        elif Detect.is_type(kind):
            self._start_detect(Detect.from_event(event).names)
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            audio = self._begin_audio()
            try:
                check_format(start.rate, start.width, start.channels)
            except RequestError:
                audio.size = -1  # refused: its chunks are dropped up to its audio-stop
                raise
        elif AudioChunk.is_type(kind):
            await self._audio_chunk(event)
        elif AudioStop.is_type(kind):
            await self._audio_stop()
        elif Synthesize.is_type(kind):
            if self._synth_stream is None:  # within a stream it is the compatibility copy
                await self._synthesize(Synthesize.from_event(event))
        elif SynthesizeStart.is_type(kind):
            self._synth_start(SynthesizeStart.from_event(event))
        elif SynthesizeChunk.is_type(kind):
            await self._synth_chunk(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(kind):
            await self._synth_stop()
        elif Transcript.is_type(kind):
            await self._handle(Transcript.from_event(event))
        else:
            raise RequestError("unknown-event", f"this server does not handle {kind!r} events")
        return True

    # -- audio in (ASR and wake word)

    def _begin_audio(self) -> _AudioIn:
        purpose = "wake" if self._detector is not None else "asr"
        limit = int(self.serve.max_audio_s * SAMPLE_RATE * _WIDTH)
        self._audio = _AudioIn(purpose, limit)
        return self._audio

    def _drop_audio(self) -> None:
        self._audio = None
        self._transcribe = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    async def _audio_chunk(self, event: Event) -> None:
        audio = self._audio or self._begin_audio()  # audio-start is optional, as elsewhere
        if audio.size < 0:
            return  # this stream was refused: drop the rest of it until audio-stop
        chunk = AudioChunk.from_event(event)
        try:
            check_format(chunk.rate, chunk.width, chunk.channels, chunk.audio)
            converted = audio.converter.convert(chunk).audio
        except RequestError:
            audio.size = -1
            raise
        except Exception as exc:  # audioop's own error for what check_format let through
            audio.size = -1
            raise RequestError("bad-audio-format", f"cannot convert this audio: {exc}") from None
        if audio.purpose == "wake":
            await self._feed_wake(converted)
            return
        audio.size += len(converted)
        if audio.size > audio.limit_bytes:
            audio.pieces.clear()
            audio.size = -1
            raise RequestError(
                "audio-too-long",
                f"more than serve.max_audio_s ({self.serve.max_audio_s:g} s) of audio; "
                "this audio is dropped",
            )
        audio.pieces.append(converted)

    async def _audio_stop(self) -> None:
        audio, self._audio = self._audio, None
        if audio is not None and audio.purpose == "wake":
            if audio.size >= 0 and not self._detected:
                await self.write_event(NotDetected().event())
            self._drop_audio()
            return
        request, self._transcribe = self._transcribe, None
        if audio is None or audio.size < 0:
            if audio is None:
                raise RequestError("empty-audio", "audio-stop without any audio before it")
            return  # refused already (its error was sent)
        if audio.size == 0:
            raise RequestError("empty-audio", "no audio between audio-start and audio-stop")
        await self._transcribe_audio(b"".join(audio.pieces), request)

    async def _transcribe_audio(self, pcm: bytes, request: Transcribe | None) -> None:
        from voiced.speech.stt import SttError, TranscriptionAborted

        name = request.name if request else None
        language = request.language if request else None
        stt = await asyncio.to_thread(self.engines.stt, name)
        try:
            language = stt.resolve_language(language)
        except SttError as exc:
            raise RequestError("unsupported-language", str(exc)) from None
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0

        def work() -> Any:
            return stt.transcribe(samples, language=language, abort=self._gone.is_set)

        began = time.monotonic()
        try:
            result = await self.engines.queue.run(work)
        except TranscriptionAborted:
            return
        except SttError as exc:
            raise RequestError("stt-failed", str(exc)) from None
        log.info(
            "%s: %.1f s of audio in %.0f ms -> %r",
            self.peer,
            result.duration,
            (time.monotonic() - began) * 1000,
            result.text,
        )
        await self.write_event(TranscriptStart(language=result.language).event())
        for segment in result.segments:
            await self.write_event(TranscriptChunk(text=segment.text).event())
        await self.write_event(Transcript(text=result.text, language=result.language).event())
        await self.write_event(TranscriptStop().event())

    def _start_detect(self, names: list[str] | None) -> None:
        from voiced.audio.wakeword import WakeWordDetector, WakeWordError

        wanted = names or [self.engines.settings.wake.model]
        unknown = [name for name in wanted if name not in self.engines.wake_models]
        if unknown:
            have = ", ".join(self.engines.wake_models) or "none"
            raise RequestError("unknown-model", f"no wake-word model {unknown} here (have: {have})")
        self._drop_audio()
        try:
            self._detector = WakeWordDetector(
                wanted, refractory_s=self.engines.settings.wake.refractory_s
            )
        except WakeWordError as exc:
            raise RequestError("unknown-model", str(exc)) from None
        self._detected = False

    async def _feed_wake(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        for hit in self._detector.feed(samples):
            self._detected = True
            log.info("%s: wake word %s at %.2f s", self.peer, hit.model, hit.time_s)
            await self.write_event(
                Detection(name=hit.model, timestamp=round(hit.time_s * 1000)).event()
            )

    # -- audio out (TTS)

    def _check_text(self, text: str, total: int | None = None) -> None:
        if (total if total is not None else len(text)) > self.serve.max_text_chars:
            raise RequestError(
                "text-too-long",
                f"more than serve.max_text_chars ({self.serve.max_text_chars}) characters",
            )

    async def _synthesize(self, request: Synthesize) -> None:
        from voiced.speech.sentences import split_sentences

        self._check_text(request.text)
        voice = request.voice.name if request.voice else None
        tts = await asyncio.to_thread(self.engines.tts, voice)
        sentences = split_sentences(request.text)
        if not any(s.strip() for s in sentences):
            raise RequestError("empty-text", "nothing to say: the text is empty")
        await self.write_event(AudioStart(rate=tts.sample_rate, width=_WIDTH, channels=1).event())
        for index, sentence in enumerate(sentences):
            await self._speak(tts, sentence, pause=index > 0)
        await self.write_event(AudioStop().event())

    async def _speak(self, tts: Any, sentence: str, *, pause: bool) -> bool:
        """Synthesise one sentence and send its audio; False when it had nothing to say."""
        from voiced.speech.sentences import speakable
        from voiced.speech.tts import VoiceError

        text = speakable(sentence)
        if not text:
            return False
        began = time.monotonic()
        try:
            audio = await self.engines.queue.run(tts.synthesize, text)
        except VoiceError as exc:
            raise RequestError("tts-failed", str(exc)) from None
        log.info(
            "%s: synthesized %d characters in %.0f ms",
            self.peer,
            len(text),
            (time.monotonic() - began) * 1000,
        )
        if pause:
            audio = np.concatenate([tts.silence(), audio])
        for chunk in pcm_chunks(audio, tts.sample_rate):
            await self.write_event(chunk.event())
        return True

    def _synth_start(self, request: SynthesizeStart) -> None:
        from voiced.speech.sentences import SentenceSplitter

        voice = request.voice.name if request.voice else None
        if voice:
            self.engines.tts(voice)  # an unknown voice fails here, at once
        self._synth_stream = SentenceSplitter()
        self._synth_voice = voice
        self._synth_started = False
        self._synth_chars = 0

    async def _synth_chunk(self, text: str) -> None:
        if self._synth_stream is None:
            raise RequestError("no-stream", "synthesize-chunk before synthesize-start")
        if self._synth_chars < 0:
            return  # refused: the rest of this stream is dropped up to its synthesize-stop
        self._synth_chars += len(text)
        try:
            self._check_text(text, self._synth_chars)
        except RequestError:
            self._synth_chars = -1
            self._synth_stream.flush()  # what is still buffered is not spoken
            raise
        for sentence in self._synth_stream.feed(text):
            await self._synth_sentence(sentence)

    async def _synth_sentence(self, sentence: str) -> None:
        tts = await asyncio.to_thread(self.engines.tts, self._synth_voice)
        if not self._synth_started:
            from voiced.speech.sentences import speakable

            if not speakable(sentence):
                return
            start = AudioStart(rate=tts.sample_rate, width=_WIDTH, channels=1)
            await self.write_event(start.event())
            await self._speak(tts, sentence, pause=False)
            self._synth_started = True
        else:
            await self._speak(tts, sentence, pause=True)

    async def _synth_stop(self) -> None:
        stream = self._synth_stream
        if stream is None:
            raise RequestError("no-stream", "synthesize-stop before synthesize-start")
        try:
            for sentence in stream.flush():
                await self._synth_sentence(sentence)
        finally:
            self._synth_stream = None
        if self._synth_started:
            await self.write_event(AudioStop().event())
        await self.write_event(SynthesizeStopped().event())

    # -- conversation

    def _conversation(self) -> Any:
        if self._assistant is None:
            from voiced.brain.assistant import Assistant
            from voiced.brain.tools.policy import build_registry

            settings = self.engines.settings
            # No one to ask: confirm=None declines every tool that needs a yes.
            registry = build_registry(settings, confirm=None, source="wyoming")
            self._assistant = Assistant(settings.llm, registry)
        return self._assistant

    async def _handle(self, request: Transcript) -> None:
        from voiced.brain.assistant import error_sentence

        if not self.serve.conversation:
            raise RequestError(
                "not-supported", "conversation is off on this server (serve.conversation)"
            )
        self._check_text(request.text)
        if not request.text.strip():
            await self.write_event(NotHandled(text="Nothing was said.").event())
            return
        assistant = await asyncio.to_thread(self._conversation)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def turn() -> Any:
            try:
                return assistant.ask(request.text, on_text, cancel=cancel)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        future = asyncio.ensure_future(asyncio.to_thread(turn))
        started = False
        try:
            while (piece := await pieces.get()) is not None:
                if not piece:
                    continue
                if not started:
                    await self.write_event(HandledStart().event())
                    started = True
                await self.write_event(HandledChunk(text=piece).event())
            result = await future
        finally:
            cancel.set()  # a client gone mid-reply (a failed write) ends the turn
        model = self.engines.settings.llm.model
        if result.error is not None and not result.text:
            reason = result.error_message or error_sentence(result.error, model)
            log.info("%s: turn failed: %s (%s)", self.peer, result.error, result.error_detail)
            await self.write_event(NotHandled(text=reason).event())
            return
        text = result.text
        if result.error is not None:
            tail = " " + (result.error_message or error_sentence(result.error, model))
            if not started:
                await self.write_event(HandledStart().event())
                started = True
            await self.write_event(HandledChunk(text=tail).event())
            text += tail
        if started:
            await self.write_event(Handled(text=text).event())
            await self.write_event(HandledStop().event())
        else:
            await self.write_event(Handled(text=text).event())


def _bound_reads(reader: asyncio.StreamReader) -> None:
    """Make ``readexactly`` refuse more than MAX_EVENT_BYTES (before buffering any of it).

    The library reads an event's data and payload with ``readexactly(length)``, the length
    taken from the client's JSON; a ValueError there makes it report the event as unreadable,
    which :meth:`WyomingHandler.run` answers as malformed.
    """
    original = reader.readexactly

    async def readexactly(n: int) -> bytes:
        if n > MAX_EVENT_BYTES:
            raise ValueError(f"event part of {n} bytes is over {MAX_EVENT_BYTES}")
        return await original(n)

    reader.readexactly = readexactly  # type: ignore[method-assign]


# -- the server ----------------------------------------------------------------------------


async def serve(
    engines: Engines,
    uri: str,
    *,
    zeroconf_name: str | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``uri`` until ``stop`` is set (or for ever); ``on_ready`` gets the bound address."""
    server = AsyncServer.from_uri(uri)
    await server.start(lambda reader, writer: WyomingHandler(engines, reader, writer))
    address = _bound_address(server, uri)
    log.info("Wyoming server listening on %s", address)
    announcer = None
    if zeroconf_name is not None:
        announcer = await _announce(uri, address, zeroconf_name)
    if on_ready is not None:
        on_ready(address)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        if announcer is not None:
            with contextlib.suppress(Exception):
                await announcer._aiozc.async_close()
        await server.stop()


def _bound_address(server: AsyncServer, uri: str) -> str:
    inner = getattr(server, "_server", None)
    sockets = getattr(inner, "sockets", None) or []
    parsed = urlparse(uri)
    if parsed.scheme == "tcp" and sockets:
        host, port = sockets[0].getsockname()[:2]
        return f"tcp://{host}:{port}"
    return uri


async def _announce(uri: str, address: str, name: str) -> Any:
    """Announce a TCP server as ``NAME._wyoming._tcp.local.`` (Home Assistant's discovery)."""
    parsed = urlparse(address)
    if parsed.scheme != "tcp" or parsed.port is None:
        log.warning("zeroconf announces TCP servers only; not announcing %s", uri)
        return None
    from wyoming.zeroconf import HomeAssistantZeroconf

    host = parsed.hostname if parsed.hostname not in (None, "0.0.0.0", "::") else None
    try:
        announcer = HomeAssistantZeroconf(port=parsed.port, name=name, host=host)
        await announcer.register_server()
    except OSError as exc:
        log.warning("cannot announce the server over zeroconf: %s", exc)
        return None
    log.info("announced as %s._wyoming._tcp.local. on %s:%s", name, announcer.host, parsed.port)
    return announcer
