"""Study tables from the tidy run tables: DataFrame in, DataFrame out.

The inputs are what :func:`nhllib.results.load_results` returns: ``metrics.csv`` of many runs (columns
``run_id, study, method, variant, dataset, backbone, code_length, weighting, distill_weight, seed, metric,
value``), or ``conflicts.csv`` / ``history.csv`` / ``curves.csv`` joined to their runs with :func:`attach_runs`.

Seeds are the unit of replication: every mean ± std below is over seeds (sample std, ``ddof=1``; NaN for one
seed). Runs that agree on method, variant, λ, code length and seed but have different ``run_id`` differ in a
setting ``metrics.csv`` does not record (epochs, learning rate, ...); averaging them would mix two experiments,
so those functions raise instead. ``dataset`` and ``backbone`` become grouping keys only when they vary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nhllib.results import CONTEXT_COLUMNS, METRIC_KEYS, RUN_COLUMNS, require_columns
from nhllib.vocab import REFERENCE_VARIANT, VARIANTS

__all__ = [
    "COLLAPSE_MARGIN",
    "REFERENCE_METHOD",
    "SPEEDUP_SUMMARY_COLUMNS",
    "attach_runs",
    "best_epoch_table",
    "collapse_table",
    "reference_table",
    "retrieval_benchmark",
    "retrieval_scaling_text",
    "reference_variant",
    "trained",
    "verdict_tables",
    "conflict_summary",
    "delta_table",
    "format_mean_std",
    "main_comparison",
    "main_targets",
    "map_table",
    "pivot_lengths",
    "reference_distill_weight",
    "run_index",
    "save_table",
    "select",
    "single_length_variant",
    "speedup_per_seed",
    "speedup_table",
    "summarize",
    "to_markdown",
    "variant_order",
    "weight_summary",
]

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------- helpers


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


def _context(frame: pd.DataFrame) -> list[str]:
    """Context columns (dataset, backbone) that take more than one value: they become grouping keys."""
    return [c for c in CONTEXT_COLUMNS if c in frame.columns and frame[c].nunique(dropna=False) > 1]


def _sort_variants(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sort with ``variant`` in registry order (unknown names last, alphabetically)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    order = {name: k for k, name in enumerate(variant_order())}
    return frame.sort_values(
        list(by), key=lambda s: s.map(lambda v: order.get(v, len(order))) if s.name == "variant" else s,
        kind="stable",
    ).reset_index(drop=True)


def format_mean_std(mean: float, std: float, digits: int = 3, suffix: str = "", sign: bool = False) -> str:
    """``"0.812 ± 0.004"``; the mean alone when ``std`` is NaN (one seed); ``""`` when the mean is NaN.

    ``sign=True`` writes the mean with its sign (``"+0.012 ± 0.004"``), for differences.
    """
    if mean is None or pd.isna(mean):
        return ""
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    if std is None or pd.isna(std):
        return f"{text}{suffix}"
    return f"{text} ± {std:.{digits}f}{suffix}"


def summarize(frame: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count of ``value`` per group of ``keys``."""
    require_columns(frame, [*keys, value], "frame")
    out = frame.groupby(list(keys), dropna=False, sort=True)[value].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def _check_unique_seeds(rows: pd.DataFrame, keys: Sequence[str], what: str) -> None:
    """Raise when two different runs share ``keys`` + seed (they would be averaged as if they were one)."""
    counts = rows.groupby([*keys, "seed"], dropna=False)["run_id"].nunique()
    clash = counts[counts > 1]
    if not clash.empty:
        key = clash.index[0]
        mask = np.logical_and.reduce([rows[k] == v for k, v in zip([*keys, "seed"], key)])
        ids = sorted(rows.loc[mask, "run_id"].unique())
        raise ValueError(
            f"{what}: runs {ids} share {dict(zip([*keys, 'seed'], key))}; they differ in a setting metrics.csv "
            f"does not record (epochs, lr, ...). Filter the frame to one of them (e.g. with nhllib.tables.select)"
        )


