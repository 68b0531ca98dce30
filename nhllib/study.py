"""The study driver behind ``run_all.sh``: expand a profile's grid, run each training notebook, then the
analysis notebooks.

A profile is a YAML file (``studies/<profile>.yaml``)::

    study: default              # results/<study>/
    defaults: {epochs: 30, ...}   # RunConfig fields shared by every run
    analysis: {conflict_method: csq}  # parameters of the analysis notebooks
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
import sys
import time
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


def expand_grid(study: str, defaults: dict[str, Any], grid: list[dict[str, Any]]) -> list[RunConfig]:
    """Expand grid blocks into validated configs (duplicates removed, order kept)."""
    configs: dict[str, RunConfig] = {}
    for number, block in enumerate(grid, start=1):
        if not isinstance(block, dict):
            raise ValueError(f"grid block {number} must be a mapping, got {block!r}")
        fixed = {k: v for k, v in block.items() if k != "sweep"}
        sweep = block.get("sweep", {})
        names = list(sweep)
        for values in itertools.product(*(sweep[name] for name in names)):
            params = {**defaults, **fixed, **dict(zip(names, values)), "study": study}
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
    configs = expand_grid(spec["study"], spec.get("defaults", {}), spec["grid"])
    return Profile(name, spec["study"], tuple(configs), spec.get("analysis", {}))


def _execute(notebook: str, output: Path, parameters: dict[str, Any], cwd: Path) -> None:
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / notebook), str(output), parameters=parameters, cwd=str(cwd),
        kernel_name="python3", progress_bar=False, log_output=False,
    )


def _train_parameters(cfg: RunConfig, results_root: Path) -> dict[str, Any]:
    params = cfg.to_dict()
    params["results_root"] = str(results_root)
    params["progress"] = False
    return params


def run_study(profile: Profile, results_root: Path, cwd: Path = PROJECT_ROOT, analysis_only: bool = False,
              echo=print) -> list[str]:
    """Run every missing run of ``profile`` then the analysis notebooks; returns the failures."""
    failures: list[str] = []
    total = len(profile.configs)
    start_all = time.perf_counter()
    for number, cfg in enumerate(profile.configs, start=1):
        if analysis_only:
            break
        store = RunStore(results_root, cfg.study, cfg.run_id)
        label = f"[{number}/{total}] {cfg.method} {cfg.variant} {'/'.join(map(str, cfg.code_lengths))} seed={cfg.seed}"
        if cfg.distill_weight != 1.0:
            label += f" λ={cfg.distill_weight}"
        if store.state == "complete":
            echo(f"{label} ... done before, skipped")
            continue
        start = time.perf_counter()
        try:
            _execute(TRAIN_NOTEBOOK, store.path / TRAIN_NOTEBOOK, _train_parameters(cfg, results_root), cwd)
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the study
            failures.append(f"{label}: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            echo(f"{label} ... FAILED after {time.perf_counter() - start:.0f} s (see {store.path / TRAIN_NOTEBOOK})")
            continue
        echo(f"{label} ... {time.perf_counter() - start:.0f} s")
    analysis_dir = results_root / profile.study
    for notebook in ANALYSIS_NOTEBOOKS:
        start = time.perf_counter()
        params = {"study": profile.study, "results_root": str(results_root), **profile.analysis.get(notebook, {})}
        try:
            _execute(notebook, analysis_dir / notebook, params, cwd)
        except Exception as err:  # noqa: BLE001
            failures.append(f"{notebook}: {type(err).__name__}")
            echo(f"[analysis] {notebook} ... FAILED (see {analysis_dir / notebook})")
            continue
        echo(f"[analysis] {notebook} ... {time.perf_counter() - start:.0f} s")
    echo(f"study {profile.study!r}: {total} runs, {len(failures)} failure(s), {time.perf_counter() - start_all:.0f} s")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study", description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="default", help="a profile name: " + ", ".join(available_profiles()))
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--analysis-only", action="store_true", help="skip training; rerun the analysis notebooks")
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
    failures = run_study(profile, results_root, analysis_only=args.analysis_only)
    if failures:
        print("failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
