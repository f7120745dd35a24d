"""The conversation engine against the scripted Ollama server (the real client in between)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from tests import ollama_fixtures
from tests.ollama_server import (
    DEFAULT_MODEL,
    ERROR_PARSING_TOOL_CALL,
    OllamaTestServer,
    Reply,
    ToolCall,
    plain_model_show,
)
from voiced.brain import assistant as assistant_module
from voiced.brain.assistant import Assistant, TurnError, TurnResult
from voiced.brain.tools.registry import Tool, ToolRegistry
from voiced.config import LlmSettings

ollama_server = ollama_fixtures.ollama_server
# A model load longer than the tests' idle limit (1 s), as gpt-oss:20b's 45 s are longer than
# the default 30 s; kept short so the tests stay quick.
LOAD_S = 4.0
# Longer than the assistant's loading notice wait (2 s).
LOADING_SILENCE_S = assistant_module.LOADING_NOTICE_S + 1.0
dead_ollama_url = ollama_fixtures.dead_ollama_url
unanswered_ollama_url = ollama_fixtures.unanswered_ollama_url


class Thermometer:
    """Test tools with observable side effects."""

    def __init__(self) -> None:
        self.readings: list[str] = []
        self.resets = 0

    def registry(self, **kwargs: Any) -> ToolRegistry:
        def room_temperature(room: str, unit: str = "celsius") -> str:
            """Read the temperature in a room.

            Args:
                room: Which room, such as kitchen.
                unit: celsius or fahrenheit.
            """
            self.readings.append(room)
            return f"{room}: 21.5 degrees {unit}"

        def reset_thermostat() -> str:
            """Reset the thermostat to its defaults."""
            self.resets += 1
            return "thermostat reset"

        return ToolRegistry(
            [
                Tool.from_function(room_temperature, group="test"),
                Tool.from_function(reset_thermostat, group="test", needs_confirmation=True),
            ],
            **kwargs,
        )


def settings(server_url: str | None, **changes: Any) -> LlmSettings:
    values: dict[str, Any] = {"host": server_url, "idle_timeout_s": 1.0}
    values.update(changes)
    return LlmSettings(**values)


def make(
    server: OllamaTestServer, registry: ToolRegistry | None = None, **changes: Any
) -> Assistant:
    return Assistant(settings(server.url, **changes), registry)


def last_messages(server: OllamaTestServer, index: int = -1) -> list[dict[str, Any]]:
    return server.chat_requests[index]["messages"]


def timed(ask: Callable[[], TurnResult]) -> tuple[TurnResult, float]:
    """The turn's result and its wall time, for the bounds that prove a turn cannot hang."""
    started = time.monotonic()
    result = ask()
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- streaming


def test_plain_answer_streams_piece_by_piece(ollama_server: OllamaTestServer) -> None:
    gate = threading.Event()
    ollama_server.script(
        Reply(thinking=["User greets."], content=["Hello", " there", "."], gate=gate, gate_after=2)
    )
    pieces: list[str] = []
    sent_before_gate: list[int] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if not gate.is_set():
            # The server holds the rest of the reply until the first piece has arrived here.
            sent_before_gate.append(len(pieces))
            gate.set()

    result = make(ollama_server).ask("hi", on_text)
    assert result.ok, result.error_message
    assert pieces == ["Hello", " there", "."]
    assert sent_before_gate == [1]
    assert result.text == "Hello there."
    assert result.thinking == "User greets."  # kept, never handed to the consumer
    assert result.timings.first_token_ms is not None
    assert result.timings.first_token_ms <= result.timings.total_ms
    assert result.requests == 1 and result.done_reason == "stop"


def test_request_carries_settings_system_prompt_and_tools(ollama_server: OllamaTestServer) -> None:
    registry = Thermometer().registry()
    ollama_server.script(Reply(content=["Fine."]))
    make(ollama_server, registry).ask("how are you")
    sent = ollama_server.chat_requests[0]
    assert sent["model"] == DEFAULT_MODEL
    assert sent["stream"] is True
    assert sent["think"] == "low"
    assert sent["keep_alive"] == "30m"
    assert sent["options"] == {"temperature": 0.7, "num_ctx": 8192}
    assert sent["tools"] == registry.schemas()
    system, user = sent["messages"]
    today = date.today()
    assert system["role"] == "system"
    assert f"{today.day} {today:%B %Y}" in system["content"]
    assert "spoken aloud" in system["content"] and "{date}" not in system["content"]
    assert user == {"role": "user", "content": "how are you"}


