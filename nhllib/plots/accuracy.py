"""The study's figures: tidy DataFrame in, matplotlib ``Figure`` out.

Inputs are :func:`nhllib.results.load_results` tables (``metrics.csv``, or ``conflicts.csv`` / ``history.csv`` /
``curves.csv`` joined to their runs with :func:`nhllib.tables.attach_runs`). All numbers come from
:mod:`nhllib.tables`; this module only draws. Every figure has a title, axis labels with units, a legend (a
colour bar for the heat map) and a caption line naming the runs it comes from. A figure whose runs do not exist
returns ``None`` (logged at INFO), so a notebook renders those that can be rendered. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing is registered globally; :func:`save_figure` and
:func:`save_slide` are the only file I/O.

Conventions every figure keeps, so that it tells the truth about its runs (the caption says which apply):
a filled marker is a mean over seeds with ± one std; a hollow marker is a single run (n = 1) with no error bar,
and the caption never says "mean over seeds" for one seed; the untrained network (variant ``untrained``,
:func:`nhllib.tables.reference_table`) is a dashed grey line, the level a model must beat; a collapsed model
(:func:`nhllib.tables.collapse_table`) is drawn grey. The marker sets carry gids (``mean``, ``n=1``,
``collapsed``, ``collapsed,n=1``; the reference line ``reference``; the caption ``caption``) so that tests and
:func:`save_slide` find them. Per-method panels wrap (five or four to a row), and the conflict figures are heat
maps with methods on an axis, so ten methods stay readable at page width.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import textwrap
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nhllib import tables
from nhllib.results import (
    CONFLICT_PLOT_COLUMNS, CONTEXT_COLUMNS, CURVE_PLOT_COLUMNS, HISTORY_PLOT_COLUMNS, TRADEOFF_PLOT_COLUMNS,
    process_umask, require_columns,
)
from nhllib.vocab import VARIANTS

__all__ = [
    "METRIC_LABELS",
    "length_axis",
    "default_output_dir",
    "plot_ablation",
    "plot_retrieval_scaling",
    "plot_speedup_vs_gain",
    "plot_training_curves",
    "plot_verdict",
    "save_slide",
    "plot_conflict_heatmap",
    "plot_conflict_rates",
    "plot_cosine_distribution",
    "plot_curves",
    "plot_distill_sensitivity",
    "plot_map_vs_length",
    "plot_retrieval_tradeoff",
    "plot_ties",
    "plot_training_time",
    "plot_weights",
    "save_figure",
]

logger = logging.getLogger(__name__)

METRIC_LABELS = {
    "map": "query mAP (best-validation checkpoint, 0–1)",
    "map_last": "query mAP (last evaluation, 0–1)",
    "val_map": "validation mAP (0–1)",
    "map_expected": "query mAP, ties in expected order (0–1)",
    "map_optimistic": "query mAP, relevant first in ties (0–1)",
    "map_pessimistic": "query mAP, relevant last in ties (0–1)",
    "map_index": "query mAP, ties in database order (0–1)",
    "precision_r2": "precision within Hamming radius 2 (0–1)",
    "p_at_100": "precision@100 (0–1)",
}
TIE_METRICS = ("map_pessimistic", "map_expected", "map_optimistic", "map_index")
PANEL = (4.2, 3.2)  # inches per panel
CAPTION_FONTSIZE = 8


# ---------------------------------------------------------------- layout and style


@contextmanager
def _style():
    """Seaborn's look for the figures built inside, without changing the global rcParams."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        yield


def _grid(n_panels: int, ncols: int, caption: str, panel: tuple[float, float] = PANEL,
          nrows: int | None = None) -> tuple[Figure, np.ndarray, str]:
    """A constrained-layout figure with a band reserved at the bottom for the caption."""
    ncols = max(1, min(ncols, n_panels))
    nrows = nrows or math.ceil(n_panels / ncols)
    width, height = panel[0] * ncols + 1.8, panel[1] * nrows + 0.9
    caption = "\n".join(textwrap.wrap(caption, width=int(width * 17)))
    band = (0.17 * (caption.count("\n") + 1) + 0.12) / height
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(rect=(0, band, 1, 1 - band))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes, caption


def _facets(panels: Sequence[tuple[str, str]], caption: str, panel: tuple[float, float], ncols: int = 4):
    """One panel per (method, variant), in that order, wrapping after ``ncols`` (no empty panels inside the grid,
    however many methods); returns the figure, axes, caption and (method, variant) -> ax."""
    order = {v: k for k, v in enumerate(_ordered_variants([v for _, v in panels]))}
    panels = sorted(dict.fromkeys(panels), key=lambda p: (p[0], order[p[1]]))
    fig, axes, caption = _grid(len(panels), ncols, caption, panel)
    where = dict(zip(panels, axes.flat))
    return fig, axes, caption, where


def _finish(fig: Figure, axes: np.ndarray, used, title: str, caption: str, handles=None,
            legend_title: str | None = None) -> Figure:
    """Hide unused panels (``used``: a count of leading panels or the used axes), add title, legend, caption."""
    keep = set(axes.flat[:used]) if isinstance(used, int) else set(used)
    for ax in axes.flat:
        if ax not in keep:
            ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    if handles:
        unique = {label: h for h, label in handles}
        fig.legend(list(unique.values()), list(unique.keys()), loc="outside right center", title=legend_title,
                   frameon=False)
    fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=CAPTION_FONTSIZE, color="0.3", gid="caption")
    return fig


def _caption(frame: pd.DataFrame, note: str = "") -> str:
    """``Source: study 'default', 12 runs, seeds 0, 1, 2.`` plus an optional note."""
    studies = ", ".join(f"'{s}'" for s in sorted(frame["study"].astype(str).unique())) if "study" in frame else "?"
    runs = frame["run_id"].nunique() if "run_id" in frame else 0
    seeds = ", ".join(str(int(s)) for s in sorted(frame["seed"].unique())) if "seed" in frame else "?"
    text = f"Source: study {studies}, {runs} run{'s' if runs != 1 else ''}, seed{'s' if ',' in seeds else ''} {seeds}."
    if "distill_weight" in frame and (frame["distill_weight"] > 0).any():
        lams = sorted(float(v) for v in frame.loc[frame["distill_weight"] > 0, "distill_weight"].unique())
        text += f" Distilling runs at λ = {lams[0]:g}." if len(lams) == 1 else \
            f" Distilling runs at λ ∈ {{{', '.join(f'{v:g}' for v in lams)}}}."
    return f"{text} {note}".strip()


