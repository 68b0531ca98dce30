"""One writer per folder: an exclusive lock that names its holder.

A study driver locks its study folder, a training run its run folder, so that a second driver or notebook on
the same folder stops at once, with a message naming the holder (pid, host, start time, command), instead of
training side by side and resetting files the first is writing.

The lock is an advisory ``flock`` on a small file beside the folder (``.<name>.lock``), so the kernel releases
it when its holder dies, however it dies: a lock left by a dead process is never mistaken for a live one (its
file then only says who held it last, and is taken over). The holder's description is written into the file
after the lock is taken. POSIX only (``fcntl``); elsewhere locking is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["FolderLock", "LockedError", "lock_path"]

logger = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Another live process holds the lock of the folder; the message names it."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it, so the folder's own contents stay untouched."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not yet written its details"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            f" ({holder.get('command', '?')})")


class FolderLock:
    """Exclusive lock of ``folder`` for the lifetime of a ``with`` block (or :meth:`acquire`/:meth:`release`).

    ``purpose`` is recorded for the message another process sees (``"study driver"``, ``"training run"``).
    Raises :class:`LockedError` at once when another live process holds it, and ``PermissionError`` naming the
    file when the folder cannot be written.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str) -> None:
        self.folder = Path(folder)
        self.path = lock_path(self.folder)
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no fcntl on this platform: %s is not locked against a second writer", self.folder)
            return self
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise PermissionError(f"cannot create the lock file {self.path}: {err.strerror}; "
                                      f"the folder {self.path.parent} must be writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise LockedError(
                    f"{self.folder} is in use by another {holder.get('purpose', 'process')}: {_describe(holder)}. "
                    f"Wait for it to finish or stop it; the lock ({self.path}) is released when it exits"
                ) from None
            # The file may have been replaced between open and lock (its holder released and removed it):
            # then this lock guards nothing, so take the new file's lock instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous and previous.get("pid") != os.getpid():
            logger.info("taking over the lock of %s left by %s (no longer running)", self.folder, _describe(previous))
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is None:
            return
        # Removed while still held, so no one can lock a file that is about to disappear unnoticed (acquire
        # checks the inode after locking).
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