def test_a_configured_prompt_without_a_date_placeholder_still_gets_the_date(
    ollama_server: OllamaTestServer,
) -> None:
    assistant = make(ollama_server, system_prompt="Answer like a pirate.")
    assert assistant.system_prompt(date(2025, 3, 3)) == (
        "Answer like a pirate.\nToday is Monday 3 March 2025."
    )
    ollama_server.script(Reply(content=["Arr."]))
    assistant.ask("hi")
    system = last_messages(ollama_server)[0]["content"]
    today = date.today()
    assert system.startswith("Answer like a pirate.")
    assert f"{today.day} {today:%B %Y}" in system


def test_ollama_host_is_honoured_when_llm_host_is_null(
    ollama_server: OllamaTestServer, dead_ollama_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.script(Reply(content=["Via the environment."]), Reply(content=["unused"]))
    assert Assistant(settings(None)).ask("hi").text == "Via the environment."
    monkeypatch.setenv("OLLAMA_HOST", dead_ollama_url)
    assert Assistant(settings(ollama_server.url)).ask("hi").ok  # llm.host wins


# --------------------------------------------------------------------------- tools


def test_text_given_before_tools_run_is_announced_complete(
    ollama_server: OllamaTestServer,
) -> None:
    # "Let me check." can be spoken while the tools run, not only after the next round.
    thermometer = Thermometer()
    ollama_server.script(
        Reply(
            content=["Let me check."], tool_calls=[ToolCall("room_temperature", {"room": "hall"})]
        ),
        Reply(tool_calls=[ToolCall("room_temperature", {"room": "attic"})]),
        Reply(content=["Both are warm."]),
    )
    events: list[str] = []
    result = make(ollama_server, thermometer.registry()).ask(
        "how warm is it",
        lambda piece: events.append(f"text {piece.strip()}"),
        on_tools=lambda: events.append(f"tools after {len(thermometer.readings)} readings"),
    )
    assert result.ok and thermometer.readings == ["hall", "attic"]
    # Once before the first tool; again before the second round's (nothing new was said, but
    # the text so far is still complete, so a second announcement does no harm).
    assert events == [
        "text Let me check.",
        "tools after 0 readings",
        "tools after 1 readings",
        "text Both are warm.",
    ]


def test_two_round_tool_call_keeps_thinking_and_sends_results(
    ollama_server: OllamaTestServer,
) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(
            thinking=["Need the ", "kitchen reading."],
            content=["Let me check."],
            tool_calls=[ToolCall("room_temperature", {"room": "kitchen"})],
        ),
        Reply(thinking=["Got it."], content=["It is 21.5 degrees ", "in the kitchen."]),
    )
    pieces: list[str] = []
    result = make(ollama_server, thermometer.registry()).ask(
        "how warm is the kitchen", pieces.append
    )
    assert result.ok
    assert thermometer.readings == ["kitchen"]
    # A space joins the rounds' content, so the two sentences stay two sentences.
    assert pieces == ["Let me check.", " It is 21.5 degrees ", "in the kitchen."]
    assert result.tool_rounds == 1 and result.requests == 2
    [call] = result.tool_calls
    assert (call.name, call.arguments, call.decision, call.error) == (
        "room_temperature",
        {"room": "kitchen", "unit": "celsius"},
        "allowed",
        None,
    )
    assert call.result == "kitchen: 21.5 degrees celsius"
    record = json.loads(json.dumps(result.to_dict()))
    assert record["assistant"] == "Let me check. It is 21.5 degrees in the kitchen."
    assert record["tool_calls"][0]["decision"] == "allowed" and record["error"] is None
    assert record["timings"]["first_token_ms"] is not None and "thinking" not in record

    second = last_messages(ollama_server)
    assert second[:2] == last_messages(ollama_server, 0)  # system + user unchanged
    assistant, tool = second[2], second[3]
    assert assistant == {
        "role": "assistant",
        "content": "Let me check.",
        "thinking": "Need the kitchen reading.",
        "tool_calls": [
            {"function": {"name": "room_temperature", "arguments": {"room": "kitchen"}}}
        ],
    }
    assert tool == {
        "role": "tool",
        "tool_name": "room_temperature",
        "content": "kitchen: 21.5 degrees celsius",
    }
    assert len(second) == 4


