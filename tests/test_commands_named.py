"""Every ``voiced ...`` command that the code, its messages and the docs tell a user to run exists.

The commands are parsed out of the text a user reads: string literals and comments in
``voiced/`` (doctor's hints, error messages, help texts), the Markdown docs (inline code and
shell blocks), the config file's comments, install.sh and the systemd unit. Each is checked
against the real click command tree: every subcommand exists, every option belongs to the
command (or a group above it), a choice is one of the allowed values, and there are no more
arguments than the command takes.
"""

from __future__ import annotations

import io
import re
import shlex
import tokenize
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from voiced.cli import main

ROOT = Path(__file__).resolve().parents[1]

# A command in backticks (Markdown or reST), in quotes, or after "run:" in a message.
_QUOTED = re.compile(r"``(voiced [^`]+)``|`(voiced [^`]+)`|'(voiced [^']+)'|\"(voiced [^\"]+)\"")
_RUN_COLON = re.compile(r"\brun: (voiced [a-z][^.;,)'\"`\n]*)")
# An example line in a help text: "  voiced models install tiny.en   (f16; ...)".
_EXAMPLES = re.compile(r"Examples?:\n((?:[ \t]+voiced .*(?:\n|$))+)")
# A placeholder in a command: NAME, PATH, VOICE.onnx, FILE..., {spec}, <x>, [x].
_PLACEHOLDER = re.compile(r"^([A-Z][A-Z0-9_.]*(\.[a-z]+)?|\{[^}]*\}.*|.*\{[^}]*\}|<[^>]*>|\[.*\])$")


@dataclass(frozen=True)
class Named:
    """One command as the user reads it, and where."""

    command: str
    where: str


def _from_text(text: str, where: str) -> list[Named]:
    found = []
    for match in _QUOTED.finditer(text):
        found.append(Named(next(g for g in match.groups() if g), where))
    for match in _RUN_COLON.finditer(text):
        found.append(Named(match.group(1), where))
    return found


def _from_python(path: Path) -> list[Named]:
    found = []
    source = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        text = tok.string
        if tok.type == tokenize.STRING:
            # The literal's own quotes are Python's, not a quotation in the message.
            text = text.lstrip("rRbBfFuU")
            quote = text[:3] if text[:3] in ('"""', "'''") else text[0]
            text = text[len(quote) : -len(quote)]
            for block in _EXAMPLES.finditer(text):
                for line in block.group(1).splitlines():
                    command = re.split(r"[ \t]{2,}", line.strip())[0]
                    found.append(Named(command, f"{path.relative_to(ROOT)}:{tok.start[0]}"))
        elif tok.type != tokenize.COMMENT:
            continue
        found += _from_text(text, f"{path.relative_to(ROOT)}:{tok.start[0]}")
    return found


def _from_markdown(path: Path) -> list[Named]:
    found = []
    in_block = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{number}"
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            command = line.split(" #", 1)[0].strip()
            if command.startswith("voiced "):
                found.append(Named(command.rstrip("\\ "), where))
            continue
        found += _from_text(line, where)
    return found


# A script or unit line that runs voiced (".venv/bin/voiced say ...", "ExecStart=%h/bin/voiced
# run"), and an example in a comment ("#   voiced service install   (writes ...)").
_RUNS = re.compile(r"^\s*(?:\S*/)?(voiced [a-z][^#>\\]*)")
_COMMENT_EXAMPLE = re.compile(r"^\s*#\s{2,}(voiced [a-z][^#]*)")


