"""Tables and figures of the study: numbers checked against hand computation on small hand-made frames;
figures checked for title, labels, legend, caption and graceful skipping; the analysis notebooks run end to end
on a fake results tree (slow)."""

import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from nhllib import plots
from nhllib.analysis import tables

REPO = Path(__file__).resolve().parents[2]
LENGTHS = (8, 16, 32)
NESTED = ("nhl-plain", "nhl-weight", "nhl-distill", "nhl", "heads")
DISTILLS = {"nhl-distill", "nhl"}


def run_rows(run_id, method, variant, seed, maps, time_s, epochs, best, lam=0.0, study="unit", extra=None):
    """metrics.csv rows of one run: per-length ``map`` (+ ``extra`` metrics) and the run-level metrics."""
    base = {"run_id": run_id, "study": study, "method": method, "variant": variant, "dataset": "toy",
            "backbone": "mlp", "weighting": "uniform", "distill_weight": lam, "seed": seed}
    rows = [{**base, "code_length": length, "metric": "map", "value": value} for length, value in maps.items()]
    for metric, values in (extra or {}).items():
        rows += [{**base, "code_length": length, "metric": metric, "value": v} for length, v in values.items()]
    for metric, value in (("train_time_s", time_s), ("epochs_run", epochs), ("best_epoch", best),
                          ("eval_time_s", 1.0)):
        rows.append({**base, "code_length": float("nan"), "metric": metric, "value": value})
    return rows


@pytest.fixture
def small_metrics():
    """csq: separate 8/16 for seeds 0 and 1 (seed 2 lacks 16), nhl seeds 0, 1, 2; dsh: nhl only."""
    rows = []
    sep = {  # (seed, length): (map, time, epochs, best)
        (0, 8): (0.50, 10.0, 4, 3), (0, 16): (0.60, 12.0, 6, 5),
        (1, 8): (0.52, 11.0, 5, 4), (1, 16): (0.64, 13.0, 7, 2),
        (2, 8): (0.40, 99.0, 9, 9),
    }
    for (seed, length), (m, t, e, b) in sep.items():
        rows += run_rows(f"csq_sep_{length}_s{seed}", "csq", "separate", seed, {length: m}, t, e, b)
    nhl = {0: ({8: 0.55, 16: 0.61}, 5.0, 6, 4), 1: ({8: 0.58, 16: 0.62}, 4.0, 8, 8),
           2: ({8: 0.45, 16: 0.50}, 7.0, 3, 3)}
    for seed, (maps, t, e, b) in nhl.items():
        rows += run_rows(f"csq_nhl_s{seed}", "csq", "nhl", seed, maps, t, e, b, lam=1.0)
    rows += run_rows("dsh_nhl_s0", "dsh", "nhl", 0, {8: 0.3, 16: 0.4}, 3.0, 2, 1, lam=1.0)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables: numbers


def test_map_table_mean_std_n_over_seeds(small_metrics):
    table = tables.map_table(small_metrics)
    row = table[(table.method == "csq") & (table.variant == "nhl") & (table.code_length == 8)].iloc[0]
    values = [0.55, 0.58, 0.45]
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    assert row["mean"] == pytest.approx(sum(values) / 3)
    assert row["std"] == pytest.approx(statistics.stdev(values))
    assert row["formatted"] == f"{sum(values) / 3:.3f} ± {statistics.stdev(values):.3f}"
    single = table[(table.method == "dsh") & (table.code_length == 16)].iloc[0]
    assert single["n"] == 1 and math.isnan(single["std"]) and single["formatted"] == "0.400"
    # separate before nested variants (registry order), lengths ascending
    csq = table[table.method == "csq"]
    assert list(csq.variant) == ["separate", "separate", "nhl", "nhl"]
    assert list(csq.code_length) == [8, 16, 8, 16]


def test_map_table_other_metric_and_errors(small_metrics):
    with pytest.raises(KeyError, match="no metric 'map_optimistic'"):
        tables.map_table(small_metrics, metric="map_optimistic")
    with pytest.raises(KeyError, match="lacks column"):
        tables.map_table(small_metrics.drop(columns="seed"))
    assert tables.map_table(pd.DataFrame(columns=small_metrics.columns)).empty


def test_map_table_refuses_to_average_different_runs_with_one_seed(small_metrics):
    clash = pd.DataFrame(run_rows("csq_nhl_s0_other_lr", "csq", "nhl", 0, {8: 0.1, 16: 0.2}, 5.0, 6, 4, lam=1.0))
    with pytest.raises(ValueError, match="csq_nhl_s0_other_lr"):
        tables.map_table(pd.concat([small_metrics, clash]))


def test_pivot_lengths_is_wide(small_metrics):
    sweep = pd.DataFrame(run_rows("csq_nhl_lam01", "csq", "nhl", 0, {8: 0.2, 16: 0.3}, 5.0, 6, 4, lam=0.1))
    wide = tables.pivot_lengths(tables.map_table(pd.concat([small_metrics, sweep])))
    assert list(wide.columns) == ["method", "variant", "distill_weight", "8 bits", "16 bits"]
    assert wide.loc[(wide.method == "dsh"), "16 bits"].iloc[0] == "0.400"
    # rows keep the table's order: variant in registry order, then λ ascending
    assert list(zip(wide.method, wide.variant, wide.distill_weight)) == [
        ("csq", "separate", 0.0), ("csq", "nhl", 0.1), ("csq", "nhl", 1.0), ("dsh", "nhl", 1.0)]


