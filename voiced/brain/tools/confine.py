"""Kernel confinement for ``run_command``: Landlock, applied in the child just before ``exec``.

:func:`landlock_abi` says what this kernel offers (0: nothing). :func:`confine_command` turns
a command line into the one to start: this file run as a script by the same Python, with the
checked operands as open descriptors. In the child, that script sets the resource limits,
``PR_SET_NO_NEW_PRIVS`` and a Landlock ruleset, changes into the working folder by its
descriptor, and ``exec``\\ s the command. The ruleset allows:

* reading and running the system (``/usr``, ``/bin``, ``/lib*``, ``/etc``, ``/opt``,
  ``/sys``, the logs) and the few ``/proc`` files ``df``, ``free`` and ``uptime`` read (its
  own ``/proc/self``, not other processes');
* reading exactly the operand files the sandbox checked (the inodes, not their names);
* listing (not reading files in) the operand folders and the working folder, and below them;
* nothing else: no writing anywhere, no TCP, no signals or abstract sockets outside.

The rules bind the objects the parent opened and checked, so a folder swapped for a symlink
after the check leads the command to something it may not open (``Permission denied``).

This file imports only the standard library and runs with ``python -I -S``, so that a
confined call costs one small interpreter start. The daemon itself is never confined.
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
import sys
from collections.abc import Sequence

# Syscall numbers (the same on x86_64 and arm64: generic table).
_CREATE_RULESET = 444
_ADD_RULE = 445
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, by the ABI version that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
_ABI1_FS = (1 << 13) - 1  # execute .. make_sym
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_NET_ALL = (1 << 0) | (1 << 1)  # bind_tcp, connect_tcp: ABI 4
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals: ABI 6
# Rights that make sense on a file (a rule for a file with others is EINVAL).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | _TRUNCATE | _IOCTL_DEV

# What every command may read (and run from): the system, not the user's files. Logs and
# /sys are there for allow-listed commands such as journalctl, lsblk or sensors.
SYSTEM_READ = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/sys",
    "/var/log",
    "/run/log",
    "/run/udev",
)
# Single /proc files the default commands read (df, free, uptime); /proc/self is added too.
# Not all of /proc: another process's environ or cmdline (the daemon's) may hold secrets, so
# commands that read other processes (ps, top) see only themselves.
PROC_FILES = (
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/filesystems",
    "/proc/sys/kernel/osrelease",
    "/run/utmp",
    "/var/run/utmp",
    "/dev/null",
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# Caches by hand: functools costs the helper's every start a few milliseconds.
_cached: dict[str, object] = {}


def _libc() -> ctypes.CDLL:
    if "libc" not in _cached:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _cached["libc"] = libc
    return _cached["libc"]  # type: ignore[return-value]


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when there is none (old or disabled)."""
    if "abi" not in _cached:
        version = 0
        if sys.platform.startswith("linux"):
            try:
                version = _libc().syscall(
                    ctypes.c_long(_CREATE_RULESET),
                    None,
                    ctypes.c_size_t(0),
                    _CREATE_RULESET_VERSION,
                )
            except (OSError, AttributeError):
                version = 0
        _cached["abi"] = max(0, int(version))
    return _cached["abi"]  # type: ignore[return-value]


