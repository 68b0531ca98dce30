"""Every study-table function under one name, as the notebooks and the README use them (``tables.map_table``).

The functions live in modules with one job each; this module only gathers them:
:mod:`nhllib.analysis.selection` (which runs: run index, joins, filters, the main comparison, :func:`load_study`),
:mod:`nhllib.analysis.aggregates` (mean ± std over seeds: mAP, speed-ups, deltas, collapse, verdicts),
:mod:`nhllib.analysis.conflict_tables` (conflict statistics, applied weights), :mod:`nhllib.analysis.markdown` (formatting,
saving) and :mod:`nhllib.analysis.benchmark_tables` (the retrieval benchmark's results).
"""

from __future__ import annotations

from nhllib.analysis.aggregates import (COLLAPSE_MARGIN, REFERENCE_METHOD, SPEEDUP_SUMMARY_COLUMNS, best_epoch_table,
                                        collapse_table, delta_table, map_table, pivot_lengths, reference_table,
                                        speedup_per_seed, speedup_table, summarize, verdict_tables)
from nhllib.analysis.benchmark_tables import retrieval_benchmark, retrieval_scaling_text
from nhllib.analysis.conflict_tables import conflict_summary, weight_summary
from nhllib.analysis.markdown import format_mean_std, save_table, to_markdown
from nhllib.analysis.selection import (Study, attach_runs, find_run, load_study, main_comparison, main_targets,
                                       reference_distill_weight, reference_variant, run_index, select, single_length_variant,
                                       trained, variant_order)

__all__ = [
    "COLLAPSE_MARGIN", "REFERENCE_METHOD", "SPEEDUP_SUMMARY_COLUMNS", "Study", "attach_runs", "best_epoch_table",
    "collapse_table", "conflict_summary", "delta_table", "find_run", "format_mean_std", "load_study",
    "main_comparison", "main_targets", "map_table", "pivot_lengths", "reference_distill_weight", "reference_table",
    "reference_variant", "retrieval_benchmark", "retrieval_scaling_text", "run_index", "save_table", "select",
    "single_length_variant", "speedup_per_seed", "speedup_table", "summarize", "to_markdown", "trained",
    "variant_order", "verdict_tables", "weight_summary",
]
