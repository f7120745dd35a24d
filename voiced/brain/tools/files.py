"""The ``files`` tool group: read, list, find, write and delete files inside ``tools.file_roots``.

Every path goes through :class:`~voiced.brain.tools.sandbox.Sandbox` (resolved first, then checked
against the roots and the deny list). Writing and deleting need the user's confirmation, and
the pre-flight check refuses a bad path or an oversized write before anyone is asked.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import stat
from datetime import datetime
from typing import Any

from voiced.brain.tools.registry import PolicyDecision, Tool, ToolError
from voiced.brain.tools.sandbox import (
    Sandbox,
    SandboxError,
    human_size,
    plural,
    printable,
    walk_budget_s,
)
from voiced.config import ToolsSettings

MAX_LISTED = 200
MAX_FOUND = 100
MAX_PATTERN_CHARS = 200
# How much of a write's content the confirmation question reads out.
PREVIEW_CHARS = 60


def _decode_prefix(data: bytes, complete: bool) -> str:
    """UTF-8 text of ``data``; a character cut in half at the end is dropped, not garbled."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(data, final=complete)


def preview(content: str, limit: int = PREVIEW_CHARS) -> str:
    """The start of ``content`` on one line, quoted, escaped: what a yes would write."""
    flat = " ".join(content.split())
    cut = flat[:limit] + ("…" if len(flat) > limit else "")
    return f'"{printable(cut)}"'


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


