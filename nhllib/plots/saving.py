"""The only file I/O of the figures: where they go, figures as PNG + PDF, single-panel slides."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from nhllib.store.results import process_umask

__all__ = ["SLIDE_MIN_FONT", "SLIDE_SIZE", "default_output_dir", "save_figure", "save_slide"]

logger = logging.getLogger(__name__)



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
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp's 0600 would hide figures from a shared machine's users
        os.close(fd)
        try:
            # No creation date in a PDF: a redrawn figure with the same content is the same file (no git churn).
            metadata = {"Creator": "nhllib"} if fmt == "png" else {"Creator": "nhllib", "CreationDate": None}
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata if fmt in ("png", "pdf") else None)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


# ---------------------------------------------------------------- slides

SLIDE_SIZE = (12.8, 7.2)  # inches; at 100 dpi a 1280 × 720 image
SLIDE_MIN_FONT = 13.0  # points at 100 dpi: about 18 px, readable on a projected 720-line slide


def save_slide(fig: Figure | None, directory: str | Path, name: str) -> list[Path]:
    """Write a single-panel figure as a slide: ``<name>.png`` at 1280 × 720 px with every text at least
    :data:`SLIDE_MIN_FONT` points, the caption taken out of the image into ``<name>.txt`` (for the speaker notes
    or the slide's own text). Refuses figures with more than one panel (colour bars do not count): a slide shows
    one thing. ``fig=None`` (a skipped figure) writes nothing."""
    if fig is None:
        return []
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    if len(panels) != 1:
        raise ValueError(f"a slide has one panel; {name!r} has {len(panels)} (draw it for one method)")
    caption = ""
    for text in list(fig.texts):
        if text.get_gid() == "caption":
            caption = " ".join(text.get_text().split())
            text.remove()
    if not caption:  # a figure drawn without a caption (a diagram): its titles serve as the speaker note
        titles = [fig._suptitle.get_text() if fig._suptitle is not None else "", *(ax.get_title() for ax in panels)]
        caption = " ".join(" ".join(t.split()) for t in titles if t.strip()) or name.replace("_", " ")
    fig.get_layout_engine().set(rect=(0, 0, 1, 1))
    fig.set_size_inches(*SLIDE_SIZE)
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if text.get_text():
            text.set_fontsize(max(float(text.get_fontsize()) * 1.5, SLIDE_MIN_FONT))
    for ax in fig.axes:  # tick labels are made anew at draw time: set their size on the axis
        ax.tick_params(labelsize=SLIDE_MIN_FONT)
    directory = Path(directory)
    written = save_figure(fig, directory, name, dpi=100, formats=("png",))
    from nhllib.store.results import atomic_write_text

    atomic_write_text(directory / f"{name}.txt", caption + "\n")
    return [*written, directory / f"{name}.txt"]
