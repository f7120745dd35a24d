"""The tool registry: schemas from functions, validation, policy, confirmation, limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import pytest
from ollama._types import Tool as OllamaTool

from voiced.brain.tools import clock
from voiced.brain.tools.registry import (
    ConfirmationRequest,
    PolicyDecision,
    Tool,
    ToolError,
    ToolOutcome,
    ToolRegistry,
    clean_tool_name,
    parse_docstring,
)
from voiced.config import ToolsSettings


def count_words(text: str, limit: int = 10, mode: Literal["words", "chars"] = "words") -> str:
    """Count words or characters in a text.

    Args:
        text: The text to count in.
        limit: Stop counting after this many; it is
            continued on a second line.
        mode: What to count.

    Returns:
        The count as text.
    """
    count = len(text.split()) if mode == "words" else len(text)
    return str(min(count, limit))


def tag_files(paths: list[str], recursive: bool | None = None) -> str:
    """Tag some files.

    Args:
        paths (list): Files to tag.
        recursive: Also tag what is inside folders.
    """
    return f"tagged {len(paths)}"


class Recorder:
    """A tool function that records that it ran (the side effect the gate must prevent)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def tool(self) -> Tool:
        def delete_note(name: str) -> str:
            """Delete a note.

            Args:
                name: The note's file name.
            """
            self.calls.append({"name": name})
            return f"deleted {name}"

        return Tool.from_function(
            delete_note,
            group="files",
            needs_confirmation=True,
            question=lambda args: f"Delete {args['name']}? Say yes or no.",
        )


def test_schema_comes_from_signature_and_docstring() -> None:
    schema = Tool.from_function(count_words, group="test").schema
    function = schema["function"]
    assert schema["type"] == "function"
    assert function["name"] == "count_words"
    assert function["description"] == "Count words or characters in a text."
    params = function["parameters"]
    assert params["required"] == ["text"]
    # gpt-oss's template shows the model only "name: type" and the description: allowed
    # values and required-ness are spelled out in the description.
    assert params["properties"]["text"] == {
        "type": "string",
        "description": "The text to count in. Required.",
    }
    assert params["properties"]["limit"] == {
        "type": "integer",
        "description": "Stop counting after this many; it is continued on a second line.",
    }
    assert params["properties"]["mode"] == {
        "type": "string",
        "enum": ["words", "chars"],
        "description": "What to count. One of: words, chars.",
    }
    other = Tool.from_function(tag_files, group="test").schema["function"]["parameters"]
    assert other["properties"]["paths"]["type"] == "array"
    assert other["properties"]["paths"]["items"] == {"type": "string"}
    assert other["properties"]["recursive"]["type"] == "boolean"  # Optional is not "null"
    assert other["required"] == ["paths"]


def test_schemas_survive_the_ollama_client_unchanged() -> None:
    registry = ToolRegistry([Tool.from_function(f, group="t") for f in (count_words, tag_files)])
    registry_tools = ToolRegistry.from_settings(ToolsSettings(enabled=["time"]))
    for schema in registry.schemas() + registry_tools.schemas():
        parsed = OllamaTool.model_validate(schema).model_dump(exclude_none=True, by_alias=True)
        assert parsed["function"] == schema["function"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(x: int) -> str:\n    return ''\n", "needs a docstring"),
        ('def f(x) -> str:\n    """Do.\n\n    Args:\n        x: X.\n    """\n', "type hint"),
        (
            'def f(x: int, y: int) -> str:\n    """Do.\n\n    Args:\n        x: X.\n    """\n',
            "y is not documented",
        ),
        ('def f(*x: int) -> str:\n    """Do."""\n', r"\*args"),
    ],
)
def test_undescribable_functions_are_rejected(source: str, message: str) -> None:
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(ValueError, match=message):
        Tool.from_function(namespace["f"], group="t")


def test_parse_docstring_sections() -> None:
    description, args = parse_docstring(count_words.__doc__)
    assert description == "Count words or characters in a text."
    assert set(args) == {"text", "limit", "mode"}
    assert "Returns" not in " ".join(args.values())
    assert parse_docstring(None) == ("", {})


def registry_with(*tools: Tool, **kwargs: object) -> ToolRegistry:
    return ToolRegistry(tools, **kwargs)


def test_valid_call_runs_and_lax_types_are_coerced() -> None:
    registry = registry_with(Tool.from_function(count_words, group="t"))
    outcome = registry.call("count_words", {"text": "a b c", "limit": "2"})
    assert (outcome.decision, outcome.result, outcome.error) == ("allowed", "2", None)
    assert outcome.arguments == {"text": "a b c", "limit": 2, "mode": "words"}