def _skip(figure: str, reason: str) -> None:
    logger.info("figure %r skipped: %s", figure, reason)


def _single_context(frame: pd.DataFrame) -> None:
    for column in CONTEXT_COLUMNS:
        if column in frame.columns and frame[column].nunique() > 1:
            raise ValueError(
                f"the frame mixes several {column} values {sorted(frame[column].unique())}; plot one at a time "
                f"(nhllib.tables.select(frame, {column}=...))"
            )


def _variant_colors(variants: Sequence[str]) -> dict[str, tuple]:
    """One colour per variant, fixed by the registry order so a variant keeps its colour across figures."""
    import seaborn as sns

    order = tables.variant_order()
    extra = [v for v in variants if v not in order]
    palette = sns.color_palette("colorblind", len(order) + len(extra))
    colors = {name: palette[k] for k, name in enumerate([*order, *extra])}
    colors[tables.single_length_variant()] = (0.25, 0.25, 0.25)
    return colors


def _length_colors(lengths: Sequence[int]) -> dict[int, tuple]:
    import seaborn as sns

    lengths = sorted({int(v) for v in lengths})
    palette = sns.color_palette("viridis", len(lengths))
    return dict(zip(lengths, palette))


def _ordered_variants(present) -> list[str]:
    order = tables.variant_order()
    present = list(dict.fromkeys(present))
    return [v for v in order if v in present] + sorted(v for v in present if v not in order)


def _default_variants(frame: pd.DataFrame) -> list[str]:
    """``separate`` and the full method (conflict weighting + distillation) where present, else every variant."""
    wanted = [n for n, v in VARIANTS.items() if v.single_length or (v.conflict_weighting and v.distillation)]
    present = set(frame["variant"]) - {tables.reference_variant()}
    return [v for v in wanted if v in present] or _ordered_variants(present)


def length_axis(ax, lengths: Sequence[int]) -> None:
    """A code-length x axis: log 2 scale, one tick per length, labelled in bits."""
    lengths = sorted({int(v) for v in lengths})
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, labels=[str(v) for v in lengths])
    ax.minorticks_off()
    ax.set_xlabel("code length (bits)")


def _dodge(j: int, n: int, width: float = 0.7) -> float:
    return (j - (n - 1) / 2) * width / max(n, 1)


def _per_length_rows(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metrics.empty or "metric" not in metrics.columns:
        return metrics.iloc[0:0]
    return metrics[(metrics["metric"] == metric) & metrics["code_length"].notna()]


# ---------------------------------------------------------------- seeds, the reference level, collapse

COLLAPSED_COLOR = (0.72, 0.72, 0.72)
REFERENCE_COLOR = (0.45, 0.45, 0.45)
REFERENCE_LABEL = "untrained network (reference)"


def _seed_note(n: pd.Series, what: str = "Markers") -> str:
    """The caption's account of the seeds behind each point: never "mean over seeds" for one seed."""
    n = pd.Series(n).dropna().astype(int)
    if n.empty:
        return ""
    if (n <= 1).all():
        return f"{what}: one run each (n = 1 seed), so no error bars."
    counts = sorted(set(n[n > 1]))
    ns = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]}"
    note = f"Filled {what.lower()}: mean over {ns} seeds, bars ± one std."
    if (n <= 1).any():
        note += " Hollow: a single run (n = 1), no error bar."
    return note


def _collapse_flags(metrics: pd.DataFrame, metric: str = "map") -> tuple[set, str]:
    """(method, variant, λ, code_length) keys with at least one collapsed run, and the caption's account."""
    if metric not in ("map", "map_expected", "val_map", "map_last"):
        return set(), ""
    table = tables.collapse_table(metrics, metric)
    if table.empty or (table["basis"] == "none").all():
        return set(), "Collapse not assessed (no untrained reference runs and no collapsed metric)."
    hit = table[table["collapsed"].fillna(False).astype(bool)]
    keys = {(m, v, float(d), int(c)) for m, v, d, c in
            zip(hit["method"], hit["variant"], hit["distill_weight"], hit["code_length"])}
    basis = ("flagged by the run's collapsed metric" if (table["basis"] == "metric").all() else
             f"mAP not above the untrained reference by max({tables.COLLAPSE_MARGIN:g}, 2 std)"
             + (", or flagged by the run" if (table["basis"] == "metric").any() else ""))
    if not keys:
        return keys, f"No model is collapsed ({basis})."
    return keys, f"Grey markers: collapsed in at least one seed ({basis})."


def _draw_series(ax, x, line: pd.DataFrame, color, label: str, collapsed, ls: str = "-", lw: float = 1.4,
                 connect: bool = True):
    """A mean line with ± std bars where n > 1; markers filled (n > 1), hollow (n = 1) or grey (collapsed).

    Every marker set carries a gid (``mean``, ``n=1``, ``collapsed``, ``collapsed,n=1``) so tests and readers
    of the figure can tell them apart. Returns the line (for the legend)."""
    x = np.asarray(x, dtype=float)
    mean = line["mean"].to_numpy(dtype=float)
    std = line["std"].to_numpy(dtype=float)
    single = line["n"].to_numpy() <= 1
    collapsed = np.asarray(collapsed, dtype=bool)
    line_color = COLLAPSED_COLOR if collapsed.all() else color
    (handle,) = ax.plot(x, mean, color=line_color, ls=ls if connect else "", lw=lw, label=label, zorder=2)
    bars = ~single & ~np.isnan(std)
    if bars.any():
        ax.errorbar(x[bars], mean[bars], yerr=std[bars], fmt="none", ecolor=line_color, capsize=2, lw=1, zorder=2)
    for mask, gid in ((~single & ~collapsed, "mean"), (single & ~collapsed, "n=1"),
                      (~single & collapsed, "collapsed"), (single & collapsed, "collapsed,n=1")):
        if not mask.any():
            continue
        edge = COLLAPSED_COLOR if "collapsed" in gid else color
        face = "white" if "n=1" in gid else edge
        dots = ax.scatter(x[mask], mean[mask], s=26, marker="o", facecolor=face, edgecolor=edge, linewidth=1.2,
                          zorder=3)
        dots.set_gid(gid)
    return handle


