"""A local stand-in for the Ollama HTTP API, scripted per test.

No Ollama server can run on the test machines, so the LLM path is tested with the real
``ollama`` client against this server. It follows Ollama's handlers (``server/routes.go``,
``server/create.go``) and ``docs/api.md``; every JSON body it sends is built from the client's
own pydantic types (``ollama._types``) so a shape the client cannot parse is a bug here.

What it does like the real server:

- ``POST /api/chat``: streamed NDJSON (one ``ChatResponse`` per line, ``application/x-ndjson``,
  chunked) or a single JSON object with ``"stream": false``; the last chunk has ``done: true``,
  ``done_reason`` and the counters. gpt-oss's tool call comes in that ``done`` chunk, one per
  response (``Reply.tool_calls_in``). Headers go out with the first line, not before.
- Model loads: no model is loaded at the start; the first request for a model loads it for
  ``load_s`` seconds (:attr:`OllamaTestServer.load_s`) while the server sends nothing at all.
  Requests arriving meanwhile wait for the same load; when the client that started the load
  hangs up, the load is abandoned, as Ollama's ``llm/server.go`` does ("client connection
  closed before server finished loading, aborting load"). :attr:`OllamaTestServer.loads`
  records each load and how it ended; :meth:`OllamaTestServer.unload` plays keep_alive
  running out.
- Errors by version (``version=``): after the stream started, an ``{"error": ...}`` line (HTTP
  200); before any chunk, up to 0.12.5 the same line in an HTTP 200 stream, from 0.12.6 HTTP 500
  with a JSON ``{"error": ...}`` body; up to 0.11.4 a tool call that did not parse came as
  ``{"error parsing tool call": ...}``, which the client cannot read (ollama#11781).
- The context window: messages that do not fit ``options.num_ctx`` are dropped oldest first,
  keeping system messages and the last one, as Ollama's ``chatPrompt`` does; what the model
  saw is in :attr:`OllamaTestServer.seen_messages` (tokens counted at
  :data:`CHARS_PER_TOKEN`).
- ``POST /api/show``, ``GET /api/tags``, ``GET /api/version``, ``POST /api/create`` (streamed
  ``ProgressResponse`` lines ending with ``success``; a base model that is not here but in
  :attr:`OllamaTestServer.registry` is pulled first, with many progress lines), ``GET /``
  ("Ollama is running").
- Rejections: empty body -> 400 ``missing request body``; malformed JSON or a field of the wrong
  type -> 400 with Go's ``json:`` wording; no model -> 400 ``model is required``; unknown model
  -> 404 (``model "x" not found, try pulling it first`` for chat, ``model 'x' not found`` for
  show); tools for a model without the ``tools`` capability, ``think`` for a model that cannot
  think or a ``think`` level for a non-harmony model -> 400; a bad ``keep_alive`` duration
  (Go's ``time.ParseDuration``: ``"-1"`` lacks a unit) or ``think`` value -> 400; an option of
  the wrong type (``num_ctx: "8192"``) -> 500; unknown paths -> 404 ``404 page not found``.

What a test scripts (:class:`Reply`): content and thinking pieces, tool calls, a delay between
chunks, an HTTP error before the stream, a runner error (``Reply.stream_error``) or gpt-oss's
``error parsing tool call`` (``Reply.tool_call_error``) before or after some chunks, a
connection dropped mid-stream, a stall (the server holds the
connection and sends nothing), and, for deliberately unfaithful cases, raw lines.
Every request is recorded (:attr:`OllamaTestServer.requests`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from ollama._types import (
    ChatResponse,
    ListResponse,
    Message,
    ModelDetails,
    ProgressResponse,
    ShowResponse,
)

DEFAULT_MODEL = "gpt-oss:20b"
SERVER_VERSION = "0.12.3"

TOOL_CALL_ERROR_PREFIX = "error parsing tool call: "
# What gpt-oss sends mid-stream when its harmony output is not a valid call (ollama#11781).
ERROR_PARSING_TOOL_CALL = (
    TOOL_CALL_ERROR_PREFIX + 'raw=\'{"timezone": "Europe/Berlin"\', '
    "err=unexpected end of JSON input"
)
# From this version on, an error before the first chunk is an HTTP status (500 unless the
# runner gave one) with a JSON body; before it, HTTP 200 and an {"error"} line.
STATUS_FOR_EARLY_ERRORS = (0, 12, 6)
# Up to this version a tool call that did not parse came as {"error parsing tool call": ...}:
# no "error" key, so the client does not see an error but fails to read a ChatResponse
# (ollama#11781, fixed by #11861).
TOOL_CALL_ERROR_UNDER_ITS_OWN_KEY = (0, 11, 4)
# The test server's stand-in for gpt-oss's tokenizer, characters per token.
CHARS_PER_TOKEN = 3.5
# Tokens of the template around the messages (harmony's system header and tool preamble).
TEMPLATE_TOKENS = 60
DEFAULT_NUM_CTX = 4096
# How often a request waiting for a model load checks whether its client is still there.
LOAD_POLL_S = 0.02
# Progress lines per layer when the server "pulls" a model.
PULL_STEPS = 200

_GPT_OSS_TEMPLATE = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: {{ currentDate }}\n\nReasoning: "
    "{{ .ThinkLevel }}<|end|>{{- range .Messages }}<|start|>{{ .Role }}<|message|>"
    "{{ .Content }}<|end|>{{- end }}<|start|>assistant"
)

_APACHE_LICENSE = (
    "                                 Apache License\n"
    "                           Version 2.0, January 2004\n"
    "                        http://www.apache.org/licenses/\n\n"
    "   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION\n"
)


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def gpt_oss_show() -> dict[str, Any]:
    """``/api/show`` for gpt-oss:20b as Ollama reports it (``ollama show --verbose``)."""
    response = ShowResponse(
        modified_at=datetime(2025, 8, 5, 17, 42, 3, tzinfo=timezone.utc),
        template=_GPT_OSS_TEMPLATE,
        modelfile=(
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            "# FROM gpt-oss:20b\n\nFROM /usr/share/ollama/.ollama/models/blobs/"
            "sha256-b112e727c6f18875636c56a779790a590d705aec9e1c0eb5a97d51fc2a778583\n"
            "PARAMETER temperature 1\n"
        ),
        license=_APACHE_LICENSE,
        details=ModelDetails(
            parent_model="",
            format="gguf",
            family="gptoss",
            families=["gptoss"],
            parameter_size="20.9B",
            quantization_level="MXFP4",
        ),
        model_info={
            "general.architecture": "gptoss",
            "general.file_type": 4,
            "general.parameter_count": 20914757184,
            "general.quantization_version": 2,
            "gptoss.attention.head_count": 64,
            "gptoss.attention.head_count_kv": 8,
            "gptoss.attention.key_length": 64,
            "gptoss.attention.layer_norm_rms_epsilon": 1e-05,
            "gptoss.attention.sliding_window": 128,
            "gptoss.attention.value_length": 64,
            "gptoss.block_count": 24,
            "gptoss.context_length": 131072,
            "gptoss.embedding_length": 2880,
            "gptoss.expert_count": 32,
            "gptoss.expert_used_count": 4,
            "gptoss.feed_forward_length": 2880,
            "gptoss.rope.freq_base": 150000,
            "gptoss.rope.scaling.factor": 32,
            "gptoss.rope.scaling.original_context_length": 4096,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "default",
        },
        parameters="temperature                    1",
        capabilities=["completion", "tools", "thinking"],
    )
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def _gpt_oss_120b() -> dict[str, Any]:
    show = gpt_oss_show()
    show["details"]["parameter_size"] = "116.8B"
    show["model_info"]["gptoss.block_count"] = 36
    show["model_info"]["gptoss.expert_count"] = 128
    return show


def plain_model_show(family: str = "gemma3", parameter_size: str = "999.89M") -> dict[str, Any]:
    """A small model with no tools and no thinking, for capability rejections."""
    response = ShowResponse(
        modified_at=datetime(2025, 3, 12, 9, 0, 0, tzinfo=timezone.utc),
        template="{{ .Prompt }}",
        details=ModelDetails(
            format="gguf",
            family=family,
            families=[family],
            parameter_size=parameter_size,
            quantization_level="Q4_K_M",
        ),
        model_info={"general.architecture": family, f"{family}.context_length": 32768},
        capabilities=["completion"],
    )
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- scripting


@dataclass
class ToolCall:
    """A call the scripted model makes, checked against the client's ``Message.ToolCall``.

    A call the client could not parse raises pydantic's ``ValidationError`` here, when the
    test scripts it; deliberately unfaithful chunks go through ``Reply.raw_lines`` instead.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Message.ToolCall.model_validate(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Reply:
    """One scripted answer to one ``/api/chat`` request.

    Chunks go out in the order gpt-oss produces them: thinking pieces, content pieces, then
    the ``done`` chunk, which carries the tool call: Ollama's harmony parser hands over at most
    one call per response, when the model's output ends (``tool_calls_in="final"``). The
    shape other models' parsers produce, the calls in a chunk of their own before ``done``
    (several allowed), is ``tool_calls_in="separate"``. ``error``/``drop_after``/
    ``stall_after`` cut that sequence after the given number of chunks.
    """

    content: Sequence[str] = ()
    thinking: Sequence[str] = ()
    tool_calls: Sequence[ToolCall] = ()
    tool_calls_in: Literal["final", "separate"] = "final"
    done_reason: str = "stop"
    chunk_delay_s: float = 0.0
    # An HTTP status other than 200 answers with {"error": error} before any chunk.
    status: int = 200
    error: str | None = None
    # With status 200 and an error: the number of chunks sent before the {"error"} line; with
    # 0 the error comes before any chunk, so it is answered as HTTP 500 like real Ollama.
    error_after: int = 0
    drop_after: int | None = None
    stall_after: int | None = None
    # Deliberately unfaithful: these lines are sent verbatim instead of the built chunks.
    raw_lines: Sequence[str] | None = None
    # Hold chunk number ``gate_after`` until the test sets ``gate`` (proves streaming: the
    # client must act on earlier chunks while later ones do not exist yet).
    gate: threading.Event | None = None
    gate_after: int = 1

    def __post_init__(self) -> None:
        if self.tool_calls_in == "final" and len(self.tool_calls) > 1:
            raise ValueError(
                "gpt-oss returns at most one tool call per response; script several with "
                'tool_calls_in="separate" (the shape of other models)'
            )

    @classmethod
    def http_error(cls, status: int, message: str) -> Reply:
        return cls(status=status, error=message)

    @classmethod
    def stream_error(cls, message: str, *, after: int = 0, **kwargs: Any) -> Reply:
        """An error from the runner after ``after`` chunks; with 0, how it reaches the client
        depends on the server's version (see :meth:`OllamaTestServer.stream_error_line`)."""
        return cls(error=message, error_after=after, **kwargs)

    @classmethod
    def tool_call_error(
        cls, raw: str = '{"timezone": "Europe/Berlin"', *, after: int = 0, **kwargs: Any
    ) -> Reply:
        """gpt-oss wrote a call Ollama cannot parse (ollama#11781, #11800)."""
        message = f"{TOOL_CALL_ERROR_PREFIX}raw='{raw}', err=unexpected end of JSON input"
        return cls(error=message, error_after=after, **kwargs)


Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: bytes
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    # /api/chat: the messages the model saw after Ollama's context-window truncation.
    seen: list[dict[str, Any]] | None = None


@dataclass
class ModelLoad:
    """One model load the server started; ``outcome``: loading, loaded or abandoned."""

    model: str
    started: float
    outcome: str = "loading"


# --------------------------------------------------------------------------- validation


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_GO_KIND = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
}


