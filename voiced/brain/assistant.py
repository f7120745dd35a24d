"""The assistant's brain: a gpt-oss conversation over Ollama, with tools, made for speech.

:class:`Assistant` holds one conversation. :meth:`Assistant.ask` runs one user turn:

1. sends the system prompt (spoken style, today's date), the bounded history and the user's
   words to ``/api/chat`` with the enabled tools, streaming;
2. hands every ``content`` piece to the consumer callback as it arrives (the TTS in the daemon,
   stdout in ``voiced chat``); ``thinking`` is never handed on, but it is kept in the turn's
   assistant messages across tool rounds, as Ollama asks for gpt-oss;
3. when the reply carries tool calls, appends ONE assistant message with everything the round
   streamed (thinking, content, tool_calls), runs each call through the
   :class:`~voiced.brain.tools.registry.ToolRegistry`, appends ``role: tool`` results with
   ``tool_name``, and asks again, up to ``llm.max_tool_rounds`` rounds;
4. returns a :class:`TurnResult` (text, tool calls with decisions, error, timings).

Failures never raise out of :meth:`ask` and never hang: connection refused, a missing model,
HTTP errors, an ``{"error"}`` line mid-stream (gpt-oss's ``error parsing tool call``, in each
shape Ollama's versions use), a dropped stream, a stalled server (``llm.idle_timeout_s``
between chunks), unparseable chunks and runaway tool loops each end the turn with a short
sentence meant to be spoken (:attr:`TurnResult.error_message`), after one retry where a retry
is safe (nothing was spoken yet in that round). Mangled tool names such as
``assistant<|channel|>analysis`` and bad arguments go back to the model as tool errors, so it
can correct itself.

Model loads: Ollama sends nothing, not even headers, until the model is loaded and the prompt
read, and abandons a load whose client hangs up. So the wait for a reply's first byte is
bounded by ``llm.load_timeout_s`` (minutes), never by the idle limit, and such a wait is never
retried; :meth:`Assistant.warm_up` holds its connection until the model is in memory, a turn
asked meanwhile waits for the same load on the server, and ``on_loading`` lets the caller say
"one moment, the model is loading" when that wait grows long.

History keeps what was said (user text, spoken reply), bounded by ``llm.history_turns`` and an
estimate of ``llm.history_tokens``. A barge-in (the ``cancel`` event) ends a turn at once, even
while the server sends nothing; :meth:`Assistant.clip_last_reply` then cuts the reply that turn
saved down to what was actually spoken.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from voiced.brain.tools.registry import ToolOutcome, ToolRegistry, clean_tool_name
from voiced.config import LlmSettings, Settings, keep_alive_seconds

log = logging.getLogger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"
# Retries of one request when a retry cannot repeat anything already spoken.
RETRIES = 1
CONNECT_TIMEOUT_S = 5.0
# How often a turn waiting on a silent server looks at its cancel event.
CANCEL_POLL_S = 0.05
# Sent back in place of a tool name that was nothing but harmony control tokens.
UNNAMED_TOOL = "unknown_tool"
# Seconds of silence, while the model may be loading, before the user is told so.
LOADING_NOTICE_S = 2.0
LOADING_SENTENCE = "One moment, the model is loading."


class TurnError(str, enum.Enum):
    """Why a turn ended early."""

    UNREACHABLE = "unreachable"
    MODEL_MISSING = "model_missing"
    BAD_REQUEST = "bad_request"
    SERVER_ERROR = "server_error"
    STREAM_ERROR = "stream_error"
    DROPPED = "dropped"
    STALLED = "stalled"
    LOAD_TIMEOUT = "load_timeout"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    EMPTY = "empty"
    TOOL_ROUNDS = "tool_rounds"
    INTERNAL = "internal"


def spoken_model_name(model: str) -> str:
    """``gpt-oss:20b`` -> ``gpt-oss 20b``: how a model name sounds best through TTS."""
    name, _, tag = model.partition(":")
    return f"{name} {tag}" if tag and tag != "latest" else name


def error_sentence(error: TurnError, model: str) -> str:
    """A short sentence for the user, written to be spoken."""
    return {
        TurnError.UNREACHABLE: "I can't reach the language model right now. Is Ollama running?",
        TurnError.MODEL_MISSING: (
            f"The model {spoken_model_name(model)} is not installed in Ollama yet."
        ),
        TurnError.BAD_REQUEST: "The language model turned down my request.",
        TurnError.SERVER_ERROR: "The language model ran into an error. Please try again.",
        TurnError.STREAM_ERROR: "The language model ran into an error. Please try again.",
        TurnError.DROPPED: "The connection to the language model dropped. Please try again.",
        TurnError.STALLED: "The language model stopped responding. Please try again.",
        TurnError.LOAD_TIMEOUT: "The language model took too long to load, so I gave up.",
        TurnError.OUT_OF_MEMORY: "There is not enough memory to load the language model.",
        TurnError.TIMEOUT: "That took too long, so I stopped.",
        TurnError.MALFORMED: "I got a garbled answer from the language model. Please try again.",
        TurnError.EMPTY: "I don't have an answer for that.",
        TurnError.TOOL_ROUNDS: "That needed too many steps, so I stopped.",
        TurnError.INTERNAL: "Something went wrong on my side. Please try again.",
    }[error]


def resolve_host(settings: LlmSettings) -> str:
    """The server URL in use: ``llm.host``, else ``$OLLAMA_HOST``, else the default."""
    return settings.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def make_client(settings: LlmSettings) -> ollama.Client:
    """The real Ollama client, with two read limits.

    Ollama sends nothing, not even the headers, until the model is loaded and the prompt
    read, and it abandons the load when the client hangs up. So the wait for the headers may
    last ``llm.load_timeout_s``; once they are in, the body's chunks must keep coming within
    ``llm.idle_timeout_s``.
    """
    timeout = httpx.Timeout(
        connect=min(CONNECT_TIMEOUT_S, settings.request_timeout_s),
        read=settings.load_timeout_s,
        write=settings.idle_timeout_s,
        pool=settings.idle_timeout_s,
    )
    idle_s = settings.idle_timeout_s

    def body_read_limit(response: httpx.Response) -> None:
        # Runs when the headers are in, before the body is read: httpcore takes the read
        # limit for the body from this same dict of the request's timeouts.
        timeouts = response.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = idle_s

    # host=None lets the client read OLLAMA_HOST itself.
    return ollama.Client(
        host=settings.host, timeout=timeout, event_hooks={"response": [body_read_limit]}
    )


def tool_name_for_model(raw_name: str) -> str:
    """A tool name that is safe to send back to Ollama.

    gpt-oss sometimes names a call ``assistant<|channel|>analysis``. ``<|...|>`` are harmony
    control tokens: echoed back in the history, they would corrupt the prompt of the very round
    that is meant to let the model correct itself.
    """
    return clean_tool_name(raw_name) or UNNAMED_TOOL


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token, plus message overhead)."""
    return len(text) // 4 + 4


