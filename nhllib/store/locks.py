"""One writer per folder: an exclusive lock that names its holder.

A study driver locks its study folder, a training run its run folder, so that a second driver or notebook on
the same folder stops at once, with a message naming the holder (pid, host, start time, command), instead of
training side by side and resetting files the first is writing.

The lock is an advisory ``flock`` on the folder itself (opened as a directory, its identity checked after
locking), so the kernel releases it when its holder dies, however it dies: a lock left by a dead process is never
mistaken for a live one. The holder's details are written to a small file beside the folder (``.<name>.lock``),
opened without following a link and only if a regular file, so a link placed there cannot turn the lock against
another file; deleting that file takes nobody's lock away. POSIX only (``fcntl``); elsewhere locking is skipped
with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
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
        self._fd: int | None = None  # the folder, locked
        self._info_fd: int | None = None  # the details file

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no fcntl on this platform: %s is not locked against a second writer", self.folder)
            return self
        if not str(self.folder).strip() or not self.folder.name.strip():
            raise ValueError(f"the folder to lock must be a non-blank path, got {str(self.folder)!r}")
        while True:
            fd = self._open_folder()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._read_holder()
                raise LockedError(
                    f"{self.folder} is in use by another {holder.get('purpose', 'process')}: {_describe(holder)}. "
                    f"Wait for it to finish or stop it; the lock is released when it exits"
                ) from None
            # The folder may have been replaced (renamed away, made anew) between open and lock: then this lock
            # guards nothing, so lock the folder now at the path instead. Compared by device and inode.
            if self._same_file(fd, self.folder, follow=True):
                break
            os.close(fd)
        try:
            previous = self._read_holder()
            if previous and previous.get("pid") != os.getpid():
                logger.info("taking over the lock of %s left by %s (no longer running)", self.folder,
                            _describe(previous))
            self._info_fd = self._write_holder()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _open_folder(self) -> int:
        """The folder itself, opened as a directory: the lock is held on it, so deleting the details file beside
        it (or anything else but the folder) lets no second writer in."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError as err:
            raise PermissionError(f"cannot create or open the folder {self.folder} to lock it: {err.strerror}; "
                                  f"the folder {self.folder.parent} must be writable") from None

    def _open_details(self, flags: int) -> int:
        """The details file, never through a link (``O_NOFOLLOW``) and only if a regular file: a link there would
        make the holder's details overwrite whatever it points to."""
        try:
            fd = os.open(self.path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise LockedError(f"the lock file {self.path} is a symbolic link, which a lock file never is: remove "
                                  f"it (rm {self.path}) and retry; nothing was written through it") from None
            if err.errno == errno.EISDIR:
                raise LockedError(f"the lock file {self.path} is not a regular file: remove it and retry") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockedError(f"the lock file {self.path} is not a regular file: remove it and retry")
        return fd

    def _write_holder(self) -> int:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:300]}
        try:
            fd = self._open_details(os.O_RDWR | os.O_CREAT)
        except LockedError:
            raise
        except OSError as err:
            raise PermissionError(f"cannot create the lock file {self.path}: {err.strerror}; "
                                  f"the folder {self.path.parent} must be writable") from None
        os.ftruncate(fd, 0)  # this descriptor's own regular file, never a link's target
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return fd

    def _read_holder(self) -> dict[str, Any]:
        try:
            fd = self._open_details(os.O_RDONLY)
        except (OSError, LockedError):
            return {}
        try:
            text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}
        finally:
            os.close(fd)

    @staticmethod
    def _same_file(fd: int, path: Path, follow: bool) -> bool:
        try:
            at_path = os.stat(path) if follow else os.lstat(path)
        except OSError:
            return False
        mine = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is None:
            return
        # The details file goes first, while the lock is still held, and only if it is still the one written here.
        if self._info_fd is not None:
            if self._same_file(self._info_fd, self.path, follow=False):
                try:
                    self.path.unlink()
                except OSError:
                    pass
            os.close(self._info_fd)
            self._info_fd = None
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
