"""Data-parallel training equals one process: 2 gloo ranks with B/2 images each vs one process with B.

The ranks are spawned by the test (CPU, gloo). Each trains a tiny nested model for a few steps with the full
method (conflict weighting applied, distillation on) through the library's one training step, for CSQ, DSH
(memory bank) and DTSH (in-batch triplets); parameters, batch-norm statistics, applied weights and banks must
equal the single-process run's. The primitives (gather with gradients, global-batch norm, the sampler) get
their own checks.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from nhllib.backbones import SmallCNN
from nhllib.data.loader import InMemoryLoader
from nhllib.distributed import GlobalOrderBatchSampler, check_shardable
from nhllib.losses import build_losses
from nhllib.model import HashingModel
from nhllib.nested import NestedHashLayer
from nhllib.train import TrainSettings, train_epoch
from nhllib.weighting import ConflictAware

LENGTHS = (4, 8, 16)
NUM_TRAIN, BATCH, CLASSES, EPOCHS = 27, 8, 3, 2  # 27 = 3 full batches and one of 3 (shares 2 and 1)
METHODS = ("csq", "dsh", "dtsh")
WORLD = 2
# Observed differences are ~1e-7 (float32 reductions in another order); 1e-5 leaves room for other CPUs.
ATOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (NUM_TRAIN, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.nn.functional.one_hot(torch.arange(NUM_TRAIN) % CLASSES, CLASSES).float()
    return images, labels


class _Recording(ConflictAware):
    """ConflictAware that keeps, at every step, the weights it returned and the gradient inner products the
    rule saw (these differ whenever the per-length gradients are not the global batch's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[torch.Tensor] = []
        self.dots: list[torch.Tensor] = []

    def __call__(self, *args, **kwargs):
        weights = super().__call__(*args, **kwargs)
        self.applied.append(weights.detach().clone())
        self.dots.append(self.last_stats.dot.clone())
        return weights


def _train(method: str, rank: int = 0, world: int = 1) -> dict:
    """Train one tiny nested model; ``world > 1`` inside an initialised process group."""
    from nhllib.distributed import DataParallel, DistContext, convert_sync_batchnorm

    torch.manual_seed(0)
    model = HashingModel(SmallCNN(1, (4, 4, 8)), NestedHashLayer(8, LENGTHS))
    losses = build_losses(method, LENGTHS, CLASSES, NUM_TRAIN, nested=True, seed=0)
    images, labels = _data()
    loader = InMemoryLoader(images, labels, BATCH, shuffle=True, seed=3)
    parallel = None
    weighting = _Recording(LENGTHS)
    if world > 1:
        ctx = DistContext(rank, world, rank, torch.device("cpu"))
        model = convert_sync_batchnorm(model, ctx.device)
        parallel = DataParallel(model, ctx)
        loader = loader.sharded(rank, world)
        weighting.reduce_gradients = parallel.reduce_gradients
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    settings = TrainSettings(distill_weight=1.0, progress=False)
    for epoch in range(1, EPOCHS + 1):
        train_epoch(model, losses, loader, optimizer, weighting, settings, epoch, torch.device("cpu"),
                    parallel=parallel)
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "weights": torch.stack(weighting.applied),
        "dots": torch.stack(weighting.dots),
        "buffers": {f"{k}.{name}": b.clone() for k, loss in enumerate(losses) for name, b in loss.named_buffers()},
    }


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    from nhllib.distributed import process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with process_group(device="cpu") as ctx:
        assert ctx.world_size == WORLD and ctx.rank == rank
        results = {method: _train(method, rank, WORLD) for method in METHODS}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank_main, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).abs().max().item() for k in a), default=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_train_like_one_process(distributed_results, method):
    single = _train(method)
    assert single["dots"].abs().max() > 1e-3
    for rank, results in enumerate(distributed_results):
        got = results[method]
        # Running statistics use the global batch (num_batches_tracked too) when states match.
        assert _max_diff(got["state"], single["state"]) < ATOL, f"rank {rank}: parameters or BN statistics"
        assert torch.allclose(got["weights"], single["weights"], atol=ATOL), f"rank {rank}: conflict weights"
        # The rule's inputs: ⟨g_s, g_l⟩ of the rank-averaged per-length gradients (relative: they grow large).
        scale = single["dots"].abs().amax(dim=(1, 2), keepdim=True)
        assert torch.allclose(got["dots"] / scale, single["dots"] / scale, atol=ATOL), f"rank {rank}: gradients"
        assert _max_diff(got["buffers"], single["buffers"]) < ATOL, f"rank {rank}: loss buffers (banks)"
        print(f"{method} rank {rank}: max |Δ| state {_max_diff(got['state'], single['state']):.2e}, "
              f"weights {(got['weights'] - single['weights']).abs().max():.2e}, "
              f"buffers {_max_diff(got['buffers'], single['buffers']):.2e}")
    # Nothing trivially equal: training moved the parameters away from the initial state.
    torch.manual_seed(0)
    initial = HashingModel(SmallCNN(1, (4, 4, 8)), NestedHashLayer(8, LENGTHS)).state_dict()
    assert _max_diff({k: single["state"][k] for k in initial if "weight" in k},
                     {k: v for k, v in initial.items() if "weight" in k}) > 1e-3


