"""Settings: typed, validated, frozen, built once.

Order of precedence: built-in defaults < user file < command-line flags. The user file is
``--config PATH``, else ``VOICED_CONFIG``, else ``$XDG_CONFIG_HOME/voiced/config.yaml``
(see :mod:`voiced.paths`). ``config/voiced.yaml`` in the repository documents every key and
holds exactly the built-in defaults (a test keeps the two in step).

Any problem in a file is reported as a :class:`ConfigError` naming the file, the key path
and what was expected, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voiced import paths

log = logging.getLogger(__name__)


class _Section(BaseModel):
    # strict: "5" is not silently an int; extra="forbid": a typo in a key is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Device = int | str | None


class AudioSettings(_Section):
    input_device: Device = None
    output_device: Device = None
    block_ms: Literal[10, 20, 30] = 30
    blocks_per_callback: int = Field(2, ge=1, le=10)
    queue_blocks: int = Field(200, ge=10, le=10_000)
    echo_cancel: bool = False


class VadSettings(_Section):
    aggressiveness: int = Field(2, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 30
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    speech_start_ms: int = Field(150, ge=10, le=2000)
    silence_ms: int = Field(700, ge=100, le=5000)
    post_roll_ms: int = Field(300, ge=0, le=2000)
    min_utterance_ms: int = Field(250, ge=0, le=10_000)
    max_utterance_s: float = Field(20.0, ge=1.0, le=120.0)
    energy_floor_dbfs: float = Field(-50.0, ge=-120.0, le=0.0)
    noise_margin_db: float = Field(10.0, ge=0.0, le=60.0)
    noise_window_s: float = Field(3.0, ge=0.1, le=60.0)
    # Silero VAD's verdict below which a candidate utterance is noise; 0 = no speech gate.
    speech_threshold: float = Field(0.45, ge=0.0, le=1.0)
    # The end of a turn: after silence_ms of silence, or judged by the end-of-turn model
    # (voiced.audio.end_of_turn) after turn_pause_ms, waiting up to turn_max_silence_ms when
    # it hears an unfinished sentence.
    end_of_turn: Literal["silence", "model"] = "model"
    turn_pause_ms: int = Field(240, ge=30, le=2000)
    # With the model and the speech gate: a pause whose first turn_post_roll_ms the gate
    # hears as silence keeps that much (else min(post_roll_ms, turn_pause_ms)), and the
    # listener starts transcribing then, before the model is asked.
    turn_post_roll_ms: int = Field(120, ge=0, le=2000)
    turn_max_silence_ms: int = Field(1500, ge=100, le=10_000)
    turn_threshold: float = Field(0.5, ge=0.0, le=1.0)


class SttSettings(_Section):
    model: str = "tiny.en-q8_0"
    language: str = "en"
    threads: int = Field(0, ge=0, le=256)
    beam_size: int = Field(1, ge=1, le=16)
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)
    logprob_threshold: float = Field(-1.0, ge=-20.0, le=0.0)
    energy_floor_dbfs: float = Field(-55.0, ge=-120.0, le=0.0)
    vad_filter: bool = True
    max_segment_chars: int = Field(0, ge=0, le=1000)
    chunk_s: float = Field(12.8, ge=0.0, le=28.0)
    window_margin: int = Field(128, ge=0, le=1500)
    start_in_pause: bool = True
    server: str = Field("", pattern=r"^$|^(tcp|unix)://\S+$")


class TtsSettings(_Section):
    voice: str = "en_US-joe-medium"
    length_scale: float = Field(1.0, ge=0.25, le=4.0)
    volume: float = Field(1.0, ge=0.0, le=4.0)
    sentence_silence_s: float = Field(0.2, ge=0.0, le=5.0)
    server: str = Field("", pattern=r"^$|^(tcp|unix)://\S+$")


# Go's time.ParseDuration, which Ollama applies to a keep_alive string: a unit is required.
GO_DURATION = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+")

# The type of each field of Ollama's api.Options (api/types.go) as its FromMap checks it: a
# value of another type fails every request with HTTP 500. Numbers are JSON numbers either way.
OLLAMA_OPTION_TYPES: dict[str, str] = {
    **dict.fromkeys(
        "num_keep seed num_predict top_k repeat_last_n num_ctx num_batch num_gpu main_gpu "
        "num_thread".split(),
        "a whole number",
    ),
    **dict.fromkeys(
        "temperature top_p min_p typical_p repeat_penalty presence_penalty "
        "frequency_penalty".split(),
        "a number",
    ),
    **dict.fromkeys("numa use_mmap penalize_newline".split(), "true or false"),
    "stop": "a list of strings",
}


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: str | int) -> float:
    """How long Ollama keeps a model after a request, in seconds (inf for a negative value)."""
    if isinstance(value, str):
        sign = -1.0 if value.startswith("-") else 1.0
        pairs = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", value)
        seconds = sign * sum(float(number) * _GO_UNITS[unit] for number, unit in pairs)
    else:
        seconds = float(value)
    return float("inf") if seconds < 0 else seconds


def _option_ok(kind: str, value: Any) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "a list of strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind == "a number" or float(value).is_integer()


class LlmSettings(_Section):
    host: str | None = None
    model: str = "gpt-oss:20b"
    think: Literal["low", "medium", "high"] | bool = "low"
    keep_alive: str | int = "30m"
    options: dict[str, float | int | str | bool | list[str]] = Field(
        default_factory=lambda: {"temperature": 0.7, "num_ctx": 8192}
    )
    request_timeout_s: float = Field(120.0, ge=1.0, le=3600.0)
    idle_timeout_s: float = Field(30.0, ge=1.0, le=600.0)
    load_timeout_s: float = Field(300.0, ge=1.0, le=3600.0)
    max_tool_rounds: int = Field(5, ge=1, le=50)
    history_turns: int = Field(10, ge=0, le=1000)
    history_tokens: int = Field(4000, ge=256, le=1_000_000)
    system_prompt: str = (
        "You are voiced, a voice assistant on the user's Linux desktop. Your replies are "
        "spoken aloud: answer in one to three short sentences of plain speech, with no "
        "markdown, lists, tables, code blocks or URLs. Use the tools to look at the system "
        "instead of guessing. Today is {date}."
    )

    @field_validator("keep_alive")
    @classmethod
    def _go_duration(cls, value: str | int) -> str | int:
        if isinstance(value, str) and value != "0" and not GO_DURATION.fullmatch(value):
            hint = " (a number is seconds: write -1 without quotes to keep it loaded)"
            raise ValueError(
                f"Ollama cannot read {value!r} as a duration; use a number of seconds or a "
                f"duration with a unit such as 5m, 1h or 90s{hint}"
            )
        return value

    @field_validator("options")
    @classmethod
    def _ollama_option_types(
        cls, options: dict[str, float | int | str | bool | list[str]]
    ) -> dict[str, float | int | str | bool | list[str]]:
        problems = [
            f"llm.options.{key} must be {kind}, not {value!r}"
            for key, value in options.items()
            if (kind := OLLAMA_OPTION_TYPES.get(key)) and not _option_ok(kind, value)
        ]
        if problems:
            raise ValueError("; ".join(problems) + " (Ollama would fail every request)")
        unknown = sorted(set(options) - set(OLLAMA_OPTION_TYPES))
        if unknown:
            log.warning("llm.options: Ollama ignores unknown options: %s", ", ".join(unknown))
        return options


class WakeSettings(_Section):
    engine: Literal["text", "model"] = "model"
    model: str = Field("hey_jarvis", pattern=r"^[A-Za-z0-9_.-]+$")
    stop_model: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    refractory_s: float = Field(2.0, ge=0.0, le=30.0)
    phrases: list[str] = Field(default_factory=lambda: ["computer", "hey computer"])
    follow_up_s: float = Field(8.0, ge=0.0, le=300.0)
    acknowledgement: str = "Yes?"
    fuzziness: float = Field(0.25, ge=0.0, le=0.5)
    echo_tail_s: float = Field(0.5, ge=0.0, le=10.0)
    confirm_timeout_s: float = Field(8.0, ge=1.0, le=120.0)


class CommandRule(_Section):
    """The arguments one command on the ``tools.commands`` allow list may be given."""

    # Options without a value (-h, --human-readable); single letters may be combined (-lh).
    flags: list[str] = Field(default_factory=list)
    # Options with a value (-n 5, -n5, --lines=5) and the kind of value: number or text.
    options: dict[str, Literal["number", "text"]] = Field(default_factory=dict)
    # Leading operands that are text, not paths (grep's pattern, date's +FORMAT).
    text_operands: int = Field(0, ge=0, le=4)
    # Regular expression each text operand must match in full.
    text_pattern: str = r"[^\x00-\x1f]{1,200}"
    # Whether (further) operands are allowed: paths, checked against tools.file_roots.
    paths: bool = False


def _words(text: str) -> list[str]:
    return text.split()


def _default_commands() -> dict[str, CommandRule]:
    """The read-only commands run_command allows out of the box."""
    number = "number"
    lines = {"-n": number, "--lines": number, "-c": number, "--bytes": number}
    return {
        "uptime": CommandRule(flags=_words("-p --pretty -s --since")),
        "date": CommandRule(
            flags=_words("-u --utc -R --rfc-email -I --iso-8601"),
            text_operands=1,
            text_pattern=r"\+[%A-Za-z0-9 :,./_-]{1,60}",
        ),
        "uname": CommandRule(flags=_words("-a --all -s -n -r -v -m -o -p -i")),
        "df": CommandRule(
            flags=_words(
                "-h --human-readable -H --si -T --print-type -i --inodes -l --local -a --all "
                "-P --portability --total"
            ),
            paths=True,
        ),
        "free": CommandRule(
            flags=_words(
                "-h --human -b --bytes -k --kilo -m --mega -g --giga --si -t --total -w --wide"
            )
        ),
        "ls": CommandRule(
            flags=_words(
                "-l -h --human-readable -a --all -A --almost-all -t -S -r --reverse -1 -d "
                "--directory -F --classify -i -s -n"
            ),
            paths=True,
        ),
        "cat": CommandRule(
            flags=_words(
                "-n --number -b --number-nonblank -s --squeeze-blank -A --show-all -E -T -v"
            ),
            paths=True,
        ),
        "grep": CommandRule(
            flags=_words(
                "-i --ignore-case -n --line-number -c --count -l --files-with-matches -L "
                "-v --invert-match -w --word-regexp -x --line-regexp -E --extended-regexp "
                "-F --fixed-strings -o --only-matching -H -h -s --no-messages"
            ),
            options={
                "-m": number,
                "--max-count": number,
                "-A": number,
                "-B": number,
                "-C": number,
                "--context": number,
            },
            text_operands=1,
            paths=True,
        ),
        "wc": CommandRule(
            flags=_words("-l --lines -w --words -c --bytes -m --chars -L"), paths=True
        ),
        "head": CommandRule(flags=_words("-q -v"), options=lines, paths=True),
        "tail": CommandRule(flags=_words("-q -v"), options=lines, paths=True),
    }


# Commands that create, change or remove files: run_command would get round the write-deny
# list and the confirmation that write_file and delete_file go through.
FILE_CHANGING_COMMANDS = frozenset(
    "mv rm cp ln link unlink touch mkdir rmdir mkfifo mknod mktemp chmod chown chgrp chattr "
    "setfacl dd tee truncate install shred rsync rename patch split csplit tar zip unzip "
    "gzip gunzip bzip2 bunzip2 xz unxz zstd unzstd sponge git".split()
)
# Commands that run other programs or scripts given to them (anything at all, then).
PROGRAM_RUNNING_COMMANDS = re.compile(
    r"(?:sh|bash|dash|zsh|fish|ksh|mksh|csh|tcsh|busybox|env|xargs|nohup|nice|ionice|"
    r"timeout|time|watch|sudo|su|doas|pkexec|runuser|setsid|systemd-run|flock|chroot|ssh|"
    r"awk|gawk|mawk|nawk|perl[0-9.]*|python[0-9.]*|pypy[0-9.]*|ruby[0-9.]*|node|nodejs|"
    r"deno|bun|php[0-9.]*|lua[0-9.]*|luajit|tclsh[0-9.]*|wish|R|Rscript|julia|guile|vi|vim|"
    r"nvim|ex|ed|emacs|nano|make|crontab|at|batch|parallel)"
)
# Options that make read-only commands change files or run programs.
FILE_CHANGING_OPTIONS: dict[str, tuple[str, ...]] = {
    "find": (
        "-delete",
        "-exec",
        "-execdir",
        "-ok",
        "-okdir",
        "-fprint",
        "-fprint0",
        "-fprintf",
        "-fls",
    ),
    "sed": ("-i", "--in-place"),
}


def file_changing_option(command: str, option: str) -> str | None:
    """The dangerous option of ``command`` that ``option`` is or may stand for, or None.

    GNU long options may be abbreviated (``--in`` is ``--in-place``), and ``-i`` takes its
    backup suffix attached (``-i.bak``).
    """
    for dangerous in FILE_CHANGING_OPTIONS.get(command, ()):
        if option == dangerous or (command == "find" and option.startswith("-fprint")):
            return dangerous
        if dangerous.startswith("--") and len(option) > 2 and dangerous.startswith(option):
            return dangerous
        if command == "sed" and dangerous == "-i" and option.startswith("-i"):
            return dangerous
    return None


class ToolsSettings(_Section):
    enabled: list[Literal["time", "audio", "system", "files", "commands"]] = Field(
        default_factory=lambda: ["time", "audio", "system", "files", "commands"]
    )
    file_roots: list[str] = Field(default_factory=lambda: ["~"])
    timeout_s: float = Field(10.0, ge=0.1, le=600.0)
    max_output_chars: int = Field(4000, ge=100, le=1_000_000)
    # Extra deny globs on top of the built-in secrets list (voiced.brain.tools.sandbox).
    deny: list[str] = Field(default_factory=list)
    max_read_bytes: int = Field(65_536, ge=1, le=100_000_000)
    max_write_bytes: int = Field(1_000_000, ge=1, le=1_000_000_000)
    max_audio_s: float = Field(300.0, ge=1.0, le=86_400.0)
    commands: dict[str, CommandRule] = Field(default_factory=_default_commands)
    command_timeout_s: float = Field(5.0, ge=0.1, le=600.0)
    command_cpu_s: int = Field(5, ge=1, le=3600)
    command_memory_mb: int = Field(512, ge=16, le=65_536)

    @field_validator("commands")
    @classmethod
    def _read_only_commands(cls, commands: dict[str, CommandRule]) -> dict[str, CommandRule]:
        problems = []
        for name, rule in commands.items():
            if name in FILE_CHANGING_COMMANDS:
                problems.append(f"{name} changes files; use write_file/delete_file")
            elif PROGRAM_RUNNING_COMMANDS.fullmatch(name) and (
                rule.paths or rule.text_operands or rule.options
            ):
                # Bare (env, nice with flags only) they run nothing; given words, anything.
                problems.append(
                    f"{name} runs other programs; it may only be listed without operands "
                    "and options with values"
                )
            for option in [*rule.flags, *rule.options]:
                dangerous = file_changing_option(name, option)
                if dangerous is not None:
                    problems.append(f"{name} {option} changes files or runs programs")
        if problems:
            raise ValueError("; ".join(problems))
        return commands


class TranscriptsSettings(_Section):
    enabled: bool = True
    retention_days: int = Field(30, ge=0, le=36_500)


class ServeSettings(_Section):
    """``voiced serve``: the Wyoming server for Home Assistant and its satellites."""

    uri: str = Field("tcp://0.0.0.0:10300", pattern=r"^(tcp|unix)://\S+$")
    zeroconf: bool = False
    zeroconf_name: str = Field("voiced", pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,62}$")
    conversation: bool = False
    max_audio_s: float = Field(60.0, ge=1.0, le=3600.0)
    max_text_chars: int = Field(10_000, ge=100, le=1_000_000)
    idle_timeout_s: float = Field(60.0, ge=0.1, le=3600.0)
    workers: int = Field(1, ge=1, le=64)
    max_pending: int = Field(8, ge=0, le=1000)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    audio: AudioSettings = AudioSettings()
    vad: VadSettings = VadSettings()
    stt: SttSettings = SttSettings()
    tts: TtsSettings = TtsSettings()
    llm: LlmSettings = LlmSettings()
    wake: WakeSettings = WakeSettings()
    tools: ToolsSettings = ToolsSettings()
    transcripts: TranscriptsSettings = TranscriptsSettings()
    serve: ServeSettings = ServeSettings()
    logging: LoggingSettings = LoggingSettings()


class ConfigError(Exception):
    """A config file or override that cannot be used; the message is for the user."""


def _describe(error: Mapping[str, Any], loc: tuple) -> str:
    key = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    given = error.get("input")
    if isinstance(given, Mapping):
        return f"{key}: {error['msg']}"
    return f"{key}: {error['msg']} (got {given!r})"


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (part in {"int", "str", "bool", "none"} or "[" in part)


# Keys voiced no longer uses: a file that still sets one keeps working, with a warning.
REMOVED_KEYS: dict[tuple[str, str], str] = {
    ("vad", "min_modulation_db"): (
        "the steady-noise rule is gone; the speech gate decides what is noise "
        "(vad.speech_threshold)"
    ),
    ("vad", "timeout_s"): (
        "nothing used it; a spoken yes/no question waits wake.confirm_timeout_s, counted from "
        "the end of the question, and no answer is taken as a no"
    ),
}


def _drop_removed(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``data`` without the keys in :data:`REMOVED_KEYS`, each one logged as a warning."""
    cleaned: dict[str, Any] | None = None
    for (section, key), why in REMOVED_KEYS.items():
        block = data.get(section)
        if isinstance(block, Mapping) and key in block:
            log.warning("%s: %s.%s is no longer used and is ignored: %s", source, section, key, why)
            cleaned = dict(data) if cleaned is None else cleaned
            cleaned[section] = {k: v for k, v in block.items() if k != key}
    return data if cleaned is None else cleaned