def test_speedup_per_seed_sums_separate_runs(small_metrics):
    per_seed = tables.speedup_per_seed(small_metrics)
    # seed 2 lacks the 16-bit separate run; dsh has no separate runs at all
    assert sorted(zip(per_seed.method, per_seed.seed)) == [("csq", 0), ("csq", 1)]
    s0 = per_seed[per_seed.seed == 0].iloc[0]
    assert s0["separate_time_s"] == 10.0 + 12.0 and s0["variant_time_s"] == 5.0
    assert s0["speedup"] == pytest.approx(22.0 / 5.0)
    assert s0["separate_epochs"] == 4 + 6 and s0["separate_best_epochs"] == 3 + 5
    assert s0["variant_epochs"] == 6 and s0["variant_best_epoch"] == 4
    assert s0["code_lengths"] == "8-16"


def test_speedup_table_mean_of_per_seed_ratios(small_metrics):
    table = tables.speedup_table(small_metrics)
    assert len(table) == 1
    row = table.iloc[0]
    ratios = [(10.0 + 12.0) / 5.0, (11.0 + 13.0) / 4.0]
    assert row["n"] == 2 and row["seeds"] == "0,1"
    assert row["speedup_mean"] == pytest.approx(sum(ratios) / 2)
    assert row["speedup_std"] == pytest.approx(statistics.stdev(ratios))
    assert row["separate_time_s_mean"] == pytest.approx((22.0 + 24.0) / 2)
    assert row["separate_best_epochs_mean"] == pytest.approx(((3 + 5) + (4 + 2)) / 2)
    assert row["variant_best_epoch_mean"] == pytest.approx((4 + 8) / 2)
    assert row["speedup_formatted"] == f"{sum(ratios) / 2:.1f} ± {statistics.stdev(ratios):.1f}×"


def test_speedup_rejects_duplicate_separate_runs(small_metrics):
    twin = pd.DataFrame(run_rows("csq_sep_8_s0_twin", "csq", "separate", 0, {8: 0.5}, 1.0, 1, 1))
    with pytest.raises(ValueError, match="csq_sep_8_s0_twin"):
        tables.speedup_per_seed(pd.concat([small_metrics, twin]))


def test_speedup_missing_run_level_metric(small_metrics):
    broken = small_metrics[~((small_metrics.run_id == "csq_nhl_s0") & (small_metrics.metric == "best_epoch"))]
    with pytest.raises(KeyError, match="csq_nhl_s0.*best_epoch"):
        tables.speedup_per_seed(broken)


def test_delta_table_pairs_by_seed(small_metrics):
    delta = tables.delta_table(small_metrics)
    row = delta[(delta.method == "csq") & (delta.code_length == 16)].iloc[0]
    # 16 bits: separate has seeds 0, 1; nhl has 0, 1, 2 -> pairs 0 and 1 only
    diffs = [0.61 - 0.60, 0.62 - 0.64]
    assert row["paired"] and row["n"] == 2
    assert row["mean"] == pytest.approx(sum(diffs) / 2)
    assert row["std"] == pytest.approx(statistics.stdev(diffs))
    assert row["formatted"].startswith(f"{sum(diffs) / 2:+.3f} ± ")
    row8 = delta[(delta.method == "csq") & (delta.code_length == 8)].iloc[0]
    diffs8 = [0.55 - 0.50, 0.58 - 0.52, 0.45 - 0.40]
    assert row8["n"] == 3 and row8["mean"] == pytest.approx(sum(diffs8) / 3)
    assert not (delta.method == "dsh").any()  # no reference runs for dsh


def test_delta_table_unpaired_fallback():
    rows = run_rows("a", "csq", "separate", 0, {8: 0.5}, 1, 1, 1) + run_rows("b", "csq", "separate", 1, {8: 0.7}, 1, 1, 1)
    rows += run_rows("c", "csq", "nhl", 5, {8: 0.9, 16: 0.9}, 1, 1, 1, lam=1.0)
    row = tables.delta_table(pd.DataFrame(rows)).iloc[0]
    assert not row["paired"] and row["n"] == 0 and math.isnan(row["std"])
    assert row["mean"] == pytest.approx(0.9 - (0.5 + 0.7) / 2)


def test_reference_lambda_and_main_comparison(small_metrics):
    sweep = pd.DataFrame(run_rows("csq_nhl_s0_lam01", "csq", "nhl", 0, {8: 0.2, 16: 0.3}, 5.0, 6, 4, lam=0.1))
    frame = pd.concat([small_metrics, sweep])
    assert tables.reference_distill_weight(frame) == 1.0  # 4 runs at λ=1, 1 at λ=0.1
    main = tables.main_comparison(frame)
    assert "csq_nhl_s0_lam01" not in set(main.run_id)
    assert set(main.run_id) == set(small_metrics.run_id)  # separate (λ=0) kept
    only = tables.main_comparison(frame, distill_weight=0.1)
    assert set(only[only.variant == "nhl"].run_id) == {"csq_nhl_s0_lam01"}
    # a tie between λ values goes to the one closest to 1
    tie = pd.DataFrame(run_rows("x", "csq", "nhl", 0, {8: 0.1}, 1, 1, 1, lam=3.0)
                       + run_rows("y", "csq", "nhl", 0, {8: 0.1}, 1, 1, 1, lam=0.5))
    assert tables.reference_distill_weight(tie) == 0.5
    assert tables.reference_distill_weight(small_metrics[small_metrics.variant == "separate"]) is None


