"""Temporaries of the atomic writer that record their owner, and the removal of stale ones.

Every output is written under a hidden temporary name next to it (``.NAME.<random>.tmp``, a
file or a folder) and renamed into place at the end. A process killed with ``SIGKILL`` (or a
``torchrun`` rank terminated because another rank died) cannot remove its temporary, which may
hold gigabytes of partial shards. So each temporary has an **owner record** beside it,
``.NAME.<random>.tmp.owner``: a small JSON file (``pid``, ``host``, ``created``) on which every
process writing into the temporary holds a shared ``flock`` until it has renamed or removed the
temporary. The kernel drops the lock when a process dies, however it dies.

Before writing, the writer calls :func:`remove_stale_temporaries` on the output path: a
temporary of the same output whose owner record can be locked exclusively (no process holds
it) and names this host is removed, with its record, and a warning names it and its size.
Records of another host are left alone (a lock on a network file system does not tell whether
a process on another machine is alive), as are temporaries without a record (written by an
older version; they are named in an info message) and records still being written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Temporary", "remove_stale_temporaries"]

logger = logging.getLogger(__name__)

_OWNER_SUFFIX = ".owner"

#: An owner record still empty after this many seconds was left by a process killed while it
#: was creating it (it writes the record right after taking the lock).
_EMPTY_GRACE_S = 60.0

if sys.platform != "win32":
    import fcntl

    def _lock(fd: int, exclusive: bool, wait: bool) -> bool:
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not wait:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except (BlockingIOError, PermissionError):
            return False
        return True

else:  # pragma: no cover - no Windows CI

    def _lock(fd: int, exclusive: bool, wait: bool) -> bool:
        return not exclusive  # without flock a record is never taken for stale


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Temporary:
    """A temporary file or folder next to an output, with its owner record locked.

    Create one with :meth:`create` (the process that makes the temporary) or :meth:`join`
    (another process writing into it, such as a ``torchrun`` rank); call :meth:`release`
    once the temporary has been renamed into place or removed.

    Attributes:
        path: The temporary (``.NAME.<random>.tmp``).
        owner: Its owner record (``path`` + ``.owner``).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.owner = path.with_name(path.name + _OWNER_SUFFIX)
        self._fd: int | None = fd

    @classmethod
    def create(cls, final: Path, *, folder: bool) -> Temporary:
        """Make a temporary for ``final`` (an empty file, or a folder), owned by this process.

        Args:
            final: The output path (its folder is created if needed).
            folder: Make a folder (sharded output) rather than a file.

        Returns:
            The temporary, its owner record written and locked.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd, owner_name = tempfile.mkstemp(
                prefix=f".{final.name}.", suffix=".tmp" + _OWNER_SUFFIX, dir=final.parent
            )
            _lock(fd, exclusive=False, wait=True)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}
            os.write(fd, json.dumps(record).encode("utf-8"))
            path = Path(owner_name[: -len(_OWNER_SUFFIX)])
            try:
                if folder:
                    path.mkdir()
                else:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:  # pragma: no cover - a foreign file of the same name
                os.close(fd)
                os.unlink(owner_name)
                continue
            return cls(path, fd)

    @classmethod
    def join(cls, path: Path) -> Temporary:
        """Hold the owner record of a temporary another process created.

        Args:
            path: The temporary.

        Returns:
            A handle that keeps the temporary from being taken for stale until released.
        """
        owner = path.with_name(path.name + _OWNER_SUFFIX)
        fd = os.open(owner, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        _lock(fd, exclusive=False, wait=True)
        return cls(path, fd)

    def release(self, *, remove_record: bool = True) -> None:
        """Drop the lock (and remove the owner record: the temporary is gone or in place).

        Args:
            remove_record: Remove the record file (its creator does; a process that only
                joined leaves that to the creator).
        """
        if remove_record:
            with contextlib.suppress(FileNotFoundError):
                self.owner.unlink()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries of output ``final`` whose owner is gone (see the module notes).

    Args:
        final: The output path.

    Returns:
        The temporaries removed.
    """
    parent = final.parent
    if not parent.is_dir():
        return []
    prefix = f".{final.name}."
    host = socket.gethostname()
    removed: list[Path] = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:  # pragma: no cover - an unreadable folder: nothing to clean
        return []
    names = set(entries)
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        if entry.endswith(".tmp") and entry + _OWNER_SUFFIX not in names:
            logger.info(
                "%s has no owner record (an older writer's temporary?); it is left alone: "
                "remove it by hand if no process is writing it",
                parent / entry,
            )
            continue
        if not entry.endswith(".tmp" + _OWNER_SUFFIX):
            continue
        owner = parent / entry
        temp = parent / entry[: -len(_OWNER_SUFFIX)]
        try:
            fd = os.open(owner, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if not _lock(fd, exclusive=True, wait=False):
                continue  # its owner is alive
            raw = os.read(fd, 4096)
            try:
                record = json.loads(raw.decode("utf-8"))
                pid, where = int(record["pid"]), str(record["host"])
            except (ValueError, KeyError, TypeError):
                age = time.time() - os.fstat(fd).st_mtime
                if raw or age < _EMPTY_GRACE_S:
                    continue  # being written, or not ours to judge
                pid, where = -1, host
            if where != host:
                logger.info(
                    "%s belongs to pid %d on host %r; it is left alone (remove it by hand if "
                    "that process is gone)",
                    temp,
                    pid,
                    where,
                )
                continue
            size = _size(temp) if temp.exists() else 0
            _remove(temp)
            with contextlib.suppress(FileNotFoundError):
                owner.unlink()
            removed.append(temp)
            logger.warning(
                "removed the stale temporary %s (%d bytes) of an interrupted write (pid %d on "
                "this host is gone)",
                temp,
                size,
                pid,
            )
        finally:
            os.close(fd)
    return removed