def _handled_fs(abi: int) -> int:
    rights = _ABI1_FS
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def restrict_self(
    read_files: Sequence[int], list_dirs: Sequence[int], system: Sequence[int]
) -> int:
    """Confine this thread and its future children; returns the ABI used. Needs ABI >= 1.

    ``read_files``: descriptors of files that may be read; ``list_dirs``: folders that may be
    listed (with everything below); ``system``: files or folders that may be read and run.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(38, "Landlock is not available on this kernel")
    libc = _libc()
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, _NET_ALL if abi >= 4 else 0, _SCOPE_ALL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _check(
        libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "landlock_create_ruleset",
    )
    try:
        rules = [(fd, READ_FILE) for fd in read_files]
        rules += [(fd, READ_DIR) for fd in list_dirs]
        rules += [(fd, EXECUTE | READ_FILE | READ_DIR) for fd in system]
        for fd, wanted in rules:
            allowed = wanted & handled
            if not _is_dir(fd):
                allowed &= _FILE_RIGHTS
            if not allowed:
                continue
            beneath = _PathBeneathAttr(allowed, fd)
            _check(
                libc.syscall(
                    ctypes.c_long(_ADD_RULE),
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    0,
                ),
                "landlock_add_rule",
            )
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(
            libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), 0),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)
    return abi


def _is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _open_path(path: str) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None


class Confinement:
    """What the child may touch: descriptors opened (and checked) by the parent, and limits.

    A plain class (no dataclass, no json): the helper imports as little as it can, since every
    confined call pays for its start.
    """

    def __init__(
        self,
        read_files: list[int] | None = None,
        list_dirs: list[int] | None = None,
        cwd: int = -1,
        cpu_s: int = 5,
        memory_bytes: int = 512 * 1024 * 1024,
        nice: int = 10,
    ) -> None:
        self.read_files = list(read_files or [])
        self.list_dirs = list(list_dirs or [])
        self.cwd = cwd
        self.cpu_s = cpu_s
        self.memory_bytes = memory_bytes
        self.nice = nice

    def fds(self) -> list[int]:
        return [*self.read_files, *self.list_dirs, *([self.cwd] if self.cwd >= 0 else [])]

    def encode(self) -> str:
        """``files=3,4;dirs=5;cwd=6;cpu=5;memory=536870912;nice=10``, for the helper's argv."""
        fields = {
            "files": ",".join(map(str, self.read_files)),
            "dirs": ",".join(map(str, self.list_dirs)),
            "cwd": str(self.cwd),
            "cpu": str(self.cpu_s),
            "memory": str(self.memory_bytes),
            "nice": str(self.nice),
        }
        return ";".join(f"{key}={value}" for key, value in fields.items())

    @classmethod
    def decode(cls, text: str) -> Confinement:
        fields = dict(item.split("=", 1) for item in text.split(";"))

        def numbers(key: str) -> list[int]:
            return [int(value) for value in fields[key].split(",") if value]

        return cls(
            numbers("files"),
            numbers("dirs"),
            int(fields["cwd"]),
            int(fields["cpu"]),
            int(fields["memory"]),
            int(fields["nice"]),
        )


def confine_command(confinement: Confinement, executable: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` (``executable``) confined; pass ``fds()`` along."""
    helper = os.path.abspath(__file__)
    return [sys.executable, "-I", "-S", helper, confinement.encode(), executable, *argv]


def probe(timeout_s: float = 10.0) -> str:
    """Start a confined ``true``: what confines ``run_command`` here, or OSError why not."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError(38, "this kernel has no Landlock (Linux 5.13+ with landlock in lsm=)")
    import shutil
    import subprocess

    true = shutil.which("true", path="/usr/bin:/bin")
    if true is None:
        raise OSError(2, "no `true` program to try it with")
    done = subprocess.run(
        confine_command(Confinement(), true, ["true"]),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={"PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise OSError(1, done.stderr.strip() or f"exit status {done.returncode}")
    return f"run_command runs confined by Landlock (ABI {abi})"


def limit_resources(cpu_s: int, memory_bytes: int, nice: int) -> None:
    """CPU seconds, address space, no file writing, no core dumps, a lower priority."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(nice)


def main(args: Sequence[str]) -> int:
    """In the child: limits, Landlock, working folder, then ``exec``; 126 if that fails."""
    try:
        spec = Confinement.decode(args[0])
        executable, argv = args[1], list(args[2:])
        system = [fd for fd in map(_open_path, SYSTEM_READ) if fd is not None]
        system += [fd for fd in map(_open_path, PROC_FILES) if fd is not None]
        self_proc = _open_path(f"/proc/{os.getpid()}")
        if self_proc is not None:
            system.append(self_proc)
        if spec.cwd >= 0:
            os.fchdir(spec.cwd)
        restrict_self(spec.read_files, spec.fds()[len(spec.read_files) :], system)
        for fd in {*spec.fds(), *system}:
            os.close(fd)
        limit_resources(spec.cpu_s, spec.memory_bytes, spec.nice)
        os.execv(executable, argv)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        sys.stderr.write(f"voiced: the command was not started: cannot confine it: {exc}\n")
        return 126
    return 126  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
