"""Execution of a study: each run's training notebook (or torchrun), then the analysis notebooks and the course
kit, locked, resumable, with the analysis published as a set."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhllib.store.locks import FolderLock
from nhllib.store.results import COMPLETE_MARKER, RunStore, atomic_write_text
from nhllib.study.executors import LocalExecutor
from nhllib.study.preflight import analysis_is_current
from nhllib.study.processes import Children, Interrupted
from nhllib.study.profile import (ANALYSIS_NOTEBOOKS, NOTEBOOKS_DIR, PROJECT_ROOT, STAGED_NOTEBOOKS, TRAIN_NOTEBOOK,
                                  Profile)
from nhllib.study.scoreboard import judge_scoreboard
from nhllib.training.config import RunConfig

__all__ = ["run_study", "train_one", "TrainTask", "AnalysisTask", "analyse_one", "analyse_all", "check_exercises",
           "NotebookFailed", "TorchrunFailed", "ANALYSIS_MARKER", "EXERCISES_NOTEBOOK"]

logger = logging.getLogger(__name__)

ANALYSIS_MARKER = "ANALYSIS_COMPLETE"
EXERCISES_NOTEBOOK = "05_exercises.ipynb"
#: The course kit's two executions: (name, description, notebook parameters, what judge_scoreboard expects).
EXERCISE_CHECKS = (("solutions", "with the solutions", {"use_solutions": True}, "pass"),
                   ("blank", "with blank answers", {"use_solutions": False}, "blank"))


class NotebookFailed(RuntimeError):
    """papermill exited non-zero; the message holds the last line of its log."""


class TorchrunFailed(RuntimeError):
    """A data-parallel run (torchrun) exited non-zero; the message names its log."""


def _execute(notebook: str, output: Path, parameters: dict[str, Any], cwd: Path, threads: int | None,
             children: Children | None = None) -> None:
    """Run one notebook through the papermill CLI in a subprocess.

    A subprocess keeps every run's kernel noise in ``<output>.log`` (beside the executed notebook) instead of
    the terminal, and lets several runs share the machine (``threads`` torch threads each).
    """
    import yaml

    output.parent.mkdir(parents=True, exist_ok=True)
    params_file = output.with_suffix(".parameters.yaml")
    params_file.write_text(yaml.safe_dump(parameters, sort_keys=False))
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log = output.with_suffix(".log")
    with open(log, "w") as handle:
        # Paths relative to the project where possible: papermill records them in the executed notebook.
        returncode = (children or Children()).run(
            [sys.executable, "-m", "papermill", _relative(NOTEBOOKS_DIR / notebook, cwd), _relative(output, cwd),
             "-f", _relative(params_file, cwd), "--cwd", ".", "-k", "python3", "--no-progress-bar"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(cwd),
        )
    params_file.unlink(missing_ok=True)
    if returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        raise NotebookFailed(reason.strip())


def _relative(path: Path, start: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(start).resolve()))
    except ValueError:
        return str(path)


_NOTEBOOK_ONLY = ("results_root", "progress")  # training-notebook parameters that are not run parameters


def _train_parameters(cfg: RunConfig, results_root: Path) -> dict[str, Any]:
    params = cfg.flat()
    params["results_root"] = str(results_root)
    params["progress"] = False
    return params


def _label(number: int, total: int, cfg: RunConfig) -> str:
    return f"[{number}/{total}] {cfg.label}"


@dataclass(frozen=True)
class TrainTask:
    """One run to execute, in a form that travels to a Slurm job (plain data, pickled by submitit)."""

    params: dict[str, Any]  # the training notebook's parameters (a RunConfig dict plus results_root, progress)
    output: Path  # the executed notebook, <results>/<study>/<run_id>/01_train.ipynb
    cwd: Path
    threads: int | None = None  # torch/OpenMP threads of the run
    gpus: int = 1  # > 1: data-parallel through torchrun
    children: Any = field(default=None, compare=False, repr=False)  # Children, local runs only (not picklable)


def train_one(task: TrainTask) -> None:
    """Execute one run: the training notebook, or with several GPUs ``torchrun -m nhllib.training.experiment``."""
    if task.gpus <= 1:
        _execute(TRAIN_NOTEBOOK, task.output, task.params, task.cwd, task.threads, task.children)
        return
    _torchrun(task)


def _torchrun(task: TrainTask) -> None:
    """``torchrun --standalone --nproc_per_node GPUS -m nhllib.training.experiment`` on this node; log beside the run."""
    config = {k: v for k, v in task.params.items() if k not in _NOTEBOOK_ONLY}
    launch = task.output.parent.parent / ".launch" / f"{task.output.parent.name}.json"
    launch.parent.mkdir(parents=True, exist_ok=True)
    launch.write_text(json.dumps(config, indent=2))
    log = task.output.parent / "torchrun.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if task.threads is not None:
        env["OMP_NUM_THREADS"] = str(max(1, task.threads // task.gpus))
    with open(log, "w") as handle:
        returncode = (task.children or Children()).run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(task.gpus),
             "-m", "nhllib.training.experiment", "--config", str(launch), "--results", str(task.params["results_root"])],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(task.cwd),
        )
    if returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        raise TorchrunFailed(f"torchrun exited with {returncode}: {reason.strip()} (see {log})")
    launch.unlink(missing_ok=True)


@dataclass(frozen=True)
class AnalysisTask:
    study: str
    results_root: Path
    cwd: Path
    analysis: dict[str, Any]
    exercises: bool = False  # check the course kit after the analysis notebooks


def analyse_one(task: AnalysisTask, notebook: str, children: Children | None = None,
                staging: Path | None = None) -> None:
    """One analysis notebook; with ``staging``, its figures and tables go under ``staging/{figures,tables}``."""
    params = {"study": task.study, "results_root": str(task.results_root), **task.analysis.get(notebook, {})}
    if staging is not None and notebook in STAGED_NOTEBOOKS:
        params.update({f"{kind}_dir": str(staging / kind) for kind in ("figures", "tables")
                       if f"{kind}_dir" not in params})
    _execute(notebook, task.results_root / task.study / notebook, params, task.cwd, None, children)


def analyse_all(task: AnalysisTask) -> None:
    """Every analysis notebook in order (one job on a cluster); raises naming the ones that failed."""
    failed = []
    for notebook in ANALYSIS_NOTEBOOKS:
        try:
            analyse_one(task, notebook)
        except Exception as err:  # noqa: BLE001 - the other notebooks still run
            failed.append(f"{notebook}: {err}")
    if task.exercises:
        failed += check_exercises(task, echo=logger.info)
    if failed:
        raise NotebookFailed("; ".join(failed))


def check_exercises(task: AnalysisTask, echo=print, children: Children | None = None) -> list[str]:
    """Check the course kit: ``05_exercises.ipynb`` on the solutions file, then on its own blank answers.

    Each execution goes to ``<results>/<study>/exercises/05_exercises_<name>.ipynb`` and saves its scoreboard
    beside it as JSON; :func:`nhllib.study.scoreboard.judge_scoreboard` then requires every check to pass on the
    solutions and every check to fail, as "not implemented yet", on the blank answers. Returns what went wrong.
    """
    folder = task.results_root / task.study / "exercises"
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, described, parameters, expect in EXERCISE_CHECKS:
        start = time.perf_counter()
        output = folder / f"05_exercises_{name}.ipynb"
        board_path = folder / f"scoreboard_{name}.json"
        board_path.unlink(missing_ok=True)
        try:
            _execute(EXERCISES_NOTEBOOK, output, {**parameters, "scoreboard_path": str(board_path)}, task.cwd,
                     None, children)
        except Exception as err:  # noqa: BLE001 - reported with the study's other failures
            if children is not None and children.stopping.is_set():
                raise Interrupted(signal.SIGTERM) from None
            problems, board = [f"the notebook failed: {err}"], None
        else:
            board = json.loads(board_path.read_text()) if board_path.is_file() else None
            problems = judge_scoreboard(board, expect) if board else [f"the notebook wrote no {board_path.name}"]
        seconds = time.perf_counter() - start
        if problems:
            failures.append(f"{EXERCISES_NOTEBOOK} {described}: {'; '.join(problems)}")
            echo(f"[exercises] {EXERCISES_NOTEBOOK} {described} ... FAILED after {seconds:.0f} s: "
                 f"{'; '.join(problems)} (see {output})")
        else:
            passed = sum(r["passed"] for r in board["results"])
            echo(f"[exercises] {EXERCISES_NOTEBOOK} {described}: {passed} of {len(board['results'])} checks pass, "
                 f"as they should ... {seconds:.0f} s")
    return failures


def run_study(profile: Profile, results_root: Path, cwd: Path = PROJECT_ROOT, analysis_only: bool = False,
              jobs: int = 1, echo=print, executor=None, gpus_per_run: int = 1,
              children: Children | None = None) -> list[str]:
    """Run every missing run of ``profile`` then the analysis notebooks.

    ``executor`` (:mod:`nhllib.study.executors`) runs the training runs; the default runs ``jobs`` at a time here.
    ``gpus_per_run`` > 1 launches each run data-parallel with torchrun. Returns the failures; a failed run
    does not stop the others. Holds the study folder's lock throughout (:class:`~nhllib.store.locks.LockedError` when
    another driver has it); ``children`` tracks the local notebook processes so that a signal handler can end
    them (:func:`main` installs one).
    """
    results_root = Path(os.path.abspath(results_root))  # resolved once; the notebooks get it absolute
    children = children or Children()
    with FolderLock(results_root / profile.study, "study driver"):
        return _run_locked(profile, results_root, cwd, analysis_only, jobs, echo, executor, gpus_per_run, children)


def _run_locked(profile: Profile, results_root: Path, cwd: Path, analysis_only: bool, jobs: int, echo, executor,
                gpus_per_run: int, children: Children) -> list[str]:
    executor = executor if executor is not None else LocalExecutor(jobs)
    local = executor.kind == "local"
    failures: list[str] = []
    total = len(profile.configs)
    start_all = time.perf_counter()
    if local:
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    else:
        threads = executor.options.cpus_per_run
    pending = {}
    for number, cfg in enumerate(profile.configs, start=1):
        store = RunStore(results_root, cfg.study, cfg.run_id)
        if analysis_only:
            continue
        check = store.check() if store.state == "complete" else None
        if check is not None and check.damaged:
            aside = store.set_aside()
            echo(f"{_label(number, total, cfg)} ... DAMAGED ({'; '.join(check.problems)}): folder moved to {aside}, "
                 f"redoing the run")
        if check is not None and not check.damaged:
            echo(f"{_label(number, total, cfg)} ... done before, skipped"
                 + (" (unverified: its marker predates file records)" if check.status == "unverified" else ""))
        else:
            task = TrainTask(_train_parameters(cfg, results_root), store.path / TRAIN_NOTEBOOK, cwd, threads,
                             gpus_per_run, children if local else None)
            pending[task.output] = (number, cfg, store, task)
    if pending and not local:
        echo(f"submitting {len(pending)} run(s) through the {executor.kind} executor (job logs in {executor.folder})")
    for task, err, seconds in executor.map(train_one, [item[3] for item in pending.values()]):
        if children.stopping.is_set():
            continue
        number, cfg, store, _ = pending[task.output]
        label = _label(number, total, cfg)
        if err is None:
            echo(f"{label} ... {seconds:.0f} s")
        else:
            failures.append(f"{label}: {err}")
            echo(f"{label} ... FAILED after {seconds:.0f} s (see {store.path} and its .log)")
    if children.stopping.is_set():
        raise Interrupted(signal.SIGTERM)
    analysis = AnalysisTask(profile.study, results_root, cwd, profile.analysis, profile.exercises)
    marker = results_root / profile.study / ANALYSIS_MARKER
    # A cluster pass that trained nothing new would submit an analysis job that changes nothing: skip it.
    if not local and not pending and not analysis_only and analysis_is_current(
            marker, [results_root / c.study / c.run_id for c in profile.configs], COMPLETE_MARKER):
        echo(f"[analysis] current (no run changed since {ANALYSIS_MARKER}), skipped")
        echo(f"study {profile.study!r}: {total} runs, {len(failures)} failure(s), {time.perf_counter() - start_all:.0f} s")
        return failures
    marker.unlink(missing_ok=True)
    if not local:
        start = time.perf_counter()
        _, err, _ = executor.run(analyse_all, analysis)
        if err is not None:
            failures.append(f"analysis: {err}")
            echo(f"[analysis] FAILED: {err}")
        else:
            echo(f"[analysis] {', '.join(ANALYSIS_NOTEBOOKS)} ... {time.perf_counter() - start:.0f} s")
            _write_marker(marker, [])
    else:
        failures += _run_analysis(analysis, echo, children)
        if analysis.exercises:
            failures += check_exercises(analysis, echo, children)
    echo(f"study {profile.study!r}: {total} runs, {len(failures)} failure(s), {time.perf_counter() - start_all:.0f} s")
    return failures


def _run_analysis(task: AnalysisTask, echo, children: Children) -> list[str]:
    """The analysis notebooks here; figures and tables are staged and published as a set when all succeed."""
    from nhllib.plots import default_output_dir

    failures = []
    analysis_dir = task.results_root / task.study
    staging = analysis_dir / ".analysis-staging"
    shutil.rmtree(staging, ignore_errors=True)
    for notebook in ANALYSIS_NOTEBOOKS:
        start = time.perf_counter()
        try:
            analyse_one(task, notebook, children, staging)
        except Exception as err:  # noqa: BLE001 - the other notebooks still run
            if children.stopping.is_set():
                raise Interrupted(signal.SIGTERM) from None
            failures.append(f"{notebook}: {err}")
            echo(f"[analysis] {notebook} ... FAILED (see {analysis_dir / notebook} and its .log)")
            continue
        echo(f"[analysis] {notebook} ... {time.perf_counter() - start:.0f} s")
    if failures:
        echo(f"[analysis] figures and tables not published (the previous set is kept; this attempt's are in {staging})")
        return failures
    published = []
    for kind in ("figures", "tables"):
        target = default_output_dir(task.results_root, task.study, kind)
        for path in sorted((staging / kind).rglob("*")) if (staging / kind).is_dir() else []:
            if path.is_dir():  # sub-folders (the slide set) are merged file by file into the target's
                continue
            destination = target / path.relative_to(staging / kind)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
            published.append(str(destination.relative_to(task.results_root)))
    shutil.rmtree(staging, ignore_errors=True)
    _write_marker(analysis_dir / ANALYSIS_MARKER, published)
    return failures


def _write_marker(marker: Path, published: list[str]) -> None:
    atomic_write_text(marker, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "published": published}, indent=2) + "\n")


