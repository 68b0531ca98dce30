import pytest

from nhllib.store.results import RunExistsError, RunStore, load_results
from nhllib.study import expand_grid, load_profile
from nhllib.training.config import RunConfig


def test_run_id_is_deterministic_and_ignores_where_it_runs():
    a = RunConfig.from_dict(dict(method="dsh", seed=3))
    assert a.run_id == RunConfig.from_dict(dict(method="dsh", seed=3)).run_id
    elsewhere = dict(method="dsh", seed=3, device="cpu", study="other", data_dir="elsewhere")
    assert a.run_id == RunConfig.from_dict(elsewhere).run_id
    assert a.run_id != RunConfig.from_dict(dict(method="dsh", seed=4)).run_id
    assert a.run_id.startswith("dsh_nhl_8-16-32-64-128_seed3_")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"method": "xyz"}, r"method must be one of \['csq'"),
        ({"variant": "nhl-best"}, "variant must be one of"),
        ({"code_lengths": (16, 8)}, "strictly increasing"),
        ({"variant": "separate"}, "single length"),
        ({"variant": "nhl", "code_lengths": (8,)}, "at least two"),
        ({"epochs": -1}, "epochs must be a positive int"),
        ({"dataset": "mnist"}, "dataset must be one of"),
        ({"backbone": "resnet7"}, "backbone must be one of"),
        ({"ties": "random"}, "ties must be one of"),
        ({"lr": 0}, "lr must be positive"),
        ({"threshold_norm": "l1"}, "threshold_norm"),
        ({"study": "a/b"}, "study must be"),
    ],
)
def test_bad_parameters_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(params)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown run parameter\(s\) \['epoch'\]"):
        RunConfig.from_dict({"epoch": 3})


def test_store_lifecycle(tmp_path):
    store = RunStore(tmp_path, "s", "r1")
    assert store.state == "absent"
    store.prepare()
    store.write_rows("metrics.csv", [{"metric": "map", "value": 0.5}], ["metric", "value"])
    assert store.state == "incomplete"
    assert load_results(tmp_path).empty  # incomplete runs are invisible
    (store.path / "01_train.ipynb").write_text("{}")
    store.prepare()  # an incomplete run is reset, keeping the notebook papermill is writing
    assert sorted(p.name for p in store.path.iterdir()) == ["01_train.ipynb"]
    store.write_rows("metrics.csv", [{"metric": "map", "value": 0.5}], ["metric", "value"])
    store.mark_complete()
    assert store.state == "complete"
    with pytest.raises(RunExistsError, match="overwrite=True"):
        store.prepare()
    frame = load_results(tmp_path)
    assert frame.to_dict("records") == [{"run_id": "r1", "study": "s", "metric": "map", "value": 0.5}]
    store.prepare(overwrite=True)
    assert store.state == "incomplete"


def test_load_results_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the study first"):
        load_results(tmp_path / "nope")


def test_grid_expansion_and_errors():
    grid = [{"variant": "separate", "sweep": {"code_lengths": [[8], [16]], "seed": [0, 1]}},
            {"sweep": {"variant": ["nhl", "nhl"]}}]
    configs = expand_grid("s", {"epochs": 2}, grid)
    assert len(configs) == 5  # duplicates collapse
    assert {c.model.code_lengths for c in configs[:4]} == {(8,), (16,)}
    assert all(c.study == "s" and c.training.epochs == 2 for c in configs)
    with pytest.raises(ValueError, match=r"grid block 1 .*method must be one of"):
        expand_grid("s", {}, [{"sweep": {"method": ["nope"]}}])


def test_profiles_load_and_unknown_profile():
    for name in ("smoke", "default", "full", "paper"):
        profile = load_profile(name)
        assert profile.configs
    with pytest.raises(ValueError, match="unknown profile 'fast'; available profiles: "):
        load_profile("fast")


def test_method_defaults_apply_to_that_method_only_and_yield_to_the_grid():
    grid = [{"variant": "separate", "code_lengths": [8], "sweep": {"method": ["csq", "dsh"]}},
            {"variant": "separate", "code_lengths": [8], "method": "dsh", "loss_hparams": {"pairs": "bank"}}]
    configs = expand_grid("s", {"epochs": 2}, grid, {"dsh": {"loss_hparams": {"pairs": "batch"}, "epochs": 3}})
    by = {(c.hashing.method, c.hashing.loss_hparams.get("pairs")): c for c in configs}
    assert set(by) == {("csq", None), ("dsh", "batch"), ("dsh", "bank")}
    assert by[("csq", None)].training.epochs == 2 and by[("dsh", "batch")].training.epochs == 3
    with pytest.raises(ValueError, match="method_defaults must map"):
        expand_grid("s", {}, grid, {"dsh": ["pairs"]})
