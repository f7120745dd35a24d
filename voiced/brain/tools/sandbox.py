"""The path sandbox every file, audio, system and command tool goes through.

A path from the model is resolved first (``~``, relative to the first root, ``..`` and every
symlink, by the kernel's rules via :func:`os.path.realpath`) and only then checked:

* it must lie inside one of ``tools.file_roots`` (themselves resolved);
* it must not match the deny list: the built-in secrets (:data:`SECRET_PATTERNS`: ``~/.ssh``,
  ``~/.gnupg``, keyrings, browser profiles, ``.env`` files, private keys, shell histories...),
  voiced's own config, models, transcripts and audit log (under ``VOICED_HOME`` and the XDG
  folders), and the user's extra ``tools.deny`` globs. Both the path as written (with ``..``
  folded) and the resolved path are checked, so a link named innocently that points at a
  secret is refused, and so is a secret reached through a linked folder. A fixed place on
  either list that is a symlink (``~/.ssh -> ~/dotfiles/ssh``) is also protected where it
  leads, whatever that is called. Names are matched
  without regard to case (``PROD.ENV``, ``ID_RSA``); absolute entries exactly. Names, deny
  entries and roots are compared in Unicode normal form C, so ``Persönlich`` typed matches
  the decomposed name a Mac wrote.
* a regular file with more than one name (hard links) that is private (no permissions for
  group and others, as keys are) or not the user's own is not read: the other names may be
  secrets, and nothing tells which they are.

Writing and deleting also stay away from what makes programs run later
(:data:`STARTUP_PATTERNS`: shell and session start-up files, autostart and systemd units,
``~/.local/bin``, desktop files, ``*.pth`` files and site-packages), every folder on
``$PATH``, the running Python (prefixes, standard library, site folders), any Python
environment (a folder with ``pyvenv.cfg`` above the target), git internals (any ``.git``
and any bare repository: a folder with ``HEAD`` and ``objects/``), voiced's own program (its
package, source tree and virtual environment), and every hidden file or folder directly in
the home folder, with all below it (``~/.*``: configuration, which programs act on); a name
with a control character is refused too. A replaced executable loses its execute bits.
Paths shown in results and questions have control, bidi and line-separator characters
escaped; spaces and joiners of real names are shown as they are, so names can be used again.

Reading opens the resolved path with ``O_NOFOLLOW`` and re-checks where the open descriptor
really points (``/proc/self/fd``), so a symlink swapped in after the check is caught. Writing
and deleting open the resolved parent folder the same way and work relative to that
descriptor (``openat``/``renameat``/``unlinkat``): the last component is never followed, so
writing over a symlink replaces the link, never its target. Listings and walks
(:meth:`Sandbox.open_folder`, :class:`Walk`) work the same way: the folder is opened and then
checked, and each subfolder is opened relative to its parent with ``O_NOFOLLOW``.
:meth:`Sandbox.open_path` pins a checked file or folder for ``run_command``'s Landlock rules
(:mod:`voiced.brain.tools.confine`).

Protected places are also found where they really are: the XDG config, data and state
folders (as set and resolved) and what the symlinks among ``~/.*`` and in those folders lead
to are never changed, the ``.config/...`` secrets are denied under a custom
``XDG_CONFIG_HOME`` too, and a hard link to a protected file in the home folder is refused
under any name, private or not.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import itertools
import logging
import os
import re
import site
import stat
import sys
import sysconfig
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from voiced import paths
from voiced.brain.tools.registry import CallContext, ToolError, current_call
from voiced.config import ToolsSettings

log = logging.getLogger(__name__)

# Names or runs of folder names that hold secrets, matched anywhere in a path (fnmatch syntax).
SECRET_PATTERNS: tuple[str, ...] = (
    # keys and credentials
    ".ssh",
    ".gnupg",
    ".pki",
    ".password-store",
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".config/op",
    ".config/rclone",
    ".terraform.d",
    ".cargo/credentials*",
    ".m2/settings*.xml",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".vault-token",
    ".htpasswd",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.kdbx",
    # display and sound server cookies (they let a program into the session)
    ".Xauthority",
    ".ICEauthority",
    ".config/pulse/cookie",
    ".pulse-cookie",
    # editors' stored sign-ins and tokens
    ".config/Code*/User/globalStorage",
    ".config/VSCodium/User/globalStorage",
    ".vscode-server/data/User/globalStorage",
    # environment files
    ".env*",  # .env, .env.local, .env~, .env-prod, .envrc (direnv's exports)
    "*.env",
    # browser and mail profiles
    ".mozilla",
    ".thunderbird",
    ".config/google-chrome*",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/vivaldi*",
    ".config/microsoft-edge*",
    ".config/opera*",
    "snap/firefox",
    "snap/chromium",
    ".var/app/com.google.Chrome",
    ".var/app/org.chromium.Chromium",
    ".var/app/com.brave.Browser",
    ".var/app/org.mozilla.firefox",
    ".var/app/org.gnome.Epiphany",
    ".var/app/org.kde.falkon",
    ".local/share/epiphany",
    ".config/epiphany",
    ".config/falkon",
    ".cache/falkon",
    ".config/qutebrowser",
    ".local/share/qutebrowser",
    # shell and REPL histories (commands typed with passwords in them)
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".irb_history",
    ".viminfo",
    ".lesshst",
    # more stored credentials: database clients, cloud tools, model hubs, git remotes
    ".my.cnf",
    ".mylogin.cnf",
    ".s3cfg",
    ".boto",
    ".cache/huggingface/token",
    ".cache/huggingface/stored_tokens",
    ".huggingface/token",
    ".config/git/credentials",
    ".git/config",  # remote URLs may carry a user:token
    ".gem/credentials",
    ".composer/auth.json",
    ".config/composer/auth.json",
    ".config/containers/auth.json",
    ".dockercfg",
    ".config/sops",
    ".config/doctl",
    ".gradle/gradle.properties",
    ".ivy2/.credentials",
    ".sbt/.credentials",
    ".smbcredentials",
    ".config/filezilla",
    ".local/share/python_keyring",
)

# What makes code run later, never written or deleted (reading is harmless).
STARTUP_PATTERNS: tuple[str, ...] = (
    # shell start-up and login files
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_aliases",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
    ".config/zsh",
    ".kshrc",
    ".mkshrc",
    ".cshrc",
    ".tcshrc",
    ".login",
    ".logout",
    ".inputrc",
    ".config/fish",
    ".config/nushell",
    ".xonshrc",
    # desktop session start-up
    ".xprofile",
    ".xsession",
    ".xsessionrc",
    ".xinitrc",
    ".Xclients",
    ".pam_environment",
    ".config/autostart",
    ".config/environment.d",
    ".config/systemd",
    ".local/share/systemd",
    ".config/plasma-workspace",
    ".kde/Autostart",
    ".kde4/Autostart",
    ".config/openbox",
    ".local/share/dbus-1",
    ".local/share/applications",
    # programs on PATH
    ".local/bin",
    "~/bin",
    # editors and tools that run commands from their settings
    ".vimrc",
    ".gvimrc",
    ".exrc",
    ".vim",
    ".config/nvim",
    ".emacs",
    ".emacs.d",
    ".config/emacs",
    ".gitconfig",
    ".config/git",
    ".git/hooks",
    ".git/config",
    # Python: run at start-up or on import
    "*.pth",
    "sitecustomize.py",
    "usercustomize.py",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "*.pyc",
    # cron tables kept in the home folder
    "crontab",
    "crontabs",
    ".crontab",
    # project hooks and per-folder start-up that run on commit or on entering the folder
    ".husky",
    ".githooks",
    ".lefthook",
    "lefthook.yml",
    ".lefthook.yml",
    ".pre-commit-config.yaml",
    ".envrc",
    ".vscode/tasks.json",
)

MAX_PATH_CHARS = 4096
# How long the list of protected files with other names (hard links) is trusted.
SECRET_INODES_TTL_S = 30.0

HIDDEN_IN_HOME = "hidden configuration folders and files are not changed by voiced"


class SandboxError(ToolError):
    """A path the tools may not use; the message says why, for the model to relay."""


# Characters that reorder text on screen: embeddings, overrides, isolates and marks.
BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


def _unsafe(ch: str) -> bool:
    """A character that moves the cursor, reorders text or breaks lines when shown.

    Spaces (no-break, the narrow one in macOS screenshot names) and the joiners (ZWJ in emoji,
    ZWNJ in Persian) are part of real names and stay; lone surrogates (bytes that are not
    UTF-8) cannot be shown or encoded at all; tag characters are invisible and can smuggle
    text past a reader.
    """
    return (
        unicodedata.category(ch) in {"Cc", "Cs", "Zl", "Zp"}
        or ch in BIDI_CONTROLS
        or "\U000e0000" <= ch <= "\U000e007f"  # tag characters: a known way to hide text
    )


def printable(text: str) -> str:
    """``text`` with control, bidi and line-separator characters escaped (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def printable_lines(text: str) -> str:
    """Program output for the model: as :func:`printable`, but line breaks and tabs stay."""
    if text.isprintable():
        return text
    return "\n".join(
        line
        if line.isprintable()
        else "".join(_escape(ch) if ch != "\t" and _unsafe(ch) else ch for ch in line)
        for line in text.split("\n")
    )


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def control_characters(text: str) -> list[str]:
    """The control, bidi and line-separator characters (and lone surrogates) in ``text``."""
    return [ch for ch in text if _unsafe(ch)]


def human_size(size: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, one decimal from KiB up."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(2, "entry", "entries")`` -> ``"2 entries"``."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def _realpath(path: str | Path, shown: str) -> Path:
    """:func:`os.path.realpath`, or a :class:`SandboxError` when a link changes under it.

    A symlink replaced by a folder between its ``lstat`` and its ``readlink`` makes
    ``realpath`` raise ``EINVAL``: the path is being changed right now, and is refused.
    """
    try:
        return Path(os.path.realpath(path))
    except OSError as exc:
        raise SandboxError(
            f"{printable(shown.strip())!r} changed while it was being looked up "
            f"({exc.strerror}); nothing was done"
        ) from None


@functools.lru_cache(maxsize=16384)
def _translated(part: str) -> str:
    """``fnmatch.translate(part)``, once per pattern: every registry (each start, reload and
    tool command) builds sandboxes from the same few hundred patterns, and translating them
    again was most of a sandbox's cost (25 ms of it on the 2-core VM)."""
    return fnmatch.translate(part)


@functools.lru_cache(maxsize=16384)
def _glob(part: str, flags: int) -> re.Pattern[str]:
    return re.compile(_translated(part), flags)


def _nfc(text: str) -> str:
    """``text`` in Unicode normal form C: ``ö`` typed and ``o`` + combining diaeresis (as
    macOS writes names, and sync tools copy them) compare equal."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class _Rule:
    """One deny entry: an absolute path prefix (``anchored``) or a run of names anywhere."""

    parts: tuple[str, ...]
    anchored: bool
    source: str
    regexes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(_nfc(part) for part in self.parts))
        # A name pattern matches any case (PROD.ENV); an absolute path is one exact place.
        flags = 0 if self.anchored else re.IGNORECASE
        compiled = tuple(_glob(part, flags) for part in self.parts)
        object.__setattr__(self, "regexes", compiled)

    @property
    def text(self) -> str:
        return str(Path(*self.parts)) if self.anchored else "/".join(self.parts)

    def matches_ending_at(self, path_parts: tuple[str, ...]) -> bool:
        """Whether the rule matches ``path_parts`` with its last part on the last component.

        Checking this for every prefix of a path is the full test; a walk whose folder already
        passed only needs it for the new entry.
        """
        width = len(self.regexes)
        if len(path_parts) < width or (self.anchored and len(path_parts) != width):
            return False
        window = path_parts[-width:]
        return all(
            regex.match(_nfc(part)) for regex, part in zip(self.regexes, window, strict=True)
        )


def _combined(rules: Iterable[_Rule], flags: int) -> re.Pattern[str]:
    """One pattern matching any of the rules' last parts."""
    ends = "|".join(f"(?:{_translated(rule.parts[-1])})" for rule in rules)
    return re.compile(ends or "(?!)", flags)


def _rules(patterns: Iterable[str], source: str) -> list[_Rule]:
    return [rule for pattern in patterns if (rule := _rule(pattern, source))]


def _as_given_and_resolved(paths: Iterable[Path]) -> list[str]:
    return [
        variant for path in paths for variant in {os.path.normpath(path), os.path.realpath(path)}
    ]


def _linked_homes(patterns: Iterable[str], source: str) -> list[_Rule]:
    """Where the fixed places among ``patterns`` really are, when a symlink leads elsewhere.

    A name pattern without wildcards (``.ssh``, ``.bashrc``) is taken at the home folder, an
    absolute or ``~`` entry as written. With ``~/.ssh -> ~/dotfiles/ssh`` the link's target is
    what holds the keys, and it is not named like a secret.
    """
    home = Path.home()
    rules = []
    for pattern in patterns:
        text = pattern.strip()
        if not text or any(ch in text for ch in "*?["):
            continue
        place = os.path.expanduser(text) if text.startswith(("~", "/")) else str(home / text)
        real = os.path.realpath(place)
        if real != os.path.normpath(place):
            rules.append(_Rule(Path(real).parts, True, source))
    return rules


def _config_places() -> list[Path]:
    """The XDG config, data and state folders and ``~/.local/bin``, as set and as they really
    are: what they hold configures (and starts) programs, whatever the folders are called."""
    home = Path.home()
    places = [home / ".config", home / ".local" / "share", home / ".local" / "state"]
    places.append(home / ".local" / "bin")
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        value = os.environ.get(variable, "")
        if os.path.isabs(value):
            places.append(Path(value))
    return _below_home_or_elsewhere(Path(p) for p in _as_given_and_resolved(places))


def _linked_dotfiles(config_places: Iterable[Path], limit: int = 2000) -> list[Path]:
    """Where the symlinks among ``~/.*`` and directly in the config folders lead.

    Dotfile managers (GNU stow, yadm, chezmoi's symlink mode) keep the real files elsewhere,
    named without the dot (``~/.config -> ~/dotfiles/config``,
    ``~/.config/i3 -> ~/dotfiles/i3/.config/i3``): those targets are start-up files too.
    """
    home = Path.home()
    folders = [(home, True), *((place, False) for place in config_places)]
    found = []
    seen = 0
    for folder, dotted_only in folders:
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                return found
            if dotted_only and not entry.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if entry.is_symlink():
                    found.append(Path(os.path.realpath(entry.path)))
    return _below_home_or_elsewhere(found)


def _xdg_secret_rules(places: Iterable[Path]) -> list[_Rule]:
    """The ``.config/...`` and ``.local/share/...`` secrets where those folders really are
    (``XDG_CONFIG_HOME=~/xdgconf`` keeps ``gh``'s token in ``~/xdgconf/gh``)."""
    home = Path.home()
    prefixes = {".config": [home / ".config"], ".local/share": [home / ".local" / "share"]}
    for variable, prefix in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        value = os.environ.get(variable, "")
        if os.path.isabs(value):
            prefixes[prefix].append(Path(value))
    rules = []
    for prefix, folders in prefixes.items():
        reals = {Path(variant) for variant in _as_given_and_resolved(folders)}
        for pattern in SECRET_PATTERNS:
            if pattern.startswith(prefix + "/"):
                rest = pattern[len(prefix) + 1 :].split("/")
                rules += [_Rule((*real.parts, *rest), True, "secrets") for real in reals]
    return rules


def _rule(pattern: str, source: str) -> _Rule | None:
    text = pattern.strip()
    if not text:
        return None
    if text.startswith(("~", "/")):
        anchored = Path(os.path.normpath(os.path.expanduser(text)))
        return _Rule(anchored.parts, True, source)
    parts = tuple(part for part in text.strip("/").split("/") if part and part != ".")
    return _Rule(parts, False, source) if parts else None


def _own_files() -> list[Path]:
    """voiced's config, data and state folders, wherever they are (VOICED_HOME and XDG)."""
    home = Path.home()
    candidates = [
        paths.data_dir(),
        paths.state_dir(),
        paths.user_config_path(),
        home / ".config" / "voiced",
        home / ".local" / "share" / "voiced",
        home / ".local" / "state" / "voiced",
    ]
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        value = os.environ.get(variable)
        if value:
            candidates.append(Path(value) / "voiced")
    config = paths.user_config_path()
    if config.parent.name == "voiced":
        candidates.append(config.parent)
    return [Path(os.path.abspath(candidate)) for candidate in candidates]


def _own_program() -> list[Path]:
    """voiced's package, its source tree when run from one, and the virtualenv it runs in."""
    import voiced

    package = Path(os.path.abspath(os.path.dirname(voiced.__file__)))
    places = [package]
    if (package.parent / "pyproject.toml").is_file():
        places.append(package.parent)
    if sys.prefix != sys.base_prefix:
        places.append(Path(sys.prefix))
    return places


def _program_folders() -> list[Path]:
    """The folders on ``$PATH`` (relative entries mean wherever one happens to be: skipped)."""
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return _below_home_or_elsewhere(Path(entry) for entry in entries if os.path.isabs(entry))


def _below_home_or_elsewhere(places: Iterable[Path]) -> list[Path]:
    """``places`` without the home folder and its ancestors: an odd ``$PATH`` entry such as
    ``~`` must not make every file the user has unwritable."""
    home = Path(os.path.realpath(Path.home()))
    return [
        place
        for place in places
        if not (
            home == Path(os.path.realpath(place)) or Path(os.path.realpath(place)) in home.parents
        )
    ]


def _python_installation() -> list[Path]:
    """The running Python's prefixes, standard library and site folders."""
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    places.update(sysconfig.get_paths().values())
    with contextlib.suppress(AttributeError):
        places.update(site.getsitepackages())
    with contextlib.suppress(AttributeError):
        places.add(site.getusersitepackages())
    return _below_home_or_elsewhere(
        Path(place) for place in places if place and os.path.isabs(place)
    )


def walk_budget_s(settings: ToolsSettings) -> float:
    """Time a folder scan may take: most of the tool's time limit, leaving room to answer."""
    return max(0.2, settings.timeout_s * 0.6)


EXECUTE_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


@dataclass(frozen=True)
class Written:
    """What :meth:`Sandbox.write_bytes` did."""

    replaced: bool
    # The replaced file was executable and is not any more.
    made_unexecutable: bool = False

    def note(self) -> str:
        """A sentence for the result, or ""."""
        if not self.made_unexecutable:
            return ""
        return "; it was executable and is no longer executable (run permission removed)"


class Sandbox:
    """Where the tools may go: inside ``roots``, outside the deny list."""

    def __init__(self, roots: Iterable[str | Path], deny: Iterable[str] = ()) -> None:
        resolved = []
        for root in roots:
            text = str(root).strip()
            if not text:
                continue
            real = Path(os.path.realpath(os.path.expanduser(text)))
            if real not in resolved:
                resolved.append(real)
        if not resolved:
            raise ValueError("tools.file_roots is empty: the file tools need at least one folder")
        self.roots: tuple[Path, ...] = tuple(resolved)
        self._root_forms = tuple(Path(_nfc(str(root))) for root in resolved)
        deny = list(deny)
        rules = _rules(SECRET_PATTERNS, "secrets") + _linked_homes(SECRET_PATTERNS, "secrets")
        rules += _xdg_secret_rules(_config_places())
        rules += _rules(_as_given_and_resolved(_own_files()), "voiced's own files")
        rules += _rules(deny, "tools.deny") + _linked_homes(deny, "tools.deny")
        self._write_rules = tuple(
            _rules(STARTUP_PATTERNS, "start-up files")
            + _linked_homes(STARTUP_PATTERNS, "start-up files")
            + _rules(_as_given_and_resolved(_own_program()), "voiced's own program")
            + _rules(_as_given_and_resolved(_program_folders()), "programs on PATH")
            + _rules(_as_given_and_resolved(_python_installation()), "the Python installation")
            + _rules([".git"], "git internals")
        )
        config_places = _config_places()
        self._config_places = tuple(
            _Rule(place.parts, True, "configuration")
            for place in dict.fromkeys([*config_places, *_linked_dotfiles(config_places)])
        )
        self._hidden_in_home = tuple(
            _Rule((*Path(home).parts, ".*"), True, "hidden in the home folder")
            for home in dict.fromkeys(_as_given_and_resolved([Path.home()]))
        )
        self._rules = tuple(rules)
        self._inodes: tuple[float, frozenset[tuple[int, int]] | None] = (0.0, None)
        self._inodes_lock = threading.Lock()
        self._single = tuple(r for r in rules if not r.anchored and len(r.parts) == 1)
        combined = "|".join(f"(?:{_translated(r.parts[0])})" for r in self._single)
        self._single_names = re.compile(combined or "(?!)", re.IGNORECASE)
        # Walks check every entry: the other rules are looked at only where their last part
        # can match (name runs: one combined pattern; absolute places: by their depth).
        self._order = {id(rule): index for index, rule in enumerate(rules)}
        self._runs = tuple(r for r in rules if not r.anchored and len(r.parts) > 1)
        self._run_ends = _combined(self._runs, re.IGNORECASE)
        by_depth: dict[int, list[_Rule]] = {}
        for rule in rules:
            if rule.anchored:
                by_depth.setdefault(len(rule.parts), []).append(rule)
        self._places = {
            depth: (_combined(places, 0), tuple(places)) for depth, places in by_depth.items()
        }

    def _secret_inodes(self) -> frozenset[tuple[int, int]]:
        """(device, inode) of the protected files in the home folder that have other names.

        Looked for only when a file with several names is opened, and again after
        :data:`SECRET_INODES_TTL_S`, so a link made while the daemon runs is found too.
        """
        with self._inodes_lock:
            found_at, inodes = self._inodes
            if inodes is None or time.monotonic() - found_at > SECRET_INODES_TTL_S:
                inodes = frozenset(self._find_secret_inodes())
                self._inodes = (time.monotonic(), inodes)
            return inodes

    def _find_secret_inodes(self, limit: int = 5000) -> Iterator[tuple[int, int]]:
        # Denied entries in the home folder, and in the folders that lead to the named
        # secrets (.config, .local/share, .cache...), two levels into each denied folder.
        home = Path(os.path.realpath(Path.home()))
        leads = {
            "/".join(pattern.split("/")[:depth])
            for pattern in SECRET_PATTERNS
            for depth in range(1, pattern.count("/") + 1)
        }
        budget = [limit]

        def entries(folder: Path) -> list[os.DirEntry[str]]:
            try:
                with os.scandir(folder) as listing:
                    found = list(itertools.islice(listing, max(0, budget[0])))
            except OSError:
                return []
            budget[0] -= len(found)
            return found

        def files_below(folder: Path, depth: int) -> Iterator[tuple[int, int]]:
            for entry in entries(folder):
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        if info.st_nlink > 1:
                            yield info.st_dev, info.st_ino
                    elif depth and entry.is_dir(follow_symlinks=False):
                        yield from files_below(Path(entry.path), depth - 1)

        def search(folder: Path, relative: str) -> Iterator[tuple[int, int]]:
            for entry in entries(folder):
                path = Path(entry.path)
                inner = f"{relative}/{entry.name}" if relative else entry.name
                with contextlib.suppress(OSError):
                    if self.denied_by(path) is not None:
                        if entry.is_dir(follow_symlinks=False):
                            yield from files_below(path, 2)
                        elif entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            if info.st_nlink > 1:
                                yield info.st_dev, info.st_ino
                    elif entry.is_dir(follow_symlinks=False) and any(
                        fnmatch.fnmatch(inner, lead) for lead in leads
                    ):
                        yield from search(path, inner)

        yield from search(home, "")

    @classmethod
    def from_settings(cls, settings: ToolsSettings) -> Sandbox:
        return cls(settings.file_roots, settings.deny)

    # ------------------------------------------------------------------ checks

    def root_of(self, path: Path) -> Path | None:
        path = Path(_nfc(str(path)))
        for root, form in zip(self.roots, self._root_forms, strict=True):
            if path == form or path.is_relative_to(form):
                return root
        return None

    def denied_by(self, path: Path) -> _Rule | None:
        """The deny rule ``path`` (or a folder above it) falls under, or None."""
        parts = path.parts
        for end in range(1, len(parts) + 1):
            rule = self.denied_at(parts[:end])
            if rule is not None:
                return rule
        return None

    def denied_at(self, parts: tuple[str, ...]) -> _Rule | None:
        """The deny rule matching ``parts`` at its last component (its folders not checked)."""
        last = _nfc(parts[-1])
        if self._single_names.match(last):
            for rule in self._single:
                if rule.matches_ending_at(parts):
                    return rule
        found = []
        if self._run_ends.match(last):
            found += [rule for rule in self._runs if rule.matches_ending_at(parts)][:1]
        ends, places = self._places.get(len(parts), (None, ()))
        if ends is not None and ends.match(last):
            found += [rule for rule in places if rule.matches_ending_at(parts)][:1]
        return min(found, key=lambda rule: self._order[id(rule)]) if found else None

    def _startup_rule(self, path: Path) -> str | None:
        parts = path.parts
        for end in range(1, len(parts) + 1):
            for rule in self._write_rules:
                if rule.matches_ending_at(parts[:end]):
                    return f"it makes programs run ({printable(rule.source)}: {rule.text})"
        return None

    def protected_from_changes(self, path: Path) -> str | None:
        """Why ``path`` may not be written or deleted (it makes programs run...), or None."""
        parts = path.parts
        why = self._startup_rule(path)
        if why is not None:
            return why
        for folder in path.parents:
            if (folder / "pyvenv.cfg").is_file():
                return f"it makes programs run (a Python environment: {self.display(folder)})"
            if (folder / "HEAD").is_file() and (folder / "objects").is_dir():
                return f"it makes programs run (a git repository: {self.display(folder)})"
        for end in range(1, len(parts) + 1):
            if any(rule.matches_ending_at(parts[:end]) for rule in self._hidden_in_home):
                return HIDDEN_IN_HOME
        for end in range(1, len(parts) + 1):
            for rule in self._config_places:
                if rule.matches_ending_at(parts[:end]):
                    where = self.display(Path(*rule.parts))
                    return f"it configures or starts programs (a configuration folder: {where})"
        return None

    def display(self, path: Path) -> str:
        """A short form for results and spoken questions: ``~/notes/a.txt``, escaped."""
        home = Path(os.path.realpath(Path.home()))
        if path == home:
            return "~"
        if path.is_relative_to(home):
            return printable("~/" + str(path.relative_to(home)))
        return printable(str(path))

    def roots_text(self) -> str:
        return ", ".join(self.display(root) for root in self.roots)

    def _absolute(self, raw: str, base: Path | None) -> str:
        if not isinstance(raw, str):
            raise SandboxError(f"a path must be text, got {type(raw).__name__}")
        text = raw.strip()
        if not text:
            raise SandboxError("no path given")
        if "\x00" in text:
            raise SandboxError("a path may not contain a NUL character")
        if len(text) > MAX_PATH_CHARS:
            raise SandboxError(f"the path is longer than {MAX_PATH_CHARS} characters")
        expanded = os.path.expanduser(text)
        if not os.path.isabs(expanded):
            expanded = os.path.join(str(base or self.roots[0]), expanded)
        return expanded

    def _check(self, raw: str, lexical: Path, real: Path, *, changing: bool = False) -> None:
        if self.root_of(real) is None:
            where = "" if lexical == real else f" (it leads to {real})"
            raise SandboxError(
                f"{raw!r} is outside the folders I may use{where}; allowed: {self.roots_text()}"
            )
        if changing:
            # A start-up file that also holds secrets (.git/config) is refused as what it is
            # to a change: a way to make programs run.
            for candidate in (lexical, real):
                why = self._startup_rule(candidate)
                if why is not None:
                    raise SandboxError(
                        f"{self.display(candidate)} is off limits for changes: {why}"
                    )
        for candidate in (lexical, real):
            rule = self.denied_by(candidate)
            if rule is not None:
                raise SandboxError(
                    f"{self.display(candidate)} is off limits ({rule.source}: {rule.text})"
                )
        if not changing:
            return
        for candidate in (lexical, real):
            why = self.protected_from_changes(candidate)
            if why is not None:
                raise SandboxError(f"{self.display(candidate)} is off limits for changes: {why}")

    def resolve(self, raw: str, *, base: Path | None = None) -> Path:
        """The real path ``raw`` names, after the root and deny checks (it need not exist).

        An existing private (or foreign) regular file with other names (hard links) is refused.
        """
        absolute = self._absolute(raw, base)
        lexical = Path(os.path.normpath(absolute))
        real = _realpath(absolute, raw)
        self._check(raw, lexical, real)
        try:
            info = os.stat(real)
        except OSError:
            return real
        self._refuse_hard_links(real, info)
        return real

    def _refuse_hard_links(self, path: Path, info: os.stat_result) -> None:
        # Media libraries, package caches, git clones and backups hard-link ordinary files;
        # a secret is private to its owner (keys are 0600), so only such a file is refused,
        # and any other name of a protected file in the home folder (a readable ~/.env).
        if not stat.S_ISREG(info.st_mode) or info.st_nlink <= 1:
            return
        if (info.st_dev, info.st_ino) in self._secret_inodes():
            raise SandboxError(
                f"{self.display(path)} is another name (a hard link) of a protected file, "
                "so I do not open it"
            )
        if info.st_mode & 0o077 == 0 or info.st_uid != os.geteuid():
            raise SandboxError(
                f"{self.display(path)} has other names elsewhere ({info.st_nlink} hard links) "
                "and is private or someone else's; one of the names may be a protected file, "
                "so I do not open it"
            )

    def folder(self, raw: str | None) -> Path:
        """An existing folder inside the roots; empty means the first root."""
        folder = self.resolve(raw) if raw and raw.strip() else self.roots[0]
        if not folder.exists():
            raise SandboxError(f"{self.display(folder)} does not exist")
        if not folder.is_dir():
            raise SandboxError(f"{self.display(folder)} is a file, not a folder")
        return folder

    def resolve_target(self, raw: str, *, base: Path | None = None) -> Path:
        """For writing or deleting: the real parent folder joined with the name as given.

        The last component is not followed: a symlink there is itself the target.
        """
        absolute = self._absolute(raw, base)
        controls = control_characters(raw)
        if controls:
            shown = " ".join(_escape(ch) for ch in dict.fromkeys(controls))
            raise SandboxError(
                f"{printable(raw.strip())!r} contains a control character ({shown}); I do not "
                "create, replace or delete files with such names"
            )
        head, name = os.path.split(absolute.rstrip("/") if absolute != "/" else absolute)
        if name in ("", ".", ".."):
            raise SandboxError(f"{raw!r} does not name a file")
        parent = _realpath(head, raw)
        target = parent / name
        lexical = Path(os.path.normpath(absolute))
        self._check(raw, lexical, target, changing=True)
        if target.is_symlink():
            # Replacing or removing a link never touches its target, but don't let a link be
            # the way to name a secret in a question or result either.
            self._check(raw, target, _realpath(target, raw))
        if not parent.is_dir():
            raise SandboxError(f"folder {self.display(parent)} does not exist")
        return target

    def allowed(self, path: Path) -> bool:
        return self.root_of(path) is not None and self.denied_by(path) is None

    def _verify_fd(self, fd: int, shown: str, *, changing: bool = False) -> Path:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        try:
            self._check(shown, real, real, changing=changing)
        except SandboxError:
            log.warning("%s changed between the check and the open; refused", shown)
            raise
        return real

    # ------------------------------------------------------------------ file access

    @contextlib.contextmanager
    def open_file(self, path: Path) -> Iterator[int]:
        """A read-only descriptor of the regular file at real ``path``, checked after opening.

        ``/proc/self/fd/N`` of it names exactly this file for libraries that want a path.
        """
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise SandboxError(f"{self.display(path)} does not exist") from None
        except IsADirectoryError:
            raise SandboxError(f"{self.display(path)} is a folder, not a file") from None
        except PermissionError:
            raise SandboxError(f"permission denied: {self.display(path)}") from None
        except OSError as exc:
            raise SandboxError(f"cannot open {self.display(path)}: {exc.strerror}") from None
        try:
            self._verify_fd(fd, str(path))
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise SandboxError(f"{self.display(path)} is a folder, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise SandboxError(f"{self.display(path)} is not a regular file")
            self._refuse_hard_links(path, info)
            yield fd
        finally:
            os.close(fd)

    def open_path(self, path: Path, *, folder: bool = False) -> int:
        """An ``O_PATH`` descriptor of real ``path``, checked after opening; the caller closes it.

        It pins the object that was checked (for a Landlock rule, or ``fchdir``). A private file
        with other names is refused as for reading. ``FileNotFoundError`` when nothing is there.
        """
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if folder else 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SandboxError(f"cannot open {self.display(path)}: {exc.strerror}") from None
        try:
            self._verify_fd(fd, str(path))
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                raise SandboxError(f"{self.display(path)} changed while it was being checked")
            self._refuse_hard_links(path, info)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def open_folder(self, path: Path) -> Iterator[tuple[int, Path]]:
        """A descriptor of the folder at real ``path`` and where it really is, checked after
        opening: what is listed through it is that folder, whatever its name leads to later."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise SandboxError(f"{self.display(path)} does not exist") from None
        except OSError as exc:
            raise SandboxError(f"cannot open folder {self.display(path)}: {exc.strerror}") from None
        try:
            real = self._verify_fd(fd, str(path))
            yield fd, real
        finally:
            os.close(fd)

    @staticmethod
    def link_target(dir_fd: int, folder: Path, name: str) -> Path | None:
        """Where the symlink ``name`` in the open folder ``folder`` really leads, or None when
        that cannot be told (it changed meanwhile)."""
        try:
            return Path(os.path.realpath(folder / os.readlink(name, dir_fd=dir_fd)))
        except (OSError, ValueError):
            return None

    def read_bytes(self, path: Path, limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of the regular file at real ``path``, and its full size."""
        with self.open_file(path) as fd:
            size = os.fstat(fd).st_size
            chunks = []
            remaining = limit
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks), size

    def _open_parent(self, target: Path) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target.parent, flags)
        except OSError as exc:
            raise SandboxError(
                f"cannot open folder {self.display(target.parent)}: {exc.strerror}"
            ) from None
        try:
            real_parent = self._verify_fd(fd, str(target.parent), changing=True)
            final = real_parent / target.name
            self._check(str(target), final, final, changing=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_bytes(self, target: Path, data: bytes) -> Written:
        """Atomically replace or create ``target`` (from :meth:`resolve_target`) with ``data``.

        A folder at ``target`` is never touched. A replaced file keeps its permissions except
        the execute bits: new content in a script the user runs would run unseen.
        """
        dir_fd = self._open_parent(target)
        temporary = f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.part"
        created = False
        try:
            try:
                existing = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                raise SandboxError(f"{self.display(target)} is a folder")
            mode = 0o644
            if existing is not None and stat.S_ISREG(existing.st_mode):
                mode = stat.S_IMODE(existing.st_mode)
            executable_bits = mode & EXECUTE_BITS
            mode &= ~(EXECUTE_BITS | stat.S_ISUID | stat.S_ISGID)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, mode, dir_fd=dir_fd)
            created = True
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            # Not after the call's time limit: the model has been told it did not finish.
            with current_call().committing():
                os.replace(temporary, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            created = False
            return Written(replaced=existing is not None, made_unexecutable=bool(executable_bits))
        except OSError as exc:
            raise SandboxError(f"cannot write {self.display(target)}: {exc.strerror}") from None
        finally:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=dir_fd)
            os.close(dir_fd)

    def delete_file(self, target: Path) -> int:
        """Remove the file (or symlink) ``target``; folders are refused. Returns its size."""
        dir_fd = self._open_parent(target)
        try:
            try:
                info = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise SandboxError(f"{self.display(target)} does not exist") from None
            if stat.S_ISDIR(info.st_mode):
                raise SandboxError(f"{self.display(target)} is a folder; only files are deleted")
            with current_call().committing():
                os.unlink(target.name, dir_fd=dir_fd)
            return info.st_size
        except OSError as exc:
            raise SandboxError(f"cannot delete {self.display(target)}: {exc.strerror}") from None
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------------ walking

    def walk(self, top: Path, *, max_entries: int = 200_000, budget_s: float = 5.0) -> Walk:
        """Every entry under the real folder ``top``; see :class:`Walk`."""
        return Walk(self, top, max_entries=max_entries, budget_s=budget_s)


class Walk:
    """Entries under a folder, never following symlinks, skipping denied ones.

    Iterating yields ``(folder, entry)`` pairs: every entry of a folder, then each subfolder in
    turn. It stops quietly after ``max_entries`` entries or ``budget_s`` seconds, or when the
    tool call it runs in is past its time limit; :attr:`complete` then is False, so results
    can say so.

    The walk works on descriptors: the top folder is opened and checked where it really is,
    and every subfolder is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so
    a folder swapped for a symlink while the walk runs is skipped, never followed. An entry's
    ``stat`` is taken relative to its folder's descriptor too (use it while iterating).
    """

    MAX_DEPTH = 256

    def __init__(self, sandbox: Sandbox, top: Path, *, max_entries: int, budget_s: float) -> None:
        self.sandbox = sandbox
        self.top = top
        self.max_entries = max_entries
        self.budget_s = budget_s
        self.complete = True
        self.entries_seen = 0

    def __iter__(self) -> Iterator[tuple[Path, os.DirEntry[str]]]:
        deadline = time.monotonic() + self.budget_s
        with self.sandbox.open_folder(self.top) as (fd, _real), contextlib.suppress(_WalkStopped):
            yield from self._folder(self.top, fd, 0, deadline, current_call())

    def _folder(
        self, folder: Path, fd: int, depth: int, deadline: float, call: CallContext
    ) -> Iterator[tuple[Path, os.DirEntry[str]]]:
        if call.cancelled():
            self.complete = False
            raise _WalkStopped
        try:
            with os.scandir(fd) as entries:
                listing = list(entries)
        except OSError:
            return
        subfolders = []
        for entry in listing:
            self.entries_seen += 1
            if (
                self.entries_seen > self.max_entries
                or time.monotonic() > deadline
                or call.cancelled()
            ):
                self.complete = False
                raise _WalkStopped
            if self.sandbox.denied_at((folder / entry.name).parts) is not None:
                continue
            yield folder, entry
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.name)
            except OSError:
                continue
        for name in subfolders:
            if depth >= self.MAX_DEPTH:
                self.complete = False
                return
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                child = os.open(name, flags, dir_fd=fd)
            except OSError:
                continue  # gone, or replaced by a symlink since it was listed: not followed
            try:
                yield from self._folder(folder / name, child, depth + 1, deadline, call)
            finally:
                os.close(child)


class _WalkStopped(Exception):
    """Raised inside a walk to unwind it at a limit."""


__all__ = [
    "SECRET_PATTERNS",
    "STARTUP_PATTERNS",
    "Sandbox",
    "SandboxError",
    "Walk",
    "Written",
    "control_characters",
    "human_size",
    "plural",
    "printable",
    "printable_lines",
]
