"""The ``commands`` tool group: ``run_command``, for the commands on ``tools.commands`` only.

A call is checked in full before anything runs (and again when it runs):

* the command must be on the allow list, found on a fixed safe ``PATH``;
* no argument may hold a shell character (``; & | $ ` < > ( ) { } [ ] * ? ! \\ ' " #``) or a
  control character: nothing here ever goes through a shell, and a model that writes
  ``$(...)`` or ``a; b`` expects one, so it is told plainly instead;
* every option must be one the command's rule lists (flags, or options with a number or text
  value); operands are text where the rule says so (matched against its pattern) and
  otherwise paths, resolved and checked by the sandbox and handed to the command as absolute
  real paths;
* the working folder is inside the roots;
* commands that change files or run other programs cannot be on the list at all (the config
  refuses them, :data:`voiced.config.FILE_CHANGING_COMMANDS`), and neither ``find``'s
  ``-delete``/``-exec``/``-fprint`` family nor ``sed -i`` is ever passed; ``sed`` runs with
  ``--sandbox`` (no ``w``, ``r`` or ``e`` in its script).

It then runs with no shell, stdin from /dev/null, a minimal environment, its own process group,
``nice`` 10 and rlimits (CPU seconds, address space, no file writing, no core dumps). Output
past ``tools.max_output_chars`` bytes or time past ``tools.command_timeout_s`` stops it: the
whole process group is killed and the result says why.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voiced.brain.tools.confine import (
    Confinement,
    confine_command,
    landlock_abi,
    limit_resources,
)
from voiced.brain.tools.registry import PolicyDecision, Tool, ToolError, current_call
from voiced.brain.tools.sandbox import Sandbox, SandboxError, printable, printable_lines
from voiced.config import CommandRule, ToolsSettings, file_changing_option

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SHELL_CHARACTERS = frozenset(";&|`$<>(){}[]*?!\\'\"#")
COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
NUMBER = re.compile(r"[+-]?[0-9]{1,9}")
MAX_ARGS = 32
MAX_ARG_CHARS = 256
KILL_GRACE_S = 0.5
NICE = 10

log = logging.getLogger(__name__)


class CommandRefused(ToolError):
    """A command or argument that the allow list or the sandbox does not permit."""


@dataclass(frozen=True)
class PreparedCommand:
    """A checked command line, ready to run: absolute executable, argv, working folder."""

    executable: str
    argv: tuple[str, ...]
    cwd: Path
    # The real paths of the path operands, as checked: the only files the command may read.
    operands: tuple[Path, ...] = ()

    def shown(self) -> str:
        return printable(" ".join([Path(self.executable).name, *self.argv]))


def _check_characters(argument: str) -> None:
    bad = sorted({ch for ch in argument if ch in SHELL_CHARACTERS})
    if bad:
        raise CommandRefused(
            f"argument {argument[:60]!r} contains {' '.join(bad)}: commands run without a "
            "shell, so pipes, redirections, wildcards, variables and substitutions are not "
            "possible; pass plain words and paths"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in argument):
        raise CommandRefused(f"argument {argument[:60]!r} contains a control character")
    if len(argument) > MAX_ARG_CHARS:
        raise CommandRefused(f"an argument is longer than {MAX_ARG_CHARS} characters")


def _limit_resources(cpu_s: int, memory_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec (no Landlock only)
        limit_resources(cpu_s, memory_bytes, NICE)

    return apply


@functools.cache
def _warn_unconfined() -> None:
    log.warning(
        "this kernel has no Landlock: run_command is confined by voiced's checks only, not by "
        "the kernel (a folder swapped for a symlink between the check and the run is not caught)"
    )


def _names(line: str, name: str) -> bool:
    """Whether an ``ls`` output line is the entry ``name`` (alone, or last after its details,
    with ``-F``'s type mark or not)."""
    for text in (line, line[:-1] if line[-1:] in "/*@|=" else None):
        if text is not None and (text == name or text.endswith(" " + name)):
            return True
    return False


class CommandRunner:
    """Checks and runs ``run_command`` calls under one configuration."""

    def __init__(self, settings: ToolsSettings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox.from_settings(settings)

    @property
    def timeout_s(self) -> float:
        # Below the registry's own limit, so the command is killed here, not abandoned.
        return min(self.settings.command_timeout_s, self.settings.timeout_s * 0.9)

    @property
    def output_limit(self) -> int:
        # Leave room for the command line and status above the output.
        return max(256, self.settings.max_output_chars - 200)

    # ------------------------------------------------------------------ checking

    def _rule(self, command: str) -> CommandRule:
        allowed = ", ".join(sorted(self.settings.commands)) or "none"
        if not COMMAND_NAME.fullmatch(command):
            raise CommandRefused(
                f"{command[:60]!r} is not a command name; give a name from the allow list "
                f"({allowed}) and put its arguments in args"
            )
        rule = self.settings.commands.get(command)
        if rule is None:
            raise CommandRefused(f"{command} is not on the allowed command list ({allowed})")
        return rule

    def _value(self, command: str, option: str, kind: str, value: str) -> None:
        _check_characters(value)
        if kind == "number" and not NUMBER.fullmatch(value):
            raise CommandRefused(f"{command} {option} needs a whole number, got {value!r}")
        if kind == "text" and not value:
            raise CommandRefused(f"{command} {option} needs a value")

    def _options(self, command: str, rule: CommandRule, args: list[str]) -> list[Any]:
        """Check options; returns argv with operands as ``("operand", text)`` placeholders."""
        out: list[Any] = []
        end_of_options = False
        index = 0

        def refuse(option: str) -> CommandRefused:
            allowed = " ".join([*rule.flags, *rule.options]) or "none"
            return CommandRefused(
                f"{command} does not allow {option!r} (allowed options: {allowed})"
            )

        while index < len(args):
            argument = args[index]
            _check_characters(argument)
            index += 1
            if end_of_options or not argument.startswith("-") or argument == "-":
                if argument == "-":
                    raise CommandRefused("'-' (standard input) cannot be used: there is no input")
                out.append(("operand", argument))
                continue
            if argument == "--":
                end_of_options = True
                out.append(argument)
                continue
            if argument.startswith("--"):
                name, has_value, value = argument.partition("=")
                if name in rule.flags and not has_value:
                    out.append(argument)
                elif name in rule.options:
                    if not has_value:
                        if index >= len(args):
                            raise CommandRefused(f"{command} {name} needs a value")
                        value = args[index]
                        index += 1
                        self._value(command, name, rule.options[name], value)
                        out.extend([name, value])
                    else:
                        self._value(command, name, rule.options[name], value)
                        out.append(argument)
                else:
                    raise refuse(name)
                continue
            if argument in rule.flags:
                out.append(argument)
            elif argument in rule.options:
                if index >= len(args):
                    raise CommandRefused(f"{command} {argument} needs a value")
                value = args[index]
                index += 1
                self._value(command, argument, rule.options[argument], value)
                out.extend([argument, value])
            elif argument[:2] in rule.options:
                self._value(command, argument[:2], rule.options[argument[:2]], argument[2:])
                out.append(argument)
            elif all(f"-{letter}" in rule.flags for letter in argument[1:]):
                out.append(argument)
            else:
                bad = next(
                    (f"-{letter}" for letter in argument[1:] if f"-{letter}" not in rule.flags),
                    argument,
                )
                raise refuse(bad if len(argument) > 2 else argument)
        return out

    @staticmethod
    def _refuse_changing_options(command: str, args: list[str]) -> None:
        """find -delete/-exec, sed -i: never, whatever the rule lists (config refuses them too)."""
        for argument in args:
            if argument == "--":
                return
            if not argument.startswith("-"):
                continue
            dangerous = file_changing_option(command, argument)
            if dangerous is None and command == "sed" and not argument.startswith("--"):
                # Combined letters: -ni is -n -i; e, f and l take the rest as their value.
                letters = re.split("[efl]", argument[1:], maxsplit=1)[0]
                dangerous = "-i" if "i" in letters else None
            if dangerous is not None:
                raise CommandRefused(
                    f"{command} {dangerous} changes files or runs programs; "
                    "use write_file/delete_file to change files"
                )

    def prepare(
        self, command: str, args: list[str] | None = None, cwd: str | None = None
    ) -> PreparedCommand:
        """Check a call completely; raises :class:`CommandRefused` with the reason."""
        command = command.strip()
        rule = self._rule(command)
        args = list(args or [])
        if len(args) > MAX_ARGS:
            raise CommandRefused(f"at most {MAX_ARGS} arguments are allowed")
        self._refuse_changing_options(command, args)
        folder = self.sandbox.resolve(cwd) if cwd and cwd.strip() else self.sandbox.roots[0]
        if not folder.is_dir():
            raise SandboxError(f"working folder {self.sandbox.display(folder)} does not exist")
        argv: list[str] = []
        operands: list[Path] = []
        texts_left = rule.text_operands
        try:
            text_pattern = re.compile(rule.text_pattern)
        except re.error as exc:
            raise CommandRefused(
                f"tools.commands.{command}.text_pattern is invalid: {exc}"
            ) from None
        for item in self._options(command, rule, args):
            if not isinstance(item, tuple):
                argv.append(item)
                continue
            operand = item[1]
            if texts_left:
                texts_left -= 1
                if not text_pattern.fullmatch(operand):
                    raise CommandRefused(
                        f"{command} does not accept {operand[:60]!r} here "
                        f"(it must match {rule.text_pattern})"
                    )
                argv.append(operand)
                continue
            if not rule.paths:
                raise CommandRefused(f"{command} takes no file or folder arguments")
            resolved = self.sandbox.resolve(operand, base=folder)
            operands.append(resolved)
            argv.append(str(resolved))
        executable = shutil.which(command, path=SAFE_PATH)
        if executable is None:
            raise ToolError(f"{command} is allowed but not installed on this computer")
        if command == "sed":
            # GNU sed's script commands w, r and e write files, read any file and run programs.
            argv.insert(0, "--sandbox")
        return PreparedCommand(executable, tuple(argv), folder, tuple(operands))

    # ------------------------------------------------------------------ running

    def _environment(self) -> dict[str, str]:
        env = {
            "PATH": SAFE_PATH,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": os.path.expanduser("~"),
            "TERM": "dumb",
        }
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        return env

    @contextlib.contextmanager
    def _confinement(self, prepared: PreparedCommand) -> Iterator[Confinement | None]:
        """Descriptors of the checked operands and working folder, checked again once open.

        None where the kernel has no Landlock (a warning is logged once).
        """
        if landlock_abi() < 1:
            _warn_unconfined()
            yield None
            return
        memory = self.settings.command_memory_mb * 1024 * 1024
        confinement = Confinement(cpu_s=self.settings.command_cpu_s, memory_bytes=memory)
        confinement.nice = NICE
        try:
            confinement.cwd = self.sandbox.open_path(prepared.cwd, folder=True)
            for operand in prepared.operands:
                try:
                    fd = self.sandbox.open_path(operand)
                except FileNotFoundError:
                    continue  # the command says so; nothing there may be read
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    confinement.list_dirs.append(fd)
                else:
                    confinement.read_files.append(fd)
            yield confinement
        finally:
            for fd in confinement.fds():
                os.close(fd)

    def execute(self, prepared: PreparedCommand) -> str:
        """Run a prepared command within the limits; the result text says how it ended."""
        with self._confinement(prepared) as confinement:
            return self._execute(prepared, confinement)

    def _execute(self, prepared: PreparedCommand, confinement: Confinement | None) -> str:
        limit = self.output_limit
        call = current_call()
        deadline = min(time.monotonic() + self.timeout_s, call.deadline)
        memory = self.settings.command_memory_mb * 1024 * 1024
        name = Path(prepared.executable).name
        # ls: names with control characters (escape sequences, line breaks) in C quotes, so
        # one name is one line; other names (spaces, accents) as they are.
        extra = ["--quoting-style=c-maybe"] if name == "ls" else []
        argv = [name, *extra, *prepared.argv]
        common: dict[str, Any] = {
            "env": self._environment(),
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "start_new_session": True,
            "close_fds": True,
        }
        if confinement is not None:
            # Limits, Landlock and the working folder (by its descriptor) are set in the child.
            process = subprocess.Popen(
                confine_command(confinement, prepared.executable, argv),
                pass_fds=confinement.fds(),
                **common,
            )
        else:
            process = subprocess.Popen(
                argv,
                executable=prepared.executable,
                cwd=prepared.cwd,
                preexec_fn=_limit_resources(self.settings.command_cpu_s, memory),
                **common,
            )
        outputs = {"stdout": bytearray(), "stderr": bytearray()}
        stopped = ""
        with selectors.DefaultSelector() as selector:
            assert process.stdout is not None and process.stderr is not None
            selector.register(process.stdout, selectors.EVENT_READ, "stdout")
            selector.register(process.stderr, selectors.EVENT_READ, "stderr")
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if call.cancel_event.is_set() or remaining <= 0:
                    stopped = f"killed after {self.timeout_s:g} seconds (time limit)"
                    if call.cancelled():
                        stopped = "killed: the tool call ran out of time"
                    break
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    outputs[key.data] += chunk
                if sum(len(b) for b in outputs.values()) > limit:
                    stopped = f"stopped after {limit} bytes of output (output limit)"
                    break
        if stopped:
            self._kill(process)
        try:
            reaped = self._reap(process, KILL_GRACE_S * 4)
            if reaped is None:
                self._kill(process)
                reaped = self._reap(process, None)
        finally:
            process.stdout.close()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
        returncode, cpu_s = reaped  # type: ignore[misc]
        if not stopped and returncode < 0:
            stopped = self._killed_by(-returncode, cpu_s)
        status = stopped or f"exit status {returncode}"
        stdout = outputs["stdout"][:limit].decode("utf-8", errors="replace")
        stderr = outputs["stderr"][: max(0, limit - len(outputs["stdout"]))]
        hidden_note = ""
        if Path(prepared.executable).name == "ls" and stdout:
            stdout, hidden = self._hide_denied_entries(prepared, stdout)
            if hidden:
                hidden_note = f"[{hidden} off-limits entries not shown]"
        lines = [f"$ {prepared.shown()}", status]
        if stdout:
            lines.append(printable_lines(stdout.rstrip("\n")))
        if hidden_note:
            lines.append(hidden_note)
        if stderr:
            text = stderr.decode("utf-8", errors="replace").rstrip("\n")
            lines.append("[stderr] " + printable_lines(text))
        if not stdout and not stderr:
            lines.append("(no output)")
        return "\n".join(lines)

    def _listed_folders(self, prepared: PreparedCommand) -> list[Path]:
        folders = [operand for operand in prepared.operands if operand.is_dir()]
        return folders if prepared.operands else [prepared.cwd]

    def _hide_denied_entries(self, prepared: PreparedCommand, output: str) -> tuple[str, int]:
        """``ls`` output without the entries ``list_directory`` hides, and their number.

        Entries on the deny list go (one name per line, as ``ls`` writes to a pipe), and a
        link's target is not shown where it leads outside the roots or to a denied place.
        """
        hidden: set[str] = set()
        bad_links: set[str] = set()
        for folder in self._listed_folders(prepared):
            try:
                with self.sandbox.open_folder(folder) as (fd, real), os.scandir(fd) as listing:
                    for entry in listing:
                        if self.sandbox.denied_by(real / entry.name) is not None:
                            hidden.add(entry.name)
                        elif entry.is_symlink() and not self._link_allowed(fd, real, entry.name):
                            bad_links.add(entry.name)
            except (OSError, ToolError):
                # The folder changed while it was listed: what ls saw cannot be checked.
                return "(the listing is not shown: the folder changed while it was listed)", 0
        if not hidden and not bad_links:
            return output, 0
        kept = []
        dropped = 0
        for line in output.split("\n"):
            name_part, arrow, _target = line.partition(" -> ")
            shown = name_part.rstrip()
            if any(_names(shown, name) for name in hidden):
                dropped += 1
                continue
            if arrow and any(_names(shown, name) for name in bad_links):
                line = f"{name_part} -> (a place I may not use)"
            kept.append(line)
        return "\n".join(kept), dropped

    def _link_allowed(self, fd: int, folder: Path, name: str) -> bool:
        real = self.sandbox.link_target(fd, folder, name)
        return real is not None and self.sandbox.allowed(real)

    def _killed_by(self, signal_number: int, cpu_s: float | None) -> str:
        """Why a command died of a signal; SIGKILL is the CPU hard limit only after its time."""
        cpu_limit = self.settings.command_cpu_s
        at_cpu_limit = cpu_s is None or cpu_s >= cpu_limit - 0.1
        if signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and at_cpu_limit):
            return f"killed at the CPU limit ({cpu_limit} s)"
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        if signal_number == signal.SIGKILL:
            # Not our limits (CPU time was left): the kernel's out-of-memory killer, usually.
            return "killed by SIGKILL, not by a limit of mine (out of memory?)"
        return f"killed by {name}"

    @staticmethod
    def _reap(
        process: subprocess.Popen[bytes], timeout_s: float | None
    ) -> tuple[int, float | None] | None:
        """Wait for the command; its return code and the CPU seconds it used, or None on timeout.

        ``os.wait4`` gives the child's own resource use, which tells a CPU-limit SIGKILL from
        any other (the out-of-memory killer's).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                return process.wait(), None
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, usage.ru_utime + usage.ru_stime
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ the tool

    def run_command(
        self, command: str, args: list[str] | None = None, cwd: str | None = None
    ) -> str:
        """Run one allowed read-only command without a shell and return its output.

        Args:
            command: The command name, for example df; only commands on the allow list run.
            args: Its arguments, one per item, for example ["-h"]; no pipes, redirections,
                wildcards or $(...), since there is no shell.
            cwd: The folder to run in; leave it out for the first allowed folder.
        """
        return self.execute(self.prepare(command, args, cwd))

    def check(self, values: dict[str, Any]) -> PolicyDecision | None:
        self.prepare(values["command"], values.get("args"), values.get("cwd"))
        return None


def tools(settings: ToolsSettings) -> list[Tool]:
    runner = CommandRunner(settings)
    tool = Tool.from_function(runner.run_command, group="commands", check=runner.check)
    allowed = ", ".join(sorted(settings.commands)) or "none"
    tool.description = f"{tool.description} Allowed commands: {allowed}."
    tool.schema["function"]["description"] = tool.description
    return [tool]
