"""Diagrams of the method, drawn with the numbers of the study they illustrate (code lengths, feature width)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from nhllib.checks import check_positive_int

__all__ = ["plot_nested_layer", "text_color_on"]


def text_color_on(rgba: tuple) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def plot_nested_layer(code_lengths: Sequence[int], in_features: int) -> Figure:
    """Diagram of the nested hash layer: features f (d = ``in_features``, the backbone's width in the study
    drawn), the one weight W (L_K × d) with its rows banded by
    the shortest code that uses them, and the codes h_k = first L_k outputs, each a prefix of the next."""
    lengths = [int(v) for v in code_lengths]
    if not lengths or any(b <= a for a, b in zip(lengths, lengths[1:])) or lengths[0] < 1:
        raise ValueError(f"code_lengths must be strictly increasing positive ints, got {list(code_lengths)}")
    check_positive_int("in_features", in_features)
    colors = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8d99ae", "#6d597a"]
    longest = lengths[-1]
    height = 6.0  # drawing units for the longest code
    scale = height / longest
    fig = Figure(figsize=(8.8, 4.2), layout="constrained")  # about README width: its 8-pt text reads as 8 pt
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(-1.2, height + 0.9)
    ax.axis("off")
    # image -> backbone -> features
    ax.add_patch(_box(0.1, 2.3, 1.2, 1.4, "#adb5bd"))
    ax.text(0.7, 3.0, "image\nx", ha="center", va="center", fontsize=9)
    ax.add_patch(_box(1.7, 2.0, 1.5, 2.0, "#ced4da"))
    ax.text(2.45, 3.0, "backbone\n(shared)", ha="center", va="center", fontsize=9)
    ax.add_patch(_box(3.6, 1.0, 0.4, 4.0, "#dee2e6"))
    ax.text(3.8, 0.6, f"f(x)\nd = {in_features}", ha="center", va="top", fontsize=8)
    for x0, x1 in ((1.3, 1.7), (3.2, 3.6)):
        ax.annotate("", (x1, 3.0), (x0, 3.0), arrowprops={"arrowstyle": "->", "color": "0.3"})
    # the weight matrix, rows banded by the shortest code using them
    x_w, w_width = 4.6, 1.8
    previous = 0
    for k, length in enumerate(lengths):
        top = height - previous * scale
        bottom = height - length * scale
        ax.add_patch(_box(x_w, bottom, w_width, top - bottom, colors[k % len(colors)], alpha=0.85))
        label = f"rows {previous}–{length - 1}"
        ax.text(x_w + w_width / 2, (top + bottom) / 2, label, ha="center", va="center", fontsize=8,
                color=text_color_on(to_rgba(colors[k % len(colors)])))
        previous = length
    ax.text(x_w + w_width / 2, height + 0.35, f"W: one Linear({in_features}, {longest})", ha="center", fontsize=9)
    ax.annotate("", (x_w, 3.0), (4.0, 3.0), arrowprops={"arrowstyle": "->", "color": "0.3"})
    # codes as brackets: h_k = the first L_k outputs
    for k, length in enumerate(lengths):
        x = x_w + w_width + 0.35 + 0.55 * k
        bottom = height - length * scale
        ax.plot([x, x], [height, bottom], color=colors[k % len(colors)], linewidth=4, solid_capstyle="butt")
        ax.text(x, bottom - 0.15, f"h{k + 1}\n{length} bits", ha="center", va="top", fontsize=8)
    x_text = x_w + w_width + 0.35 + 0.55 * len(lengths) + 0.1
    ax.text(x_text, height - 0.1, "every code is a prefix of the\nlonger ones: h_k = h_K[:L_k]\n\n"
            f"rows 0–{lengths[0] - 1} are trained by all\n{len(lengths)} objectives, the last rows\n"
            "by the longest code only", ha="left", va="top", fontsize=8)
    fig.suptitle("The nested hash layer: one weight matrix, K codes as prefixes", fontsize=11)
    return fig


def _box(x: float, y: float, width: float, height: float, color: str, alpha: float = 1.0) -> FancyBboxPatch:
    return FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02", facecolor=color, edgecolor="0.25",
                          linewidth=0.8, alpha=alpha)
