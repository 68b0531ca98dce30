"""The study's figures: tidy DataFrame in, matplotlib ``Figure`` out.

Inputs are :func:`nhllib.results.load_results` tables (``metrics.csv``, or ``conflicts.csv`` / ``history.csv`` /
``curves.csv`` joined to their runs with :func:`nhllib.tables.attach_runs`). All numbers come from
:mod:`nhllib.tables`; this module only draws. Every figure has a title, axis labels with units, a legend (a
colour bar for the heat map) and a caption line naming the runs it comes from. A figure whose runs do not exist
returns ``None`` (logged at INFO), so a notebook renders those that can be rendered. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing is registered globally; :func:`save_figure` is the only
file I/O.
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
    require_columns,
)
from nhllib.vocab import VARIANTS

__all__ = [
    "METRIC_LABELS",
    "default_output_dir",
    "plot_ablation",
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


def _facets(panels: Sequence[tuple[str, str]], caption: str, panel: tuple[float, float]):
    """One row per method, one column per variant; returns the figure, axes, caption and (method, variant) -> ax."""
    methods = sorted({m for m, _ in panels})
    variants = _ordered_variants([v for _, v in panels])
    fig, axes, caption = _grid(len(methods) * len(variants), len(variants), caption, panel, nrows=len(methods))
    where = {(m, v): axes[methods.index(m), variants.index(v)] for m, v in panels}
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
    fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=CAPTION_FONTSIZE, color="0.3")
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
    present = set(frame["variant"])
    return [v for v in wanted if v in present] or _ordered_variants(present)


def _length_axis(ax, lengths: Sequence[int]) -> None:
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


# ---------------------------------------------------------------- 1. mAP vs code length


def plot_map_vs_length(metrics: pd.DataFrame, metric: str = "map", distill_weight: float | None = None,
                       ncols: int = 3) -> Figure | None:
    """Figure 1: mAP against code length per method, ``separate`` against every NHL variant (mean ± std)."""
    data = tables.main_comparison(metrics, distill_weight)
    rows = _per_length_rows(data, metric)
    if rows.empty:
        _skip("map_vs_length", f"no per-length {metric!r} rows")
        return None
    _single_context(rows)
    table = tables.map_table(rows, metric)
    methods = sorted(table["method"].unique())
    variants = _ordered_variants(table["variant"])
    colors = _variant_colors(variants)
    baseline = tables.single_length_variant()
    note = "Points: mean over seeds; bars: ± one std."
    with _style():
        fig, axes, caption = _grid(len(methods), ncols, _caption(rows, note))
        handles = []
        for ax, method in zip(axes.flat, methods):
            sub = table[table["method"] == method]
            for j, variant in enumerate(variants):
                line = sub[sub["variant"] == variant].sort_values("code_length")
                if line.empty:
                    continue
                x = line["code_length"] * 2 ** _dodge(j, len(variants), 0.25)
                h = ax.errorbar(x, line["mean"], yerr=_yerr(line["std"]), marker="o", ms=4, capsize=2, lw=1.4,
                                color=colors[variant], ls="--" if variant == baseline else "-", label=variant)
                handles.append((h, variant))
            _length_axis(ax, sub["code_length"])
            ax.set_title(method)
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        return _finish(fig, axes, len(methods), f"{METRIC_LABELS.get(metric, metric).split(' (')[0]} vs code length: "
                       "separate models vs nested variants", caption, handles, "variant")


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
    note = ("Separate: the sum over its K single-length runs (same seed). Speed-up: mean over seeds of the per-seed "
            "ratio. Bars: mean; whiskers: ± one std over seeds. Training loop only (evaluation excluded).")
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
    wanted = [v for v in tables.variant_order() if v != baseline] if variants is None else list(variants)
    data = tables.main_comparison(metrics, distill_weight)
    rows = _per_length_rows(data, metric)
    rows = rows[rows["variant"].isin([*wanted, baseline])] if not rows.empty else rows
    if rows.empty or not rows["variant"].isin(wanted).any():
        _skip("ablation", f"no runs of the variants {wanted}")
        return None
    _single_context(rows)
    table = tables.map_table(rows[rows["variant"].isin(wanted)], metric)
    delta = tables.delta_table(rows, metric)
    methods = sorted(table["method"].unique())
    present = _ordered_variants(table["variant"])
    colors = _variant_colors(present)
    show_delta = not delta.empty
    note = "Points: mean over seeds; bars: ± one std."
    if show_delta:
        note += f" Right: paired difference to {baseline} (same seed), mean ± std over seeds."
    with _style():
        fig, axes, caption = _grid(len(methods) * (2 if show_delta else 1), 2 if show_delta else 3,
                                   _caption(rows, note), panel=(4.6, 3.0))
        handles = []
        panels = [(method, kind) for method in methods for kind in (["map", "delta"] if show_delta else ["map"])]
        for ax, (method, kind) in zip(axes.flat, panels):
            frame = table if kind == "map" else delta
            sub = frame[frame["method"] == method]
            lengths = sorted(sub["code_length"].unique()) if not sub.empty else []
            position = {length: k for k, length in enumerate(lengths)}
            for j, variant in enumerate(present):
                line = sub[sub["variant"] == variant].sort_values("code_length")
                if line.empty:
                    continue
                x = line["code_length"].map(position) + _dodge(j, len(present))
                h = ax.errorbar(x, line["mean"], yerr=_yerr(line["std"]), fmt="o", ms=4, capsize=2,
                                color=colors[variant], label=variant)
                handles.append((h, variant))
            ax.set_xticks(range(len(lengths)), labels=[str(int(v)) for v in lengths])
            ax.set_xlabel("code length (bits)")
            if kind == "map":
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
                ax.set_title(method)
            else:
                ax.axhline(0, color="0.3", lw=0.8)
                ax.set_ylabel(f"mAP − mAP({baseline})")
                ax.set_title(f"{method}: difference to {baseline}")
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


def plot_conflict_rates(conflicts: pd.DataFrame, variants: Sequence[str] | None = None,
                        methods: Sequence[str] | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 4a: share of steps in which each (short, long) pair conflicts (dot < 0), over the epochs.

    One panel per method × variant; lines: mean over runs (seeds), band: ± one std.
    """
    rows = _conflict_rows(conflicts, "conflict_rates", variants, methods, distill_weight)
    if rows is None:
        return None
    pairs = sorted({(int(s), int(l)) for s, l in zip(rows["short_length"], rows["long_length"])})
    import seaborn as sns

    palette = dict(zip(pairs, sns.color_palette("tab10" if len(pairs) <= 10 else "husl", len(pairs))))
    panels = _panels_by_run_kind(rows)
    note = "Per epoch: the share of monitored steps whose gradients (shared hash weight, the shorter code's rows) " \
           "have a negative dot product. Lines: mean over seeds; band: ± one std."
    with _style():
        fig, axes, caption, where = _facets(panels, _caption(rows, note), panel=(3.6, 2.8))
        handles = []
        for (method, variant), ax in where.items():
            sub = rows[(rows["method"] == method) & (rows["variant"] == variant)]
            stats = sub.groupby(["short_length", "long_length", "epoch"])["conflict_rate"].agg(["mean", "std"])
            for (short, long), line in stats.groupby(level=[0, 1]):
                line = line.droplevel([0, 1]).sort_index()
                color = palette[(int(short), int(long))]
                (h,) = ax.plot(line.index, line["mean"], color=color, lw=1.4, marker=".", ms=3)
                ax.fill_between(line.index, line["mean"] - line["std"].fillna(0),
                                line["mean"] + line["std"].fillna(0), color=color, alpha=0.15, lw=0)
                handles.append((h, _pair_label(short, long)))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{method} · {variant}")
            _epoch_axis(ax)
            ax.set_ylabel("steps in conflict (share, 0–1)")
        return _finish(fig, axes, where.values(), "Gradient conflicts between code lengths over training", caption,
                       handles, "pair (short|long bits)")


