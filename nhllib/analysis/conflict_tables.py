"""Tables of the gradient-conflict statistics and of the per-length weights the training applied."""

from __future__ import annotations


import pandas as pd

from nhllib.analysis.selection import context_keys, sort_variants
from nhllib.store.results import require_columns

__all__ = ["conflict_summary", "weight_summary"]


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
    keys = [*context_keys(conflicts), "method", "variant", "distill_weight", "short_length", "long_length"]
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
    return sort_variants(table[columns], keys)


def weight_summary(history: pd.DataFrame) -> pd.DataFrame:
    """Per method, variant, λ and code length: the applied per-length weight (history metric ``weight``).

    ``history`` is ``history.csv`` joined to its runs. Columns ``first`` / ``last`` (first and last epoch,
    mean over runs), ``mean`` (over epochs and runs), ``min`` (smallest per-epoch mean) and ``n_runs``.
    """
    keys = [*context_keys(history), "method", "variant", "distill_weight", "code_length"]
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
    return sort_variants(table.reset_index()[columns], keys)
