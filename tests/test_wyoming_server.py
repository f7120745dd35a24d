"""``voiced serve`` over loopback, driven by the ``wyoming`` library's own client.

A real ``voiced serve`` subprocess (real whisper.cpp, Piper and wake-word models) on a free
port; the client is :class:`wyoming.client.AsyncTcpClient`, as Home Assistant uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.wake import Detect

from tests import ollama_fixtures
from tests.ollama_server import Reply, ToolCall
from tests.speech import synthesize, wer
from tests.store import seed_models
from voiced.decode import resample

ollama_server = ollama_fixtures.ollama_server
dead_ollama_url = ollama_fixtures.dead_ollama_url

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "Please turn on the lights in the kitchen."
TIMEOUT_S = 60.0
# Speech from the server's Piper (random noise in its graph, unlike tests/speech.py) heard back
# by Whisper tiny: a word or two may differ; other text would be far above this.
HEARD_BACK_WER = 0.3


class Server:
    """A running ``voiced serve``: its address, and its stderr when it is gone."""

    def __init__(self, process: subprocess.Popen[str], host: str, port: int) -> None:
        self.process = process
        self.host = host
        self.port = port

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient(self.host, self.port)


@contextlib.contextmanager
def running_server(
    home: Path, config: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    config_path = home / "config.yaml"
    config_path.write_text(config)
    env = dict(os.environ, **(env or {}), VOICED_HOME=str(home), VOICED_CONFIG=str(config_path))
    env.pop("OLLAMA_HOST", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "voiced", "serve", "--uri", "tcp://127.0.0.1:0", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("listening on tcp://"), f"voiced serve did not start: {line!r}"
        host, port = line.strip().removeprefix("listening on tcp://").rsplit(":", 1)
        yield Server(process, host, int(port))
        assert process.poll() is None, "voiced serve died during the test"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_store: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve_home")
    seed_models(home, whisper_store)
    config = "serve:\n  idle_timeout_s: 3\n  max_audio_s: 8\n  max_text_chars: 500\n"
    with running_server(home, config) as running:
        yield running


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


async def read_until(client: AsyncTcpClient, *types: str) -> list[Event]:
    """Events up to and including the first of ``types`` (or up to the connection's end)."""
    events = []
    while True:
        event = await client.read_event()
        if event is None:
            return events
        events.append(event)
        if event.type in types:
            return events


def audio_events(audio: np.ndarray, rate: int, channels: int = 1) -> list[Event]:
    """Float audio (frames x channels, or mono) as audio-start, 100 ms chunks, audio-stop."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = rate // 10 * 2 * channels
    events = [AudioStart(rate=rate, width=2, channels=channels).event()]
    for start in range(0, len(pcm), step):
        chunk = AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[start : start + step])
        events.append(chunk.event())
    events.append(AudioStop().event())
    return events


async def transcribe(server: Server, events: list[Event], **request: str) -> list[Event]:
    async with server.client() as client:
        await client.write_event(Transcribe(**request).event())
        for event in events:
            await client.write_event(event)
        return await read_until(client, "transcript-stop", "error")


def speech_audio(events: list[Event]) -> tuple[np.ndarray, int]:
    """The 16-bit mono audio of audio-start/-chunk/-stop events as float32, and its rate."""
    start = next(AudioStart.from_event(e) for e in events if AudioStart.is_type(e.type))
    assert (start.width, start.channels) == (2, 1)
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, start.rate


def test_describe_lists_what_this_install_has(server: Server) -> None:
    async def go() -> Info:
        async with server.client() as client:
            await client.write_event(Describe().event())
            events = await read_until(client, "info")
            return Info.from_event(events[-1])

    info = run(go())
    (asr,) = info.asr
    assert asr.supports_transcript_streaming
    # Installed models only: tiny.en-q8_0 is (English only); the catalogue's others are not.
    assert {m.name: m.languages for m in asr.models} == {"tiny.en-q8_0": ["en"]}
    (tts,) = info.tts
    assert tts.supports_synthesize_streaming
    voices = {v.name: v.languages for v in tts.voices}
    assert voices == {"en_US-joe-medium": ["en_US", "en"]}
    (wake,) = info.wake
    phrases = {m.name: m.phrase for m in wake.models}
    assert phrases["hey_jarvis"] == "Hey Jarvis"
    assert {"okay_nabu", "alexa"} <= set(phrases)
    assert info.handle == []  # serve.conversation is off by default


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2), (8000, 1)])
def test_transcribe_audio_of_any_rate_and_channels(
    server: Server, rate: int, channels: int
) -> None:
    audio = synthesize(SENTENCE, rate=rate)
    if channels == 2:  # the voice on the left, a quieter copy on the right
        audio = np.stack([audio, audio * 0.5], axis=1).reshape(-1)
    events = run(transcribe(server, audio_events(audio, rate, channels), language="en"))
    types = [e.type for e in events]
    assert types[0] == "transcript-start"
    assert types[-2:] == ["transcript", "transcript-stop"]
    assert "transcript-chunk" in types
    transcript = Transcript.from_event(events[-2])
    assert wer(SENTENCE, transcript.text) <= 0.15, transcript.text
    assert transcript.language == "en"
    chunks = " ".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert chunks.split() == transcript.text.split()


def test_silence_is_an_empty_transcript(server: Server) -> None:
    quiet = np.zeros(16000, dtype=np.float32)
    events = run(transcribe(server, audio_events(quiet, 16000)))
    assert Transcript.from_event(events[-2]).text == ""


def test_a_language_the_model_cannot_hear_is_an_error_and_the_connection_goes_on(
    server: Server,
) -> None:
    async def go() -> list[Event]:
        async with server.client() as client:
            await client.write_event(Transcribe(language="de").event())
            for event in audio_events(synthesize(SENTENCE), 16000):
                await client.write_event(event)
            events = await read_until(client, "transcript-stop", "error")
            await client.write_event(Ping(text="still there").event())
            return events + await read_until(client, "pong")

    events = run(go())
    assert events[0].type == "error"
    assert events[0].data["code"] == "unsupported-language"
    assert "English-only" in events[0].data["text"]
    assert events[-1].type == "pong"


def test_synthesize_speaks_the_text(server: Server, stt) -> None:  # type: ignore[no-untyped-def]
    async def go() -> list[Event]:
        async with server.client() as client:
            await client.write_event(Synthesize(text="Hello there. " + SENTENCE).event())
            return await read_until(client, "audio-stop", "error")

    events = run(go())
    assert events[0].type == "audio-start"
    assert events[-1].type == "audio-stop"
    audio, rate = speech_audio(events)
    heard = stt.transcribe(resample(audio, rate, 16000)).text
    assert wer("Hello there. " + SENTENCE, heard) <= HEARD_BACK_WER, heard


def test_streaming_synthesis_speaks_each_sentence_as_its_text_completes(
    server: Server,
    stt,  # type: ignore[no-untyped-def]
) -> None:
    first, second = "The weather is fine today.", "Tomorrow it will rain in the evening."

    async def go() -> tuple[list[Event], list[Event]]:
        async with server.client() as client:
            await client.write_event(SynthesizeStart().event())
            for piece in ["The weather ", "is fine today.", " Tomorrow it will"]:
                await client.write_event(SynthesizeChunk(text=piece).event())
            # The first sentence is complete: its audio comes before the rest is even sent.
            early = await read_until(client, "audio-chunk", "error")
            await client.write_event(SynthesizeChunk(text=" rain in the evening.").event())
            # Home Assistant also sends the whole text for older servers: not spoken twice.
            await client.write_event(Synthesize(text=f"{first} {second}").event())
            await client.write_event(SynthesizeStop().event())
            return early, await read_until(client, "synthesize-stopped", "error")

    early, rest = run(go())
    assert [e.type for e in early] == ["audio-start", "audio-chunk"]
    events = early + rest
    types = [e.type for e in events]
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert types.count("audio-start") == 1
    audio, rate = speech_audio(events)
    heard = stt.transcribe(resample(audio, rate, 16000)).text
    assert wer(f"{first} {second}", heard) <= HEARD_BACK_WER, heard


def test_wake_word_detection(server: Server) -> None:
    async def detect(audio: np.ndarray) -> list[Event]:
        async with server.client() as client:
            await client.write_event(Detect(names=["hey_jarvis"]).event())
            for event in audio_events(audio, 16000):
                await client.write_event(event)
            return await read_until(client, "not-detected", "error", "detection")

    hits = run(detect(synthesize("Hey Jarvis, what time is it?")))
    assert hits[-1].type == "detection"
    assert hits[-1].data["name"] == "hey_jarvis"
    misses = run(detect(synthesize(SENTENCE)))
    assert [e.type for e in misses] == ["not-detected"]


def test_four_clients_at_once(server: Server) -> None:
    texts = [
        SENTENCE,
        "What time is it?",
        "Set a timer for ten minutes.",
        "Good morning, how are you?",
    ]

    async def go() -> list[list[Event]]:
        return await asyncio.gather(
            *(
                transcribe(server, audio_events(synthesize(text, seed=i), 16000))
                for i, text in enumerate(texts)
            )
        )

    for text, events in zip(texts, run(go()), strict=True):
        heard = Transcript.from_event(events[-2]).text
        assert wer(text, heard) <= 0.2, (text, heard)


def bad_input_cases() -> list[tuple[str, list[Event], str]]:
    speech = audio_events(synthesize(SENTENCE), 16000)
    return [
        ("unknown event", [Event(type="make-coffee")], "unknown-event"),
        (
            "width 7",
            [AudioStart(rate=16000, width=7, channels=1).event(), *speech[1:]],
            "bad-audio-format",
        ),
        (
            "odd bytes",
            [
                speech[0],
                AudioChunk(rate=16000, width=2, channels=1, audio=b"\x01\x02\x03").event(),
                speech[-1],
            ],
            "bad-audio-format",
        ),
        ("empty audio", [speech[0], speech[-1]], "empty-audio"),
        ("chunk without fields", [Event(type="audio-chunk", payload=b"\0\0")], "bad-event"),
        (
            "unknown voice",
            [Event("synthesize", {"text": "Hi.", "voice": {"name": "nobody"}})],
            "unknown-voice",
        ),
        ("empty text", [Synthesize(text="  ").event()], "empty-text"),
        ("conversation off", [Transcript(text="hello").event()], "not-supported"),
        # serve.max_audio_s is 8 here: the rest of that audio is dropped, not buffered.
        ("audio too long", audio_events(np.zeros(9 * 16000, np.float32), 16000), "audio-too-long"),
        ("text too long", [Synthesize(text="Hello. " * 80).event()], "text-too-long"),
        (
            "streamed text too long",
            [SynthesizeStart().event()] + [SynthesizeChunk(text="Hi " * 50).event()] * 4,
            "text-too-long",
        ),
    ]


@pytest.mark.parametrize(
    ("events", "code"),
    [case[1:] for case in bad_input_cases()],
    ids=[case[0] for case in bad_input_cases()],
)
def test_bad_input_gets_an_error_and_the_connection_goes_on(
    server: Server, events: list[Event], code: str
) -> None:
    async def go() -> list[Event]:
        async with server.client() as client:
            for event in events:
                await client.write_event(event)
            got = await read_until(client, "error")
            await client.write_event(Ping().event())
            return got + await read_until(client, "pong")

    events_back = run(go())
    assert events_back[0].type == "error", events_back
    assert events_back[0].data["code"] == code
    assert events_back[0].data["text"]
    assert [e.type for e in events_back] == ["error", "pong"]


def raw_exchange(server: Server, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection((server.host, server.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def error_codes(raw: bytes) -> list[str]:
    from wyoming.event import read_event

    stream = io.BytesIO(raw)
    codes = []
    while (event := read_event(stream)) is not None:
        codes.append(event.data.get("code", event.type))
    return codes


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not json\n",
        b'["a list"]\n',
        b'{"data": {}}\n',
        b'{"type": "transcribe", "data": "not an object"}\n',
        b'{"type": "audio-chunk", "payload_length": 999999999}\n',
    ],
    ids=["not json", "a list", "no type", "data not an object", "huge payload"],
)
def test_a_malformed_event_closes_that_connection_with_an_error(
    server: Server, garbage: bytes
) -> None:
    assert error_codes(raw_exchange(server, garbage)) == ["malformed-event"]
    assert error_codes(raw_exchange(server, b'{"type": "ping"}\n' + garbage)) == [
        "pong",
        "malformed-event",
    ]
    events = run(transcribe(server, audio_events(synthesize(SENTENCE), 16000)))
    assert wer(SENTENCE, Transcript.from_event(events[-2]).text) <= 0.15


def test_a_client_that_vanishes_mid_audio_or_never_stops_harms_no_one(server: Server) -> None:
    speech = audio_events(synthesize(SENTENCE), 16000)

    async def vanish() -> None:
        async with server.client() as client:
            await client.write_event(Transcribe().event())
            for event in speech[: len(speech) // 2]:
                await client.write_event(event)

    async def never_stop() -> list[Event]:
        async with server.client() as client:
            for event in speech[:-1]:
                await client.write_event(event)
            # The server must not wait for ever: an idle-timeout error, then it hangs up.
            return await read_until(client, "never")

    async def go() -> tuple[list[Event], list[Event]]:
        await vanish()
        silent = asyncio.ensure_future(never_stop())
        normal = await transcribe(server, speech)
        return await silent, normal

    silent, normal = run(go())
    assert [e.data.get("code") for e in silent] == ["idle-timeout"]
    assert wer(SENTENCE, Transcript.from_event(normal[-2]).text) <= 0.15


# -- conversation -----------------------------------------------------------------------------


def conversation_config(url: str, files: Path | None = None) -> str:
    tools = f"tools:\n  enabled: [time, files]\n  file_roots: [{files}]\n" if files else ""
    return (
        "serve:\n  conversation: true\n"
        f"llm:\n  host: {url}\n  request_timeout_s: 5\n  load_timeout_s: 5\n{tools}"
    )


def test_a_transcript_is_one_assistant_turn_and_the_connection_one_conversation(
    ollama_server,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    whisper_store: Path,
) -> None:
    files = tmp_path_factory.mktemp("files")  # outside VOICED_HOME, which tools may not touch
    target = files / "note.txt"
    ollama_server.script(
        Reply(content=["It is ", "sunny. ", "Enjoy it."]),
        Reply(content=["You asked about the weather."]),
        # A tool that needs a spoken yes: nobody can give it over Wyoming.
        Reply(tool_calls=[ToolCall("write_file", {"path": str(target), "content": "hi"})]),
        Reply(content=["I could not write it."]),
    )
    seed_models(tmp_path, whisper_store)

    async def go(server: Server) -> tuple[Info, list[Event], list[Event], list[Event]]:
        async with server.client() as client:
            await client.write_event(Describe().event())
            info = Info.from_event((await read_until(client, "info"))[-1])
            await client.write_event(Transcript(text="How is the weather?").event())
            first = await read_until(client, "handled-stop", "not-handled", "error")
            await client.write_event(Transcript(text="What did I ask?").event())
            second = await read_until(client, "handled-stop", "not-handled", "error")
            await client.write_event(Transcript(text="Write hi into note.txt").event())
            third = await read_until(client, "handled-stop", "not-handled", "error")
            return info, first, second, third

    with running_server(tmp_path, conversation_config(ollama_server.url, files)) as server:
        info, first, second, third = run(go(server))
    (handle,) = info.handle
    assert handle.supports_handled_streaming
    assert [m.name for m in handle.models] == ["gpt-oss:20b"]
    types = [e.type for e in first]
    assert types[0] == "handled-start"
    assert types[-2:] == ["handled", "handled-stop"]
    chunks = "".join(e.data["text"] for e in first if e.type == "handled-chunk")
    assert chunks == "It is sunny. Enjoy it."
    assert Handled.from_event(first[-2]).text == "It is sunny. Enjoy it."
    assert Handled.from_event(second[-2]).text == "You asked about the weather."
    # One conversation per connection: the second request carries the first turn.
    messages = ollama_server.chat_requests[1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "How is the weather?",
        "What did I ask?",
    ]
    assert "It is sunny" in messages[2]["content"]
    # Tools that need confirmation are declined, and the model is told so.
    assert Handled.from_event(third[-2]).text == "I could not write it."
    assert not target.exists()
    tool_result = ollama_server.chat_requests[3]["messages"][-1]
    assert tool_result["role"] == "tool" and "did not confirm" in tool_result["content"]


def test_an_unreachable_llm_is_not_handled_with_a_reason(
    dead_ollama_url: str, tmp_path: Path, whisper_store: Path
) -> None:
    seed_models(tmp_path, whisper_store)

    async def go(server: Server) -> list[Event]:
        async with server.client() as client:
            await client.write_event(Transcript(text="Hello?").event())
            events = await read_until(client, "handled-stop", "not-handled", "error")
            await client.write_event(Ping().event())
            return events + await read_until(client, "pong")

    with running_server(tmp_path, conversation_config(dead_ollama_url)) as server:
        events = run(go(server))
    assert [e.type for e in events] == ["not-handled", "pong"]
    assert "reach" in NotHandled.from_event(events[0]).text


def test_zeroconf_announces_the_server_for_home_assistant(
    tmp_path: Path, whisper_store: Path
) -> None:
    from zeroconf.asyncio import AsyncZeroconf

    seed_models(tmp_path, whisper_store)
    name = f"voiced-test-{os.getpid()}"

    async def look_up() -> object:
        zeroconf = AsyncZeroconf()
        try:
            service = f"{name}._wyoming._tcp.local."
            return await zeroconf.async_get_service_info("_wyoming._tcp.local.", service, 5000)
        finally:
            await zeroconf.async_close()

    with running_server(tmp_path, "", "--zeroconf", name) as server:
        found = run(look_up())
        assert found is not None, "not announced"
        assert found.port == server.port  # type: ignore[attr-defined]


def test_serve_tells_systemd_it_is_ready_and_pings_the_watchdog(
    tmp_path: Path, whisper_store: Path
) -> None:
    from tests.notify_socket import NotifySocket

    seed_models(tmp_path, whisper_store)
    notify = NotifySocket(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    try:
        with running_server(tmp_path, "", env=env) as server:
            time.sleep(1.5)  # a few watchdog intervals (0.5 s each)
            address = f"tcp://{server.host}:{server.port}"
        assert "READY=1" in notify.messages
        assert f"STATUS=serving on {address}" in notify.messages
        assert "WATCHDOG=1" in notify.messages
        for _ in range(50):  # the collecting thread may not have read the last datagram yet
            if "STOPPING=1" in notify.messages:
                break
            time.sleep(0.1)
        assert "STOPPING=1" in notify.messages  # SIGTERM: a clean stop
    finally:
        notify.close()


# -- voiced run's remote engines (stt.server, tts.server) against voiced serve ------------------


class MustNotRun:
    """A local engine that fails the test when used: the server was meant to do the work."""

    vad = None
    settings = None
    sample_rate = 22050

    def transcribe(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("transcribed locally")

    def sentences(self, text: str) -> None:
        raise AssertionError("spoke locally")

    def silence(self) -> np.ndarray:
        return np.zeros(0, np.float32)


def test_remote_stt_and_tts_use_the_server(server: Server, stt) -> None:  # type: ignore[no-untyped-def]
    from voiced.speech.remote import RemoteSpeechToText, RemoteTextToSpeech

    uri = f"tcp://{server.host}:{server.port}"
    remote = RemoteSpeechToText(uri, MustNotRun())
    result = remote.transcribe(synthesize(SENTENCE))
    assert wer(SENTENCE, result.text) <= 0.15, result.text
    assert result.language == "en"

    local_voice = MustNotRun()
    local_voice.sample_rate = 16000  # the server's 22050 Hz voice is converted to it
    speech = RemoteTextToSpeech(uri, local_voice)
    (audio,) = list(speech.sentences(SENTENCE))
    heard = stt.transcribe(audio).text
    assert wer(SENTENCE, heard) <= HEARD_BACK_WER, heard


def hang_up_server() -> tuple[str, socket.socket]:
    """A server that takes a connection, reads a little and hangs up (dies mid-request)."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)

    threading.Thread(target=serve, daemon=True).start()
    host, port = listener.getsockname()
    return f"tcp://{host}:{port}", listener


def test_remote_stt_falls_back_to_the_local_model_and_waits_before_retrying(
    stt,  # type: ignore[no-untyped-def]
    dead_ollama_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from voiced.speech.remote import RemoteSpeechToText

    dead_uri = dead_ollama_url.replace("http://", "tcp://")  # a port nobody listens on
    hang_up_uri, listener = hang_up_server()
    try:
        for uri, reason in [(dead_uri, "refused"), (hang_up_uri, "hung up")]:
            caplog.clear()
            remote = RemoteSpeechToText(uri, stt)
            for _ in range(2):
                result = remote.transcribe(synthesize(SENTENCE))
                assert wer(SENTENCE, result.text) <= 0.15, result.text
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 1, warnings  # the second utterance did not try the server
            assert uri in warnings[0] and reason in warnings[0].lower()
            assert "working locally" in warnings[0]
    finally:
        listener.close()


def test_remote_tts_falls_back_to_the_local_voice(dead_ollama_url: str) -> None:
    from voiced.config import TtsSettings
    from voiced.speech.remote import RemoteTextToSpeech
    from voiced.speech.tts import TextToSpeech

    local = TextToSpeech.from_settings(TtsSettings())
    speech = RemoteTextToSpeech(dead_ollama_url.replace("http://", "tcp://"), local)
    (audio,) = list(speech.sentences("Hello there."))
    assert audio.size > local.sample_rate // 4


def test_the_daemon_uses_the_configured_servers(
    server: Server, dead_ollama_url: str, tmp_path: Path
) -> None:
    from voiced.config import load
    from voiced.service.daemon import Daemon
    from voiced.speech.remote import RemoteSpeechToText, RemoteTextToSpeech

    uri = f"tcp://{server.host}:{server.port}"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"stt:\n  server: {uri}\ntts:\n  server: {uri}\nllm:\n  host: {dead_ollama_url}\n"
    )
    daemon = Daemon(load(config))
    daemon.load()
    try:
        assert isinstance(daemon.stt, RemoteSpeechToText) and daemon.stt.server.uri == uri
        assert isinstance(daemon.tts, RemoteTextToSpeech) and daemon.tts.server.uri == uri
        heard = daemon.stt.transcribe(synthesize(SENTENCE)).text
        assert wer(SENTENCE, heard) <= 0.15, heard
    finally:
        daemon.speaker.close()
        daemon.player.close()


def test_doctor_checks_the_speech_servers(
    server: Server, dead_ollama_url: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from voiced.cli import main

    others = ["stt", "wake", "tts", "input", "output", "echo", "ollama", "model", "transcripts"]
    skip = [arg for name in others for arg in ("--skip", name)]
    uri = f"tcp://{server.host}:{server.port}"
    dead = dead_ollama_url.replace("http://", "tcp://")
    config = tmp_path / "config.yaml"

    config.write_text(f"stt:\n  server: {uri}\ntts:\n  server: {uri}\n")
    result = CliRunner().invoke(main, ["--config", str(config), "doctor", *skip])
    assert result.exit_code == 0, result.output
    assert (
        f"ok   speech servers: speech-to-text: voiced-whisper at {uri}; "
        f"text-to-speech: voiced-piper at {uri}"
    ) in result.stdout

    config.write_text(f"stt:\n  server: {dead}\n")
    result = CliRunner().invoke(main, ["--config", str(config), "doctor", *skip])
    assert result.exit_code == 0, result.output  # a warning: voiced works on without it
    assert f"warn speech servers: speech-to-text server {dead}: " in result.stdout
    assert "voiced uses its own models" in result.stdout


def test_work_beyond_the_queue_bound_is_answered_busy_at_once() -> None:
    import threading

    from voiced.service.wyoming_server import Busy, WorkQueue

    release = threading.Event()

    async def go() -> list[object]:
        queue = WorkQueue(workers=1, max_pending=1)
        running = asyncio.ensure_future(queue.run(release.wait))
        waiting = asyncio.ensure_future(queue.run(lambda: "second"))
        await asyncio.sleep(0.05)  # both are in: one on the worker, one waiting
        with pytest.raises(Busy):
            await queue.run(lambda: "third")
        release.set()
        return [await running, await waiting, await queue.run(lambda: "fourth")]

    try:
        assert run(go()) == [True, "second", "fourth"]
    finally:
        release.set()
