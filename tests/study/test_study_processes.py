"""Issue 25, class 3 (processes): a stopped study leaves nothing running. Each test counts, afterwards, the
processes that carry a tag in their environment (every descendant inherits it, reparented or not)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.training.test_bad_inputs import _cmdline, _tiny_profile

ROOT = Path(__file__).resolve().parents[2]
psutil = pytest.importorskip("psutil")


def _tagged(tag: str) -> list:
    """Live processes whose environment holds ``NHL_TEST_TAG=tag``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("NHL_TEST_TAG") == tag:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _wait_until_none(tag: str, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while (left := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _env(tag: str) -> dict:
    return {**os.environ, "NHL_TEST_TAG": tag, "PYTHONPATH": str(ROOT)}


DRIVER = textwrap.dedent("""\
    import sys, threading
    from nhllib.study.processes import Children
    children = Children()
    for _ in range(2):  # two 'notebooks', each from a worker thread as with --jobs 2
        threading.Thread(target=children.run, args=(["bash", "-c", "sleep 60 & wait"],)).start()
    print("started", flush=True)
    threading.Event().wait()
    """)


def test_notebook_processes_die_when_the_driver_is_killed_with_sigkill():
    tag = uuid.uuid4().hex
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=_env(tag), stdout=subprocess.PIPE, text=True)
    assert driver.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 20
    while len(_tagged(tag)) < 5 and time.monotonic() < deadline:  # the driver, 2 bash, 2 sleep
        time.sleep(0.1)
    children = [p for p in _tagged(tag) if p.pid != driver.pid and _cmdline(p).startswith("bash")]
    assert len(children) == 2
    driver.kill()  # SIGKILL: no handler runs
    driver.wait()
    for child in children:  # the parent-death signal ends each notebook process at once
        child.wait(5)
    # papermill's kernel would now exit by its parent poller; a plain sleep has none, so it is ended here
    for proc in _tagged(tag):
        proc.kill()


def test_the_driver_stops_when_run_all_sh_dies(tmp_path):
    """stop_with_parent: a kill -9 of the parent (run_all.sh) becomes a SIGTERM to the driver."""
    tag = uuid.uuid4().hex
    marker = tmp_path / "stopped"
    child = textwrap.dedent(f"""\
        import os, signal, sys, time
        from pathlib import Path
        from nhllib.study.processes import PARENT_ENV, stop_with_parent
        signal.signal(signal.SIGTERM, lambda *_: (Path({str(marker)!r}).write_text("SIGTERM"), sys.exit(143)))
        assert stop_with_parent() and PARENT_ENV not in os.environ
        print("armed", flush=True)
        time.sleep(60)
        """)
    parent = textwrap.dedent(f"""\
        import os, subprocess, sys, time
        env = {{**os.environ, "NHL_STOP_WITH_PID": str(os.getpid())}}
        subprocess.Popen([sys.executable, "-c", {child!r}], env=env)
        time.sleep(60)
        """)
    wrapper = subprocess.Popen([sys.executable, "-c", parent], env=_env(tag), stdout=subprocess.PIPE, text=True)
    assert wrapper.stdout.readline().strip() == "armed"
    wrapper.kill()
    wrapper.wait()
    assert not _wait_until_none(tag, 10)
    assert marker.read_text() == "SIGTERM"


def test_a_driver_not_started_by_run_all_sh_is_left_alone():
    from nhllib.study.processes import stop_with_parent

    assert stop_with_parent({}) is False  # no variable: a terminal or nohup run keeps its own lifetime


def _start_run_all(tmp_path: Path, tag: str):
    profile = _tiny_profile(tmp_path, epochs=50)
    env = {**_env(tag), "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "NHL_JOBS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    wrapper = subprocess.Popen([str(ROOT / "run_all.sh"), str(profile), "--results", "res"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the training notebook's kernel runs
        if any("ipykernel" in _cmdline(p) for p in _tagged(tag)):
            return wrapper
        time.sleep(0.5)
    os.killpg(wrapper.pid, signal.SIGKILL)
    pytest.fail("the training notebook never started")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9 run_all.sh", "Ctrl-C"])
def test_a_stopped_run_all_leaves_no_training_process(tmp_path, how):
    tag = uuid.uuid4().hex
    wrapper = _start_run_all(tmp_path, tag)
    before = len(_tagged(tag))  # run_all.sh, the driver, papermill, the kernel (and helpers)
    try:
        if how == "Ctrl-C":
            os.killpg(wrapper.pid, signal.SIGINT)  # what the terminal does: the foreground process group
        else:
            wrapper.kill()
        wrapper.wait(30)
        left = _wait_until_none(tag, 8)
        assert not left, [(p.pid, _cmdline(p)) for p in left]
        assert before >= 4
    finally:
        for proc in _tagged(tag):
            proc.kill()
