"""Run folders on disk: atomic writes, a completion marker, never overwriting finished work; tidy loading.

Layout: ``<root>/<study>/<run_id>/`` with ``config.json``, ``history.csv``, ``metrics.csv``, ``conflicts.csv``,
``curves.csv``, ``timing.json``, optionally ``codes.npz`` and the executed notebook, and last of all the
marker ``COMPLETE``. A folder without the marker is incomplete (a crash or a kill) and is redone; a complete one
is kept unless ``overwrite=True``. ``results/README.md`` documents every column.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RunStore", "RunExistsError", "load_results", "load_runs", "complete_runs", "COMPLETE_MARKER", "atomic_write_text"]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
KEEP_ON_RESET = (".ipynb", ".log", ".yaml")  # papermill is writing these while the run resets


class RunExistsError(FileExistsError):
    """A complete run folder exists and ``overwrite`` was not asked for."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
        """Written last: from now on the run counts as complete."""
        self.write_json(COMPLETE_MARKER, {"finished": datetime.now(timezone.utc).isoformat()})


def complete_runs(root: str | Path, study: str | None = None) -> list[Path]:
    """Folders of complete runs under ``root`` (one study, or all)."""
    root = Path(root)
    studies = [root / study] if study is not None else sorted(p for p in root.iterdir() if p.is_dir())
    runs = []
    for study_dir in studies:
        if study_dir.is_dir():
            runs.extend(sorted(p.parent for p in study_dir.glob(f"*/{COMPLETE_MARKER}")))
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
        config = dict(info["config"])
        config["code_lengths"] = "-".join(str(n) for n in config["code_lengths"])
        config.pop("loss_hparams", None)
        rows.append({"run_id": run_dir.name, **config, "study": run_dir.parent.name, "device": info.get("device")})
    return pd.DataFrame(rows)
