"""mAP against code length, the ablation of NHL's parts, the verdict on NHL, the distillation weight."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nhllib.analysis import tables
from nhllib.plots.common import (
    COLLAPSED_COLOR, METRIC_LABELS, REFERENCE_LABEL, _caption, _collapse_flags, _dodge, _draw_reference,
    _draw_series, _finish, _grid, _length_colors, _ordered_variants, _per_length_rows, _point_key,
    _reference_note, _seed_note, _single_context, _skip, _style, _variant_colors, length_axis,
)

__all__ = ["plot_ablation", "plot_distill_sensitivity", "plot_map_vs_length", "plot_verdict"]


def plot_map_vs_length(metrics: pd.DataFrame, metric: str = "map", distill_weight: float | None = None,
                       ncols: int = 5, methods: Sequence[str] | None = None) -> Figure | None:
    """Figure 1: mAP against code length per method (panels wrap after ``ncols``), ``separate`` against every
    NHL variant; the untrained reference dashed grey, single runs hollow, collapsed models grey."""
    data = tables.main_comparison(metrics, distill_weight)
    rows = _per_length_rows(data, metric)
    if methods is not None and not rows.empty:
        rows = rows[rows["method"].isin(list(methods)) | (rows["variant"] == tables.reference_variant())]
    trained_rows = tables.trained(rows)
    if trained_rows.empty:
        _skip("map_vs_length", f"no per-length {metric!r} rows")
        return None
    _single_context(rows)
    table = tables.map_table(trained_rows, metric)
    reference = tables.reference_table(rows, metric)
    flagged, collapse_note = _collapse_flags(data, metric)  # all metrics: a run may carry a `collapsed` one
    methods = sorted(table["method"].unique())
    variants = _ordered_variants(table["variant"])
    colors = _variant_colors(variants)
    baseline = tables.single_length_variant()
    note = " ".join(filter(None, [f"{METRIC_LABELS.get(metric, metric)}.", _seed_note(table["n"]),
                                  _reference_note(reference), collapse_note]))
    with _style():
        fig, axes, caption = _grid(len(methods), ncols, _caption(trained_rows, note), panel=(3.4, 2.8))
        handles = []
        for ax, method in zip(axes.flat, methods):
            sub = table[table["method"] == method]
            ref = _draw_reference(ax, reference)
            if ref is not None:
                handles.append((ref, REFERENCE_LABEL))
            for j, variant in enumerate(variants):
                line = sub[sub["variant"] == variant].sort_values("code_length")
                if line.empty:
                    continue
                x = line["code_length"] * 2 ** _dodge(j, len(variants), 0.25)
                hit = [_point_key(method, variant, d, c) in flagged
                       for d, c in zip(line["distill_weight"], line["code_length"])]
                ls = "--" if variant == baseline else "-"
                _draw_series(ax, x, line, colors[variant], variant, hit, ls=ls)
                handles.append((Line2D([], [], color=colors[variant], ls=ls, marker="o", ms=4), variant))
            length_axis(ax, sub["code_length"])
            ax.set_title(method)
            ax.set_ylabel(_short_label(metric))
        handles += _marker_legend(table["n"], bool(flagged))
        return _finish(fig, axes, len(methods), f"{METRIC_LABELS.get(metric, metric).split(' (')[0]} vs code length: "
                       "separate models vs nested variants", caption, handles, "variant")


def _seeds_behind(summary: dict) -> str:
    """``Means over n = 3 seeds.`` / ``One run each (n = 1).`` for the tables behind a figure."""
    n = pd.concat([t["n"] for t in summary.values()]) if summary else pd.Series(dtype=int)
    if n.empty or (n <= 1).all():
        return "One run each (n = 1 seed)."
    if (n <= 1).any():
        return f"Means over up to {int(n.max())} seeds; some points are a single run (n = 1)."
    return f"Means over n = {int(n.min())}{'' if n.min() == n.max() else f'–{int(n.max())}'} seeds."


def _short_label(metric: str) -> str:
    """``query mAP (0–1)``: the axis label; the caption says which checkpoint."""
    return "query mAP (0–1)" if metric == "map" else METRIC_LABELS.get(metric, metric)


def _marker_legend(n: pd.Series, any_collapsed: bool) -> list:
    """Legend entries explaining the marker styles that occur."""
    entries = []
    n = pd.Series(n).dropna()
    if (n > 1).any():
        entries.append((Line2D([], [], ls="", marker="o", color="0.3"), "mean over seeds (± std)"))
    if (n <= 1).any():
        entries.append((Line2D([], [], ls="", marker="o", markerfacecolor="white", color="0.3"), "one run (n = 1)"))
    if any_collapsed:
        entries.append((Line2D([], [], ls="", marker="o", color=COLLAPSED_COLOR), "collapsed"))
    return entries


# ---------------------------------------------------------------- 3. ablation


def plot_ablation(metrics: pd.DataFrame, variants: Sequence[str] | None = None, metric: str = "map",
                  distill_weight: float | None = None) -> Figure | None:
    """Figure 3: mAP per code length of the nested variants (default: every variant except ``separate``);
    a second column shows the paired difference to ``separate`` when those runs exist."""
    baseline = tables.single_length_variant()
    wanted = [v for v in tables.variant_order(reference=False) if v != baseline] if variants is None else list(variants)
    data = tables.main_comparison(metrics, distill_weight)
    rows = _per_length_rows(data, metric)
    rows = rows[rows["variant"].isin([*wanted, baseline])] if not rows.empty else rows
    if rows.empty or not rows["variant"].isin(wanted).any():
        _skip("ablation", f"no runs of the variants {wanted}")
        return None
    _single_context(rows)
    table = tables.map_table(rows[rows["variant"].isin(wanted)], metric)
    delta = tables.delta_table(rows, metric)
    reference = tables.reference_table(tables.main_comparison(metrics, distill_weight), metric)
    flagged, collapse_note = _collapse_flags(tables.main_comparison(metrics, distill_weight), metric)
    # The ablation is about the methods run with more than one nested variant; the others (nhl only) are the
    # verdict figure's. A study where no method has two keeps them all.
    counts = table.groupby("method")["variant"].nunique()
    methods = sorted(counts.index[counts > 1]) or sorted(counts.index)
    table = table[table["method"].isin(methods)]
    delta = delta[delta["method"].isin(methods)] if not delta.empty else delta
    present = _ordered_variants(table["variant"])
    colors = _variant_colors(present)
    show_delta = not delta.empty
    note = " ".join(filter(None, [_seed_note(table["n"]), _reference_note(reference), collapse_note]))
    if show_delta:
        note += (f" Right: paired difference to {baseline} (same seed); "
                 + ("one pair per point." if (delta["n"] <= 1).all() else "mean ± std over the paired seeds."))
    with _style():
        # With the difference: one method per row, its mAP left and its difference right.
        fig, axes, caption = _grid(len(methods) * (2 if show_delta else 1), 2 if show_delta else 3,
                                   _caption(rows[rows["method"].isin(methods)], note), panel=(3.6, 2.8))
        handles = []
        panels = [(method, kind) for method in methods for kind in (["map", "delta"] if show_delta else ["map"])]
        for ax, (method, kind) in zip(axes.flat, panels):
            frame = table if kind == "map" else delta
            sub = frame[frame["method"] == method]
            lengths = sorted(sub["code_length"].unique()) if not sub.empty else []
            position = {length: k for k, length in enumerate(lengths)}
            if kind == "map":
                ref = _draw_reference(ax, reference, position)
                if ref is not None:
                    handles.append((ref, REFERENCE_LABEL))
            for j, variant in enumerate(present):
                line = sub[sub["variant"] == variant].sort_values("code_length")
                if line.empty:
                    continue
                x = line["code_length"].map(position) + _dodge(j, len(present))
                hit = [_point_key(method, variant, d, c) in flagged
                       for d, c in zip(line["distill_weight"], line["code_length"])]
                _draw_series(ax, x, line, colors[variant], variant, hit, connect=False)
                handles.append((Line2D([], [], ls="", marker="o", color=colors[variant]), variant))
            ax.set_xticks(range(len(lengths)), labels=[str(int(v)) for v in lengths])
            ax.set_xlabel("code length (bits)")
            if kind == "map":
                ax.set_ylabel(_short_label(metric))
                ax.set_title(method)
            else:
                ax.axhline(0, color="0.3", lw=0.8)
                ax.set_ylabel(f"mAP − mAP({baseline})")
                ax.set_title(f"{method}: difference to {baseline}")
        handles += _marker_legend(pd.concat([table["n"], delta["n"]]) if show_delta else table["n"], bool(flagged))
        return _finish(fig, axes, len(panels), "Ablation: what each part of NHL contributes", caption, handles,
                       "variant")


def plot_verdict(metrics: pd.DataFrame, variant: str = "nhl", metric: str = "map",
                 distill_weight: float | None = None) -> Figure | None:
    """The verdict in one panel, methods on the y axis: ``variant`` − ``separate`` per code length (mAP points,
    paired by seed) with its 95 % interval (:func:`nhllib.analysis.tables.verdict_tables`); single pairs hollow, comparisons
    with a collapsed side grey."""
    if metrics.empty:
        _skip("verdict", "no runs")
        return None
    verdict = tables.verdict_tables(metrics, variant, metric, distill_weight)["verdict"]
    if verdict.empty:
        _skip("verdict", f"no method has both {variant!r} and separate runs with a common seed")
        return None
    methods_present = sorted(verdict["method"].unique(), reverse=True)  # alphabetical from the top
    lengths = sorted(verdict["code_length"].unique())
    colors = _length_colors(lengths)
    ns = verdict["n"]
    note = (f"Point: the paired difference {variant} − separate (same seed) in mAP points (×100)"
            + (", mean over the seed pairs; bar: its 95 % t-interval. " if (verdict["n"] > 1).any() else ". ") + (
                "Every point is a single pair (n = 1): no interval, no verdict." if (ns <= 1).all() else
                f"n = {int(ns.min())}{'' if ns.min() == ns.max() else f'–{int(ns.max())}'} seed pairs per point"
                + ("; hollow: one pair, no interval." if (ns <= 1).any() else "."))
            + (" Grey: at least one side has a collapsed run, so the difference says nothing about NHL."
               if (verdict["collapsed"] != "").any() else ""))
    with _style():
        used = tables.main_comparison(tables.trained(metrics), distill_weight)
        used = used[used["method"].isin(methods_present) & used["variant"].isin([variant, tables.single_length_variant()])]
        fig, axes, caption = _grid(1, 1, _caption(used, note),
                                   panel=(7.0, max(2.6, 0.42 * len(methods_present) + 1.0)))
        ax = axes.flat[0]
        for j, length in enumerate(lengths):
            part = verdict[verdict["code_length"] == length]
            y = part["method"].map({m: k for k, m in enumerate(methods_present)}) + _dodge(j, len(lengths), 0.7)
            x = 100 * part["mean"]
            grey = (part["collapsed"] != "").to_numpy()
            single = (part["n"] <= 1).to_numpy()
            lo, hi = 100 * (part["mean"] - part["ci_low"]), 100 * (part["ci_high"] - part["mean"])
            has_ci = part["ci_low"].notna().to_numpy()
            for mask, color in ((has_ci & ~grey, colors[length]), (has_ci & grey, COLLAPSED_COLOR)):
                if mask.any():
                    ax.errorbar(x[mask], y[mask], xerr=[lo[mask], hi[mask]], fmt="none", ecolor=color, lw=1,
                                capsize=2)
            for mask, gid in ((~grey & ~single, "mean"), (~grey & single, "n=1"), (grey & ~single, "collapsed"),
                              (grey & single, "collapsed,n=1")):
                if mask.any():
                    edge = COLLAPSED_COLOR if "collapsed" in gid else colors[length]
                    dots = ax.scatter(x[mask], y[mask], s=28, facecolor="white" if "n=1" in gid else edge,
                                      edgecolor=edge, linewidth=1.2, zorder=3)
                    dots.set_gid(gid)
        ax.axvline(0, color="0.3", lw=0.9)
        ax.set_yticks(range(len(methods_present)), labels=methods_present)
        ax.set_xlabel(f"mAP({variant}) − mAP(separate), points (×100)")
        ax.set_ylabel("hashing method")
        ax.set_title(f"{variant} against separate models, per code length")
        handles = [(Line2D([], [], ls="", marker="o", color=colors[length]), f"{length} bits") for length in lengths]
        if (verdict["n"] > 1).any():
            handles.append((Line2D([], [], marker="o", color="0.3", lw=1), "mean, 95 % interval"))
        if (verdict["n"] <= 1).any():
            handles.append((Line2D([], [], ls="", marker="o", markerfacecolor="white", color="0.3"), "one pair (n = 1)"))
        if (verdict["collapsed"] != "").any():
            handles.append((Line2D([], [], ls="", marker="o", color=COLLAPSED_COLOR), "a side collapsed"))
        return _finish(fig, axes, 1, f"Does one nested model match K separate ones? ({_short_label(metric)})",
                       caption, handles,
                       "code length")


# ---------------------------------------------------------------- 5. distillation weight


def plot_distill_sensitivity(metrics: pd.DataFrame, variant: str = "nhl", metric: str = "map",
                             ncols: int = 3) -> Figure | None:
    """Figure 5: mAP against the distillation weight λ per code length, for the methods whose ``variant`` runs
    use at least two λ values (x on a log scale; symlog when λ = 0 is among them)."""
    rows = _per_length_rows(tables.main_targets(metrics), metric)
    rows = rows[rows["variant"] == variant] if not rows.empty else rows
    if rows.empty:
        _skip("distill_sensitivity", f"no runs of variant {variant!r}")
        return None
    swept = [m for m, grp in rows.groupby("method") if grp["distill_weight"].nunique() >= 2]
    rows = rows[rows["method"].isin(swept)]
    if rows.empty:
        _skip("distill_sensitivity", f"no method has {variant!r} runs with two or more λ values")
        return None
    _single_context(rows)
    table = tables.map_table(rows, metric)
    colors = _length_colors(table["code_length"])
    methods = sorted(table["method"].unique())
    flagged, collapse_note = _collapse_flags(
        metrics[metrics["variant"].isin([variant, tables.reference_variant()])], metric)
    note = " ".join(filter(None, [f"Variant {variant!r}.", _seed_note(table["n"]), collapse_note]))
    with _style():
        fig, axes, caption = _grid(len(methods), ncols, _caption(rows, note))
        handles = []
        for ax, method in zip(axes.flat, methods):
            sub = table[table["method"] == method]
            for length, line in sub.groupby("code_length"):
                line = line.sort_values("distill_weight")
                hit = [_point_key(method, variant, d, length) in flagged for d in line["distill_weight"]]
                _draw_series(ax, line["distill_weight"], line, colors[int(length)], f"{int(length)} bits", hit)
                handles.append((Line2D([], [], color=colors[int(length)], marker="o", ms=4), f"{int(length)} bits"))
            lams = sorted(sub["distill_weight"].unique())
            if lams[0] > 0:
                ax.set_xscale("log")
                ax.set_xlabel("distillation weight λ (log scale)")
            else:
                ax.set_xscale("symlog", linthresh=min(v for v in lams if v > 0))
                ax.set_xlabel("distillation weight λ (symmetric log scale)")
            ax.set_xticks(lams, labels=[f"{v:g}" for v in lams])
            ax.minorticks_off()
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.set_title(method)
        handles += _marker_legend(table["n"], bool(flagged))
        return _finish(fig, axes, len(methods), "Sensitivity to the distillation weight λ", caption, handles,
                       "code length")
