"""What a complete run wrote, recorded in its ``COMPLETE`` marker and checked whenever the run is read.

The marker lists every data file of the run folder with its size, SHA-256 and, for a CSV table, its number of
rows. :func:`check_run` compares the folder with that record, so a table truncated, emptied or edited after the
run finished is reported by name instead of being read as a smaller result. The executed notebook, its log and
parameters (``.ipynb``, ``.log``, ``.yaml``) are not recorded: papermill is still writing them when the marker is.

A marker written before the record existed (``{"finished": ...}`` alone) is accepted as *unverified*: its run is
read, after a check of what can be checked without the record (``metrics.csv`` present, with its columns, at
least one row and numeric values; ``config.json`` readable).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RunCheck", "check_run", "manifest", "marker_record", "DamagedRunError", "UNRECORDED_SUFFIXES",
           "MANIFEST_VERSION"]

MANIFEST_VERSION = 1
#: Files of a run folder the marker does not record: papermill writes them after the run's own code has finished.
UNRECORDED_SUFFIXES = (".ipynb", ".log", ".yaml")
_MARKER = "COMPLETE"


class DamagedRunError(ValueError):
    """A complete run's files differ from what its marker records; the message names each run and folder."""


@dataclass(frozen=True)
class RunCheck:
    """``status``: ``"verified"`` (the files match the marker), ``"unverified"`` (an old marker without a record)
    or ``"damaged"`` (``problems`` says what differs)."""

    status: str
    problems: tuple[str, ...] = ()

    @property
    def damaged(self) -> bool:
        return self.status == "damaged"

    def describe(self, run_dir: Path) -> str:
        return f"{run_dir.name} ({run_dir}): {'; '.join(self.problems)}"


def _rows(path: Path) -> int | None:
    if path.suffix != ".csv":
        return None
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)  # data rows, the header left out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_files(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_file() and not p.is_symlink() and p.name != _MARKER
                  and not p.name.startswith(".") and p.suffix not in UNRECORDED_SUFFIXES)


def manifest(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{file name: {"bytes", "sha256", "rows"}}`` for every data file of ``run_dir`` (rows for CSV tables)."""
    run_dir = Path(run_dir)
    return {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p), "rows": _rows(p)}
            for p in _recorded_files(run_dir)}


def marker_record(run_dir: str | Path) -> dict[str, Any]:
    """The content of a new ``COMPLETE`` marker: when, and what the run wrote."""
    return {"finished": datetime.now(timezone.utc).isoformat(), "manifest_version": MANIFEST_VERSION,
            "files": manifest(run_dir)}


def check_run(run_dir: str | Path) -> RunCheck:
    """Compare a complete run folder with its marker's record (see the module docstring)."""
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / _MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return RunCheck("damaged", (f"its {_MARKER} marker cannot be read ({err})",))
    files = record.get("files") if isinstance(record, dict) else None
    if files is None:
        problems = _content_problems(run_dir)
        return RunCheck("damaged", problems) if problems else RunCheck("unverified")
    if not isinstance(files, dict):
        return RunCheck("damaged", (f"its {_MARKER} marker's file record is not a mapping",))
    problems = []
    for name, expected in sorted(files.items()):
        path = run_dir / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name} is missing")
            continue
        if path.stat().st_size == expected.get("bytes") and _sha256(path) == expected.get("sha256"):
            continue
        rows, want = _rows(path), expected.get("rows")
        if rows is not None and want is not None and rows != want:
            problems.append(f"{name} has {rows} rows, the marker records {want}")
        else:
            problems.append(f"{name} differs from what the run wrote ({path.stat().st_size} bytes, the marker "
                            f"records {expected.get('bytes')}; checksum differs)")
    return RunCheck("damaged", tuple(problems)) if problems else RunCheck("verified")


def _content_problems(run_dir: Path) -> tuple[str, ...]:
    """What can be checked in a run without a record: its config and its metrics table."""
    import pandas as pd

    from nhllib.store.results import METRIC_KEYS

    problems = []
    try:
        json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["config"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        problems.append(f"config.json cannot be read ({type(err).__name__}: {err})")
    path = run_dir / "metrics.csv"
    try:  # read as text: pandas would turn "n/a" into NaN, which looks like a legitimately empty value
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        return (*problems, "metrics.csv is missing")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        return (*problems, f"metrics.csv cannot be read ({type(err).__name__}: {err})")
    missing = [c for c in METRIC_KEYS if c not in frame.columns and c not in ("run_id", "study")]
    if missing:
        problems.append(f"metrics.csv lacks the column(s) {missing}")
    if frame.empty:
        problems.append("metrics.csv has no rows")
    elif "value" in frame.columns:
        bad = pd.to_numeric(frame["value"], errors="coerce").isna() & (frame["value"] != "")
        if bad.any():
            problems.append(f"metrics.csv holds {int(bad.sum())} non-numeric value(s), e.g. "
                            f"{frame.loc[bad, 'value'].iloc[0]!r} on data row {int(bad.idxmax()) + 1}")
    return tuple(problems)