def conflict_frame():
    """Two runs (seeds) of csq/nhl, pairs (8,16), (8,32), (16,32), 3 epochs with unequal step counts."""
    rows = []
    for seed in (0, 1):
        for epoch, steps in ((1, 10), (2, 30), (3, 20)):
            for short, long in ((8, 16), (8, 32), (16, 32)):
                rate = (epoch * 0.1 + seed * 0.05) * (2 if long == 32 else 1)
                rows.append({"run_id": f"r{seed}", "study": "unit", "epoch": epoch, "short_length": short,
                             "long_length": long, "steps": steps, "conflict_rate": rate,
                             "mean_cosine": 0.5 - rate, "mean_dot": -rate, "mean_alpha": 1 - rate / 2})
    runs = pd.DataFrame([{"run_id": f"r{s}", "study": "unit", "method": "csq", "variant": "nhl",
                          "distill_weight": 1.0, "seed": s, "dataset": "toy", "backbone": "mlp"} for s in (0, 1)])
    return tables.attach_runs(pd.DataFrame(rows), runs)


def test_conflict_summary_step_weighted():
    summary = tables.conflict_summary(conflict_frame())
    row = summary[(summary.short_length == 8) & (summary.long_length == 32)].iloc[0]
    per_run = []
    for seed in (0, 1):
        num = sum(steps * (epoch * 0.1 + seed * 0.05) * 2 for epoch, steps in ((1, 10), (2, 30), (3, 20)))
        per_run.append(num / 60)
    assert row["rate_mean"] == pytest.approx(sum(per_run) / 2)
    assert row["rate_first"] == pytest.approx(((0.1 + 0.0) * 2 + (0.1 + 0.05) * 2) / 2)
    assert row["rate_last"] == pytest.approx(((0.3 + 0.0) * 2 + (0.3 + 0.05) * 2) / 2)
    assert row["peak_epoch"] == 3 and row["n_runs"] == 2 and row["epochs"] == 3
    assert row["alpha_mean"] == pytest.approx(1 - row["rate_mean"] / 2)
    assert len(summary) == 3
    assert tables.conflict_summary(pd.DataFrame()).empty


def test_attach_runs_unknown_run_is_an_error():
    runs = pd.DataFrame([{"run_id": "a", "method": "csq"}])
    with pytest.raises(KeyError, match="no row for run_id"):
        tables.attach_runs(pd.DataFrame([{"run_id": "b", "epoch": 1}]), runs)


def test_weight_summary():
    rows = []
    for seed in (0, 1):
        for epoch in (1, 2):
            for length, w in ((8, 1.2 - 0.1 * epoch - 0.1 * seed), (16, 0.8 + 0.1 * epoch + 0.1 * seed)):
                rows.append({"run_id": f"r{seed}", "epoch": epoch, "code_length": length, "split": "train",
                             "metric": "weight", "value": w})
        rows.append({"run_id": f"r{seed}", "epoch": 1, "code_length": float("nan"), "split": "train",
                     "metric": "train_time_s", "value": 3.0})
    runs = pd.DataFrame([{"run_id": f"r{s}", "method": "csq", "variant": "nhl", "distill_weight": 1.0, "seed": s}
                         for s in (0, 1)])
    summary = tables.weight_summary(tables.attach_runs(pd.DataFrame(rows), runs))
    w8 = summary[summary.code_length == 8].iloc[0]
    assert w8["first"] == pytest.approx(((1.1) + (1.0)) / 2)
    assert w8["last"] == pytest.approx((1.0 + 0.9) / 2)
    assert w8["min"] == pytest.approx(0.9)
    assert w8["mean"] == pytest.approx((1.1 + 1.0 + 1.0 + 0.9) / 4)


def test_select_ignores_empty_filters(small_metrics):
    assert len(tables.select(small_metrics, method="", variant=None)) == len(small_metrics)
    assert set(tables.select(small_metrics, method="dsh").run_id) == {"dsh_nhl_s0"}
    assert set(tables.select(small_metrics, variant=["nhl"], seed=2).run_id) == {"csq_nhl_s2"}


def test_to_markdown_and_save_table(tmp_path):
    frame = pd.DataFrame({"method": ["csq", "a|b"], "mean": [0.81234, float("nan")], "n": [3, 1]})
    text = tables.to_markdown(frame)
    lines = text.strip().splitlines()
    assert lines[0] == "| method | mean | n |"
    assert lines[1] == "|:---|---:|---:|"
    assert lines[2] == "| csq | 0.812 | 3 |"
    assert lines[3] == "| a\\|b |  | 1 |"
    paths = tables.save_table(frame, tmp_path / "t", "demo")
    assert [p.name for p in paths] == ["demo.csv", "demo.md"]
    assert pd.read_csv(paths[0]).shape == (2, 3)
    assert paths[1].read_text() == text
    with pytest.raises(ValueError, match="name"):
        tables.save_table(frame, tmp_path, "../x")


def test_format_mean_std():
    assert tables.format_mean_std(0.8123, 0.0041) == "0.812 ± 0.004"
    assert tables.format_mean_std(0.0123, 0.004, sign=True) == "+0.012 ± 0.004"
    assert tables.format_mean_std(float("nan"), 0.1) == ""


# ---------------------------------------------------------------- figures


