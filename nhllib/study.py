"""The study driver behind ``run_all.sh``: expand a profile's grid, run each training notebook, then the
analysis notebooks.

A profile is a YAML file (``studies/<profile>.yaml``)::

    study: default              # results/<study>/
    defaults: {epochs: 30, ...}   # RunConfig fields shared by every run
    method_defaults:            # fields every run of one method gets (a block or sweep value overrides them)
      dsh: {loss_hparams: {pairs: batch}}
    analysis:                   # parameters of the analysis notebooks, per notebook
      04_retrieval.ipynb: {method: csq}
    grid:
      - variant: separate         # plain keys: fixed for this block
        sweep:                    # cartesian product of these lists
          method: [csq, dsh]
          code_lengths: [[8], [16]]
          seed: [0, 1, 2]

Every config is built and validated before the first run starts, so a typo fails at once. Complete runs are
skipped, incomplete ones redone; a failed run does not stop the others, and the driver exits non-zero at the end
if any failed.

Runs execute here (``--executor local``, ``--jobs`` at a time) or as a Slurm job array submitted through submitit
(``--executor slurm``; resources from the profile's optional ``slurm:`` block, see
:class:`~nhllib.executors.SlurmOptions`, overridden by ``--partition``, ``--gpus-per-run`` and the like). A run
with one GPU (or none) executes the training notebook; with several, ``torchrun`` runs it data-parallel
(:mod:`nhllib.distributed`) through ``python -m nhllib.experiment``. The analysis notebooks follow the runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhllib.config import RunConfig
from nhllib.executors import EXECUTORS, LocalExecutor, SlurmOptions, make_executor
from nhllib.results import RunStore

__all__ = ["Profile", "load_profile", "expand_grid", "run_study", "main", "PROFILES_DIR", "TrainTask", "train_one"]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "studies"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TRAIN_NOTEBOOK = "01_train.ipynb"
ANALYSIS_NOTEBOOKS = ("02_gradient_conflicts.ipynb", "03_figures.ipynb", "04_retrieval.ipynb")


@dataclass(frozen=True)
class Profile:
    name: str
    study: str
    configs: tuple[RunConfig, ...]
    analysis: dict[str, Any]
    slurm: dict[str, Any] = field(default_factory=dict)  # SlurmOptions fields for --executor slurm


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


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    import yaml

    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; available profiles: {', '.join(available_profiles(profiles_dir))}")
    spec = yaml.safe_load(path.read_text())
    for key in ("study", "grid"):
        if key not in spec:
            raise ValueError(f"profile file {path.name} lacks the key {key!r}")
    configs = expand_grid(spec["study"], spec.get("defaults", {}), spec["grid"], spec.get("method_defaults"))
    slurm = spec.get("slurm") or {}
    try:
        SlurmOptions.from_dict(slurm)  # validated now, like the grid
    except ValueError as err:
        raise ValueError(f"profile file {path.name}, block 'slurm': {err}") from err
    return Profile(name, spec["study"], tuple(configs), spec.get("analysis", {}), dict(slurm))


class NotebookFailed(RuntimeError):
    """papermill exited non-zero; the message holds the last line of its log."""


class TorchrunFailed(RuntimeError):
    """A data-parallel run (torchrun) exited non-zero; the message names its log."""


def _execute(notebook: str, output: Path, parameters: dict[str, Any], cwd: Path, threads: int | None) -> None:
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
        done = subprocess.run(
            [sys.executable, "-m", "papermill", _relative(NOTEBOOKS_DIR / notebook, cwd), _relative(output, cwd),
             "-f", _relative(params_file, cwd), "--cwd", ".", "-k", "python3", "--no-progress-bar"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, check=False, cwd=str(cwd),
        )
    params_file.unlink(missing_ok=True)
    if done.returncode:
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


def train_one(task: TrainTask) -> None:
    """Execute one run: the training notebook, or with several GPUs ``torchrun -m nhllib.experiment``."""
    if task.gpus <= 1:
        _execute(TRAIN_NOTEBOOK, task.output, task.params, task.cwd, task.threads)
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
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(task.gpus),
             "-m", "nhllib.experiment", "--config", str(launch), "--results", str(task.params["results_root"])],
            stdout=handle, stderr=subprocess.STDOUT, env=env, check=False, cwd=str(task.cwd),
        )
    if done.returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        raise TorchrunFailed(f"torchrun exited with {done.returncode}: {reason.strip()} (see {log})")
    launch.unlink(missing_ok=True)


@dataclass(frozen=True)
class AnalysisTask:
    study: str
    results_root: Path
    cwd: Path
    analysis: dict[str, Any]


def analyse_one(task: AnalysisTask, notebook: str) -> None:
    params = {"study": task.study, "results_root": str(task.results_root), **task.analysis.get(notebook, {})}
    _execute(notebook, task.results_root / task.study / notebook, params, task.cwd, None)


def analyse_all(task: AnalysisTask) -> None:
    """Every analysis notebook in order (one job on a cluster); raises naming the ones that failed."""
    failed = []
    for notebook in ANALYSIS_NOTEBOOKS:
        try:
            analyse_one(task, notebook)
        except Exception as err:  # noqa: BLE001 - the other notebooks still run
            failed.append(f"{notebook}: {err}")
    if failed:
        raise NotebookFailed("; ".join(failed))


def run_study(profile: Profile, results_root: Path, cwd: Path = PROJECT_ROOT, analysis_only: bool = False,
              jobs: int = 1, echo=print, executor=None, gpus_per_run: int = 1) -> list[str]:
    """Run every missing run of ``profile`` then the analysis notebooks.

    ``executor`` (:mod:`nhllib.executors`) runs the training runs; the default runs ``jobs`` at a time here.
    ``gpus_per_run`` > 1 launches each run data-parallel with torchrun. Returns the failures; a failed run
    does not stop the others.
    """
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
                             gpus_per_run)
            pending[task.output] = (number, cfg, store, task)
    if pending and not local:
        echo(f"submitting {len(pending)} run(s) through the {executor.kind} executor (job logs in {executor.folder})")
    for task, err, seconds in executor.map(train_one, [item[3] for item in pending.values()]):
        number, cfg, store, _ = pending[task.output]
        label = _label(number, total, cfg)
        if err is None:
            echo(f"{label} ... {seconds:.0f} s")
        else:
            failures.append(f"{label}: {err}")
            echo(f"{label} ... FAILED after {seconds:.0f} s (see {store.path} and its .log)")
    analysis = AnalysisTask(profile.study, results_root, cwd, profile.analysis)
    if not local:
        start = time.perf_counter()
        _, err, _ = executor.run(analyse_all, analysis)
        if err is not None:
            failures.append(f"analysis: {err}")
            echo(f"[analysis] FAILED: {err}")
        else:
            echo(f"[analysis] {', '.join(ANALYSIS_NOTEBOOKS)} ... {time.perf_counter() - start:.0f} s")
    else:
        analysis_dir = results_root / profile.study
        for notebook in ANALYSIS_NOTEBOOKS:
            start = time.perf_counter()
            try:
                analyse_one(analysis, notebook)
            except Exception as err:  # noqa: BLE001
                failures.append(f"{notebook}: {err}")
                echo(f"[analysis] {notebook} ... FAILED (see {analysis_dir / notebook} and its .log)")
                continue
            echo(f"[analysis] {notebook} ... {time.perf_counter() - start:.0f} s")
    echo(f"study {profile.study!r}: {total} runs, {len(failures)} failure(s), {time.perf_counter() - start_all:.0f} s")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study", description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="default", help="a profile name: " + ", ".join(available_profiles()))
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--analysis-only", action="store_true", help="skip training; rerun the analysis notebooks")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("NHL_JOBS", "2")),
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
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_root = Path(args.results)
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
    failures = run_study(profile, results_root, analysis_only=args.analysis_only, jobs=args.jobs,
                         executor=executor, gpus_per_run=gpus)
    if failures:
        print("failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
