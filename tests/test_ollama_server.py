"""The Ollama test server itself: shapes the real client parses, and Ollama's rejections."""

from __future__ import annotations

import json
import threading
import time

import httpx
import ollama
import pytest
from ollama._types import ChatResponse, ShowResponse
from pydantic import ValidationError

from tests import ollama_fixtures
from tests.ollama_server import (
    DEFAULT_MODEL,
    ERROR_PARSING_TOOL_CALL,
    OllamaTestServer,
    Reply,
    ToolCall,
    plain_model_show,
)

ollama_server = ollama_fixtures.ollama_server
dead_ollama_url = ollama_fixtures.dead_ollama_url

USER = [{"role": "user", "content": "hello"}]


def client(server: OllamaTestServer, read: float = 5.0) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=httpx.Timeout(5.0, read=read))


def test_streamed_chat_is_ndjson_chat_responses_ending_with_done(
    ollama_server: OllamaTestServer,
) -> None:
    ollama_server.script(Reply(thinking=["Greet."], content=["Hi", " there."]))
    with httpx.stream(
        "POST",
        f"{ollama_server.url}/api/chat",
        json={
            "model": DEFAULT_MODEL,
            "messages": USER,
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    chunks = [ChatResponse(**line) for line in lines]
    assert [c.message.thinking for c in chunks[:1]] == ["Greet."]
    assert "".join(c.message.content or "" for c in chunks) == "Hi there."
    assert all(c.message.role == "assistant" and not c.done for c in chunks[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    for counter in ("total_duration", "load_duration", "prompt_eval_count", "eval_count"):
        assert final[counter] > 0
    assert all("content" in line["message"] for line in lines)  # Go always writes content


def test_non_streamed_chat_is_one_object_with_everything(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(
        Reply(thinking=["a", "b"], content=["x", "y"], tool_calls=[ToolCall("f", {"n": 1})])
    )
    response = client(ollama_server).chat(DEFAULT_MODEL, USER, stream=False)
    assert response.done and response.message.content == "xy"
    assert response.message.thinking == "ab"
    assert response.message.tool_calls[0].function.name == "f"
    assert response.message.tool_calls[0].function.arguments == {"n": 1}


def test_show_tags_version_parse_with_the_client(ollama_server: OllamaTestServer) -> None:
    c = client(ollama_server)
    show = c.show(DEFAULT_MODEL)
    assert isinstance(show, ShowResponse)
    assert show.modelinfo["general.architecture"] == "gptoss"
    assert show.modelinfo["gptoss.expert_used_count"] == 4
    assert show.details.quantization_level == "MXFP4"
    assert {"tools", "thinking"} <= set(show.capabilities)
    assert [m.model for m in c.list().models] == [DEFAULT_MODEL]
    assert httpx.get(f"{ollama_server.url}/api/version").json()["version"]
    assert httpx.get(ollama_server.url).text == "Ollama is running"


def _post(server: OllamaTestServer, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", **kwargs)


GOOD = {"model": DEFAULT_MODEL, "messages": USER}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "error"),
    [
        ("/api/chat", {"content": b""}, 400, "missing request body"),
        ("/api/chat", {"content": b"{nope"}, 400, "invalid character 'n'"),
        ("/api/chat", {"json": [1]}, 400, "cannot unmarshal array into Go value"),
        ("/api/chat", {"json": {"messages": USER}}, 400, "model is required"),
        (
            "/api/chat",
            {"json": {"model": "llama9:1b", "messages": USER}},
            404,
            'model "llama9:1b" not found, try pulling it first',
        ),
        ("/api/chat", {"json": {**GOOD, "messages": "hi"}}, 400, "ChatRequest.messages"),
        ("/api/chat", {"json": {**GOOD, "messages": [{"role": 1}]}}, 400, "messages.role"),
        (
            "/api/chat",
            {
                "json": {
                    **GOOD,
                    "messages": [
                        {
                            "role": "assistant",
                            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                        }
                    ],
                }
            },
            400,
            "tool_calls.function.arguments",
        ),
        ("/api/chat", {"json": {**GOOD, "keep_alive": "soon"}}, 400, 'invalid duration "soon"'),
        ("/api/chat", {"json": {**GOOD, "think": "max"}}, 400, "invalid think value"),
        ("/api/chat", {"json": {**GOOD, "options": [1]}}, 400, "ChatRequest.options"),
        ("/api/chat", {"json": {**GOOD, "tools": [{"function": 3}]}}, 400, "tools.function"),
        ("/api/show", {"content": b""}, 400, "missing request body"),
        ("/api/show", {"json": {}}, 400, "model is required"),
        ("/api/show", {"json": {"model": "nope"}}, 404, "model 'nope' not found"),
        ("/api/create", {"json": {"from": DEFAULT_MODEL}}, 400, "invalid model name"),
        (
            "/api/chat",
            {"json": {**GOOD, "keep_alive": "-1"}},
            400,
            'time: missing unit in duration "-1"',
        ),
        (
            "/api/chat",
            {"json": {**GOOD, "options": {"num_ctx": "8192"}}},
            500,
            'option "num_ctx" must be of type integer',
        ),
    ],
)
def test_rejects_what_ollama_rejects(
    ollama_server: OllamaTestServer, path: str, kwargs: dict, status: int, error: str
) -> None:
    ollama_server.script(Reply(content=["never sent"]))
    response = _post(ollama_server, path, **kwargs)
    assert response.status_code == status
    assert error in response.json()["error"]
    assert ollama_server.pending_replies == 1  # a rejected request consumes no reply


def test_capability_rejections_for_a_plain_model() -> None:
    with OllamaTestServer(models={"gemma3:1b": plain_model_show()}) as server:
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        response = _post(
            server, "/api/chat", json={"model": "gemma3:1b", "messages": USER, "tools": tools}
        )
        assert (response.status_code, response.json()["error"]) == (
            400,
            "gemma3:1b does not support tools",
        )
        response = _post(
            server, "/api/chat", json={"model": "gemma3:1b", "messages": USER, "think": True}
        )
        assert response.status_code == 400
        assert "does not support thinking" in response.json()["error"]


def test_unknown_path_is_gin_404(ollama_server: OllamaTestServer) -> None:
    response = _post(ollama_server, "/api/chatt", json=GOOD)
    assert (response.status_code, response.text) == (404, "404 page not found")


def test_empty_messages_loads_the_model(ollama_server: OllamaTestServer) -> None:
    response = client(ollama_server).chat(DEFAULT_MODEL, [], keep_alive="30m")
    assert response.done and response.done_reason == "load"
    assert ollama_server.pending_replies == 0


def test_scripted_failures_reach_the_client_as_ollama_would_send_them(
    ollama_server: OllamaTestServer,
) -> None:
    c = client(ollama_server, read=0.5)
    ollama_server.script(
        Reply.http_error(500, "llama runner process has terminated"),
        Reply.stream_error(ERROR_PARSING_TOOL_CALL, after=1, thinking=["t"]),
        Reply(content=["a", "b", "c"], drop_after=2),
        Reply(content=["a", "b"], stall_after=1),
    )
    with pytest.raises(ollama.ResponseError) as info:
        list(c.chat(DEFAULT_MODEL, USER, stream=True))
    assert info.value.status_code == 500
    with pytest.raises(ollama.ResponseError) as info:
        list(c.chat(DEFAULT_MODEL, USER, stream=True))
    assert (info.value.status_code, info.value.error) == (-1, ERROR_PARSING_TOOL_CALL)
    seen = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in c.chat(DEFAULT_MODEL, USER, stream=True):
            seen.append(chunk.message.content)
    assert seen == ["a", "b"]
    with pytest.raises(httpx.ReadTimeout):
        list(c.chat(DEFAULT_MODEL, USER, stream=True))
    ollama_server.release_stalls()


def test_an_error_before_any_chunk_takes_the_shape_of_the_servers_version() -> None:
    # 0.12.3's streamResponse wrote whatever came first: HTTP 200, then an {"error"} line.
    with OllamaTestServer(version="0.12.3") as server:
        server.script(Reply.stream_error("llama runner process has terminated", after=0))
        with pytest.raises(ollama.ResponseError) as info:
            list(client(server).chat(DEFAULT_MODEL, USER, stream=True))
        assert (info.value.status_code, info.value.error) == (
            -1,
            "llama runner process has terminated",
        )
    # From 0.12.6 an error before anything was written is a JSON status.
    with OllamaTestServer(version="0.12.6") as server:
        server.script(
            Reply.stream_error("llama runner process has terminated", after=0),
            Reply.stream_error("llama runner process has terminated", after=0),
        )
        response = _post(server, "/api/chat", json=GOOD)
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"error": "llama runner process has terminated"}
        with pytest.raises(ollama.ResponseError) as info:
            list(client(server).chat(DEFAULT_MODEL, USER, stream=True))
        assert (info.value.status_code, info.value.error) == (
            500,
            "llama runner process has terminated",
        )


def test_a_tool_call_that_did_not_parse_under_its_own_key_up_to_0_11_4() -> None:
    with OllamaTestServer(version="0.11.4") as server:
        server.script(Reply.tool_call_error(after=1, thinking=["t"]))
        with pytest.raises(ValidationError) as info:
            list(client(server).chat(DEFAULT_MODEL, USER, stream=True))
        assert "error parsing tool call" in str(info.value)


def test_a_gpt_oss_tool_call_comes_in_the_done_chunk(ollama_server: OllamaTestServer) -> None:
    call = ToolCall("room_temperature", {"room": "den"})
    ollama_server.script(
        Reply(thinking=["Check."], tool_calls=[call]),
        Reply(tool_calls=[call, call], tool_calls_in="separate"),
    )
    chunks = list(client(ollama_server).chat(DEFAULT_MODEL, USER, stream=True))
    assert [bool(c.message.tool_calls) for c in chunks] == [False, True]
    assert chunks[-1].done and chunks[-1].message.tool_calls[0].function.name == call.name
    chunks = list(client(ollama_server).chat(DEFAULT_MODEL, USER, stream=True))
    assert [len(c.message.tool_calls or []) for c in chunks] == [2, 0]
    with pytest.raises(ValueError, match="at most one tool call"):
        Reply(tool_calls=[call, call])


def test_nothing_is_sent_until_the_model_is_loaded_and_one_load_serves_all() -> None:
    with OllamaTestServer(load_s=0.6) as server:
        server.default_reply = Reply(content=["Loaded."])
        results: list[str] = []

        def ask() -> None:
            results.append(client(server, read=5.0).chat(DEFAULT_MODEL, USER).message.content)

        warm_up = threading.Thread(target=lambda: client(server).chat(DEFAULT_MODEL, []))
        warm_up.start()
        time.sleep(0.2)
        turn = threading.Thread(target=ask)
        turn.start()
        warm_up.join(10)
        turn.join(10)
        assert results == ["Loaded."]
        assert [load.outcome for load in server.loads] == ["loaded"]
        assert server.is_loaded()


def test_a_load_is_abandoned_when_its_client_hangs_up() -> None:
    with OllamaTestServer(load_s=2.0) as server:
        server.default_reply = Reply(content=["Loaded."])
        with pytest.raises(httpx.ReadTimeout):  # not even the headers came
            client(server, read=0.3).chat(DEFAULT_MODEL, USER)
        deadline = time.monotonic() + 5
        while server.loads[0].outcome == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [load.outcome for load in server.loads] == ["abandoned"]
        assert not server.is_loaded() and server.pending_replies == 0


def test_messages_over_num_ctx_are_dropped_oldest_first_like_ollama(
    ollama_server: OllamaTestServer,
) -> None:
    ollama_server.default_reply = Reply(content=["ok"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first " * 300},
        {"role": "assistant", "content": "answer " * 300},
        {"role": "user", "content": "the question"},
        {"role": "tool", "tool_name": "t", "content": "x" * 1500},
    ]
    client(ollama_server).chat(DEFAULT_MODEL, messages, options={"num_ctx": 1024})
    seen = ollama_server.seen_messages[-1]
    assert seen[0] == messages[0] and seen[-1] == messages[-1]
    assert [m["content"] for m in seen[1:-1]] == ["the question"]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [("room_temperature", "kitchen"), ("room_temperature", ["kitchen"]), (None, {})],
)
def test_a_tool_call_the_client_could_not_parse_cannot_be_scripted(
    name: object, arguments: object
) -> None:
    with pytest.raises(ValidationError):
        ToolCall(name, arguments)  # type: ignore[arg-type]


def test_gate_holds_the_stream_until_opened(ollama_server: OllamaTestServer) -> None:
    gate = threading.Event()
    ollama_server.script(Reply(content=["first", "second"], gate=gate, gate_after=1))
    pieces = []
    for chunk in client(ollama_server).chat(DEFAULT_MODEL, USER, stream=True):
        pieces.append(chunk.message.content)
        gate.set()
    assert pieces[:2] == ["first", "second"]


def test_no_script_left_is_a_loud_500(ollama_server: OllamaTestServer) -> None:
    response = _post(ollama_server, "/api/chat", json=GOOD)
    assert response.status_code == 500
    assert "no scripted reply" in response.json()["error"]


def test_default_reply_callable_sees_the_request(ollama_server: OllamaTestServer) -> None:
    ollama_server.default_reply = lambda request: Reply(
        content=[f"echo: {request['messages'][-1]['content']}"]
    )
    response = client(ollama_server).chat(DEFAULT_MODEL, USER)
    assert response.message.content == "echo: hello"


def test_every_request_is_recorded(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["ok"]))
    client(ollama_server).chat(
        DEFAULT_MODEL, USER, think="low", keep_alive="30m", options={"num_ctx": 8192}
    )
    _post(ollama_server, "/api/show", json={"model": DEFAULT_MODEL})
    assert [r.path for r in ollama_server.requests] == ["/api/chat", "/api/show"]
    sent = ollama_server.chat_requests[0]
    assert sent["think"] == "low" and sent["keep_alive"] == "30m"
    assert sent["options"] == {"num_ctx": 8192} and sent["messages"] == USER
    assert ollama_server.requests[0].status == 200


def test_create_streams_progress_and_adds_the_model(ollama_server: OllamaTestServer) -> None:
    c = client(ollama_server)
    statuses = [
        p.status
        for p in c.create(
            "voiced",
            from_=DEFAULT_MODEL,
            system="Be brief.",
            parameters={"num_ctx": 4096},
            stream=True,
        )
    ]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert "voiced:latest" in [m.model for m in c.list().models]
    created = c.show("voiced")
    assert "num_ctx" in created.parameters and created.modelinfo["general.architecture"] == "gptoss"
    assert c.create("voiced2", from_=DEFAULT_MODEL, stream=False).status == "success"


def test_create_takes_typical_p_and_adapters_as_ollama_does(
    ollama_server: OllamaTestServer,
) -> None:
    # Ollama rejects neither (the server used to invent both rejections; it does not check
    # adapter blobs).
    response = _post(
        ollama_server,
        "/api/create",
        json={
            "model": "x",
            "from": DEFAULT_MODEL,
            "parameters": {"typical_p": 0.9},
            "adapters": {"lora.gguf": "sha256:" + "0" * 64},
            "stream": False,
        },
    )
    assert response.status_code == 200 and response.json()["status"] == "success"


def test_create_from_a_missing_model_fails_like_ollama(ollama_server: OllamaTestServer) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        list(client(ollama_server).create("x", from_="nothere:1b", stream=True))
    assert "file does not exist" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client(ollama_server).create("x", stream=False)
    assert info.value.status_code == 400 and "neither 'from' or 'files'" in info.value.error


def test_stopped_server_refuses_and_comes_back_on_the_same_port() -> None:
    server = OllamaTestServer().start()
    c = client(server)
    assert c.show(DEFAULT_MODEL).details.family == "gptoss"  # keeps a pooled connection
    server.stop()
    with pytest.raises(ConnectionError):
        c.show(DEFAULT_MODEL)
    with OllamaTestServer(port=server.port):
        assert c.show(DEFAULT_MODEL).details.family == "gptoss"


def test_dead_url_refuses(dead_ollama_url: str) -> None:
    with pytest.raises(ConnectionError):
        ollama.Client(host=dead_ollama_url).list()
