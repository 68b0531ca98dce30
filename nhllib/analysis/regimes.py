"""The study's tables per *regime*: where the backbone starts and whether it trains.

A regime is read from each run's ``config.json`` (never from its name): the backbone, the weight source of
``pretrained`` (:mod:`nhllib.weight_sources`) and ``freeze_backbone``; for example ``mlp from scratch``,
``mlp in-domain pretrained, fine-tuned``, ``mlp coarse pretrained, fine-tuned``, ``mlp in-domain pretrained,
frozen``, ``cnn from scratch`` (studies/regimes.yaml). Every table of :mod:`nhllib.analysis.tables` that the default study
reports is computed once per regime, on that regime's runs only, and the results are stacked with a ``regime``
column first: the per-cell verdicts, the counts with the sign test per length, the average gain, the training
speed-up, the epochs to the best validation mAP, the conflict rates and the untrained reference level. The
speed-up is set beside the backbone's share of a training step (``benchmarks/bench_backbone_share.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from nhllib.analysis import tables
from nhllib.analysis.stats import sign_test
from nhllib.store.results import require_columns
from nhllib.weight_sources import POOL_PREFIX, weight_source

__all__ = ["regime_name", "regime_index", "add_regime", "regime_order", "regime_tables", "overall_sign_tests",
           "speedup_with_share", "read_backbone_share", "regime_subset", "choose_regime"]

logger = logging.getLogger(__name__)

SCRATCH = "from scratch"


def regime_name(backbone: str, pretrained, freeze_backbone: bool = False) -> str:
    """``"<backbone> from scratch"``, or ``"<backbone> <source> pretrained, fine-tuned|frozen"``."""
    source = weight_source(pretrained)
    if source is None:
        return f"{backbone} {SCRATCH}" + (", frozen" if freeze_backbone else "")
    label = source[len(POOL_PREFIX):] if source.startswith(POOL_PREFIX) else source
    return f"{backbone} {label} pretrained, {'frozen' if freeze_backbone else 'fine-tuned'}"


def _order_key(backbone: str, pretrained, freeze: bool, main_backbone: str) -> tuple:
    source = weight_source(pretrained)
    rank = {None: 0, POOL_PREFIX + "in-domain": 1, POOL_PREFIX + "coarse": 2}.get(source, 3)
    return (backbone != main_backbone, backbone, bool(freeze), rank)


def regime_index(runs: pd.DataFrame) -> pd.DataFrame:
    """``run_id, regime, backbone_lr_mult`` per run from :func:`nhllib.store.results.load_runs` (config fields that a
    run written before they existed lacks take their defaults); ``regime`` is an ordered categorical: the most
    common backbone first, from scratch before pretrained, fine-tuned before frozen."""
    require_columns(runs, ["run_id", "backbone"], "runs")
    runs = runs.copy()
    for name, default in (("pretrained", False), ("freeze_backbone", False), ("backbone_lr_mult", 1.0)):
        if name not in runs.columns:
            runs[name] = default
        runs[name] = runs[name].where(runs[name].notna(), default)
    main = runs["backbone"].mode().iloc[0] if len(runs) else ""
    keys = list(zip(runs["backbone"], runs["pretrained"], runs["freeze_backbone"]))
    names = [regime_name(*k) for k in keys]
    order = sorted(set(zip(names, keys)), key=lambda item: _order_key(*item[1], main))
    categories = list(dict.fromkeys(name for name, _ in order))
    out = pd.DataFrame({"run_id": runs["run_id"], "regime": pd.Categorical(names, categories=categories, ordered=True),
                        "backbone_lr_mult": runs["backbone_lr_mult"].astype(float)})
    return out


def add_regime(frame: pd.DataFrame, regimes: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with ``run_id``) with its run's ``regime`` as the first column."""
    if frame.empty:
        return frame.assign(regime=pd.Series(dtype=object))[["regime", *frame.columns]]
    joined = frame.merge(regimes[["run_id", "regime"]], on="run_id", how="left")
    missing = joined.loc[joined["regime"].isna(), "run_id"].unique()
    if len(missing):
        raise KeyError(f"no regime for run_id(s) {sorted(missing)[:5]}; build the regimes from the same study")
    return joined[["regime", *frame.columns]]


def regime_order(regimes: pd.DataFrame) -> list[str]:
    present = set(regimes["regime"].astype(str))
    return [r for r in regimes["regime"].cat.categories if r in present]


def regime_subset(frame: pd.DataFrame, regimes: pd.DataFrame, regime: str) -> pd.DataFrame:
    """The rows of ``frame`` whose run belongs to ``regime``."""
    ids = set(regimes.loc[regimes["regime"].astype(str) == regime, "run_id"])
    return frame[frame["run_id"].isin(ids)]


def choose_regime(runs: pd.DataFrame, regime: str = "") -> tuple[str, set[str]]:
    """The regime a notebook shows and its run ids: ``regime``, or the first in order when it is empty.

    ``runs`` is :func:`nhllib.store.results.load_runs`. A study with a single regime gives ``("", every run id)``
    when ``regime`` is empty, so that notebooks read it as before; a regime the study does not have is an error
    naming the ones it has.
    """
    if runs.empty:
        return "", set()
    index = regime_index(runs)
    names = regime_order(index)
    if not regime and len(names) == 1:
        return "", set(index["run_id"])
    chosen = regime or names[0]
    if chosen not in names:
        raise ValueError(f"regime must be one of {names}, got {chosen!r}")
    return chosen, set(regime_subset(index, index, chosen)["run_id"])


def _stack(per_regime: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frames = [f.assign(regime=name)[["regime", *f.columns]] for name, f in per_regime.items() if not f.empty]
    if not frames:
        columns = ["regime", *next(iter(per_regime.values())).columns] if per_regime else ["regime"]
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def regime_tables(metrics: pd.DataFrame, conflicts: pd.DataFrame, regimes: pd.DataFrame,
                  distill_weight: float | None = None) -> dict[str, pd.DataFrame]:
    """Every regime's tables, stacked with a ``regime`` column (names as in :mod:`nhllib.analysis.tables`, prefixed
    ``regime_``): ``verdict``, ``verdict_counts`` (sign test per length), ``average_gain``, ``speedup``,
    ``best_epochs``, ``conflicts`` and ``reference`` (the untrained hash layer on the regime's backbone)."""
    builders: dict[str, Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]] = {
        "speedup": lambda m, c: tables.speedup_table(m),
        "best_epochs": lambda m, c: tables.best_epoch_table(m, distill_weight),
        "conflicts": lambda m, c: tables.conflict_summary(c),
        "reference": lambda m, c: tables.reference_table(m),
    }
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for regime in regime_order(regimes):
        m = regime_subset(metrics, regimes, regime)
        c = regime_subset(conflicts, regimes, regime) if not conflicts.empty else conflicts
        lam = distill_weight if distill_weight is not None else tables.reference_distill_weight(m)
        for name, frame in tables.verdict_tables(m, distill_weight=lam).items():
            out.setdefault(name, {})[regime] = frame
        for name, build in builders.items():
            out.setdefault(name, {})[regime] = build(m, c)
    return {f"regime_{name}": _stack(per_regime) for name, per_regime in out.items()}


def overall_sign_tests(verdict: pd.DataFrame) -> pd.DataFrame:
    """Per regime, over every method × length cell: the verdict counts and a sign test of the mean differences
    (cells are not independent across lengths of one method, so read p as descriptive)."""
    rows = []
    for regime, group in verdict.groupby("regime", sort=False, observed=True):
        counts = group["verdict"].value_counts()
        test = sign_test(group["mean"].tolist())
        rows.append({"regime": regime, "cells": len(group), "methods": group["method"].nunique(),
                     **{v: int(counts.get(v, 0)) for v in ("gain", "tie", "lose")},
                     "higher": test["positive"], "lower": test["negative"], "sign_p": test["p"],
                     "mean_difference": float(group["mean"].mean())})
    return pd.DataFrame(rows, columns=["regime", "cells", "methods", "gain", "tie", "lose", "higher", "lower",
                                       "sign_p", "mean_difference"])


def read_backbone_share(path: str | Path) -> pd.DataFrame:
    """``benchmarks/results/backbone_share.json`` as a table: ``backbone, frozen, share`` (+ step times)."""
    path = Path(path)
    if not path.is_file():
        logger.info("no backbone-share benchmark at %s (python benchmarks/bench_backbone_share.py writes it)", path)
        return pd.DataFrame(columns=["backbone", "frozen", "share", "step_s", "head_step_s"])
    return pd.DataFrame(json.loads(path.read_text())["results"])


def speedup_with_share(speedup: pd.DataFrame, regimes: pd.DataFrame, share: pd.DataFrame) -> pd.DataFrame:
    """Per regime: the speed-up of ``nhl`` over the separate models (mean and range over methods) beside the
    backbone's share of a training step of that regime's backbone (fine-tuned or frozen)."""
    columns = ["regime", "methods", "speedup_mean", "speedup_min", "speedup_max", "backbone_share"]
    rows = speedup[speedup["variant"] == "nhl"] if not speedup.empty else speedup
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for regime, group in rows.groupby("regime", sort=False):
        if "distill_weight" in group and group["distill_weight"].nunique() > 1:  # a λ sweep: its main λ only
            group = group[group["distill_weight"] == group["distill_weight"].value_counts().idxmax()]
        backbone = str(regime).split(" ", 1)[0]
        frozen = str(regime).endswith("frozen")
        match = share[(share["backbone"] == backbone) & (share["frozen"] == frozen)] if not share.empty else share
        out.append({"regime": regime, "methods": group["method"].nunique(),
                    "speedup_mean": float(group["speedup_mean"].mean()),
                    "speedup_min": float(group["speedup_mean"].min()),
                    "speedup_max": float(group["speedup_mean"].max()),
                    "backbone_share": float(match["share"].iloc[0]) if len(match) else np.nan})
    return pd.DataFrame(out, columns=columns)