def _draw_reference(ax, reference: pd.DataFrame, position=None):
    """The untrained reference per code length as a dashed grey line (gid ``reference``); ``position`` maps a
    code length to its x (default: the length itself). Returns the line, or None without reference runs."""
    if reference is None or reference.empty:
        return None
    ref = reference.sort_values("code_length")
    x = ref["code_length"].map(position) if position is not None else ref["code_length"]
    keep = x.notna()
    if not keep.any():
        return None
    (line,) = ax.plot(x[keep], ref["mean"][keep], ls="--", color=REFERENCE_COLOR, lw=1.2, zorder=1,
                      label=REFERENCE_LABEL)
    line.set_gid("reference")
    return line


def _reference_note(reference: pd.DataFrame) -> str:
    if reference is None or reference.empty:
        return "No untrained reference runs in this study."
    n = int(reference["n"].min())
    return (f"Dashed grey: the untrained network, evaluated once ({'one seed' if n <= 1 else f'mean over {n} seeds'}"
            "; the level a model must beat).")


def _point_key(method, variant, distill_weight, length) -> tuple:
    return (method, variant, float(distill_weight), int(length))


# ---------------------------------------------------------------- 1. mAP vs code length


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


# ---------------------------------------------------------------- 2. training time


def plot_training_time(metrics: pd.DataFrame, distill_weight: float | None = None) -> Figure | None:
    """Figure 2: summed training time of the K separate runs against one run of each nested variant, per method,
    with the speed-up on the bars; epochs to the best validation mAP beside it."""
    data = tables.main_comparison(metrics, distill_weight)
    if data.empty:
        _skip("training_time", "no runs")
        return None
    _single_context(data)
    per_seed = tables.speedup_per_seed(data)
    if per_seed.empty:
        _skip("training_time", "no method has both a nested run and separate runs for all its lengths (same seed)")
        return None
    table = tables.speedup_table(data)
    baseline = tables.single_length_variant()
    methods = sorted(per_seed["method"].unique())
    variants = _ordered_variants(per_seed["variant"])
    colors = _variant_colors(variants)
    used = data[data["method"].isin(methods)
                & data["seed"].isin(per_seed["seed"].unique())
                & data["variant"].isin([baseline, *variants])]
    note = ("Separate: the sum over its K single-length runs (same seed). Speed-up: the per-seed ratio, averaged "
            "where there are several seeds. " + _seed_note(table["n"], "Bars").replace("markers", "bars")
            + " Training loop only (evaluation excluded).")
    with _style():
        n_bars = len(variants) + 1
        panel_width = max(4.2, 0.2 * n_bars * len(methods) + 1.5)
        fig, axes, caption = _grid(2, 2 if panel_width <= 6 else 1, _caption(used, note), panel=(panel_width, 3.2))
        ax_time, ax_epochs = axes.flat[0], axes.flat[1]
        width = 0.8 / n_bars
        handles = []
        for i, method in enumerate(methods):
            seeds = per_seed[per_seed["method"] == method].drop_duplicates(["seed", "code_lengths"])
            x0 = i + _dodge(0, n_bars, 0.8)
            sep_t, sep_e, sep_b = (seeds[c] for c in ("separate_time_s", "separate_epochs", "separate_best_epochs"))
            h = ax_time.bar(x0, sep_t.mean(), width, yerr=_std(sep_t), capsize=2, color=colors[baseline],
                            label=f"{baseline} (sum of K runs)")
            handles.append((h, f"{baseline} (sum of K runs)"))
            ax_epochs.bar(x0, sep_e.mean(), width, color=colors[baseline], alpha=0.3)
            ax_epochs.bar(x0, sep_b.mean(), width * 0.6, yerr=_std(sep_b), capsize=2, color=colors[baseline])
            for j, variant in enumerate(variants, start=1):
                row = table[(table["method"] == method) & (table["variant"] == variant)]
                if row.empty:
                    continue
                row = row.iloc[0]
                x = i + _dodge(j, n_bars, 0.8)
                h = ax_time.bar(x, row["variant_time_s_mean"], width, yerr=_nan0(row["variant_time_s_std"]),
                                capsize=2, color=colors[variant], label=variant)
                handles.append((h, variant))
                top = row["variant_time_s_mean"] + (_nan0(row["variant_time_s_std"]) or 0.0)
                ax_time.annotate(f"{row['speedup_mean']:.1f}×", (x, top), xytext=(0, 2), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=7, rotation=90)
                ax_epochs.bar(x, row["variant_epochs_mean"], width, color=colors[variant], alpha=0.3)
                ax_epochs.bar(x, row["variant_best_epoch_mean"], width * 0.6,
                              yerr=_nan0(row["variant_best_epoch_std"]), capsize=2, color=colors[variant])
        for ax in (ax_time, ax_epochs):
            ax.set_xticks(range(len(methods)), labels=methods)
            ax.set_xlabel("hashing method")
        ax_time.set_ylabel("training time (s)")
        ax_time.set_title("training time (speed-up on the bars)")
        ax_epochs.set_ylabel("epochs")
        ax_epochs.set_title("epochs to the best validation mAP")
        handles += [(Patch(color="0.5", alpha=0.3), "right, light: epochs run"),
                    (Patch(color="0.5"), "right, solid: epochs to best val. mAP")]
        return _finish(fig, axes, 2, "Training cost: K separate models vs one nested model", caption, handles,
                       "variant")


def _std(values: pd.Series) -> float | None:
    """Sample std for error bars; None (no bar) for a single seed."""
    return float(values.std(ddof=1)) if len(values) > 1 else None


def _yerr(std: pd.Series):
    """Error bars from a std column: none at all when every std is NaN (one seed), else NaN drawn as 0."""
    return None if std.isna().all() else std.fillna(0).to_numpy()


def _nan0(value: float) -> float | None:
    """An error-bar half-length from a table's std column: None (no bar) where it is NaN (one seed)."""
    return None if pd.isna(value) else float(value)


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
    methods = sorted(table["method"].unique())
    present = _ordered_variants(table["variant"])
    colors = _variant_colors(present)
    show_delta = not delta.empty
    note = " ".join(filter(None, [_seed_note(table["n"]), _reference_note(reference), collapse_note]))
    if show_delta:
        note += (f" Right: paired difference to {baseline} (same seed); "
                 + ("one pair per point." if (delta["n"] <= 1).all() else "mean ± std over the paired seeds."))
    with _style():
        fig, axes, caption = _grid(len(methods) * (2 if show_delta else 1), 4 if show_delta else 4,
                                   _caption(rows, note), panel=(3.6, 2.8))
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


# ---------------------------------------------------------------- 4. gradient conflicts


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _pair_label(short, long) -> str:
    return f"{int(short)}|{int(long)}"


