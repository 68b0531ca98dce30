"""Compare two results folders run by run: every metrics row, history row, conflicts row and codes.npz array.

    python scripts/compare_runs.py BEFORE_STUDY_DIR AFTER_STUDY_DIR

Run folders are matched by name (the run id). Timing values (metrics and history rows whose metric name ends in
``_s`` or ``_per_s``, ``timing.json``) are left out: they differ between any two runs. Exit status 0 when every
compared value is identical (bit for bit for the arrays), 1 otherwise, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("metrics.csv", "history.csv", "conflicts.csv", "curves.csv")


def _is_timing(name: str) -> bool:
    return name.endswith("_s") or name.endswith("_per_s") or "time" in name


def _without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    if "metric" in frame.columns:
        frame = frame[~frame["metric"].astype(str).map(_is_timing)]
    return frame.reset_index(drop=True)


def compare_run(before: Path, after: Path) -> list[str]:
    """The differences between two folders of the same run, as readable lines (empty when identical)."""
    problems = []
    for name in TABLES:
        a, b = before / name, after / name
        if a.exists() != b.exists():
            problems.append(f"{name}: present in only one of the two")
            continue
        if not a.exists():
            continue
        fa, fb = _without_timing(pd.read_csv(a)), _without_timing(pd.read_csv(b))
        if list(fa.columns) != list(fb.columns) or len(fa) != len(fb):
            problems.append(f"{name}: shape {fa.shape} vs {fb.shape}")
        elif not fa.equals(fb):
            problems.append(f"{name}: {int((fa != fb).any(axis=1).sum())} of {len(fa)} rows differ")
    a, b = before / "codes.npz", after / "codes.npz"
    if a.exists() != b.exists():
        problems.append("codes.npz: present in only one of the two")
    elif a.exists():
        with np.load(a) as za, np.load(b) as zb:
            if sorted(za.files) != sorted(zb.files):
                problems.append(f"codes.npz: arrays {sorted(za.files)} vs {sorted(zb.files)}")
            for key in sorted(set(za.files) & set(zb.files)):
                if za[key].dtype != zb[key].dtype or not np.array_equal(za[key], zb[key]):
                    problems.append(f"codes.npz[{key}] differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a study folder (holding run folders), e.g. results/smoke")
    parser.add_argument("after", type=Path, help="the same study run again")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    runs_a = {p.name for p in args.before.iterdir() if (p / "COMPLETE").exists()}
    runs_b = {p.name for p in args.after.iterdir() if (p / "COMPLETE").exists()}
    if not runs_a:
        parser.error(f"{args.before} holds no complete run folder")
    failed = False
    for run in sorted(runs_a ^ runs_b):
        print(f"{run}: complete in only one of the two folders")
        failed = True
    for run in sorted(runs_a & runs_b):
        problems = compare_run(args.before / run, args.after / run)
        print(f"{run}: " + ("identical" if not problems else "; ".join(problems)))
        failed |= bool(problems)
    print(f"{len(runs_a & runs_b)} runs compared: " + ("DIFFERENCES FOUND" if failed else "all identical"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