@pytest.mark.parametrize(
    ("mangled", "sent_back"),
    [("assistant<|channel|>analysis", "assistant"), ("<|channel|>commentary", "unknown_tool")],
)
def test_mangled_tool_name_goes_back_cleaned_as_an_error_and_the_turn_completes(
    ollama_server: OllamaTestServer, mangled: str, sent_back: str
) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(tool_calls=[ToolCall(mangled, {"room": "kitchen"})]),
        Reply(content=["Sorry, I could not read that."]),
    )
    result = make(ollama_server, thermometer.registry()).ask("kitchen temperature?")
    assert result.ok and result.text == "Sorry, I could not read that."
    assert result.tool_calls[0].decision == "unknown"
    assert thermometer.readings == []
    # <|...|> are harmony control tokens: echoed back, they would corrupt the prompt.
    follow_up = ollama_server.chat_requests[-1]
    assert "<|" not in json.dumps(follow_up)
    assistant_message, tool_message = last_messages(ollama_server)[-2:]
    assert assistant_message["tool_calls"] == [
        {"function": {"name": sent_back, "arguments": {"room": "kitchen"}}}
    ]
    assert tool_message["role"] == "tool" and tool_message["tool_name"] == sent_back
    assert f"there is no tool named '{sent_back}'" in tool_message["content"]
    assert "room_temperature" in tool_message["content"]


def test_functions_prefix_is_understood(ollama_server: OllamaTestServer) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(tool_calls=[ToolCall("functions.room_temperature", {"room": "hall"})]),
        Reply(content=["Done."]),
    )
    result = make(ollama_server, thermometer.registry()).ask("hall?")
    assert thermometer.readings == ["hall"]
    assert last_messages(ollama_server)[-1]["tool_name"] == "room_temperature"
    assert result.tool_calls[0].decision == "allowed"


def test_invalid_arguments_are_answered_with_the_validation_error(
    ollama_server: OllamaTestServer,
) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(tool_calls=[ToolCall("room_temperature", {"room": ["a", "b"], "floor": 2})]),
        Reply(content=["I need one room."]),
    )
    result = make(ollama_server, thermometer.registry()).ask("temperature")
    assert result.ok and thermometer.readings == []
    assert result.tool_calls[0].decision == "invalid"
    content = last_messages(ollama_server)[-1]["content"]
    assert content.startswith("error: invalid arguments:")
    assert (
        "room: Input should be a valid string" in content and "floor: unknown argument" in content
    )


def test_arguments_that_are_not_an_object_are_survived(ollama_server: OllamaTestServer) -> None:
    # Deliberately unfaithful: real Ollama sends objects; the client cannot parse a string here.
    bad_line = json.dumps(
        {
            "model": DEFAULT_MODEL,
            "created_at": "2026-01-01T00:00:00Z",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "room_temperature", "arguments": "kitchen"}}],
            },
            "done": False,
        }
    )
    ollama_server.script(Reply(raw_lines=[bad_line]), Reply(content=["Recovered."]))
    result = make(ollama_server, Thermometer().registry()).ask("kitchen")
    assert result.ok and result.text == "Recovered."
    assert result.retries == 1


def test_confirmation_needed_without_a_callback_is_declined(
    ollama_server: OllamaTestServer,
) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(tool_calls=[ToolCall("reset_thermostat", {})]), Reply(content=["I did not reset it."])
    )
    result = make(ollama_server, thermometer.registry()).ask("reset the thermostat")
    assert thermometer.resets == 0
    assert result.tool_calls[0].decision == "declined"
    assert "did not confirm" in last_messages(ollama_server)[-1]["content"]


def test_confirmed_call_runs(ollama_server: OllamaTestServer) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply(tool_calls=[ToolCall("reset_thermostat", {})]), Reply(content=["Reset."])
    )
    registry = thermometer.registry(confirm=lambda request: request.tool == "reset_thermostat")
    result = make(ollama_server, registry).ask("reset the thermostat")
    assert thermometer.resets == 1 and result.tool_calls[0].decision == "confirmed"


def test_tool_rounds_are_capped(ollama_server: OllamaTestServer) -> None:
    thermometer = Thermometer()
    loop = Reply(tool_calls=[ToolCall("room_temperature", {"room": "attic"})])
    ollama_server.script(loop, loop, Reply(content=["The attic is 21.5 degrees."]))
    result = make(ollama_server, thermometer.registry(), max_tool_rounds=2).ask("attic?")
    assert result.ok and result.tool_rounds == 2 and len(thermometer.readings) == 2
    requests = ollama_server.chat_requests
    assert len(requests) == 3
    assert requests[0]["tools"] and requests[1]["tools"]
    assert not requests[2].get("tools")  # the last round must answer in words

    ollama_server.script(loop, loop, loop)
    stubborn = make(ollama_server, thermometer.registry(), max_tool_rounds=2).ask("attic?")
    assert stubborn.error is TurnError.TOOL_ROUNDS
    assert stubborn.error_message == "That needed too many steps, so I stopped."
    assert len(ollama_server.chat_requests) == 6


