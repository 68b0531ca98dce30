"""Process control of the study driver: the notebook processes it started, ended with it however it stops.

Three layers, so that no training process outlives the study's command:

- a stop (SIGTERM, SIGINT) ends every notebook process and its descendants (:meth:`Children.stop`);
- each notebook process gets Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``, through ctypes): when the
  driver dies, even by SIGKILL, the kernel kills papermill, and papermill's kernel, which polls for its parent
  (ipykernel's parent poller), exits within a second;
- the driver started by ``run_all.sh`` asks for SIGTERM when ``run_all.sh`` dies (:func:`stop_with_parent`), so a
  ``kill -9`` of ``run_all.sh`` becomes an ordinary stop of the driver.

Elsewhere than Linux the parent-death signal is not available and only the first layer applies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["Interrupted", "Children", "stop_with_parent", "PARENT_ENV"]

#: ``run_all.sh`` puts its pid here; the driver then stops when that process dies (:func:`stop_with_parent`).
PARENT_ENV = "NHL_STOP_WITH_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None off Linux (or where libc cannot be loaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _parent_death_signal(prctl: Callable[..., int] | None, signum: int, parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for the child of ``parent``: ``signum`` when the parent dies, at once if it already has."""
    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: the signal would never come
            os.kill(os.getpid(), signum)
    return preexec


def stop_with_parent(environ: dict[str, str] | None = None) -> bool:
    """Ask for SIGTERM when the process named by ``$NHL_STOP_WITH_PID`` (``run_all.sh``) dies; True when armed.

    Only when that process is the parent (``run_all.sh`` sets the variable for the driver it starts): a driver
    run from a terminal or under ``nohup`` is left alone. The variable is removed so that no child inherits it.
    """
    environ = os.environ if environ is None else environ
    wanted = environ.pop(PARENT_ENV, "").strip()
    if not wanted.isdigit():
        return False
    parent = int(wanted)
    if os.getppid() != parent:  # already gone (or not our parent): stop now rather than run orphaned
        if not _alive(parent):
            os.kill(os.getpid(), signal.SIGTERM)
        return False
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # it died between the check and prctl
        os.kill(os.getpid(), signal.SIGTERM)
    return True

class Interrupted(Exception):
    """The driver was asked to stop (SIGTERM or SIGINT); its notebook processes have been ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class Children:
    """The notebook processes a driver started, so that a stop ends them and the kernels they started.

    papermill starts its kernel in a session of its own (jupyter_client), so ending papermill's process group
    is not enough: the descendants are collected (psutil, a dependency of ipykernel) and ended too.
    """

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it
        self.stopping = threading.Event()
        self._prctl = _prctl()  # loaded here, not in the forked child

    def run(self, args: list[str], **options) -> int:
        with self._lock:
            if self.stopping.is_set():
                raise Interrupted(signal.SIGTERM)
            # The parent-death signal is bound to the forking thread, which waits for the process below.
            proc = subprocess.Popen(args, start_new_session=True,
                                    preexec_fn=_parent_death_signal(self._prctl, signal.SIGKILL, os.getpid()),
                                    **options)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop(self, grace_s: float = 3.0) -> None:
        """End every process started here and its descendants: SIGTERM, then SIGKILL after ``grace_s``."""
        self.stopping.set()
        with self._lock:
            procs = list(self._procs)
        victims = []
        for proc in procs:
            victims += _descendants(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in victims:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(pid) for pid in (*victims, *(p.pid for p in procs))):
            time.sleep(0.1)
            for proc in procs:
                proc.poll()
        for pid in (*victims, *(p.pid for p in procs)):
            _signal(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # the kernel still exits once papermill is gone (ipykernel's parent poller)
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        return False
    except Exception:  # noqa: BLE001 - it vanished between the two calls
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass

