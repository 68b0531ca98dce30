"""Learning over epochs: a study's training curves and one run's learning curve (01_train)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nhllib.analysis import tables
from nhllib.plots.common import (
    COLLAPSED_COLOR, _caption, _collapse_flags, _default_variants, _finish, _grid, _length_colors,
    _ordered_variants, _point_key, _skip, _style,
)
from nhllib.plots.conflicts import _epoch_axis
from nhllib.store.results import HISTORY_PLOT_COLUMNS, require_columns

__all__ = ["plot_learning_curve", "plot_training_curves"]


def plot_training_curves(history: pd.DataFrame, metrics: pd.DataFrame | None = None,
                         variants: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                         distill_weight: float | None = None, ncols: int = 5) -> Figure | None:
    """Validation mAP per epoch (``history.csv``), one panel per method (wrapping after ``ncols``): the full
    method solid and ``separate`` dashed (default variants), one colour per code length, mean over seeds; the
    untrained reference as crosses at epoch 0. With ``metrics``, collapsed models are drawn grey."""
    if history.empty or "metric" not in history.columns:
        _skip("training_curves", "no history")
        return None
    require_columns(history, HISTORY_PLOT_COLUMNS, "history")
    rows = history[(history["split"] == "validation") & (history["metric"] == "map")]
    rows = tables.main_comparison(rows, distill_weight) if not rows.empty else rows
    reference = rows[rows["variant"] == tables.reference_variant()] if not rows.empty else rows
    rows = tables.trained(rows)
    if not rows.empty:
        rows = tables.select(rows, variant=_default_variants(rows) if variants is None else list(variants),
                             method=methods)
    if rows.empty:
        _skip("training_curves", "no validation mAP in the history of the chosen runs")
        return None
    rows = rows.astype({"code_length": int, "epoch": int, "value": float})
    flagged, collapse_note = _collapse_flags(metrics) if metrics is not None else (set(), "")
    colors = _length_colors(rows["code_length"])
    baseline = tables.single_length_variant()
    methods_present = sorted(rows["method"].unique())
    present = _ordered_variants(rows["variant"])
    n = rows.groupby(["method", "variant", "code_length", "epoch"])["run_id"].nunique()
    seeds = ("one run per line (n = 1)" if n.max() <= 1 else
             f"mean over n = {int(n.min())}{'' if n.min() == n.max() else f'–{int(n.max())}'} seeds per line")
    note = " ".join(filter(None, [
        f"Validation mAP at each evaluation; {seeds}. Line style: "
        + ", ".join(f"{v} {'dashed' if v == baseline else 'solid'}" for v in present) + ".",
        "Crosses at epoch 0: the untrained network (reference)." if not reference.empty else "", collapse_note]))
    with _style():
        fig, axes, caption = _grid(len(methods_present), ncols, _caption(rows, note), panel=(3.4, 2.7))
        handles = []
        for ax, method in zip(axes.flat, methods_present):
            sub = rows[rows["method"] == method]
            for variant in present:
                part = sub[sub["variant"] == variant]
                for length, line in part.groupby("code_length"):
                    curve = line.groupby("epoch")["value"].mean().sort_index()
                    lam = float(line["distill_weight"].iloc[0])
                    grey = _point_key(method, variant, lam, length) in flagged
                    (h,) = ax.plot(curve.index, curve.values, color=COLLAPSED_COLOR if grey else colors[length],
                                   ls="--" if variant == baseline else "-", lw=1.3, marker=".", ms=3)
                    h.set_gid("collapsed" if grey else f"{variant}:{length}")
                    handles.append((Line2D([], [], color=colors[length], lw=1.5), f"{length} bits"))
            if not reference.empty:
                level = reference.groupby("code_length")["value"].mean()
                for length, value in level.items():
                    if int(length) in colors:
                        ax.plot([0], [value], marker="x", ls="", color=colors[int(length)], ms=5, gid="reference")
            _epoch_axis(ax)
            ax.set_ylabel("validation mAP (0–1)")
            ax.set_title(method)
        handles += [(Line2D([], [], color="0.3", ls=ls), v) for v, ls in
                    ((v, "--" if v == baseline else "-") for v in present)]
        if flagged:
            handles.append((Line2D([], [], color=COLLAPSED_COLOR), "collapsed"))
        return _finish(fig, axes, len(methods_present), "Training curves: validation mAP per epoch", caption,
                       handles, "code length / variant")


# ---------------------------------------------------------------- one run's learning curve (01_train)


def plot_learning_curve(history: pd.DataFrame, title: str = "") -> Figure | None:
    """One run's ``history.csv``: the training objective per code length (left) and the validation and query
    mAP at each evaluation (right), against the epoch. ``None`` when the history holds neither (an untrained
    reference run)."""
    require_columns(history, ("epoch", "code_length", "split", "metric", "value"), "history")
    objective = history[(history["metric"] == "objective") & history["code_length"].notna()]
    scores = history[(history["metric"] == "map") & history["code_length"].notna()]
    if objective.empty and scores.empty:
        _skip("learning_curve", "the history has no training objective and no evaluation")
        return None
    lengths = sorted({int(n) for n in pd.concat([objective, scores])["code_length"]})
    colors = _length_colors(lengths)
    with _style():
        fig, axes, caption = _grid(2, 2, "Left: mean training objective per epoch and code length (scales differ "
                                   "between methods). Right: mAP at each evaluation; early stopping selects on "
                                   "validation (dashed); the query mAP (solid) is reported.",
                                   panel=(4.4, 3.2))
        left, right = axes.flat[0], axes.flat[1]
        for length in lengths:
            sub = objective[objective["code_length"] == length].sort_values("epoch")
            left.plot(sub["epoch"], sub["value"], marker="o", ms=3, color=colors[length])
            for split, style in (("val", "--"), ("query", "-")):
                sub = scores[(scores["code_length"] == length) & (scores["split"] == split)].sort_values("epoch")
                right.plot(sub["epoch"], sub["value"], ls=style, marker="o", ms=3, color=colors[length])
        left.set(xlabel="epoch", ylabel="training objective (per batch, mean)", title="training objective")
        right.set(xlabel="epoch", ylabel="mAP (0–1)", title="validation (dashed) and query (solid) mAP")
        for ax in (left, right):
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles = [(Line2D([], [], color=colors[n], marker="o", ms=3), f"{n} bits") for n in lengths]
        return _finish(fig, axes, 2, title or "Learning curve", caption, handles, "code length")