def test_a_model_without_tools_or_thinking_is_still_used() -> None:
    with OllamaTestServer(models={"gemma3:1b": plain_model_show()}) as server:
        server.script(Reply(content=["Plain answer."]), Reply(content=["Again."]))
        assistant = make(server, Thermometer().registry(), model="gemma3:1b")
        result = assistant.ask("hi")
        assert result.ok and result.text == "Plain answer."
        assert [r.status for r in server.requests_to("/api/chat")] == [400, 400, 200]
        last = server.chat_requests[-1]
        assert not last.get("tools") and "think" not in last
        assert assistant.ask("again").requests == 1  # remembered: no more rejections


def test_a_rejected_request_reports_ollamas_reason(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply.http_error(400, "invalid options: num_gpu must be positive"))
    result = make(ollama_server).ask("hi")
    assert result.error is TurnError.BAD_REQUEST
    assert result.error_detail == "invalid options: num_gpu must be positive"


def test_without_tools_no_tools_are_sent(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["Plain."]))
    make(ollama_server, None).ask("hi")
    assert not ollama_server.chat_requests[0].get("tools")  # the client sends []


# --------------------------------------------------------------------------- failures


def test_error_parsing_tool_call_is_retried(ollama_server: OllamaTestServer) -> None:
    thermometer = Thermometer()
    ollama_server.script(
        Reply.stream_error(ERROR_PARSING_TOOL_CALL, after=2, thinking=["Call ", "it."]),
        Reply(tool_calls=[ToolCall("room_temperature", {"room": "den"})]),
        Reply(content=["The den is warm."]),
    )
    result = make(ollama_server, thermometer.registry()).ask("den?")
    assert result.ok and result.text == "The den is warm."
    assert result.retries == 1 and result.requests == 3
    requests = ollama_server.chat_requests
    assert requests[0]["messages"] == requests[1]["messages"]  # the same question again
    # The failed attempt's thinking is not carried into the next round.
    assert "Call it." not in json.dumps(last_messages(ollama_server))


def test_error_parsing_tool_call_twice_ends_with_a_spoken_error(
    ollama_server: OllamaTestServer,
) -> None:
    ollama_server.script(
        Reply.stream_error(ERROR_PARSING_TOOL_CALL, after=1, thinking=["x"]),
        Reply.stream_error(ERROR_PARSING_TOOL_CALL, after=1, thinking=["x"]),
    )
    assistant = make(ollama_server, Thermometer().registry())
    result = assistant.ask("den?")
    assert result.error is TurnError.STREAM_ERROR
    assert result.error_message == "The language model ran into an error. Please try again."
    assert assistant.history() == []  # nothing was said, nothing remembered


@pytest.mark.parametrize(
    ("replies", "ok", "error"),
    [
        (
            [Reply.http_error(500, "llama runner process has terminated"), Reply(content=["Ok."])],
            True,
            None,
        ),
        (
            [Reply.http_error(500, "boom"), Reply.http_error(500, "boom")],
            False,
            TurnError.SERVER_ERROR,
        ),
        ([Reply(thinking=["t"], content=["a"], drop_after=1), Reply(content=["Ok."])], True, None),
        ([Reply(content=[])], False, TurnError.EMPTY),
    ],
)
def test_http_errors_and_drops_before_speech_are_retried_once(
    ollama_server: OllamaTestServer, replies: list[Reply], ok: bool, error: TurnError | None
) -> None:
    ollama_server.script(*replies)
    result = make(ollama_server).ask("hi")
    assert result.ok is ok
    assert result.error is error
    if ok:
        assert result.text == "Ok." and result.retries == 1
    else:
        assert result.error_message


def test_stream_dropping_mid_reply_keeps_what_was_said(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["The answer ", "is ", "forty two."], drop_after=2))
    assistant = make(ollama_server)
    pieces: list[str] = []
    result = assistant.ask("the answer?", pieces.append)
    assert result.error is TurnError.DROPPED
    assert result.retries == 0  # a retry would repeat what was already spoken
    assert pieces == ["The answer ", "is "] and result.text == "The answer is "
    assert result.error_message == "The connection to the language model dropped. Please try again."
    assert assistant.history() == [
        {"role": "user", "content": "the answer?"},
        {"role": "assistant", "content": "The answer is"},
    ]


def test_a_stream_without_done_counts_as_dropped(ollama_server: OllamaTestServer) -> None:
    line = json.dumps(
        {"model": DEFAULT_MODEL, "message": {"role": "assistant", "content": ""}, "done": False}
    )
    ollama_server.script(Reply(raw_lines=[line]), Reply(raw_lines=[line]))
    result = make(ollama_server).ask("hi")
    assert result.error is TurnError.DROPPED and result.retries == 1


