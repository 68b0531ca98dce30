"""Training cost: K separate models against one nested model, and the speed-up set against the mAP change."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nhllib.analysis import tables
from nhllib.plots.accuracy import _marker_legend
from nhllib.plots.common import (
    COLLAPSED_COLOR, _caption, _collapse_flags, _dodge, _finish, _grid, _ordered_variants, _seed_note,
    _single_context, _skip, _style, _variant_colors,
)
from nhllib.plots.conflicts import _main_variant

__all__ = ["plot_speedup_vs_gain", "plot_training_time"]


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
        panel_width = min(8.4, max(4.2, 0.2 * n_bars * len(methods) + 1.5))  # wider would shrink the text
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


MAX_LABELLED = 15  # points of the speed-up scatter labelled one by one; beyond, the full method's only


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
    gain = delta.groupby(keys, sort=False).agg(gain=("mean", "mean"), gain_std=("std", "mean"),
                                               pairs=("n", "min")).reset_index()
    gain[["gain", "gain_std"]] *= 100
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
        _seed_note(n_all), "Horizontal bars: ± one std of the per-seed speed-up; vertical bars: the per-length std "
        "of the paired difference, averaged over the lengths." if (n_all > 1).any() else "",
        collapse_note.replace("Grey markers", "Grey"),
        "Every point is labelled with its method." if len(frame) <= MAX_LABELLED else
        f"Methods labelled on the {full} points ({len(frame)} points in all: too many to label each)."]))
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
                    if "n=1" not in gid:  # the promised ± one std, where there are seeds to take it over
                        ax.errorbar(part.loc[mask, "speedup_mean"], part.loc[mask, "gain"],
                                    xerr=part.loc[mask, "speedup_std"].fillna(0).to_numpy(),
                                    yerr=part.loc[mask, "gain_std"].fillna(0).to_numpy(), ls="", color=edge,
                                    elinewidth=0.9, capsize=2, zorder=2)
            handles.append((Line2D([], [], ls="", marker="D" if variant == full else "o", color=colors[variant]),
                            variant))
            labelled = part if len(frame) <= MAX_LABELLED or variant == full else part.iloc[0:0]
            for k, row in enumerate(labelled.sort_values("gain").itertuples(index=False)):
                ax.annotate(row.method, (row.speedup_mean, row.gain), xytext=(5, 3 if k % 2 else -9),
                            textcoords="offset points", fontsize=8, color=colors[variant] if variant != full else "0.2")
        ax.axhline(0, color="0.3", lw=0.9)
        ax.axvline(1, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("training speed-up over K separate models (×)")
        ax.set_ylabel("mAP change vs separate, mean over lengths (points)")
        ax.set_title("cost saved against accuracy changed")
        handles += _marker_legend(n_all, bool(frame["collapsed"].any()))
        return _finish(fig, axes, 1, "Speed-up against mAP change, per method and variant", caption, handles,
                       "variant")
