"""The ``audio`` tool group: transcribe a file, speak text into a WAV file, list audio devices.

``transcribe_audio`` uses the project's speech-to-text (:class:`voiced.speech.stt.SpeechToText` on
audio from :func:`voiced.decode.decode_file`); ``speak_to_file`` uses Piper through
:mod:`voiced.speech.tts`. Both engines are loaded on first use and then shared by every registry in
the process (the daemon can hand in the ones it already has). Paths go through the sandbox;
the WAV is written atomically inside the roots, and replacing an existing file asks first.
Devices are listed through a lister handed in by the caller (the brain opens no device).

A transcription's time limit grows with the audio: ``tools.timeout_s`` plus
:data:`TRANSCRIBE_SECONDS_PER_AUDIO_SECOND` per second of audio (the duration the file
declares, else ``tools.max_audio_s``). Past it, whisper is aborted through its abort callback,
so the engine (shared with the daemon's listener) is free again at once.

Speaking into a file has a limit sized to the text the same way: ``tools.timeout_s`` plus
:data:`SPEAK_SECONDS_PER_CHARACTER` per character. Piper speaks sentence by sentence, and
the call checks its limit after taking the synthesis lock and between sentences, so an
abandoned call stops after the sentence in hand, frees the lock and writes nothing.
"""

from __future__ import annotations

import io
import logging
import threading
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from voiced.brain.tools.registry import CallCancelled, PolicyDecision, Tool, ToolError, current_call
from voiced.brain.tools.sandbox import Sandbox, SandboxError, human_size, printable
from voiced.config import SttSettings, ToolsSettings, TtsSettings

if TYPE_CHECKING:
    import numpy as np

    from voiced.speech.stt import SpeechToText
    from voiced.speech.tts import TextToSpeech

log = logging.getLogger(__name__)

MAX_SPEECH_CHARS = 2000
# An upper bound on whisper's real-time factor for file transcription on a desktop CPU: the
# default tiny and base models run 10-30x faster than real time with a few cores, the largest
# ones about real time. A slower machine or model needs a larger tools.timeout_s.
TRANSCRIBE_SECONDS_PER_AUDIO_SECOND = 1.0
# An upper bound on Piper's time per character of text: speech runs about 15 characters a
# second and Piper synthesises it several times faster than real time on a desktop CPU, so
# real time (1/15 s a character) leaves room for a slow machine.
SPEAK_SECONDS_PER_CHARACTER = 0.07
MIN_SPEED = 0.5
MAX_SPEED = 2.0

# Loaded engines, shared process-wide: one whisper model per (settings), one Piper voice per name.
_engines_lock = threading.Lock()
_stt_engines: dict[SttSettings, SpeechToText] = {}
_tts_engines: dict[tuple[str, TtsSettings], TextToSpeech] = {}
# espeak-ng, under every Piper voice, keeps global state: one synthesis at a time.
_synthesis_lock = threading.Lock()


def share_stt(settings: SttSettings, engine: SpeechToText) -> None:
    """Let the audio tools use an already loaded STT engine for ``settings``."""
    with _engines_lock:
        _stt_engines[settings] = engine


def stt_engine(settings: SttSettings) -> SpeechToText:
    """The STT engine for ``settings``, loaded once per process."""
    with _engines_lock:
        engine = _stt_engines.get(settings)
        if engine is None:
            from voiced.speech.stt import SpeechToText, SttError

            try:
                engine = SpeechToText.from_settings(settings)
            except SttError as exc:
                raise ToolError(f"speech recognition is not available: {exc}") from None
            _stt_engines[settings] = engine
        return engine


def tts_engine(settings: TtsSettings, voice: str) -> TextToSpeech:
    """The Piper voice ``voice`` with ``settings``, loaded once per process."""
    key = (voice, settings)
    with _engines_lock:
        engine = _tts_engines.get(key)
        if engine is None:
            from voiced.speech.tts import TextToSpeech, VoiceError

            try:
                engine = TextToSpeech.from_settings(settings, voice)
            except VoiceError as exc:
                raise ToolError(str(exc)) from None
            _tts_engines[key] = engine
        return engine