def test_stalled_server_hits_the_idle_timeout(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["Thinking", " hard"], stall_after=1))
    pieces: list[str] = []
    result, elapsed = timed(
        lambda: make(ollama_server, idle_timeout_s=1.0).ask("hi", pieces.append)
    )
    ollama_server.release_stalls()
    assert result.error is TurnError.STALLED
    assert elapsed < 10.0  # the idle limit (1 s), not the server's 60 s stall
    assert result.error_message == "The language model stopped responding. Please try again."
    assert pieces == ["Thinking"]


def test_a_model_load_longer_than_the_idle_limit_is_waited_for_on_one_request() -> None:
    # Ollama sends nothing, not even headers, while it loads; hanging up abandons the load.
    with OllamaTestServer(load_s=LOAD_S) as server:
        server.script(Reply(content=["Loaded."]))
        notices: list[str] = []
        assistant = make(server, idle_timeout_s=1.0)
        result = assistant.ask("hi", on_loading=lambda: notices.append("loading"))
        assert result.ok and result.text == "Loaded."
        assert result.requests == 1 and result.retries == 0
        assert [load.outcome for load in server.loads] == ["loaded"]
        # Never answered before: the silence is a load, and the user hears so once.
        assert notices == ["loading"] and result.loading_notice


def test_a_load_that_outlasts_the_load_timeout_is_given_up_once() -> None:
    with OllamaTestServer(load_s=60.0) as server:
        server.default_reply = Reply(content=["never"])
        assistant = make(server, idle_timeout_s=1.0, load_timeout_s=1.5)
        result, elapsed = timed(lambda: assistant.ask("hi"))
        assert result.error is TurnError.LOAD_TIMEOUT
        assert result.error_message == "The language model took too long to load, so I gave up."
        assert result.requests == 1 and result.retries == 0  # a retry would restart the load
        assert elapsed < 12.0  # about the load timeout (1.5 s), with CI margin


def test_a_reply_that_never_ends_is_stopped_at_the_request_timeout(
    ollama_server: OllamaTestServer,
) -> None:
    # Chunks keep coming, each well within the idle limit (ollama#12187: calls that never end).
    ollama_server.script(Reply(thinking=["hmm "] * 100, content=["x"], chunk_delay_s=0.1))
    assistant = make(ollama_server, idle_timeout_s=1.0, request_timeout_s=1.0)
    result, elapsed = timed(lambda: assistant.ask("hi"))
    assert result.error is TurnError.TIMEOUT
    assert result.error_message == "That took too long, so I stopped."
    assert result.retries == 0 and result.requests == 1
    assert elapsed < 6.0  # the whole reply would take 10 s
    assert assistant.history() == []


@pytest.mark.parametrize(
    ("reply", "spoken"),
    [
        (Reply(content=["never"], stall_after=0), []),  # model loading: no chunk at all
        (Reply(content=["Thinking", " hard"], stall_after=1), ["Thinking"]),
    ],
)
def test_barge_in_while_the_server_is_silent_ends_the_turn_at_once(
    ollama_server: OllamaTestServer, reply: Reply, spoken: list[str]
) -> None:
    ollama_server.default_reply = reply
    cancel = threading.Event()
    barge_in = threading.Timer(0.3, cancel.set)
    barge_in.start()
    pieces: list[str] = []
    assistant = make(ollama_server, idle_timeout_s=5.0, request_timeout_s=30.0)
    result, elapsed = timed(lambda: assistant.ask("hi", pieces.append, cancel=cancel))
    barge_in.cancel()
    ollama_server.release_stalls()
    assert result.interrupted
    assert elapsed < 2.0  # not the 5 s idle limit
    assert result.requests == 1 and result.retries == 0
    assert pieces == spoken


def test_no_retry_after_a_barge_in(ollama_server: OllamaTestServer) -> None:
    cancel = threading.Event()

    def barge_in_then_fail(request: dict[str, Any]) -> Reply:
        cancel.set()  # the user talks while the request is on its way
        return Reply.http_error(500, "llama runner process has terminated")

    ollama_server.default_reply = barge_in_then_fail
    result = make(ollama_server).ask("hi", cancel=cancel)
    assert result.interrupted
    assert result.requests == 1 and result.retries == 0


