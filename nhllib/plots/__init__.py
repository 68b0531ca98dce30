"""The study's figures: tidy DataFrame in, matplotlib ``Figure`` out.

One module per figure family (:mod:`~nhllib.plots.accuracy`, :mod:`~nhllib.plots.cost`,
:mod:`~nhllib.plots.training`, :mod:`~nhllib.plots.conflicts`, :mod:`~nhllib.plots.ranking`,
:mod:`~nhllib.plots.retrieval`, :mod:`~nhllib.plots.diagrams`, :mod:`~nhllib.plots.regimes`), the shared conventions in
:mod:`~nhllib.plots.common` and the file I/O in :mod:`~nhllib.plots.saving`; every public name is re-exported
here, so ``from nhllib import plots; plots.plot_map_vs_length(...)`` works.

Inputs are :func:`nhllib.store.results.load_results` tables (``metrics.csv``, or ``conflicts.csv`` / ``history.csv`` /
``curves.csv`` joined to their runs with :func:`nhllib.analysis.tables.attach_runs`). All numbers come from
:mod:`nhllib.analysis.tables`; this package only draws. Every figure has a title, axis labels with units, a legend (a
colour bar for the heat map) and a caption line naming the runs it comes from. A figure whose runs do not exist
returns ``None`` (logged at INFO), so a notebook renders those that can be rendered. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing is registered globally; :func:`save_figure` and
:func:`save_slide` are the only file I/O.

Conventions every figure keeps, so that it tells the truth about its runs (the caption says which apply):
a filled marker is a mean over seeds with ± one std; a hollow marker is a single run (n = 1) with no error bar,
and the caption never says "mean over seeds" for one seed; the untrained network (variant ``untrained``,
:func:`nhllib.analysis.tables.reference_table`) is a dashed grey line, the level a model must beat; a collapsed model
(:func:`nhllib.analysis.tables.collapse_table`) is drawn grey. The marker sets carry gids (``mean``, ``n=1``,
``collapsed``, ``collapsed,n=1``; the reference line ``reference``; the caption ``caption``) so that tests and
:func:`save_slide` find them. Per-method panels wrap (five or four to a row), and the conflict figures are heat
maps with methods on an axis, so ten methods stay readable at page width.
"""

from nhllib.plots.accuracy import plot_ablation, plot_distill_sensitivity, plot_map_vs_length, plot_verdict
from nhllib.plots.common import (
    CAPTION_FONTSIZE, COLLAPSED_COLOR, MAX_COLUMNS, METRIC_LABELS, MIN_FONT_PT, PANEL, README_WIDTH_IN, REFERENCE_COLOR,
    REFERENCE_LABEL, TIE_METRICS, font_sizes_at_readme_width, length_axis, readable_at_readme_width,
)
from nhllib.plots.conflicts import plot_conflict_heatmap, plot_conflict_rates, plot_cosine_distribution, plot_weights
from nhllib.plots.cost import plot_speedup_vs_gain, plot_training_time
from nhllib.plots.diagrams import plot_nested_layer, text_color_on
from nhllib.plots.ranking import plot_curves, plot_ties
from nhllib.plots.regimes import plot_regime_differences
from nhllib.plots.retrieval import RETRIEVAL_SCALING_CONFIGURATIONS, plot_retrieval_scaling, plot_retrieval_tradeoff
from nhllib.plots.saving import SLIDE_MIN_FONT, SLIDE_SIZE, default_output_dir, save_figure, save_slide
from nhllib.plots.training import plot_learning_curve, plot_training_curves

__all__ = [
    "plot_regime_differences",
    "CAPTION_FONTSIZE",
    "COLLAPSED_COLOR",
    "METRIC_LABELS",
    "PANEL",
    "REFERENCE_COLOR",
    "REFERENCE_LABEL",
    "TIE_METRICS",
    "MAX_COLUMNS",
    "MIN_FONT_PT",
    "README_WIDTH_IN",
    "font_sizes_at_readme_width",
    "MAX_COLUMNS",
    "MIN_FONT_PT",
    "README_WIDTH_IN",
    "font_sizes_at_readme_width",
    "length_axis",
    "readable_at_readme_width",
    "readable_at_readme_width",
    "plot_ablation",
    "plot_distill_sensitivity",
    "plot_map_vs_length",
    "plot_verdict",
    "plot_speedup_vs_gain",
    "plot_training_time",
    "plot_learning_curve",
    "plot_training_curves",
    "plot_conflict_heatmap",
    "plot_conflict_rates",
    "plot_cosine_distribution",
    "plot_weights",
    "plot_curves",
    "plot_ties",
    "RETRIEVAL_SCALING_CONFIGURATIONS",
    "plot_retrieval_scaling",
    "plot_retrieval_tradeoff",
    "SLIDE_MIN_FONT",
    "SLIDE_SIZE",
    "plot_nested_layer",
    "text_color_on",
    "default_output_dir",
    "save_figure",
    "save_slide",
]
