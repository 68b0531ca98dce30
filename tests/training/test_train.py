"""End-to-end checks of the training engine on a tiny synthetic Fashion-MNIST split (CPU, seconds)."""

import math

import pandas as pd
import pytest
import torch

from nhllib.store.results import RunExistsError, RunStore, load_results
from nhllib.training.config import RunConfig
from nhllib.training.experiment import build_run, run_experiment
from nhllib.training.train import NonFiniteLossError, fit



def test_single_length_and_nested_runs_write_complete_folders(tmp_path, tiny_config):
    single = run_experiment(tiny_config(variant="separate", code_lengths=(16,), method="dsh"), tmp_path,
                            progress=False)
    nested = run_experiment(tiny_config(variant="nhl", code_lengths=(8, 16, 32), method="dsh"), tmp_path,
                            progress=False)
    for run_dir in (single, nested):
        names = {p.name for p in run_dir.iterdir()}
        assert {"config.json", "history.csv", "metrics.csv", "curves.csv", "timing.json", "codes.npz",
                "COMPLETE"} <= names
    assert (nested / "conflicts.csv").is_file() and not (single / "conflicts.csv").exists()
    metrics = load_results(tmp_path, "t")
    per_length = metrics.dropna(subset=["code_length"])
    assert set(per_length.query("variant == 'separate'").code_length) == {16}
    assert set(per_length.query("variant == 'nhl'").code_length) == {8, 16, 32}
    maps = per_length.query("metric == 'map'")
    assert len(maps) == 4 and maps.value.between(0, 1).all()
    # the tie bounds bracket the expectation for every length
    wide = per_length.pivot_table(index=["run_id", "code_length"], columns="metric", values="value")
    assert (wide.map_optimistic >= wide.map_expected - 1e-9).all()
    assert (wide.map_expected >= wide.map_pessimistic - 1e-9).all()
    run_level = metrics[metrics.code_length.isna()].set_index(["run_id", "metric"]).value
    assert run_level[(single.name, "epochs_run")] == 2
    assert run_level[(nested.name, "train_time_s")] > 0
    conflicts = pd.read_csv(nested / "conflicts.csv")
    assert set(zip(conflicts.short_length, conflicts.long_length)) == {(8, 16), (8, 32), (16, 32)}
    assert conflicts.conflict_rate.between(0, 1).all() and (conflicts.epoch.max() == 2)
    history = pd.read_csv(nested / "history.csv")
    weights = history.query("metric == 'weight'").groupby("epoch").value.sum()
    assert weights.round(6).eq(3.0).all()  # applied conflict weights sum to K every epoch


def test_complete_run_is_kept_and_incomplete_redone(tmp_path, tiny_config):
    cfg = tiny_config(variant="nhl-plain", code_lengths=(8, 16), epochs=1)
    run_dir = run_experiment(cfg, tmp_path, progress=False)
    marker = (run_dir / "COMPLETE").read_text()
    with pytest.raises(RunExistsError):
        run_experiment(cfg, tmp_path, progress=False)
    assert (run_dir / "COMPLETE").read_text() == marker
    # simulate a killed run: the marker is missing, a stale file lies there
    (run_dir / "COMPLETE").unlink()
    (run_dir / "metrics.csv").write_text("garbage")
    assert RunStore(tmp_path, "t", cfg.run_id).state == "incomplete"
    run_experiment(cfg, tmp_path, progress=False)
    assert RunStore(tmp_path, "t", cfg.run_id).state == "complete"
    assert "garbage" not in (run_dir / "metrics.csv").read_text()


def test_same_seed_same_metrics(tmp_path, tiny_config):
    cfg = tiny_config(variant="nhl", code_lengths=(8, 16), method="csq")
    first = run_experiment(cfg, tmp_path / "a", progress=False)
    second = run_experiment(cfg, tmp_path / "b", progress=False)
    a = pd.read_csv(first / "metrics.csv").query("metric == 'map'").value.tolist()
    b = pd.read_csv(second / "metrics.csv").query("metric == 'map'").value.tolist()
    assert a == b
    other = run_experiment(tiny_config(variant="nhl", code_lengths=(8, 16), method="csq", seed=1),
                           tmp_path / "c", progress=False)
    assert pd.read_csv(other / "metrics.csv").query("metric == 'map'").value.tolist() != a


def test_nan_loss_stops_with_epoch_step_and_length(tiny_config, monkeypatch):
    import nhllib.training.train as train_module

    built = build_run(tiny_config(variant="nhl-plain", code_lengths=(8, 16)), progress=False)
    original = train_module.per_length_losses
    calls = {"n": 0}

    def poisoned(losses, codes, y, index):
        calls["n"] += 1
        values = original(losses, codes, y, index)
        return values * torch.tensor([1.0, math.nan]) if calls["n"] == 3 else values

    monkeypatch.setattr(train_module, "per_length_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2: code length 16 -> nan"):
        built.fit()


def test_heads_variant_has_separate_heads_and_no_conflict_log(tmp_path, tiny_config):
    run_dir = run_experiment(tiny_config(variant="heads", code_lengths=(8, 16), epochs=1), tmp_path,
                             progress=False)
    assert not (run_dir / "conflicts.csv").exists()
    built = build_run(tiny_config(variant="heads", code_lengths=(8, 16)), progress=False)
    assert built.model.shared_weight is None


def test_distillation_and_weighting_switches(tiny_config):
    on = build_run(tiny_config(variant="nhl", code_lengths=(8, 16), distill_weight=0.5), progress=False)
    off = build_run(tiny_config(variant="nhl-weight", code_lengths=(8, 16), distill_weight=0.5), progress=False)
    assert on.plan.distill_weight == 0.5 and off.plan.distill_weight == 0.0
    assert on.weighting.apply and off.weighting.apply
    plain = build_run(tiny_config(variant="nhl-plain", code_lengths=(8, 16)), progress=False)
    assert not plain.weighting.apply  # monitored, not applied
    torch.manual_seed(0)