def test_connection_refused(dead_ollama_url: str) -> None:
    assistant = Assistant(settings(dead_ollama_url))
    result, elapsed = timed(lambda: assistant.ask("hi"))
    assert result.error is TurnError.UNREACHABLE
    assert result.error_message == "I can't reach the language model right now. Is Ollama running?"
    assert result.retries == 0 and assistant.history() == []
    assert elapsed < 5.0


def test_a_host_that_never_answers_the_connect_is_unreachable_without_retries(
    unanswered_ollama_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A firewalled or dead address: the connect times out. It is not a model being loaded.
    monkeypatch.setattr(assistant_module, "CONNECT_TIMEOUT_S", 0.5)
    assistant = Assistant(settings(unanswered_ollama_url, request_timeout_s=30.0))
    result, elapsed = timed(lambda: assistant.ask("hi"))
    assert result.error is TurnError.UNREACHABLE
    assert result.error_message == "I can't reach the language model right now. Is Ollama running?"
    assert result.requests == 1 and result.retries == 0
    assert elapsed < 5.0  # one connect timeout, not the 30 s request timeout
    assert assistant.history() == []


def test_missing_model(ollama_server: OllamaTestServer) -> None:
    result = make(ollama_server, model="llama9:70b").ask("hi")
    assert result.error is TurnError.MODEL_MISSING
    assert result.error_message == "The model llama9 70b is not installed in Ollama yet."


def test_server_back_after_being_down(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server)
    ollama_server.stop()
    assert assistant.ask("hi").error is TurnError.UNREACHABLE
    with OllamaTestServer(port=ollama_server.port) as again:
        again.script(Reply(content=["Back."]))
        assert assistant.ask("hi again").text == "Back."


def test_a_failing_consumer_does_not_break_the_turn(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["One.", " Two."]))

    def broken(piece: str) -> None:
        raise OSError("speaker gone")

    result = make(ollama_server).ask("count", broken)
    assert result.ok and result.text == "One. Two."


# --------------------------------------------------------------------------- history


def turn(server: OllamaTestServer, assistant: Assistant, user: str, reply: str) -> TurnResult:
    server.script(Reply(thinking=[f"thinking about {user}"], content=[reply]))
    return assistant.ask(user)


def test_history_carries_said_words_only(ollama_server: OllamaTestServer) -> None:
    thermometer = Thermometer()
    assistant = make(ollama_server, thermometer.registry())
    ollama_server.script(
        Reply(thinking=["check"], tool_calls=[ToolCall("room_temperature", {"room": "bath"})]),
        Reply(content=["The bath is 21.5."]),
    )
    assistant.ask("bath?")
    turn(ollama_server, assistant, "and now?", "Still 21.5.")
    messages = last_messages(ollama_server)
    assert messages[1:] == [
        {"role": "user", "content": "bath?"},
        {"role": "assistant", "content": "The bath is 21.5."},
        {"role": "user", "content": "and now?"},
    ]


def test_history_is_bounded_by_turns(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server, history_turns=2)
    for n in range(4):
        turn(ollama_server, assistant, f"question {n}", f"answer {n}")
    users = [m["content"] for m in last_messages(ollama_server) if m["role"] == "user"]
    assert users == ["question 1", "question 2", "question 3"]
    assert len(assistant.history()) == 4


def test_history_is_bounded_by_tokens(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server, history_tokens=256)
    long_answer = "word " * 300  # about 375 tokens on its own
    turn(ollama_server, assistant, "first", "short")
    turn(ollama_server, assistant, "second", long_answer)
    # The oldest turn went; the latest turn is kept even though it is over the budget.
    assert [m["content"] for m in assistant.history() if m["role"] == "user"] == ["second"]
    turn(ollama_server, assistant, "third", "short again")
    assert [m["content"] for m in assistant.history() if m["role"] == "user"] == ["third"]
    assert assistant.history_tokens() <= 256


def test_no_history_when_history_turns_is_zero(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server, history_turns=0)
    turn(ollama_server, assistant, "one", "1")
    turn(ollama_server, assistant, "two", "2")
    assert [m["role"] for m in last_messages(ollama_server)] == ["system", "user"]


def test_reset_forgets(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server)
    turn(ollama_server, assistant, "one", "1")
    assistant.reset()
    turn(ollama_server, assistant, "two", "2")
    assert [m["content"] for m in last_messages(ollama_server)][1:] == ["two"]


# --------------------------------------------------------------------------- interruption