@pytest.mark.parametrize(
    ("arguments", "decision", "error"),
    [
        ({"text": "a", "limit": "many"}, "invalid", "limit: Input should be a valid integer"),
        ({"text": "a", "mode": "lines"}, "invalid", "mode: Input should be 'words' or 'chars'"),
        ({"limit": 3}, "invalid", "text: Field required"),
        ({"text": "a", "colour": "red"}, "invalid", "colour: unknown argument"),
        (["a"], "invalid", "arguments must be a JSON object, got list"),
        ("not json", "invalid", "arguments are not valid JSON: Expecting value at character 0"),
        (42, "invalid", "got int"),
    ],
)
def test_bad_arguments_are_refused_before_running(
    arguments: object, decision: str, error: str
) -> None:
    ran = []

    def probe(text: str, limit: int = 1, mode: Literal["words", "chars"] = "words") -> str:
        """Probe.

        Args:
            text: T.
            limit: L.
            mode: M.
        """
        ran.append(text)
        return "ran"

    outcome = registry_with(Tool.from_function(probe, group="t")).call("probe", arguments)
    assert outcome.decision == decision
    assert error in (outcome.error or "")
    assert outcome.text_for_model().startswith("error: ")
    assert ran == []


def test_json_string_arguments_are_decoded() -> None:
    registry = registry_with(Tool.from_function(count_words, group="t"))
    assert registry.call("count_words", '{"text": "one two"}').result == "2"


@pytest.mark.parametrize(
    ("raw", "resolved"),
    [
        ("count_words", "count_words"),
        ("functions.count_words", "count_words"),
        ("count_words<|channel|>commentary", "count_words"),
        (" count_words ", "count_words"),
        ("assistant<|channel|>analysis", None),
        ("", None),
        ("rm -rf", None),
    ],
)
def test_mangled_names_resolve_only_to_real_tools(raw: str, resolved: str | None) -> None:
    registry = registry_with(Tool.from_function(count_words, group="t"))
    tool = registry.resolve(raw)
    assert (tool.name if tool else None) == resolved
    if resolved is None:
        outcome = registry.call(raw, {})
        assert outcome.decision == "unknown"
        assert "available tools: count_words" in outcome.error
    assert clean_tool_name("functions.x<|channel|>y") == "x"


def test_policy_refusal_runs_nothing_and_gives_the_reason() -> None:
    recorder = Recorder()
    registry = registry_with(
        recorder.tool(),
        policy=lambda tool, args: PolicyDecision.refuse("notes are read-only today"),
        confirm=lambda request: True,
    )
    outcome = registry.call("delete_note", {"name": "a.txt"})
    assert outcome.decision == "refused"
    assert outcome.reason == "notes are read-only today"
    assert "notes are read-only today" in outcome.text_for_model()
    assert recorder.calls == []


def test_confirmation_asks_and_runs_only_on_yes() -> None:
    recorder = Recorder()
    asked: list[ConfirmationRequest] = []
    answers = iter([False, True])

    def confirm(request: ConfirmationRequest) -> bool:
        asked.append(request)
        return next(answers)

    registry = registry_with(recorder.tool(), confirm=confirm)
    declined = registry.call("delete_note", {"name": "a.txt"})
    assert declined.decision == "declined" and recorder.calls == []
    assert "did not confirm" in declined.text_for_model()
    confirmed = registry.call("delete_note", {"name": "a.txt"})
    assert (confirmed.decision, confirmed.result) == ("confirmed", "deleted a.txt")
    assert recorder.calls == [{"name": "a.txt"}]
    assert asked[0].question == "Delete a.txt? Say yes or no."
    assert asked[0].arguments == {"name": "a.txt"}


def test_without_a_confirmation_callback_destructive_calls_are_declined() -> None:
    recorder = Recorder()
    outcome = registry_with(recorder.tool()).call("delete_note", {"name": "a.txt"})
    assert outcome.decision == "declined"
    assert recorder.calls == []


def test_a_failing_policy_or_confirmation_refuses_instead_of_crashing() -> None:
    recorder = Recorder()

    def broken(*args: object) -> PolicyDecision:
        raise RuntimeError("policy bug")

    assert (
        registry_with(recorder.tool(), policy=broken).call("delete_note", {"name": "x"}).decision
        == "refused"
    )
    assert (
        registry_with(recorder.tool(), confirm=broken).call("delete_note", {"name": "x"}).decision
        == "declined"
    )
    assert recorder.calls == []