def test_failed_run_leaves_no_partial_results(tmp_path, tiny_config, monkeypatch):
    import nhllib.training.experiment as experiment

    def broken_fit(*args, **kwargs):
        raise NonFiniteLossError("non-finite objective at epoch 1, step 0: code length 8 -> nan")

    monkeypatch.setattr(experiment, "fit", broken_fit)
    cfg = tiny_config(variant="nhl-plain", code_lengths=(8, 16))
    with pytest.raises(NonFiniteLossError):
        run_experiment(cfg, tmp_path, progress=False)
    assert RunStore(tmp_path, "t", cfg.run_id).state == "absent"
    assert load_results(tmp_path).empty


def test_missing_dataset_names_the_options_and_writes_nothing(tmp_path, tiny_config, monkeypatch):
    monkeypatch.delenv("NHL_DATA_DIR", raising=False)
    cfg = tiny_config(dataset="cifar10")
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        run_experiment(cfg, tmp_path / "results", progress=False)
    assert not (tmp_path / "results").exists()


def test_backward_from_codes_equals_backward_through_losses(tiny_config):
    """train_epoch's shortcut (backward started at the codes) gives the same parameter gradients."""
    from nhllib.training.train import _objectives

    built = build_run(tiny_config(variant="nhl", code_lengths=(8, 16, 32), method="dsh"), progress=False)
    batch = next(iter(built.data.train))
    objectives, codes, features = _objectives(built.model, built.losses, batch, 1.0)
    outcome = built.weighting(objectives, built.model.shared_weight, codes=codes, features=features)
    weights = outcome.weights
    torch.autograd.backward(*outcome.backward_inputs(objectives, codes), retain_graph=True)
    shortcut = [p.grad.clone() for p in built.model.parameters()]
    built.model.zero_grad(set_to_none=True)
    (weights * objectives).sum().backward()
    for fast, full in zip(shortcut, (p.grad for p in built.model.parameters())):
        assert torch.allclose(fast, full, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("center", [False, True])
def test_conflict_weighting_sees_the_true_gradients_of_a_centred_head(center):
    # With code centring the codes are not f Wᵀ + b, so the weighting's shortcut through ∂O_k/∂h_k would be wrong;
    # the step must hand it what gives each length's true gradient of the shared weight.
    from torch import nn

    from nhllib.core.losses import build_losses
    from nhllib.core.model import HashingModel
    from nhllib.core.nested import NestedHashLayer
    from nhllib.training.train import train_step
    from nhllib.core.weighting import ConflictAware

    torch.manual_seed(0)
    lengths = (4, 8, 16)
    backbone = nn.Sequential(nn.Linear(12, 10), nn.ReLU())
    backbone.out_features = 10
    model = HashingModel(backbone, NestedHashLayer(10, lengths, center=center))
    losses = build_losses("dch", lengths, 3, 32, nested=True)
    x, index = torch.randn(16, 12), torch.arange(16)
    y = torch.eye(3)[torch.arange(16) % 3]
    # Reference: every length's gradient of the shared weight by autograd, then the rule.
    codes = model(x)
    objectives = torch.stack([loss(u, y, index) for loss, u in zip(losses, codes)])
    grads = [torch.autograd.grad(o, model.shared_weight, retain_graph=True)[0] for o in objectives]
    expected_weights, expected_stats = ConflictAware(lengths, apply=True)._rule(grads)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _, outcome = train_step(model, losses, (x, y, index), optimizer, ConflictAware(lengths, apply=True), 0.0)
    torch.testing.assert_close(outcome.stats.dot, expected_stats.dot, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(outcome.weights, expected_weights)


def test_untrained_reference_is_the_initialised_network_evaluated_once(tmp_path, tiny_config):
    from nhllib.training.experiment import build_run
    from nhllib.training.train import evaluate_model

    cfg = tiny_config(variant="untrained", code_lengths=(8, 16))
    expected = evaluate_model(build_run(cfg, progress=False).model, build_run(cfg, progress=False).data,
                              torch.device("cpu"), None, "expected")
    run_dir = run_experiment(cfg, tmp_path, progress=False)
    metrics = load_results(tmp_path, "t")
    run_level = metrics[metrics["code_length"].isna()].set_index("metric")["value"]
    assert run_level["epochs_run"] == 0 and run_level["train_steps"] == 0 and run_level["train_time_s"] == 0
    per_length = metrics.dropna(subset=["code_length"]).set_index(["metric", "code_length"])["value"]
    for length in (8, 16):
        assert per_length[("map", length)] == pytest.approx(expected["query"][length])
        assert per_length[("val_map", length)] == pytest.approx(expected["validation"][length])
    history = pd.read_csv(run_dir / "history.csv")
    assert set(history["epoch"]) == {0} and "objective" not in set(history["metric"])


def test_the_optimizer_is_chosen_by_configuration():
    from nhllib.training.config import TrainingConfig
    from nhllib.training.optimizers import OPTIMIZERS, build_optimizer
    from nhllib.vocab import OPTIMIZERS as NAMES

    assert tuple(OPTIMIZERS) == NAMES  # the configuration validates against the names the registry builds
    assert TrainingConfig().optimizer == "adam"  # the default every committed result used
    model = torch.nn.Linear(3, 2)
    for name, cls in OPTIMIZERS.items():
        optimizer = build_optimizer(model, name, lr=0.1, weight_decay=0.0)
        assert type(optimizer) is cls and optimizer.defaults["lr"] == 0.1
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainingConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, "rmsprop", lr=0.1, weight_decay=0.0)