# ---------------------------------------------------------------- primitives, in one process


def test_sharded_loader_shares_rebuild_the_single_process_batches():
    images, labels = _data()
    single = InMemoryLoader(images, labels, BATCH, shuffle=True, seed=5)
    views = [single.sharded(r, 3) for r in range(3)]
    for epoch in range(2):
        expected = [index for _, _, index in single]
        shares = [[index for _, _, index in view] for view in views]
        for b, index in enumerate(expected):
            assert torch.equal(torch.cat([shares[r][b] for r in range(3)]), index), f"epoch {epoch} batch {b}"


def test_global_order_sampler_matches_in_memory_order():
    images, labels = _data()
    loader = InMemoryLoader(images, labels, BATCH, shuffle=True, seed=7)
    samplers = [GlobalOrderBatchSampler(NUM_TRAIN, BATCH, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(2):
        expected = [index.tolist() for _, _, index in loader]
        got = [a + b for a, b in zip(*(list(s) for s in samplers))]
        assert got == expected


def test_shards_that_would_leave_a_rank_empty_are_refused():
    check_shardable(27, 8, 2, drop_last=False)
    with pytest.raises(ValueError, match="batch_size"):
        check_shardable(25, 8, 2, drop_last=False)  # last batch of 1 for 2 ranks
    with pytest.raises(ValueError, match="batch_size"):
        GlobalOrderBatchSampler(16, 1, rank=0, world_size=2)
    check_shardable(25, 8, 2, drop_last=True)


def test_single_process_helpers_are_identities():
    from nhllib.distributed import all_gather_batch, all_gather_with_grad, average_, broadcast_object

    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_batch(x)[0] is x
    t = torch.ones(2)
    assert average_(t) is t and torch.equal(t, torch.ones(2))
    assert broadcast_object({"a": 1}) == {"a": 1}


def test_global_batch_norm_is_batch_norm_in_one_process():
    from nhllib.distributed import GlobalBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    converted = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)), torch.device("cpu"))
    converted.load_state_dict(plain.state_dict())
    assert isinstance(converted[1], GlobalBatchNorm)
    # The global formulas (two passes over the batch, gradients through both) run in training mode even in one
    # process: outputs, input gradients and running statistics equal BatchNorm's.
    x = torch.randn(5, 1, 6, 6)
    for _ in range(2):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = plain(xa), converted(xb)
        assert torch.allclose(out_a, out_b, atol=1e-5)
        (out_a * torch.arange(out_a.numel()).view_as(out_a)).sum().backward()
        (out_b * torch.arange(out_b.numel()).view_as(out_b)).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(plain[1], name).float(), getattr(converted[1], name).float(), atol=1e-6), name
    plain.eval(), converted.eval()
    assert torch.allclose(plain(x), converted(x), atol=1e-5)