def full_metrics(study="unit", methods=("csq", "dsh"), seeds=(0, 1)):
    """Every variant with per-length map and the four tie metrics; nhl also at λ = 0.1 and 3 (seed 0)."""
    rng = np.random.default_rng(0)
    rows = []

    def ties(maps):
        return {"map_expected": maps, "map_optimistic": {k: v + 0.3 / k ** 0.5 for k, v in maps.items()},
                "map_pessimistic": {k: v - 0.3 / k ** 0.5 for k, v in maps.items()},
                "map_index": {k: v - 0.1 / k ** 0.5 for k, v in maps.items()}}

    for method in methods:
        for seed in seeds:
            for length in LENGTHS:
                maps = {length: 0.5 + 0.05 * np.log2(length) + rng.normal(0, 0.01)}
                rows += run_rows(f"{method}_separate_{length}_s{seed}", method, "separate", seed, maps,
                                 10.0 + rng.random(), 8, 6, study=study, extra=ties(maps))
            for variant in NESTED:
                maps = {length: 0.52 + 0.05 * np.log2(length) + rng.normal(0, 0.01) for length in LENGTHS}
                rows += run_rows(f"{method}_{variant}_s{seed}", method, variant, seed, maps, 11.0 + rng.random(), 8,
                                 5, lam=1.0 if variant in DISTILLS else 0.0, study=study, extra=ties(maps))
        for lam in (0.1, 3.0):
            maps = {length: 0.5 + 0.04 * np.log2(length) for length in LENGTHS}
            rows += run_rows(f"{method}_nhl_lam{lam}_s0", method, "nhl", 0, maps, 11.0, 8, 5, lam=lam, study=study)
    for seed in seeds:  # the untrained reference: one run per seed, evaluated at epoch 0
        maps = {length: 0.15 + 0.01 * np.log2(length) + 0.005 * seed for length in LENGTHS}
        rows += run_rows(f"ref_untrained_s{seed}", methods[0], "untrained", seed, maps, 0.0, 0, 0, study=study,
                         extra=ties(maps))
    return pd.DataFrame(rows)


def full_conflicts_history_curves(metrics):
    runs = tables.run_index(metrics)
    conflicts, history, curves = [], [], []
    for run in runs.itertuples(index=False):
        lengths = [int(v) for v in run.code_lengths.split("-")]
        for epoch in (0,) if run.variant == "untrained" else (1, 2, 3, 4):
            history.append({"run_id": run.run_id, "epoch": epoch, "code_length": float("nan"), "split": "train",
                            "metric": "train_time_s", "value": 2.5})
            history += [{"run_id": run.run_id, "epoch": epoch, "code_length": length, "split": "validation",
                         "metric": "map", "value": 0.2 + 0.1 * epoch + 0.01 * length ** 0.5} for length in lengths]
            if run.variant not in ("separate", "heads", "untrained"):
                for s in range(len(lengths)):
                    for l in range(s + 1, len(lengths)):
                        rate = 0.1 * (l - s) + 0.05 * epoch
                        conflicts.append({"run_id": run.run_id, "epoch": epoch, "short_length": lengths[s],
                                          "long_length": lengths[l], "steps": 50, "conflict_rate": rate,
                                          "mean_cosine": 0.4 - rate, "mean_dot": -rate, "mean_alpha": 1 - rate})
                weights = [1.0 + 0.05 * epoch * (1 - k) for k in range(len(lengths))]
                weights = [w * len(weights) / sum(weights) for w in weights]
                history += [{"run_id": run.run_id, "epoch": epoch, "code_length": length, "split": "train",
                             "metric": "weight", "value": w} for length, w in zip(lengths, weights)]
        for length in lengths:
            for radius in range(length + 1):
                curves.append({"run_id": run.run_id, "code_length": length, "curve": "pr", "x": radius,
                               "precision": 1 - 0.5 * radius / length, "recall": (radius / length) ** 0.5})
            for k in (1, 10, 100):
                curves.append({"run_id": run.run_id, "code_length": length, "curve": "p_at_k", "x": k,
                               "precision": 0.9 - 0.1 * np.log10(k), "recall": float("nan")})
    attach = lambda rows: tables.attach_runs(pd.DataFrame(rows), runs)
    return attach(conflicts), attach(history), attach(curves)


def assert_complete_figure(fig):
    assert isinstance(fig, Figure)
    assert fig.get_suptitle()
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert visible
    for ax in visible:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    has_colorbar = any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert fig.legends or has_colorbar or any(ax.get_legend() for ax in visible)
    captions = [t.get_text() for t in fig.texts if t.get_text().startswith("Source: study")]
    assert len(captions) == 1


@pytest.fixture(scope="module")
def study_frames():
    metrics = full_metrics()
    return (metrics, *full_conflicts_history_curves(metrics))


def test_every_figure_is_complete(study_frames):
    metrics, conflicts, history, curves = study_frames
    figures = {
        "map": plots.plot_map_vs_length(metrics),
        "time": plots.plot_training_time(metrics),
        "ablation": plots.plot_ablation(metrics),
        "rates": plots.plot_conflict_rates(conflicts),
        "heatmap": plots.plot_conflict_heatmap(conflicts),
        "cosine": plots.plot_cosine_distribution(conflicts),
        "weights": plots.plot_weights(history),
        "lambda": plots.plot_distill_sensitivity(metrics),
        "ties": plots.plot_ties(metrics),
        "pr": plots.plot_curves(curves, "pr"),
        "pk": plots.plot_curves(curves, "p_at_k"),
    }
    for fig in figures.values():
        assert_complete_figure(fig)
    caption = next(t.get_text() for t in figures["map"].texts if t.get_text().startswith("Source"))
    # main comparison: every run except the two λ-sweep runs per method (2 methods × 2 seeds × (3 + 5) + 0)
    assert "study 'unit', 32 runs, seeds 0, 1." in caption and "λ = 1." in caption
    # the λ-sweep runs are left out of the conflict figures too; they show the full method: 2 methods × 2 seeds
    caption = next(t.get_text() for t in figures["rates"].texts if t.get_text().startswith("Source"))
    assert "4 runs" in caption
    caption = next(t.get_text() for t in figures["lambda"].texts if t.get_text().startswith("Source"))
    assert "λ ∈ {0.1, 1, 3}" in caption


