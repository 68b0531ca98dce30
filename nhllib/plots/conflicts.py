"""Gradient conflicts between code lengths and the adaptive weights the conflict rule applied."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nhllib.analysis import tables
from nhllib.plots.common import _caption, _facets, _finish, _grid, _length_colors, _ordered_variants, _skip, _style
from nhllib.store.results import CONFLICT_PLOT_COLUMNS, HISTORY_PLOT_COLUMNS, require_columns
from nhllib.vocab import VARIANTS

FLAT_WEIGHT = 0.01  # a weight panel within this of 1 at every epoch is flat

__all__ = ["FLAT_WEIGHT", "plot_conflict_heatmap", "plot_conflict_rates", "plot_cosine_distribution", "plot_weights"]


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
    # The colour scale ends at the largest rate (rounded up to 0.05), not at 1: rates of a few percent would all
    # look white. Values are written in the cells only when they are few enough to read.
    top = float(np.nanmax(rows["conflict_rate"].to_numpy(float))) if len(rows) else 1.0
    vmax = min(1.0, max(0.05, math.ceil(top / 0.05 - 1e-9) * 0.05))
    annotate = len(pairs) * len(epochs) <= 40
    note = ("Cell: the share of monitored steps in the epoch whose gradients (shared hash weight, the shorter "
            f"code's rows) have a negative dot product; colour scale 0–{vmax:.2f} (the largest rate, rounded up)"
            f"{'' if annotate else ', values in the colour bar only (too many cells to write them)'}. "
            f"{_runs_note(rows, ['method', 'epoch'])}")
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
            image = _heat(ax, matrix, 0, vmax, _conflict_cmap(), annotate=annotate)
            ax.set_xticks(range(len(epochs)), labels=[str(e) for e in epochs])
            ax.set_yticks(range(len(pairs)), labels=[_pair_label(a, b) for a, b in pairs])
            ax.set_xlabel("epoch")
            ax.set_ylabel("pair (short|long bits)")
            ax.set_title(method)
        used = axes.flat[:len(methods_present)]
        fig.colorbar(image, ax=list(used), label="steps in conflict (share of the epoch)", shrink=0.8)
        return _finish(fig, axes, len(methods_present),
                       f"When code lengths conflict: share of steps per pair and epoch ({chosen})", caption)


def plot_conflict_heatmap(conflicts: pd.DataFrame, variant: str | None = None,
                          methods: Sequence[str] | None = None, distill_weight: float | None = None) -> Figure | None:
    """Figure 4b: which pairs conflict: the share of all monitored steps in conflict, method (rows) × (short,
    long) pair (columns), over the whole run (step-weighted over epochs, mean over runs;
    :func:`nhllib.analysis.tables.conflict_summary`), for one variant (default ``nhl``)."""
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
    # Panels whose weights never leave 1 by more than FLAT_WEIGHT say only "the rule never damped": they are grouped
    # into one last panel (the mean over them per length) and named in the caption (the smallest per-epoch weight,
    # from nhllib.analysis.tables.weight_summary, decides).
    smallest = tables.weight_summary(rows).groupby(["method", "variant"])["min"].min()
    flat = sorted(key for key, value in smallest.items() if value >= 1 - FLAT_WEIGHT)
    is_flat = pd.Series([(m, v) in set(flat) for m, v in zip(rows["method"], rows["variant"])], index=rows.index)
    flat_rows, kept = rows[is_flat], rows[~is_flat]
    flat_note = (f" Grouped in the last panel, their weights within {FLAT_WEIGHT:g} of 1 at every epoch (the rule "
                 "never damped): " + ", ".join(f"{m} · {v}" for m, v in flat) + "." if flat else "")
    panels = _panels_by_run_kind(kept) if not kept.empty else []
    group_key = ("\uffff", flat[0][1]) if flat else None  # sorts after every method
    if group_key:
        panels.append(group_key)
    note = ("Weight applied to each length's objective, mean over the steps of an epoch (they sum to K; 1 = "
            "uniform). " + _runs_note(rows, ["method", "variant"]).replace("cell", "panel")
            + (" Band: ± one std over seeds." if rows.groupby(["method", "variant"])["run_id"].nunique().max() > 1
               else "") + flat_note)
    low, high = float(rows["value"].min()), float(rows["value"].max())
    with _style():
        fig, axes, caption, where = _facets(panels, _caption(rows, note), panel=(3.6, 2.8))
        handles = []
        for (method, variant), ax in where.items():
            grouped = (method, variant) == group_key
            sub = flat_rows if grouped else kept[(kept["method"] == method) & (kept["variant"] == variant)]
            stats = sub.groupby(["code_length", "epoch"])["value"].agg(["mean", "std"])
            for length, line in stats.groupby(level=0):
                line = line.droplevel(0).sort_index()
                (h,) = ax.plot(line.index, line["mean"], color=colors[length], lw=1.4, marker=".", ms=3)
                ax.fill_between(line.index, line["mean"] - line["std"].fillna(0),
                                line["mean"] + line["std"].fillna(0), color=colors[length], alpha=0.15, lw=0)
                handles.append((h, f"{length} bits"))
            ax.axhline(1, color="0.3", lw=0.8, ls=":")
            ax.set_ylim(min(low, 0.9) - 0.05, max(high, 1.1) + 0.05)  # one scale for every panel, 1 ± 0.1 at least
            ax.set_title(f"never damped: {len(flat)} panel{'s' if len(flat) != 1 else ''} (caption)" if grouped
                         else f"{method} · {variant}")
            _epoch_axis(ax)
            ax.set_ylabel("applied weight (1 = uniform)")
        return _finish(fig, axes, where.values(), "Conflict-aware weights over training", caption, handles,
                       "code length")
