"""Process control of the study driver: the notebook processes it started, ended with it however it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

__all__ = ["Interrupted", "Children"]

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

    def run(self, args: list[str], **options) -> int:
        with self._lock:
            if self.stopping.is_set():
                raise Interrupted(signal.SIGTERM)
            proc = subprocess.Popen(args, start_new_session=True, **options)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop(self, grace_s: float = 10.0) -> None:
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

