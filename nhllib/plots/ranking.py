"""How the ranking is scored: Hamming-distance ties, and precision-recall by Hamming radius."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nhllib.analysis import tables
from nhllib.plots.accuracy import _seeds_behind
from nhllib.plots.common import (
    TIE_METRICS, _caption, _default_variants, _dodge, _facets, _finish, _grid, _length_colors,
    _ordered_variants, _single_context, _skip, _style, _variant_colors, length_axis,
)
from nhllib.plots.conflicts import _panels_by_run_kind
from nhllib.store.results import CURVE_PLOT_COLUMNS, require_columns

__all__ = ["plot_curves", "plot_ties"]


def plot_ties(metrics: pd.DataFrame, variants: Sequence[str] | None = None, distill_weight: float | None = None,
              ncols: int = 3) -> Figure | None:
    """Figure 6: optimistic / expected / pessimistic / index-order mAP per code length (mean over seeds).

    Default variants: ``separate`` and the full method (conflict weighting + distillation) when present, else
    every variant. The bar spans pessimistic to optimistic: how much the order inside Hamming-distance ties
    alone can move mAP; it is widest for short codes, where many items share a distance.
    """
    data = tables.main_comparison(metrics, distill_weight)
    if data.empty or "metric" not in data.columns:
        _skip("ties", "no runs")
        return None
    rows = data[data["metric"].isin(TIE_METRICS) & data["code_length"].notna()]
    if rows.empty:
        _skip("ties", f"no rows of {TIE_METRICS}")
        return None
    _single_context(rows)
    variants = _default_variants(rows) if variants is None else list(variants)
    rows = rows[rows["variant"].isin(variants)]
    if rows.empty:
        _skip("ties", f"no runs of variants {list(variants)}")
        return None
    summary = {m: tables.map_table(rows, m) for m in TIE_METRICS if (rows["metric"] == m).any()}
    keys = ["method", "variant", "code_length"]
    wide = None
    for m, table in summary.items():
        part = table[keys + ["mean"]].rename(columns={"mean": m})
        wide = part if wide is None else wide.merge(part, on=keys, how="outer")
    present = _ordered_variants(wide["variant"])
    colors = _variant_colors(present)
    methods = sorted(wide["method"].unique())
    note = "Bar: pessimistic (relevant items last within a tie) to optimistic (first); dot: expected over random " \
           "orders within ties; cross: database (index) order. " + _seeds_behind(summary)
    with _style():
        fig, axes, caption = _grid(len(methods), ncols, _caption(rows, note))
        handles = []
        for ax, method in zip(axes.flat, methods):
            sub = wide[wide["method"] == method]
            for j, variant in enumerate(present):
                line = sub[sub["variant"] == variant].sort_values("code_length")
                if line.empty:
                    continue
                x = line["code_length"] * 2 ** _dodge(j, len(present), 0.3)
                color = colors[variant]
                if {"map_pessimistic", "map_optimistic"} <= set(line.columns):
                    ax.vlines(x, line["map_pessimistic"], line["map_optimistic"], color=color, lw=6, alpha=0.35)
                if "map_expected" in line:
                    ax.plot(x, line["map_expected"], "o", color=color, ms=4)
                if "map_index" in line:
                    ax.plot(x, line["map_index"], "x", color=color, ms=5)
                handles.append((Patch(facecolor=color, alpha=0.6), variant))
            length_axis(ax, sub["code_length"])
            ax.set_ylabel("query mAP (0–1)")
            ax.set_title(method)
        handles += [
            (Patch(facecolor="0.6", alpha=0.5), "pessimistic–optimistic range"),
            (Line2D([], [], ls="", marker="o", color="0.3"), "expected (tie-aware)"),
            (Line2D([], [], ls="", marker="x", color="0.3"), "database order"),
        ]
        return _finish(fig, axes, len(methods), "Ties in Hamming ranking: how much the tie order moves mAP",
                       caption, handles)


# ---------------------------------------------------------------- 7. curves


def plot_curves(curves: pd.DataFrame, kind: str = "pr", variants: Sequence[str] | None = None,
                seed: int | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 7: precision-recall (``kind="pr"``, one point per Hamming radius) or precision@K
    (``kind="p_at_k"``) per code length, for one representative run per method × variant (default variants:
    ``separate`` and the full method, else every variant).

    The run is the one with ``seed`` (default: the smallest seed available); for ``separate`` it is the
    single-length runs of that seed, one per length. ``curves`` is ``curves.csv`` joined to its runs.
    """
    if kind not in ("pr", "p_at_k"):
        raise ValueError(f"kind must be 'pr' or 'p_at_k', got {kind!r}")
    if curves.empty:
        _skip(f"curves_{kind}", "no curves")
        return None
    require_columns(curves, CURVE_PLOT_COLUMNS, "curves")
    data = tables.main_comparison(curves, distill_weight)
    rows = data[data["curve"] == kind].dropna(subset=["precision"])
    rows = tables.select(rows, variant=_default_variants(rows) if variants is None else list(variants))
    if rows.empty:
        _skip(f"curves_{kind}", f"no {kind!r} curves for variants {variants}")
        return None
    _single_context(rows)
    picked = []
    for (method, variant), grp in rows.groupby(["method", "variant"], sort=False):
        chosen = seed if seed is not None and seed in set(grp["seed"]) else int(grp["seed"].min())
        grp = grp[grp["seed"] == chosen]
        # one run per length (several would be runs differing in unrecorded settings: keep the first id)
        first = grp.groupby("code_length")["run_id"].min()
        picked.append(grp[grp["run_id"].isin(first.values)])
    rows = pd.concat(picked, ignore_index=True)
    rows = rows.assign(code_length=rows["code_length"].astype(int))
    colors = _length_colors(rows["code_length"])
    panels = _panels_by_run_kind(rows)
    if kind == "pr":
        title = "Precision–recall of Hamming-radius retrieval"
        note = "One run per panel; one point per Hamming radius 0…L (items within the radius)."
    else:
        title = "Precision@K"
        note = "One run per panel; precision of the top K items in Hamming ranking (tie-aware)."
    with _style():
        fig, axes, caption, where = _facets(panels, _caption(rows, note), panel=(3.4, 2.9))
        handles = []
        for (method, variant), ax in where.items():
            sub = rows[(rows["method"] == method) & (rows["variant"] == variant)]
            for length, line in sub.groupby("code_length"):
                line = line.sort_values("x")
                if kind == "pr":
                    (h,) = ax.plot(line["recall"], line["precision"], marker=".", ms=3, lw=1.3, color=colors[length])
                else:
                    (h,) = ax.plot(line["x"], line["precision"], marker=".", ms=3, lw=1.3, color=colors[length])
                handles.append((h, f"{length} bits"))
            if kind == "pr":
                ax.set_xlim(-0.02, 1.02)
                ax.set_xlabel("recall (0–1)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("K, retrieved items (log scale)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("precision (0–1)")
            ax.set_title(f"{method} · {variant}")
        return _finish(fig, axes, where.values(), title, caption, handles, "code length")
