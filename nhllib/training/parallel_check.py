"""The data-parallel contract, checked: N ranks with B/N images each against one process with B.

:func:`compare_with_single_process` spawns ``world_size`` ranks (gloo on CPU, NCCL on one GPU per rank), trains a
tiny nested model in each through the library's training step with the full method (conflict weighting applied,
distillation on), trains the same model in this process on the whole batches, and returns the largest absolute
differences of the parameters and batch-norm statistics, the applied loss weights, the conflict rule's gradient
inner products (relative to each step's largest) and the losses' buffers (memory banks). The test suite runs it
on CPU (``tests/training/test_distributed.py``); ``benchmarks/gpu_check.py`` on two GPUs.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from nhllib.core.weighting import FIRST_STEP, ConflictAware

__all__ = ["tiny_training", "compare_with_single_process", "NUM_TRAIN", "BATCH", "LENGTHS"]

LENGTHS = (4, 8, 16)
CLASSES = 3
NUM_TRAIN, BATCH = 27, 8  # three full batches and one of 3, so two ranks get unequal shares (2 and 1)
EPOCHS = 2
# A strong distillation and a low conflict threshold make the rule scale weights within these 8 steps, so that
# the applied weights are compared where they are not all ones.
DISTILL_WEIGHT, BETA = 20.0, 1e-3


class RecordingConflictAware(ConflictAware):
    """ConflictAware that keeps, per step, the weights it returned and the inner products the rule saw."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[torch.Tensor] = []
        self.dots: list[torch.Tensor] = []

    def __call__(self, *args, **kwargs):
        result = super().__call__(*args, **kwargs)
        self.applied.append(result.weights.detach().cpu().clone())
        self.dots.append(result.stats.dot.detach().cpu().clone())
        return result


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Random images with random multi-hot labels: their per-length gradients conflict now and then."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_TRAIN, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = (torch.rand(NUM_TRAIN, CLASSES, generator=g) < 0.5).float()
    labels[labels.sum(1) == 0, 0] = 1
    return images, labels


def _model():
    from nhllib.training.backbones import SmallCNN
    from nhllib.core.model import HashingModel
    from nhllib.core.nested import NestedHashLayer

    torch.manual_seed(0)
    return HashingModel(SmallCNN(1, (4, 4, 8)), NestedHashLayer(8, LENGTHS))


def tiny_training(method: str, device: torch.device | str = "cpu", ctx=None) -> dict:
    """Train the tiny nested model for two epochs; ``ctx`` (a :class:`~nhllib.training.distributed.DistContext` of an
    initialised group) makes it this rank's share of a data-parallel run. Returns CPU copies of the model state,
    the applied weights, the rule's inner products and the losses' buffers."""
    from nhllib.data.loader import InMemoryLoader
    from nhllib.training.distributed import DataParallel, convert_sync_batchnorm
    from nhllib.core.losses import build_losses
    from nhllib.training.train import train_epoch

    device = torch.device(device)
    model = _model().to(device)
    losses = [loss.to(device) for loss in build_losses(method, LENGTHS, CLASSES, NUM_TRAIN, nested=True, seed=0)]
    images, labels = _data()
    loader = InMemoryLoader(images, labels, BATCH, shuffle=True, seed=3, device=device)
    weighting = RecordingConflictAware(LENGTHS, beta=BETA)
    parallel = None
    if ctx is not None and ctx.enabled:
        model = convert_sync_batchnorm(model, device)
        parallel = DataParallel(model, ctx)
        loader = loader.sharded(ctx.rank, ctx.world_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    state = FIRST_STEP
    for epoch in range(1, EPOCHS + 1):
        _, state = train_epoch(model, losses, loader, optimizer, weighting, epoch, device,
                               distill_weight=DISTILL_WEIGHT, parallel=parallel, state=state)
    return {
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "weights": torch.stack(weighting.applied),
        "dots": torch.stack(weighting.dots),
        "buffers": {f"{k}.{name}": b.detach().cpu().clone() for k, loss in enumerate(losses)
                    for name, b in loss.named_buffers()},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, device_type: str, methods: Sequence[str], out: str) -> None:
    from nhllib.training.distributed import process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    _exact_math()
    if device_type == "cpu":
        torch.set_num_threads(1)
    device = "cpu" if device_type == "cpu" else f"cuda:{rank}"
    with process_group(device=device) as ctx:
        results = {method: tiny_training(method, ctx.device, ctx) for method in methods}
    torch.save(results, Path(out) / f"rank{rank}.pt")


def _exact_math() -> None:
    # TF32 convolutions (on by default) would make the comparison one of TF32 rounding, not of the contract.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _max_diff(a: dict, b: dict, relative: bool = False) -> float:
    """Largest absolute difference over matching entries (each relative to the entry's largest value)."""
    if a.keys() != b.keys():
        raise ValueError(f"different entries: {sorted(set(a) ^ set(b))}")
    diffs = []
    for k in a:
        diff = (a[k].double() - b[k].double()).abs().max()
        diffs.append((diff / b[k].double().abs().max().clamp_min(1e-30) if relative else diff).item())
    return max(diffs, default=0.0)


def compare_with_single_process(methods: Sequence[str] = ("csq", "dsh", "dtsh"), world_size: int = 2,
                                device_type: str = "cpu") -> dict[str, list[dict[str, float]]]:
    """Spawn ``world_size`` ranks, train, and compare each rank with one process; ``{method: [per rank]}``.

    Each entry holds ``state``, ``weights``, ``dots`` and ``buffers`` (the last two relative to their largest
    value): largest absolute differences;
    ``trained`` (how far training moved the single-process model) and ``damped_steps`` (steps whose weights the
    rule scaled) show that the comparison is not empty.
    """
    import torch.multiprocessing as mp

    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device_type must be 'cpu' or 'cuda', got {device_type!r}")
    if device_type == "cuda" and torch.cuda.device_count() < world_size:
        raise ValueError(f"{world_size} ranks need {world_size} GPUs, found {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_rank_main, args=(world_size, _free_port(), device_type, tuple(methods), out),
                           nprocs=world_size, join=True, start_method="spawn")
        ranks = [torch.load(Path(out) / f"rank{r}.pt") for r in range(world_size)]
    _exact_math()
    device = "cpu" if device_type == "cpu" else "cuda:0"
    initial = dict(_model().named_parameters())
    report: dict[str, list[dict[str, float]]] = {}
    for method in methods:
        single = tiny_training(method, device)
        scale = single["dots"].abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        report[method] = [{
            "state": _max_diff(got["state"], single["state"]),
            "weights": (got["weights"] - single["weights"]).abs().max().item(),
            "dots": ((got["dots"] - single["dots"]) / scale).abs().max().item(),
            "buffers": _max_diff(got["buffers"], single["buffers"], relative=True),
            "trained": _max_diff({k: single["state"][k] for k in initial}, initial),
            "damped_steps": int((single["weights"] != 1).any(dim=1).sum()),
        } for got in (r[method] for r in ranks)]
    return report