def test_figures_use_the_table_numbers(study_frames):
    metrics = study_frames[0]
    fig = plots.plot_map_vs_length(metrics)
    ax = fig.axes[0]  # csq
    table = tables.map_table(tables.main_comparison(metrics))
    expected = table[(table.method == "csq") & (table.variant == "nhl")].sort_values("code_length")["mean"]
    plotted = [line.get_ydata() for line in ax.lines if len(line.get_ydata()) == len(LENGTHS)]
    assert any(np.allclose(y, expected) for y in plotted)
    fig = plots.plot_training_time(metrics)
    speedups = tables.speedup_table(tables.main_comparison(metrics))
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {f"{v:.1f}×" for v in speedups["speedup_mean"]} <= texts


def test_figures_skip_missing_runs(study_frames, caplog):
    metrics, _conflicts, history, _curves = study_frames
    only_separate = metrics[metrics.variant == "separate"]
    no_sweep = tables.main_comparison(metrics)
    empty = pd.DataFrame()
    caplog.set_level("INFO", logger="nhllib.plots")
    assert plots.plot_training_time(only_separate) is None
    assert plots.plot_training_time(metrics[metrics.variant != "separate"]) is None
    assert plots.plot_ablation(only_separate) is None
    assert plots.plot_distill_sensitivity(no_sweep) is None
    assert plots.plot_ties(metrics[~metrics.metric.str.startswith("map_")]) is None
    assert plots.plot_weights(history[history.variant == "nhl-plain"]) is None
    for fn in (plots.plot_map_vs_length, plots.plot_training_time, plots.plot_ablation, plots.plot_ties,
               plots.plot_distill_sensitivity, plots.plot_conflict_rates, plots.plot_conflict_heatmap,
               plots.plot_cosine_distribution, plots.plot_weights, plots.plot_curves):
        assert fn(empty) is None
    assert "skipped" in caplog.text
    # a figure still renders with one variant and one seed
    assert_complete_figure(plots.plot_map_vs_length(only_separate[only_separate.seed == 0]))


def test_figures_refuse_mixed_datasets(study_frames):
    metrics = study_frames[0]
    other = metrics.assign(dataset="other", run_id=metrics.run_id + "_b")
    with pytest.raises(ValueError, match="several dataset"):
        plots.plot_map_vs_length(pd.concat([metrics, other]))


def test_save_figure_writes_png_and_pdf(tmp_path, study_frames):
    fig = plots.plot_ablation(study_frames[0])
    paths = plots.save_figure(fig, tmp_path / "figs", "ablation")
    assert [p.name for p in paths] == ["ablation.png", "ablation.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["ablation.pdf", "ablation.png"]  # no temp left
    old = os.umask(0o022)
    try:
        modes = {p.stat().st_mode & 0o777 for p in plots.save_figure(fig, tmp_path / "shared", "ablation")}
    finally:
        os.umask(old)
    assert modes == {0o644}  # what any new file gets, not mkstemp's 0600
    assert plots.save_figure(None, tmp_path / "none", "x") == [] and not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="plain file stem"):
        plots.save_figure(fig, tmp_path, "a/b")
    with pytest.raises(TypeError, match="Figure"):
        plots.save_figure("not a figure", tmp_path, "x")


def test_default_output_dir():
    assert plots.default_output_dir("results", "default") == Path("results/figures")
    assert plots.default_output_dir("results", "smoke", "tables") == Path("results/smoke/tables")
    with pytest.raises(ValueError, match="kind"):
        plots.default_output_dir("results", "smoke", "plots")


def test_curves_rejects_unknown_kind(study_frames):
    with pytest.raises(ValueError, match="kind must be"):
        plots.plot_curves(study_frames[3], kind="roc")


# ---------------------------------------------------------------- notebooks end to end


def write_fake_study(root: Path, study: str) -> None:
    """A results tree with complete run folders in the format run_experiment writes."""
    from nhllib.training.config import RunConfig
    from nhllib.store.results import COMPLETE_MARKER

    metrics = full_metrics(study=study, methods=("csq",))
    conflicts, history, curves = full_conflicts_history_curves(metrics)
    for run in tables.run_index(metrics).itertuples(index=False):
        folder = root / study / run.run_id
        folder.mkdir(parents=True)
        lengths = tuple(int(v) for v in run.code_lengths.split("-"))
        cfg = RunConfig.from_dict(dict(study=study, method=run.method, variant=run.variant, code_lengths=lengths,
                        seed=int(run.seed), distill_weight=float(run.distill_weight) or 1.0, device="cpu"))
        (folder / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "device": "cpu"}))
        metrics[metrics.run_id == run.run_id].to_csv(folder / "metrics.csv", index=False)
        for name, frame, columns in (
            ("history.csv", history, ["epoch", "code_length", "split", "metric", "value"]),
            ("conflicts.csv", conflicts, ["epoch", "short_length", "long_length", "steps", "conflict_rate",
                                          "mean_cosine", "mean_dot", "mean_alpha"]),
            ("curves.csv", curves, ["code_length", "curve", "x", "precision", "recall"]),
        ):
            part = frame[frame.run_id == run.run_id]
            if name != "conflicts.csv" or not part.empty:
                part[columns].to_csv(folder / name, index=False)
        (folder / COMPLETE_MARKER).write_text("{}")