def _go_kind(value: Any) -> str:
    return "null" if value is None else _GO_KIND.get(type(value), "value")


def _type_error(value: Any, struct: str, path: str, go_type: str) -> _Rejected:
    return _Rejected(
        400,
        f"json: cannot unmarshal {_go_kind(value)} into Go struct field {struct}.{path} "
        f"of type {go_type}",
    )


def _check(value: Any, python_type: type | tuple, struct: str, path: str, go_type: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) and python_type in (int, float, (int, float)):
        raise _type_error(value, struct, path, go_type)
    if not isinstance(value, python_type):
        raise _type_error(value, struct, path, go_type)


_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(ns|us|µs|ms|s|m|h))+$")


def _check_keep_alive(value: Any) -> None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return
    if isinstance(value, str):
        # Go's time.ParseDuration: a unit is required, except for "0" ("-1" is an error).
        if value == "0" or _DURATION.match(value.lstrip("-+")):
            return
        if re.fullmatch(r"[-+]?[0-9.]+", value):
            raise _Rejected(400, f'time: missing unit in duration "{value}"')
        raise _Rejected(400, f'time: invalid duration "{value}"')
    raise _Rejected(400, f"json: cannot unmarshal {_go_kind(value)} into Go value of type string")


def _check_think(value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str) and value in ("high", "medium", "low"):
        return
    raise _Rejected(
        400,
        f"invalid think value: {json.dumps(value)} "
        '(must be "high", "medium", "low", true, or false)',
    )


