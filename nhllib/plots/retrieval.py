"""Searching with nested codes: speed-up against database size, and the speed/quality trade-off."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nhllib.plots.common import _finish, _grid, _min_size, _skip, _style
from nhllib.store.results import TRADEOFF_PLOT_COLUMNS, require_columns

__all__ = ["RETRIEVAL_SCALING_CONFIGURATIONS", "plot_retrieval_scaling", "plot_retrieval_tradeoff"]


def plot_retrieval_scaling(bench: pd.DataFrame, configurations: Sequence[str] | None = None) -> Figure | None:
    """Retrieval speed-up over exhaustive longest-code search (faiss) against database size, from the retrieval
    benchmark (:func:`nhllib.analysis.tables.retrieval_benchmark`), one panel per code source; the speed-up at the largest
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
            ax.set_ylabel("speed-up over exhaustive (×)")
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
            # Cost of a spot: 2 per label it covers, 1.5 for leaving the panel sideways, 1 per marker it covers.
            hits = 2 * sum(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            frame = ax.bbox  # a label out at the side runs into the tick labels or is cut at the figure's edge
            if box[0] < frame.x0 or box[2] > frame.x1:  # above or below the frame still reads
                hits += 1.5
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
        # One panel above the other: side by side, the labelled points would need text too small at README width.
        fig, axes, caption = _grid(2, 1, caption, panel=(6.4, 3.9))
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
        fig = _finish(fig, axes, 2, f"Nested-code retrieval: mAP@{k} against cost ({n:,} database items)",
                      caption, handles, "strategy")
        # Labels last, at the readable size: the finished layout (legend, caption, text sizes) fixes the transforms
        # the placement reads; the labels stay out of the layout so that it does not move again.
        fig.draw_without_rendering()
        for ax in axes.flat:
            placed: list = []
            for axis, x, sub, color in pending:
                if axis is ax:
                    _place_labels(ax, sub[x], sub["map_ratio"], labels[sub.index], color, placed,
                                  [(a, xx, ss) for a, xx, ss, _c in pending if a is ax],
                                  fontsize=_min_size(fig.get_figwidth()))
        return fig
