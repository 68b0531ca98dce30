"""The regimes analysis on a tiny synthetic regimes result: regime labels from configs, per-regime tables that
equal the single-regime tables of each subset, the sign test per regime, the speed-up beside the backbone share,
and the figure."""

import pandas as pd
import pytest
from matplotlib.figure import Figure

from nhllib import plots
from nhllib.analysis import regimes, tables
from nhllib.analysis.stats import paired_test

LENGTHS = (8, 16)


def _rows(run_id, method, variant, seed, maps, time_s, backbone="mlp", lam=0.0):
    base = {"run_id": run_id, "study": "unit", "method": method, "variant": variant, "dataset": "toy",
            "backbone": backbone, "weighting": "uniform", "distill_weight": lam, "seed": seed}
    rows = [{**base, "code_length": n, "metric": "map", "value": v} for n, v in maps.items()]
    for metric, value in (("train_time_s", time_s), ("epochs_run", 4), ("best_epoch", 2)):
        rows.append({**base, "code_length": float("nan"), "metric": metric, "value": value})
    return rows


#: regime -> (config fields, nhl's offset over separate per method, separate/nhl time)
REGIMES = {
    "scratch": (dict(backbone="mlp", pretrained=False), {"csq": +0.02, "dsh": -0.01}, (10.0, 4.0)),
    "in-domain": (dict(backbone="mlp", pretrained="pool-in-domain"), {"csq": -0.03, "dsh": -0.02}, (10.0, 2.5)),
    "frozen": (dict(backbone="mlp", pretrained="pool-in-domain", freeze_backbone=True), {"csq": 0.0, "dsh": +0.01},
               (6.0, 3.0)),
    "cnn": (dict(backbone="cnn", pretrained=False), {"csq": +0.01, "dsh": +0.03}, (30.0, 8.0)),
}


@pytest.fixture
def synthetic():
    metrics, runs = [], []
    for key, (config, offsets, (t_sep, t_nhl)) in REGIMES.items():
        backbone = config["backbone"]
        for method, offset in offsets.items():
            for seed in (0, 1, 2):
                noise = 0.004 * (seed - 1)
                for n in LENGTHS:
                    rid = f"{key}_{method}_sep{n}_s{seed}"
                    metrics += _rows(rid, method, "separate", seed, {n: 0.6 + n / 1000}, t_sep / 2, backbone)
                    runs.append({"run_id": rid, **config})
                rid = f"{key}_{method}_nhl_s{seed}"
                metrics += _rows(rid, method, "nhl", seed, {n: 0.6 + n / 1000 + offset + noise for n in LENGTHS},
                                 t_nhl, backbone, lam=1.0)
                runs.append({"run_id": rid, **config})
        rid = f"{key}_untrained"
        metrics += _rows(rid, "csq", "untrained", 0, {8: 0.2, 16: 0.3}, 0.0, backbone)
        runs.append({"run_id": rid, **config})
    return pd.DataFrame(metrics), pd.DataFrame(runs)


def test_regime_names_and_order_come_from_the_configs(synthetic):
    _, runs = synthetic
    index = regimes.regime_index(runs)  # freeze_backbone absent in some rows: the default False
    assert regimes.regime_order(index) == ["mlp from scratch", "mlp in-domain pretrained, fine-tuned",
                                           "mlp in-domain pretrained, frozen", "cnn from scratch"]
    assert regimes.regime_name("resnet50", True) == "resnet50 imagenet pretrained, fine-tuned"
    assert regimes.regime_name("mlp", "pool-coarse") == "mlp coarse pretrained, fine-tuned"
    old = regimes.regime_index(pd.DataFrame({"run_id": ["x"], "backbone": ["mlp"]}))  # a run written before
    assert list(old["regime"].astype(str)) == ["mlp from scratch"] and float(old["backbone_lr_mult"][0]) == 1.0