def plot_conflict_heatmap(conflicts: pd.DataFrame, variants: Sequence[str] | None = None,
                          methods: Sequence[str] | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 4b: the share of all monitored steps in conflict per (short, long) pair, as a matrix per
    method × variant (step-weighted over epochs, mean over runs; :func:`nhllib.tables.conflict_summary`)."""
    rows = _conflict_rows(conflicts, "conflict_heatmap", variants, methods, distill_weight)
    if rows is None:
        return None
    summary = tables.conflict_summary(rows)
    lengths = sorted({int(v) for v in pd.concat([summary["short_length"], summary["long_length"]])})
    panels = _panels_by_run_kind(summary)
    note = "Cell: share of monitored steps where the pair's gradients conflict (dot < 0), over the whole run, " \
           "mean over seeds."
    with _style():
        fig, axes, caption, where = _facets(panels, _caption(rows, note), panel=(2.9, 2.6))
        image = None
        for (method, variant), ax in where.items():
            sub = summary[(summary["method"] == method) & (summary["variant"] == variant)]
            matrix = np.full((len(lengths) - 1, len(lengths) - 1), np.nan)
            for row in sub.itertuples(index=False):
                matrix[lengths.index(int(row.short_length)), lengths.index(int(row.long_length)) - 1] = row.rate_mean
            image = ax.imshow(matrix, vmin=0, vmax=1, cmap="rocket_r" if _has_rocket() else "magma_r")
            for (r, c), value in np.ndenumerate(matrix):
                if not np.isnan(value):
                    ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value > 0.5 else "black")
            ax.set_xticks(range(len(lengths) - 1), labels=[str(v) for v in lengths[1:]])
            ax.set_yticks(range(len(lengths) - 1), labels=[str(v) for v in lengths[:-1]])
            ax.set_xlabel("longer code (bits)")
            ax.set_ylabel("shorter code (bits)")
            ax.set_title(f"{method} · {variant}")
            ax.grid(False)
        fig.colorbar(image, ax=axes.ravel().tolist(), label="steps in conflict (share, 0–1)", shrink=0.8)
        return _finish(fig, axes, where.values(), "Which code lengths conflict: share of steps per pair", caption)


def _has_rocket() -> bool:
    import matplotlib
    import seaborn  # noqa: F401  # registers the "rocket" colormap

    return "rocket_r" in matplotlib.colormaps


def plot_cosine_distribution(conflicts: pd.DataFrame, variants: Sequence[str] | None = None,
                             methods: Sequence[str] | None = None, distill_weight: float | None = None,
                             ncols: int = 2) -> Figure | None:
    """Figure 4c: distribution of the per-epoch mean cosine similarity per (short, long) pair and variant."""
    rows = _conflict_rows(conflicts, "cosine_distribution", variants, methods, distill_weight)
    if rows is None:
        return None
    rows = rows.assign(pair=[_pair_label(s, l) for s, l in zip(rows["short_length"], rows["long_length"])])
    order = [_pair_label(s, l) for s, l in sorted({(int(s), int(l)) for s, l in
                                                   zip(rows["short_length"], rows["long_length"])})]
    present = _ordered_variants(rows["variant"])
    colors = _variant_colors(present)
    methods_present = sorted(rows["method"].unique())
    note = "Box: per-epoch means of the per-step cosine between the two lengths' gradients on the shared rows, " \
           "pooled over epochs and seeds; below 0 the gradients point against each other."
    with _style():
        fig, axes, caption = _grid(len(methods_present), ncols, _caption(rows, note),
                                   panel=(max(4.2, 0.25 * len(order) * len(present) + 1.5), 3.2))
        width = 0.8 / len(present)
        for ax, method in zip(axes.flat, methods_present):
            sub = rows[rows["method"] == method]
            for j, variant in enumerate(present):
                part = sub[sub["variant"] == variant]
                groups = [(k, part.loc[part["pair"] == pair, "mean_cosine"].dropna().to_numpy())
                          for k, pair in enumerate(order)]
                groups = [(k, values) for k, values in groups if len(values)]
                if not groups:
                    continue
                boxes = ax.boxplot([values for _, values in groups],
                                   positions=[k + _dodge(j, len(present), 0.8) for k, _ in groups],
                                   widths=width * 0.9, patch_artist=True, manage_ticks=False,
                                   flierprops={"markersize": 2}, medianprops={"color": "black", "lw": 1})
                for box in boxes["boxes"]:
                    box.set(facecolor=colors[variant], edgecolor="0.2", lw=0.8)
            ax.set_xticks(range(len(order)), labels=order)
            ax.set_xlim(-0.6, len(order) - 0.4)
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_title(method)
            ax.set_xlabel("code pair (short|long, bits)")
            ax.set_ylabel("cosine similarity (−1 to 1)")
        handles = [(Patch(facecolor=colors[v]), v) for v in present]
        return _finish(fig, axes, len(methods_present), "How aligned are the gradients of two code lengths?",
                       caption, handles, "variant")


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
    note = "Weight applied to each length's objective, mean over the steps of an epoch (they sum to K; 1 = " \
           "uniform). Lines: mean over seeds; band: ± one std."
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


# ---------------------------------------------------------------- 5. distillation weight


def plot_distill_sensitivity(metrics: pd.DataFrame, variant: str = "nhl", metric: str = "map",
                             ncols: int = 3) -> Figure | None:
    """Figure 5: mAP against the distillation weight λ per code length, for the methods whose ``variant`` runs
    use at least two λ values (x on a log scale; symlog when λ = 0 is among them)."""
    rows = _per_length_rows(metrics, metric)
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
    note = f"Variant {variant!r}. Points: mean over seeds; bars: ± one std."
    with _style():
        fig, axes, caption = _grid(len(methods), ncols, _caption(rows, note))
        handles = []
        for ax, method in zip(axes.flat, methods):
            sub = table[table["method"] == method]
            for length, line in sub.groupby("code_length"):
                line = line.sort_values("distill_weight")
                h = ax.errorbar(line["distill_weight"], line["mean"], yerr=_yerr(line["std"]), marker="o", ms=4,
                                capsize=2, color=colors[int(length)], lw=1.4)
                handles.append((h, f"{int(length)} bits"))
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
           "orders within ties; cross: database (index) order. Means over seeds."
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
            _length_axis(ax, sub["code_length"])
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
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Creator": "nhllib"} if fmt == "png" else None)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


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
    with _style():
        fig, axes, caption = _grid(2, 2, caption, panel=(4.6, 3.6))
        handles = []
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
                # labels alternate above / below the point so neighbours overlap less
                for j, (xv, yv, label) in enumerate(zip(sub[x], sub["map_ratio"], labels[sub.index])):
                    ax.annotate(label, (xv, yv), xytext=(4, 3 if j % 2 == 0 else -8), textcoords="offset points",
                                fontsize=5.5, color=color if not big else "0.2")
            line = ax.axhline(threshold, color="0.4", lw=0.9, ls="--", zorder=1)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(_compact_number))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"mAP@{k} relative to exhaustive (1 = equal)")
            ax.set_title(title)
        handles.append((line, f"{threshold:.0%} of the exhaustive mAP"))
        return _finish(fig, axes, 2, f"Nested-code retrieval: mAP@{k} against cost ({n:,} database items)",
                       caption, handles, "strategy")
