"""The study driver behind ``run_all.sh``: expand a profile's grid, run each training notebook, then the
analysis notebooks.

A profile is a YAML file (``studies/<profile>.yaml``)::

    study: default              # results/<study>/
    defaults: {epochs: 30, ...}   # RunConfig fields shared by every run
    method_defaults:            # fields every run of one method gets (a block or sweep value overrides them)
      dsh: {loss_hparams: {pairs: batch}}
    analysis:                   # parameters of the analysis notebooks, per notebook
      04_retrieval.ipynb: {method: csq}
    exercises: true             # then check the course kit (05_exercises.ipynb), see check_exercises
    grid:
      - variant: separate         # plain keys: fixed for this block
        sweep:                    # cartesian product of these lists
          method: [csq, dsh]
          code_lengths: [[8], [16]]
          seed: [0, 1, 2]

Every config is built and validated before the first run starts, so a typo fails at once; the profile itself is
checked against a schema first (:func:`check_profile`), with messages naming the block and key. Complete runs are
skipped, incomplete ones redone; a failed run does not stop the others, and the driver exits non-zero at the end
if any failed.

Runs execute here (``--executor local``, ``--jobs`` at a time) or as a Slurm job array submitted through submitit
(``--executor slurm``; resources from the profile's optional ``slurm:`` block, see
:class:`~nhllib.executors.SlurmOptions`, overridden by ``--partition``, ``--gpus-per-run`` and the like). A run
with one GPU (or none) executes the training notebook; with several, ``torchrun`` runs it data-parallel
(:mod:`nhllib.distributed`) through ``python -m nhllib.experiment``. The analysis notebooks follow the runs.

Running long studies safely: the results root is resolved once, against the caller's working directory, and
passed on absolute. The driver locks the study folder (:mod:`nhllib.locks`), so a second driver on it stops at
once naming the first. SIGTERM or SIGINT end every notebook process it started (papermill and its kernel) and
exit with 128 + the signal number; the interrupted runs stay incomplete and the same command resumes. The
analysis notebooks write their figures and tables to a staging folder, published as a set when all succeed;
then ``ANALYSIS_COMPLETE`` is written in the study folder. With ``exercises: true`` the course kit is checked last
(:func:`check_exercises`): a solution that fails, or a blank answer that passes, makes the study fail.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhllib.config import RunConfig
from nhllib.executors import EXECUTORS, LocalExecutor, SlurmOptions, make_executor
from nhllib.locks import FolderLock, LockedError
from nhllib.results import RunStore, atomic_write_text

__all__ = ["Profile", "load_profile", "check_profile", "expand_grid", "run_study", "main", "PROFILES_DIR",
           "TrainTask", "train_one", "ANALYSIS_MARKER", "Interrupted", "check_exercises"]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "studies"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TRAIN_NOTEBOOK = "01_train.ipynb"
ANALYSIS_NOTEBOOKS = ("02_gradient_conflicts.ipynb", "03_figures.ipynb", "04_retrieval.ipynb")
#: Analysis notebooks that take figures_dir / tables_dir: they write to a staging folder, published as a set.
STAGED_NOTEBOOKS = ("03_figures.ipynb", "04_retrieval.ipynb")
ANALYSIS_MARKER = "ANALYSIS_COMPLETE"
EXERCISES_NOTEBOOK = "05_exercises.ipynb"
#: The course kit's two executions: (name, description, notebook parameters, what judge_scoreboard expects).
EXERCISE_CHECKS = (("solutions", "with the solutions", {"use_solutions": True}, "pass"),
                   ("blank", "with blank answers", {"use_solutions": False}, "blank"))
PROFILE_KEYS = ("study", "defaults", "method_defaults", "analysis", "exercises", "grid", "slurm")


@dataclass(frozen=True)
class Profile:
    name: str
    study: str
    configs: tuple[RunConfig, ...]
    analysis: dict[str, Any]
    slurm: dict[str, Any] = field(default_factory=dict)  # SlurmOptions fields for --executor slurm
    exercises: bool = False  # check the course kit after the analysis (check_exercises)


def available_profiles(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.yaml"))


def expand_grid(study: str, defaults: dict[str, Any], grid: list[dict[str, Any]],
                method_defaults: dict[str, dict[str, Any]] | None = None) -> list[RunConfig]:
    """Expand grid blocks into validated configs (duplicates removed, order kept).

    ``method_defaults`` maps a method to parameters that every run of that method gets (the per-method choices of
    a profile, for example in-batch pairs for DSH); a block or sweep value still overrides them.
    """
    method_defaults = method_defaults or {}
    if not isinstance(method_defaults, dict) or not all(isinstance(v, dict) for v in method_defaults.values()):
        raise ValueError(f"method_defaults must map a method name to a mapping of parameters, got {method_defaults!r}")
    configs: dict[str, RunConfig] = {}
    for number, block in enumerate(grid, start=1):
        if not isinstance(block, dict):
            raise ValueError(f"grid block {number} must be a mapping, got {block!r}")
        fixed = {k: v for k, v in block.items() if k != "sweep"}
        sweep = block.get("sweep", {})
        names = list(sweep)
        for values in itertools.product(*(sweep[name] for name in names)):
            chosen = {**fixed, **dict(zip(names, values))}
            method = chosen.get("method", defaults.get("method"))
            params = {**defaults, **method_defaults.get(method, {}), **chosen, "study": study}
            if "code_lengths" in params:
                params["code_lengths"] = tuple(params["code_lengths"])
            try:
                cfg = RunConfig.from_dict(params)
            except (TypeError, ValueError) as err:
                raise ValueError(f"grid block {number} ({dict(zip(names, values))}): {err}") from err
            configs.setdefault(cfg.run_id, cfg)
    return list(configs.values())


def check_profile(spec: Any, source: str = "profile") -> None:
    """Check a profile's structure; ``ValueError`` names ``source``, the block and the key.

    The values themselves are checked by :class:`RunConfig` when the grid is expanded; this catches what would
    otherwise surface as ``'int' object is not iterable`` or a silently empty grid.
    """
    known = set(RunConfig.parameter_names())
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: a profile must be a mapping with keys {list(PROFILE_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {unknown}; allowed: {list(PROFILE_KEYS)}")
    for key in ("study", "grid"):
        if key not in spec:
            raise ValueError(f"{source} lacks the key {key!r}")
    for key in ("defaults", "method_defaults", "analysis", "slurm"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ValueError(f"{source}: {key!r} must be a mapping, got {spec[key]!r}")
    if not isinstance(spec.get("exercises", False), bool):
        raise ValueError(f"{source}: 'exercises' must be true or false, got {spec['exercises']!r}")
    bad = sorted(set(spec.get("defaults", {})) - known)
    if bad:
        raise ValueError(f"{source}: unknown run parameter(s) {bad} in 'defaults'")
    grid = spec["grid"]
    if not isinstance(grid, list) or not grid:
        raise ValueError(f"{source}: 'grid' must be a non-empty list of blocks, got {grid!r}")
    for number, block in enumerate(grid, start=1):
        where = f"{source}, grid block {number}"
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping of run parameters (and 'sweep'), got {block!r}")
        bad = sorted(set(block) - known - {"sweep"})
        if bad:
            raise ValueError(f"{where}: unknown run parameter(s) {bad}")
        sweep = block.get("sweep", {})
        if not isinstance(sweep, dict):
            raise ValueError(f"{where}: 'sweep' must map run parameters to lists of values, got {sweep!r}")
        for key, values in sweep.items():
            if key not in known:
                raise ValueError(f"{where}, sweep key {key!r}: not a run parameter")
            if not isinstance(values, list):
                raise ValueError(f"{where}, sweep key {key!r}: must be a list of values (e.g. {key}: [{values!r}]), "
                                 f"got {values!r}")
            if not values:
                raise ValueError(f"{where}, sweep key {key!r}: the list is empty, so the block would give no runs")
            if key == "code_lengths" and not all(isinstance(v, list) for v in values):
                raise ValueError(f"{where}, sweep key 'code_lengths': each value is a list of lengths "
                                 f"(e.g. code_lengths: [[8], [16]] or [[8, 16, 32]]), got {values!r}")


def _profile_path(name: str, profiles_dir: Path) -> Path:
    """A profile name (``studies/<name>.yaml``) or the path of a profile file (ending in ``.yaml``)."""
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser().absolute()
    return profiles_dir / f"{name}.yaml"


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """Read and validate a profile: a name under ``studies/`` or the path of a ``.yaml`` file."""
    import yaml

    path = _profile_path(name, profiles_dir)
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; available profiles: {', '.join(available_profiles(profiles_dir))}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"profile file {path} is not valid YAML: {err}") from None
    check_profile(spec, f"profile file {path.name}")
    configs = expand_grid(spec["study"], spec.get("defaults", {}), spec["grid"], spec.get("method_defaults"))
    slurm = spec.get("slurm") or {}
    try:
        SlurmOptions.from_dict(slurm)  # validated now, like the grid
    except ValueError as err:
        raise ValueError(f"profile file {path.name}, block 'slurm': {err}") from err
    return Profile(name, spec["study"], tuple(configs), spec.get("analysis", {}), dict(slurm),
                   spec.get("exercises", False))


class NotebookFailed(RuntimeError):
    """papermill exited non-zero; the message holds the last line of its log."""


class TorchrunFailed(RuntimeError):
    """A data-parallel run (torchrun) exited non-zero; the message names its log."""


class Interrupted(Exception):
    """The driver was asked to stop (SIGTERM or SIGINT); its notebook processes have been ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class _Children:
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


