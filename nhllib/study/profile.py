"""Study profiles: the YAML schema, its strict parsing and the expansion of a profile's grid into run configs."""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhllib.study.executors import SlurmOptions
from nhllib.study.profile_yaml import read_profile_yaml
from nhllib.training.config import RunConfig

__all__ = ["Profile", "load_profile", "check_profile", "expand_grid", "available_profiles", "PROFILES_DIR",
           "NOTEBOOKS_DIR", "TRAIN_NOTEBOOK", "ANALYSIS_NOTEBOOKS", "STAGED_NOTEBOOKS", "PROFILE_KEYS"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = PROJECT_ROOT / "studies"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TRAIN_NOTEBOOK = "01_train.ipynb"
ANALYSIS_NOTEBOOKS = ("02_gradient_conflicts.ipynb", "03_figures.ipynb", "04_retrieval.ipynb")
#: Analysis notebooks that take figures_dir / tables_dir: they write to a staging folder, published as a set.
STAGED_NOTEBOOKS = ("03_figures.ipynb", "04_retrieval.ipynb")
#: Analysis-notebook parameters the driver sets itself (a profile cannot).
DRIVER_PARAMETERS = ("study", "results_root")
PROFILE_KEYS = ("study", "defaults", "method_defaults", "analysis", "exercises", "grid", "slurm")


@dataclass(frozen=True)
class Profile:
    name: str
    study: str
    configs: tuple[RunConfig, ...]
    analysis: dict[str, Any]
    slurm: dict[str, Any] = field(default_factory=dict)  # SlurmOptions fields for --executor slurm
    exercises: bool = False  # check the course kit after the analysis (check_exercises)

    @property
    def with_studies(self) -> tuple[str, ...]:
        """Other studies whose complete runs the analysis reads with this one's (a notebook's ``with_studies``)."""
        names = (name for params in self.analysis.values() for name in params.get("with_studies") or ())
        return tuple(dict.fromkeys(names))


def available_profiles(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.yaml"))


def _close(name: Any, known: Any) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``name``, else nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(names: Any, known: Any, what: str) -> str:
    return ", ".join(f"{name!r}{_close(name, known)}" for name in names) + f"; {what}"


def _default_method() -> str:
    return RunConfig.defaults()["method"]


def _number_hint(params: dict[str, Any]) -> str:
    """A hint for a quoted number: YAML reads ``"1e-3"`` (quoted) as a string, which no numeric field takes."""
    quoted = []
    for key, value in params.items():
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                continue
            quoted.append(f"{key}: {value!r}")
    if not quoted:
        return ""
    return (f" ({', '.join(quoted)} is a string in YAML because it is quoted: write the number without quotes, "
            f"e.g. lr: 1.0e-3)")


def expand_grid(study: str, defaults: dict[str, Any], grid: list[dict[str, Any]],
                method_defaults: dict[str, dict[str, Any]] | None = None) -> list[RunConfig]:
    """Expand grid blocks into validated configs (duplicates removed, order kept).

    ``method_defaults`` maps a method to parameters that every run of that method gets (the per-method choices of
    a profile, for example in-batch pairs for DSH), whether the run names the method or takes the default one; a
    block or sweep value still overrides them.
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
            method = chosen.get("method", defaults.get("method", _default_method()))
            params = {**defaults, **method_defaults.get(method, {}), **chosen, "study": study}
            if "code_lengths" in params:
                params["code_lengths"] = tuple(params["code_lengths"])
            try:
                cfg = RunConfig.from_dict(params)
            except (TypeError, ValueError) as err:
                raise ValueError(f"grid block {number} ({dict(zip(names, values))}): {err}"
                                 f"{_number_hint(params)}") from err
            configs.setdefault(cfg.run_id, cfg)
    return list(configs.values())


def _check_parameters(where: str, params: Any, known: set[str]) -> None:
    if not isinstance(params, dict):
        raise ValueError(f"{where} must be a mapping of run parameters, got {params!r}")
    bad = sorted(set(params) - known)
    if bad:
        raise ValueError(f"{where}: unknown run parameter(s) "
                         f"{_unknown(bad, known, 'run parameters are listed in results/README.md')}")


def _check_method_defaults(source: str, method_defaults: dict[str, Any], known: set[str]) -> None:
    from nhllib.core.losses import LOSSES, resolve_loss

    for method, params in method_defaults.items():
        try:
            resolve_loss(method)
        except (KeyError, ValueError, TypeError, ImportError, AttributeError):
            raise ValueError(f"{source}, method_defaults: {method!r}{_close(method, LOSSES)} is not a method; "
                             f"methods: {sorted(LOSSES)} or a loss class of your own as 'module:ClassName'") from None
        _check_parameters(f"{source}, method_defaults of {method!r}", params, known)
        if "method" in params:
            raise ValueError(f"{source}, method_defaults of {method!r}: cannot set 'method' itself")


def notebook_parameters(notebook: str) -> tuple[str, ...]:
    """The parameters a notebook declares (its cell tagged ``parameters``), read by papermill."""
    import papermill

    return tuple(papermill.inspect_notebook(str(NOTEBOOKS_DIR / notebook)))


def _check_analysis(source: str, analysis: dict[str, Any]) -> None:
    """Notebook names and their parameters, like ``01_train``'s: a typo must not run with the defaults."""
    for notebook, params in analysis.items():
        if notebook not in ANALYSIS_NOTEBOOKS:
            raise ValueError(f"{source}, analysis: {notebook!r}{_close(notebook, ANALYSIS_NOTEBOOKS)} is not an "
                             f"analysis notebook; they are {list(ANALYSIS_NOTEBOOKS)}")
        where = f"{source}, analysis of {notebook}"
        if not isinstance(params, dict):
            raise ValueError(f"{where} must be a mapping of notebook parameters, got {params!r}")
        declared = notebook_parameters(notebook)
        settable = [name for name in declared if name not in DRIVER_PARAMETERS]
        bad = sorted(set(params) - set(settable))
        if bad:
            raise ValueError(f"{where}: unknown notebook parameter(s) "
                             f"{_unknown(bad, settable, f'this notebook takes {settable}')}"
                             + ("; study and results_root are set by the driver" if set(bad) & set(DRIVER_PARAMETERS)
                                else ""))
        others = params.get("with_studies", [])
        if not isinstance(others, list) or not all(isinstance(name, str) and name for name in others):
            raise ValueError(f"{where}: with_studies must be a list of study names, e.g. [default], got {others!r}")


def check_profile(spec: Any, source: str = "profile") -> None:
    """Check a profile's structure; ``ValueError`` names ``source``, the block and the key.

    The values themselves are checked by :class:`RunConfig` when the grid is expanded; this catches what would
    otherwise surface as ``'int' object is not iterable``, a silently empty grid, or a key that is ignored: every
    key is checked (with a suggestion for a near miss), and a value both fixed and swept in a block is refused.
    """
    known = set(RunConfig.parameter_names())
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: a profile must be a mapping with keys {list(PROFILE_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {unknown}"
                         f"{_close(unknown[0], PROFILE_KEYS)}; allowed: {list(PROFILE_KEYS)}")
    for key in ("study", "grid"):
        if key not in spec:
            raise ValueError(f"{source} lacks the key {key!r}")
    study = spec["study"]
    if (not isinstance(study, str) or not study.strip() or study != study.strip() or "/" in study
            or study in (".", "..")):
        raise ValueError(f"{source}: 'study' must be a folder name (no '/', not blank), got {study!r}")
    for key in ("defaults", "method_defaults", "analysis", "slurm"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ValueError(f"{source}: {key!r} must be a mapping, got {spec[key]!r}")
    if not isinstance(spec.get("exercises", False), bool):
        raise ValueError(f"{source}: 'exercises' must be true or false, got {spec['exercises']!r}")
    defaults = spec.get("defaults") or {}
    bad = sorted(set(defaults) - known)
    if bad:
        raise ValueError(f"{source}: unknown run parameter(s) {[*bad]} in 'defaults'"
                         f"{_close(bad[0], known)}")
    _check_method_defaults(source, spec.get("method_defaults") or {}, known)
    _check_analysis(source, spec.get("analysis") or {})
    grid = spec["grid"]
    if not isinstance(grid, list) or not grid:
        raise ValueError(f"{source}: 'grid' must be a non-empty list of blocks, got {grid!r}")
    for number, block in enumerate(grid, start=1):
        where = f"{source}, grid block {number}"
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping of run parameters (and 'sweep'), got {block!r}")
        bad = sorted(set(block) - known - {"sweep"})
        if bad:
            raise ValueError(f"{where}: unknown run parameter(s) {bad}{_close(bad[0], [*known, 'sweep'])}")
        sweep = block.get("sweep", {})
        if not isinstance(sweep, dict):
            raise ValueError(f"{where}: 'sweep' must map run parameters to lists of values, got {sweep!r}")
        both = sorted(set(sweep) & (set(block) - {"sweep"}))
        if both:
            raise ValueError(f"{where}: {both} both fixed and swept; the fixed value would be dropped. Put the "
                             f"value in the sweep list (e.g. {both[0]}: [{block[both[0]]!r}, ...]) or remove one")
        for key, values in sweep.items():
            if key not in known:
                raise ValueError(f"{where}, sweep key {key!r}: not a run parameter{_close(key, known)}")
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
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the profile must be a name ({', '.join(available_profiles(profiles_dir))}) or the path "
                         f"of a .yaml file, got {name!r}")
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser().absolute()
    return profiles_dir / f"{name}.yaml"


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """Read and validate a profile: a name under ``studies/`` or the path of a ``.yaml`` file.

    The YAML is read strictly (:func:`nhllib.study.profile_yaml.read_profile_yaml`): a key given twice is an error
    naming the file, line and key; a plain ``1e-3`` is a number.
    """
    path = _profile_path(name, profiles_dir)
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; available profiles: {', '.join(available_profiles(profiles_dir))}")
    spec = read_profile_yaml(path)
    check_profile(spec, f"profile file {path.name}")
    configs = expand_grid(spec["study"], spec.get("defaults") or {}, spec["grid"], spec.get("method_defaults"))
    slurm = spec.get("slurm") or {}
    try:
        SlurmOptions.from_dict(slurm)  # validated now, like the grid
    except ValueError as err:
        raise ValueError(f"profile file {path.name}, block 'slurm': {err}") from err
    return Profile(name, spec["study"], tuple(configs), spec.get("analysis") or {}, dict(slurm),
                   spec.get("exercises", False))