def test_barge_in_stops_the_reply_and_history_keeps_what_was_spoken(
    ollama_server: OllamaTestServer,
) -> None:
    cancel = threading.Event()
    gate = threading.Event()
    ollama_server.script(
        Reply(content=["Paris is the capital. ", "It has many museums, ", "and parks."], gate=gate)
    )
    assistant = make(ollama_server)

    def on_text(piece: str) -> None:
        cancel.set()  # the user talks over the first sentence
        gate.set()

    result = assistant.ask("tell me about Paris", on_text, cancel=cancel)
    assert result.interrupted and result.ok
    assert result.text == "Paris is the capital. "
    assistant.clip_last_reply("Paris is the")
    turn(ollama_server, assistant, "what about Rome?", "Rome is old.")
    assert last_messages(ollama_server)[1:3] == [
        {"role": "user", "content": "tell me about Paris"},
        {"role": "assistant", "content": "Paris is the"},
    ]


def test_clip_during_the_turn_applies_when_it_ends(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["A long ", "reply."]))
    assistant = make(ollama_server)
    assistant.ask("hi", lambda piece: assistant.clip_last_reply("A long"))
    assert assistant.history()[-1] == {"role": "assistant", "content": "A long"}


def test_clip_after_a_turn_that_saved_nothing_keeps_the_previous_answer(
    ollama_server: OllamaTestServer,
) -> None:
    assistant = make(ollama_server)
    turn(ollama_server, assistant, "capital of France?", "Paris is the capital.")
    ollama_server.script(Reply.http_error(500, "boom"), Reply.http_error(500, "boom"))
    failed = assistant.ask("and Italy?")
    assert failed.error is TurnError.SERVER_ERROR
    # The user talks over the spoken error message: there is no reply of this turn to clip.
    assistant.clip_last_reply("The language model")
    assert assistant.history() == [
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
    ]
    assistant.reset()
    assistant.clip_last_reply("")
    assert assistant.history() == []


def test_clip_to_nothing_drops_the_reply(ollama_server: OllamaTestServer) -> None:
    assistant = make(ollama_server)
    turn(ollama_server, assistant, "hi", "Hello there.")
    assistant.clip_last_reply("")
    assert assistant.history() == [{"role": "user", "content": "hi"}]


def test_warm_up_loads_the_model(ollama_server: OllamaTestServer) -> None:
    make(ollama_server).warm_up()
    sent = ollama_server.chat_requests[0]
    assert sent["messages"] == [] and sent["keep_alive"] == "30m"
    assert ollama_server.pending_replies == 0


def test_a_turn_during_the_warm_up_waits_for_the_same_load() -> None:
    with OllamaTestServer(load_s=LOAD_S) as server:
        server.script(Reply(content=["Ready."]))
        assistant = make(server, idle_timeout_s=1.0)
        took: list[float] = []
        warm_up = threading.Thread(target=lambda: took.append(assistant.warm_up()))
        warm_up.start()
        deadline = time.monotonic() + 5
        while not server.loads and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assistant.loading
        notices: list[str] = []
        result = assistant.ask("hi", on_loading=lambda: notices.append("loading"))
        warm_up.join(10)
        assert result.ok and result.text == "Ready."
        assert result.requests == 1 and result.retries == 0
        # One load, started by the warm-up, held to its end, and shared with the turn.
        assert [load.outcome for load in server.loads] == ["loaded"]
        assert took and not assistant.loading
        assert notices == ["loading"]


def test_no_loading_notice_while_the_model_is_known_to_be_loaded() -> None:
    with OllamaTestServer(load_s=0.0) as server:
        gate = threading.Event()
        server.script(
            Reply(content=["First."]), Reply(content=["Slow.", " Prompt."], gate=gate, gate_after=0)
        )
        notices: list[str] = []
        assistant = make(server)
        assistant.ask("one")
        # A long silence with the model in memory (a long prompt being read): no notice.
        opener = threading.Timer(LOADING_SILENCE_S, gate.set)
        opener.start()
        result = assistant.ask("two", on_loading=lambda: notices.append("loading"))
        opener.cancel()
        assert result.ok and result.text == "Slow. Prompt."
        assert notices == []


def test_a_barge_in_during_a_load_leaves_the_load_going_for_the_next_turn() -> None:
    with OllamaTestServer(load_s=LOAD_S) as server:
        server.script(Reply(content=["never heard"]), Reply(content=["Loaded."]))
        assistant = make(server, idle_timeout_s=1.0)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        assert assistant.ask("hi", cancel=cancel).interrupted
        result = assistant.ask("hi again")
        assert result.ok
        assert [load.outcome for load in server.loads] == ["loaded"]