# The context budget errs on the large side: JSON, paths and numbers in tool outputs run
# nearer three characters a token than four.
BUDGET_CHARS_PER_TOKEN = 3.0
BUDGET_MESSAGE_TOKENS = 8  # role and harmony markers around each message
BUDGET_TEMPLATE_TOKENS = 120  # gpt-oss's system header and the tool preamble
# Ollama's num_ctx when none is given (recent versions may pick more; this is the safe side).
OLLAMA_DEFAULT_NUM_CTX = 4096
# What a tool output is cut down to, step by step, when the prompt does not fit.
TOOL_OUTPUT_STEPS = (1000, 300, 80)
CUT_NOTE = " [...cut to fit the model's context window]"


def budget_tokens(value: Any) -> int:
    """A conservative token count of a message (or tool list) as the model will see it."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return int(len(text) / BUDGET_CHARS_PER_TOKEN) + BUDGET_MESSAGE_TOKENS


def fit_context(
    system: dict[str, Any],
    history: Sequence[dict[str, Any]],
    turn: Sequence[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    num_ctx: int,
) -> list[dict[str, Any]]:
    """The request's messages, cut to fit ``num_ctx`` with room for the reply.

    Ollama does not refuse a prompt that is too long: it silently drops the oldest messages
    but the system ones, keeping only the last, so the question itself can go while tool
    outputs stay. So voiced cuts first, in this order: old turns of the history (oldest
    first), then this turn's tool outputs (each down to a few lines before the next, newest
    last), then the thinking of earlier tool rounds. The system prompt and the question
    (``turn[0]``) stay.
    """
    reserve = min(1024, num_ctx // 8)  # thinking and the spoken answer
    budget = num_ctx - reserve - BUDGET_TEMPLATE_TOKENS
    if tools:
        budget -= budget_tokens(tools)
    history = list(history)
    turn = [dict(message) for message in turn]

    def size() -> int:
        return sum(budget_tokens(m) for m in [system, *history, *turn])

    if size() <= budget:
        return [system, *history, *turn]
    while history and size() > budget:
        history.pop(0)
        while history and history[0].get("role") != "user":
            history.pop(0)  # a whole turn: no answer without its question
    for index in [i for i, m in enumerate(turn) if m.get("role") == "tool"]:
        for limit in TOOL_OUTPUT_STEPS:  # the newest output, the one in question, goes last
            content = turn[index].get("content", "")
            if size() <= budget:
                break
            if len(content) > limit + len(CUT_NOTE):
                turn[index]["content"] = content[:limit] + CUT_NOTE
    rounds = [i for i, m in enumerate(turn) if m.get("role") == "assistant" and m.get("thinking")]
    for index in rounds[:-1]:
        if size() <= budget:
            break
        turn[index].pop("thinking", None)
    if size() > budget:
        log.warning(
            "the request is about %d tokens, over llm.options.num_ctx %d; Ollama may drop "
            "parts of it",
            size() + reserve + BUDGET_TEMPLATE_TOKENS,
            num_ctx,
        )
    return [system, *history, *turn]


# --------------------------------------------------------------------------- results


@dataclass
class ToolCallRecord:
    """One tool call in a turn, as transcripts record it."""

    name: str
    arguments: Any
    decision: str
    result: str
    error: str | None = None
    duration_ms: float = 0.0

    @classmethod
    def from_outcome(cls, outcome: ToolOutcome) -> ToolCallRecord:
        return cls(
            name=outcome.name,
            arguments=outcome.arguments,
            decision=outcome.decision,
            result=outcome.summary(),
            error=outcome.error,
            duration_ms=round(outcome.duration_s * 1000, 1),
        )


@dataclass
class TurnTimings:
    """Milliseconds from the start of :meth:`Assistant.ask`."""

    first_chunk_ms: float | None = None
    first_token_ms: float | None = None
    llm_ms: float = 0.0
    tools_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class TurnResult:
    user: str
    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    error: TurnError | None = None
    error_message: str | None = None
    # What went wrong in technical words (Ollama's message): for logs and the terminal.
    error_detail: str | None = None
    interrupted: bool = False
    # The user was told the model is loading (LOADING_SENTENCE).
    loading_notice: bool = False
    requests: int = 0
    retries: int = 0
    tool_rounds: int = 0
    done_reason: str | None = None
    prompt_tokens: int | None = None
    eval_tokens: int | None = None
    timings: TurnTimings = field(default_factory=TurnTimings)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for transcripts (thinking left out: it is never shown)."""
        return {
            "user": self.user,
            "assistant": self.text,
            "tool_calls": [asdict(call) for call in self.tool_calls],
            "error": self.error.value if self.error else None,
            "error_message": self.error_message,
            "interrupted": self.interrupted,
            "requests": self.requests,
            "retries": self.retries,
            "timings": {
                key: None if value is None else round(value, 1)
                for key, value in asdict(self.timings).items()
            },
        }


