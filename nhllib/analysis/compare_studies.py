"""Compare the verdict tables of two runs of the same study grid, e.g. one study trained on two machines.

Floating-point results of a training run depend on the CPU's kernels (vector width, reduction order), so the same
seeded grid trained on another processor gives slightly different models. This module measures how much that moves
the study's conclusions: per method, variant and code length, the ``nhl`` and ``separate`` query mAPs of both runs,
their paired difference in each, and whether the verdict (gain / tie / lose) is the same.

    python -m nhllib.analysis.compare_studies BEFORE_TABLES AFTER_TABLES --out results/two_machines/BEFORE_vs_AFTER

reads ``verdict.csv`` from both folders and writes ``verdicts.csv`` / ``.md`` (one row per cell) and
``summary.csv`` / ``.md`` (counts of changed verdicts, the largest mAP moves). Torch-free.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from nhllib.analysis.tables import save_table

__all__ = ["compare_verdicts", "summarize", "main"]

logger = logging.getLogger(__name__)

_KEYS = ["method", "variant", "code_length"]
_VALUES = ["variant_mean", "reference_mean", "mean", "verdict"]


def compare_verdicts(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, variant, code_length) present in both tables, with ``*_before`` / ``*_after`` columns
    for the variant's mAP, the reference's mAP, their difference and the verdict; ``variant_move`` and
    ``reference_move`` (after − before), ``same_verdict`` and ``same_sign`` (of the difference)."""
    for name, table in (("before", before), ("after", after)):
        missing = [c for c in _KEYS + _VALUES if c not in table.columns]
        if missing:
            raise ValueError(f"the {name} verdict table lacks the columns {missing}; expected a verdict.csv "
                             f"written by nhllib.analysis.tables")
    cells = before[_KEYS + _VALUES].merge(after[_KEYS + _VALUES], on=_KEYS, suffixes=("_before", "_after"))
    if cells.empty:
        raise ValueError("the two verdict tables share no (method, variant, code_length) cell")
    dropped = len(before) + len(after) - 2 * len(cells)
    if dropped:
        logger.warning("%d cell(s) are in only one of the two tables and are left out", dropped)
    cells["variant_move"] = cells.variant_mean_after - cells.variant_mean_before
    cells["reference_move"] = cells.reference_mean_after - cells.reference_mean_before
    cells["same_verdict"] = cells.verdict_before == cells.verdict_after
    cells["same_sign"] = (cells.mean_before > 0) == (cells.mean_after > 0)
    return cells.sort_values(_KEYS).reset_index(drop=True)


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """Per variant: how many cells, how many keep their verdict and the sign of their difference, the verdict
    counts of both runs, and the largest absolute move of a variant's and of a reference's mAP."""
    rows = []
    for variant, group in cells.groupby("variant", sort=True):
        row = {"variant": variant, "cells": len(group), "same_verdict": int(group.same_verdict.sum()),
               "same_sign": int(group.same_sign.sum())}
        for side in ("before", "after"):
            counts = group[f"verdict_{side}"].value_counts()
            for verdict in ("gain", "tie", "lose"):
                row[f"{verdict}_{side}"] = int(counts.get(verdict, 0))
        row["max_abs_variant_move"] = float(group.variant_move.abs().max())
        row["max_abs_reference_move"] = float(group.reference_move.abs().max())
        row["mean_abs_variant_move"] = float(group.variant_move.abs().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.analysis.compare_studies", description=__doc__.splitlines()[0])
    parser.add_argument("before", help="tables folder of the first run (holds verdict.csv)")
    parser.add_argument("after", help="tables folder of the second run (holds verdict.csv)")
    parser.add_argument("--out", required=True, help="folder for verdicts.csv/.md and summary.csv/.md")
    args = parser.parse_args(argv)
    tables = []
    for name in ("before", "after"):
        path = Path(getattr(args, name)) / "verdict.csv"
        if not path.is_file():
            parser.error(f"{name}: no verdict.csv in {getattr(args, name)} (expected a study's results/tables)")
        tables.append(pd.read_csv(path))
    cells = compare_verdicts(*tables)
    summary = summarize(cells)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("verdicts", cells), ("summary", summary)):
        save_table(frame, out, name, digits=4)
    logger.info("wrote %s and %s", out / "verdicts.csv", out / "summary.csv")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
