"""Tools the assistant may call. The interface is in :mod:`voiced.brain.tools.registry`.

Each tool group (``tools.enabled``: time, audio, system, files, commands) is a module here
exposing ``tools(settings: ToolsSettings) -> list[Tool]``.
"""

from voiced.brain.tools.registry import (
    ConfirmationRequest,
    Decision,
    PolicyDecision,
    Tool,
    ToolError,
    ToolOutcome,
    ToolRegistry,
)

__all__ = [
    "ConfirmationRequest",
    "Decision",
    "PolicyDecision",
    "Tool",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
]