# --------------------------------------------------------------------------- internals


class _RoundFailed(Exception):
    def __init__(self, error: TurnError, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.retryable = retryable


@dataclass
class _Round:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str | None = None
    prompt_tokens: int | None = None
    eval_tokens: int | None = None
    interrupted: bool = False
    chunks: int = 0

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thinking:
            message["thinking"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


@dataclass
class _Turn:
    user: str
    assistant: str


# Ollama's words when a model does not fit ("model requires more system memory (14.2 GiB)
# than is available", "cudaMalloc failed: out of memory").
_NO_MEMORY = ("requires more system memory", "out of memory", "insufficient memory")
TOOL_CALL_ERROR = "error parsing tool call"


def _hidden_error(exc: ValidationError) -> str | None:
    """An error the client could not see: a line whose key is not ``error``.

    Ollama up to 0.11.4 sent a gpt-oss tool call it could not parse as
    ``{"error parsing tool call": "raw=..."}`` (ollama#11781): no ``error`` key, so the client
    tries to read it as a ChatResponse and pydantic fails.
    """
    for error in exc.errors():
        given = error.get("input")
        if isinstance(given, dict) and "message" not in given:
            for key, value in given.items():
                if str(key).startswith("error"):
                    return f"{key}: {value}"
    return None


def _classify(exc: BaseException, chunks: int = 0) -> _RoundFailed:
    """What went wrong, from the exception and the number of chunks the round received."""
    if isinstance(exc, _RoundFailed):
        return exc
    if isinstance(exc, (ConnectionError, httpx.ConnectError)):
        return _RoundFailed(TurnError.UNREACHABLE, str(exc), retryable=False)
    if isinstance(exc, httpx.ConnectTimeout):
        # No answer to the connect at all (a firewalled or dead host), unlike a loading model,
        # which accepts the connection and then sends nothing.
        return _RoundFailed(TurnError.UNREACHABLE, f"connect timed out: {exc}", retryable=False)
    if isinstance(exc, ollama.ResponseError):
        status = exc.status_code
        if status == 404:
            return _RoundFailed(TurnError.MODEL_MISSING, exc.error, retryable=False)
        if any(words in exc.error.lower() for words in _NO_MEMORY):
            # A load that does not fit fails again, after the same long wait.
            return _RoundFailed(TurnError.OUT_OF_MEMORY, exc.error, retryable=False)
        if exc.error.startswith(TOOL_CALL_ERROR):
            # gpt-oss wrote a call Ollama could not parse: an {"error"} line mid-stream, or
            # HTTP 500 when nothing was sent yet (0.12.6 and later). Asking again usually works.
            return _RoundFailed(TurnError.STREAM_ERROR, exc.error, retryable=True)
        if status == -1 and chunks == 0:
            # Ollama up to 0.12.5 answered a failure before the first chunk with HTTP 200 and
            # an {"error"} line; later versions with HTTP 500: the same server error.
            return _RoundFailed(TurnError.SERVER_ERROR, exc.error, retryable=True)
        if status == -1:  # an {"error"} line after the reply started
            return _RoundFailed(TurnError.STREAM_ERROR, exc.error, retryable=True)
        if 400 <= status < 500:
            return _RoundFailed(TurnError.BAD_REQUEST, exc.error, retryable=False)
        return _RoundFailed(TurnError.SERVER_ERROR, f"{status}: {exc.error}", retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        if chunks == 0:
            # Asking again would start the load over: Ollama drops a load whose client left.
            return _RoundFailed(
                TurnError.LOAD_TIMEOUT, f"nothing within the load timeout: {exc}", retryable=False
            )
        return _RoundFailed(
            TurnError.STALLED, f"no data for the idle limit: {exc}", retryable=False
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.NetworkError)):
        return _RoundFailed(TurnError.DROPPED, str(exc) or type(exc).__name__, retryable=True)
    if isinstance(exc, ValidationError) and (hidden := _hidden_error(exc)) is not None:
        return _RoundFailed(TurnError.STREAM_ERROR, hidden, retryable=True)
    if isinstance(exc, (ValidationError, json.JSONDecodeError, TypeError, KeyError)):
        return _RoundFailed(TurnError.MALFORMED, f"{type(exc).__name__}: {exc}", retryable=True)
    if isinstance(exc, httpx.HTTPError):
        return _RoundFailed(TurnError.DROPPED, f"{type(exc).__name__}: {exc}", retryable=True)
    return _RoundFailed(TurnError.INTERNAL, f"{type(exc).__name__}: {exc}", retryable=False)


TextConsumer = Callable[[str], None]

_STREAM_END = object()


def _chunks_until_cancelled(
    open_stream: Callable[[], Iterator[ollama.ChatResponse]],
    cancel: threading.Event | None,
    on_silence: Callable[[float], None] | None = None,
) -> Iterator[ollama.ChatResponse]:
    """The stream's chunks, read on a helper thread; ends early, without error, on ``cancel``.

    A read blocked on a silent server (a model loading, a stall) cannot be aborted through the
    client: httpx only gives up at the read timeout. So the reading happens on a thread, and a
    barge-in stops the wait at once. The abandoned reader closes the stream (which tells Ollama
    to stop) at its next chunk or at the read timeout; until then it holds the connection, so
    a model load that request started goes on for the next turn to use.
    ``on_silence(seconds)`` is called now and then while no chunk has come yet.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    abandoned = threading.Event()

    def read() -> None:
        stream: Iterator[ollama.ChatResponse] | None = None
        try:
            stream = open_stream()
            for chunk in stream:
                if abandoned.is_set():
                    return
                items.put(chunk)
            items.put(_STREAM_END)
        except BaseException as exc:  # whatever ends the reading must reach the consumer
            items.put(exc)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    threading.Thread(target=read, name="voiced-llm-stream", daemon=True).start()
    started = time.monotonic()
    silent = True
    try:
        while True:
            try:
                item = items.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    return
                if silent and on_silence is not None:
                    on_silence(time.monotonic() - started)
                continue
            silent = False
            if item is _STREAM_END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandoned.set()


class Assistant:
    """One conversation with the model. Thread-safe: one turn at a time."""

    def __init__(
        self,
        settings: LlmSettings,
        registry: ToolRegistry | None = None,
        *,
        client: ollama.Client | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client or make_client(settings)
        self.host = resolve_host(settings)
        self._turns: list[_Turn] = []
        self._lock = threading.RLock()
        self._turn_lock = threading.Lock()
        self._busy = False
        self._pending_clip: str | None = None
        # Whether the last ask saved a turn: only that turn's reply may be clipped.
        self._last_ask_saved = False
        # Dropped for good when the model turns them down (a model without tools or thinking).
        self._send_tools = True
        self._think: str | bool | None = settings.think
        # What is known of the model's load: warm-ups in flight, and until when (monotonic)
        # Ollama keeps the model after the last answer (None: never answered yet).
        self._warm_ups = 0
        self._loaded_until: float | None = None
        self._keep_alive_s = keep_alive_seconds(settings.keep_alive)
        # A whole number: the config checks llm.options' types.
        self._num_ctx = int(settings.options.get("num_ctx") or OLLAMA_DEFAULT_NUM_CTX)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        tools: bool = True,
        confirm: Any = None,
        on_call: Any = None,
        policy: Any = None,
    ) -> Assistant:
        """An assistant with the tool groups of ``tools.enabled`` (or none with tools=False).

        The registry comes from :func:`voiced.brain.tools.policy.build_registry`: the same policy,
        sandbox, limits and audit log as ``voiced tools call``.
        """
        registry = None
        if tools:
            from voiced.brain.tools.policy import build_registry

            registry = build_registry(
                settings, confirm=confirm, on_call=on_call, source="assistant"
            )
            if policy is not None:
                registry.policy = policy
        return cls(settings.llm, registry)

    # -- conversation state

    def system_prompt(self, today: date | None = None) -> str:
        """``llm.system_prompt`` with today's date in place of ``{date}`` (or appended)."""
        day = today or date.today()
        spoken_date = f"{day:%A} {day.day} {day:%B %Y}"
        prompt = self.settings.system_prompt
        if "{date}" in prompt:
            return prompt.replace("{date}", spoken_date)
        return f"{prompt.rstrip()}\nToday is {spoken_date}."

    def history(self) -> list[dict[str, str]]:
        """The remembered conversation as chat messages (no system prompt)."""
        with self._lock:
            messages: list[dict[str, str]] = []
            for turn in self._turns:
                messages.append({"role": "user", "content": turn.user})
                if turn.assistant:
                    messages.append({"role": "assistant", "content": turn.assistant})
            return messages

    def history_tokens(self) -> int:
        return sum(estimate_tokens(m["content"]) for m in self.history())

    def reset(self) -> None:
        with self._lock:
            self._turns.clear()
            self._last_ask_saved = False

    def clip_last_reply(self, spoken_text: str) -> None:
        """After a barge-in: remember only the part of the last reply that was spoken.

        Does nothing when the last turn saved nothing (it failed before any reply): the turn
        before it is not the one that was interrupted.
        """
        with self._lock:
            if self._busy:
                self._pending_clip = spoken_text
                return
            if not self._last_ask_saved or not self._turns:
                log.debug("nothing to clip: the last turn saved no reply")
                return
            self._turns[-1].assistant = spoken_text.strip()

    def forget_last_turn(self, user: str) -> None:
        """Forget the last turn if it was the question ``user`` (the daemon withdrew it: the
        user went on speaking, and the question is asked again, whole)."""
        with self._lock:
            if self._last_ask_saved and self._turns and self._turns[-1].user == user:
                self._turns.pop()
                self._last_ask_saved = False

    def _commit(self, user: str, assistant: str) -> None:
        with self._lock:
            if self._pending_clip is not None:
                assistant = self._pending_clip.strip()
                self._pending_clip = None
            self._turns.append(_Turn(user=user, assistant=assistant))
            self._last_ask_saved = True
            self._trim()

    def _trim(self) -> None:
        limit_turns = self.settings.history_turns
        if limit_turns == 0:
            self._turns.clear()
            return
        while len(self._turns) > limit_turns:
            self._turns.pop(0)

        def tokens() -> int:
            return sum(
                estimate_tokens(t.user) + (estimate_tokens(t.assistant) if t.assistant else 0)
                for t in self._turns
            )

        while len(self._turns) > 1 and tokens() > self.settings.history_tokens:
            self._turns.pop(0)

    # -- the model

    @property
    def loading(self) -> bool:
        """A warm-up is waiting for Ollama to load the model."""
        with self._lock:
            return self._warm_ups > 0

    def _may_be_loading(self) -> bool:
        """Whether a silent server is likely loading the model (not just reading a prompt)."""
        with self._lock:
            if self._warm_ups:
                return True
            return self._loaded_until is None or time.monotonic() > self._loaded_until

    def _answered(self) -> None:
        """The model is in memory now, and stays for keep_alive."""
        with self._lock:
            self._loaded_until = time.monotonic() + self._keep_alive_s

    def warm_up(self) -> float:
        """Load the model now (Ollama loads on a chat with no messages) so turn one is quick.

        Holds its connection until the model is loaded, up to ``llm.load_timeout_s``: Ollama
        abandons a load whose client hangs up. A turn asked meanwhile waits for the same load.
        Returns the seconds the load took; raises the client's error when the server is down,
        the model is missing or the load failed.
        """
        began = time.monotonic()
        with self._lock:
            self._warm_ups += 1
        try:
            self.client.chat(
                model=self.settings.model, messages=[], keep_alive=self.settings.keep_alive
            )
            self._answered()
        finally:
            with self._lock:
                self._warm_ups -= 1
        return time.monotonic() - began

    def ask(
        self,
        text: str,
        on_text: TextConsumer | None = None,
        *,
        cancel: threading.Event | None = None,
        on_tools: Callable[[], None] | None = None,
        on_loading: Callable[[], None] | None = None,
    ) -> TurnResult:
        """Run one user turn. Content pieces go to ``on_text`` as they stream in.

        ``on_tools`` is called when tools are about to run after some text was given: that
        text is complete for now ("Let me check."), so a speaker can say it while they run.
        ``on_loading`` is called once when the server has been silent for
        :data:`LOADING_NOTICE_S` while the model is probably being loaded (a warm-up is
        waiting, or keep_alive ran out): time to tell the user (:data:`LOADING_SENTENCE`).

        Setting ``cancel`` (a barge-in) ends the turn within moments, also while the server
        sends nothing (a model loading, a stall), and nothing is retried after it. The result
        is then ``interrupted`` and the caller should :meth:`clip_last_reply` to what was
        spoken.
        """
        with self._turn_lock:
            with self._lock:
                self._busy = True
                self._pending_clip = None
                self._last_ask_saved = False
            try:
                return self._ask(text, on_text, cancel, on_tools, on_loading)
            finally:
                with self._lock:
                    self._busy = False

    def _ask(
        self,
        text: str,
        on_text: TextConsumer | None,
        cancel: threading.Event | None,
        on_tools: Callable[[], None] | None = None,
        on_loading: Callable[[], None] | None = None,
    ) -> TurnResult:
        started = time.monotonic()
        result = TurnResult(user=text)

        def notice_loading() -> None:
            if result.loading_notice:
                return
            result.loading_notice = True
            log.info("the model is still loading; telling the user")
            if on_loading is not None:
                try:
                    on_loading()
                except Exception:
                    log.exception("the loading notice failed; the turn goes on")

        prior = [{"role": "system", "content": self.system_prompt()}, *self.history()]
        turn_messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
        spoken: list[str] = []
        new_round = False

        def emit(piece: str) -> None:
            nonlocal new_round
            if new_round and spoken and not spoken[-1][-1:].isspace() and not piece[:1].isspace():
                piece = " " + piece  # "Let me check." + "It is..." must stay two sentences
            new_round = False
            if result.timings.first_token_ms is None:
                result.timings.first_token_ms = (time.monotonic() - started) * 1000
            spoken.append(piece)
            if on_text is not None:
                try:
                    on_text(piece)
                except Exception:
                    log.exception("the text consumer failed; the reply goes on")

        max_rounds = self.settings.max_tool_rounds
        try:
            for round_index in range(max_rounds + 1):
                with_tools = bool(self.registry) and round_index < max_rounds
                tools = self.registry.schemas() if with_tools and self.registry else None
                messages = fit_context(prior[0], prior[1:], turn_messages, tools, self._num_ctx)
                round_ = self._request(
                    messages, tools, emit, cancel, started, result, notice_loading
                )
                result.thinking += round_.thinking
                result.done_reason = round_.done_reason
                result.prompt_tokens = round_.prompt_tokens
                result.eval_tokens = round_.eval_tokens
                if round_.interrupted:
                    result.interrupted = True
                    break
                if not round_.tool_calls:
                    if not round_.content and not spoken:
                        raise _RoundFailed(
                            TurnError.EMPTY, "no content in the reply", retryable=False
                        )
                    break
                if round_index == max_rounds:
                    raise _RoundFailed(
                        TurnError.TOOL_ROUNDS,
                        f"tool calls after {max_rounds} rounds",
                        retryable=False,
                    )
                turn_messages.append(round_.message())
                result.tool_rounds += 1
                if spoken and on_tools is not None:
                    try:
                        on_tools()
                    except Exception:
                        log.exception("the text consumer failed; the reply goes on")
                for call in round_.tool_calls:
                    if cancel is not None and cancel.is_set():
                        result.interrupted = True
                        break
                    turn_messages.append(self._run_tool(call, result))
                if result.interrupted:
                    break
                new_round = True
        except _RoundFailed as failure:
            result.error = failure.error
            result.error_message = error_sentence(failure.error, self.settings.model)
            result.error_detail = failure.detail
            log.warning("turn failed (%s): %s", failure.error.value, failure.detail)
        except Exception as exc:  # a bug must not kill the daemon's loop
            log.exception("turn failed unexpectedly")
            result.error = TurnError.INTERNAL
            result.error_message = error_sentence(TurnError.INTERNAL, self.settings.model)
            log.debug("internal error detail: %s", exc)
        if cancel is not None and cancel.is_set():
            result.interrupted = True
        result.text = "".join(spoken)
        result.timings.total_ms = (time.monotonic() - started) * 1000
        if result.text or result.error is None:
            self._commit(text, result.text.strip())
        return result

    def _run_tool(self, call: dict[str, Any], result: TurnResult) -> dict[str, Any]:
        function = call.get("function") or {}
        name = function.get("name", "")  # already made safe by tool_name_for_model
        arguments = function.get("arguments")
        began = time.monotonic()
        if self.registry is None:
            outcome = ToolOutcome(
                name=name,
                arguments=arguments,
                decision="unknown",
                error="no tools are available in this conversation",
            )
        else:
            outcome = self.registry.call(name, arguments)
        result.timings.tools_ms += (time.monotonic() - began) * 1000
        result.tool_calls.append(ToolCallRecord.from_outcome(outcome))
        log.info("tool %s -> %s", outcome.name, outcome.decision)
        return {"role": "tool", "tool_name": outcome.name, "content": outcome.text_for_model()}

    def _request(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        emit: TextConsumer,
        cancel: threading.Event | None,
        started: float,
        result: TurnResult,
        notice_loading: Callable[[], None],
    ) -> _Round:
        attempt = 0
        if not self._send_tools:
            tools = None
        while True:
            round_ = _Round()
            if cancel is not None and cancel.is_set():
                round_.interrupted = True
                return round_
            emitted = False

            def emit_once(piece: str) -> None:
                nonlocal emitted
                emitted = True
                emit(piece)

            began = time.monotonic()
            result.requests += 1
            try:
                self._stream(
                    messages, tools, round_, emit_once, cancel, started, result, notice_loading
                )
                return round_
            except Exception as exc:
                failure = _classify(exc, round_.chunks)
                if cancel is not None and cancel.is_set():
                    raise failure from None  # the user spoke: asking again is pointless
                if failure.error is TurnError.BAD_REQUEST and self._adapt_to(failure.detail, tools):
                    if not self._send_tools:
                        tools = None
                    continue
                # Never a retry of a request still waiting for its first byte: the model may
                # be loading, and hanging up would make Ollama abandon the load. Such waits
                # end only at llm.load_timeout_s (LOAD_TIMEOUT, not retryable).
                if failure.retryable and not emitted and attempt < RETRIES:
                    attempt += 1
                    result.retries += 1
                    log.info("retrying after %s: %s", failure.error.value, failure.detail)
                    continue
                raise failure from None
            finally:
                result.timings.llm_ms += (time.monotonic() - began) * 1000

    def _adapt_to(self, detail: str, tools: list[dict[str, Any]] | None) -> bool:
        """Stop sending what the model rejected (tools, a think level); True to ask again."""
        if "does not support tools" in detail and tools and self._send_tools:
            log.warning("%s cannot call tools; continuing without them", self.settings.model)
            self._send_tools = False
            return True
        if "think value" in detail and isinstance(self._think, str):
            # A level is for gpt-oss only (on older Ollama). think=None would switch the
            # thinking parser off on 0.12.3, and a model such as qwen3 would have its
            # <think> text spoken aloud: true keeps thinking apart from the answer.
            log.warning(
                "%s rejects think=%r; asking with think=true", self.settings.model, self._think
            )
            self._think = True
            return True
        if "does not support thinking" in detail and self._think not in (None, False):
            log.warning(
                "%s cannot think; continuing without think=%r", self.settings.model, self._think
            )
            self._think = None
            return True
        return False

    def _stream(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        round_: _Round,
        emit: TextConsumer,
        cancel: threading.Event | None,
        started: float,
        result: TurnResult,
        notice_loading: Callable[[], None],
    ) -> None:
        settings = self.settings
        deadline: float | None = None  # request_timeout_s runs from the first chunk

        def on_silence(waited_s: float) -> None:
            if waited_s >= LOADING_NOTICE_S and self._may_be_loading():
                notice_loading()

        def open_stream() -> Iterator[ollama.ChatResponse]:
            return self.client.chat(
                model=settings.model,
                messages=list(messages),
                tools=tools,
                stream=True,
                think=self._think,
                options=dict(settings.options) or None,
                keep_alive=settings.keep_alive,
            )

        stream = _chunks_until_cancelled(open_stream, cancel, on_silence)
        try:
            for chunk in stream:
                round_.chunks += 1
                if round_.chunks == 1:
                    self._answered()
                    deadline = time.monotonic() + settings.request_timeout_s
                if result.timings.first_chunk_ms is None:
                    result.timings.first_chunk_ms = (time.monotonic() - started) * 1000
                if cancel is not None and cancel.is_set():
                    round_.interrupted = True
                    return
                message = chunk.message
                if message.thinking:
                    round_.thinking += message.thinking
                if message.content:
                    round_.content += message.content
                    emit(message.content)
                for call in message.tool_calls or ():
                    name = tool_name_for_model(call.function.name)
                    if name != call.function.name:
                        log.info("the model named a tool %r; read as %r", call.function.name, name)
                    round_.tool_calls.append(
                        {"function": {"name": name, "arguments": dict(call.function.arguments)}}
                    )
                if chunk.done:
                    round_.done_reason = chunk.done_reason
                    round_.prompt_tokens = chunk.prompt_eval_count
                    round_.eval_tokens = chunk.eval_count
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise _RoundFailed(
                        TurnError.TIMEOUT,
                        f"request ran past {settings.request_timeout_s:g} s",
                        retryable=False,
                    )
            if cancel is not None and cancel.is_set():
                round_.interrupted = True  # while the server was silent
                return
            # The body ended without a done chunk.
            raise _RoundFailed(TurnError.DROPPED, "stream ended before done", retryable=True)
        finally:
            stream.close()
