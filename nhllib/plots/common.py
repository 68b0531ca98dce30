"""Layout, style and the conventions every figure keeps (seeds, the reference level, collapse).

Shared by the figure modules of :mod:`nhllib.plots`; its underscore helpers are the package's own, not API.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.text import Text

from nhllib.analysis import tables
from nhllib.store.results import CONTEXT_COLUMNS
from nhllib.vocab import VARIANTS

__all__ = [
    "CAPTION_FONTSIZE", "COLLAPSED_COLOR", "MAX_COLUMNS", "METRIC_LABELS", "MIN_FONT_PT", "PANEL", "README_WIDTH_IN",
    "REFERENCE_COLOR", "REFERENCE_LABEL", "TIE_METRICS", "font_sizes_at_readme_width", "length_axis",
    "readable_at_readme_width",
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
PANEL = (3.2, 2.6)  # inches per panel
CAPTION_FONTSIZE = 8
#: The width a figure is read at: GitHub's README column, about 850 CSS px at 96 px per inch. A figure W inches
#: wide is shown scaled by README_WIDTH_IN / W, so its text is readable when size · README_WIDTH_IN / W >= 8 pt.
README_WIDTH_IN = 850 / 96
MIN_FONT_PT = 8.0  # the smallest text at README width
MAX_COLUMNS = 3  # panels per row: more makes the figure so wide that its text shrinks below MIN_FONT_PT


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
    ncols = max(1, min(ncols, n_panels, MAX_COLUMNS))
    nrows = nrows or math.ceil(n_panels / ncols)
    # At least 6.4 in wide, so that a one-panel figure still holds its title; room for the legend below the panels.
    width, height = max(6.4, panel[0] * ncols + 0.6), panel[1] * nrows + 1.6
    size = _min_size(width)
    caption = "\n".join(textwrap.wrap(caption, width=int(width * 120 / size), break_on_hyphens=False))
    band = (1.45 * size / 72 * (caption.count("\n") + 1) + 0.12) / height
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
        # Below the panels, above the caption, not beside them: a legend column would widen the figure and shrink
        # its text. The layout's bottom band grows by the legend's height (rows of text at the readable size).
        columns = max(1, min(len(unique), int(fig.get_figwidth() // 2.6)))
        rows = math.ceil(len(unique) / columns) + (1 if legend_title else 0)
        engine = fig.get_layout_engine()
        caption_band = engine.get()["rect"][1] if engine is not None and engine.get().get("rect") else 0.0
        legend_band = (rows * 1.6 + 0.8) * _min_size(fig.get_figwidth()) / 72 / fig.get_figheight()
        engine.set(rect=(0, caption_band + legend_band, 1, 1 - caption_band - legend_band))
        fig.legend(list(unique.values()), list(unique.keys()), loc="lower center", title=legend_title,
                   bbox_to_anchor=(0.5, caption_band), frameon=False, ncols=columns)
    fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=CAPTION_FONTSIZE, color="0.3", gid="caption")
    return readable_at_readme_width(fig)


def _min_size(width_in: float) -> float:
    """The smallest font size (pt) that reads as MIN_FONT_PT when a figure ``width_in`` wide is shown at README
    width (never below MIN_FONT_PT itself: a narrow figure is not enlarged)."""
    return MIN_FONT_PT * max(1.0, width_in / README_WIDTH_IN)


def readable_at_readme_width(fig: Figure) -> Figure:
    """Raise every text of ``fig`` (titles, labels, ticks, legends, annotations, caption) to the size that reads
    as at least :data:`MIN_FONT_PT` at :data:`README_WIDTH_IN`; larger text is left as it is."""
    floor = _min_size(fig.get_figwidth())
    fig.draw_without_rendering()  # creates the tick labels, so that they are found and sized too
    for ax in fig.axes:
        ax.tick_params(labelsize=max(floor, min((t.get_fontsize() for t in ax.get_xticklabels()), default=floor)))
    for text in fig.findobj(Text):
        if text.get_fontsize() < floor:
            text.set_fontsize(floor)
    return fig


def font_sizes_at_readme_width(fig: Figure, width_px: float | None = None, dpi: float | None = None
                               ) -> list[tuple[str, float]]:
    """(text, size in pt at README width) of every visible, non-empty text of ``fig``. ``width_px`` and ``dpi``
    (a saved PNG's width and resolution) give the figure's width; by default it is the figure's own."""
    fig.draw_without_rendering()
    width_in = width_px / dpi if width_px is not None and dpi else fig.get_figwidth()
    return [(t.get_text(), t.get_fontsize() * README_WIDTH_IN / width_in) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()]


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
                f"(nhllib.analysis.tables.select(frame, {column}=...))"
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