def _check_messages(messages: Any) -> None:
    _check(messages, list, "ChatRequest", "messages", "[]api.Message")
    for message in messages or []:
        if not isinstance(message, dict):
            raise _type_error(message, "ChatRequest", "messages", "api.Message")
        for key in ("role", "content", "thinking", "tool_name", "tool_call_id"):
            _check(message.get(key), str, "Message", f"messages.{key}", "string")
        _check(message.get("images"), list, "Message", "messages.images", "[]api.ImageData")
        _check(message.get("tool_calls"), list, "Message", "messages.tool_calls", "[]api.ToolCall")
        for call in message.get("tool_calls") or []:
            _check(call, dict, "Message", "messages.tool_calls", "api.ToolCall")
            function = call.get("function")
            _check(
                function, dict, "ToolCall", "messages.tool_calls.function", "api.ToolCallFunction"
            )
            if function:
                _check(
                    function.get("name"),
                    str,
                    "ToolCallFunction",
                    "messages.tool_calls.function.name",
                    "string",
                )
                _check(
                    function.get("arguments"),
                    dict,
                    "ToolCallFunction",
                    "messages.tool_calls.function.arguments",
                    "api.ToolCallFunctionArguments",
                )


def _check_tools(tools: Any) -> None:
    _check(tools, list, "ChatRequest", "tools", "api.Tools")
    for tool in tools or []:
        _check(tool, dict, "ChatRequest", "tools", "api.Tool")
        _check(tool.get("type"), str, "Tool", "tools.type", "string")
        function = tool.get("function")
        _check(function, dict, "Tool", "tools.function", "api.ToolFunction")
        if not function:
            continue
        _check(function.get("name"), str, "ToolFunction", "tools.function.name", "string")
        _check(
            function.get("description"), str, "ToolFunction", "tools.function.description", "string"
        )
        parameters = function.get("parameters")
        _check(
            parameters,
            dict,
            "ToolFunction",
            "tools.function.parameters",
            "api.ToolFunctionParameters",
        )
        if not parameters:
            continue
        _check(
            parameters.get("type"),
            str,
            "ToolFunctionParameters",
            "tools.function.parameters.type",
            "string",
        )
        _check(
            parameters.get("required"),
            list,
            "ToolFunctionParameters",
            "tools.function.parameters.required",
            "[]string",
        )
        properties = parameters.get("properties")
        _check(
            properties,
            dict,
            "ToolFunctionParameters",
            "tools.function.parameters.properties",
            "map[string]api.ToolProperty",
        )
        for prop in (properties or {}).values():
            _check(
                prop,
                dict,
                "ToolFunctionParameters",
                "tools.function.parameters.properties",
                "api.ToolProperty",
            )
            if not isinstance(prop.get("type"), (str, list, type(None))):
                raise _type_error(
                    prop["type"],
                    "ToolProperty",
                    "tools.function.parameters.properties.type",
                    "api.PropertyType",
                )
            _check(
                prop.get("description"),
                str,
                "ToolProperty",
                "tools.function.parameters.properties.description",
                "string",
            )
            _check(
                prop.get("enum"),
                list,
                "ToolProperty",
                "tools.function.parameters.properties.enum",
                "[]interface {}",
            )