def test_per_regime_tables_are_the_single_regime_tables_of_each_subset(synthetic):
    metrics, runs = synthetic
    index = regimes.regime_index(runs)
    out = regimes.regime_tables(metrics, pd.DataFrame(), index)
    assert set(out) >= {"regime_verdict", "regime_verdict_counts", "regime_average_gain", "regime_speedup",
                        "regime_best_epochs", "regime_reference"}
    verdict = out["regime_verdict"]
    assert list(verdict.columns[:2]) == ["regime", "method"]
    for name in regimes.regime_order(index):
        subset = regimes.regime_subset(metrics, index, name)
        alone = tables.verdict_tables(subset, distill_weight=1.0)["verdict"]
        mine = verdict[verdict["regime"] == name].drop(columns="regime").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
    # a cell by hand: in-domain csq, 16 bits, nhl - separate = -0.03 + noise over the seeds
    cell = verdict[(verdict["regime"] == "mlp in-domain pretrained, fine-tuned") & (verdict["method"] == "csq")
                   & (verdict["code_length"] == 16)].iloc[0]
    expected = paired_test([-0.03 + 0.004 * (s - 1) for s in (0, 1, 2)])
    assert cell["mean"] == pytest.approx(expected["mean"]) and cell["ci_high"] == pytest.approx(expected["ci_high"])
    assert cell["verdict"] == "lose"
    speedup = out["regime_speedup"]
    cnn = speedup[(speedup["regime"] == "cnn from scratch") & (speedup["method"] == "csq")].iloc[0]
    assert cnn["speedup_mean"] == pytest.approx(2 * 15.0 / 8.0)  # two separate runs of 15 s against one of 8 s
    reference = out["regime_reference"]
    assert set(reference["regime"]) == set(regimes.regime_order(index)) and (reference["n"] == 1).all()


def test_the_sign_test_per_regime_counts_the_cells(synthetic):
    metrics, runs = synthetic
    index = regimes.regime_index(runs)
    verdict = regimes.regime_tables(metrics, pd.DataFrame(), index)["regime_verdict"]
    overall = regimes.overall_sign_tests(verdict).set_index("regime")
    scratch = overall.loc["mlp from scratch"]
    assert (scratch["cells"], scratch["higher"], scratch["lower"]) == (4, 2, 2)
    assert scratch["sign_p"] == pytest.approx(1.0)
    in_domain = overall.loc["mlp in-domain pretrained, fine-tuned"]
    assert in_domain["lower"] == 4 and in_domain["sign_p"] == pytest.approx(0.125)  # 2 * 0.5**4
    assert in_domain["gain"] + in_domain["tie"] + in_domain["lose"] == 4


def test_the_speedup_is_set_beside_the_backbone_share(synthetic):
    metrics, runs = synthetic
    index = regimes.regime_index(runs)
    speedup = regimes.regime_tables(metrics, pd.DataFrame(), index)["regime_speedup"]
    share = pd.DataFrame([{"backbone": "mlp", "frozen": False, "share": 0.4},
                          {"backbone": "mlp", "frozen": True, "share": 0.05},
                          {"backbone": "cnn", "frozen": False, "share": 0.75}])
    table = regimes.speedup_with_share(speedup, index, share).set_index("regime")
    assert table.loc["mlp in-domain pretrained, frozen", "backbone_share"] == pytest.approx(0.05)
    assert table.loc["cnn from scratch", "backbone_share"] == pytest.approx(0.75)
    assert table.loc["mlp from scratch", "speedup_mean"] == pytest.approx(2 * 5.0 / 4.0)
    missing = regimes.speedup_with_share(speedup, index, share.iloc[:0])
    assert missing["backbone_share"].isna().all()


def test_the_figure_has_a_panel_per_regime_and_reads_at_readme_width(synthetic):
    metrics, runs = synthetic
    index = regimes.regime_index(runs)
    verdict = regimes.regime_tables(metrics, pd.DataFrame(), index)["regime_verdict"]
    fig = plots.plot_regime_differences(verdict)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert sorted(titles) == sorted(regimes.regime_order(index))
    assert fig.get_figwidth() <= plots.PANEL[0] * plots.MAX_COLUMNS + 0.6  # panels wrap: text stays readable
    smallest = min(size for _, size in plots.font_sizes_at_readme_width(fig))
    assert smallest >= plots.MIN_FONT_PT - 1e-9
    assert plots.plot_regime_differences(verdict.iloc[:0]) is None



def test_a_lambda_sweep_does_not_weigh_into_a_regimes_speedup():
    speedup = pd.DataFrame([
        {"regime": "mlp from scratch", "method": "csq", "variant": "nhl", "distill_weight": w, "speedup_mean": s}
        for w, s in ((1.0, 3.0), (0.1, 9.0), (3.0, 9.0))] + [
        {"regime": "mlp from scratch", "method": "dsh", "variant": "nhl", "distill_weight": 1.0, "speedup_mean": 5.0}])
    table = regimes.speedup_with_share(speedup, pd.DataFrame(), pd.DataFrame(columns=["backbone", "frozen", "share"]))
    row = table.iloc[0]
    assert (row["methods"], row["speedup_mean"], row["speedup_max"]) == (2, pytest.approx(4.0), pytest.approx(5.0))
