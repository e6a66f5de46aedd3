"""One process at a time per run: an exclusive lock on ``runs/<run>/.lock``.

Two processes writing one run would both train every seed and then trip over each other's
files. The runner takes the run's lock before its first notebook and keeps it until the last
one ends; a notebook executed on its own (JupyterLab) takes it in ``start_stage`` and keeps
it while its kernel lives. A second process asking for a held lock is refused at once with a
:class:`RunLocked` error that names the holder (its pid, host, command and start time).

The lock is an ``fcntl.flock`` on an open file: the operating system releases it when the
holder exits, however it exits (``kill -9`` included), so there is never a stale lock to
remove by hand. ``.lock`` itself stays, holding the last holder's description.

The kernels a runner starts are told (:data:`HOLDER_ENV`) that their parent holds the lock.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import sys
from pathlib import Path

from . import paths

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"
#: set by the runner for the kernels it starts: "<pid>:<lock path>" of the lock it holds
HOLDER_ENV = "PRUNECXR_LOCK_HOLDER"

#: lock path -> open file descriptor, for the locks this process holds
_held: dict[str, int] = {}


class RunLocked(RuntimeError):
    """Another process holds the run's lock."""


def lock_path(run: str) -> Path:
    return paths.run_paths(run).root / LOCK_FILE


def describe_holder(path: Path) -> str:
    """The holder recorded in a lock file, in words."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"process {info.get('pid')} on {info.get('host')} "
            f"({info.get('command')}, since {info.get('started')})"
        )
    except (OSError, ValueError):
        return "another process"


def _inherited(path: Path) -> bool:
    """Whether the runner that started this kernel holds ``path`` for it."""
    value = os.environ.get(HOLDER_ENV, "")
    pid, _, held = value.partition(":")
    if not pid.isdigit() or held != str(path):
        return False
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(info.get("pid")) == pid and _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def acquire(run: str) -> Path | None:
    """Hold the lock of ``run`` for the rest of this process (or until :func:`release`).

    Returns the lock file, or None where the lock is inherited from the runner or locking is
    not available. Taking a lock this process already holds is a no-op.

    Raises
    ------
    RunLocked
        When another process holds it, naming that process.
    """
    path = lock_path(run)
    if fcntl is None or str(path) in _held or _inherited(path):
        return None if fcntl is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLocked(
                f"run {run!r} is in use by {describe_holder(path)}; wait for it to finish, "
                f"or use another run name (--run NAME)"
            ) from None
        raise
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv)[:300] or sys.executable,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
    _held[str(path)] = fd
    return path


def release(run: str) -> None:
    """Release the lock of ``run`` if this process holds it."""
    fd = _held.pop(str(lock_path(run)), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holder_env(run: str) -> dict[str, str]:
    """The environment entry that tells a kernel started now that this process holds the
    lock of ``run``."""
    return {HOLDER_ENV: f"{os.getpid()}:{lock_path(run)}"}
