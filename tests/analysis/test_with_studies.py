"""A study's analysis can read another study's runs beside its own (``with_studies``): the regimes study takes its
MLP-from-scratch regime from the default study instead of training the same configurations again."""

import pytest

from nhllib.analysis.selection import load_runs_of, load_study
from nhllib.store.results import METRIC_COLUMNS, RunStore
from nhllib.study.cli import _missing_studies
from nhllib.study.profile import load_profile
from nhllib.training.config import RunConfig


def _write_run(root, study, method, seed, pretrained=False):
    cfg = RunConfig.from_dict({"study": study, "method": method, "variant": "nhl", "seed": seed, "backbone": "mlp",
                               "code_lengths": [8, 16], "pretrained": pretrained})
    store = RunStore(root, study, cfg.run_id)
    store.prepare()
    store.write_json("config.json", {"run_id": cfg.run_id, "config": cfg.to_dict(), "device": "cpu"})
    rows = [{"run_id": cfg.run_id, "study": study, "method": method, "variant": "nhl", "dataset": "fashion-mnist",
             "backbone": "mlp", "code_length": length, "weighting": "conflict", "distill_weight": 0.0,
             "targets": "", "seed": seed, "metric": "map", "value": 0.5} for length in (8, 16)]
    store.write_rows("metrics.csv", rows, METRIC_COLUMNS)
    store.write_rows("history.csv", [{"epoch": 1, "code_length": 8, "split": "validation", "metric": "map",
                                      "value": 0.4}], ["epoch", "code_length", "split", "metric", "value"])
    store.mark_complete()
    return cfg.run_id


def test_the_runs_of_other_studies_join_and_keep_their_study(tmp_path):
    own = _write_run(tmp_path, "regimes", "csq", 0, pretrained="pool-in-domain")
    other = _write_run(tmp_path, "default", "csq", 0)
    _write_run(tmp_path, "unrelated", "dsh", 0)
    loaded = load_study(tmp_path, "regimes", ["default"])
    assert sorted(loaded.runs["run_id"]) == sorted([own, other])
    assert dict(zip(loaded.metrics["run_id"], loaded.metrics["study"])) == {own: "regimes", other: "default"}
    assert sorted(loaded.history["run_id"]) == sorted([own, other])
    runs = load_runs_of(tmp_path, "regimes", ["default"])
    assert dict(zip(runs["run_id"], runs["study"])) == {own: "regimes", other: "default"}
    assert sorted(load_study(tmp_path, "regimes").runs["run_id"]) == [own]  # without it: its own runs only


def test_a_run_in_two_studies_would_count_twice_and_is_refused(tmp_path):
    same = _write_run(tmp_path, "regimes", "csq", 0)
    _write_run(tmp_path, "default", "csq", 0)
    with pytest.raises(ValueError, match=f"run {same} is in study 'regimes' and in study 'default'"):
        load_study(tmp_path, "regimes", ["default"])
    with pytest.raises(ValueError, match="count twice"):
        load_runs_of(tmp_path, "regimes", ["default"])


@pytest.mark.parametrize("others, message", [
    (["default"], "with_studies names study 'default', which has no complete run .*./run_all.sh default"),
    (["regimes"], "study 'regimes' is named twice"),
    ("default", "must be a list of study names"),
])
def test_a_named_study_must_exist_be_another_and_be_listed(tmp_path, others, message):
    _write_run(tmp_path, "regimes", "csq", 0)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_study(tmp_path, "regimes", others)


def test_the_regimes_profile_reads_the_default_study_and_does_not_train_it_again():
    profile = load_profile("regimes")
    default = load_profile("default")
    assert profile.with_studies == ("default",)
    # regime (a) is not in the grid: every run here either starts from pretrained weights or uses another backbone
    assert all(cfg.model.pretrained or cfg.model.backbone != "mlp" for cfg in profile.configs)
    assert not {cfg.run_id for cfg in profile.configs} & {cfg.run_id for cfg in default.configs}


def test_the_driver_refuses_to_start_without_the_studies_its_analysis_reads(tmp_path):
    profile = load_profile("regimes")
    problem = _missing_studies(profile, tmp_path)
    assert "study 'default' has no complete run" in problem and "./run_all.sh default first" in problem
    _write_run(tmp_path, "default", "csq", 0)
    assert _missing_studies(profile, tmp_path) == ""
    assert _missing_studies(load_profile("smoke"), tmp_path) == ""  # a profile that reads no other study


def test_a_profile_names_other_studies_as_a_list(tmp_path):
    from nhllib.study.profile import check_profile

    spec = {"study": "s", "grid": [{"method": "csq"}], "analysis": {"03_figures.ipynb": {"with_studies": "default"}}}
    with pytest.raises(ValueError, match="with_studies must be a list of study names"):
        check_profile(spec, "s.yaml")


def test_a_notebook_shows_one_regime_of_several_and_finds_its_run_there(tmp_path):
    from nhllib.analysis.regimes import choose_regime
    from nhllib.analysis.selection import find_run
    from nhllib.store.results import load_runs

    scratch = _write_run(tmp_path, "s", "csq", 0)
    pretrained = _write_run(tmp_path, "s", "csq", 0, pretrained="pool-in-domain")
    runs = load_runs(tmp_path, "s")
    assert choose_regime(runs) == ("mlp from scratch", {scratch})  # empty: the first in order
    chosen, keep = choose_regime(runs, "mlp in-domain pretrained, fine-tuned")
    assert (chosen, keep) == ("mlp in-domain pretrained, fine-tuned", {pretrained})
    assert find_run(tmp_path, "s", "csq", "nhl", 0, among=keep).name == pretrained
    assert find_run(tmp_path, "s", "csq", "nhl", 0, among={scratch}).name == scratch
    with pytest.raises(ValueError, match=r"regime must be one of \['mlp from scratch', 'mlp in-domain"):
        choose_regime(runs, "mlp coarse pretrained, fine-tuned")
    with pytest.raises(FileNotFoundError, match="among the runs asked for"):
        find_run(tmp_path, "s", "dsh", "nhl", 0, among=keep)
    single = load_runs(tmp_path, "s").query("run_id == @scratch")
    assert choose_regime(single) == ("", {scratch})  # one regime: nothing to choose, every run
