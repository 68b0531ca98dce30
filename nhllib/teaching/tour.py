"""Helpers of the teaching notebook ``notebooks/00_tour.ipynb``: toy codes, distance histograms, the tour's
training runs with their reference levels, diagrams of the nested layer and of the conflict rule, figures.

Tensors, configs or tidy DataFrames in; a tensor, a DataFrame, a :class:`TourRun` or a matplotlib ``Figure``
out. Nothing here prints or writes files (training reads the data and saves its split, as every run does). Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so nothing is
registered globally; a notebook with ``%matplotlib inline`` shows the returned figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Polygon
from torch import Tensor

from nhllib.analysis import tables
from nhllib.checks import check_positive_int
from nhllib.core.evaluate import encode, evaluate_nested, mean_average_precision
from nhllib.core.losses import TARGET_MODES, build_losses
from nhllib.core.weighting import conflict_weights
from nhllib.plots import length_axis, plot_nested_layer
from nhllib.plots.diagrams import text_color_on
from nhllib.store.results import require_columns
from nhllib.training.config import RunConfig
from nhllib.training.experiment import BuiltRun, build_run
from nhllib.training.train import FitResult

__all__ = [
    "TourRun",
    "codes_at_distances",
    "conflict_summary",
    "map_table",
    "same_targets",
    "targets_story",
    "target_agreement",
    "time_table",
    "train_run",
    "train_separate",
    "weight_summary",
    "hamming_histograms",
    "plot_codes",
    "resolve_data_dir",
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
    """Validate ±1 codes (any real values are binarised by ``x >= 0``, as in :mod:`nhllib.core.evaluate`)."""
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
    dicts (e.g. from :func:`nhllib.core.evaluate.encode`). Returns a tidy frame with columns ``code_length``,
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

    ``maps`` has columns ``code_length``, ``ties`` (values of :data:`nhllib.core.evaluate.TIE_MODES`) and ``map``.
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
    length_axis(ax, lengths)
    ax.set_ylabel("query mAP (0–1)")
    ax.set_title("mAP per code length, by tie rule", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_hamming_distributions(histograms: pd.DataFrame, ncols: int = 2) -> Figure:
    """One panel per code length: the distance distribution of relevant and of irrelevant query-database pairs.

    ``histograms`` is :func:`hamming_histograms`' frame. The less the two distributions overlap, the better
    Hamming ranking separates relevant items from the rest.
    """
    _require(histograms, ("code_length", "pair", "distance", "fraction"), "histograms")
    lengths = sorted(int(v) for v in histograms["code_length"].unique())
    ncols = max(1, min(ncols, len(lengths)))
    nrows = -(-len(lengths) // ncols)
    # Two panels to a row (not one long strip): each panel keeps a readable height at notebook width.
    fig = Figure(figsize=(3.6 * ncols + 0.6, 2.6 * nrows + 0.8), layout="constrained")
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


def _pair_matrix(conflicts: pd.DataFrame, lengths: list[int], column: str) -> np.ndarray:
    """(K, K) step-weighted mean of ``column`` over epochs, NaN on and below the diagonal."""
    out = np.full((len(lengths), len(lengths)), np.nan)
    for (short, long), part in conflicts.groupby(["short_length", "long_length"]):
        out[lengths.index(int(short)), lengths.index(int(long))] = np.average(part[column], weights=part["steps"])
    return out


def plot_conflicts(conflicts: pd.DataFrame, weights: pd.DataFrame | None = None) -> Figure:
    """Gradient conflicts of one run: conflict rate and mean cosine per pair of lengths, and the weights used.

    ``conflicts`` has the rows of :class:`nhllib.training.conflicts.ConflictLog` (``epoch, short_length, long_length,
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
                        color=text_color_on(image.cmap(image.norm(value))))
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
            # Lengths often share a weight (1 when nothing is damped): distinct markers and dashes, drawn in
            # decreasing size, keep a line visible under another.
            k = sorted(weights["code_length"].unique()).index(length)
            ax.plot(part["epoch"], part["weight"], marker="osD^v"[k % 5], ms=9 - 1.5 * k, lw=2.4 - 0.4 * k,
                    ls=("-", "--", "-.", ":")[k % 4], label=f"{int(length)} bits")
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


# ----------------------------------------------------------------------------- training runs of the tour