@pytest.mark.slow
def test_analysis_notebooks_run_end_to_end(tmp_path):
    papermill = pytest.importorskip("papermill")
    root = tmp_path / "results"
    write_fake_study(root, "fake")
    out = tmp_path / "executed"
    out.mkdir()
    for notebook, params in (("03_figures.ipynb", {}), ("02_gradient_conflicts.ipynb", {"method": "csq"})):
        papermill.execute_notebook(
            str(REPO / "notebooks" / notebook), str(out / notebook),
            parameters={"study": "fake", "results_root": str(root), **params},
            cwd=str(REPO), kernel_name="python3", progress_bar=False,
        )
    figures = root / "fake" / "figures"
    names = {p.name for p in figures.iterdir()}
    for stem in ("map_vs_length", "verdict", "training_time", "speedup_vs_gain", "training_curves", "ablation",
                 "conflict_rates", "conflict_heatmap", "cosine_distribution", "weights", "distill_sensitivity", "ties",
                 "pr_curves", "retrieval_scaling", "nested_layer"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    assert "precision_at_k.png" not in names
    slides = {p.name for p in (figures / "slides").iterdir()}
    assert {"verdict.png", "verdict.txt", "nested_layer.png", "map_csq.png", "retrieval_scaling.png"} <= slides
    tables_dir = root / "fake" / "tables"
    verdict = pd.read_csv(tables_dir / "verdict.csv")
    assert set(verdict.method) == {"csq"} and set(verdict.variant) == {"nhl"} and len(verdict) == len(LENGTHS)
    for stem in ("map", "speedup", "delta", "conflicts", "weights", "verdict", "verdict_counts", "average_gain",
                 "best_epochs", "collapsed"):
        assert (tables_dir / f"{stem}.csv").is_file() and (tables_dir / f"{stem}.md").is_file(), stem
    speedup = pd.read_csv(tables_dir / "speedup.csv")
    assert set(speedup.variant) == {"nhl-plain", "nhl-weight", "nhl-distill", "nhl", "heads"}


# ---------------------------------------------------------------- the reference level, collapse, the verdict


def collapse_metrics():
    """csq trains (0.6); dsh sits at the untrained level (collapsed); dtsh's nhl run flags itself collapsed at 32
    bits through a per-length metric although its mAP is high; one seed of separate and nhl each, two untrained."""
    rows = []
    for seed in (0, 1):
        rows += run_rows(f"ref_s{seed}", "csq", "untrained", seed, {8: 0.15 + 0.01 * seed, 16: 0.17, 32: 0.2},
                         0.0, 0, 0)
    for method, level in (("csq", 0.6), ("dsh", 0.16), ("dtsh", 0.6)):
        for length in LENGTHS:
            rows += run_rows(f"{method}_sep_{length}", method, "separate", 0, {length: level}, 10.0, 5, 4)
        rows += run_rows(f"{method}_nhl", method, "nhl", 0, {k: level + 0.01 for k in LENGTHS}, 4.0, 5, 4, lam=1.0)
    frame = pd.DataFrame(rows)
    flag = frame[(frame.run_id == "dtsh_nhl") & (frame.metric == "map")].assign(metric="collapsed", value=0.0)
    flag.loc[flag.code_length == 32, "value"] = 1.0
    return pd.concat([frame, flag], ignore_index=True)


def test_reference_level_pooled_per_length_and_left_out_of_comparisons(study_frames):
    metrics = study_frames[0]
    reference = tables.reference_table(metrics)
    expected = [0.15 + 0.01 * np.log2(k) + 0.0025 for k in LENGTHS]  # mean of seeds 0 and 1
    assert list(reference.code_length) == list(LENGTHS) and np.allclose(reference["mean"], expected)
    assert set(reference.n) == {2}
    table = tables.map_table(metrics)
    ref_rows = table[table.variant == "untrained"]
    assert set(ref_rows.method) == {tables.REFERENCE_METHOD} and len(ref_rows) == len(LENGTHS)
    assert table.tail(len(LENGTHS)).variant.eq("untrained").all()  # the reference rows come last
    assert "untrained" not in set(tables.delta_table(metrics).variant)
    assert "untrained" not in set(tables.speedup_table(metrics).variant)  # it trains nothing: no time to divide
    assert "untrained" not in set(tables.best_epoch_table(metrics).variant)
    assert "untrained" in tables.variant_order() and "untrained" not in tables.variant_order(reference=False)
    assert tables.reference_table(metrics[metrics.variant != "untrained"]).empty


def test_collapse_from_the_run_metric_or_the_reference():
    table = tables.collapse_table(collapse_metrics())
    by = table.set_index(["run_id", "code_length"])
    assert not by.loc[("csq_nhl", 8), "collapsed"] and by.loc[("csq_nhl", 8), "basis"] == "reference"
    assert by.loc[("dsh_nhl", 16), "collapsed"] and by.loc[("dsh_sep_32", 32), "collapsed"]
    assert by.loc[("dtsh_nhl", 32), "collapsed"] and by.loc[("dtsh_nhl", 32), "basis"] == "metric"
    assert not by.loc[("dtsh_sep_32", 32), "collapsed"]
    # threshold: reference mean + max(margin, 2 std); at 8 bits the two seeds differ by 0.01
    ref8 = tables.reference_table(collapse_metrics()).set_index("code_length").loc[8]
    assert by.loc[("csq_nhl", 8), "threshold"] == pytest.approx(ref8["mean"] + max(0.02, 2 * ref8["std"]))
    # without reference runs and without the metric nothing is decided
    none = tables.collapse_table(collapse_metrics().query("variant != 'untrained' and metric != 'collapsed'"))
    assert none["collapsed"].isna().all() and set(none["basis"]) == {"none"}


def test_verdict_tables_mark_collapsed_sides_and_never_compare_the_reference():
    metrics = collapse_metrics()
    out = tables.verdict_tables(metrics)
    verdict = out["verdict"].set_index(["method", "code_length"])
    assert set(out) == {"verdict", "verdict_counts", "average_gain"}
    assert set(out["verdict"].variant) == {"nhl"} and "untrained" not in set(out["verdict"].method)
    assert verdict.loc[("dsh", 8), "collapsed"] == "separate+nhl"
    assert verdict.loc[("dtsh", 32), "collapsed"] == "nhl" and verdict.loc[("dtsh", 8), "collapsed"] == ""
    assert verdict.loc[("csq", 16), "mean"] == pytest.approx(0.01) and verdict.loc[("csq", 16), "n"] == 1
    counts = out["verdict_counts"].set_index("code_length")
    assert counts.loc[8, "methods"] == 3 and counts.loc[8, "tie"] == 3  # one seed decides nothing
    assert out["average_gain"].set_index("method").loc["csq", "points"] == pytest.approx(1.0)


def test_best_epoch_table(small_metrics):
    table = tables.best_epoch_table(small_metrics).set_index(["method", "variant"])
    sep = table.loc[("csq", "separate")]
    assert sep["runs"] == 5 and sep["best_epoch_mean"] == pytest.approx(np.mean([3, 5, 4, 2, 9]))
    assert sep["best_epoch_min"] == 2 and sep["best_epoch_max"] == 9
    assert table.loc[("dsh", "nhl"), "formatted"] == "1.0"  # one run: no ± std


def markers(ax, gid):
    return [c for c in ax.collections if c.get_gid() == gid]


def caption_of(fig):
    return " ".join(next(t.get_text() for t in fig.texts if t.get_gid() == "caption").split())


def test_map_figure_draws_reference_single_runs_and_collapse():
    metrics = collapse_metrics()
    fig = plots.plot_map_vs_length(metrics)
    assert_complete_figure(fig)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"csq", "dsh", "dtsh"}  # the reference is a line, never a panel
    for ax in axes.values():
        (ref,) = [line for line in ax.lines if line.get_gid() == "reference"]
        assert ref.get_linestyle() == "--"
        assert np.allclose(ref.get_ydata(), tables.reference_table(metrics)["mean"])
    hollow = markers(axes["csq"], "n=1")
    assert hollow and all(np.allclose(fc[:3], 1.0) for c in hollow for fc in c.get_facecolors())  # white inside
    assert not markers(axes["csq"], "collapsed,n=1") and not markers(axes["csq"], "mean")
    grey = markers(axes["dsh"], "collapsed,n=1")
    assert grey and all(np.allclose(ec[:3], plots.COLLAPSED_COLOR) for c in grey for ec in c.get_edgecolors())
    assert len(markers(axes["dtsh"], "collapsed,n=1")[0].get_offsets()) == 1  # only its flagged 32-bit point
    caption = caption_of(fig)
    assert "n = 1" in caption and "mean over" not in caption.split("untrained network")[0]
    assert "untrained network" in caption and "collapsed" in caption


