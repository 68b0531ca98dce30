"""How fast a real run feeds and trains: ``load_data`` -> ``train_step``, and the batch building on its own.

Used by ``benchmarks/bench_feed.py`` (CPU, now) and ``benchmarks/gpu_check.py`` (the first GPU). A run is built
exactly as a study builds it (:func:`nhllib.training.experiment.build_run`: the data on the run's device, the model,
the per-length losses, the weighting), then timed two ways over the same number of batches:

- ``build_s``: iterating the training loader alone (gather, resize, normalise; for list files, decoding);
- ``step_s``: the training loop itself (:func:`nhllib.training.train.train_epoch`: batch building, the copy to the
  device and ``train_step``), per batch.

``feed_share = build_s / step_s`` is the part of a step spent making its batch (near 0: the device is fed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import torch

from nhllib.training.config import RunConfig
from nhllib.utils import amp_active, synchronize

__all__ = ["LoopedBatches", "feed_and_step_times", "peak_memory_gib"]

logger = logging.getLogger(__name__)


class LoopedBatches:
    """Exactly ``steps`` batches from ``loader``, starting new epochs as needed."""

    def __init__(self, loader: Iterable, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be positive, got {steps}")
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        done = 0
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
                done += 1
                if done == self.steps:
                    return
            if empty:
                raise ValueError("the loader yielded no batch")


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak memory allocated by torch on ``device`` since the last reset, in GiB; None where not measured (CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def feed_and_step_times(cfg: RunConfig, steps: int, warmup: int = 2) -> dict:
    """Build ``cfg``'s run as a study does, then time ``steps`` batches: building alone, and the training loop.

    Returns the build and step seconds per batch, images/s of the loop, the feed share, whether AMP was in
    effect and the peak device memory of the loop (None on CPU).
    """
    from nhllib.training.experiment import build_run
    from nhllib.training.train import train_epoch

    built = build_run(cfg, progress=False)
    device = built.device
    model, losses = built.model.to(device), [loss.to(device) for loss in built.losses]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    amp = amp_active(cfg.training.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp else None

    def build(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for batch in LoopedBatches(built.data.train, n):
            for tensor in batch:
                tensor.to(device, non_blocking=True)
        synchronize(device)
        return (time.perf_counter() - start) / n

    def train(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        train_epoch(model, losses, LoopedBatches(built.data.train, n), optimizer, built.weighting, 1, device,
                    distill_weight=built.plan.distill_weight, scaler=scaler)
        synchronize(device)
        return (time.perf_counter() - start) / n

    if warmup:
        train(warmup)  # cuDNN autotuning, the allocator, lazy initialisation
        build(min(warmup, steps))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = train(steps)
    peak = peak_memory_gib(device)
    build_s = build(steps)
    batch = cfg.data.batch_size
    return {"backbone": cfg.model.backbone, "dataset": cfg.data.dataset, "image_size": built.data.image_size,
            "batch": batch, "code_lengths": list(cfg.model.code_lengths), "variant": cfg.hashing.variant,
            "steps": steps, "amp_active": amp, "device": str(device), "build_s": build_s, "step_s": step_s,
            "images_per_s": batch / step_s, "feed_share": build_s / step_s, "peak_memory_gib": peak}
