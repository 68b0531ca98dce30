"""The structure the rest of the project relies on: one configuration, the schema owner, one step (the layering:
test_layers)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nhllib.core import evaluate
from nhllib.core.weighting import FIRST_STEP, ConflictAware, Static, Uniform, WeightingResult, WeightingStrategy
from nhllib.store import results
from nhllib.training import train
from nhllib.training.config import RunConfig

PACKAGE = Path(__file__).resolve().parents[2] / "nhllib"

# A layout-1 config.json "config" (one flat mapping), as the smoke study wrote it before the parts existed,
# with the run id it was stored under.
LAYOUT_1 = {
    "amp": False, "backbone": "cnn", "batch_size": 32, "beta": 1.0, "code_lengths": [8, 16, 32], "conflict_every": 1,
    "data_dir": "data", "database_per_class": 30, "dataset": "fashion-mnist", "device": "cpu", "distill_weight": 1.0,
    "download": False, "epochs": 2, "eval_batch_size": 1024, "eval_every": 1, "image_size": None, "loss_hparams": {},
    "lr": 0.001, "method": "csq", "patience": 0, "pretrained": False, "query_per_class": 5, "seed": 0,
    "split_seed": 0, "study": "smoke", "threshold_norm": "own", "ties": "expected", "topk": None,
    "train_per_class": 20, "val_per_class": 5, "variant": "nhl", "weight_decay": 1e-05,
}
LAYOUT_1_RUN_ID = "csq_nhl_8-16-32_seed0_ba8aef36"


def test_the_training_step_does_not_ask_the_weighting_its_class():
    source = inspect.getsource(train)
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "isinstance"]
    assert not calls
    for name in ("ConflictAware", "Uniform", "Static", "last_code_grads", "last_stats", "TrainSettings"):
        assert name not in source


def test_validation_vocabularies_and_analysis_import_without_torch():
    code = ("import sys\nimport nhllib.checks, nhllib.vocab, nhllib.store.results, nhllib.analysis.tables, nhllib.plots\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, check=False)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- configuration


def test_layout_1_config_loads_and_keeps_its_run_id():
    cfg = RunConfig.from_dict(LAYOUT_1)
    assert cfg.run_id == LAYOUT_1_RUN_ID
    assert cfg.data.batch_size == 32 and cfg.training.epochs == 2 and cfg.model.code_lengths == (8, 16, 32)
    assert cfg.hashing.targets == "nested" and cfg.model.center_codes is False  # added fields take defaults
    stored = cfg.to_dict()
    assert stored["layout"] == results.LAYOUT and stored["data"]["batch_size"] == 32
    assert RunConfig.from_dict(json.loads(json.dumps(stored))) == cfg
    assert {k: v for k, v in cfg.flat().items() if k in LAYOUT_1} == {**LAYOUT_1, "code_lengths": [8, 16, 32]}


def test_old_run_folders_load_in_the_run_table(tmp_path):
    folder = tmp_path / "smoke" / LAYOUT_1_RUN_ID
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": LAYOUT_1, "device": "cpu"}))
    results.RunStore(tmp_path, "smoke", LAYOUT_1_RUN_ID).mark_complete()  # a marker recording config.json
    new = RunConfig.from_dict({**LAYOUT_1, "seed": 1})
    (tmp_path / "smoke" / new.run_id).mkdir()
    (tmp_path / "smoke" / new.run_id / "config.json").write_text(json.dumps({"config": new.to_dict()}))
    results.RunStore(tmp_path, "smoke", new.run_id).mark_complete()
    runs = results.load_runs(tmp_path, "smoke").set_index("run_id")
    assert runs.loc[LAYOUT_1_RUN_ID, "batch_size"] == 32 and runs.loc[new.run_id, "batch_size"] == 32
    assert runs.loc[new.run_id, "code_lengths"] == "8-16-32"


def test_new_fields_enter_the_run_id_only_away_from_their_default():
    base = RunConfig.from_dict(LAYOUT_1)
    assert base.updated(targets="nested", center_codes=False, num_workers=0).run_id == LAYOUT_1_RUN_ID
    changed = {base.updated(targets="independent").run_id, base.updated(center_codes=True).run_id,
               base.updated(normalization="imagenet").run_id}
    assert len(changed) == 3 and LAYOUT_1_RUN_ID not in changed


@pytest.mark.parametrize("params, message", [
    ({"targets": "shared"}, "targets must be one of"),
    ({"center_codes": 1}, "center_codes must be True or False"),
    ({"batch_size": True}, "batch_size must be a positive int"),
    ({"layout": 7}, "unknown config layout 7"),
    ({"data": {"dataset": "fashion-mnist"}, "layout": 2, "epoch": 3}, r"unknown run parameter\(s\) \['epoch'\]"),
])
def test_bad_new_parameters_name_themselves(params, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(params)


def test_every_run_parameter_is_a_documented_line_of_01_train():
    notebook = json.loads((PACKAGE.parent / "notebooks" / "01_train.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = [line for line in "".join(cell["source"]).splitlines() if ":" in line.split("=")[0]]
    declared = {line.split(":")[0].strip(): line for line in lines}
    for name in RunConfig.parameter_names():
        assert name in declared, f"01_train lacks the parameter {name}"
        assert "#" in declared[name], f"01_train's parameter {name} has no comment"


def test_the_variant_is_decoded_once():
    plain, full = (RunConfig.from_dict({**LAYOUT_1, "variant": v, "distill_weight": 0.5}) for v in ("nhl-plain", "nhl"))
    assert (plain.plan.distill_weight, plain.plan.weighting, plain.plan.apply_conflict_weights) == (0.0, "uniform", False)
    assert (full.plan.distill_weight, full.plan.weighting, full.plan.apply_conflict_weights) == (0.5, "conflict", True)
    assert RunConfig.from_dict({**LAYOUT_1, "variant": "heads"}).plan.head == "multi-head"
    assert full.label == "csq nhl 8/16/32 seed=0 λ=0.5"


def test_new_fields_reach_the_builders(monkeypatch, tmp_path, tiny_data):
    import nhllib.training.experiment as experiment

    seen = {}

    def fake_losses(*args, **kwargs):
        seen["targets"] = kwargs["targets"]
        raise RuntimeError("stop here")

    class Head(experiment.NestedHashLayer):
        def __init__(self, in_features, code_lengths, **kwargs):
            seen["head"] = kwargs
            super().__init__(in_features, code_lengths)

    monkeypatch.setattr(experiment, "build_losses", fake_losses)
    monkeypatch.setattr(experiment, "HEADS", {**experiment.HEADS, "nested": Head})
    small = dict(LAYOUT_1, data_dir=str(tmp_path), query_per_class=2, train_per_class=4, val_per_class=1,
                 database_per_class=4)
    for overrides, head_kwargs in (({}, {}), ({"center_codes": True, "targets": "independent"}, {"center": True})):
        with pytest.raises(RuntimeError, match="stop here"):
            experiment.build_run(RunConfig.from_dict({**small, **overrides}), progress=False)
        assert seen["head"] == head_kwargs
        assert seen["targets"] == overrides.get("targets", "nested")


# ---------------------------------------------------------------- results schema


def test_codes_round_trip_and_column_check(tmp_path):
    rng = np.random.default_rng(0)
    query, db = rng.standard_normal((5, 32)), rng.standard_normal((9, 32))
    labels_q, labels_db = np.eye(3)[rng.integers(0, 3, 5)], np.eye(3)[rng.integers(0, 3, 9)]
    results.write_codes(tmp_path, query, db, labels_q, labels_db, (8, 16, 32))
    qc, dc, ql, dl, lengths = results.read_codes(tmp_path)
    assert lengths == (8, 16, 32)
    assert np.array_equal(qc, np.packbits(query > 0, axis=1)) and np.array_equal(dc, np.packbits(db > 0, axis=1))
    assert np.array_equal(ql, labels_q) and dl.dtype == np.uint8
    import pandas as pd

    with pytest.raises(KeyError, match=r"metrics lacks column\(s\) \['seed'\]"):
        results.require_columns(pd.DataFrame(columns=["run_id"]), ["run_id", "seed"], "metrics")
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        results.require_columns([], ["run_id"], "metrics")


# ---------------------------------------------------------------- weighting and the step


class Halves(WeightingStrategy):
    """A strategy the training step has never heard of."""

    def __call__(self, objectives, shared_weight, codes=None, features=None, *, linear_grads=None,
                 reduce_gradients=None, state=FIRST_STEP):
        return WeightingResult(torch.full((objectives.shape[0],), 0.5, device=objectives.device),
                               state=state.advanced())


def _tiny_step_inputs():
    from nhllib.core.model import HashingModel
    from nhllib.core.nested import NestedHashLayer

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU())
    backbone.out_features = 5
    model = HashingModel(backbone, NestedHashLayer(5, (4, 8)))

    class Loss(torch.nn.Module):
        def forward(self, code, labels, index):
            return ((code - labels[:, : code.shape[1]]) ** 2).mean()

        def set_epoch(self, epoch):
            pass

    batch = (torch.randn(7, 6), torch.randn(7, 8).sign(), torch.arange(7))
    return model, [Loss(), Loss()], batch


@pytest.mark.parametrize("make", [Uniform, lambda: Static([2.0, 1.0]), lambda: ConflictAware((4, 8)), Halves])
def test_one_step_path_for_any_weighting(make):
    """train_step gives the gradient of Σ w_k O_k, whatever the strategy and wherever its backward starts."""
    from nhllib.training.train import _objectives, train_step

    model, losses, batch = _tiny_step_inputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the gradients to compare
    objectives, outcome = train_step(model, losses, batch, optimizer, make(), 0.0)
    step_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    again, _, _ = _objectives(model, losses, batch, 0.0)
    (outcome.weights * again).sum().backward()
    for got, want in zip(step_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert torch.equal(objectives, again.detach())


def test_backward_inputs_start_at_the_codes_only_when_unscaled():
    codes = [torch.randn(3, 4, requires_grad=True), torch.randn(3, 8, requires_grad=True)]
    objectives = torch.stack([c.sum() for c in codes])
    grads = (torch.ones(3, 4), torch.ones(3, 8))
    outcome = WeightingResult(torch.tensor([2.0, 3.0]), None, grads)
    tensors, seeds = outcome.backward_inputs(objectives, codes)
    assert tensors[0] is codes[0] and torch.equal(seeds[1], 3 * grads[1])
    tensors, seeds = outcome.backward_inputs(objectives, codes, scale=lambda t: t * 1024)
    assert tensors == [objectives] and torch.equal(seeds[0], torch.tensor([2048.0, 3072.0]))


# ---------------------------------------------------------------- private APIs


def test_int8_product_fallback_gives_the_same_map(monkeypatch):
    torch.manual_seed(0)
    query = {8: torch.randn(40, 8).sign(), 16: torch.randn(40, 16).sign()}
    query[16][:, :8] = query[8]
    db = {8: torch.randn(300, 8).sign(), 16: torch.randn(300, 16).sign()}
    db[16][:, :8] = db[8]
    labels_q = torch.eye(4)[torch.randint(0, 4, (40,))]
    labels_db = torch.eye(4)[torch.randint(0, 4, (300,))]
    fast = evaluate.evaluate_nested(query, labels_q, db, labels_db)
    monkeypatch.setattr(evaluate, "int8_matmul", lambda: None)
    assert not evaluate._int8_product_available(torch.device("cpu"))
    assert evaluate.evaluate_nested(query, labels_q, db, labels_db) == fast


def test_int8_probe_rejects_a_missing_or_wrong_op(monkeypatch):
    from nhllib import compat

    compat.int8_matmul.cache_clear()
    try:
        monkeypatch.delattr(torch, "_int_mm", raising=False)
        assert compat.int8_matmul() is None
        compat.int8_matmul.cache_clear()
        monkeypatch.setattr(torch, "_int_mm", lambda a, b: torch.zeros(a.shape[0], b.shape[1], dtype=torch.int32),
                            raising=False)
        assert compat.int8_matmul() is None
    finally:
        monkeypatch.undo()
        compat.int8_matmul.cache_clear()


def test_the_layout_1_field_list_is_the_stored_one():
    from nhllib.training.config import _LAYOUT_1_FIELDS

    assert _LAYOUT_1_FIELDS == set(LAYOUT_1)