def _from_lines(path: Path) -> list[Named]:
    """Scripts, the config file and the unit: commands in quotes or backticks, and lines that
    run one."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{number}"
        found += _from_text(line, where)
        if path.suffix == ".yaml":
            continue
        match = _COMMENT_EXAMPLE.match(line) or (
            None if line.lstrip().startswith("#") else _RUNS.match(line)
        )
        if match:
            found.append(Named(re.split(r"\s{2,}", match.group(1).strip())[0], where))
    return found


def named_commands() -> list[Named]:
    """Every command a user is told to run, with where it is written."""
    found: list[Named] = []
    for path in sorted((ROOT / "voiced").rglob("*.py")):
        found += _from_python(path)
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += sorted((ROOT / "audio_models").glob("*.md"))
    for path in docs:
        found += _from_markdown(path)
    for path in [ROOT / "config" / "voiced.yaml", ROOT / "install.sh"]:
        found += _from_lines(path)
    for path in sorted((ROOT / "systemd").glob("*")):
        found += _from_lines(path)
    return found


def _is_placeholder(token: str) -> bool:
    return bool(_PLACEHOLDER.match(token)) or token in ("...", "…")


def _option_names(command: click.Command) -> dict[str, click.Parameter]:
    names: dict[str, click.Parameter] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    if command.get_help_option(click.Context(command)) is not None:
        names["--help"] = names["-h"] = None  # type: ignore[assignment]
    return names


def alternatives(command: str) -> list[str]:
    """A usage line as the commands it stands for.

    ``[TEXT | -]`` (optional parts) are dropped; ``a|b DATE|c`` after the last fixed word is
    each of ``a``, ``b DATE`` and ``c``.
    """
    command = re.sub(r"\s*\[[^\]]*\]", "", command)
    head, bar, _ = command.partition("|")
    if not bar:
        return [command]
    prefix = head.rsplit(" ", 1)[0]
    tail = command[len(prefix) + 1 :]
    return [f"{prefix} {alt.strip()}" for alt in tail.split("|")]


def check(command: str) -> str | None:
    """Why ``command`` (or one of its alternatives) would not run as written, or None."""
    for one in alternatives(command):
        if why := _check_one(one):
            return why
    return None


def _check_one(command: str) -> str | None:
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        return f"cannot split: {exc}"
    assert tokens[0] == "voiced"
    tokens = tokens[1:]
    current: click.Command = main
    path = ["voiced"]
    known = _option_names(main)
    positional = 0
    ctx = click.Context(main)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("-") and token != "-":
            name, has_value, _ = token.partition("=")
            if re.fullmatch(r"-([a-z])\1+", name) and f"-{name[1]}" in known:
                name = f"-{name[1]}"  # -vv: a counted flag given twice
            if name not in known:
                return f"{' '.join(path)} has no option {name}"
            param = known[name]
            if param is None or param.is_flag or param.count:
                continue
            value = tokens[i] if not has_value and i < len(tokens) else token.partition("=")[2]
            i += 0 if has_value else 1
            if (
                isinstance(param.type, click.Choice)
                and not _is_placeholder(value)
                and value not in param.type.choices
            ):
                return f"{' '.join(path)} {name}: {value!r} is not one of {param.type.choices}"
            continue
        if isinstance(current, click.Group):
            sub = current.get_command(ctx, token)
            if sub is None:
                return f"{' '.join(path)} has no command {token!r}"
            current = sub
            path.append(token)
            known = {**known, **_option_names(sub)}
            ctx = click.Context(sub, parent=ctx)
            continue
        positional += 1
    if isinstance(current, click.Group):
        return None  # a group on its own prints its help (or runs its default)
    arguments = [p for p in current.params if isinstance(p, click.Argument)]
    if not any(p.nargs == -1 for p in arguments) and positional > sum(p.nargs for p in arguments):
        return f"{' '.join(path)} takes {len(arguments)} argument(s), given {positional}"
    return None


NAMED = named_commands()


def test_the_scan_finds_commands_everywhere_a_user_reads():
    """The parser itself works: it finds commands in each kind of source."""
    places = {named.where.split(":")[0] for named in NAMED}
    assert "voiced/commands/doctor.py" in places
    assert "voiced/speech/models.py" in places
    assert "README.md" in places
    assert "docs/daemon.md" in places
    assert "config/voiced.yaml" in places
    assert "install.sh" in places
    assert "systemd/voiced.service" in places
    commands = {named.command for named in NAMED}
    assert "voiced models install ~/voices/en_GB-alan-medium.onnx" in commands  # a help example
    assert len({named.command for named in NAMED}) > 30


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("voiced models check", "has no command 'check'"),
        ("voiced transcribe -f docx x.wav", "not one of"),
        ("voiced run --no-such-option", "has no option --no-such-option"),
        ("voiced doctor extra", "takes 0 argument(s)"),
        ("voiced service install|remove", "has no command 'remove'"),
        ("voiced -xx doctor", "has no option -xx"),
    ],
)
def test_the_checker_refuses_a_command_that_does_not_exist(command: str, problem: str):
    assert problem in (check(command) or "")


def test_every_command_a_user_is_told_to_run_exists():
    wrong = [f"{n.where}: `{n.command}`: {why}" for n in NAMED if (why := check(n.command))]
    assert not wrong, "\n".join(wrong)
