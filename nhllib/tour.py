"""Helpers of the teaching notebook ``notebooks/00_tour.ipynb``: toy codes, distance histograms, figures.

Tensors or tidy DataFrames in; a tensor, a DataFrame or a matplotlib ``Figure`` out. Nothing here reads or
writes files or prints. Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so nothing is
registered globally; a notebook with ``%matplotlib inline`` shows the returned figure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from nhllib.checks import check_positive_int
from nhllib.results import require_columns

__all__ = [
    "codes_at_distances",
    "hamming_histograms",
    "plot_codes",
    "plot_conflicts",
    "plot_hamming_distributions",
    "plot_map_by_length",
]

logger = logging.getLogger(__name__)

TIE_ORDER = ("pessimistic", "expected", "optimistic", "index")
_CODE_CMAP = ListedColormap(["#2b2d42", "#f4d35e"])  # -1 dark, +1 light
_PAIR_COLORS = {"relevant": "#1b9e77", "irrelevant": "#d95f02"}


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    require_columns(frame, columns, name)
    if frame.empty:
        raise ValueError(f"{name} is empty; nothing to plot")


def _pm_one(codes: Tensor, name: str) -> Tensor:
    """Validate ±1 codes (any real values are binarised by ``x >= 0``, as in :mod:`nhllib.evaluate`)."""
    if not isinstance(codes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items, bits) tensor, got shape {tuple(codes.shape)}")
    return torch.where(codes >= 0, 1.0, -1.0)


def _class_ids(labels: Tensor, name: str, rows: int) -> Tensor:
    if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.shape[0] != rows:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a (items={rows}, classes) multi-hot tensor, got {shape}")
    return labels.float().argmax(dim=1)  # the first label of each item (the only one for single-label data)


# ----------------------------------------------------------------------------- toy codes


def codes_at_distances(query: Tensor, distances: Sequence[int], seed: int = 0) -> Tensor:
    """Codes at the given Hamming distances from ``query``: row i flips ``distances[i]`` random bits.

    Parameters
    ----------
    query:
        One ±1 code, shape ``(L,)``.
    distances:
        The wanted distance of each row, each in ``0..L``.
    seed:
        Seed of the choice of flipped bits.

    Returns
    -------
    A float ``(len(distances), L)`` tensor of ±1 codes.
    """
    if not isinstance(query, Tensor) or query.ndim != 1 or query.numel() == 0:
        raise ValueError(f"query must be a non-empty 1-D ±1 tensor (L,), got "
                         f"{tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__}")
    if not bool(((query == 1) | (query == -1)).all()):
        raise ValueError("query must hold only +1 and -1")
    length = query.numel()
    distances = list(distances)
    if not distances:
        raise ValueError("distances must hold at least one distance")
    for d in distances:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= length:
            raise ValueError(f"distances must be ints in 0..{length} (the code length), got {d!r}")
    generator = torch.Generator().manual_seed(seed)
    rows = query.float().repeat(len(distances), 1)
    for row, d in zip(rows, distances):
        flip = torch.randperm(length, generator=generator)[:d]
        row[flip] = -row[flip]
    return rows


# ----------------------------------------------------------------------------- distance histograms


def hamming_histograms(query_codes: Mapping[int, Tensor], query_labels: Tensor, db_codes: Mapping[int, Tensor],
                       db_labels: Tensor) -> pd.DataFrame:
    """Histogram of the Hamming distances of all query-database pairs, relevant and irrelevant apart.

    A pair is relevant when the two items share a label. ``query_codes`` and ``db_codes`` are ``{L: (N, L)}``
    dicts (e.g. from :func:`nhllib.evaluate.encode`). Returns a tidy frame with columns ``code_length``,
    ``pair`` (``"relevant"`` / ``"irrelevant"``), ``distance`` (every value 0..L), ``count`` and ``fraction``
    (count over the pairs of that length and kind, so each group sums to 1 when it has pairs).
    """
    for name, codes in (("query_codes", query_codes), ("db_codes", db_codes)):
        if not isinstance(codes, Mapping) or not codes:
            raise TypeError(f"{name} must be a non-empty dict {{code_length: codes}}, got {type(codes).__name__}")
    if set(query_codes) != set(db_codes):
        raise ValueError(f"query_codes and db_codes must have the same lengths, got {sorted(query_codes)} and "
                         f"{sorted(db_codes)}")
    rows = []
    relevant = None
    for length in sorted(query_codes):
        q = _pm_one(query_codes[length], f"query_codes[{length}]")
        d = _pm_one(db_codes[length], f"db_codes[{length}]")
        if q.shape[1] != length or d.shape[1] != length:
            raise ValueError(f"codes under key {length} must have {length} bits, got {q.shape[1]} (query) and "
                             f"{d.shape[1]} (database)")
        if relevant is None:
            _class_ids(query_labels, "query_labels", q.shape[0])
            _class_ids(db_labels, "db_labels", d.shape[0])
            relevant = (query_labels.float() @ db_labels.float().T) > 0
        if relevant.shape != (q.shape[0], d.shape[0]):
            raise ValueError(f"codes of length {length} have {q.shape[0]} queries x {d.shape[0]} items but the "
                             f"labels give {tuple(relevant.shape)}")
        # For ±1 codes q·b = (agreeing bits) - (differing bits) = L - 2·distance; the product is exact in float32.
        distance = ((length - q @ d.T) / 2).round().long()
        for pair, mask in (("relevant", relevant), ("irrelevant", ~relevant)):
            counts = torch.bincount(distance[mask], minlength=length + 1)
            total = int(counts.sum())
            for value, count in enumerate(counts.tolist()):
                rows.append({"code_length": length, "pair": pair, "distance": value, "count": count,
                             "fraction": count / total if total else 0.0})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures


def plot_codes(codes: Tensor, labels: Tensor, per_class: int = 4, class_names: Sequence[str] | None = None,
               boundaries: Sequence[int] = ()) -> Figure:
    """The codes of the first ``per_class`` items of each class as an image, one row per item, sorted by class.

    ``boundaries`` are bit positions marked by vertical lines (e.g. the shorter code lengths, whose codes are
    the bits to the left of each line). Items are grouped by their first label.
    """
    bits = _pm_one(codes, "codes")
    classes = _class_ids(labels, "labels", bits.shape[0])
    check_positive_int("per_class", per_class)
    num_classes = labels.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names must name all {num_classes} classes, got {len(class_names)} names")
    picked, groups = [], []
    for c in range(num_classes):
        members = torch.nonzero(classes == c).flatten()[:per_class]
        if members.numel():
            picked.append(members)
            groups.append((c, members.numel()))
    order = torch.cat(picked)
    width = bits.shape[1]
    fig = Figure(figsize=(min(2.5 + width * 0.13, 12), 1.2 + 0.16 * order.numel()), layout="constrained")
    ax = fig.subplots()
    ax.imshow(bits[order].numpy(), cmap=_CODE_CMAP, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    centres, start = [], 0
    for _, size in groups:
        centres.append(start + (size - 1) / 2)
        start += size
        if start < order.numel():
            ax.axhline(start - 0.5, color="white", linewidth=2)
    names = [class_names[c] if class_names is not None else f"class {c}" for c, _ in groups]
    ax.set_yticks(centres, labels=names)
    for position in boundaries:
        if 0 < position < width:
            ax.axvline(position - 0.5, color="#ef476f", linewidth=1.5, linestyle="--")
    ax.set_xlabel("bit index")
    ax.set_title(f"{width}-bit codes of {per_class} items per class"
                 + (" (dashed: ends of the shorter codes)" if boundaries else ""), fontsize=10)
    fig.legend([Patch(color=_CODE_CMAP(0)), Patch(color=_CODE_CMAP(1))], ["−1", "+1"], loc="outside right upper",
               frameon=False)
    return fig


def plot_map_by_length(maps: pd.DataFrame) -> Figure:
    """mAP against code length for each tie rule: the expected value, the optimistic-pessimistic band, index order.

    ``maps`` has columns ``code_length``, ``ties`` (values of :data:`nhllib.evaluate.TIE_MODES`) and ``map``.
    """
    _require(maps, ("code_length", "ties", "map"), "maps")
    unknown = sorted(set(maps["ties"]) - set(TIE_ORDER))
    if unknown:
        raise ValueError(f"maps['ties'] holds unknown tie rules {unknown}; expected some of {list(TIE_ORDER)}")
    table = maps.pivot_table(index="code_length", columns="ties", values="map", aggfunc="mean").sort_index()
    lengths = table.index.to_numpy()
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    if {"optimistic", "pessimistic"} <= set(table.columns):
        ax.fill_between(lengths, table["pessimistic"], table["optimistic"], color="#8ecae6", alpha=0.6,
                        label="any tie order (pessimistic … optimistic)")
    styles = {
        "expected": {"color": "#023047", "marker": "o", "label": "expected (random order within ties)"},
        "index": {"color": "#fb8500", "marker": "x", "linestyle": ":", "label": "index (database order)"},
    }
    for ties, style in styles.items():
        if ties in table.columns:
            ax.plot(lengths, table[ties], **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, labels=[str(int(v)) for v in lengths])
    ax.minorticks_off()
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("query mAP (0–1)")
    ax.set_title("mAP per code length, by tie rule", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_hamming_distributions(histograms: pd.DataFrame, ncols: int = 4) -> Figure:
    """One panel per code length: the distance distribution of relevant and of irrelevant query-database pairs.

    ``histograms`` is :func:`hamming_histograms`' frame. The less the two distributions overlap, the better
    Hamming ranking separates relevant items from the rest.
    """
    _require(histograms, ("code_length", "pair", "distance", "fraction"), "histograms")
    lengths = sorted(int(v) for v in histograms["code_length"].unique())
    ncols = max(1, min(ncols, len(lengths)))
    nrows = -(-len(lengths) // ncols)
    fig = Figure(figsize=(3.2 * ncols + 1.6, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, length in zip(axes, lengths):
        panel = histograms[histograms["code_length"] == length]
        for pair, color in _PAIR_COLORS.items():
            part = panel[panel["pair"] == pair].sort_values("distance")
            if not part.empty:
                ax.fill_between(part["distance"], part["fraction"], step="mid", alpha=0.35, color=color)
                ax.step(part["distance"], part["fraction"], where="mid", color=color, linewidth=1.2)
        ax.set_xlim(-0.5, length + 0.5)
        ax.set_title(f"{length} bits ({length + 1} possible distances)", fontsize=9)
        ax.set_xlabel("Hamming distance")
        ax.grid(alpha=0.3)
    for ax in axes[len(lengths):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("fraction of pairs")
    fig.legend([Patch(color=c, alpha=0.6) for c in _PAIR_COLORS.values()],
               ["relevant pairs (share a label)", "irrelevant pairs"], loc="outside lower center", ncols=2,
               frameon=False)
    fig.suptitle("Query-to-database Hamming distances", fontsize=11)
    return fig


def _text_color(rgba: tuple) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _pair_matrix(conflicts: pd.DataFrame, lengths: list[int], column: str) -> np.ndarray:
    """(K, K) step-weighted mean of ``column`` over epochs, NaN on and below the diagonal."""
    out = np.full((len(lengths), len(lengths)), np.nan)
    for (short, long), part in conflicts.groupby(["short_length", "long_length"]):
        out[lengths.index(int(short)), lengths.index(int(long))] = np.average(part[column], weights=part["steps"])
    return out


def plot_conflicts(conflicts: pd.DataFrame, weights: pd.DataFrame | None = None) -> Figure:
    """Gradient conflicts of one run: conflict rate and mean cosine per pair of lengths, and the weights used.

    ``conflicts`` has the rows of :class:`nhllib.conflicts.ConflictLog` (``epoch, short_length, long_length,
    steps, conflict_rate, mean_cosine, ...``); per pair, the epochs are averaged weighted by their steps.
    ``weights`` (optional) has its ``weight_rows`` (``epoch, code_length, weight``) and adds a third panel.
    """
    _require(conflicts, ("epoch", "short_length", "long_length", "steps", "conflict_rate", "mean_cosine"),
             "conflicts")
    if weights is not None:
        _require(weights, ("epoch", "code_length", "weight"), "weights")
    lengths = sorted({int(v) for v in conflicts["short_length"]} | {int(v) for v in conflicts["long_length"]})
    panels = 3 if weights is not None else 2
    fig = Figure(figsize=(4.1 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    specs = (("conflict_rate", "share of steps in conflict", "Reds", 0.0, 1.0),
             ("mean_cosine", "mean cosine of the two gradients", "RdBu", -1.0, 1.0))
    labels = [str(v) for v in lengths]
    for ax, (column, title, cmap, lo, hi) in zip(axes, specs):
        matrix = _pair_matrix(conflicts, lengths, column)
        image = ax.imshow(matrix, cmap=cmap, vmin=lo, vmax=hi)
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color=_text_color(image.cmap(image.norm(value))))
        ax.set_xticks(range(len(lengths)), labels=labels)
        ax.set_yticks(range(len(lengths)), labels=labels)
        ax.set_xlabel("longer code (bits)")
        ax.set_ylabel("shorter code (bits)")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if weights is not None:
        ax = axes[2]
        for length, part in weights.groupby("code_length"):
            part = part.sort_values("epoch")
            ax.plot(part["epoch"], part["weight"], marker="o", label=f"{int(length)} bits")
        ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        # From 0 up: flat weights of 1 (nothing damped) then read as such instead of as a zoomed-in wiggle.
        ax.set_ylim(0, max(2.0, 1.15 * float(weights["weight"].max())))
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean weight in the objective")
        ax.set_title("weights applied (they sum to K)", fontsize=9)
        ax.set_xticks(sorted(int(v) for v in weights["epoch"].unique()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    steps = int(conflicts.groupby("epoch")["steps"].first().sum())
    fig.suptitle(f"Gradient conflicts on the shared hash weight ({steps} measured steps)", fontsize=11)
    return fig
