"""Pool-pretrained backbones (trained once, cached, reused), frozen backbones, the backbone learning rate."""

import json

import pytest
import torch

from nhllib.training import pretrain
from nhllib.training import train as train_module
from nhllib.training.config import RunConfig
from nhllib.training.experiment import build_run, run_experiment
from nhllib.training.optimizers import FrozenBackbone, build_optimizer, parameter_groups
from nhllib.training.parameters import train_parameters

TINY = dict(query_per_class=3, train_per_class=12, val_per_class=3, database_per_class=20, epochs=2,
            eval_every=1, patience=0, batch_size=16, eval_batch_size=128, device="cpu", study="t", backbone="mlp",
            method="csq", variant="nhl", code_lengths=(8, 16))


@pytest.fixture()
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_dir, **overrides):
    return RunConfig.from_dict({**TINY, "data_dir": data_dir, **overrides})


def _entries(data_dir):
    root = pretrain.cache_root(data_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_a_cached_backbone_is_reused_not_retrained(data_dir, tmp_path, monkeypatch):
    cfg = tiny(data_dir, pretrained="pool-in-domain", pretrain_recipe="smoke")
    first = build_run(cfg, progress=False)
    (entry,) = _entries(data_dir)
    record = json.loads((entry / "pretrain.json").read_text())
    assert record["spec"]["labels"] == "in-domain" and record["spec"]["recipe"] == "smoke"
    assert 0 <= record["probe_accuracy"] <= 1 and record["pool"]["images"] == 10 * 20  # smoke: 20 per class
    assert "versions" in record and "started" in record and "finished" in record

    calls = []
    monkeypatch.setattr(pretrain, "_train", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("a cached backbone was trained again")))
    second = build_run(cfg, progress=False)  # another run naming the same entry, e.g. another method or seed
    other = build_run(cfg.updated(method="dsh", seed=1), progress=False)
    assert not calls and _entries(data_dir) == [entry]
    for built in (second, other):
        for a, b in zip(first.model.backbone.state_dict().values(), built.model.backbone.state_dict().values()):
            assert torch.equal(a, b)
    # the entry's weights are the ones pretraining wrote, not a random initialisation
    saved = torch.load(entry / "backbone.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in second.model.backbone.state_dict().items())
    scratch = build_run(cfg.updated(pretrained=False), progress=False)
    assert not torch.equal(scratch.model.backbone.state_dict()["net.1.weight"], saved["net.1.weight"])


def test_each_label_set_recipe_and_seed_is_its_own_entry_and_the_run_seed_stream_is_untouched(data_dir):
    a = build_run(tiny(data_dir, pretrained="pool-in-domain", pretrain_recipe="smoke"), progress=False)
    b = build_run(tiny(data_dir, pretrained="pool-coarse", pretrain_recipe="smoke"), progress=False)
    build_run(tiny(data_dir, pretrained="pool-coarse", pretrain_recipe="smoke", pretrain_seed=1), progress=False)
    assert len(_entries(data_dir)) == 3
    # the hash layer starts the same whichever weights the backbone got (and whether they were trained now)
    scratch = build_run(tiny(data_dir), progress=False)
    for built in (a, b):
        for x, y in zip(scratch.model.head.parameters(), built.model.head.parameters()):
            assert torch.equal(x, y)


def test_with_the_frozen_option_the_backbone_is_bit_identical_after_training(data_dir, tmp_path):
    cfg = tiny(data_dir, pretrained="pool-in-domain", pretrain_recipe="smoke", freeze_backbone=True)
    built = build_run(cfg, progress=False)
    assert isinstance(built.model.backbone, FrozenBackbone)
    before = {k: v.clone() for k, v in built.model.backbone.state_dict().items()}
    head_before = [p.detach().clone() for p in built.model.head.parameters()]
    result = built.fit()
    assert result.train_steps > 0
    after = built.model.backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, built.model.head.parameters()))  # the head trains


def test_the_frozen_option_also_keeps_batch_norm_statistics(data_dir):
    built = build_run(tiny(data_dir, backbone="cnn", freeze_backbone=True), progress=False)
    before = {k: v.clone() for k, v in built.model.backbone.state_dict().items()}
    built.fit()
    assert any("running_mean" in k for k in before)
    assert all(torch.equal(v, built.model.backbone.state_dict()[k]) for k, v in before.items())


def test_the_learning_rate_multiplier_reaches_the_optimizers_parameter_groups(data_dir, monkeypatch):
    built = build_run(tiny(data_dir, lr=2e-3, backbone_lr_mult=0.05), progress=False)
    seen = []

    def spy(*args, **kwargs):  # the optimizer fit builds, kept for a look at its groups
        optimizer = build_optimizer(*args, **kwargs)
        seen.append(optimizer)
        return optimizer

    monkeypatch.setattr(train_module, "build_optimizer", spy)
    built.fit()
    (optimizer,) = seen
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(2e-3 * 0.05) and groups["head"]["lr"] == pytest.approx(2e-3)
    backbone_ids = {id(p) for p in built.model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone_ids
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in built.model.head.parameters()}