def test_results_are_bounded_with_a_note() -> None:
    def dump(size: int) -> str:
        """Dump text.

        Args:
            size: Characters.
        """
        return "x" * size

    registry = registry_with(Tool.from_function(dump, group="t"), max_output_chars=100)
    outcome = registry.call("dump", {"size": 1000})
    assert outcome.truncated and outcome.result_chars == 1000
    assert outcome.result.startswith("x" * 100)
    assert "[truncated: 900 more characters not shown]" in outcome.result
    assert len(outcome.result) < 200
    assert not registry.call("dump", {"size": 100}).truncated


def test_non_text_results_become_compact_json() -> None:
    def stats() -> dict:
        """Some numbers."""
        return {"free": 1, "used": [2, 3]}

    outcome = registry_with(Tool.from_function(stats, group="t")).call("stats", {})
    assert outcome.result == '{"free":1,"used":[2,3]}'


def test_tool_errors_and_crashes_become_error_results() -> None:
    def picky(name: str) -> str:
        """Be picky.

        Args:
            name: A name.
        """
        if name == "bad":
            raise ToolError("that name is not allowed")
        raise ZeroDivisionError("division by zero")

    registry = registry_with(Tool.from_function(picky, group="t"))
    assert registry.call("picky", {"name": "bad"}).error == "that name is not allowed"
    crashed = registry.call("picky", {"name": "x"})
    assert crashed.decision == "allowed"
    assert crashed.error == "picky failed: ZeroDivisionError: division by zero"


def test_a_hanging_tool_is_abandoned_at_the_timeout() -> None:
    release = threading.Event()

    def hang() -> str:
        """Hang until released."""
        release.wait(30)
        return "late"

    registry = registry_with(Tool.from_function(hang, group="t"), timeout_s=0.2)
    try:
        outcome = registry.call("hang", {})
    finally:
        release.set()
    assert outcome.error == "hang did not finish within 0.2 seconds and was stopped"


class LateOutcomes:
    """An ``on_late`` hook that lets a test wait for the follow-up of an abandoned call."""

    def __init__(self, also: Callable[[ToolOutcome], None] | None = None) -> None:
        self.outcomes: list[ToolOutcome] = []
        self.arrived = threading.Event()
        self.also = also  # e.g. the audit log, which must see the follow-up first

    def __call__(self, outcome: ToolOutcome) -> None:
        if self.also is not None:
            self.also(outcome)
        self.outcomes.append(outcome)
        self.arrived.set()

    def wait(self, timeout_s: float = 10.0) -> ToolOutcome:
        assert self.arrived.wait(timeout_s), "no follow-up for the abandoned call"
        return self.outcomes[-1]


def test_a_timed_out_call_is_told_to_stop_and_its_end_is_reported() -> None:
    from voiced.brain.tools.registry import current_call

    def spin() -> str:
        """Work until told to stop."""
        call = current_call()
        call.cancel_event.wait(10)  # the registry's word, not the tool's own clock
        call.check()
        return "never"

    late = LateOutcomes()
    registry = registry_with(Tool.from_function(spin, group="t"), timeout_s=0.2, on_late=late)
    outcome = registry.call("spin", {})
    assert outcome.error == "spin did not finish within 0.2 seconds and was stopped"
    follow_up = late.wait()
    assert follow_up.late and follow_up.name == "spin" and follow_up.decision == "allowed"
    assert follow_up.error == "spin was stopped at its time limit (0.2 seconds)"
    assert 0.2 <= follow_up.duration_s < 5.0


def test_outside_a_call_nothing_is_ever_cancelled() -> None:
    from voiced.brain.tools.registry import current_call

    call = current_call()
    assert not call.cancelled() and call.remaining_s() == float("inf")
    call.check()


