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
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nhllib.config import RunConfig
from nhllib.results import RunStore

__all__ = ["Profile", "load_profile", "expand_grid", "run_study", "main", "PROFILES_DIR"]

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
    return Profile(name, spec["study"], tuple(configs), spec.get("analysis", {}))


class NotebookFailed(RuntimeError):
    """papermill exited non-zero; the message holds the last line of its log."""


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


def _train_parameters(cfg: RunConfig, results_root: Path) -> dict[str, Any]:
    params = cfg.flat()
    params["results_root"] = str(results_root)
    params["progress"] = False
    return params


def _label(number: int, total: int, cfg: RunConfig) -> str:
    return f"[{number}/{total}] {cfg.label}"


def run_study(profile: Profile, results_root: Path, cwd: Path = PROJECT_ROOT, analysis_only: bool = False,
              jobs: int = 1, echo=print) -> list[str]:
    """Run every missing run of ``profile`` (``jobs`` at a time) then the analysis notebooks.

    Returns the failures; a failed run does not stop the others.
    """
    failures: list[str] = []
    total = len(profile.configs)
    start_all = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    pending = []
    for number, cfg in enumerate(profile.configs, start=1):
        store = RunStore(results_root, cfg.study, cfg.run_id)
        if analysis_only:
            continue
        if store.state == "complete":
            echo(f"{_label(number, total, cfg)} ... done before, skipped")
        else:
            pending.append((number, cfg, store))

    def train(item):
        _, cfg, store = item
        start = time.perf_counter()
        try:
            _execute(TRAIN_NOTEBOOK, store.path / TRAIN_NOTEBOOK, _train_parameters(cfg, results_root), cwd, threads)
            return item, None, time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the study
            return item, err, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for (number, cfg, store), err, seconds in pool.map(train, pending):
            label = _label(number, total, cfg)
            if err is None:
                echo(f"{label} ... {seconds:.0f} s")
            else:
                failures.append(f"{label}: {err}")
                echo(f"{label} ... FAILED after {seconds:.0f} s (see {store.path / TRAIN_NOTEBOOK} and its .log)")
    analysis_dir = results_root / profile.study
    for notebook in ANALYSIS_NOTEBOOKS:
        start = time.perf_counter()
        params = {"study": profile.study, "results_root": str(results_root), **profile.analysis.get(notebook, {})}
        try:
            _execute(notebook, analysis_dir / notebook, params, cwd, None)
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
    failures = run_study(profile, results_root, analysis_only=args.analysis_only, jobs=args.jobs)
    if failures:
        print("failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
