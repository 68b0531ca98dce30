"""The study's result tables: mean ± std over seeds of mAP, speed-ups, deltas, collapse and verdict tables.

Seeds are the unit of replication: every mean ± std here is over seeds (sample std, ``ddof=1``; NaN for one
seed). Rows are chosen by :mod:`nhllib.analysis.selection` and formatted by :mod:`nhllib.analysis.markdown`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nhllib.analysis.markdown import format_mean_std
from nhllib.analysis.selection import (check_unique_seeds, context_keys, main_comparison, per_length_rows, run_index,
                                       run_level_rows, single_length_variant, sort_variants, trained)
from nhllib.store.results import CONTEXT_COLUMNS, METRIC_KEYS, require_columns
from nhllib.vocab import REFERENCE_VARIANT, VARIANTS

__all__ = [
    "summarize", "map_table", "REFERENCE_METHOD", "reference_table", "COLLAPSE_MARGIN", "collapse_table",
    "verdict_tables", "best_epoch_table", "pivot_lengths", "SPEEDUP_SUMMARY_COLUMNS", "SPEEDUP_VALUES",
    "speedup_per_seed", "speedup_table", "delta_table",
]

logger = logging.getLogger(__name__)


def summarize(frame: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count of ``value`` per group of ``keys``."""
    require_columns(frame, [*keys, value], "frame")
    out = frame.groupby(list(keys), dropna=False, sort=True)[value].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def map_table(metrics: pd.DataFrame, metric: str = "map", digits: int = 3) -> pd.DataFrame:
    """Mean, std and n over seeds of a per-length metric per method × variant × λ × code length.

    Columns: [dataset, backbone when they vary,] ``method, variant, distill_weight, code_length, mean, std, n,
    seeds, formatted`` (``"0.812 ± 0.004"``). Runs of every λ are kept as separate rows. The untrained reference
    runs are method-independent: they are pooled into rows with method :data:`REFERENCE_METHOD`, placed last
    (the same numbers as :func:`reference_table`).
    """
    rows = per_length_rows(metrics, metric)
    keys = [*context_keys(rows), "method", "variant", "distill_weight", "code_length"]
    columns = [*keys, "mean", "std", "n", "seeds", "formatted"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    reference = rows[rows["variant"] == REFERENCE_VARIANT]
    rows = rows[rows["variant"] != REFERENCE_VARIANT]
    check_unique_seeds(rows, keys, "map_table")
    parts = []
    for part in (rows, _pooled_reference(reference, keys)):
        if part.empty:
            continue
        table = summarize(part, keys)
        seeds = part.groupby(keys)["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s.unique())))
        parts.append(sort_variants(table.merge(seeds.rename("seeds").reset_index(), on=keys), keys))
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
    rows = trained(per_length_rows(metrics, metric))
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
    return sort_variants(out[columns], ["method", "variant", "distill_weight", "code_length", "seed"])


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
    """The verdict on ``variant`` against ``separate`` (:mod:`nhllib.analysis.stats`) at the main λ, as three tables.

    ``verdict``: per method and length, the paired difference over seeds, its t-test and 95 % interval and the
    verdict gain / tie / lose, with ``collapsed`` naming the side(s) with a collapsed run (:func:`collapse_table`;
    such a difference says nothing about NHL). ``verdict_counts``: per length, how many methods gain, tie or
    lose, and the sign test across methods. ``average_gain``: per method, the difference averaged over lengths
    in mAP points and in % of ``separate``. The untrained reference is never compared.
    """
    from nhllib.analysis import stats

    data = main_comparison(trained(metrics), distill_weight)
    rows = per_length_rows(data, metric) if not data.empty else pd.DataFrame(columns=list(METRIC_KEYS))
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
    runs = run_index(data).set_index("run_id").join(run_level_rows(data, ("best_epoch", "epochs_run")))
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
    return sort_variants(table[columns], ["method", "variant", "distill_weight"])


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
    keys = [*context_keys(metrics), "method", "variant", "distill_weight", "seed", "code_lengths"]
    if metrics.empty:
        return pd.DataFrame(columns=[*keys, *SPEEDUP_VALUES])
    baseline = single_length_variant()
    metrics = trained(metrics)  # the reference trains nothing: no time to compare
    if metrics.empty:
        return pd.DataFrame(columns=[*keys, *SPEEDUP_VALUES])
    runs = run_index(metrics).set_index("run_id")
    level = run_level_rows(metrics, ("train_time_s", "epochs_run", "best_epoch"))
    runs = runs.join(level)
    context = context_keys(metrics)

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
    return sort_variants(frame, keys)


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
    return sort_variants(table[columns], keys)


def delta_table(metrics: pd.DataFrame, metric: str = "map", reference: str | None = None,
                digits: int = 3) -> pd.DataFrame:
    """Per method, variant, λ and code length: metric(variant) − metric(reference), mean ± std over seeds.

    ``reference`` defaults to the single-length baseline (``separate``). Differences are paired by seed over the
    seeds both have (``paired=True``, ``n`` = pairs, std of the paired differences). When they share no seed the
    difference of the two means is given with ``paired=False``, ``n=0`` and std NaN.
    """
    rows = trained(per_length_rows(metrics, metric))
    reference = single_length_variant() if reference is None else reference
    context = context_keys(rows)
    keys = [*context, "method", "variant", "distill_weight", "code_length"]
    columns = [*keys, "reference", "mean", "std", "n", "paired", "variant_mean", "reference_mean", "formatted"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    check_unique_seeds(rows, keys, "delta_table")
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
    return sort_variants(table[columns], keys)
