"""The tool registry: typed Python functions the model may call, and one gate they all pass.

A tool is a plain function with type hints and a Google-style docstring::

    def current_time(timezone: str | None = None) -> str:
        '''The current date and time.

        Args:
            timezone: IANA time zone such as Europe/Berlin; empty for the local zone.
        '''

:meth:`Tool.from_function` turns it into the JSON schema Ollama's ``tools`` parameter takes
and a pydantic model that validates the model's arguments before anything runs.
:meth:`ToolRegistry.call` is the only way a call executes: name lookup (tolerant of gpt-oss's
mangled names), argument validation, the policy (allowed / needs confirmation / refused), the
confirmation callback, a time limit, result text bounded to ``tools.max_output_chars``, and an
``on_call`` hook that sees every outcome (the audit log hangs there).

A tool that needs confirmation is always asked about: a policy may refuse it, never wave it
through. The time limit is cooperative: each call runs in a worker thread with a
:class:`CallContext` (deadline and cancel flag) that the tool fetches with :func:`current_call`.
Past the limit the model is told the call did not finish and the context is cancelled: long
work (whisper's abort callback, folder walks, command runs) stops, and a change (write,
delete) checks it under :meth:`CallContext.committing`, so nothing is changed after the model
was told otherwise. A call that made its change but does not return within
:data:`_COMMITTED_GRACE_S` is reported as changed with its result too late; one stuck in the
middle of a change (a hung filesystem) as not known. When an abandoned call ends anyway,
``on_late`` gets a follow-up outcome.

Tool groups live in modules named by :data:`GROUP_MODULES`; each exposes
``tools(settings: ToolsSettings) -> list[Tool]``. Groups whose module is not there are skipped.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import inspect
import json
import logging
import re
import threading
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from voiced.config import ToolsSettings

log = logging.getLogger(__name__)

# How long a call past its limit that already made its change gets to return its result.
_COMMITTED_GRACE_S = 5.0

GROUP_MODULES: dict[str, str] = {
    "time": "voiced.brain.tools.clock",
    "audio": "voiced.brain.tools.audio",
    "system": "voiced.brain.tools.system",
    "files": "voiced.brain.tools.files",
    "commands": "voiced.brain.tools.commands",
}


class ToolError(Exception):
    """Raised by a tool for a failure the model should hear about (bad path, no such zone).

    The message goes back to the model as the tool's result, so keep it short and plain.
    """


class CallCancelled(ToolError):
    """The call ran out of time (or was cancelled) and stopped before changing anything more."""


class CallContext:
    """The running call's deadline and cancel flag, for the tool to check while it works.

    Fetch it with :func:`current_call` from the thread the tool runs in.
    """

    def __init__(self, tool: str, limit_s: float) -> None:
        self.tool = tool
        self.limit_s = limit_s
        self.deadline = time.monotonic() + limit_s
        self.cancel_event = threading.Event()
        # Held while a change is made; the registry waits on it (with a timeout) to give up.
        self._lock = threading.Lock()
        # Guards the flags below; never held for long.
        self._state = threading.Lock()
        self.committed = False
        self.finished = False
        self.abandoned = False

    def cancelled(self) -> bool:
        """True once the call is past its deadline or was cancelled; usable as an abort callback."""
        return self.cancel_event.is_set() or time.monotonic() >= self.deadline

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`CallCancelled` once the call should stop."""
        if self.cancelled():
            raise CallCancelled(
                f"{self.tool} was stopped at its time limit ({self.limit_s:g} seconds)"
            )

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Hold while making a change: refused once cancelled, and never cancelled halfway.

        The registry cancels the call and then takes the same lock before giving up on it, so
        a change either happens before the model is told how the call ended, or not at all.
        """
        with self._lock:
            self.check()
            with self._state:
                self.committed = True
            yield


class _NoCall(CallContext):
    """Outside the registry (a tool function called directly): never cancelled."""

    def __init__(self) -> None:
        super().__init__("", 0.0)
        self.deadline = float("inf")

    def remaining_s(self) -> float:
        return float("inf")


_NO_CALL = _NoCall()
_current = threading.local()


def current_call() -> CallContext:
    """The context of the tool call running in this thread (a never-cancelled one outside)."""
    return getattr(_current, "context", None) or _NO_CALL


class Decision(str, enum.Enum):
    """What the policy says about one call."""

    ALLOW = "allowed"
    CONFIRM = "needs_confirmation"
    REFUSE = "refused"


@dataclass(frozen=True)
class PolicyDecision:
    decision: Decision
    reason: str = ""

    @classmethod
    def allow(cls, reason: str = "") -> PolicyDecision:
        return cls(Decision.ALLOW, reason)

    @classmethod
    def confirm(cls, reason: str) -> PolicyDecision:
        return cls(Decision.CONFIRM, reason)

    @classmethod
    def refuse(cls, reason: str) -> PolicyDecision:
        return cls(Decision.REFUSE, reason)


@dataclass(frozen=True)
class ConfirmationRequest:
    """Handed to the confirmation callback; ``question`` is ready to be asked aloud."""

    tool: str
    arguments: dict[str, Any]
    question: str


class ConfirmationUnanswered(Exception):
    """Raised by a confirmation callback when nobody answered the question in time.

    The call is declined, as for a no, and the outcome says that it went unanswered.
    """


# The outcome's decision, as recorded in transcripts and the audit log.
OUTCOME_DECISIONS = ("allowed", "confirmed", "declined", "refused", "invalid", "unknown")


@dataclass
class ToolOutcome:
    """Everything about one call: what was asked, what was decided, what came back."""

    name: str
    arguments: Any
    decision: str
    result: str = ""
    error: str | None = None
    reason: str = ""
    duration_s: float = 0.0
    truncated: bool = False
    result_chars: int = 0
    # A follow-up: the call was abandoned at its time limit and this is how it really ended.
    late: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def text_for_model(self) -> str:
        """The ``role: tool`` content: the result, or an error the model can relay or fix."""
        return self.result if self.error is None else f"error: {self.error}"

    def summary(self, limit: int = 200) -> str:
        """A short one-line form of the result for transcripts."""
        text = " ".join(self.text_for_model().split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


Policy = Callable[["Tool", dict[str, Any]], PolicyDecision]
# (validated arguments, the registry's time limit) -> this call's time limit in seconds.
TimeLimit = Callable[[dict[str, Any], float], float]
Confirm = Callable[[ConfirmationRequest], bool]
CallHook = Callable[[ToolOutcome], None]


# --------------------------------------------------------------------------- schema


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {argument: description})."""
    if not doc:
        return "", {}
    summary: list[str] = []
    arguments: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    arg_indent: int | None = None
    for line in inspect.cleandoc(doc).splitlines():
        stripped = line.strip()
        header = stripped.lower().rstrip(":")
        if stripped.endswith(":") and header in _ARG_HEADERS:
            section, current, arg_indent = "args", None, None
            continue
        if stripped.endswith(":") and header in _OTHER_HEADERS:
            section, current = "other", None
            continue
        if section == "summary":
            summary.append(stripped)
        elif section == "args" and stripped:
            indent = len(line) - len(line.lstrip())
            match = re.match(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
            if match and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = match.group(1)
                arguments[current] = match.group(2)
            elif current:
                arguments[current] = f"{arguments[current]} {stripped}".strip()
    description = " ".join(" ".join(summary).split())
    return description, arguments


_ARG_HEADERS = {"args", "arguments", "parameters"}
_OTHER_HEADERS = {"returns", "yields", "raises", "example", "examples", "note", "notes"}


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_property(annotation: Any) -> dict[str, Any]:
    """Ollama's ToolProperty for a Python annotation: type, items, enum (no $ref, no anyOf)."""
    origin = typing.get_origin(annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if len(arguments) == 1:
            return _json_property(arguments[0])
        return {"type": [_json_property(a)["type"] for a in arguments]}
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        kind = _JSON_TYPES.get(type(values[0]), "string")
        return {"type": kind, "enum": values}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
        return {"type": _JSON_TYPES.get(type(values[0]), "string"), "enum": values}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        item = arguments[0] if arguments else str
        return {"type": "array", "items": _json_property(item)}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    return {"type": "string"}


def _spelled_out(description: str, prop: dict[str, Any], optional: bool) -> str:
    """The description with what the schema says but the model may never see.

    Ollama's gpt-oss template renders each parameter as ``name: type`` and its description:
    ``enum`` and ``required`` never reach the model, so they go into the words too.
    """
    text = description.rstrip()
    if text and text[-1] not in ".!?":
        text += "."
    values = prop.get("enum") or prop.get("items", {}).get("enum")
    if values:
        text += " One of: " + ", ".join(
            json.dumps(v) if not isinstance(v, str) else v for v in values
        )
        text += "."
    if not optional:
        text += " Required."
    return text.strip()


class _Arguments(BaseModel):
    # Lax on types ("5" for an int is fine: models do that), strict on unknown names.
    model_config = ConfigDict(extra="forbid")


@dataclass
class Tool:
    """One callable tool. Build with :meth:`from_function`."""

    name: str
    group: str
    function: Callable[..., Any]
    description: str
    schema: dict[str, Any]
    arguments_model: type[BaseModel]
    needs_confirmation: bool = False
    # How to phrase the confirmation question from the validated arguments.
    question: Callable[[dict[str, Any]], str] | None = None
    # A pre-flight look at the validated arguments, before any confirmation is asked: raise
    # ToolError (or return a refusal) to refuse, return a confirm decision to ask, or None.
    check: Callable[[dict[str, Any]], PolicyDecision | None] | None = None
    # This call's own time limit, for tools whose work grows with the input (transcription).
    time_limit: TimeLimit | None = None

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        group: str,
        name: str | None = None,
        needs_confirmation: bool = False,
        question: Callable[[dict[str, Any]], str] | None = None,
        check: Callable[[dict[str, Any]], PolicyDecision | None] | None = None,
        time_limit: TimeLimit | None = None,
    ) -> Tool:
        tool_name = name or function.__name__
        description, argument_docs = parse_docstring(function.__doc__)
        if not description:
            raise ValueError(f"tool {tool_name}: the function needs a docstring")
        hints = typing.get_type_hints(function)
        fields: dict[str, Any] = {}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ValueError(f"tool {tool_name}: *args/**kwargs cannot be described")
            if parameter.name not in hints:
                raise ValueError(f"tool {tool_name}: argument {parameter.name} needs a type hint")
            annotation = hints[parameter.name]
            has_default = parameter.default is not inspect.Parameter.empty
            fields[parameter.name] = (annotation, parameter.default if has_default else ...)
            prop = _json_property(annotation)
            if parameter.name not in argument_docs:
                raise ValueError(f"tool {tool_name}: argument {parameter.name} is not documented")
            prop["description"] = _spelled_out(argument_docs[parameter.name], prop, has_default)
            properties[parameter.name] = prop
            if not has_default:
                required.append(parameter.name)
        model = create_model(f"{tool_name}_arguments", __base__=_Arguments, **fields)
        schema = {
            "type": "function",
            "function": {
                "name": tool_name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            },
        }
        return cls(
            name=tool_name,
            group=group,
            function=function,
            description=description,
            schema=schema,
            arguments_model=model,
            needs_confirmation=needs_confirmation,
            question=question,
            check=check,
            time_limit=time_limit,
        )


def default_policy(tool: Tool, arguments: dict[str, Any]) -> PolicyDecision:
    """The tool's own check may refuse or ask; ``needs_confirmation`` tools ask; others run."""
    if tool.check is not None:
        try:
            verdict = tool.check(arguments)
        except ToolError as exc:
            return PolicyDecision.refuse(str(exc))
        if verdict is not None and verdict.decision is not Decision.ALLOW:
            return verdict
    if tool.needs_confirmation:
        return PolicyDecision.confirm(f"{tool.name} changes something on this computer")
    return PolicyDecision.allow()


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        message = "unknown argument" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{where}: {message}")
    return "invalid arguments: " + "; ".join(parts)


def _as_text(value: Any) -> str:
    if value is None:
        return "done"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def clean_tool_name(raw: str) -> str:
    """Undo gpt-oss's usual name mangling: ``functions.x``, ``x<|channel|>commentary``, spaces."""
    name = raw.split("<|", 1)[0].strip()
    name = name.removeprefix("functions.").removeprefix("function.")
    name = name.split()[0] if name.split() else ""
    return name.strip(" .:\"'`")


class ToolRegistry:
    """The tools enabled for a conversation and the gate every call goes through."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        policy: Policy = default_policy,
        confirm: Confirm | None = None,
        on_call: CallHook | None = None,
        on_late: CallHook | None = None,
        timeout_s: float = 10.0,
        max_output_chars: int = 4000,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        self.policy = policy
        self.confirm = confirm
        self.on_call = on_call
        self.on_late = on_late
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        for tool in tools:
            self.register(tool)

    @classmethod
    def from_settings(
        cls,
        settings: ToolsSettings,
        *,
        policy: Policy = default_policy,
        confirm: Confirm | None = None,
        on_call: CallHook | None = None,
    ) -> ToolRegistry:
        """Load the groups in ``tools.enabled`` (a group without a module yet is skipped)."""
        registry = cls(
            policy=policy,
            confirm=confirm,
            on_call=on_call,
            timeout_s=settings.timeout_s,
            max_output_chars=settings.max_output_chars,
        )
        for group in settings.enabled:
            module_name = GROUP_MODULES.get(group)
            if module_name is None:
                log.warning("unknown tool group %r ignored", group)
                continue
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                log.debug("tool group %s has no module yet", group)
                continue
            for tool in module.tools(settings):
                registry.register(tool)
        return registry

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name} is registered twice")
        self._tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        """The ``tools`` list for Ollama's chat API."""
        return [tool.schema for tool in self._tools.values()]

    def resolve(self, raw_name: str) -> Tool | None:
        """The tool a (possibly mangled) name means, or None."""
        if not isinstance(raw_name, str):
            return None
        return self._tools.get(raw_name) or self._tools.get(clean_tool_name(raw_name))

    def call(self, name: str, arguments: Any) -> ToolOutcome:
        """Run one call through lookup, validation, policy, confirmation, limits and the hook."""
        started = time.monotonic()
        try:
            outcome = self._call(name, arguments)
        except Exception as exc:
            # Whatever the filesystem (or a hook) does, the call ends in an outcome and a record.
            log.exception("tool call %s failed before it ran", str(name)[:80])
            reason = f"it could not be checked ({type(exc).__name__}: {exc})"
            outcome = ToolOutcome(
                name=str(name)[:200],
                arguments=arguments,
                decision="refused",
                error=f"refused: {reason}",
                reason=reason,
            )
        outcome.duration_s = time.monotonic() - started
        if self.on_call is not None:
            try:
                self.on_call(outcome)
            except Exception:
                log.exception("tool call hook failed")
        return outcome

    def _call(self, name: str, arguments: Any) -> ToolOutcome:
        tool = self.resolve(name)
        if tool is None:
            available = ", ".join(self._tools) or "none"
            return ToolOutcome(
                name=str(name),
                arguments=arguments,
                decision="unknown",
                error=f"there is no tool named {str(name)[:80]!r}; available tools: {available}",
            )
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            # Some model outputs carry the arguments as a JSON string.
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return ToolOutcome(
                    name=tool.name,
                    arguments=arguments,
                    decision="invalid",
                    error=f"arguments are not valid JSON: {exc.msg} at character {exc.pos}",
                )
        if not isinstance(arguments, Mapping):
            return ToolOutcome(
                name=tool.name,
                arguments=arguments,
                decision="invalid",
                error=f"arguments must be a JSON object, got {type(arguments).__name__}",
            )
        try:
            validated = tool.arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            return ToolOutcome(
                name=tool.name,
                arguments=dict(arguments),
                decision="invalid",
                error=_validation_message(exc),
            )
        values = {key: getattr(validated, key) for key in type(validated).model_fields}
        try:
            verdict = self.policy(tool, values)
        except Exception as exc:
            log.exception("tool policy failed for %s", tool.name)
            verdict = PolicyDecision.refuse(f"the policy check failed: {exc}")
        if verdict.decision is Decision.ALLOW and tool.needs_confirmation:
            # A policy may refuse such a tool, but never skip the question.
            verdict = PolicyDecision.confirm(
                verdict.reason or f"{tool.name} changes something on this computer"
            )
        decision = "allowed"
        if verdict.decision is Decision.REFUSE:
            return ToolOutcome(
                name=tool.name,
                arguments=values,
                decision="refused",
                error=f"refused: {verdict.reason}",
                reason=verdict.reason,
            )
        if verdict.decision is Decision.CONFIRM:
            try:
                question = tool.question(values) if tool.question else f"Run {tool.name}?"
            except Exception as exc:
                # Nobody can be asked about a call that cannot be described: it does not run.
                log.exception("the confirmation question of %s failed", tool.name)
                reason = f"the question about it could not be put ({type(exc).__name__}: {exc})"
                return ToolOutcome(
                    name=tool.name,
                    arguments=values,
                    decision="refused",
                    error=f"refused: {reason}",
                    reason=reason,
                )
            request = ConfirmationRequest(tool=tool.name, arguments=values, question=question)
            approved = False
            error = "the user did not confirm this action, so nothing was changed"
            if self.confirm is not None:
                try:
                    approved = bool(self.confirm(request))
                except ConfirmationUnanswered as exc:
                    error = f"the user did not answer ({exc}), taken as a no: nothing was changed"
                except Exception:
                    log.exception("confirmation callback failed")
            if not approved:
                return ToolOutcome(
                    name=tool.name,
                    arguments=values,
                    decision="declined",
                    error=error,
                    reason=verdict.reason,
                )
            decision = "confirmed"
        return self._execute(tool, values, decision, verdict.reason)

    def _time_limit(self, tool: Tool, values: dict[str, Any]) -> float:
        if tool.time_limit is None:
            return self.timeout_s
        try:
            return max(self.timeout_s, float(tool.time_limit(values, self.timeout_s)))
        except Exception:
            log.exception("time limit of %s failed; using %g s", tool.name, self.timeout_s)
            return self.timeout_s

    def _execute(
        self, tool: Tool, values: dict[str, Any], decision: str, reason: str
    ) -> ToolOutcome:
        limit = self._time_limit(tool, values)
        context = CallContext(tool.name, limit)
        started = time.monotonic()
        box: dict[str, Any] = {}

        def run() -> None:
            _current.context = context
            try:
                box["result"] = tool.function(**values)
            except BaseException as exc:
                box["error"] = exc
            finally:
                _current.context = None
                with context._state:
                    context.finished = True
                    late = context.abandoned
                if late:
                    self._report_late(tool, values, decision, reason, box, started)

        worker = threading.Thread(target=run, name=f"tool-{tool.name}", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            error = self._give_up(tool.name, context, worker)
            if error is not None:
                return ToolOutcome(
                    name=tool.name, arguments=values, decision=decision, reason=reason, error=error
                )
        return self._finish(tool, values, decision, reason, box)

    @staticmethod
    def _give_up(name: str, context: CallContext, worker: threading.Thread) -> str | None:
        """Cancel a call past its limit: what to tell the model, or None when it ended after all.

        Waits at most :data:`_COMMITTED_GRACE_S` in all: for a change under way to finish
        (a hung filesystem must not block the call), then for the result of a change made.
        """
        limit = context.limit_s
        context.cancel_event.set()
        deadline = time.monotonic() + _COMMITTED_GRACE_S
        locked = context._lock.acquire(timeout=_COMMITTED_GRACE_S)
        try:
            with context._state:
                if context.finished:
                    return None
                if not locked:
                    context.abandoned = True
                    return (
                        f"{name} did not finish within {limit:g} seconds while it was making "
                        "its change; whether the change was made is not known"
                    )
                if not context.committed:
                    context.abandoned = True
                    return f"{name} did not finish within {limit:g} seconds and was stopped"
        finally:
            if locked:
                context._lock.release()
        # The change was made: its result is real, wait for it a little.
        worker.join(max(0.0, deadline - time.monotonic()))
        with context._state:
            if context.finished:
                return None
            context.abandoned = True
        return (
            f"{name} made its change, but its result came too late (after {limit:g} seconds); "
            "the change was not undone"
        )

    def _finish(
        self,
        tool: Tool,
        values: dict[str, Any],
        decision: str,
        reason: str,
        box: dict[str, Any],
    ) -> ToolOutcome:
        outcome = ToolOutcome(name=tool.name, arguments=values, decision=decision, reason=reason)
        error = box.get("error")
        if isinstance(error, ToolError):
            outcome.error = str(error)
            return outcome
        if error is not None:
            log.error("tool %s failed", tool.name, exc_info=error)
            outcome.error = f"{tool.name} failed: {type(error).__name__}: {error}"
            return outcome
        text = _as_text(box.get("result"))
        outcome.result_chars = len(text)
        if len(text) > self.max_output_chars:
            cut = text[: self.max_output_chars]
            text = f"{cut}\n[truncated: {len(text) - len(cut)} more characters not shown]"
            outcome.truncated = True
        outcome.result = text
        return outcome

    def _report_late(
        self,
        tool: Tool,
        values: dict[str, Any],
        decision: str,
        reason: str,
        box: dict[str, Any],
        started: float,
    ) -> None:
        outcome = self._finish(tool, values, decision, reason, box)
        outcome.late = True
        outcome.duration_s = time.monotonic() - started
        log.info(
            "abandoned %s ended after %.1f s: %s",
            tool.name,
            outcome.duration_s,
            outcome.summary(120),
        )
        if self.on_late is not None:
            try:
                self.on_late(outcome)
            except Exception:
                log.exception("late tool call hook failed")


__all__ = [
    "GROUP_MODULES",
    "OUTCOME_DECISIONS",
    "CallCancelled",
    "CallContext",
    "CallHook",
    "Confirm",
    "ConfirmationRequest",
    "ConfirmationUnanswered",
    "Decision",
    "Policy",
    "PolicyDecision",
    "TimeLimit",
    "Tool",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "clean_tool_name",
    "current_call",
    "default_policy",
    "parse_docstring",
]