def test_default_groups_are_the_plain_parameters_and_frozen_groups_hold_the_head_only(data_dir):
    built = build_run(tiny(data_dir), progress=False)
    groups = parameter_groups(built.model, built.config.training)
    assert [id(p) for p in groups] == [id(p) for p in built.model.parameters()]
    frozen = build_run(tiny(data_dir, freeze_backbone=True), progress=False)
    (group,) = parameter_groups(frozen.model, frozen.config.training)
    assert {id(p) for p in group["params"]} == {id(p) for p in frozen.model.head.parameters()}
    with pytest.raises(ValueError, match="not a FrozenBackbone"):
        parameter_groups(built.model, frozen.config.training)


def test_new_fields_leave_existing_run_ids_alone_and_enter_them_when_set(data_dir):
    plain = tiny(data_dir)
    same = tiny(data_dir, pretrained=False, pretrain_recipe="default", pretrain_seed=0, backbone_lr_mult=1.0,
                freeze_backbone=False)
    assert plain.run_id == same.run_id
    ids = {plain.run_id} | {tiny(data_dir, **change).run_id for change in (
        dict(pretrained="pool-in-domain"), dict(pretrained="pool-coarse"), dict(backbone_lr_mult=0.1),
        dict(freeze_backbone=True), dict(pretrained="pool-coarse", pretrain_seed=1))}
    assert len(ids) == 6
    assert tiny(data_dir, pretrained=True).run_id != tiny(data_dir, pretrained="imagenet").run_id  # kept as given


@pytest.mark.parametrize("change, message", [
    (dict(pretrained="pool-fine"), "pretrained must be True or False, got 'pool-fine'; or the name of a weight source"),
    (dict(pretrained="no"), "pretrained must be True or False"),
    (dict(pretrain_recipe="long"), "pretrain_recipe must be one of"),
    (dict(backbone_lr_mult=0), "backbone_lr_mult must be"),
    (dict(freeze_backbone="yes"), "freeze_backbone must be True or False"),
])
def test_bad_values_are_refused_by_name(data_dir, change, message):
    with pytest.raises(ValueError, match=message):
        tiny(data_dir, **change)


def test_the_notebook_takes_a_weight_source_name_and_still_refuses_other_strings():
    names = {**{k: v for k, v in TINY.items()}, "code_lengths": [8, 16]}
    params = train_parameters({**names, "pretrained": "pool-coarse"}, ())
    assert params.config.model.pretrained == "pool-coarse"
    assert train_parameters({**names, "pretrained": "false"}, ()).config.model.pretrained is False
    with pytest.raises(ValueError, match="pretrained must be True or False"):
        train_parameters({**names, "pretrained": "yes"}, ())


def test_a_second_trainer_waits_for_the_lock_then_reads_the_entry(data_dir, monkeypatch):
    from nhllib.store.locks import FolderLock

    cfg = tiny(data_dir, pretrained="pool-coarse", pretrain_recipe="smoke")
    built = build_run(cfg, progress=False)  # writes the entry
    (entry,) = _entries(data_dir)
    (entry / "pretrain.json").rename(entry / "moved.json")  # incomplete again
    spec = pretrain.pretrain_spec(cfg, built.data.in_channels, built.data.image_size)
    with FolderLock(entry, "pretraining"):
        # the holder (this process, seen as another holder through a second lock object) never finishes: time out
        with pytest.raises(Exception, match="locked|held|pid"):
            pretrain.ensure_pretrained(spec, built.data, lock_wait_s=0)
    (entry / "moved.json").rename(entry / "pretrain.json")
    assert not pretrain.ensure_pretrained(spec, built.data).trained_now


def test_the_pretrain_command_writes_each_backbones_probe_accuracy(data_dir, tmp_path):
    """``python -m nhllib.study.pretrain PROFILE --csv PATH``: one row per pool-pretrained backbone of the profile,
    with the probe accuracy its cache entry records (what the README's regimes section cites)."""
    import pandas as pd
    import yaml

    from nhllib.study import pretrain as pretrain_command

    defaults = {k: v for k, v in TINY.items() if k not in ("study", "code_lengths")}
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "study": "p", "defaults": {**defaults, "data_dir": data_dir, "pretrain_recipe": "smoke", "code_lengths": [8, 16]},
        "grid": [{"pretrained": "pool-in-domain"}, {"pretrained": "pool-coarse"}, {"pretrained": False}]}))
    out = tmp_path / "tables" / "pretrained_backbones.csv"
    assert pretrain_command.main([str(profile), "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(table["labels"]) == ["coarse", "in-domain"] and set(table["backbone"]) == {"mlp"}
    for row in table.itertuples():
        record = json.loads((pretrain.cache_root(data_dir) / row.name / "pretrain.json").read_text())
        assert row.probe_accuracy == pytest.approx(record["probe_accuracy"])
        assert row.pool_images == record["pool"]["images"]
