"""Study profiles: the YAML schema, its strict parsing and the expansion of a profile's grid into run configs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhllib.config import RunConfig
from nhllib.study.executors import SlurmOptions

__all__ = ["Profile", "load_profile", "check_profile", "expand_grid", "available_profiles", "PROFILES_DIR",
           "NOTEBOOKS_DIR", "TRAIN_NOTEBOOK", "ANALYSIS_NOTEBOOKS", "STAGED_NOTEBOOKS", "PROFILE_KEYS"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = PROJECT_ROOT / "studies"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TRAIN_NOTEBOOK = "01_train.ipynb"
ANALYSIS_NOTEBOOKS = ("02_gradient_conflicts.ipynb", "03_figures.ipynb", "04_retrieval.ipynb")
#: Analysis notebooks that take figures_dir / tables_dir: they write to a staging folder, published as a set.
STAGED_NOTEBOOKS = ("03_figures.ipynb", "04_retrieval.ipynb")
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