def test_nothing_is_written_after_the_time_limit(tmp_path: Path) -> None:
    from voiced.brain.tools.audit import AuditLog, read_records
    from voiced.brain.tools.sandbox import Sandbox

    sandbox = Sandbox([tmp_path])
    target = tmp_path / "late.txt"
    started = threading.Event()

    def slow_write(text: str) -> str:
        """Write slowly.

        Args:
            text: What to write.
        """
        started.set()
        time.sleep(0.6)  # a slow tool that never looks at the time itself
        sandbox.write_bytes(target, text.encode())
        return "written"

    audit = AuditLog(source="test")
    late = LateOutcomes(also=audit)

    tool = Tool.from_function(slow_write, group="t")
    registry = registry_with(tool, timeout_s=0.2, on_call=audit, on_late=late)
    outcome = registry.call("slow_write", {"text": "too late"})
    assert not outcome.ok and "did not finish within 0.2 seconds" in outcome.error
    follow_up = late.wait()
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left either
    assert follow_up.error == "slow_write was stopped at its time limit (0.2 seconds)"
    records = list(read_records())
    assert [(r["tool"], r["late"], r["ok"]) for r in records] == [
        ("slow_write", False, False),
        ("slow_write", True, False),
    ]
    assert started.is_set()


def test_a_walk_stops_at_the_deadline(tmp_path: Path) -> None:
    from voiced.brain.tools.sandbox import Sandbox

    for folder in range(10):
        (tmp_path / f"d{folder}").mkdir()
        for name in range(30):
            (tmp_path / f"d{folder}" / f"f{name}").write_text("x")
    sandbox = Sandbox([tmp_path])
    seen: list[int] = []
    walks = []
    ended = threading.Event()

    def slow_walk() -> str:
        """Walk a slow folder tree."""
        walk = sandbox.walk(tmp_path, budget_s=600)
        walks.append(walk)
        try:
            for _ in walk:
                time.sleep(0.01)  # a slow disk
                seen.append(1)
        finally:
            ended.set()
        return f"{len(seen)} entries"

    registry = registry_with(Tool.from_function(slow_walk, group="t"), timeout_s=0.3)
    started = time.monotonic()
    outcome = registry.call("slow_walk", {})
    # Either the walk noticed the deadline just in time and returned what it had, or the
    # registry gave up on it first; either way the walk ends right there.
    assert ended.wait(10)
    assert time.monotonic() - started < 2.0  # all 310 entries would take over 3 s
    assert len(seen) < 200 and not walks[0].complete
    assert outcome.result == f"{len(seen)} entries" or "did not finish" in outcome.error