def _validate(data: Mapping[str, Any], source: str) -> Settings:
    data = _drop_removed(data, source)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        # Union types report one error per alternative; keep the first per key path.
        seen: dict[tuple, str] = {}
        for error in exc.errors():
            # pydantic appends the union member tried ("int", "literal['low']") to the path.
            loc = tuple(p for p in error["loc"] if not _is_union_tag(p))
            seen.setdefault(loc, _describe(error, loc))
        lines = "\n".join(f"  {line}" for line in seen.values())
        raise ConfigError(f"{source}: invalid configuration\n{lines}") from None


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_file(path: Path) -> dict[str, Any]:
    """Read one YAML config file into a dict (empty file = empty dict)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def dotted_to_nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"stt.model": "x"}`` -> ``{"stt": {"model": "x"}}``; None values are skipped."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the effective settings.

    ``path`` is an explicit config file (``--config``); it must exist. Without it the user
    file from :func:`voiced.paths.user_config_path` is used when present. ``overrides`` are
    command-line values keyed by dotted path (``{"stt.model": "base.en"}``).
    """
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        data = read_file(path)
        source = str(path)
    else:
        user = paths.user_config_path()
        if user.is_file():
            data = read_file(user)
            source = str(user)
        elif "VOICED_CONFIG" in os.environ:
            raise ConfigError(f"{user}: no such config file (from VOICED_CONFIG)")
    settings = _validate(data, source)
    if overrides:
        nested = dotted_to_nested(overrides)
        if nested:
            merged = _deep_merge(settings.model_dump(), nested)
            settings = _validate(merged, "command line")
    return settings


def to_yaml(settings: Settings) -> str:
    """The settings as YAML, in declaration order."""
    return yaml.safe_dump(settings.model_dump(), sort_keys=False, allow_unicode=True)
