"""Which runs a study table compares: the run index, joins, filters, the main comparison, and the study loader.

The inputs are what :func:`nhllib.store.results.load_results` returns: ``metrics.csv`` of many runs, or ``conflicts.csv``
/ ``history.csv`` / ``curves.csv`` joined to their runs with :func:`attach_runs` (:func:`load_study` does both).
Runs that agree on method, variant, λ, code length and seed but have different ``run_id`` differ in a setting
``metrics.csv`` does not record; :func:`check_unique_seeds` refuses to average them. ``dataset`` and ``backbone``
become grouping keys only when they vary (:func:`context_keys`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from nhllib.store.results import CONTEXT_COLUMNS, METRIC_KEYS, RUN_COLUMNS, load_results, load_runs, require_columns
from nhllib.vocab import REFERENCE_VARIANT, VARIANTS

__all__ = [
    "load_study", "load_runs_of", "Study", "find_run", "variant_order", "reference_variant", "trained", "single_length_variant",
    "context_keys", "sort_variants", "check_unique_seeds", "per_length_rows", "run_level_rows", "run_index",
    "attach_runs", "select", "reference_distill_weight", "main_targets", "main_comparison",
]

logger = logging.getLogger(__name__)


def variant_order(reference: bool = True) -> list[str]:
    """Variant names in the study's order (the ``VARIANTS`` registry); ``reference=False`` leaves out the
    untrained reference level, which is read against, never compared as a variant."""
    return [name for name in VARIANTS if reference or name != REFERENCE_VARIANT]


def reference_variant() -> str:
    """The variant whose mAP is the reference level (``untrained``: the initialised network, evaluated once)."""
    return REFERENCE_VARIANT


def trained(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that train: the untrained reference runs left out (they are a level, not a variant)."""
    if frame.empty or "variant" not in frame.columns:
        return frame
    return frame[frame["variant"] != REFERENCE_VARIANT].reset_index(drop=True)


def single_length_variant() -> str:
    """The baseline variant that trains one model per code length (``separate``)."""
    names = [name for name, variant in VARIANTS.items() if variant.single_length]
    if len(names) != 1:
        raise ValueError(f"expected exactly one single-length variant in VARIANTS, found {names}")
    return names[0]


def context_keys(frame: pd.DataFrame) -> list[str]:
    """Context columns (dataset, backbone) that take more than one value: they become grouping keys."""
    return [c for c in CONTEXT_COLUMNS if c in frame.columns and frame[c].nunique(dropna=False) > 1]


