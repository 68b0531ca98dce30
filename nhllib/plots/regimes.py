"""The regimes study's figure: ``nhl`` − ``separate`` per regime, method and code length, with 95 % intervals.

Its numbers come from :func:`nhllib.analysis.regimes.regime_tables` (``regime_verdict``); this module only draws,
with the package's conventions: panels wrap at :data:`~nhllib.plots.common.MAX_COLUMNS` so the text reads at README
width, a hollow marker is one seed pair (no interval), and the caption says how many seed pairs each regime has.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nhllib.plots.common import _finish, _grid, _style, length_axis

__all__ = ["plot_regime_differences"]

logger = logging.getLogger(__name__)


def plot_regime_differences(verdict: pd.DataFrame, variant: str = "nhl") -> Figure | None:
    """One panel per regime: ``variant`` − ``separate`` (mAP points, paired by seed) per method and code length,
    with its 95 % t-interval; None when there is nothing to draw."""
    if verdict.empty:
        logger.info("figure regime_differences skipped: no regime has both %s and separate runs", variant)
        return None
    import matplotlib

    regimes = list(dict.fromkeys(verdict["regime"]))
    methods = sorted(verdict["method"].unique())
    lengths = sorted(int(v) for v in verdict["code_length"].unique())
    colors = dict(zip(methods, matplotlib.colormaps["tab10"].colors))
    pairs = verdict["n"].astype(int)
    caption = (f"Source: the regimes study's seed-paired differences ({variant} − separate, mAP points), "
               f"{pairs.min()}" + ("" if pairs.min() == pairs.max() else f"–{pairs.max()}") + " seed pair(s) per cell; "
               "bar: 95 % t-interval; a hollow marker is one seed pair (no interval). Above 0: the nested model wins.")
    with _style():
        fig, axes, caption = _grid(len(regimes), 3, caption)
        for ax, regime in zip(axes.flat, regimes):
            part = verdict[verdict["regime"] == regime]
            for j, method in enumerate(methods):
                rows = part[part["method"] == method].sort_values("code_length")
                if rows.empty:
                    continue
                # methods side by side around each length (a factor on the log-2 axis)
                x = rows["code_length"].to_numpy(float) * 2 ** ((j - (len(methods) - 1) / 2) * 0.6 / len(methods))
                y = 100 * rows["mean"].to_numpy(float)
                lo = np.nan_to_num(100 * (rows["mean"] - rows["ci_low"]).to_numpy(float))
                hi = np.nan_to_num(100 * (rows["ci_high"] - rows["mean"]).to_numpy(float))
                single = rows["n"].to_numpy(int) <= 1
                ax.errorbar(x[~single], y[~single], yerr=[lo[~single], hi[~single]], fmt="o", ms=4, lw=0.9,
                            capsize=1.5, color=colors[method], gid="mean")
                ax.plot(x[single], y[single], "o", ms=4, mfc="white", mec=colors[method], gid="n=1")
            ax.axhline(0, color="0.3", lw=0.8)
            length_axis(ax, lengths)
            ax.set_xlabel("code length (bits)")
            ax.set_ylabel(f"{variant} − separate (points)")
            ax.set_title(regime)
        # one scale for every regime, so that the panels compare at a glance
        used = list(axes.flat)[: len(regimes)]
        low = min(ax.get_ylim()[0] for ax in used)
        high = max(ax.get_ylim()[1] for ax in used)
        for ax in used:
            ax.set_ylim(low, high)
        handles = [(Line2D([], [], marker="o", ls="", color=colors[m]), m) for m in methods]
        return _finish(fig, axes, len(regimes), f"{variant} − separate per regime", caption, handles,
                       legend_title="method")
