"""Run folders on disk: atomic writes, a completion marker, never overwriting finished work; tidy loading.

Layout: ``<root>/<study>/<run_id>/`` with ``config.json``, ``history.csv``, ``metrics.csv``, ``conflicts.csv``,
``curves.csv``, ``timing.json``, optionally ``codes.npz`` and the executed notebook, and last of all the
marker ``COMPLETE``. A folder without the marker is incomplete (a crash or a kill) and is redone; a complete one
is kept unless ``overwrite=True``. ``results/README.md`` documents every column.

This module owns that schema: the column lists of every table, the ``codes.npz`` writer and reader, the public
column check :func:`require_columns`; :func:`nhllib.analysis.selection.load_study` joins the tables for the analysis.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nhllib.layout import LAYOUT, flat_config  # the config.json layouts, re-exported
from nhllib.retrieval.packing import as_packed

__all__ = [
    "RunStore", "RunExistsError", "load_results", "load_runs", "complete_runs",
    "COMPLETE_MARKER", "atomic_write_text", "require_columns", "write_codes", "read_codes", "RunCodes",
    "METRIC_COLUMNS", "METRIC_KEYS", "HISTORY_COLUMNS", "CONFLICT_COLUMNS", "RUN_KEYS", "RUN_COLUMNS",
    "CONTEXT_COLUMNS", "CONFLICT_PLOT_COLUMNS", "HISTORY_PLOT_COLUMNS", "CURVE_PLOT_COLUMNS", "TRADEOFF_PLOT_COLUMNS",
    "CODES_FILE", "LAYOUT", "flat_config", "process_umask",
]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
KEEP_ON_RESET = (".ipynb", ".log", ".yaml")  # papermill is writing these while the run resets


#: Columns of each run's ``metrics.csv``, ``history.csv`` and ``conflicts.csv`` (results/README.md explains them).
METRIC_COLUMNS = [
    "run_id", "study", "method", "variant", "dataset", "backbone", "code_length", "weighting", "distill_weight",
    "targets", "seed", "metric", "value",
]
HISTORY_COLUMNS = ["epoch", "code_length", "split", "metric", "value"]
CONFLICT_COLUMNS = [
    "epoch", "short_length", "long_length", "steps", "conflict_rate", "mean_cosine", "mean_dot", "mean_alpha",
]
#: The metric columns the analysis (nhllib.analysis.tables, nhllib.plots) relies on.
METRIC_KEYS = ("run_id", "study", "method", "variant", "code_length", "distill_weight", "seed", "metric", "value")
#: What identifies a run in the analysis; tables read from history / conflicts / curves get them by attach_runs.
RUN_KEYS = ("run_id", "method", "variant", "seed", "distill_weight")
#: One row per run in nhllib.analysis.tables.run_index.
RUN_COLUMNS = ("study", "run_id", "method", "variant", "dataset", "backbone", "weighting", "distill_weight", "targets",
               "seed")
#: Columns that describe a run's setting; those taking several values in a study become grouping keys.
CONTEXT_COLUMNS = ("dataset", "backbone", "targets")
#: What the figures read from conflicts.csv, history.csv and curves.csv once joined to their runs.
CONFLICT_PLOT_COLUMNS = (*RUN_KEYS, "epoch", "short_length", "long_length")
HISTORY_PLOT_COLUMNS = (*RUN_KEYS, "epoch", "split", "metric", "value", "code_length")
CURVE_PLOT_COLUMNS = (*RUN_KEYS, "code_length", "curve", "x", "precision", "recall")
#: What the retrieval trade-off figure reads from a compare_strategies table.
TRADEOFF_PLOT_COLUMNS = ("strategy", "ranking_bits", "ms_per_query", "bits_scanned", "map_ratio", "k", "db_size",
                         "n_queries")
CODES_FILE = "codes.npz"


class RunExistsError(FileExistsError):
    """A complete run folder exists and ``overwrite`` was not asked for."""


def process_umask() -> int:
    """The process umask, read without changing it where the system allows (``/proc``; else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    The file gets the mode any new file gets (0666 less the umask): ``mkstemp`` creates 0600, which would hide
    results from the other users of a shared machine.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """The folder of one run: ``<root>/<study>/<run_id>``."""

    def __init__(self, root: str | Path, study: str, run_id: str) -> None:
        self.path = Path(root) / study / run_id

    @property
    def state(self) -> str:
        """``"complete"``, ``"incomplete"`` (folder without marker) or ``"absent"``."""
        if (self.path / COMPLETE_MARKER).is_file():
            return "complete"
        return "incomplete" if self.path.exists() else "absent"

    def prepare(self, overwrite: bool = False) -> None:
        """Make the folder ready for a new run; refuses to touch a complete run unless ``overwrite``."""
        if self.state == "complete":
            if not overwrite:
                raise RunExistsError(
                    f"run folder {self.path} is complete; pass overwrite=True to redo it, or delete it"
                )
            logger.warning("overwriting complete run %s", self.path)
        if self.path.exists():
            for entry in self.path.iterdir():
                if entry.suffix in KEEP_ON_RESET:
                    continue
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def discard(self) -> None:
        """Remove the data files of a failed run (keeping the notebook and its log); drop the folder if empty."""
        if not self.path.exists() or self.state == "complete":
            return
        for entry in self.path.iterdir():
            if entry.suffix not in KEEP_ON_RESET:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if not any(self.path.iterdir()):
            self.path.rmdir()

    def write_json(self, name: str, payload: Mapping[str, Any]) -> Path:
        target = self.path / name
        atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        return target

    def write_rows(self, name: str, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> Path:
        """Write dict rows as CSV with a fixed column order (missing keys left empty)."""
        import pandas as pd

        frame = pd.DataFrame(list(rows), columns=columns)
        target = self.path / name
        atomic_write_text(target, frame.to_csv(index=False))
        return target

    def mark_complete(self) -> None:
        """Written last: from now on the run counts as complete. The marker records what the run wrote (files,
        sizes, rows, checksums; :mod:`nhllib.store.run_manifest`), so that a damaged run is found when it is read."""
        from nhllib.store.run_manifest import marker_record

        self.write_json(COMPLETE_MARKER, marker_record(self.path))

    def set_aside(self) -> Path:
        """Move this run's folder (a damaged run) to ``<study>/.damaged/<run_id>.<time>``, never deleting it, so
        that the run can be redone; returns where it went."""
        import time

        target = self.path.parent / ".damaged" / f"{self.path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        while target.exists():
            target = target.with_name(target.name + "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path, target)
        return target

    def check(self):
        """A complete run's files against its marker: a :class:`nhllib.store.run_manifest.RunCheck`."""
        from nhllib.store.run_manifest import check_run

        return check_run(self.path)


def require_columns(frame, columns: Iterable[str], name: str) -> None:
    """Check that ``frame`` is a DataFrame with ``columns``; the error names the frame, the missing columns and
    how such a frame is made (``TypeError`` for a non-frame, ``KeyError`` for missing columns)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(
            f"{name} lacks column(s) {missing}; it has {list(frame.columns)} (load tables with "
            f"nhllib.analysis.selection.load_study, or load_results and nhllib.analysis.selection.attach_runs)"
        )


def write_codes(run_dir: str | Path, query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                db_labels: np.ndarray, code_lengths) -> Path:
    """Write ``codes.npz`` atomically: the real-valued codes of the longest length, packed by sign.

    Labels are stored as uint8 rows; ``code_lengths`` lets a reader search the nested prefixes.
    """
    run_dir = Path(run_dir)
    target = run_dir / CODES_FILE
    tmp = run_dir / f".{CODES_FILE}.tmp.npz"
    np.savez_compressed(
        tmp, query_codes=np.packbits(query_codes > 0, axis=1), db_codes=np.packbits(db_codes > 0, axis=1),
        code_length=max(code_lengths), code_lengths=np.array(code_lengths),
        query_labels=query_labels.astype(np.uint8), db_labels=db_labels.astype(np.uint8),
    )
    tmp.replace(target)
    return target


RunCodes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]


def read_codes(run_dir: str | os.PathLike) -> RunCodes:
    """Codes and labels a run saved: ``(query_codes, db_codes, query_labels, db_labels, code_lengths)``.

    ``run_dir`` is a run folder holding ``codes.npz`` (or the ``.npz`` file itself). Codes come back
    packed (``uint8``, ``numpy.packbits`` layout) at the longest length; files holding real ±1 codes are
    packed on loading. Labels are returned as stored (multi-hot rows or class ids).
    """
    path = Path(run_dir)
    path = path if path.suffix == ".npz" else path / "codes.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"no codes file at {path}: the run folder must hold codes.npz (written by a complete training run "
            "with save_codes) or the path must name an .npz with query_codes, db_codes, query_labels, db_labels"
        )
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"query_codes", "db_codes", "query_labels", "db_labels"} - set(data.files)
            if missing:
                raise KeyError(f"{path} lacks the arrays {sorted(missing)}")
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupt codes file ({type(err).__name__}: {err}); "
                         "rerun the run to rewrite it") from None
    db = arrays["db_codes"]
    if db.ndim != 2:
        raise ValueError(f"{path}: db_codes must be 2-D, got shape {db.shape}")
    width = db.shape[1] * 8 if db.dtype == np.uint8 else db.shape[1]
    if "code_lengths" in arrays:
        lengths = tuple(int(v) for v in np.atleast_1d(arrays["code_lengths"]))
    elif "code_length" in arrays:
        lengths = (int(arrays["code_length"]),)
    else:
        logger.warning("%s has no code_lengths; treating the codes as one %d-bit code (no nested search)",
                       path, width)
        lengths = (width,)
    if max(lengths) != width:
        raise ValueError(f"{path}: the codes are {width} bits wide but code_lengths is {lengths}")
    query_codes = as_packed(arrays["query_codes"], width, "query_codes")
    db_codes = as_packed(db, width, "db_codes")
    for name, labels, codes in (("query", arrays["query_labels"], query_codes), ("db", arrays["db_labels"], db_codes)):
        if len(labels) != len(codes):
            raise ValueError(f"{path}: {name}_labels has {len(labels)} rows but {name}_codes has {len(codes)}")
    return query_codes, db_codes, arrays["query_labels"], arrays["db_labels"], lengths



def complete_runs(root: str | Path, study: str | None = None) -> list[Path]:
    """Folders of complete runs under ``root`` (one study, or all), each checked against its marker.

    Raises :class:`nhllib.store.run_manifest.DamagedRunError` naming every damaged run and its folder: a table read
    without it would silently lack a cell or a run. The study driver redoes such runs (``./run_all.sh``).
    """
    from nhllib.store.run_manifest import DamagedRunError, check_run

    root = Path(root)
    studies = [root / study] if study is not None else sorted(p for p in root.iterdir() if p.is_dir())
    runs = []
    for study_dir in studies:
        if study_dir.is_dir():
            runs.extend(sorted(p.parent for p in study_dir.glob(f"*/{COMPLETE_MARKER}")))
    damaged = [check.describe(run) for run in runs for check in [check_run(run)] if check.damaged]
    if damaged:
        raise DamagedRunError(f"{len(damaged)} complete run(s) are damaged (files missing, changed since "
                              f"the run wrote them, or unreadable): " + " | ".join(damaged)
                              + ". Rerun the study (./run_all.sh PROFILE) to redo them; their folders are kept aside")
    return runs


def load_results(root: str | Path = "results", study: str | None = None, table: str = "metrics.csv"):
    """Concatenate one table (``metrics.csv`` by default) of every complete run into a pandas DataFrame.

    Incomplete runs are skipped. Raises ``FileNotFoundError`` when ``root`` does not exist; returns an empty
    frame when no complete run is there.
    """
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results root {root} does not exist; run the study first (./run_all.sh)")
    frames = []
    for run_dir in complete_runs(root, study):
        path = run_dir / table
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if "run_id" not in frame.columns:
            frame.insert(0, "run_id", run_dir.name)
        if "study" not in frame.columns:
            frame.insert(1, "study", run_dir.parent.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def load_runs(root: str | Path = "results", study: str | None = None):
    """One row per complete run: ``run_id``, ``study``, ``device`` and every config field (from config.json)."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results root {root} does not exist; run the study first (./run_all.sh)")
    rows = []
    for run_dir in complete_runs(root, study):
        info = json.loads((run_dir / "config.json").read_text())
        config = flat_config(info["config"])
        config["code_lengths"] = "-".join(str(n) for n in config["code_lengths"])
        config.pop("loss_hparams", None)
        rows.append({"run_id": run_dir.name, **config, "study": run_dir.parent.name, "device": info.get("device")})
    return pd.DataFrame(rows)