def sort_variants(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sort with ``variant`` in registry order (unknown names last, alphabetically)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    order = {name: k for k, name in enumerate(variant_order())}
    return frame.sort_values(
        list(by), key=lambda s: s.map(lambda v: order.get(v, len(order))) if s.name == "variant" else s,
        kind="stable",
    ).reset_index(drop=True)


def check_unique_seeds(rows: pd.DataFrame, keys: Sequence[str], what: str) -> None:
    """Raise when two different runs share ``keys`` + seed (they would be averaged as if they were one)."""
    counts = rows.groupby([*keys, "seed"], dropna=False)["run_id"].nunique()
    clash = counts[counts > 1]
    if not clash.empty:
        key = clash.index[0]
        mask = np.logical_and.reduce([rows[k] == v for k, v in zip([*keys, "seed"], key)])
        ids = sorted(rows.loc[mask, "run_id"].unique())
        raise ValueError(
            f"{what}: runs {ids} share {dict(zip([*keys, 'seed'], key))}; they differ in a setting metrics.csv "
            f"does not record (epochs, lr, ...). Filter the frame to one of them (e.g. with nhllib.analysis.tables.select)"
        )


def per_length_rows(metrics: pd.DataFrame, metric: str, name: str = "metrics") -> pd.DataFrame:
    """Rows of one per-length metric, with an integer ``code_length``."""
    require_columns(metrics, METRIC_KEYS, name)
    rows = metrics[(metrics["metric"] == metric) & metrics["code_length"].notna()].copy()
    if rows.empty and not metrics.empty and metric not in set(metrics["metric"]):
        raise KeyError(f"{name} has no metric {metric!r}; available: {sorted(metrics['metric'].unique())}")
    rows["code_length"] = rows["code_length"].astype(int)
    return rows


def run_level_rows(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """One row per run with its run-level metrics as columns (code_length empty in metrics.csv)."""
    rows = metrics[metrics["code_length"].isna() & metrics["metric"].isin(names)]
    wide = rows.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    return wide.reindex(columns=list(names))


def run_index(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: ``study, run_id, method, variant, dataset, backbone, weighting, distill_weight, seed``
    and ``code_lengths`` (``"8-16-32"``), taken from ``metrics.csv`` (whose ``distill_weight`` is the λ the run
    actually applied: 0 for variants without distillation). An empty frame (no complete run) is an error."""
    if isinstance(metrics, pd.DataFrame) and metrics.empty:
        raise ValueError("metrics is empty: no complete run was found; check results_root and study "
                         "(nhllib.store.results.load_results returns an empty frame when no run is complete)")
    require_columns(metrics, METRIC_KEYS, "metrics")
    columns = [c for c in RUN_COLUMNS if c in metrics.columns]
    runs = metrics[columns].drop_duplicates("run_id").reset_index(drop=True)
    lengths = (
        metrics[metrics["code_length"].notna()]
        .groupby("run_id")["code_length"]
        .agg(lambda s: "-".join(str(int(v)) for v in sorted(s.unique())))
    )
    runs["code_lengths"] = runs["run_id"].map(lengths)
    return runs


def attach_runs(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Join a per-run table (history, conflicts, curves) to its runs' identity columns on ``run_id``.

    ``runs`` is :func:`run_index` (recommended: effective λ) or :func:`nhllib.store.results.load_runs`. Columns
    already in ``frame`` are kept from ``frame``. An empty ``frame`` gives an empty frame.
    """
    require_columns(runs, ["run_id"], "runs")
    if frame.empty:
        return pd.DataFrame(columns=list(dict.fromkeys([*frame.columns, *runs.columns])))
    require_columns(frame, ["run_id"], "frame")
    extra = [c for c in runs.columns if c not in frame.columns]
    joined = frame.merge(runs[["run_id", *extra]].drop_duplicates("run_id"), on="run_id", how="left")
    unknown = joined.loc[joined[extra[0]].isna(), "run_id"].unique() if extra else []
    if len(unknown):
        raise KeyError(f"runs has no row for run_id(s) {sorted(unknown)[:5]}; build runs from the same study")
    return joined


def select(frame: pd.DataFrame, **equals) -> pd.DataFrame:
    """Rows where each named column equals its value; ``None`` or ``""`` means "no filter" (notebook params).

    A value that is a list/tuple/set keeps rows whose column is in it.
    """
    out = frame
    for column, value in equals.items():
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if out.empty:
            return out
        require_columns(out, [column], "frame")
        if isinstance(value, (list, tuple, set, frozenset)):
            out = out[out[column].isin(list(value))]
        else:
            out = out[out[column] == value]
    return out.reset_index(drop=True)


def reference_distill_weight(frame: pd.DataFrame) -> float | None:
    """The λ of the main comparison: the most common λ among runs with distillation (λ > 0).

    Ties go to the value closest to 1.0 (the ``RunConfig`` default). ``None`` when no run distills.
    """
    if frame.empty:
        return None
    require_columns(frame, ["run_id", "distill_weight"], "frame")
    runs = frame.drop_duplicates("run_id")
    counts = runs.loc[runs["distill_weight"] > 0, "distill_weight"].value_counts()
    if counts.empty:
        return None
    top = counts[counts == counts.max()].index
    return float(min(top, key=lambda v: (abs(float(v) - 1.0), float(v))))


def main_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the runs of the study's main target construction (the ``targets`` value of most runs, ``nested`` in
    the default study); a side experiment with ``targets: independent`` is left out, like a λ sweep. A frame
    without a ``targets`` column, or with one value, is returned as it is."""
    if frame.empty or "targets" not in frame.columns or frame["targets"].nunique(dropna=False) <= 1:
        return frame
    counts = frame.drop_duplicates("run_id")["targets"].value_counts() if "run_id" in frame else \
        frame["targets"].value_counts()
    main = counts.index[0]
    logger.info("main comparison: runs with targets=%r kept, %s left out", main,
                {k: int(v) for k, v in counts.items() if k != main})
    return frame[frame["targets"] == main].reset_index(drop=True)


def main_comparison(frame: pd.DataFrame, distill_weight: float | None = None) -> pd.DataFrame:
    """Drop the runs of a λ sweep: keep runs without distillation (λ = 0) and those at the reference λ; and the
    runs of a side experiment on the target construction (:func:`main_targets`).

    ``distill_weight=None`` takes :func:`reference_distill_weight`. Figures 1-3 and 6-7 compare variants at
    one λ; the sensitivity figure uses every λ.
    """
    if frame.empty:
        return frame
    require_columns(frame, ["distill_weight"], "frame")
    frame = main_targets(frame)
    lam = reference_distill_weight(frame) if distill_weight is None else float(distill_weight)
    keep = frame["distill_weight"] == 0
    if lam is not None:
        keep |= np.isclose(frame["distill_weight"].astype(float), lam)
    return frame[keep].reset_index(drop=True)


def find_run(results_root: str | os.PathLike, study: str, method: str, variant: str, seed: int,
             among: set[str] | None = None) -> Path:
    """The folder of the complete run of ``method`` × ``variant`` × ``seed`` at the study's main λ.

    The main λ is :func:`reference_distill_weight` (runs of a λ sweep are left out). Among
    several matching runs (e.g. different code lengths) the one with the most code lengths is taken. ``among``
    (run ids) narrows the search first, e.g. to one regime (:func:`nhllib.analysis.regimes.choose_regime`).
    """
    runs = load_runs(results_root, study)
    if among is not None and not runs.empty:
        runs = runs[runs["run_id"].isin(among)]
    matching = select(runs, method=method, variant=variant, seed=seed) if not runs.empty else runs
    if not matching.empty:
        matching = main_comparison(matching.assign(distill_weight=matching["distill_weight"].astype(float)),
                                   reference_distill_weight(runs))
    if matching.empty:
        have = sorted({(r.method, r.variant, int(r.seed)) for r in runs.itertuples()}) if not runs.empty else []
        raise FileNotFoundError(
            f"no complete run of method {method!r}, variant {variant!r}, seed {seed} in study {study!r} under "
            f"{results_root} (at the main distillation weight{'; among the runs asked for' if among is not None else ''}); "
            f"runs there (method, variant, seed): "
            f"{have[:20]}{' ...' if len(have) > 20 else ''}"
        )
    order = matching.assign(_n=matching["code_lengths"].astype(str).str.count("-")).sort_values(
        ["_n", "run_id"], ascending=[False, True])
    if len(order) > 1:
        logger.info("%d runs match; using %s", len(order), order["run_id"].iloc[0])
    return Path(results_root) / study / str(order["run_id"].iloc[0])


class Study(NamedTuple):
    """The tables of one study, each joined to its runs' keys (:data:`RUN_KEYS`)."""

    runs: Any  # one row per run (run_index: the λ in effect)
    metrics: Any
    history: Any
    conflicts: Any
    curves: Any


def _study_names(study: str | None, with_studies: Sequence[str]) -> list[str | None]:
    if isinstance(with_studies, str):
        raise ValueError(f"with_studies must be a list of study names, got the string {with_studies!r}")
    names = [study, *with_studies]
    if study is None and with_studies:
        raise ValueError("with_studies needs a main study (study=None reads every study already)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"study {repeated[0]!r} is named twice (study={study!r}, with_studies={list(with_studies)})")
    return names


def _joined(frames: list[pd.DataFrame], names: list[str | None], root: str | Path,
            per_run: bool = True) -> pd.DataFrame:
    """Frames of several studies stacked. For tables with a row per run (``per_run``: metrics, runs) a study named
    in ``with_studies`` without complete runs, or one run id in two studies (the same configuration trained twice,
    which would count twice), is an error; the per-epoch tables of the same runs need no second check."""
    if per_run:
        for name, frame in zip(names[1:], frames[1:]):
            if frame.empty:
                raise FileNotFoundError(f"with_studies names study {name!r}, which has no complete run under "
                                        f"{root}; run it first (./run_all.sh {name})")
        owners: dict[str, str | None] = {}
        for name, frame in zip(names, frames):
            ids = set(frame["run_id"]) if not frame.empty else set()
            twice = sorted(ids & owners.keys())
            if twice:
                raise ValueError(f"run {twice[0]} is in study {owners[twice[0]]!r} and in study {name!r} under "
                                 f"{root}: the same configuration would count twice; keep it in one study")
            owners.update(dict.fromkeys(ids, name))
    kept = [frame for frame in frames if not frame.empty]
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()


def load_runs_of(root: str | Path, study: str | None, with_studies: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`nhllib.store.results.load_runs` of ``study`` and of every study in ``with_studies``, stacked."""
    names = _study_names(study, with_studies)
    return _joined([load_runs(root, name) for name in names], names, root)


def load_study(root: str | Path = "results", study: str | None = None, with_studies: Sequence[str] = ()) -> Study:
    """Every table of the complete runs of ``study``, ready for :mod:`nhllib.analysis.tables` and :mod:`nhllib.plots`.

    ``with_studies`` adds the complete runs of other studies under the same root, as if they were this study's
    (the regimes study takes its MLP-from-scratch regime from the default study this way, instead of training the
    same configurations again). A run id found in two of them is an error, as is a named study without runs.
    """
    names = _study_names(study, with_studies)
    metrics = _joined([load_results(root, name) for name in names], names, root)
    runs = run_index(metrics)
    return Study(
        runs=runs, metrics=metrics,
        **{table: attach_runs(_joined([load_results(root, name, f"{table}.csv") for name in names], names, root,
                                      per_run=False), runs)
           for table in ("history", "conflicts", "curves")},
    )
