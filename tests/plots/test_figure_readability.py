"""Every study figure reads at the README's width: each text, measured from the saved PNG's width and the text's
font size, is at least 8 pt when the image is shown README_WIDTH_IN wide. Drawn for ten methods (the default
study's count) from the synthetic study of test_plots_tables. Also: the flat weight panels are dropped and named,
the speed-up scatter draws the error bars its caption promises, the per-epoch conflict map keeps a readable scale."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from PIL import Image

from nhllib import plots
from tests.plots.test_plots_tables import full_conflicts_history_curves, full_metrics

METHODS = ("csq", "dbdh", "dch", "dhn", "dpn", "dsh", "dtsh", "lcdsh", "mdsh", "shcir")
DPI = 150


@pytest.fixture(scope="module")
def ten_methods():
    metrics = full_metrics(methods=METHODS, seeds=(0, 1, 2))
    return (metrics, *full_conflicts_history_curves(metrics))


def _figures(frames):
    metrics, conflicts, history, curves = frames
    return {
        "map_vs_length": plots.plot_map_vs_length(metrics),
        "training_time": plots.plot_training_time(metrics),
        "ablation": plots.plot_ablation(metrics),
        "verdict": plots.plot_verdict(metrics),
        "speedup_vs_gain": plots.plot_speedup_vs_gain(metrics),
        "training_curves": plots.plot_training_curves(history, metrics),
        "conflict_rates": plots.plot_conflict_rates(conflicts),
        "conflict_heatmap": plots.plot_conflict_heatmap(conflicts),
        "cosine_distribution": plots.plot_cosine_distribution(conflicts),
        "weights": plots.plot_weights(history),
        "distill_sensitivity": plots.plot_distill_sensitivity(metrics),
        "ties": plots.plot_ties(metrics),
        "pr_curves": plots.plot_curves(curves, "pr"),
        "nested_layer": plots.plot_nested_layer([8, 16, 32, 64, 128], 512),
        "learning_curve": plots.plot_learning_curve(history[history["run_id"] == history["run_id"].iloc[0]]),
    }


def _smallest_text(fig: Figure, tmp_path, name: str) -> tuple[float, str]:
    (png,) = plots.save_figure(fig, tmp_path, name, dpi=DPI, formats=("png",))
    with Image.open(png) as image:
        width_px = image.size[0]
    sizes = plots.font_sizes_at_readme_width(fig, width_px=width_px, dpi=DPI)
    text, size = min(sizes, key=lambda item: item[1])
    return size, text


@pytest.mark.slow  # draws every figure of a ten-method study (about 18 s)
def test_every_figure_reads_at_readme_width(ten_methods, tmp_path):
    too_small = {}
    for name, fig in _figures(ten_methods).items():
        assert fig is not None, f"{name} was not drawn"
        size, text = _smallest_text(fig, tmp_path, name)
        if size < plots.MIN_FONT_PT - 1e-6:
            too_small[name] = f"{size:.1f} pt ({text[:40]!r})"
    assert not too_small, f"text below {plots.MIN_FONT_PT} pt at README width: {too_small}"


def test_the_measure_catches_a_wide_figure_with_small_text(tmp_path):
    fig = Figure(figsize=(20, 4))  # 8-pt text on a 20-inch figure: 3.5 pt at README width
    ax = fig.subplots()
    ax.set_title("too small", fontsize=8)
    size, _ = _smallest_text(fig, tmp_path, "wide")
    assert size < plots.MIN_FONT_PT
    assert _smallest_text(plots.readable_at_readme_width(fig), tmp_path, "fixed")[0] >= plots.MIN_FONT_PT - 1e-6


def test_panels_wrap_at_three_columns(ten_methods):
    fig = plots.plot_map_vs_length(ten_methods[0])
    columns = {round(ax.get_position().x0, 3) for ax in fig.axes if ax.get_visible()}
    assert len(columns) == plots.MAX_COLUMNS


def test_flat_weight_panels_are_dropped_and_named(ten_methods):
    history = ten_methods[2].copy()
    flat = (history["metric"] == "weight") & (history["method"] == "csq")
    history.loc[flat, "value"] = 1.0 + 0.003 * np.sign(history.loc[flat, "code_length"] - 16)
    fig = plots.plot_weights(history)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert not any(t.startswith("csq ·") for t in titles) and any(t.startswith("dbdh ·") for t in titles)
    assert titles[-1] == "never damped: 2 panels (caption)"
    caption = next(t.get_text() for t in fig.texts if t.get_gid() == "caption")
    assert "never damped" in caption and "csq · nhl" in caption.replace("\n", " ")
    every = history.assign(value=np.where(history["metric"] == "weight", 1.0, history["value"]))
    titles = [ax.get_title() for ax in plots.plot_weights(every).axes if ax.get_visible()]
    assert titles == ["never damped: 20 panels (caption)"]  # one grouped panel, the figure still exists


def test_speedup_scatter_draws_its_error_bars(ten_methods):
    fig = plots.plot_speedup_vs_gain(ten_methods[0])
    caption = next(t.get_text() for t in fig.texts if t.get_gid() == "caption")
    assert "± one std" in caption
    bars = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert bars, "the caption promises error bars and none are drawn"


def test_conflict_map_scale_ends_at_the_largest_rate(ten_methods):
    conflicts = ten_methods[1].assign(conflict_rate=lambda f: f["conflict_rate"] * 0.05)  # rates of a few %
    fig = plots.plot_conflict_rates(conflicts)
    image = next(ax.images[0] for ax in fig.axes if ax.images)
    top = float(conflicts["conflict_rate"].max())
    assert top <= image.norm.vmax < top + 0.05 + 1e-9
