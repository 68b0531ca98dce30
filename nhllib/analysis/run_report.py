"""One run's results as a reader of ``01_train`` sees them: a table per code length with explained columns.

Reads the tidy ``metrics.csv`` rows of one run (:func:`nhllib.store.results.load_results` filtered to the run);
``results/README.md`` documents every metric.
"""

from __future__ import annotations

import pandas as pd

from nhllib.store.results import require_columns

__all__ = ["RUN_TABLE_COLUMNS", "run_table", "run_totals"]

#: metric -> (column heading, what it means); the order of the table's columns.
RUN_TABLE_COLUMNS = {
    "map": ("mAP", "query mAP of the best-validation checkpoint (the reported number; ties in expected order)"),
    "map_last": ("mAP last", "query mAP at the last evaluation"),
    "val_map": ("val mAP", "validation mAP of the selected checkpoint (what early stopping selects on)"),
    "p_at_100": ("P@100", "precision of the 100 nearest database items"),
    "precision_r2": ("P(r≤2)", "precision within Hamming radius 2 (a query retrieving nothing counts 0)"),
    "distinct_codes": ("distinct codes", "distinct query codes (fewer than the classes: collapsed)"),
    "constant_bits": ("constant bits", "bits equal for every query (they carry nothing)"),
}


def run_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per code length (an int index), the columns of :data:`RUN_TABLE_COLUMNS` that the run has."""
    require_columns(metrics, ("code_length", "metric", "value"), "metrics")
    per_length = metrics[metrics["code_length"].notna()]
    table = per_length.pivot_table(index="code_length", columns="metric", values="value", aggfunc="first")
    table.index = table.index.astype(int)
    table.index.name = "code length (bits)"
    present = [m for m in RUN_TABLE_COLUMNS if m in table.columns]
    table = table[present].rename(columns={m: RUN_TABLE_COLUMNS[m][0] for m in present})
    for column in ("distinct codes", "constant bits"):
        if column in table:
            table[column] = table[column].astype(int)
    return table


def run_totals(metrics: pd.DataFrame) -> pd.Series:
    """The run-level metrics (times in seconds, epochs, ``collapsed`` 0/1), by name."""
    require_columns(metrics, ("code_length", "metric", "value"), "metrics")
    return metrics[metrics["code_length"].isna()].set_index("metric")["value"].rename("value")