def test_seed_markers_follow_the_number_of_seeds(study_frames):
    metrics = study_frames[0]
    fig = plots.plot_map_vs_length(metrics)
    ax = next(ax for ax in fig.axes if ax.get_title() == "csq")
    assert markers(ax, "mean") and not markers(ax, "n=1")  # two seeds everywhere
    assert "mean over n = 2 seeds" in caption_of(fig) and "No model is collapsed" in caption_of(fig)
    one_seed = metrics[metrics.seed == 0]
    fig = plots.plot_map_vs_length(one_seed)
    ax = next(ax for ax in fig.axes if ax.get_title() == "csq")
    assert markers(ax, "n=1") and not markers(ax, "mean")
    assert "one run each (n = 1 seed)" in caption_of(fig)
    for fig in (plots.plot_ablation(one_seed), plots.plot_distill_sensitivity(one_seed), plots.plot_ties(one_seed),
                plots.plot_training_time(one_seed)):
        assert "mean over" not in caption_of(fig).lower() and "n = 1" in caption_of(fig), caption_of(fig)


def test_new_figures_are_complete(study_frames):
    metrics, conflicts, history, _curves = study_frames
    bench = tables.retrieval_benchmark(sorted((REPO / "benchmarks" / "results").glob("*retrieval*.json")))
    for fig in (plots.plot_verdict(metrics), plots.plot_speedup_vs_gain(metrics),
                plots.plot_training_curves(history, metrics), plots.plot_retrieval_scaling(bench)):
        assert_complete_figure_any_source(fig)
    curves = plots.plot_training_curves(history, metrics)
    assert any(line.get_gid() == "reference" for ax in curves.axes for line in ax.lines)  # epoch-0 crosses
    verdict = plots.plot_verdict(collapse_metrics())
    (ax,) = [a for a in verdict.axes if a.get_visible()]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dtsh", "dsh", "csq"]
    assert markers(ax, "collapsed,n=1") and markers(ax, "n=1")
    # conflicts: one heat map of method × pair, and pair × epoch per method, for the full method
    heat = plots.plot_conflict_heatmap(conflicts)
    (panel,) = [a for a in heat.axes if a.get_visible() and a.get_label() != "<colorbar>"]
    assert [t.get_text() for t in panel.get_yticklabels()] == ["csq", "dsh"]
    assert len(panel.get_xticklabels()) == 3 and heat.get_size_inches()[0] <= 11.5
    rates = plots.plot_conflict_rates(conflicts)
    assert len([a for a in rates.axes if a.get_visible() and a.get_label() != "<colorbar>"]) == 2


