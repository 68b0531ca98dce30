"""The fed device: a run builds its in-memory batches on its own device, and they are today's batches.

Before, ``build_run`` loaded the data on the CPU and ``train_epoch`` copied every finished batch to the device;
now the uint8 images move to the run's device once and each batch is gathered, resized and normalised there.
On a CPU the two paths must give the same batches bit for bit (on a GPU, the same up to float rounding of the
resize, which gpu_check's real run exercises). Also: the timing helper that bench_feed and gpu_check share.
"""

from __future__ import annotations

import pytest
import torch

from nhllib.data import InMemoryLoader, load_data
from nhllib.training.config import RunConfig
from nhllib.training.experiment import build_run
from nhllib.training.feed_timing import LoopedBatches, feed_and_step_times

TINY = dict(study="t", dataset="fashion-mnist", query_per_class=3, train_per_class=10, val_per_class=3,
            database_per_class=6, batch_size=16, eval_batch_size=32, method="csq", variant="nhl",
            code_lengths=(8, 16), device="cpu", seed=4)


@pytest.mark.parametrize("image_size", [None, 40])  # native 28 px, and the resize + 3-channel (ImageNet) path
def test_device_side_batches_equal_todays_batches_bit_for_bit(tmp_path, image_size):
    cfg = RunConfig.from_dict({**TINY, "data_dir": str(tmp_path / "data"), "image_size": image_size,
                               "backbone": "cnn"})
    built = build_run(cfg, progress=False)
    today = load_data(cfg.data, shuffle_seed=cfg.seed)  # the earlier path: batches made on the CPU ...
    for part in ("train", "validation", "query", "database"):
        fed = getattr(built.data, part)
        assert isinstance(fed, InMemoryLoader) and fed.device == built.device, f"{part} is not on the run's device"
        for epoch in range(2 if part == "train" else 1):
            pairs = list(zip(fed, getattr(today, part), strict=True))
            assert pairs, part
            for (x, y, i), (x0, y0, i0) in pairs:
                x0, y0, i0 = (t.to(built.device) for t in (x0, y0, i0))  # ... then copied by train_epoch
                assert x.device == built.device and x.dtype == x0.dtype == torch.float32
                assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(i, i0), (part, epoch)
    assert built.data.image_size == (image_size or 28) and built.data.in_channels == (3 if image_size else 1)


def test_build_run_asks_for_the_data_on_the_runs_device(tmp_path, monkeypatch):
    """On a CPU both paths are one, so the request itself is checked: a GPU run gets its batches made there."""
    import nhllib.training.experiment as E

    asked = []

    def spy(config, **options):
        asked.append(options.get("device"))
        return load_data(config, **options)

    monkeypatch.setattr(E, "load_data", spy)
    built = build_run(RunConfig.from_dict({**TINY, "data_dir": str(tmp_path / "data"), "backbone": "mlp"}))
    assert asked == [built.device]


def test_looped_batches_restart_epochs_and_stop_at_the_count():
    loader = InMemoryLoader(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.eye(5), batch_size=2)
    batches = list(LoopedBatches(loader, 7))
    assert len(batches) == 7 and [len(i) for _, _, i in batches] == [2, 2, 1, 2, 2, 1, 2]
    assert loader.epoch == 3
    with pytest.raises(ValueError, match="steps must be positive"):
        LoopedBatches(loader, 0)
    with pytest.raises(ValueError, match="yielded no batch"):
        list(LoopedBatches([], 1))


def test_feed_and_step_times_reports_a_real_step(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "data_dir": str(tmp_path / "data"), "backbone": "mlp", "amp": True})
    numbers = feed_and_step_times(cfg, steps=3, warmup=1)
    assert numbers["amp_active"] is False and numbers["peak_memory_gib"] is None and numbers["device"] == "cpu"
    assert 0 < numbers["build_s"] < numbers["step_s"] and numbers["images_per_s"] == 16 / numbers["step_s"]
    assert numbers["code_lengths"] == [8, 16] and numbers["image_size"] == 28
