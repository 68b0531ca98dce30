"""Notebook parameters: from the names a notebook's parameter cell (and papermill's injected cell) defined to
validated values, in one place.

papermill passes ``-p name value`` through its own light typing: ``True``/``False``/``None`` and numbers are
converted, everything else arrives as a string (``-p overwrite false`` is the string ``"false"``, truthy in
Python). Here, and only here, the strings of :data:`nhllib.checks.BOOL_STRINGS` become booleans; any other
non-boolean is refused, naming the parameter. A name the notebook does not declare (``-p epochz 3``) is an
error, not papermill's warning: a typo must not run silently with the defaults.

The notebook records the names that exist before its parameter cell (``set(globals())`` in its first code
cell); every public name defined after that is a parameter, declared or injected.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nhllib.checks import parameter_bool
from nhllib.weight_sources import SOURCES

__all__ = ["TrainParameters", "train_parameters", "given_parameters", "bool_fields", "TRAIN_OPTIONS"]

#: The parameters of ``01_train`` that are not run configuration: where runs go and how the run is driven.
TRAIN_OPTIONS = ("results_root", "overwrite", "progress")


@dataclass(frozen=True)
class TrainParameters:
    """The validated parameters of ``01_train``: the run's configuration and the three notebook options."""

    config: Any  # nhllib.training.config.RunConfig
    results_root: Path  # absolute
    overwrite: bool
    progress: bool


def given_parameters(namespace: Mapping[str, Any], names_before: Collection[str]) -> dict[str, Any]:
    """The parameters a notebook received: public names of ``namespace`` that were not in ``names_before``.

    Names starting with ``_`` are IPython's (``_i3``, ``_``) or the notebook's own bookkeeping; modules and
    functions are imports, not parameters.
    """
    import types

    return {name: value for name, value in namespace.items()
            if name not in names_before and not name.startswith("_")
            and not isinstance(value, (types.ModuleType, types.FunctionType, type))}


def bool_fields() -> tuple[str, ...]:
    """The run parameters whose values are booleans (from the configuration's defaults)."""
    from nhllib.training.config import RunConfig

    return tuple(name for name, default in RunConfig.defaults().items() if isinstance(default, bool))


def _check_known(given: Collection[str], known: Collection[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(
        f"unknown notebook parameter(s) {', '.join(hints)}; this notebook takes {sorted(known)} "
        "(papermill --help-notebook notebooks/01_train.ipynb describes each)"
    )


def _results_root(value: Any, cwd: Path | None) -> Path:
    if isinstance(value, bool) or not isinstance(value, (str, Path)) or not str(value).strip():
        raise ValueError(f"results_root must be a non-empty path, got {value!r}")
    path = Path(value).expanduser()
    # Resolved once, here, against the notebook's working directory; everything downstream gets it absolute.
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


def train_parameters(namespace: Mapping[str, Any], names_before: Collection[str],
                     cwd: Path | None = None) -> TrainParameters:
    """Validate the parameters of ``01_train``: unknown names, boolean spellings, then the run configuration.

    Raises ``ValueError`` naming the offending parameter; nothing is written before this succeeds.
    """
    from nhllib.training.config import RunConfig

    given = given_parameters(namespace, names_before)
    run_names = RunConfig.parameter_names()
    _check_known(given, (*run_names, *TRAIN_OPTIONS))
    values = {name: given[name] for name in run_names if name in given}
    for name in bool_fields():
        # `pretrained` also takes the name of a weight source ("pool-coarse"), which stays a string
        if name in values and not (name == "pretrained" and values[name] in SOURCES):
            values[name] = parameter_bool(name, values[name])
    config = RunConfig.from_dict(values)
    return TrainParameters(
        config=config,
        results_root=_results_root(given.get("results_root", "results"), cwd),
        overwrite=parameter_bool("overwrite", given.get("overwrite", False)),
        progress=parameter_bool("progress", given.get("progress", True)),
    )