def assert_complete_figure_any_source(fig):
    assert isinstance(fig, Figure) and fig.get_suptitle()
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert visible and all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in visible)
    assert fig.legends
    assert len([t for t in fig.texts if t.get_gid() == "caption"]) == 1


def test_ten_methods_wrap_into_rows_of_three(study_frames):
    metrics = full_metrics(methods=("csq", "dbdh", "dch", "dhn", "dpn", "dsh", "dtsh", "lcdsh", "mdsh", "shcir"),
                           seeds=(0,))
    fig = plots.plot_map_vs_length(metrics)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 10
    rows = {round(ax.get_position().y0, 2) for ax in visible}
    assert len(rows) == 4 and fig.get_size_inches()[0] < 12  # three to a row: readable at README width


def test_retrieval_scaling_text_reads_the_benchmark():
    bench = tables.retrieval_benchmark(REPO / "benchmarks" / "results" / "bench_retrieval_trained.json")
    text = tables.retrieval_scaling_text(bench)
    line = next(line for line in text.splitlines() if line.startswith("- 1,000,000 items"))
    payload = json.loads((REPO / "benchmarks" / "results" / "bench_retrieval_trained.json").read_text())
    (big,) = [run for run in payload["runs"] if run["db_size"] == 1_000_000]
    speed = {r["configuration"].split(" ")[0]: r["speedup"] for r in big["results"] if ", s=1000" in r["configuration"]}
    # the text's numbers are the JSON's (it once said 26× / 58× where the file said otherwise)
    assert f"shortlist {speed['shortlist']:.0f}×" in line and f"table {speed['shortlist_table']:.0f}×" in line
    assert tables.retrieval_scaling_text(bench.iloc[0:0]) == ""


@pytest.mark.parametrize("rows, allowed", [(10, 0), (None, 3)])  # the notebook's configurations; all of them
def test_retrieval_tradeoff_labels_do_not_overlap(rows, allowed):
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    payload = json.loads((REPO / "benchmarks" / "results" / "bench_retrieval_trained.json").read_text())
    frame = pd.DataFrame(payload["runs"][0]["results"]).iloc[:rows].assign(study="default", run_id="r")
    fig = plots.plot_retrieval_tradeoff(frame)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text()]
        assert not any("thr" in t.get_text() for t in labels)  # the slower exhaustive timing is not drawn
        boxes = [t.get_window_extent(renderer) for t in labels]
        overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        assert overlaps <= allowed, f"{overlaps} overlapping labels of {len(boxes)}"


def test_save_slide_is_one_panel_at_1280x720_with_the_caption_outside(tmp_path, study_frames):
    from PIL import Image

    metrics = study_frames[0]
    paths = plots.save_slide(plots.plot_map_vs_length(metrics, methods=["csq"]), tmp_path, "map_csq")
    assert [p.name for p in paths] == ["map_csq.png", "map_csq.txt"]
    assert Image.open(paths[0]).size == (1280, 720)
    assert paths[1].read_text().startswith("Source: study 'unit'")
    with pytest.raises(ValueError, match="one panel"):
        plots.save_slide(plots.plot_map_vs_length(metrics), tmp_path, "two")
    assert plots.save_slide(None, tmp_path, "none") == []


def test_a_side_experiment_on_the_targets_is_left_out_of_the_main_comparison():
    """The default study adds `targets: independent` nhl runs for some methods: tables keep them apart, the main
    comparison (verdict, figures) uses the main construction."""
    metrics = collapse_metrics().assign(targets="nested")
    side = metrics[metrics.run_id == "csq_nhl"].assign(targets="independent", run_id="csq_nhl_independent")
    side.loc[side.metric == "map", "value"] -= 0.2
    both = pd.concat([metrics, side], ignore_index=True)
    assert set(tables.main_comparison(both).targets) == {"nested"}
    verdict = tables.verdict_tables(both)["verdict"].set_index(["method", "code_length"])
    assert verdict.loc[("csq", 8), "mean"] == pytest.approx(0.01)
    table = tables.map_table(both)
    assert set(table.loc[table.variant == "nhl", "targets"]) == {"nested", "independent"}
    delta = tables.delta_table(both).set_index(["targets", "method", "code_length"])  # both against separate
    assert delta.loc[("independent", "csq", 8), "mean"] == pytest.approx(0.01 - 0.2)
    assert delta.loc[("nested", "csq", 8), "mean"] == pytest.approx(0.01)
    assert_complete_figure(plots.plot_map_vs_length(both))
    assert plots.plot_verdict(both) is not None and plots.plot_distill_sensitivity(both) is None


def test_a_figure_drawn_twice_is_the_same_file(tmp_path):
    """Same content, same bytes (PNG and PDF): redrawing the committed figures does not churn them in git."""
    import matplotlib.figure

    def draw():
        fig = matplotlib.figure.Figure(figsize=(3, 2))
        fig.subplots().plot([0, 1, 2], [1, 0, 2])
        return fig

    first = plots.save_figure(draw(), tmp_path / "a", "f")
    import time
    time.sleep(1.1)  # a creation date would differ by now
    second = plots.save_figure(draw(), tmp_path / "b", "f")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
