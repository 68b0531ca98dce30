"""Formatting and saving of study tables: ``mean ± std`` cells, Markdown, and the CSV + Markdown pair on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nhllib.store.results import atomic_write_text

__all__ = ["format_mean_std", "to_markdown", "save_table"]


def format_mean_std(mean: float, std: float, digits: int = 3, suffix: str = "", sign: bool = False) -> str:
    """``"0.812 ± 0.004"``; the mean alone when ``std`` is NaN (one seed); ``""`` when the mean is NaN.

    ``sign=True`` writes the mean with its sign (``"+0.012 ± 0.004"``), for differences.
    """
    if mean is None or pd.isna(mean):
        return ""
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    if std is None or pd.isna(std):
        return f"{text}{suffix}"
    return f"{text} ± {std:.{digits}f}{suffix}"


def _cell(value, digits: int) -> str:
    if value is None or (not isinstance(value, (str, bytes)) and np.ndim(value) == 0 and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` needed); numbers right-aligned, NaN blank."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.empty:
        return "_(no rows)_\n"
    header = [str(c).replace("|", "\\|") for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for row in frame.itertuples(index=False):
        cells = [_cell(v, digits) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if frame.empty:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return "\n".join(lines) + "\n"


def save_table(frame: pd.DataFrame, directory: str | Path, name: str, markdown: pd.DataFrame | None = None,
               digits: int = 3) -> list[Path]:
    """Write ``<name>.csv`` (the full table) and ``<name>.md`` (``markdown`` or the same table) atomically."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    directory = Path(directory)
    csv_path, md_path = directory / f"{name}.csv", directory / f"{name}.md"
    atomic_write_text(csv_path, frame.to_csv(index=False))
    atomic_write_text(md_path, to_markdown(frame if markdown is None else markdown, digits))
    return [csv_path, md_path]