def test_a_tool_may_ask_for_a_longer_time_limit() -> None:
    def nap(seconds: float) -> str:
        """Sleep a while.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "rested"

    tool = Tool.from_function(
        nap, group="t", time_limit=lambda values, default_s: default_s + values["seconds"]
    )
    outcome = registry_with(tool, timeout_s=0.2).call("nap", {"seconds": 0.4})
    assert outcome.ok and outcome.result == "rested"


def test_a_permissive_policy_cannot_skip_the_question() -> None:
    recorder = Recorder()
    seen: list[ToolOutcome] = []
    questions: list[ConfirmationRequest] = []

    def confirm(request: ConfirmationRequest) -> bool:
        questions.append(request)
        return False

    registry = registry_with(
        recorder.tool(),
        policy=lambda tool, arguments: PolicyDecision.allow("anything goes"),
        confirm=confirm,
        on_call=seen.append,
    )
    outcome = registry.call("delete_note", {"name": "a.txt"})
    assert outcome.decision == "declined" and recorder.calls == []
    assert [q.question for q in questions] == ["Delete a.txt? Say yes or no."]
    assert [o.decision for o in seen] == ["declined"]
    registry.confirm = lambda request: True
    assert registry.call("delete_note", {"name": "a.txt"}).decision == "confirmed"
    assert recorder.calls == [{"name": "a.txt"}]


def test_every_outcome_reaches_the_hook() -> None:
    seen: list[ToolOutcome] = []
    recorder = Recorder()
    registry = registry_with(
        Tool.from_function(count_words, group="t"), recorder.tool(), on_call=seen.append
    )
    registry.call("count_words", {"text": "a"})
    registry.call("count_words", {"text": 1, "oops": 2})
    registry.call("nope", {})
    registry.call("delete_note", {"name": "x"})
    assert [o.decision for o in seen] == ["allowed", "invalid", "unknown", "declined"]
    assert all(o.duration_s >= 0 for o in seen)


def test_duplicate_names_are_an_error() -> None:
    tool = Tool.from_function(count_words, group="t")
    with pytest.raises(ValueError, match="twice"):
        ToolRegistry([tool, tool])


def test_groups_come_from_tools_enabled() -> None:
    everything = ToolRegistry.from_settings(ToolsSettings())
    assert {"current_time", "days_until"} <= set(everything.names())
    assert len(ToolRegistry.from_settings(ToolsSettings(enabled=[]))) == 0
    only_time = ToolRegistry.from_settings(ToolsSettings(enabled=["time"]))
    assert only_time.names() == ["current_time", "days_until"]
    assert {t.group for t in only_time.tools()} == {"time"}


def test_current_time_in_a_zone() -> None:
    registry = ToolRegistry.from_settings(ToolsSettings(enabled=["time"]))
    text = registry.call("current_time", {"timezone": "Asia/Tokyo"}).result
    now = datetime.now(ZoneInfo("Asia/Tokyo"))
    candidates = {now.date(), (now - timedelta(minutes=1)).date()}
    assert any(f"{d.day} {d:%B %Y}" in text for d in candidates)
    assert "Asia/Tokyo (UTC+09:00)" in text
    local = registry.call("current_time", {}).result
    assert str(date.today().year) in local and "UTC" in local
    bad = registry.call("current_time", {"timezone": "Mars/Olympus"})
    assert "unknown time zone" in bad.error


def test_days_until() -> None:
    later = date.today() + timedelta(days=3)
    assert clock.days_until(later.isoformat()).startswith("3 days from today")
    assert clock.days_until(date.today().isoformat()).endswith("is today")
    assert "was 1 day ago" in clock.days_until((date.today() - timedelta(days=1)).isoformat())
    with pytest.raises(ToolError, match="YYYY-MM-DD"):
        clock.days_until("next friday")


def test_late_records_with_lone_surrogates_reach_the_audit_log() -> None:
    from voiced.brain.tools.audit import AuditLog, read_records
    from voiced.brain.tools.registry import current_call

    def spin(name: str) -> str:
        """Work until told to stop.

        Args:
            name: A file name.
        """
        current_call().cancel_event.wait(10)
        raise ToolError(f"gave up on {name}")

    audit = AuditLog(source="test")
    late = LateOutcomes(also=audit)

    tool = Tool.from_function(spin, group="t")
    registry = registry_with(tool, timeout_s=0.2, on_call=audit, on_late=late)
    registry.call("spin", {"name": "diary\udc80.txt"})
    late.wait()
    records = list(read_records())
    assert [(r["late"], r["arguments"]) for r in records] == [
        (False, {"name": "diary\udc80.txt"}),
        (True, {"name": "diary\udc80.txt"}),
    ]
    assert records[1]["error"] == "gave up on diary\udc80.txt"


def test_a_change_made_but_reported_too_late_is_told_as_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voiced.brain.tools import registry as registry_module
    from voiced.brain.tools.registry import current_call

    monkeypatch.setattr(registry_module, "_COMMITTED_GRACE_S", 0.2)
    release = threading.Event()
    changed: list[str] = []

    def slow_report(name: str) -> str:
        """Change something, then take long to say so.

        Args:
            name: What to change.
        """
        with current_call().committing():
            changed.append(name)
        release.wait(10)
        return f"changed {name}"

    late = LateOutcomes()
    tool = Tool.from_function(slow_report, group="t")
    registry = registry_with(tool, timeout_s=0.2, on_late=late)
    try:
        outcome = registry.call("slow_report", {"name": "notes"})
    finally:
        release.set()
    assert changed == ["notes"]
    assert outcome.error == (
        "slow_report made its change, but its result came too late (after 0.2 seconds); "
        "the change was not undone"
    )
    assert "stopped" not in outcome.error
    follow_up = late.wait()
    assert follow_up.late and follow_up.result == "changed notes"


def test_a_change_hanging_on_the_filesystem_does_not_block_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voiced.brain.tools import registry as registry_module
    from voiced.brain.tools.registry import current_call

    monkeypatch.setattr(registry_module, "_COMMITTED_GRACE_S", 0.3)
    release = threading.Event()
    threading.Timer(8.0, release.set).start()  # the old code waited until this

    def hung_write(name: str) -> str:
        """A write whose filesystem hangs.

        Args:
            name: What to write.
        """
        with current_call().committing():
            release.wait(10)
        return f"wrote {name}"

    late = LateOutcomes()
    tool = Tool.from_function(hung_write, group="t")
    registry = registry_with(tool, timeout_s=0.2, on_late=late)
    started = time.monotonic()
    try:
        outcome = registry.call("hung_write", {"name": "notes"})
    finally:
        elapsed = time.monotonic() - started
        release.set()
    assert elapsed < 3.0
    assert outcome.error == (
        "hung_write did not finish within 0.2 seconds while it was making its change; "
        "whether the change was made is not known"
    )
    follow_up = late.wait()
    assert follow_up.late and follow_up.result == "wrote notes"