def _normalise(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _approx_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


def _load_response(name: str, done_reason: str) -> dict[str, Any]:
    response = ChatResponse(
        model=name,
        created_at=_now(),
        message=Message(role="assistant", content=""),
        done=True,
        done_reason=done_reason,
    )
    return response.model_dump(mode="json", exclude_none=True)


# Types of Ollama's api.Options fields (api/types.go), as its FromMap checks them.
_OPTION_TYPES: dict[str, str] = {
    **dict.fromkeys(
        (
            "num_keep seed num_predict top_k repeat_last_n num_ctx num_batch num_gpu "
            "main_gpu num_thread"
        ).split(),
        "integer",
    ),
    **dict.fromkeys(
        (
            "temperature top_p min_p typical_p repeat_penalty presence_penalty frequency_penalty"
        ).split(),
        "float32",
    ),
    **dict.fromkeys("numa use_mmap penalize_newline".split(), "boolean"),
    "stop": "array",
}


def _check_options(options: Any) -> None:
    """Ollama's ``Options.FromMap``: a value of the wrong type fails the request with a 500
    (scheduleRunner -> handleScheduleError); unknown keys are only logged there."""
    for key, value in (options or {}).items():
        kind = _OPTION_TYPES.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            None: True,
            "integer": number,
            "float32": number,
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
        }[kind]
        if not ok:
            raise _Rejected(500, f"option {key!r} must be of type {kind}".replace("'", '"'))


def count_tokens(value: Any) -> int:
    """The test server's token count for a message list or tools: a stand-in tokenizer."""
    return int(len(json.dumps(value, ensure_ascii=False)) / CHARS_PER_TOKEN) + 1