@pytest.mark.parametrize("version", ["0.11.4", "0.12.3", "0.12.6"])
def test_a_tool_call_ollama_could_not_parse_is_retried_in_every_versions_shape(
    version: str,
) -> None:
    with OllamaTestServer(version=version) as server:
        server.script(
            Reply.tool_call_error(after=1, thinking=["Call it."]),
            Reply.tool_call_error(after=0),
        )
        result = make(server, Thermometer().registry()).ask("den?")
        assert result.error is TurnError.STREAM_ERROR
        assert result.retries == 1 and "error parsing tool call" in (result.error_detail or "")
        assert result.error_message == "The language model ran into an error. Please try again."


@pytest.mark.parametrize("version", ["0.12.3", "0.12.6"])
def test_a_failure_before_the_first_chunk_is_a_server_error_in_every_versions_shape(
    version: str,
) -> None:
    with OllamaTestServer(version=version) as server:
        crash = "llama runner process has terminated: exit status 2"
        server.script(Reply.stream_error(crash), Reply(content=["Back."]))
        assert make(server).ask("hi").text == "Back."
        server.script(Reply.stream_error(crash), Reply.stream_error(crash))
        result = make(server).ask("hi")
        assert result.error is TurnError.SERVER_ERROR and result.retries == 1
        assert crash in (result.error_detail or "")


def test_a_model_too_big_for_memory_is_not_loaded_twice(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(
        Reply.http_error(
            500, "model requires more system memory (14.2 GiB) than is available (7.6 GiB)"
        ),
        Reply(content=["never"]),
    )
    result = make(ollama_server).ask("hi")
    assert result.error is TurnError.OUT_OF_MEMORY and result.requests == 1
    assert result.error_message == "There is not enough memory to load the language model."


def test_a_rejected_think_level_falls_back_to_true_not_to_none() -> None:
    # A thinking model that is not gpt-oss: older Ollama takes no level for it, and without
    # think its <think> text would come as content, to be spoken.
    show = plain_model_show("qwen3", "8.2B")
    show["capabilities"] = ["completion", "tools", "thinking"]
    with OllamaTestServer(models={"qwen3:8b": show}) as server:
        server.script(Reply(thinking=["Hm."], content=["Hi."]))
        result = make(server, model="qwen3:8b", think="low").ask("hi")
        assert result.ok and result.text == "Hi."
        assert [r.get("think") for r in server.chat_requests] == ["low", True]


def test_the_question_survives_a_prompt_over_num_ctx(ollama_server: OllamaTestServer) -> None:
    # Ollama keeps the system prompt and the last message and silently drops the oldest of the
    # rest; five rounds of 4000-character tool outputs with thinking would take the question.
    def system_log(lines: int = 100) -> str:
        """Read the newest lines of the system log.

        Args:
            lines: How many lines.
        """
        return "\n".join(
            f"Dec 02 23:{i % 60:02d}:00 host kernel: usb 1-{i}: device descriptor read/64, "
            "error -71"
            for i in range(lines)
        )[:4000]

    registry = ToolRegistry([Tool.from_function(system_log, group="test")])
    thinking = ["The log is long; I should read more of it to find the cause. " * 8]
    ollama_server.script(
        Reply(content=["An earlier answer that went on for a while. " * 20]),
        Reply(content=["Another earlier answer, just as long as the first. " * 20]),
        *[
            Reply(thinking=thinking, tool_calls=[ToolCall("system_log", {"lines": 100})])
            for _ in range(5)
        ],
        Reply(content=["The USB hub keeps failing."]),
    )
    assistant = make(ollama_server, registry, options={"num_ctx": 4096})
    assistant.ask("An earlier question about something else entirely. " * 10)
    assistant.ask("Another earlier question, also long. " * 10)
    question = "Why does my USB keyboard keep disconnecting?"
    result = assistant.ask(question)
    assert result.ok and result.tool_rounds == 5
    assert result.text == "The USB hub keeps failing."
    for seen in ollama_server.seen_messages[2:]:
        assert seen[0]["role"] == "system"
        assert {"role": "user", "content": question} in seen
    newest = ollama_server.seen_messages[-1][-1]
    assert newest["role"] == "tool" and "cut to fit" not in newest["content"]


def test_several_calls_in_a_chunk_of_their_own_work_too(ollama_server: OllamaTestServer) -> None:
    # gpt-oss's calls come one per response in the done chunk (the server's default); other
    # models' parsers send several in a chunk before it.
    thermometer = Thermometer()
    calls = [ToolCall("room_temperature", {"room": room}) for room in ("den", "hall")]
    ollama_server.script(
        Reply(tool_calls=calls, tool_calls_in="separate"), Reply(content=["Both are warm."])
    )
    result = make(ollama_server, thermometer.registry()).ask("den and hall?")
    assert result.ok and result.text == "Both are warm."
    assert thermometer.readings == ["den", "hall"]
