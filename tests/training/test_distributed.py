"""Data-parallel training equals one process: 2 gloo ranks with B/2 images each vs one process with B.

The ranks are spawned by the test (CPU, gloo). Each trains a tiny nested model for a few steps with the full
method (conflict weighting applied, distillation on) through the library's one training step, for CSQ, DSH
(memory bank) and DTSH (in-batch triplets); parameters, batch-norm statistics, applied weights and banks must
equal the single-process run's. The primitives (gather with gradients, global-batch norm, the sampler) get
their own checks.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nhllib.data.loader import InMemoryLoader
from nhllib.training.distributed import GlobalOrderBatchSampler, check_shardable
from nhllib.training.parallel_check import BATCH, NUM_TRAIN, compare_with_single_process

from conftest import TINY_RUN

METHODS = ("csq", "dsh", "dtsh")
# Observed (this CPU, torch 2.14): parameters and BN statistics ≤ 8.2e-7, applied weights ≤ 1.5e-6, the rule's
# inner products ≤ 2.8e-6 and banks ≤ 2.1e-6 (both relative): float32 sums in another order, amplified where
# λ = 20 makes the objectives large. A wrong gradient scale, a rank-local rule or local batch norm gives > 1e-2.
ATOL = 5e-5


@pytest.fixture(scope="module")
def report():
    return compare_with_single_process(METHODS, world_size=2, device_type="cpu")


@pytest.mark.slow  # two spawned ranks and one process per method, like the torchrun test: many seconds
@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_train_like_one_process(report, method):
    for rank, diffs in enumerate(report[method]):
        assert diffs["trained"] > 1e-3, "training did not move the model: the comparison would be empty"
        assert diffs["damped_steps"] > 0, "the conflict rule never scaled a weight: the weights would be all ones"
        assert diffs["state"] < ATOL, f"rank {rank}: parameters or batch-norm statistics differ: {diffs}"
        assert diffs["weights"] < ATOL, f"rank {rank}: applied conflict weights differ: {diffs}"
        # the rule's inputs, ⟨g_s, g_l⟩ of the rank-averaged per-length gradients
        assert diffs["dots"] < ATOL, f"rank {rank}: per-length gradients differ: {diffs}"
        assert diffs["buffers"] < ATOL, f"rank {rank}: loss buffers (memory banks) differ: {diffs}"


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_TRAIN, 1, 8, 8), generator=g, dtype=torch.uint8)
    return images, torch.nn.functional.one_hot(torch.arange(NUM_TRAIN) % 3, 3).float()


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


def test_dataloader_shards_follow_the_global_order():
    from torch.utils.data import DataLoader, TensorDataset

    from nhllib.training.distributed import shard_loader

    dataset = TensorDataset(torch.arange(NUM_TRAIN))
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(4))
    shards = [shard_loader(loader, r, 2) for r in range(2)]
    reference = GlobalOrderBatchSampler(NUM_TRAIN, BATCH, seed=4)
    for _ in range(2):
        expected = list(reference)
        got = [torch.cat([a[0], b[0]]).tolist() for a, b in zip(*shards)]
        assert got == expected and sorted(sum(expected, [])) == list(range(NUM_TRAIN))


def test_shards_that_would_leave_a_rank_empty_are_refused():
    check_shardable(27, 8, 2, drop_last=False)
    with pytest.raises(ValueError, match="batch_size"):
        check_shardable(25, 8, 2, drop_last=False)  # last batch of 1 for 2 ranks
    with pytest.raises(ValueError, match="batch_size"):
        GlobalOrderBatchSampler(16, 1, rank=0, world_size=2)
    check_shardable(25, 8, 2, drop_last=True)


def test_single_process_helpers_are_identities():
    from nhllib.training.distributed import all_gather_batch, all_gather_with_grad, average_, broadcast_object

    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_batch(x)[0] is x
    t = torch.ones(2)
    assert average_(t) is t and torch.equal(t, torch.ones(2))
    assert broadcast_object({"a": 1}) == {"a": 1}


def test_global_batch_norm_is_batch_norm_in_one_process():
    from nhllib.training.distributed import GlobalBatchNorm, convert_sync_batchnorm

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


# ---------------------------------------------------------------- the torchrun entry point, end to end


@pytest.mark.slow  # two torchrun processes and a third run: tens of seconds on two cores
def test_torchrun_run_writes_one_complete_folder_like_one_process(tmp_path, tiny_data):
    """`torchrun --nproc_per_node 2 -m nhllib.training.experiment` on (synthetic) Fashion-MNIST: one complete folder, written by rank
    0, whose objectives, conflict statistics and metrics equal the single-process run's."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[2]
    params = {**TINY_RUN, "method": "dsh", "variant": "nhl", "code_lengths": [8, 16, 32],
              "data_dir": str(tmp_path / "data")}
    config = tmp_path / "run.json"
    config.write_text(json.dumps(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    entry = ["-m", "nhllib.training.experiment", "--config", str(config)]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *entry, "--results", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=300, cwd=root)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, *entry, "--results", str(tmp_path / "one")], capture_output=True,
                         text=True, env=env, timeout=300, cwd=root)
    assert one.returncode == 0, one.stderr[-3000:]
    (run_two,) = (tmp_path / "two" / "t").iterdir()
    run_one = tmp_path / "one" / "t" / run_two.name
    names = {p.name for p in run_two.iterdir()}
    assert names == {p.name for p in run_one.iterdir()} and "COMPLETE" in names
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    assert json.loads((run_two / "config.json").read_text())["world_size"] == 2
    assert (two.stdout + two.stderr).count("complete:") == 1, "only rank 0 finishes the run folder"
    for table in ("history.csv", "metrics.csv"):
        a, b = pd.read_csv(run_two / table), pd.read_csv(run_one / table)
        keep = ~a.metric.str.contains("time")
        assert (a.value[keep] - b.value[keep]).abs().max() < 1e-5, table
    a, b = pd.read_csv(run_two / "conflicts.csv"), pd.read_csv(run_one / "conflicts.csv")
    assert ((a.mean_dot - b.mean_dot).abs() / b.mean_dot.abs().max()).max() < 1e-5
    assert (a.conflict_rate == b.conflict_rate).all() and ((a.mean_alpha - b.mean_alpha).abs() < 1e-6).all()