@dataclass
class TourRun:
    """One trained model of the tour and what the tour shows about it.

    ``query_map`` is the query mAP per length of the best-validation checkpoint (expected tie order),
    ``untrained_map`` the same for the freshly initialised network before the first step, ``chance_map`` the
    mAP of a network that gives every image the same code (every item tied: a random ranking), and
    ``wall_s`` the wall time of building and training (data loading, evaluations and all).
    """

    label: str
    config: RunConfig
    built: BuiltRun
    result: FitResult
    query_map: dict[int, float]
    untrained_map: dict[int, float]
    chance_map: float
    wall_s: float
    targets: str | None = None


def _targets_of(loss: torch.nn.Module) -> Tensor | None:
    """The per-class target codes of a centre-based loss (CSQ, MDSH, SHCIR: ``centers``; DPN: ``targets``)."""
    for name in ("centers", "targets"):
        value = getattr(loss, name, None)
        if isinstance(value, Tensor):
            return value
    return None


def train_run(cfg: RunConfig, targets: str | None = None, label: str | None = None) -> TourRun:
    """Build and train ``cfg`` as :func:`nhllib.training.experiment.build_run` and :func:`nhllib.training.train.fit` do.

    ``targets`` (``"nested"`` or ``"independent"``, nested models only) rebuilds the per-length losses with
    :func:`nhllib.core.losses.build_losses` so that the targets of the shorter lengths are prefixes of the longest
    one's, or built on their own; ``None`` keeps what ``build_run`` made. The model's initial weights do not
    depend on it, so two runs that differ only in ``targets`` start from the same network.
    """
    if targets is not None and targets not in TARGET_MODES:
        raise ValueError(f"targets must be None or one of {TARGET_MODES}, got {targets!r}")
    start = time.perf_counter()
    if targets is not None:
        cfg = RunConfig.from_dict({**cfg.flat(), "targets": targets})
    built = build_run(cfg, progress=False)
    built.model.to(built.device)
    db_codes, db_labels = encode(built.model, built.data.database, built.device)
    q_codes, q_labels = encode(built.model, built.data.query, built.device)
    untrained = evaluate_nested(q_codes, q_labels, db_codes, db_labels, ties=cfg.training.ties)
    same_code_q = torch.ones(q_labels.shape[0], 1)
    chance = mean_average_precision(same_code_q, q_labels, torch.ones(db_labels.shape[0], 1), db_labels,
                                    ties="expected")
    result = built.fit()
    if result.best_state is not None:
        built.model.load_state_dict(result.best_state)
    wall = time.perf_counter() - start
    logger.info("%s: %d epochs, training %.1f s, wall %.1f s", label or cfg.hashing.variant, result.epochs_run,
                result.train_time_s, wall)
    return TourRun(label or cfg.hashing.variant, cfg, built, result, dict(result.query_map_best), untrained, chance, wall,
                   targets)


def train_separate(cfg: RunConfig, label: str = "separate") -> TourRun:
    """One single-length model per length of ``cfg`` (the ``separate`` baseline), trained one after the other.

    Returns one :class:`TourRun` whose ``query_map`` / ``untrained_map`` hold every length, ``result`` the last
    model's fit (its ``train_time_s`` replaced by the sum over the models) and ``wall_s`` the total wall time.
    """
    start = time.perf_counter()
    runs = [train_run(RunConfig.from_dict({**cfg.flat(), "variant": "separate", "code_lengths": (length,)}),
                      label=f"separate {length}")
            for length in cfg.model.code_lengths]
    last = runs[-1]
    result = replace(last.result, train_time_s=sum(r.result.train_time_s for r in runs),
                     epochs_run=max(r.result.epochs_run for r in runs))
    return TourRun(label, cfg, last.built, result, {k: v for r in runs for k, v in r.query_map.items()},
                   {k: v for r in runs for k, v in r.untrained_map.items()}, last.chance_map,
                   time.perf_counter() - start)


def map_table(runs: Sequence[TourRun]) -> pd.DataFrame:
    """Query mAP per code length of each run, with the two references: the untrained network (of the first
    run) and a network giving every image the same code (chance). Rows: model; columns: code length."""
    if not runs:
        raise ValueError("runs must hold at least one TourRun")
    rows = {run.label: run.query_map for run in runs}
    first = runs[0]
    rows["untrained network (reference)"] = first.untrained_map
    rows["same code for every image (chance)"] = {length: first.chance_map for length in first.query_map}
    table = pd.DataFrame(rows).T
    table.columns = [int(c) for c in table.columns]
    return table[sorted(table.columns)]


def time_table(runs: Sequence[TourRun]) -> pd.DataFrame:
    """Training-loop time, wall time and epochs of each run (one row per run)."""
    return pd.DataFrame([{"model": run.label, "lengths": len(run.query_map), "epochs": run.result.epochs_run,
                          "training loop (s)": round(run.result.train_time_s, 1), "wall (s)": round(run.wall_s, 1)}
                         for run in runs]).set_index("model")