def _execute(notebook: str, output: Path, parameters: dict[str, Any], cwd: Path, threads: int | None,
             children: _Children | None = None) -> None:
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
        returncode = (children or _Children()).run(
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
    children: Any = field(default=None, compare=False, repr=False)  # _Children, local runs only (not picklable)


def train_one(task: TrainTask) -> None:
    """Execute one run: the training notebook, or with several GPUs ``torchrun -m nhllib.experiment``."""
    if task.gpus <= 1:
        _execute(TRAIN_NOTEBOOK, task.output, task.params, task.cwd, task.threads, task.children)
        return
    _torchrun(task)


def _torchrun(task: TrainTask) -> None:
    """``torchrun --standalone --nproc_per_node GPUS -m nhllib.experiment`` on this node; log beside the run."""
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
        returncode = (task.children or _Children()).run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(task.gpus),
             "-m", "nhllib.experiment", "--config", str(launch), "--results", str(task.params["results_root"])],
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


def analyse_one(task: AnalysisTask, notebook: str, children: _Children | None = None,
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


def check_exercises(task: AnalysisTask, echo=print, children: _Children | None = None) -> list[str]:
    """Check the course kit: ``05_exercises.ipynb`` on the solutions file, then on its own blank answers.

    Each execution goes to ``<results>/<study>/exercises/05_exercises_<name>.ipynb`` and saves its scoreboard
    beside it as JSON; :func:`nhllib.teaching.exercises.judge_scoreboard` then requires every check to pass on the
    solutions and every check to fail, as "not implemented yet", on the blank answers. Returns what went wrong.
    """
    from nhllib.teaching.exercises import judge_scoreboard

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
              children: _Children | None = None) -> list[str]:
    """Run every missing run of ``profile`` then the analysis notebooks.

    ``executor`` (:mod:`nhllib.executors`) runs the training runs; the default runs ``jobs`` at a time here.
    ``gpus_per_run`` > 1 launches each run data-parallel with torchrun. Returns the failures; a failed run
    does not stop the others. Holds the study folder's lock throughout (:class:`~nhllib.locks.LockedError` when
    another driver has it); ``children`` tracks the local notebook processes so that a signal handler can end
    them (:func:`main` installs one).
    """
    results_root = Path(os.path.abspath(results_root))  # resolved once; the notebooks get it absolute
    children = children or _Children()
    with FolderLock(results_root / profile.study, "study driver"):
        return _run_locked(profile, results_root, cwd, analysis_only, jobs, echo, executor, gpus_per_run, children)