def _fit_context(
    messages: list[dict[str, Any]], tools: Any, request: dict[str, Any]
) -> list[dict[str, Any]]:
    """The messages the model sees: Ollama's ``chatPrompt`` (server/prompt.go).

    The last message always stays, and so do system messages; from the newest backwards,
    older messages are kept while the rendered prompt fits ``num_ctx``, and the rest are
    dropped without a word to the client.
    """
    num_ctx = int((request.get("options") or {}).get("num_ctx") or DEFAULT_NUM_CTX)
    fixed = TEMPLATE_TOKENS + (count_tokens(tools) if tools else 0)
    first = len(messages) - 1
    for index in range(len(messages) - 2, -1, -1):
        system = [m for m in messages[:index] if m.get("role") == "system"]
        if fixed + count_tokens(system + messages[index:]) > num_ctx:
            break
        first = index
    return [m for m in messages[:first] if m.get("role") == "system"] + messages[first:]


# --------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    _recorded: RecordedRequest | None = None
    _streaming = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        pass

    # -- plumbing

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._record_status(status)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._record_status(status)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._record_status(200)
        self._streaming = True

    def _stream_line(self, payload: Any) -> None:
        if not self._streaming:
            self._start_stream()
        line = (payload if isinstance(payload, str) else json.dumps(payload)) + "\n"
        data = line.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        if not self._streaming:
            self._start_stream()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        # An abrupt close mid-body: the client sees an incomplete chunked message.
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _record_status(self, status: int) -> None:
        if self._recorded is not None:
            self._recorded.status = status

    def _parse_json(self, body: bytes, go_type: str) -> dict[str, Any]:
        if not body.strip():
            raise _Rejected(400, "missing request body")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            bad = body.decode(errors="replace")[getattr(exc, "pos", 0) : getattr(exc, "pos", 0) + 1]
            raise _Rejected(
                400, f"invalid character {bad!r} looking for beginning of value"
            ) from None
        if not isinstance(data, dict):
            raise _Rejected(
                400, f"json: cannot unmarshal {_go_kind(data)} into Go value of type {go_type}"
            )
        return data

    # -- dispatch

    def do_HEAD(self) -> None:
        self._recorded = None
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _client_gone(self, timeout: float) -> bool:
        """Whether the client hung up (what Ollama's request context notices)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True

    def _dispatch(self, method: str) -> None:
        self._streaming = False
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        self._recorded = RecordedRequest(method, path, body, headers=dict(self.headers.items()))
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            self._recorded.json = json.loads(body) if body.strip() else None
        self.server.owner._record(self._recorded)
        routes = {
            ("GET", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/create"): self._create,
        }
        handler = routes.get((method, path))
        if handler is None:
            self._send_text(404, "404 page not found")
            return
        try:
            handler(body)
        except _Rejected as rejected:
            self._send_json(rejected.status, {"error": rejected.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- endpoints

    def _root(self, body: bytes) -> None:
        self._send_text(200, "Ollama is running")

    def _version(self, body: bytes) -> None:
        self._send_json(200, {"version": self.server.owner.version})

    def _tags(self, body: bytes) -> None:
        owner = self.server.owner
        models = []
        for name, show in owner.models_snapshot().items():
            entry = ListResponse.Model(
                model=name,
                modified_at=show.get("modified_at"),
                digest=_digest(name).removeprefix("sha256:"),
                size=13_793_441_244 if show["details"].get("family") == "gptoss" else 815_319_791,
                details=ModelDetails(**show.get("details", {})),
            ).model_dump(mode="json", exclude_none=True)
            entry["name"] = name  # Go's ListModelResponse also carries "name"
            models.append(entry)
        ListResponse.model_validate({"models": models})
        self._send_json(200, {"models": models})

    def _show(self, body: bytes) -> None:
        request = self._parse_json(body, "api.ShowRequest")
        _check(request.get("model"), str, "ShowRequest", "model", "string")
        name = request.get("model") or request.get("name")
        if not name:
            raise _Rejected(400, "model is required")
        show = self.server.owner.model(name)
        if show is None:
            raise _Rejected(404, f"model '{name}' not found")
        self._send_json(200, show)

    def _chat(self, body: bytes) -> None:
        owner = self.server.owner
        request = self._parse_json(body, "api.ChatRequest")
        _check(request.get("model"), str, "ChatRequest", "model", "string")
        _check(request.get("stream"), bool, "ChatRequest", "stream", "bool")
        _check(request.get("options"), dict, "ChatRequest", "options", "map[string]interface {}")
        _check_messages(request.get("messages"))
        _check_tools(request.get("tools"))
        _check_keep_alive(request.get("keep_alive"))
        _check_think(request.get("think"))
        name = request.get("model") or ""
        if not name:
            raise _Rejected(400, "model is required")
        show = owner.model(name)
        if show is None:
            raise _Rejected(404, f'model "{name}" not found, try pulling it first')
        capabilities = show.get("capabilities") or []
        think = request.get("think")
        if "thinking" not in capabilities and think is not None and think is not False:
            raise _Rejected(400, f'"{name}" does not support thinking')
        if request.get("tools") and "tools" not in capabilities:
            raise _Rejected(400, f"{_normalise(name)} does not support tools")
        messages = request.get("messages") or []
        unload = request.get("keep_alive") in (0, "0", "0s")
        if not messages and unload:
            owner.unload(name)
            self._send_json(200, _load_response(name, "unload"))
            return
        is_harmony = show.get("details", {}).get("family") == "gptoss"
        if isinstance(think, str) and not is_harmony:
            raise _Rejected(400, f'think value "{think}" is not supported for this model')
        _check_options(request.get("options"))
        if not self._wait_for_load(name):
            self.close_connection = True  # the client hung up: nothing to answer
            return
        if not messages:
            self._send_json(200, _load_response(name, "load"))
            return
        if self._recorded is not None:
            self._recorded.seen = _fit_context(messages, request.get("tools"), request)

        reply = owner._next_reply(request)
        if reply.status != 200:
            raise _Rejected(reply.status, reply.error or "internal server error")
        streaming = request.get("stream", True) is not False
        if streaming:
            self._stream_reply(name, request, reply)
        else:
            self._single_reply(name, request, reply)
        if unload:
            owner.unload(name)

    def _wait_for_load(self, name: str) -> bool:
        """Load the model first, as Ollama's scheduler does, sending nothing meanwhile.

        The load belongs to the request that started it: when that client hangs up before
        the load is done, the load is abandoned ("client connection closed before server
        finished loading, aborting load", llm/server.go) and the next waiting request starts
        a new one from the beginning. Other requests for the model wait for the same load.
        False when this request's client hung up.
        """
        owner = self.server.owner
        key = _normalise(name)
        mine: ModelLoad | None = None
        while True:
            with owner._lock:
                if key in owner._loaded:
                    return True
                current = owner._loading.get(key)
                if current is None:
                    current = mine = ModelLoad(key, time.monotonic())
                    owner._loading[key] = mine
                    owner.loads.append(mine)
                if current is mine and time.monotonic() - mine.started >= owner.load_s:
                    mine.outcome = "loaded"
                    del owner._loading[key]
                    owner._loaded.add(key)
                    return True
            if self._client_gone(LOAD_POLL_S):
                with owner._lock:
                    if current is mine and mine is not None:
                        mine.outcome = "abandoned"
                        owner._loading.pop(key, None)
                return False

    def _chunks(self, name: str, request: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
        def chunk(**message: Any) -> dict[str, Any]:
            response = ChatResponse(
                model=name,
                created_at=_now(),
                message=Message(role="assistant", content=message.pop("content", ""), **message),
                done=False,
            )
            return response.model_dump(mode="json", exclude_none=True)

        count = 0
        for piece in reply.thinking:
            count += 1
            yield chunk(thinking=piece)
        for piece in reply.content:
            count += 1
            yield chunk(content=piece)
        calls = [Message.ToolCall(**call.to_dict()) for call in reply.tool_calls]
        if calls and reply.tool_calls_in == "separate":
            count += 1
            yield chunk(tool_calls=calls)
        final_calls = calls if calls and reply.tool_calls_in == "final" else None
        final = ChatResponse(
            model=name,
            created_at=_now(),
            message=Message(role="assistant", content="", tool_calls=final_calls),
            done=True,
            done_reason=reply.done_reason,
            total_duration=count * 25_000_000 + 80_000_000,
            load_duration=60_000_000,
            prompt_eval_count=_approx_tokens(request.get("messages")),
            prompt_eval_duration=20_000_000,
            eval_count=count,
            eval_duration=count * 25_000_000,
        )
        yield final.model_dump(mode="json", exclude_none=True)

    def _stream_reply(self, name: str, request: dict[str, Any], reply: Reply) -> None:
        # Like gin's c.Stream, the headers go out with the first line, not before: until the
        # model is loaded and the prompt read, the client gets nothing at all.
        owner = self.server.owner
        if reply.raw_lines is not None:
            for line in reply.raw_lines:
                self._stream_line(line)
            self._end_stream()
            return
        for sent, data in enumerate(self._chunks(name, request, reply)):
            if reply.error is not None and sent == reply.error_after:
                self._stream_error(reply.error)
                return
            if reply.drop_after is not None and sent == reply.drop_after:
                self._drop()
                return
            if reply.stall_after is not None and sent == reply.stall_after:
                owner._stall()
                self._drop()
                return
            gated = reply.gate is not None and sent == reply.gate_after
            if gated and not reply.gate.wait(timeout=10):
                self._stream_line({"error": "ollama test server: the gate was never opened"})
                self._end_stream()
                return
            if reply.chunk_delay_s and sent:
                time.sleep(reply.chunk_delay_s)
            self._stream_line(data)
        self._end_stream()

    def _stream_error(self, message: str) -> None:
        """An error from the runner, in the shape of the server's version."""
        owner = self.server.owner
        version = owner.version_tuple
        tool_call = message.startswith(TOOL_CALL_ERROR_PREFIX)
        if tool_call and version <= TOOL_CALL_ERROR_UNDER_ITS_OWN_KEY:
            self._stream_line({"error parsing tool call": message[len(TOOL_CALL_ERROR_PREFIX) :]})
            self._end_stream()
            return
        if not self._streaming and version >= STATUS_FOR_EARLY_ERRORS:
            raise _Rejected(500, message)
        self._stream_line({"error": message})
        self._end_stream()

    def _single_reply(self, name: str, request: dict[str, Any], reply: Reply) -> None:
        if reply.error is not None:
            # Ollama's waitForStream answers an error from the stream with status 500.
            raise _Rejected(500, reply.error)
        if reply.drop_after is not None:
            self._drop()
            return
        if reply.stall_after is not None:
            self.server.owner._stall()
            self._drop()
            return
        chunks = list(self._chunks(name, request, reply))
        final = chunks[-1]
        final["message"]["content"] = "".join(reply.content)
        if reply.thinking:
            final["message"]["thinking"] = "".join(reply.thinking)
        for data in chunks[:-1]:
            if "tool_calls" in data["message"]:
                final["message"]["tool_calls"] = data["message"]["tool_calls"]
        self._send_json(200, final)

    def _create(self, body: bytes) -> None:
        owner = self.server.owner
        request = self._parse_json(body, "api.CreateRequest")
        for key in ("model", "from", "template", "system", "quantize"):
            _check(request.get(key), str, "CreateRequest", key, "string")
        _check(
            request.get("parameters"),
            dict,
            "CreateRequest",
            "parameters",
            "map[string]interface {}",
        )
        _check(request.get("files"), dict, "CreateRequest", "files", "map[string]string")
        name = request.get("model") or request.get("name") or ""
        if not name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$", name):
            raise _Rejected(400, "invalid model name")

        statuses: list[dict[str, Any]] = []
        error: tuple[int, str] | None = None
        base_name = request.get("from")
        base = owner.model(base_name) if base_name else None
        pullable = owner.registry.get(_normalise(base_name)) if base_name else None
        if base_name and base is None and pullable is not None:
            # Ollama's parseFromModel pulls a base model that is not here, reporting the
            # download as PullModel does: many progress lines a second per layer.
            statuses.extend(_pull_progress(base_name, pullable))
            owner.add_model(base_name, pullable)
            base = pullable
        if not base_name and not request.get("files"):
            error = (400, "neither 'from' or 'files' was specified")
        elif base_name and base is None:
            # The registry has no such name (what `ollama pull` would say too).
            error = (500, "pull model manifest: file does not exist")
        elif not base_name:
            error = (400, "supplied file was not in GGUF format")
        else:
            for layer in ("model", "template", "license", "params"):
                statuses.append({"status": f"using existing layer {_digest(base_name + layer)}"})
            show = json.loads(json.dumps(base))
            if request.get("system"):
                statuses.append({"status": f"creating new layer {_digest(request['system'])}"})
                show["system"] = request["system"]
            if request.get("template"):
                statuses.append({"status": f"creating new layer {_digest(request['template'])}"})
                show["template"] = request["template"]
            if request.get("parameters"):
                params = request["parameters"]
                statuses.append({"status": f"creating new layer {_digest(json.dumps(params))}"})
                show["parameters"] = "\n".join(
                    f"{key:<30} {json.dumps(item)}"
                    for key, value in params.items()
                    for item in (value if isinstance(value, list) else [value])
                )
            show["modified_at"] = datetime.now(timezone.utc).isoformat()
            statuses.append({"status": "writing manifest"})
            statuses.append({"status": "success"})
            owner.add_model(name, show)
        statuses = [
            ProgressResponse(**status).model_dump(mode="json", exclude_none=True)
            for status in statuses
        ]
        if request.get("stream") is False:
            if error is not None:
                raise _Rejected(*error)
            self._send_json(200, statuses[-1])
            return
        self._start_stream()
        for status in statuses:
            self._stream_line(status)
        if error is not None:
            self._stream_line({"error": error[1]})
        self._end_stream()


def _pull_progress(name: str, show: dict[str, Any]) -> list[dict[str, Any]]:
    size = 13_793_441_244 if show["details"].get("family") == "gptoss" else 815_319_791
    layers = [(_digest(name + "model"), size), (_digest(name + "license"), 11_357)]
    statuses: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    for digest, total in layers:
        for step in range(PULL_STEPS + 1):
            statuses.append(
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": total,
                    "completed": total * step // PULL_STEPS,
                }
            )
    statuses += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
    statuses.append({"status": "success"})
    return statuses


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: OllamaTestServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeouts, dropped streams, stop()) is part of the tests.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close kept-alive client connections too, so a stopped server is really down."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class OllamaTestServer:
    """The scripted server. Use as a context manager or call :meth:`start`/:meth:`stop`.

    ``port=0`` picks a free port; pass an old server's port to bring it "back up".
    """

    def __init__(
        self,
        *,
        port: int = 0,
        models: dict[str, dict[str, Any]] | None = None,
        version: str = SERVER_VERSION,
        load_s: float = 0.0,
    ) -> None:
        self.version = version
        # Seconds a model takes to load into memory (gpt-oss:20b: 10 to 60 s and more); no
        # model is loaded at the start, and one loaded stays so until unload().
        self.load_s = load_s
        self._loaded: set[str] = set()
        self._loading: dict[str, ModelLoad] = {}
        self.loads: list[ModelLoad] = []
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, Any]] = {}
        for name, show in (
            models if models is not None else {DEFAULT_MODEL: gpt_oss_show()}
        ).items():
            self.add_model(name, show)
        # What Ollama's registry offers for pulling (by `ollama create` FROM a model not here).
        self.registry: dict[str, dict[str, Any]] = {_normalise("gpt-oss:120b"): _gpt_oss_120b()}
        self._replies: list[Reply] = []
        self.default_reply: Reply | Responder | None = None
        self.requests: list[RecordedRequest] = []
        self._release = threading.Event()
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> OllamaTestServer:
        self._release.clear()
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.owner = self
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- models

    def add_model(self, name: str, show: dict[str, Any]) -> None:
        ShowResponse.model_validate(show)  # the client must be able to read it
        with self._lock:
            self._models[_normalise(name)] = show

    def remove_model(self, name: str) -> None:
        with self._lock:
            self._models.pop(_normalise(name), None)
            self._loaded.discard(_normalise(name))

    def unload(self, name: str = DEFAULT_MODEL) -> None:
        """Take a model out of memory (keep_alive ran out): the next request loads it."""
        with self._lock:
            self._loaded.discard(_normalise(name))

    def is_loaded(self, name: str = DEFAULT_MODEL) -> bool:
        with self._lock:
            return _normalise(name) in self._loaded

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", self.version)[:3])

    def model(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._models.get(_normalise(name))

    def models_snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._models)

    # -- scripting

    def script(self, *replies: Reply) -> None:
        """Queue replies; each ``/api/chat`` request with messages takes the next one."""
        with self._lock:
            self._replies.extend(replies)

    def clear_script(self) -> int:
        """Drop the scripted replies nobody asked for; returns how many there were."""
        with self._lock:
            left, self._replies = len(self._replies), []
        return left

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._replies)

    def release_stalls(self) -> None:
        self._release.set()

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.pop(0)
            default = self.default_reply
        if default is None:
            return Reply.http_error(500, "ollama test server: no scripted reply left for /api/chat")
        return default(request) if callable(default) else default

    def _stall(self) -> None:
        self._release.wait(timeout=60)

    # -- recording

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of every ``/api/chat`` request, in order."""
        with self._lock:
            return [r.json for r in self.requests if r.path == "/api/chat"]

    @property
    def seen_messages(self) -> list[list[dict[str, Any]]]:
        """For each answered ``/api/chat`` request with messages: what the model saw."""
        with self._lock:
            return [r.seen for r in self.requests if r.path == "/api/chat" and r.seen]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]