def target_agreement(losses: Sequence[torch.nn.Module], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """For each class: is each shorter length's target code the prefix of the longest length's target?

    ``losses`` are the per-length losses of one nested model, shortest first. Losses without per-class targets
    (pairwise and triplet losses) give an empty frame. Columns: ``class`` and one boolean column per shorter
    length ``L``, named ``"L-bit = prefix"``; ``False`` marks a class whose L-bit target contradicts the first L
    bits of its longest target, a built-in gradient conflict.
    """
    targets = [_targets_of(loss) for loss in losses]
    if len(targets) < 2 or any(t is None for t in targets):
        return pd.DataFrame(columns=["class"])
    longest = targets[-1]
    rows = []
    for c in range(longest.shape[0]):
        row = {"class": class_names[c] if class_names is not None else c}
        for short in targets[:-1]:
            row[f"{short.shape[1]}-bit = prefix"] = bool(torch.equal(short[c], longest[c, :short.shape[1]]))
        rows.append(row)
    return pd.DataFrame(rows)


def same_targets(a: Sequence[torch.nn.Module], b: Sequence[torch.nn.Module]) -> bool:
    """Whether two lists of per-length losses hold identical per-class targets (True when neither has any)."""
    for x, y in zip(a, b, strict=True):
        tx, ty = _targets_of(x), _targets_of(y)
        if (tx is None) != (ty is None) or (tx is not None and not torch.equal(tx, ty)):
            return False
    return True


def _run_keys(run: TourRun) -> dict:
    """The columns that join a tour run's logs to it, as ``attach_runs`` joins a study's (the label is its id)."""
    hashing = run.config.hashing
    return {"run_id": run.label, "method": hashing.method, "variant": hashing.variant,
            "distill_weight": run.config.plan.distill_weight}


def conflict_summary(run: TourRun) -> pd.DataFrame:
    """Per pair of lengths, over the whole run: share of steps in conflict, mean cosine and mean α (epochs
    weighted by their steps), computed by :func:`nhllib.analysis.tables.conflict_summary` as for a study; empty for runs
    without a conflict log."""
    log = run.result.conflicts
    if log is None or not log.rows:
        return pd.DataFrame(columns=["pair", "conflict_rate", "mean_cosine", "mean_alpha"])
    summary = tables.conflict_summary(pd.DataFrame(log.rows).assign(**_run_keys(run)))
    summary["pair"] = [f"{int(s)}|{int(l)}" for s, l in zip(summary["short_length"], summary["long_length"])]
    columns = {"rate_mean": "conflict_rate", "cosine_mean": "mean_cosine", "alpha_mean": "mean_alpha"}
    return summary.rename(columns=columns).set_index("pair")[list(columns.values())].round(3)


def weight_summary(runs: Sequence[TourRun]) -> pd.DataFrame:
    """Mean weight applied to each length over training, one row per run, computed by
    :func:`nhllib.analysis.tables.weight_summary` as for a study. Weights of 1 mean the conflict rule never damped
    anything (or the variant does not apply it)."""
    rows = {}
    for run in runs:
        log = run.result.conflicts
        if log is None or not log.weight_rows:
            continue
        history = pd.DataFrame(log.weight_rows).rename(columns={"weight": "value"})
        history = history.assign(split="train", metric="weight", **_run_keys(run))
        summary = tables.weight_summary(history)
        rows[run.label] = {int(length): float(mean) for length, mean in zip(summary["code_length"], summary["mean"])}
    return pd.DataFrame(rows).T.round(3)


def targets_story(run: TourRun, class_names: Sequence[str] | None = None) -> str:
    """Markdown on whether the lengths' per-class targets agree in ``run``, written from its own losses: the
    classes whose shorter target is not the prefix of their longest target, or, for a method without per-class
    targets (pairwise and triplet losses), that the lengths cannot disagree about targets."""
    method = run.config.hashing.method
    table = target_agreement(run.built.losses, class_names)
    if table.empty:
        return (f"**{method}** has no per-class target codes (it compares the images of a batch with each other), so "
                "the lengths cannot disagree about targets: any conflicts above come from the data and the shared "
                "rows alone, and the target tables below have nothing to compare.")
    columns = [c for c in table.columns if c != "class"]
    bad = table[~table[columns].all(axis=1)]
    if bad.empty:
        return (f"**{method}**'s per-class targets agree across lengths: every shorter target is the prefix of the "
                "longest one (table below), so the conflicts above come from the data and the shared rows alone.")
    where = "; ".join(f"{row['class']} ({', '.join(c.split('-')[0] + ' bits' for c in columns if not row[c])})"
                      for _, row in bad.iterrows())
    return (f"**{method}** gives every class a target code per length, built independently for each length. For "
            f"{len(bad)} of {len(table)} classes the shorter target is **not** the prefix of the longest one: "
            f"{where}. On those bits the short loss and every longer loss ask for opposite signs, a built-in "
            "gradient conflict on the shared rows, which grows as the other classes are learned and their gradients "
            "fade; the conflict rule then damps the longer lengths (α < 1) and the short length's weight rises above "
            "1. The weighting treats the symptom; `targets=\"nested\"` removes the cause (below).")


def compare_targets(cfg: RunConfig, first: TourRun | None = None) -> tuple[list[TourRun], str]:
    """The same nested model trained with ``targets="independent"`` and with ``targets="nested"``.

    ``first`` is an already trained independent-targets run of ``cfg`` (reused, not retrained). When this
    version of nhllib builds identical targets in both modes (target-free losses, or a loss whose ``nest`` hook
    does not change them), the second run would repeat the first exactly, so it is not trained and the note
    says so. Returns the runs and a one-paragraph note on what differs.
    """
    first = first if first is not None else train_run(cfg, targets="independent",
                                                      label="nhl, independent targets")
    nested_losses = build_losses(cfg.hashing.method, cfg.model.code_lengths, first.built.data.num_classes,
                                 first.built.data.num_train, nested=True, targets="nested", seed=cfg.seed,
                                 **cfg.hashing.loss_hparams)
    if same_targets(first.built.losses, nested_losses):
        has_targets = not target_agreement(first.built.losses).empty
        return [first], (f"targets='nested' and targets='independent' give {cfg.hashing.method.upper()} the same "
                         f"{'per-class targets' if has_targets else 'losses (it has no per-class targets)'} in this "
                         f"version of nhllib, so a second run would repeat the first exactly and was not trained."
                         + (" The prefix table above shows which targets disagree." if has_targets else ""))
    second = train_run(cfg, targets="nested", label="nhl, nested targets")
    agree = target_agreement(second.built.losses)
    consistent = bool(agree.drop(columns="class").to_numpy().all()) if not agree.empty else True
    return [first, second], ("With targets='nested' every shorter target is the prefix of the longest one"
                             if consistent else "With targets='nested' some targets still differ from the "
                             "longest one's prefix") + "; the two runs start from the same network."


def plot_map_against_references(table: pd.DataFrame) -> Figure:
    """Query mAP per code length of each model (rows of :func:`map_table`), with the reference rows (names
    containing ``"reference"`` or ``"chance"``) drawn dashed and grey."""
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("table must be a non-empty DataFrame from map_table")
    lengths = [int(c) for c in table.columns]
    fig = Figure(figsize=(6.2, 3.8), layout="constrained")
    ax = fig.subplots()
    for name, row in table.iterrows():
        reference = "reference" in str(name) or "chance" in str(name)
        ax.plot(lengths, row.to_numpy(dtype=float), marker="" if reference else "o",
                linestyle="--" if reference else "-", color="0.55" if reference else None,
                linewidth=1.2 if reference else 2, label=str(name))
    length_axis(ax, lengths)
    ax.set_ylim(0, 1)
    ax.set_ylabel("query mAP (expected tie order)")
    ax.set_title("Trained models against the untrained network and chance", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return fig


# ----------------------------------------------------------------------------- diagrams


def pair_rule(g_short: Sequence[float], g_long: Sequence[float], num_lengths: int = 4,
              beta: float = 1.0) -> dict[str, float]:
    """The conflict rule for one pair (s, l) whose gradients on the shorter code's rows are ``g_short`` and
    ``g_long`` (vectors of one size), computed with :func:`nhllib.core.weighting.conflict_weights`.

    The other K − 2 lengths get zero gradients, so they neither conflict nor change the pair's factor; only
    their number enters, through the threshold τ = β‖g_s‖²/(K − 1). Returns ``dot`` (δ), ``cosine``, ``tau``
    (τ), ``alpha`` (α) and ``conflict`` (1.0 when δ < 0).
    """
    a = torch.as_tensor(g_short, dtype=torch.float64).flatten()
    b = torch.as_tensor(g_long, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"g_short and g_long must be non-empty vectors of one size, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if isinstance(num_lengths, bool) or not isinstance(num_lengths, int) or num_lengths < 2:
        raise ValueError(f"num_lengths must be an int >= 2, got {num_lengths!r}")
    lengths = tuple(range(1, num_lengths + 1))  # L_k = k: the pair (1, 2) shares exactly one row
    grads = torch.zeros(num_lengths, num_lengths, a.numel(), dtype=torch.float64)
    grads[0, 0] = a
    grads[1, 0] = b
    _, stats = conflict_weights(grads, lengths, beta=beta)
    return {"dot": float(stats.dot[0, 1]), "cosine": float(stats.cosine[0, 1]),
            "tau": beta * float(a.dot(a)) / (num_lengths - 1), "alpha": float(stats.alpha[0, 1]),
            "conflict": float(stats.conflict[0, 1])}


def plot_conflict_rule(examples: Sequence[tuple[Sequence[float], Sequence[float]]], num_lengths: int = 4,
                       beta: float = 1.0) -> Figure:
    """One panel per (g_s, g_l) pair of 2-D gradients: the two arrows, the tolerated band (a longer code may
    oppose the shorter one by up to τ = β‖g_s‖²/(K − 1), i.e. a projection of τ/‖g_s‖ onto −g_s), and, when
    the rule damps, the scaled gradient α·g_l, whose projection then sits exactly at the band's edge."""
    if not examples:
        raise ValueError("examples must hold at least one (g_short, g_long) pair")
    fig = Figure(figsize=(4.2 * len(examples), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(examples)))
    for ax, (g_s, g_l) in zip(axes, examples):
        gs = np.asarray(g_s, dtype=float)
        gl = np.asarray(g_l, dtype=float)
        if gs.shape != (2,) or gl.shape != (2,):
            raise ValueError("each example must be a pair of 2-D vectors")
        rule = pair_rule(gs, gl, num_lengths, beta)
        unit = gs / np.linalg.norm(gs)
        normal = np.array([-unit[1], unit[0]])
        reach = max(np.linalg.norm(gs), np.linalg.norm(gl)) * 1.25
        limit = rule["tau"] / np.linalg.norm(gs)  # tolerated opposing projection
        band = [(-limit * unit + t * normal) for t in (-reach, reach)] + \
               [(0 * unit + t * normal) for t in (reach, -reach)]
        ax.add_patch(Polygon(band, closed=True, color="#ffd6a5", alpha=0.6, label="tolerated opposition (≤ τ)"))
        ax.axline((0, 0), tuple(unit), color="0.7", linewidth=0.8)
        ax.annotate("", tuple(gs), (0, 0), arrowprops={"arrowstyle": "-|>", "color": "#1d3557", "linewidth": 2})
        ax.text(*(gs * 1.05), "g_s", color="#1d3557", fontsize=10)
        ax.annotate("", tuple(gl), (0, 0), arrowprops={"arrowstyle": "-|>", "color": "#e63946", "linewidth": 2})
        ax.text(*(gl * 1.05), "g_l", color="#e63946", fontsize=10)
        projection = gl.dot(unit) * unit
        ax.plot([gl[0], projection[0]], [gl[1], projection[1]], color="#e63946", linestyle=":", linewidth=1)
        if rule["alpha"] < 1:
            damped = rule["alpha"] * gl
            ax.annotate("", tuple(damped), (0, 0),
                        arrowprops={"arrowstyle": "-|>", "color": "#e63946", "linewidth": 1.5, "linestyle": "--"})
            ax.text(*(damped * 1.08 + 0.05 * normal * reach), "α·g_l", color="#e63946", fontsize=9)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.grid(alpha=0.25)
        verdict = "no conflict" if not rule["conflict"] else (
            "conflict within τ: α = 1" if rule["alpha"] == 1 else f"conflict beyond τ: α = {rule['alpha']:.2f}")
        ax.set_title(f"δ = {rule['dot']:.2f}, τ = {rule['tau']:.2f}\n{verdict}", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"The conflict rule for one pair (K = {num_lengths}, β = {beta:g})", fontsize=11)
    return fig


def resolve_data_dir(data_dir: str) -> str:
    """``data_dir`` as given, except that a relative path is taken from the repository root when the notebook
    runs inside ``notebooks/`` (JupyterLab starts a notebook's kernel in the notebook's folder; papermill and the
    study run from the root), so that every way of running the tour shares ``data/``."""
    path = Path(data_dir)
    cwd = Path.cwd()
    if not path.is_absolute() and cwd.name == "notebooks" and (cwd.parent / "nhllib").is_dir():
        return str(Path("..") / path)
    return data_dir