def _panels_by_run_kind(frame: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = frame[["method", "variant"]].drop_duplicates()
    order = {v: k for k, v in enumerate(_ordered_variants(pairs["variant"]))}
    return sorted(((m, v) for m, v in pairs.itertuples(index=False)), key=lambda p: (p[0], order[p[1]]))


def _conflict_rows(conflicts: pd.DataFrame, figure: str, variants, methods, distill_weight) -> pd.DataFrame | None:
    if conflicts.empty:
        _skip(figure, "no conflict logs (conflicts.csv exists only for nested multi-length runs)")
        return None
    require_columns(conflicts, CONFLICT_PLOT_COLUMNS, "conflicts")
    # runs of a λ sweep would otherwise be averaged with the main runs as if they were more seeds
    rows = tables.select(tables.main_comparison(conflicts, distill_weight), variant=variants, method=methods)
    if rows.empty:
        _skip(figure, f"no conflict logs for variants={variants} methods={methods}")
        return None
    numeric = ["steps", "conflict_rate", "mean_cosine", "mean_dot", "mean_alpha"]
    return rows.astype({"epoch": int, "short_length": int, "long_length": int,
                        **{c: float for c in numeric if c in rows.columns}})


def _main_variant(rows: pd.DataFrame, variant: str | None) -> str | None:
    """The variant a one-variant figure shows: ``variant``, else the full method (``nhl``) when present, else
    the first variant present in registry order."""
    present = _ordered_variants(rows["variant"])
    if variant is not None:
        return variant if variant in present else None
    full = [n for n, v in VARIANTS.items() if v.conflict_weighting and v.distillation and n in present]
    return full[0] if full else (present[0] if present else None)


def _runs_note(rows: pd.DataFrame, by: Sequence[str]) -> str:
    """How many runs stand behind each cell: ``one run per cell (n = 1)`` or ``mean over n = 3 seeds``."""
    n = rows.groupby(list(by))["run_id"].nunique()
    if n.empty or (n <= 1).all():
        return "One run per cell (n = 1 seed)."
    if (n <= 1).any():
        return f"Mean over up to {int(n.max())} seeds; some cells are a single run (n = 1)."
    return f"Mean over n = {int(n.min())}{'' if n.min() == n.max() else f'–{int(n.max())}'} seeds."


def _heat(ax, matrix: np.ndarray, vmin: float, vmax: float, cmap: str, fmt: str = "{:.2f}", annotate: bool = True):
    """A heat map with its values written in the cells (white on dark cells)."""
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto", interpolation="nearest")
    if annotate:
        for (r, c), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                shade = image.cmap(image.norm(value))
                dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.grid(False)
    return image


def _conflict_cmap() -> str:
    return "rocket_r" if _has_rocket() else "magma_r"


def plot_conflict_rates(conflicts: pd.DataFrame, variant: str | None = None,
                        methods: Sequence[str] | None = None, distill_weight: float | None = None,
                        ncols: int = 5) -> Figure | None:
    """Figure 4a: when in training each (short, long) pair conflicts: a heat map of the share of steps in
    conflict over pair (rows) × epoch (columns), one panel per method (wrapping after ``ncols``), for one variant
    (default: the full method ``nhl`` when present)."""
    rows = _conflict_rows(conflicts, "conflict_rates", None, methods, distill_weight)
    if rows is None:
        return None
    chosen = _main_variant(rows, variant)
    rows = rows[rows["variant"] == chosen] if chosen else rows.iloc[0:0]
    if rows.empty:
        _skip("conflict_rates", f"no conflict logs of variant {variant!r}")
        return None
    pairs = sorted({(int(a), int(b)) for a, b in zip(rows["short_length"], rows["long_length"])})
    epochs = sorted(rows["epoch"].unique())
    methods_present = sorted(rows["method"].unique())
    stats = rows.groupby(["method", "short_length", "long_length", "epoch"])["conflict_rate"].mean()
    note = ("Cell: the share of monitored steps in the epoch whose gradients (shared hash weight, the shorter "
            f"code's rows) have a negative dot product. {_runs_note(rows, ['method', 'epoch'])}")
    height = max(2.2, 0.22 * len(pairs) + 1.0)
    width = max(2.6, 0.32 * len(epochs) + 1.4)
    with _style():
        fig, axes, caption = _grid(len(methods_present), ncols, _caption(rows, note), panel=(width, height))
        image = None
        for ax, method in zip(axes.flat, methods_present):
            matrix = np.full((len(pairs), len(epochs)), np.nan)
            for r, (a, b) in enumerate(pairs):
                for c, epoch in enumerate(epochs):
                    matrix[r, c] = stats.get((method, a, b, epoch), np.nan)
            image = _heat(ax, matrix, 0, 1, _conflict_cmap(), annotate=len(epochs) <= 12)
            ax.set_xticks(range(len(epochs)), labels=[str(e) for e in epochs])
            ax.set_yticks(range(len(pairs)), labels=[_pair_label(a, b) for a, b in pairs])
            ax.set_xlabel("epoch")
            ax.set_ylabel("pair (short|long bits)")
            ax.set_title(method)
        used = axes.flat[:len(methods_present)]
        fig.colorbar(image, ax=list(used), label="steps in conflict (share, 0–1)", shrink=0.8)
        return _finish(fig, axes, len(methods_present),
                       f"When code lengths conflict: share of steps per pair and epoch ({chosen})", caption)


def plot_conflict_heatmap(conflicts: pd.DataFrame, variant: str | None = None,
                          methods: Sequence[str] | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 4b: which pairs conflict: the share of all monitored steps in conflict, method (rows) × (short,
    long) pair (columns), over the whole run (step-weighted over epochs, mean over runs;
    :func:`nhllib.tables.conflict_summary`), for one variant (default ``nhl``)."""
    rows = _conflict_rows(conflicts, "conflict_heatmap", None, methods, distill_weight)
    if rows is None:
        return None
    chosen = _main_variant(rows, variant)
    rows = rows[rows["variant"] == chosen] if chosen else rows.iloc[0:0]
    if rows.empty:
        _skip("conflict_heatmap", f"no conflict logs of variant {variant!r}")
        return None
    summary = tables.conflict_summary(rows)
    return _method_pair_heat(summary, "rate_mean", rows, 0, 1, _conflict_cmap(), "steps in conflict (share, 0–1)",
                             f"Which code lengths conflict: share of steps per pair ({chosen})",
                             "Cell: share of monitored steps where the pair's gradients conflict (dot < 0), over the "
                             f"whole run. {_runs_note(rows, ['method'])}")


def _method_pair_heat(summary: pd.DataFrame, value: str, rows: pd.DataFrame, vmin: float, vmax: float, cmap: str,
                      label: str, title: str, note: str) -> Figure:
    """One heat map: methods as rows, (short, long) pairs as columns; reads at page width for ten methods."""
    pairs = sorted({(int(a), int(b)) for a, b in zip(summary["short_length"], summary["long_length"])})
    methods_present = sorted(summary["method"].unique())
    matrix = np.full((len(methods_present), len(pairs)), np.nan)
    for row in summary.itertuples(index=False):
        matrix[methods_present.index(row.method), pairs.index((int(row.short_length), int(row.long_length)))] = \
            getattr(row, value)
    width = min(11.0, max(5.0, 0.62 * len(pairs) + 2.6))
    height = max(2.4, 0.34 * len(methods_present) + 1.2)
    with _style():
        fig, axes, caption = _grid(1, 1, _caption(rows, note), panel=(width, height))
        ax = axes.flat[0]
        image = _heat(ax, matrix, vmin, vmax, cmap)
        ax.set_xticks(range(len(pairs)), labels=[_pair_label(a, b) for a, b in pairs])
        ax.set_yticks(range(len(methods_present)), labels=methods_present)
        ax.set_xlabel("pair of code lengths (short|long, bits)")
        ax.set_ylabel("hashing method")
        ax.set_title(f"variant {rows['variant'].iloc[0]}")
        fig.colorbar(image, ax=ax, label=label, shrink=0.9)
        return _finish(fig, axes, 1, title, caption)


def _has_rocket() -> bool:
    import matplotlib
    import seaborn  # noqa: F401  # registers the "rocket" colormap

    return "rocket_r" in matplotlib.colormaps


def plot_cosine_distribution(conflicts: pd.DataFrame, variant: str | None = None,
                             methods: Sequence[str] | None = None, distill_weight: float | None = None
                             ) -> Figure | None:
    """Figure 4c: how aligned the gradients of two code lengths are: the median over epochs (and seeds) of the
    per-epoch mean cosine, method × pair, for one variant (default ``nhl``); below 0 they point against each other."""
    rows = _conflict_rows(conflicts, "cosine_distribution", None, methods, distill_weight)
    if rows is None:
        return None
    chosen = _main_variant(rows, variant)
    rows = rows[rows["variant"] == chosen] if chosen else rows.iloc[0:0]
    rows = rows.dropna(subset=["mean_cosine"]) if not rows.empty else rows
    if rows.empty:
        _skip("cosine_distribution", f"no cosine logs of variant {variant!r}")
        return None
    summary = (rows.groupby(["method", "short_length", "long_length"])["mean_cosine"]
               .agg(median="median", low="min").reset_index())
    n_values = rows.groupby(["method", "short_length", "long_length"]).size()
    note = ("Cell: the median of the per-epoch mean cosine between the two lengths' gradients on the shared rows, "
            f"over {int(n_values.min())}{'' if n_values.min() == n_values.max() else f'–{int(n_values.max())}'} "
            f"epoch values (epochs × seeds); {_runs_note(rows, ['method']).replace('Mean over', 'runs per method:')}")
    return _method_pair_heat(summary, "median", rows, -1, 1, "RdBu", "cosine similarity (−1 to 1)",
                             f"How aligned are the gradients of two code lengths? ({chosen})", note)


def plot_weights(history: pd.DataFrame, variants: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 4d: the applied per-length weights over training (history ``weight``), by default for the
    variants that apply the conflict weighting; lines: mean over seeds, band: ± one std."""
    if variants is None:
        variants = [name for name, v in VARIANTS.items() if v.conflict_weighting]
    if history.empty or "metric" not in history.columns:
        _skip("weights", "no history")
        return None
    require_columns(history, HISTORY_PLOT_COLUMNS, "history")
    rows = history[(history["split"] == "train") & (history["metric"] == "weight")]
    rows = tables.main_comparison(rows, distill_weight)
    rows = tables.select(rows, variant=list(variants), method=methods)
    if rows.empty:
        _skip("weights", f"no per-length weights logged for variants {list(variants)}")
        return None
    # astype: a run folder with an empty history.csv makes the concatenated columns object-typed
    rows = rows.astype({"code_length": int, "epoch": int, "value": float})
    colors = _length_colors(rows["code_length"])
    panels = _panels_by_run_kind(rows)
    note = ("Weight applied to each length's objective, mean over the steps of an epoch (they sum to K; 1 = "
            "uniform). " + _runs_note(rows, ["method", "variant"]).replace("cell", "panel")
            + (" Band: ± one std over seeds." if rows.groupby(["method", "variant"])["run_id"].nunique().max() > 1
               else ""))
    with _style():
        fig, axes, caption, where = _facets(panels, _caption(rows, note), panel=(3.6, 2.8))
        handles = []
        for (method, variant), ax in where.items():
            sub = rows[(rows["method"] == method) & (rows["variant"] == variant)]
            stats = sub.groupby(["code_length", "epoch"])["value"].agg(["mean", "std"])
            for length, line in stats.groupby(level=0):
                line = line.droplevel(0).sort_index()
                (h,) = ax.plot(line.index, line["mean"], color=colors[length], lw=1.4, marker=".", ms=3)
                ax.fill_between(line.index, line["mean"] - line["std"].fillna(0),
                                line["mean"] + line["std"].fillna(0), color=colors[length], alpha=0.15, lw=0)
                handles.append((h, f"{length} bits"))
            ax.axhline(1, color="0.3", lw=0.8, ls=":")
            ax.set_title(f"{method} · {variant}")
            _epoch_axis(ax)
            ax.set_ylabel("applied weight (1 = uniform)")
        return _finish(fig, axes, where.values(), "Conflict-aware weights over training", caption, handles,
                       "code length")


# ---------------------------------------------------------------- training curves, verdict, cost against gain


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


def plot_verdict(metrics: pd.DataFrame, variant: str = "nhl", metric: str = "map",
                 distill_weight: float | None = None) -> Figure | None:
    """The verdict in one panel, methods on the y axis: ``variant`` − ``separate`` per code length (mAP points,
    paired by seed) with its 95 % interval (:func:`nhllib.tables.verdict_tables`); single pairs hollow, comparisons
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


def plot_speedup_vs_gain(metrics: pd.DataFrame, metric: str = "map", distill_weight: float | None = None
                         ) -> Figure | None:
    """One point per method × nested variant: training speed-up over the K separate models (x) against the mAP
    change averaged over lengths (y, points, paired by seed); the methods are labelled on the full method's
    points. Collapsed comparisons grey, single seeds hollow."""
    data = tables.main_comparison(tables.trained(metrics), distill_weight) if not metrics.empty else metrics
    if data.empty:
        _skip("speedup_vs_gain", "no runs")
        return None
    speed = tables.speedup_table(data)
    delta = tables.delta_table(data, metric)
    if speed.empty or delta.empty:
        _skip("speedup_vs_gain", "no nested run with separate runs at all its lengths")
        return None
    flagged, collapse_note = _collapse_flags(tables.main_comparison(metrics, distill_weight), metric)
    baseline = tables.single_length_variant()
    keys = ["method", "variant", "distill_weight"]
    gain = delta.groupby(keys, sort=False).agg(gain=("mean", "mean"), pairs=("n", "min")).reset_index()
    gain["gain"] *= 100
    hit = {(m, v, float(d)) for m, v, d, _ in flagged}
    sep = {(m, float(0)) for m, v, d, _ in flagged if v == baseline}
    gain["collapsed"] = [(m, v, float(d)) in hit or (m, 0.0) in sep for m, v, d in zip(*(gain[k] for k in keys))]
    frame = speed.merge(gain, on=keys, how="inner")
    if frame.empty:
        _skip("speedup_vs_gain", "no method has both a speed-up and a paired mAP difference")
        return None
    present = _ordered_variants(frame["variant"])
    colors = _variant_colors(present)
    full = _main_variant(frame, None)
    n_all = pd.concat([frame["n"], frame["pairs"]])
    note = " ".join(filter(None, [
        "x: summed training time of the K separate runs / time of one nested run (same seed); y: the paired mAP "
        "difference to separate, averaged over the code lengths, in points.",
        _seed_note(n_all), collapse_note.replace("Grey markers", "Grey"), f"Methods labelled on the {full} points."]))
    with _style():
        fig, axes, caption = _grid(1, 1, _caption(data, note), panel=(7.0, 4.4))
        ax = axes.flat[0]
        handles = []
        nx = frame[["n", "pairs"]].min(axis=1)
        for variant in present:
            part = frame[frame["variant"] == variant]
            part_n = nx[part.index]
            for mask, gid in (((~part["collapsed"]) & (part_n > 1), "mean"), ((~part["collapsed"]) & (part_n <= 1), "n=1"),
                              (part["collapsed"] & (part_n > 1), "collapsed"), (part["collapsed"] & (part_n <= 1), "collapsed,n=1")):
                if mask.any():
                    edge = COLLAPSED_COLOR if "collapsed" in gid else colors[variant]
                    dots = ax.scatter(part.loc[mask, "speedup_mean"], part.loc[mask, "gain"], s=40,
                                      facecolor="white" if "n=1" in gid else edge, edgecolor=edge, linewidth=1.3,
                                      marker="D" if variant == full else "o", zorder=3)
                    dots.set_gid(gid)
            handles.append((Line2D([], [], ls="", marker="D" if variant == full else "o", color=colors[variant]),
                            variant))
            if variant == full:
                for row in part.itertuples(index=False):
                    ax.annotate(row.method, (row.speedup_mean, row.gain), xytext=(5, 3), textcoords="offset points",
                                fontsize=8, color="0.2")
        ax.axhline(0, color="0.3", lw=0.9)
        ax.axvline(1, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("training speed-up over K separate models (×)")
        ax.set_ylabel("mAP change vs separate, mean over lengths (points)")
        ax.set_title("cost saved against accuracy changed")
        handles += _marker_legend(n_all, bool(frame["collapsed"].any()))
        return _finish(fig, axes, 1, "Speed-up against mAP change, per method and variant", caption, handles,
                       "variant")


def plot_retrieval_scaling(bench: pd.DataFrame, configurations: Sequence[str] | None = None) -> Figure | None:
    """Retrieval speed-up over exhaustive longest-code search (faiss) against database size, from the retrieval
    benchmark (:func:`nhllib.tables.retrieval_benchmark`), one panel per code source; the speed-up at the largest
    size is written at the end of each line."""
    if bench is None or bench.empty:
        _skip("retrieval_scaling", "no benchmark rows")
        return None
    require_columns(bench, ["source", "db_size", "configuration", "speedup", "map_ratio"], "bench")
    wanted = list(configurations) if configurations is not None else list(RETRIEVAL_SCALING_CONFIGURATIONS)
    rows = bench[bench["configuration"].isin(wanted)]
    if rows.empty:
        _skip("retrieval_scaling", f"the benchmark has none of the configurations {wanted}")
        return None
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    sources = list(dict.fromkeys(rows["source"]))
    palette = dict(zip(wanted, sns.color_palette("colorblind", len(wanted))))
    sizes = sorted(rows["db_size"].unique())
    k = int(rows["k"].iloc[0]) if "k" in rows else None
    note = ("Speed-up: time per query of exhaustive search with the longest code (faiss IndexBinaryFlat, the faster of "
            "its default threads and one thread) / time per query of the configuration; median of interleaved rounds "
            "on a shared 2-core CPU. In brackets at the line ends: mAP@"
            f"{k if k else 'k'} relative to exhaustive search at the largest size. Databases above the trained "
            "codes' own size are grown with bit-flipped copies: they show how cost scales, not how a real database "
            "of that size ranks.")
    caption = f"Source: {', '.join(dict.fromkeys(bench['command'])) if 'command' in bench else 'benchmark'}. {note}"
    with _style():
        fig, axes, caption = _grid(len(sources), 2, caption, panel=(4.8, 3.6))
        handles = []
        for ax, source in zip(axes.flat, sources):
            sub = rows[rows["source"] == source]
            for config in wanted:
                line = sub[sub["configuration"] == config].sort_values("db_size")
                if line.empty:
                    continue
                (h,) = ax.plot(line["db_size"], line["speedup"], marker="o", ms=4, lw=1.5, color=palette[config])
                last = line.iloc[-1]
                ax.annotate(f"{last['speedup']:.0f}× ({last['map_ratio']:.1%})" if last["speedup"] >= 10 else
                            f"{last['speedup']:.1f}× ({last['map_ratio']:.1%})",
                            (last["db_size"], last["speedup"]), xytext=(4, 0), textcoords="offset points",
                            fontsize=7, va="center", color=palette[config])
                handles.append((h, RETRIEVAL_SCALING_CONFIGURATIONS.get(config, config)))
            ax.axhline(1, color="0.3", lw=0.9, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sizes, labels=[_compact_number(v) for v in sizes])
            ax.minorticks_off()
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}×"))
            ax.set_xlim(min(sizes) / 1.5, max(sizes) * 4)
            ax.set_xlabel("database size (items, log scale)")
            ax.set_ylabel("speed-up over exhaustive search (×, log)")
            ax.set_title(source)
        handles.append((Line2D([], [], color="0.3", ls="--"), "exhaustive longest code (1×)"))
        return _finish(fig, axes, len(sources), "Nested-code retrieval: speed-up grows with the database", caption,
                       handles, "configuration")


#: The configurations of the retrieval-scaling figure (bench_retrieval names) and their legend text.
RETRIEVAL_SCALING_CONFIGURATIONS = {
    "shortlist 16→128, s=1000": "16-bit shortlist of 1,000 + 128-bit re-rank",
    "shortlist_table 16→128, s=1000, precomputed table": "same, shortlist from a precomputed table",
    "buckets 16→128, nflip=1": "16-bit buckets within 1 flip + re-rank",
    "exhaustive 16 bits": "exhaustive 16-bit search alone",
}


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


# ---------------------------------------------------------------- 6. ties


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


# ---------------------------------------------------------------- saving


def default_output_dir(results_root: str | Path, study: str, kind: str = "figures",
                       committed_study: str = "default") -> Path:
    """Where a study's figures or tables go: ``<results_root>/<kind>`` for the committed study (``default``),
    ``<results_root>/<study>/<kind>`` for any other (git-ignored with the run folders)."""
    if kind not in ("figures", "tables"):
        raise ValueError(f"kind must be 'figures' or 'tables', got {kind!r}")
    root = Path(results_root)
    return root / kind if study == committed_study else root / study / kind


def save_figure(fig: Figure | None, directory: str | Path, name: str, dpi: int = 150,
                formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``<directory>/<name>.png`` and ``.pdf``; each goes to a temporary file first and is renamed over
    the target, so a crash never leaves a half-written figure. ``fig=None`` (a skipped figure) writes nothing
    and returns ``[]``."""
    if fig is None:
        logger.debug("figure %r not saved: it was skipped (no runs)", name)
        return []
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure or None, got {type(fig).__name__}")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem such as 'map_vs_length', got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = directory / f"{name}.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=f".{fmt}.tmp")
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp's 0600 would hide figures from a shared machine's users
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Creator": "nhllib"} if fmt == "png" else None)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


# ---------------------------------------------------------------- slides

SLIDE_SIZE = (12.8, 7.2)  # inches; at 100 dpi a 1280 × 720 image
SLIDE_MIN_FONT = 13.0  # points at 100 dpi: about 18 px, readable on a projected 720-line slide


def save_slide(fig: Figure | None, directory: str | Path, name: str) -> list[Path]:
    """Write a single-panel figure as a slide: ``<name>.png`` at 1280 × 720 px with every text at least
    :data:`SLIDE_MIN_FONT` points, the caption taken out of the image into ``<name>.txt`` (for the speaker notes
    or the slide's own text). Refuses figures with more than one panel (colour bars do not count): a slide shows
    one thing. ``fig=None`` (a skipped figure) writes nothing."""
    if fig is None:
        return []
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    if len(panels) != 1:
        raise ValueError(f"a slide has one panel; {name!r} has {len(panels)} (draw it for one method)")
    caption = ""
    for text in list(fig.texts):
        if text.get_gid() == "caption":
            caption = " ".join(text.get_text().split())
            text.remove()
    if not caption:  # a figure drawn without a caption (a diagram): its titles serve as the speaker note
        titles = [fig._suptitle.get_text() if fig._suptitle is not None else "", *(ax.get_title() for ax in panels)]
        caption = " ".join(" ".join(t.split()) for t in titles if t.strip()) or name.replace("_", " ")
    fig.get_layout_engine().set(rect=(0, 0, 1, 1))
    fig.set_size_inches(*SLIDE_SIZE)
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if text.get_text():
            text.set_fontsize(max(float(text.get_fontsize()) * 1.5, SLIDE_MIN_FONT))
    for ax in fig.axes:  # tick labels are made anew at draw time: set their size on the axis
        ax.tick_params(labelsize=SLIDE_MIN_FONT)
    directory = Path(directory)
    written = save_figure(fig, directory, name, dpi=100, formats=("png",))
    from nhllib.results import atomic_write_text

    atomic_write_text(directory / f"{name}.txt", caption + "\n")
    return [*written, directory / f"{name}.txt"]


# ---------------------------------------------------------------- 8. retrieval trade-off


_RETRIEVAL_STRATEGIES = {  # strategy -> (legend text, marker, hollow), in legend order
    "exhaustive": ("exhaustive, longest code (reference)", "*", False),
    "exhaustive_short": ("exhaustive, shorter code alone", "s", False),
    "shortlist": ("prefix shortlist + re-rank", "o", False),
    "shortlist_table": ("same, shortlist from a precomputed table", "D", True),
    "buckets": ("prefix buckets within nflip + re-rank", "^", False),
    "funnel": ("funnel (several re-rank stages)", "v", False),
    "faiss_hash": ("faiss IndexBinaryHash (ties in visit order)", "P", False),
}


def _compact_number(value: float, _position=None) -> str:
    """Tick label: 0.05, 2, 300, 40k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _place_labels(ax, xs, ys, labels, color, placed: list, every, fontsize: float = 6.5) -> None:
    """Label points without overlaps: each label takes the first of eight positions around its point whose box
    (estimated from the text length) meets no label already placed and no marker of the panel."""
    dpi = ax.figure.dpi
    to_px = ax.transData.transform
    markers = np.vstack([to_px(np.column_stack([s[x].to_numpy(float), s["map_ratio"].to_numpy(float)]))
                         for _a, x, s in every])
    char_w, height = 0.62 * fontsize * dpi / 72, 1.2 * fontsize * dpi / 72
    pad = 4 * dpi / 72
    spots = [(1, 0.1), (1, -1.1), (-1, 0.1), (-1, -1.1), (1, 1.1), (1, -2.1), (-1, 1.1), (-1, -2.1),
             (1, 2.1), (1, -3.1), (-1, 2.1), (-1, -3.1)]
    for xv, yv, label in zip(xs, ys, labels):
        if not label:
            continue
        px, py = to_px((xv, yv))
        width = char_w * len(label)
        others = markers[(np.abs(markers[:, 0] - px) > 1) | (np.abs(markers[:, 1] - py) > 1)]
        best = None
        for side, lift in spots:  # the first free spot, else the one with the fewest collisions
            x0 = px + pad if side > 0 else px - pad - width
            y0 = py + lift * height
            box = (x0, y0, x0 + width, y0 + height)
            hits = sum(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            if len(others):
                hits += int(np.sum((others[:, 0] > box[0] - 3) & (others[:, 0] < box[2] + 3)
                                   & (others[:, 1] > box[1] - 3) & (others[:, 1] < box[3] + 3)))
            if best is None or hits < best[0]:
                best = (hits, side, lift, box)
            if hits == 0:
                break
        _hits, side, lift, box = best
        placed.append(box)
        text = ax.annotate(label, (xv, yv), xytext=((pad if side > 0 else -pad) * 72 / dpi,
                                                     lift * height * 72 / dpi),
                           textcoords="offset points", ha="left" if side > 0 else "right", va="bottom",
                           fontsize=fontsize, color=color)
        text.set_in_layout(False)


def plot_retrieval_tradeoff(frame: pd.DataFrame, threshold: float = 0.99) -> Figure:
    """Figure 8: mAP@k relative to exhaustive search against time per query and against bits scanned per
    query, one marker per configuration of :func:`nhllib.retrieval.compare.compare_strategies`.

    Exhaustive search at the longest length is the large star (the reference, ratio 1); the dashed line is
    ``threshold`` × its mAP. Points are labelled with ``short_label`` when the frame has it, plus the share
    of the k result slots filled where a configuration returns fewer than k items (``filled_at_k``).
    Optional ``study`` and ``run_id`` columns name the source in the caption.
    """
    require_columns(frame, TRADEOFF_PLOT_COLUMNS, "frame")
    if frame.empty:
        raise ValueError("frame has no rows; pass the table compare_strategies returned")
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    longest = frame["ranking_bits"].max()
    # Exhaustive longest-code search is timed twice (faiss's threads and one thread, since OpenMP can slow a
    # busy machine down); the faster one is the reference of the speed-ups, so only it is drawn.
    exhaustive = frame[(frame["strategy"] == "exhaustive") & (frame["ranking_bits"] == longest)]
    dropped = len(exhaustive) - 1 if len(exhaustive) > 1 else 0
    if dropped:
        frame = frame.drop(exhaustive.sort_values("ms_per_query").index[1:])
    kind = frame["strategy"].where((frame["strategy"] != "exhaustive") | (frame["ranking_bits"] == longest),
                                   "exhaustive_short")
    known = list(_RETRIEVAL_STRATEGIES)
    kinds = [s for s in known if s in set(kind)] + sorted(set(kind) - set(known))
    palette = sns.color_palette("colorblind", len(known) + len(kinds))
    colors = {s: palette[j] for j, s in enumerate([*known, *[s for s in kinds if s not in known]])}
    colors["exhaustive"] = (0.1, 0.1, 0.1)
    colors["shortlist_table"] = colors["shortlist"]  # the same search, only the shortlist is looked up
    k, n, n_q = int(frame["k"].iloc[0]), int(frame["db_size"].iloc[0]), int(frame["n_queries"].iloc[0])
    study = f"'{frame['study'].iloc[0]}'" if "study" in frame else "?"
    run = f", run {frame['run_id'].iloc[0]}" if "run_id" in frame else ""
    rounds = f"median of {int(frame['rounds'].iloc[0])} interleaved rounds, " if "rounds" in frame else ""
    caption = (f"Source: study {study}{run}: database of {n:,} items, {n_q:,} queries, top-{k}. Time: {rounds}"
               f"all queries in one batch, divided by their number. Bits scanned: prefix bits × prefix keys "
               f"compared + re-rank bits × candidates (a precomputed table is counted as its computed shortlist). "
               f"Ratio: mAP@{k} of the returned rankings / mAP@{k} of exhaustive {longest}-bit search.")
    labels = frame["short_label"].astype(str) if "short_label" in frame else pd.Series("", index=frame.index)
    if "filled_at_k" in frame:
        short = frame["filled_at_k"] < 1
        labels = labels.where(~short, labels + frame["filled_at_k"].map(lambda v: f" ({v:.0%} of k filled)"))
        if short.any():
            caption += (f" Where fewer than k items are returned (share of k filled in brackets), mAP@{k}, "
                        "normalised by the relevant items returned, does not count the missing ones; "
                        "precision@100 in the table does.")
    if dropped:
        caption += (" Exhaustive search was timed with faiss's default threads and with one thread; the faster "
                    "is the reference drawn.")
    with _style():
        fig, axes, caption = _grid(2, 2, caption, panel=(4.6, 3.6))
        handles, pending = [], []
        for ax, x, xlabel, title in (
            (axes.flat[0], "ms_per_query", "time per query (ms, log scale)", "quality against time"),
            (axes.flat[1], "bits_scanned", "bits scanned per query (log scale)", "quality against work"),
        ):
            for strategy in kinds:
                sub = frame[kind == strategy]
                text, marker, hollow = _RETRIEVAL_STRATEGIES.get(strategy, (strategy, "o", False))
                big = strategy == "exhaustive"
                color = colors[strategy]
                h = ax.scatter(sub[x], sub["map_ratio"], s=150 if big else 34, marker=marker,
                               facecolor="none" if hollow else color, edgecolor=color if hollow else "white",
                               linewidth=1.1 if hollow else 0.5, zorder=4 if big else 3, label=text)
                handles.append((h, text))
                pending.append((ax, x, sub, color if not big else (0.2, 0.2, 0.2)))
            line = ax.axhline(threshold, color="0.4", lw=0.9, ls="--", zorder=1)
            ax.set_xscale("log")
            ax.margins(x=0.12, y=0.08)  # room for the labels inside the panel
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(_compact_number))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"mAP@{k} relative to exhaustive (1 = equal)")
            ax.set_title(title)
        handles.append((line, f"{threshold:.0%} of the exhaustive mAP"))
        fig.draw_without_rendering()  # the layout fixes the transforms the label placement reads
        for ax in axes.flat:
            placed: list = []
            for axis, x, sub, color in pending:
                if axis is ax:
                    _place_labels(ax, sub[x], sub["map_ratio"], labels[sub.index], color, placed,
                                  [(a, xx, ss) for a, xx, ss, _c in pending if a is ax])
        return _finish(fig, axes, 2, f"Nested-code retrieval: mAP@{k} against cost ({n:,} database items)",
                       caption, handles, "strategy")


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


__all__.append("plot_learning_curve")  # kept beside the function: the list above is edited by other work