class FileTools:
    """The file tools over one sandbox; each public method is one tool."""

    def __init__(self, settings: ToolsSettings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox.from_settings(settings)

    # ------------------------------------------------------------------ tools

    def read_file(self, path: str, max_bytes: int = 4000) -> str:
        """Read a text file inside the allowed folders.

        Args:
            path: The file, for example ~/notes/todo.txt (relative paths start in the first
                allowed folder).
            max_bytes: Read at most this many bytes from the start of the file.
        """
        if max_bytes < 1:
            raise ToolError("max_bytes must be at least 1")
        limit = min(max_bytes, self.settings.max_read_bytes)
        target = self.sandbox.resolve(path)
        data, size = self.sandbox.read_bytes(target, limit)
        shown = self.sandbox.display(target)
        if b"\x00" in data[:8192]:
            return f"{shown} is a binary file ({human_size(size)}); its content is not shown"
        complete = len(data) >= size
        text = _decode_prefix(data, complete)
        if complete:
            return f"{shown} ({human_size(size)}):\n{text}"
        note = f"first {human_size(len(data))} of {human_size(size)}"
        if max_bytes > self.settings.max_read_bytes:
            note += f"; at most {self.settings.max_read_bytes} bytes are read at once"
        return f"{shown} ({note}):\n{text}"

    def list_directory(self, path: str | None = None) -> str:
        """List the files and folders in a folder, with sizes and change dates.

        Args:
            path: The folder, for example ~/Documents; leave it out for the first allowed
                folder.
        """
        folder = self.sandbox.folder(path)
        folders: list[str] = []
        files: list[str] = []
        hidden = 0
        # Listed through a descriptor of the folder checked where it really is: a swap of the
        # folder (or one above it) for a symlink after the check cannot redirect the listing.
        with self.sandbox.open_folder(folder) as (fd, folder):
            try:
                with os.scandir(fd) as entries:
                    listing = sorted(entries, key=lambda e: e.name.casefold())
            except OSError as exc:
                raise ToolError(
                    f"cannot list {self.sandbox.display(folder)}: {exc.strerror}"
                ) from None
            for entry in listing:
                if self.sandbox.denied_by(folder / entry.name) is not None:
                    hidden += 1
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                name = printable(entry.name)
                if stat.S_ISLNK(info.st_mode):
                    real = self.sandbox.link_target(fd, folder, entry.name)
                    if real is not None and self.sandbox.allowed(real):
                        files.append(f"{name} -> {self.sandbox.display(real)} (link)")
                    else:
                        files.append(f"{name} (link to a place I may not use)")
                elif stat.S_ISDIR(info.st_mode):
                    folders.append(f"{name}/")
                else:
                    files.append(f"{name}  {human_size(info.st_size)}  {_when(info.st_mtime)}")
        lines = [
            f"{self.sandbox.display(folder)}: {plural(len(folders), 'folder')}, "
            f"{plural(len(files), 'file')}"
            + (f" ({hidden} off-limits entries not shown)" if hidden else "")
        ]
        entries_text = folders + files
        lines.extend(entries_text[:MAX_LISTED])
        if len(entries_text) > MAX_LISTED:
            lines.append(f"[{len(entries_text) - MAX_LISTED} more entries not listed]")
        return "\n".join(lines)

    def find_files(self, pattern: str, path: str | None = None) -> str:
        """Find files whose names match a pattern, searching all folders below a folder.

        Args:
            pattern: A name pattern with * and ? wildcards, for example *.pdf or report*;
                matched without regard to case.
            path: The folder to search; leave it out for the first allowed folder.
        """
        pattern = pattern.strip()
        if not pattern:
            raise ToolError("give a name pattern such as *.txt")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ToolError(f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
        folder = self.sandbox.folder(path)
        wanted = pattern.casefold()
        by_path = "/" in wanted
        found: list[str] = []
        more = 0
        walk = self.sandbox.walk(folder, budget_s=walk_budget_s(self.settings))
        for parent, entry in walk:
            if entry.is_dir(follow_symlinks=False):
                continue
            full = parent / entry.name
            subject = str(full.relative_to(folder)) if by_path else entry.name
            if not fnmatch.fnmatchcase(subject.casefold(), wanted):
                continue
            if len(found) >= MAX_FOUND:
                more += 1
                continue
            found.append(self.sandbox.display(full))
        where = self.sandbox.display(folder)
        if not found:
            text = f"no files matching {pattern!r} under {where}"
        else:
            found.sort()
            text = f"{plural(len(found) + more, 'file')} matching {pattern!r} under {where}:\n"
            text += "\n".join(found)
            if more:
                text += f"\n[{more} more not listed]"
        if not walk.complete:
            text += f"\n[search stopped after {walk.entries_seen} entries; results may be partial]"
        return text

    def _encoded(self, content: str) -> bytes:
        data = content.encode("utf-8")
        if len(data) > self.settings.max_write_bytes:
            raise ToolError(
                f"the content is {human_size(len(data))}; at most "
                f"{human_size(self.settings.max_write_bytes)} may be written at once"
            )
        return data

    def write_file(self, path: str, content: str) -> str:
        """Create or replace a text file inside the allowed folders (asks the user first).

        Args:
            path: The file to write, for example ~/notes/shopping.txt; its folder must exist.
            content: The complete new text of the file.
        """
        data = self._encoded(content)
        target = self.sandbox.resolve_target(path)
        written = self.sandbox.write_bytes(target, data)
        how = "replaced" if written.replaced else "created"
        return f"{how} {self.sandbox.display(target)} ({human_size(len(data))}){written.note()}"

    def delete_file(self, path: str) -> str:
        """Delete one file inside the allowed folders (asks the user first; not folders).

        Args:
            path: The file to delete, for example ~/Downloads/old.zip.
        """
        target = self.sandbox.resolve_target(path)
        size = self.sandbox.delete_file(target)
        return f"deleted {self.sandbox.display(target)} ({human_size(size)})"

    # ------------------------------------------------------------------ policy hooks

    def check_read(self, values: dict[str, Any]) -> PolicyDecision | None:
        if values.get("path"):
            self.sandbox.resolve(values["path"])
        return None

    def check_write(self, values: dict[str, Any]) -> PolicyDecision | None:
        self._encoded(values["content"])
        target = self.sandbox.resolve_target(values["path"])
        if target.is_dir():
            raise SandboxError(f"{self.sandbox.display(target)} is a folder")
        return None

    def check_delete(self, values: dict[str, Any]) -> PolicyDecision | None:
        target = self.sandbox.resolve_target(values["path"])
        if not target.is_symlink() and not target.exists():
            raise SandboxError(f"{self.sandbox.display(target)} does not exist")
        if target.is_dir() and not target.is_symlink():
            raise SandboxError(
                f"{self.sandbox.display(target)} is a folder; only files are deleted"
            )
        return None

    def _shown(self, raw: str) -> str:
        try:
            return self.sandbox.display(self.sandbox.resolve_target(raw))
        except (ToolError, OSError):
            return printable(raw)

    def write_question(self, values: dict[str, Any]) -> str:
        shown = self._shown(values["path"])
        content = values["content"]
        try:
            exists = self.sandbox.resolve_target(values["path"]).exists()
        except (ToolError, OSError):
            exists = False
        what = f"{len(content)} characters of {'new ' if exists else ''}text"
        if content.strip():
            what += f" starting {preview(content)}"
        if exists:
            return f"Replace {shown} with {what}? Say yes or no."
        return f"Create {shown} with {what}? Say yes or no."

    def delete_question(self, values: dict[str, Any]) -> str:
        return f"Delete {self._shown(values['path'])}? Say yes or no."


def tools(settings: ToolsSettings) -> list[Tool]:
    files = FileTools(settings)
    return [
        Tool.from_function(files.read_file, group="files", check=files.check_read),
        Tool.from_function(files.list_directory, group="files", check=files.check_read),
        Tool.from_function(files.find_files, group="files", check=files.check_read),
        Tool.from_function(
            files.write_file,
            group="files",
            needs_confirmation=True,
            question=files.write_question,
            check=files.check_write,
        ),
        Tool.from_function(
            files.delete_file,
            group="files",
            needs_confirmation=True,
            question=files.delete_question,
            check=files.check_delete,
        ),
    ]