def _probe_seconds(path: str) -> float | None:
    """The duration a container declares, without decoding it (None when unknown)."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            if container.duration:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return None  # decode_file gives the real reason
    return None


class AudioDevice(Protocol):
    """What the device tool reads of a device (:class:`voiced.audio.capture.Device` has it)."""

    index: int
    name: str
    hostapi: str
    input_channels: int
    output_channels: int
    default_samplerate: float
    default_input: bool
    default_output: bool


DeviceLister = Callable[[], Sequence[AudioDevice]]
"""Lists the machine's audio devices. The brain never opens a device itself: the layer that
owns the microphone and speaker hands this in (``voiced.audio.capture.list_devices``)."""


class AudioTools:
    """The audio tools over one sandbox and the STT/TTS settings; each method is one tool."""

    def __init__(
        self,
        settings: ToolsSettings,
        stt: SttSettings | None = None,
        tts: TtsSettings | None = None,
        sandbox: Sandbox | None = None,
        audio_devices: DeviceLister | None = None,
    ) -> None:
        self.settings = settings
        self.stt_settings = stt or SttSettings()
        self.tts_settings = tts or TtsSettings()
        self.sandbox = sandbox or Sandbox.from_settings(settings)
        self.audio_devices = audio_devices

    # ------------------------------------------------------------------ tools

    def transcribe_audio(self, path: str, language: str | None = None) -> str:
        """Transcribe speech in an audio or video file (wav, mp3, flac, ogg, m4a...) to text.

        Args:
            path: The audio file, for example ~/Recordings/memo.m4a.
            language: Language code such as en or de; leave it out for the configured one.
        """
        from voiced.decode import SAMPLE_RATE, DecodeError, decode_file

        target = self.sandbox.resolve(path)
        shown = self.sandbox.display(target)
        settings = self.stt_settings
        if language and language.strip() and language.strip().lower() != settings.language:
            settings = settings.model_copy(update={"language": language.strip().lower()})
        # Decode through the sandbox's checked descriptor, never by path a second time.
        with self.sandbox.open_file(target) as fd:
            by_descriptor = f"/proc/self/fd/{fd}"
            seconds = _probe_seconds(by_descriptor)
            if seconds is not None and seconds > self.settings.max_audio_s + 1:
                raise ToolError(self._too_long(shown, seconds))
            try:
                audio = decode_file(by_descriptor)
            except DecodeError as exc:
                raise ToolError(f"cannot read {shown} as audio: {exc}") from None
        seconds = audio.size / SAMPLE_RATE
        if seconds > self.settings.max_audio_s:
            raise ToolError(self._too_long(shown, seconds))
        call = current_call()
        call.check()
        from voiced.speech.stt import TranscriptionAborted

        try:
            result = stt_engine(settings).transcribe(audio, abort=call.cancelled)
        except TranscriptionAborted:
            raise CallCancelled(
                f"transcribing {shown} was stopped at its time limit ({call.limit_s:g} seconds)"
            ) from None
        if not result.text:
            return f"no speech found in {shown} ({seconds:.1f} s of audio)"
        return f"{shown} ({seconds:.1f} s, {result.language}): {result.text}"

    def speak_to_file(
        self, text: str, path: str, voice: str | None = None, speed: float | None = None
    ) -> str:
        """Speak a text with the assistant's voice and save it as a WAV file.

        Args:
            text: What to say.
            path: The WAV file to write, for example ~/Music/reminder.wav; its folder must exist.
            voice: A Piper voice name; leave it out for the assistant's voice.
            speed: Speaking speed from 0.5 (slow) to 2.0 (fast); 1.0 is normal.
        """
        self._check_speech(text, path, voice, speed)
        target = self.sandbox.resolve_target(path)
        voice_name = voice.strip() if voice and voice.strip() else self.tts_settings.voice
        settings = self.tts_settings
        if speed:
            settings = settings.model_copy(update={"length_scale": 1.0 / speed})
        engine = tts_engine(settings, voice_name)
        audio = self._synthesize(engine, text)
        if audio.size == 0:
            raise ToolError("the text has nothing to say")
        from voiced.decode import to_int16

        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(engine.sample_rate)
            wav.writeframes(to_int16(audio).tobytes())
        data = buffer.getvalue()
        written = self.sandbox.write_bytes(target, data)
        seconds = audio.size / engine.sample_rate
        return (
            f"{'replaced' if written.replaced else 'wrote'} {self.sandbox.display(target)}: "
            f"{seconds:.1f} s of speech, {human_size(len(data))}, voice {engine.name}"
            f"{written.note()}"
        )

    @staticmethod
    def _synthesize(engine: TextToSpeech, text: str) -> np.ndarray:
        """``text`` spoken sentence by sentence, stopping between them once the call is over."""
        from voiced.speech.sentences import split_sentences
        from voiced.speech.tts import join_sentences

        call = current_call()
        stopped = CallCancelled(
            f"speak_to_file was stopped at its time limit ({call.limit_s:g} seconds)"
        )
        # An abandoned call may still hold the lock for the sentence in hand: wait no longer
        # than this call may.
        if not _synthesis_lock.acquire(timeout=min(call.remaining_s(), threading.TIMEOUT_MAX)):
            raise stopped
        try:
            pieces = []
            for sentence in split_sentences(text):
                if call.cancelled():
                    raise stopped
                pieces.extend(engine.sentences(sentence))
        finally:
            _synthesis_lock.release()
        return join_sentences(pieces, engine.silence())

    def speak_time_limit(self, values: dict[str, Any], default_s: float) -> float:
        """``default_s`` plus the text's length times the per-character bound."""
        return default_s + len(values["text"]) * SPEAK_SECONDS_PER_CHARACTER

    def list_audio_devices(self) -> str:
        """List the microphones and speakers this computer has, marking the defaults."""
        if self.audio_devices is None:
            raise ToolError("this voiced process was started without access to audio devices")
        try:
            devices = self.audio_devices()
        except Exception as exc:  # the lister's own error says what went wrong
            raise ToolError(str(exc)) from None
        if not devices:
            return "no audio devices found"
        lines = []
        for device in devices:
            roles = []
            if device.input_channels:
                roles.append(f"input {device.input_channels} ch")
            if device.output_channels:
                roles.append(f"output {device.output_channels} ch")
            marks = [
                m
                for m, on in (
                    ("default input", device.default_input),
                    ("default output", device.default_output),
                )
                if on
            ]
            channels = ", ".join(roles) or "no channels"
            line = f"{device.index}: {device.name} ({device.hostapi}; {channels}; "
            line += f"{device.default_samplerate:g} Hz)"
            lines.append(line + (f" [{', '.join(marks)}]" if marks else ""))
        return "\n".join(lines)

    def _too_long(self, shown: str, seconds: float) -> str:
        return (
            f"{shown} is {seconds:.0f} seconds long; at most "
            f"{self.settings.max_audio_s:g} seconds can be transcribed"
        )

    # ------------------------------------------------------------------ policy hooks

    def _check_speech(self, text: str, path: str, voice: str | None, speed: float | None) -> Path:
        if not text.strip():
            raise ToolError("give the text to speak")
        if len(text) > MAX_SPEECH_CHARS:
            raise ToolError(f"at most {MAX_SPEECH_CHARS} characters can be spoken into a file")
        if speed is not None and not MIN_SPEED <= speed <= MAX_SPEED:
            raise ToolError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
        if voice and voice.strip():
            from voiced.speech.tts import list_voices

            names = [v.name for v in list_voices()]
            if voice.strip() not in names:
                raise ToolError(f"unknown voice {voice!r}; voices: {', '.join(names) or 'none'}")
        target = self.sandbox.resolve_target(path)
        if target.suffix.lower() != ".wav":
            raise SandboxError("the file name must end in .wav")
        if target.is_dir():
            raise SandboxError(f"{self.sandbox.display(target)} is a folder")
        return target

    def transcribe_time_limit(self, values: dict[str, Any], default_s: float) -> float:
        """``default_s`` plus the audio's length times the real-time-factor bound."""
        seconds = None
        try:
            with self.sandbox.open_file(self.sandbox.resolve(values["path"])) as fd:
                seconds = _probe_seconds(f"/proc/self/fd/{fd}")
        except ToolError:
            pass  # the tool itself says what is wrong, quickly
        audio_s = min(seconds or self.settings.max_audio_s, self.settings.max_audio_s)
        return default_s + audio_s * TRANSCRIBE_SECONDS_PER_AUDIO_SECOND

    def check_transcribe(self, values: dict[str, Any]) -> PolicyDecision | None:
        target = self.sandbox.resolve(values["path"])
        if not target.is_file():
            what = "does not exist" if not target.exists() else "is not a file"
            raise SandboxError(f"{self.sandbox.display(target)} {what}")
        return None

    def check_speak(self, values: dict[str, Any]) -> PolicyDecision | None:
        target = self._check_speech(
            values["text"], values["path"], values.get("voice"), values.get("speed")
        )
        if target.exists() or target.is_symlink():
            return PolicyDecision.confirm(f"{self.sandbox.display(target)} already exists")
        return None

    def speak_question(self, values: dict[str, Any]) -> str:
        try:
            shown = self.sandbox.display(self.sandbox.resolve_target(values["path"]))
        except ToolError:
            shown = printable(values["path"])
        return f"Replace {shown} with new speech? Say yes or no."


def tools(
    settings: ToolsSettings,
    *,
    stt: SttSettings | None = None,
    tts: TtsSettings | None = None,
    audio_devices: DeviceLister | None = None,
) -> list[Tool]:
    audio = AudioTools(settings, stt, tts, audio_devices=audio_devices)
    return [
        Tool.from_function(
            audio.transcribe_audio,
            group="audio",
            check=audio.check_transcribe,
            time_limit=audio.transcribe_time_limit,
        ),
        Tool.from_function(
            audio.speak_to_file,
            group="audio",
            check=audio.check_speak,
            question=audio.speak_question,
            time_limit=audio.speak_time_limit,
        ),
        Tool.from_function(audio.list_audio_devices, group="audio"),
    ]