def _run_locked(profile: Profile, results_root: Path, cwd: Path, analysis_only: bool, jobs: int, echo, executor,
                gpus_per_run: int, children: _Children) -> list[str]:
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
        if store.state == "complete":
            echo(f"{_label(number, total, cfg)} ... done before, skipped")
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


def _run_analysis(task: AnalysisTask, echo, children: _Children) -> list[str]:
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


def _env_jobs() -> int:
    """``$NHL_JOBS`` (default 2), checked: a typo there must read as an error, not a traceback."""
    text = os.environ.get("NHL_JOBS", "2").strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"NHL_JOBS must be a positive integer (runs at a time), got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study", description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="default",
                        help="a profile name (" + ", ".join(available_profiles()) + ") or the path of a .yaml file")
    parser.add_argument("--results", default="results",
                        help="results root, relative to the current directory (default: results)")
    parser.add_argument("--analysis-only", action="store_true", help="skip training; rerun the analysis notebooks")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at a time, sharing the CPU cores (default 2, or $NHL_JOBS)")
    parser.add_argument("--list", action="store_true", help="list the runs of the profile and their state, then exit")
    cluster = parser.add_argument_group(
        "cluster", "--executor slurm submits the missing runs as one Slurm job array through submitit and waits "
        "for them (keep the driver alive: tmux, or a small CPU job); options override the profile's slurm: block")
    cluster.add_argument("--executor", choices=EXECUTORS, default="local",
                         help="local: here, --jobs at a time (default); slurm: a job array; submitit-local: the "
                              "slurm code path with jobs as local processes (to try it without a cluster)")
    cluster.add_argument("--partition", help="Slurm partition")
    cluster.add_argument("--gpus-per-run", type=int, help="GPUs per run (> 1: torchrun data-parallel; default 1)")
    cluster.add_argument("--cpus-per-run", type=int, help="CPU cores per run (default 8)")
    cluster.add_argument("--mem-gb", type=float, help="memory per run in GB (default: the partition's)")
    cluster.add_argument("--time-min", type=int, help="time limit per run in minutes (default 240)")
    cluster.add_argument("--array-parallelism", type=int, help="runs at once in the array (default 64)")
    cluster.add_argument("--account", help="Slurm account")
    cluster.add_argument("--qos", help="Slurm QOS")
    cluster.add_argument("--constraint", help="Slurm node constraint (e.g. a GPU type)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        profile = load_profile(args.profile)
        args.jobs = args.jobs if args.jobs is not None else _env_jobs()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_root = Path(os.path.abspath(os.path.expanduser(args.results)))
    if args.list:
        for cfg in profile.configs:
            print(f"{RunStore(results_root, cfg.study, cfg.run_id).state:10s} {cfg.run_id}")
        return 0
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    overrides = {name: getattr(args, name) for name in ("partition", "gpus_per_run", "cpus_per_run", "mem_gb",
                                                        "time_min", "array_parallelism", "account", "qos", "constraint")
                 if getattr(args, name) is not None}
    try:
        slurm = SlurmOptions.from_dict({**profile.slurm, **overrides})
        executor = make_executor(args.executor, jobs=args.jobs, folder=results_root / profile.study / ".submitit",
                                 slurm=slurm, name=f"nhl-{profile.study}")
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gpus = slurm.gpus_per_run if args.executor != "local" else (args.gpus_per_run or 1)
    if args.executor == "local" and gpus > 1 and args.jobs > 1:
        print(f"error: --gpus-per-run {gpus} with --executor local gives every run GPUs 0..{gpus - 1}: "
              f"use --jobs 1", file=sys.stderr)
        return 2
    children = _Children()

    def stop(signum, _frame):
        if not children.stopping.is_set():
            print(f"stopping ({signal.Signals(signum).name}): ending the notebooks ...", file=sys.stderr, flush=True)
            children.stop()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        failures = run_study(profile, results_root, analysis_only=args.analysis_only, jobs=args.jobs,
                             executor=executor, gpus_per_run=gpus, children=children)
    except Interrupted as err:
        children.stop()
        print(f"{err}; the study is resumable: rerun the same command (complete runs are kept)", file=sys.stderr)
        return 128 + err.signum
    except LockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # a results folder that cannot be written: one error, before any run starts
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        print("failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
