"""The one gate, and the one way to build the registry that chat, the daemon and the CLI use.

:class:`ToolPolicy` decides every call after its arguments were validated: refused (arguments
too large, a group that is switched off, or the tool's own pre-flight check: a path outside
the roots or on the deny list, a command or option not on the allow list, an oversized
write), needs confirmation (deleting, writing, replacing a file), or allowed. A refusal
carries a reason short enough for the model to relay.

:func:`build_registry` loads the groups of ``tools.enabled`` with this policy, the given
confirmation callback (none = every confirmation is declined) and the audit log as the
``on_call`` hook (plus an optional extra hook, such as the daemon's transcript) and as the
``on_late`` hook (how a call abandoned at its time limit really ended).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from voiced.brain.tools.audit import AuditLog
from voiced.brain.tools.registry import (
    GROUP_MODULES,
    CallHook,
    Confirm,
    ConfirmationRequest,
    PolicyDecision,
    Tool,
    ToolOutcome,
    ToolRegistry,
    default_policy,
)
from voiced.config import Settings, ToolsSettings

if TYPE_CHECKING:
    from voiced.brain.tools.audio import DeviceLister
    from voiced.speech.stt import SpeechToText

log = logging.getLogger(__name__)

# Room for the non-content arguments of a maximal write_file call.
_ARGUMENT_SLACK_CHARS = 65_536


class ToolPolicy:
    """allowed / needs confirmation / refused, for one configuration."""

    def __init__(self, settings: ToolsSettings) -> None:
        self.settings = settings
        self.max_argument_chars = settings.max_write_bytes + _ARGUMENT_SLACK_CHARS

    def __call__(self, tool: Tool, arguments: dict[str, Any]) -> PolicyDecision:
        if tool.group not in self.settings.enabled and tool.group in GROUP_MODULES:
            return PolicyDecision.refuse(f"the {tool.group} tools are switched off")
        size = len(json.dumps(arguments, ensure_ascii=False, default=str))
        if size > self.max_argument_chars:
            return PolicyDecision.refuse(
                f"the arguments are {size} characters long; at most "
                f"{self.max_argument_chars} are accepted"
            )
        return default_policy(tool, arguments)


# ---------------------------------------------------------------------- confirmation callbacks


def deny_all(request: ConfirmationRequest) -> bool:
    """Non-interactive use: nothing that needs confirmation runs."""
    log.info("declined %s: no one to confirm it", request.tool)
    return False


def approve_all(request: ConfirmationRequest) -> bool:
    """``--yes``: the user confirmed in advance."""
    log.info("confirmed %s in advance (--yes)", request.tool)
    return True


def terminal_confirm(
    input_stream: IO[str] | None = None, output_stream: IO[str] | None = None
) -> Confirm:
    """Ask on a terminal (``yes``/``y`` confirms; anything else, or end of input, declines)."""

    def confirm(request: ConfirmationRequest) -> bool:
        source = input_stream or sys.stdin
        out = output_stream or sys.stderr
        out.write(f"{request.question} [y/N] ")
        out.flush()
        answer = source.readline()
        return answer.strip().lower() in {"y", "yes"}

    return confirm


# ---------------------------------------------------------------------- the registry


def _chain(first: CallHook, second: CallHook | None) -> CallHook:
    if second is None:
        return first

    def both(outcome: ToolOutcome) -> None:
        try:
            first(outcome)
        except Exception:
            log.exception("cannot write the tool audit log")
        second(outcome)

    return both


def build_registry(
    settings: Settings,
    *,
    confirm: Confirm | None = None,
    on_call: CallHook | None = None,
    source: str = "",
    stt: SpeechToText | None = None,
    audio_devices: DeviceLister | None = None,
) -> ToolRegistry:
    """The registry with every enabled group, the policy, ``confirm`` and the audit log.

    ``confirm`` None declines every confirmation. ``source`` (chat, daemon, cli) is recorded
    in the audit log. ``stt`` lets the audio tools share an engine that is already loaded;
    ``audio_devices`` lists the machine's audio devices for ``list_audio_devices``.
    """
    tools_settings = settings.tools
    audit = AuditLog(source=source)
    registry = ToolRegistry(
        policy=ToolPolicy(tools_settings),
        confirm=confirm if confirm is not None else deny_all,
        on_call=_chain(audit, on_call),
        on_late=audit,
        timeout_s=tools_settings.timeout_s,
        max_output_chars=tools_settings.max_output_chars,
    )
    if stt is not None:
        from voiced.brain.tools.audio import share_stt

        share_stt(settings.stt, stt)
    for group in tools_settings.enabled:
        module = importlib.import_module(GROUP_MODULES[group])
        factory: Callable[..., list[Tool]] = module.tools
        if group == "audio":
            group_tools = factory(
                tools_settings, stt=settings.stt, tts=settings.tts, audio_devices=audio_devices
            )
        else:
            group_tools = factory(tools_settings)
        for tool in group_tools:
            registry.register(tool)
    return registry


__all__ = [
    "ToolPolicy",
    "approve_all",
    "build_registry",
    "deny_all",
    "terminal_confirm",
]