def _per_length(metrics: pd.DataFrame, metric: str, name: str = "metrics") -> pd.DataFrame:
    """Rows of one per-length metric, with an integer ``code_length``."""
    require_columns(metrics, METRIC_KEYS, name)
    rows = metrics[(metrics["metric"] == metric) & metrics["code_length"].notna()].copy()
    if rows.empty and not metrics.empty and metric not in set(metrics["metric"]):
        raise KeyError(f"{name} has no metric {metric!r}; available: {sorted(metrics['metric'].unique())}")
    rows["code_length"] = rows["code_length"].astype(int)
    return rows


def _run_level(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """One row per run with its run-level metrics as columns (code_length empty in metrics.csv)."""
    rows = metrics[metrics["code_length"].isna() & metrics["metric"].isin(names)]
    wide = rows.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    return wide.reindex(columns=list(names))


# ---------------------------------------------------------------- runs and selection


def run_index(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: ``study, run_id, method, variant, dataset, backbone, weighting, distill_weight, seed``
    and ``code_lengths`` (``"8-16-32"``), taken from ``metrics.csv`` (whose ``distill_weight`` is the λ the run
    actually applied: 0 for variants without distillation). An empty frame (no complete run) is an error."""
    if isinstance(metrics, pd.DataFrame) and metrics.empty:
        raise ValueError("metrics is empty: no complete run was found; check results_root and study "
                         "(nhllib.results.load_results returns an empty frame when no run is complete)")
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

    ``runs`` is :func:`run_index` (recommended: effective λ) or :func:`nhllib.results.load_runs`. Columns
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


# ---------------------------------------------------------------- mAP, speed-up, deltas


def map_table(metrics: pd.DataFrame, metric: str = "map", digits: int = 3) -> pd.DataFrame:
    """Mean, std and n over seeds of a per-length metric per method × variant × λ × code length.

    Columns: [dataset, backbone when they vary,] ``method, variant, distill_weight, code_length, mean, std, n,
    seeds, formatted`` (``"0.812 ± 0.004"``). Runs of every λ are kept as separate rows. The untrained reference
    runs are method-independent: they are pooled into rows with method :data:`REFERENCE_METHOD`, placed last
    (the same numbers as :func:`reference_table`).
    """
    rows = _per_length(metrics, metric)
    keys = [*_context(rows), "method", "variant", "distill_weight", "code_length"]
    columns = [*keys, "mean", "std", "n", "seeds", "formatted"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    reference = rows[rows["variant"] == REFERENCE_VARIANT]
    rows = rows[rows["variant"] != REFERENCE_VARIANT]
    _check_unique_seeds(rows, keys, "map_table")
    parts = []
    for part in (rows, _pooled_reference(reference, keys)):
        if part.empty:
            continue
        table = summarize(part, keys)
        seeds = part.groupby(keys)["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s.unique())))
        parts.append(_sort_variants(table.merge(seeds.rename("seeds").reset_index(), on=keys), keys))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    table["formatted"] = [format_mean_std(m, s, digits) for m, s in zip(table["mean"], table["std"])]
    return table[columns].reset_index(drop=True)


#: The ``method`` of the pooled reference rows: the untrained network does not depend on the hashing method.
REFERENCE_METHOD = "(any)"


def _pooled_reference(reference: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The reference runs as one value per seed and length (mean over the methods they were run under)."""
    if reference.empty:
        return reference
    by = [*(k for k in keys if k in CONTEXT_COLUMNS), "seed", "code_length"]
    pooled = reference.groupby(by, as_index=False)["value"].mean()
    pooled = pooled.assign(method=REFERENCE_METHOD, variant=REFERENCE_VARIANT, distill_weight=0.0)
    return pooled[[*keys, "seed", "value"]]


def reference_table(metrics: pd.DataFrame, metric: str = "map", digits: int = 3) -> pd.DataFrame:
    """The reference level per code length: mean, std and n over seeds of the untrained runs' ``metric``
    (pooled over the methods they were run under). Columns ``code_length, mean, std, n, seeds, formatted``;
    empty when the study has no untrained run."""
    columns = ["code_length", "mean", "std", "n", "seeds", "formatted"]
    if metrics.empty or "variant" not in metrics.columns:
        return pd.DataFrame(columns=columns)
    reference = metrics[metrics["variant"] == REFERENCE_VARIANT]
    if reference.empty or not (reference["metric"] == metric).any():
        return pd.DataFrame(columns=columns)
    table = map_table(reference, metric, digits)
    return table[columns].sort_values("code_length").reset_index(drop=True)


#: How far above the untrained reference a run's mAP must lie to count as trained (mAP, 0-1): two points.
COLLAPSE_MARGIN = 0.02


def collapse_table(metrics: pd.DataFrame, metric: str = "map", margin: float = COLLAPSE_MARGIN) -> pd.DataFrame:
    """Per trained run and code length: is the model collapsed?

    A run that reports a ``collapsed`` metric (per length, or run-level for all its lengths; > 0.5 = yes) is
    taken at its word (``basis = "metric"``; its ``distinct_codes`` is copied when present). Otherwise the run is
    collapsed at a length when its ``metric`` is not clearly above the untrained reference there:
    ``value <= reference mean + max(margin, 2 × reference std)`` (``basis = "reference"``). Without either,
    ``collapsed`` is NA (``basis = "none"``): nothing can be decided. Columns ``run_id, method, variant,
    distill_weight, seed, code_length, value, reference, threshold, distinct_codes, collapsed, basis``.
    """
    columns = ["run_id", "method", "variant", "distill_weight", "seed", "code_length", "value", "reference",
               "threshold", "distinct_codes", "collapsed", "basis"]
    if metrics.empty or "metric" not in metrics.columns:
        return pd.DataFrame(columns=columns)
    rows = trained(_per_length(metrics, metric))
    if rows.empty:
        return pd.DataFrame(columns=columns)
    ref = reference_table(metrics, metric).set_index("code_length")
    out = rows[["run_id", "method", "variant", "distill_weight", "seed", "code_length", "value"]].copy()
    out["reference"] = out["code_length"].map(ref["mean"]) if not ref.empty else np.nan
    spread = out["code_length"].map(ref["std"]).fillna(0.0) if not ref.empty else 0.0
    out["threshold"] = out["reference"] + np.maximum(margin, 2 * spread)
    out["distinct_codes"] = _flag(metrics, "distinct_codes", out)
    flagged = _flag(metrics, "collapsed", out)
    by_reference = (out["value"] <= out["threshold"]).where(out["reference"].notna())
    out["collapsed"] = flagged.gt(0.5).where(flagged.notna(), by_reference).astype("boolean")
    out["basis"] = np.where(flagged.notna(), "metric", np.where(out["reference"].notna(), "reference", "none"))
    return _sort_variants(out[columns], ["method", "variant", "distill_weight", "code_length", "seed"])


def _flag(metrics: pd.DataFrame, name: str, rows: pd.DataFrame) -> pd.Series:
    """A run's metric ``name`` for each (run_id, code_length) of ``rows``: the per-length value where there is
    one, else the run-level value (empty code_length), else NaN."""
    found = metrics[metrics["metric"] == name]
    if found.empty:
        return pd.Series(np.nan, index=rows.index)
    per_length = found[found["code_length"].notna()]
    per_length = per_length.set_index(["run_id", per_length["code_length"].astype(int)])["value"]
    run_level = found[found["code_length"].isna()].drop_duplicates("run_id").set_index("run_id")["value"]
    keys = list(zip(rows["run_id"], rows["code_length"].astype(int)))
    values = [per_length.get(key, np.nan) for key in keys]
    values = [v if pd.notna(v) else run_level.get(key[0], np.nan) for v, key in zip(values, keys)]
    return pd.Series(values, index=rows.index, dtype=float)


def verdict_tables(metrics: pd.DataFrame, variant: str = "nhl", metric: str = "map",
                   distill_weight: float | None = None, confidence: float = 0.95) -> dict[str, pd.DataFrame]:
    """The verdict on ``variant`` against ``separate`` (:mod:`nhllib.stats`) at the main λ, as three tables.

    ``verdict``: per method and length, the paired difference over seeds, its t-test and 95 % interval and the
    verdict gain / tie / lose, with ``collapsed`` naming the side(s) with a collapsed run (:func:`collapse_table`;
    such a difference says nothing about NHL). ``verdict_counts``: per length, how many methods gain, tie or
    lose, and the sign test across methods. ``average_gain``: per method, the difference averaged over lengths
    in mAP points and in % of ``separate``. The untrained reference is never compared.
    """
    from nhllib import stats

    data = main_comparison(trained(metrics), distill_weight)
    rows = _per_length(data, metric) if not data.empty else pd.DataFrame(columns=list(METRIC_KEYS))
    baseline = single_length_variant()
    rows = rows[rows["variant"].isin([variant, baseline])]
    comparison = stats.paired_comparison(rows[["method", "variant", "code_length", "seed", "value"]], variant,
                                         baseline, confidence)
    collapse = collapse_table(metrics, metric)  # with the reference runs: they set the level
    collapse = collapse[collapse["run_id"].isin(set(rows["run_id"]))]
    sides = []
    for method, length in zip(comparison["method"], comparison["code_length"]):
        hit = collapse[(collapse["method"] == method) & (collapse["code_length"] == length)
                       & collapse["variant"].isin([variant, baseline]) & collapse["collapsed"].fillna(False)]
        names = [v for v in (baseline, variant) if v in set(hit["variant"])]
        sides.append("+".join(names))
    comparison.insert(len(comparison.columns), "collapsed", sides)
    comparison.insert(1, "variant", variant)
    return {"verdict": comparison, "verdict_counts": stats.sign_test_by_length(comparison),
            "average_gain": stats.average_over_lengths(comparison)}


def best_epoch_table(metrics: pd.DataFrame, distill_weight: float | None = None, digits: int = 1) -> pd.DataFrame:
    """Epochs to the best validation mAP per method × variant (main λ): mean ± std over runs (for ``separate``
    over its runs of every length and seed), min and max, and the epochs run. The untrained reference is left
    out (it is evaluated once, at epoch 0)."""
    columns = ["method", "variant", "distill_weight", "runs", "seeds", "best_epoch_mean", "best_epoch_std",
               "best_epoch_min", "best_epoch_max", "epochs_run_mean", "formatted"]
    data = main_comparison(trained(metrics), distill_weight)
    if data.empty:
        return pd.DataFrame(columns=columns)
    runs = run_index(data).set_index("run_id").join(_run_level(data, ("best_epoch", "epochs_run")))
    runs = runs.dropna(subset=["best_epoch"]).reset_index()
    if runs.empty:
        return pd.DataFrame(columns=columns)
    keys = ["method", "variant", "distill_weight"]
    grouped = runs.groupby(keys, sort=False)
    table = grouped["best_epoch"].agg(["mean", "std", "min", "max", "count"]).add_prefix("best_epoch_")
    table["epochs_run_mean"] = grouped["epochs_run"].mean()
    table["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s.unique())))
    table = table.rename(columns={"best_epoch_count": "runs"}).reset_index()
    table["formatted"] = [format_mean_std(m, s, digits) for m, s in zip(table["best_epoch_mean"],
                                                                         table["best_epoch_std"])]
    return _sort_variants(table[columns], ["method", "variant", "distill_weight"])


def pivot_lengths(table: pd.DataFrame, value: str = "formatted") -> pd.DataFrame:
    """Wide view of a per-length table: one row per method × variant × λ, one column per code length."""
    require_columns(table, ["code_length", value], "table")
    index = [c for c in table.columns if c in (*CONTEXT_COLUMNS, "method", "variant", "distill_weight")]
    if table.empty:
        return pd.DataFrame(columns=index)
    wide = table.pivot_table(index=index, columns="code_length", values=value, aggfunc="first")
    wide = wide.reindex(pd.MultiIndex.from_frame(table[index].drop_duplicates()))  # keep the table's row order
    wide.columns = [f"{int(c)} bits" for c in wide.columns]
    return wide.reset_index()


SPEEDUP_SUMMARY_COLUMNS = [
    "method", "variant", "distill_weight", "code_lengths", "n", "seeds", "separate_time_s_mean",
    "variant_time_s_mean", "speedup_formatted", "separate_best_epochs_mean", "variant_best_epoch_mean",
]  # the columns of the speed-up table worth reading in Markdown
SPEEDUP_VALUES = (
    "separate_time_s", "variant_time_s", "speedup", "separate_epochs", "variant_epochs",
    "separate_best_epochs", "variant_best_epoch",
)


def speedup_per_seed(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method, nested variant, λ and seed: the summed cost of the separate runs against one nested run.

    ``separate_time_s`` is the SUM of ``train_time_s`` of the single-length runs of the same method and seed over
    the nested run's code lengths; ``speedup = separate_time_s / variant_time_s``. ``separate_epochs`` and
    ``separate_best_epochs`` sum ``epochs_run`` and ``best_epoch`` (epochs to the best validation mAP) the same
    way. Only seeds for which a separate run exists for EVERY length of the nested run count; others are
    skipped (logged at INFO).
    """
    require_columns(metrics, METRIC_KEYS, "metrics")
    keys = [*_context(metrics), "method", "variant", "distill_weight", "seed", "code_lengths"]
    if metrics.empty:
        return pd.DataFrame(columns=[*keys, *SPEEDUP_VALUES])
    baseline = single_length_variant()
    metrics = trained(metrics)  # the reference trains nothing: no time to compare
    if metrics.empty:
        return pd.DataFrame(columns=[*keys, *SPEEDUP_VALUES])
    runs = run_index(metrics).set_index("run_id")
    level = _run_level(metrics, ("train_time_s", "epochs_run", "best_epoch"))
    runs = runs.join(level)
    context = _context(metrics)

    separate = runs[runs["variant"] == baseline]
    multi = separate[separate["code_lengths"].str.contains("-", na=False)]
    if not multi.empty:
        raise ValueError(f"separate runs must have one code length each; run {multi.index[0]} has {multi['code_lengths'].iloc[0]}")
    lookup: dict[tuple, str] = {}
    for run_id, row in separate.iterrows():
        key = (*(row[c] for c in context), row["method"], int(row["seed"]), int(row["code_lengths"]))
        if key in lookup:
            raise ValueError(f"speedup_per_seed: separate runs {sorted([lookup[key], run_id])} share {key}; filter to one")
        lookup[key] = run_id

    out = []
    for run_id, row in runs[runs["variant"] != baseline].iterrows():
        lengths = [int(v) for v in str(row["code_lengths"]).split("-")]
        base = (*(row[c] for c in context), row["method"], int(row["seed"]))
        parts = [lookup.get((*base, length)) for length in lengths]
        if any(p is None for p in parts):
            logger.info("speed-up: %s skipped, separate runs missing for some of %s (seed %s)",
                        run_id, lengths, row["seed"])
            continue
        needed = {"train_time_s": "train time", "epochs_run": "epochs_run", "best_epoch": "best_epoch"}
        for rid in [run_id, *parts]:
            for col in needed:
                if pd.isna(runs.at[rid, col]):
                    raise KeyError(f"run {rid} has no run-level metric {col!r} in metrics.csv")
        sep = runs.loc[parts]
        out.append({
            **{c: row[c] for c in keys[:-1]}, "code_lengths": row["code_lengths"],
            "separate_time_s": float(sep["train_time_s"].sum()), "variant_time_s": float(row["train_time_s"]),
            "speedup": float(sep["train_time_s"].sum()) / float(row["train_time_s"]),
            "separate_epochs": float(sep["epochs_run"].sum()), "variant_epochs": float(row["epochs_run"]),
            "separate_best_epochs": float(sep["best_epoch"].sum()), "variant_best_epoch": float(row["best_epoch"]),
        })
    if not out:
        return pd.DataFrame(columns=[*keys, *SPEEDUP_VALUES])
    # One row per nested run; two nested runs with the same keys would be averaged as seeds of one setting.
    frame = pd.DataFrame(out)
    counts = frame.groupby(keys, dropna=False).size()
    if (counts > 1).any():
        raise ValueError(f"speedup_per_seed: several nested runs share {dict(zip(keys, counts[counts > 1].index[0]))}; "
                         f"filter the frame to one of them")
    return _sort_variants(frame, keys)


def speedup_table(metrics: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Mean ± std over seeds of :func:`speedup_per_seed` per method, nested variant, λ and code lengths.

    The speed-up is the mean of the per-seed ratios (not the ratio of mean times). Only seeds where every
    separate length exists count (see :func:`speedup_per_seed`); ``n`` and ``seeds`` say which did.
    """
    per_seed = speedup_per_seed(metrics)
    keys = [c for c in per_seed.columns if c not in SPEEDUP_VALUES and c != "seed"]
    stats = [f"{v}_{s}" for v in SPEEDUP_VALUES for s in ("mean", "std")]
    columns = [*keys, "n", "seeds", *stats, "speedup_formatted"]
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    grouped = per_seed.groupby(keys, sort=False)
    table = grouped[list(SPEEDUP_VALUES)].agg(["mean", "std"])
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    table["n"] = grouped["seed"].nunique()
    table["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s)))
    table = table.reset_index()
    table["speedup_formatted"] = [
        format_mean_std(m, s, digits, suffix="×") for m, s in zip(table["speedup_mean"], table["speedup_std"])
    ]
    return _sort_variants(table[columns], keys)


def delta_table(metrics: pd.DataFrame, metric: str = "map", reference: str | None = None,
                digits: int = 3) -> pd.DataFrame:
    """Per method, variant, λ and code length: metric(variant) − metric(reference), mean ± std over seeds.

    ``reference`` defaults to the single-length baseline (``separate``). Differences are paired by seed over the
    seeds both have (``paired=True``, ``n`` = pairs, std of the paired differences). When they share no seed the
    difference of the two means is given with ``paired=False``, ``n=0`` and std NaN.
    """
    rows = trained(_per_length(metrics, metric))
    reference = single_length_variant() if reference is None else reference
    context = _context(rows)
    keys = [*context, "method", "variant", "distill_weight", "code_length"]
    columns = [*keys, "reference", "mean", "std", "n", "paired", "variant_mean", "reference_mean", "formatted"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    _check_unique_seeds(rows, keys, "delta_table")
    ref_rows = rows[rows["variant"] == reference]
    # One model per length has no nested targets to build: its runs serve every targets group of the variants.
    ref_context = [c for c in context if not (c == "targets" and VARIANTS.get(reference) is not None
                                               and VARIANTS[reference].single_length)]
    ref_by = {
        key: grp.set_index("seed")["value"]
        for key, grp in ref_rows.groupby([*ref_context, "method", "code_length"], sort=False)
    }
    if len(ref_rows["distill_weight"].unique()) > 1:
        raise ValueError(f"reference variant {reference!r} has several λ values; select one first")
    out = []
    for key, grp in rows[rows["variant"] != reference].groupby(keys, sort=False):
        key = dict(zip(keys, key))
        ref = ref_by.get((*(key[c] for c in ref_context), key["method"], key["code_length"]))
        if ref is None:
            continue
        var = grp.set_index("seed")["value"]
        common = sorted(set(var.index) & set(ref.index))
        if common:
            diffs = var.loc[common] - ref.loc[common]
            row = {"mean": diffs.mean(), "std": diffs.std(ddof=1) if len(common) > 1 else float("nan"),
                   "n": len(common), "paired": True, "variant_mean": var.loc[common].mean(),
                   "reference_mean": ref.loc[common].mean()}
        else:
            row = {"mean": var.mean() - ref.mean(), "std": float("nan"), "n": 0, "paired": False,
                   "variant_mean": var.mean(), "reference_mean": ref.mean()}
        out.append({**key, "reference": reference, **row})
    if not out:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(out)
    table["formatted"] = [format_mean_std(m, s, digits, sign=True) for m, s in zip(table["mean"], table["std"])]
    return _sort_variants(table[columns], keys)


# ---------------------------------------------------------------- gradient conflicts and weights


def _weighted_mean(values: pd.Series, weights: pd.Series) -> float:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def conflict_summary(conflicts: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Per method, variant, λ and (short, long) pair: how often and when the pair's gradients conflict.

    ``conflicts`` is ``conflicts.csv`` joined to its runs (:func:`attach_runs`). Per run, the rate, cosine and α
    are averaged over epochs weighted by each epoch's ``steps`` (so = the share of all monitored steps); then
    they are averaged over runs. ``rate_first`` / ``rate_last`` are the first and last epoch's rate (mean over
    runs), ``peak_epoch`` the epoch with the highest mean rate across runs.
    """
    keys = [*_context(conflicts), "method", "variant", "distill_weight", "short_length", "long_length"]
    values = ["rate_mean", "rate_first", "rate_last", "peak_epoch", "cosine_mean", "alpha_mean"]
    columns = [*keys, "n_runs", "epochs", *values, "formatted"]
    if conflicts.empty:
        return pd.DataFrame(columns=columns)
    require_columns(conflicts, ["run_id", *keys, "epoch", "steps", "conflict_rate", "mean_cosine", "mean_alpha"],
             "conflicts")
    conflicts = conflicts.astype({"epoch": int, "steps": float, "conflict_rate": float, "mean_cosine": float,
                                  "mean_alpha": float})
    per_run = []
    for (run_id, *key), grp in conflicts.groupby(["run_id", *keys], sort=False):
        grp = grp.sort_values("epoch")
        per_run.append({
            **dict(zip(keys, key)), "run_id": run_id, "epochs": int(grp["epoch"].max()),
            "rate_mean": _weighted_mean(grp["conflict_rate"], grp["steps"]),
            "cosine_mean": _weighted_mean(grp["mean_cosine"], grp["steps"]),
            "alpha_mean": _weighted_mean(grp["mean_alpha"], grp["steps"]),
            "rate_first": float(grp["conflict_rate"].iloc[0]), "rate_last": float(grp["conflict_rate"].iloc[-1]),
        })
    runs = pd.DataFrame(per_run)
    grouped = runs.groupby(keys, sort=False)
    table = grouped[["rate_mean", "rate_first", "rate_last", "cosine_mean", "alpha_mean"]].mean()
    table["n_runs"] = grouped["run_id"].nunique()
    table["epochs"] = grouped["epochs"].max()
    by_epoch = conflicts.groupby([*keys, "epoch"])["conflict_rate"].mean().reset_index()
    peak = by_epoch.loc[by_epoch.groupby(keys)["conflict_rate"].idxmax()].set_index(keys)["epoch"]
    table["peak_epoch"] = peak.reindex(table.index).astype(int)
    table = table.reset_index()
    table["formatted"] = [f"{r:.{digits}f}" for r in table["rate_mean"]]
    return _sort_variants(table[columns], keys)


def weight_summary(history: pd.DataFrame) -> pd.DataFrame:
    """Per method, variant, λ and code length: the applied per-length weight (history metric ``weight``).

    ``history`` is ``history.csv`` joined to its runs. Columns ``first`` / ``last`` (first and last epoch,
    mean over runs), ``mean`` (over epochs and runs), ``min`` (smallest per-epoch mean) and ``n_runs``.
    """
    keys = [*_context(history), "method", "variant", "distill_weight", "code_length"]
    columns = [*keys, "n_runs", "first", "last", "mean", "min"]
    if history.empty:
        return pd.DataFrame(columns=columns)
    require_columns(history, ["run_id", "epoch", "split", "metric", "value", *keys], "history")
    rows = history[(history["split"] == "train") & (history["metric"] == "weight")].copy()
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.astype({"code_length": int, "epoch": int, "value": float}).sort_values("epoch")
    per_run = rows.groupby(["run_id", *keys], sort=False)["value"].agg(["first", "last", "mean", "min"]).reset_index()
    grouped = per_run.groupby(keys, sort=False)
    table = grouped[["first", "last", "mean"]].mean()
    table["min"] = grouped["min"].min()
    table["n_runs"] = grouped["run_id"].nunique()
    return _sort_variants(table.reset_index()[columns], keys)


# ---------------------------------------------------------------- rendering and saving


def _cell(value, digits: int) -> str:
    if value is None or (not isinstance(value, (str, bytes)) and np.ndim(value) == 0 and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` needed); numbers right-aligned, NaN blank."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.empty:
        return "_(no rows)_\n"
    header = [str(c).replace("|", "\\|") for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for row in frame.itertuples(index=False):
        cells = [_cell(v, digits) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if frame.empty:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return "\n".join(lines) + "\n"


def save_table(frame: pd.DataFrame, directory: str | Path, name: str, markdown: pd.DataFrame | None = None,
               digits: int = 3) -> list[Path]:
    """Write ``<name>.csv`` (the full table) and ``<name>.md`` (``markdown`` or the same table) atomically."""
    from nhllib.results import atomic_write_text

    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    directory = Path(directory)
    csv_path, md_path = directory / f"{name}.csv", directory / f"{name}.md"
    atomic_write_text(csv_path, frame.to_csv(index=False))
    atomic_write_text(md_path, to_markdown(frame if markdown is None else markdown, digits))
    return [csv_path, md_path]


# ---------------------------------------------------------------- benchmarks


def retrieval_benchmark(sources) -> pd.DataFrame:
    """The rows of ``benchmarks/bench_retrieval.py`` result files as one tidy frame.

    ``sources``: one path or parsed JSON payload, or a sequence of them. Columns: every per-configuration column
    the benchmark writes (``configuration, strategy, short_label, db_size, speedup, map_ratio, ...``) plus
    ``source`` (``trained codes`` when the benchmark grew the codes of a run, else ``synthetic codes``),
    ``command`` and ``file``.
    """
    import json

    if isinstance(sources, (str, Path, dict)):
        sources = [sources]
    frames = []
    for source in sources:
        payload = source if isinstance(source, dict) else json.loads(Path(source).read_text())
        if "runs" not in payload:
            raise KeyError(f"{source if not isinstance(source, dict) else 'payload'} is not a bench_retrieval "
                           "result: it has no 'runs'")
        for run in payload["runs"]:
            frame = pd.DataFrame(run["results"])
            kind = run.get("data", {}).get("kind", "synthetic")
            frame["source"] = "trained codes" if kind == "file" else "synthetic codes"
            frame["command"] = payload.get("command", "")
            frame["file"] = "" if isinstance(source, dict) else Path(source).name
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def retrieval_scaling_text(bench: pd.DataFrame, source: str = "trained codes",
                           shortlist: str = "shortlist 16→128, s=1000",
                           table: str = "shortlist_table 16→128, s=1000, precomputed table") -> str:
    """One Markdown sentence per database size of ``source`` with the speed-ups of the computed shortlist and of
    the precomputed table over exhaustive search and their mAP ratio, straight from the benchmark rows (so a
    notebook or README never carries a number the benchmark does not hold). Empty when the rows are missing."""
    if bench.empty:
        return ""
    rows = bench[bench["source"] == source]
    lines = []
    for size, group in rows.groupby("db_size", sort=True):
        by = group.set_index("configuration")
        if shortlist not in by.index or table not in by.index:
            continue
        a, b = by.loc[shortlist], by.loc[table]
        lines.append(f"- {int(size):,} items: the computed shortlist {_times(a['speedup'])} and the precomputed table "
                     f"{_times(b['speedup'])} the speed of exhaustive search, at {a['map_ratio']:.1%} and "
                     f"{b['map_ratio']:.1%} of its mAP@{int(a['k'])}.")
    return "\n".join(lines)


def _times(value: float) -> str:
    return f"{value:.0f}×" if value >= 10 else f"{value:.2g}×"
