"""List-file datasets train alike in one process and on N data-parallel ranks.

The ranks' shares of every training batch, concatenated in rank order, are the single-process batch: the same
images in the same order, with the same random crops and flips (seeded per sample by seed, epoch and index,
not by the rank or the worker). End to end, ``torchrun`` with 2 gloo ranks gives the single process's mAP on a
small multi-label list-file dataset of generated PNGs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nhllib import data as D
from nhllib.data.listfile import sample_seed
from nhllib.training.distributed import shard_loader

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 5  # label values per line (multi-label)


def write_noise_list_dataset(root: Path, sizes: dict[str, int], side: int = 20, seed: int = 0) -> None:
    """Random-noise PNGs (so every crop and flip changes the pixels) with multi-hot labels, and the three lists."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    for part, n in sizes.items():
        lines = []
        for i in range(n):
            rel = f"img/{part}_{i}.png"
            label = np.zeros(WIDTH, dtype=int)
            label[i % WIDTH] = 1
            if i % 3 == 0:
                label[(i + 2) % WIDTH] = 1  # multi-label rows
            # the class shows in the image (a brighter channel), so training has something to learn
            pixels = rng.integers(0, 160, (side, side, 3), dtype=np.uint8)
            pixels[..., (i % WIDTH) % 3] += 90
            Image.fromarray(pixels).save(root / rel)
            lines.append(f"{rel} {' '.join(map(str, label))}\n")
        (root / D.listfile.LIST_FILES[part]).write_text("".join(lines))


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lists") / "ds"
    write_noise_list_dataset(root, {"train": 40, "query": 10, "database": 30})
    return root


def _load(root: Path, data_dir: Path, **options):
    return D.load_hashing_data("listfile", root=root, data_dir=data_dir, seed=0, shuffle_seed=3, image_size=12,
                               resize_size=16, val_fraction=0.2, batch_size=8, eval_batch_size=16, **options)


def _epochs(loader, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [batch for _ in range(n) for batch in loader]


def test_rank_shares_rebuild_the_single_process_batches_with_their_augmentation(dataset_root, tmp_path):
    single = _load(dataset_root, tmp_path).train
    ranks = [shard_loader(_load(dataset_root, tmp_path).train, r, 2) for r in range(2)]
    expected = _epochs(single)
    shares = [_epochs(loader) for loader in ranks]
    assert len(expected) == 2 * 4 and all(len(s) == len(expected) for s in shares)
    for b, (x, y, index) in enumerate(expected):
        joined = [torch.cat([shares[r][b][k] for r in range(2)]) for k in range(3)]
        assert torch.equal(joined[2], index), f"batch {b}: the ranks hold other samples"
        assert torch.equal(joined[1], y)
        assert torch.equal(joined[0], x), f"batch {b}: the ranks cropped or flipped otherwise"
    # the two epochs are shuffled differently and augment the same image differently
    first, second = (torch.cat([i for _, _, i in expected[e * 4:(e + 1) * 4]]) for e in range(2))
    assert not torch.equal(first, second)
    by_epoch = [{int(i): x[row] for x, _, index in expected[e * 4:(e + 1) * 4] for row, i in enumerate(index)}
                for e in range(2)]
    changed = sum(not torch.equal(by_epoch[0][i], by_epoch[1][i]) for i in by_epoch[0])
    assert changed > len(by_epoch[0]) // 2, f"only {changed} of {len(by_epoch[0])} images changed between epochs"


def test_worker_processes_give_the_same_batches(dataset_root, tmp_path):
    in_thread = _epochs(_load(dataset_root, tmp_path).train, 1)
    workers = _epochs(_load(dataset_root, tmp_path, num_workers=2).train, 1)
    for (xa, ya, ia), (xb, yb, ib) in zip(in_thread, workers, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_the_training_order_is_the_in_memory_order(dataset_root, tmp_path):
    """seed + epoch, as InMemoryLoader and the data-parallel sampler draw it (no DataLoader RandomSampler)."""
    loader = _load(dataset_root, tmp_path).train
    n = len(loader.dataset)
    for epoch in range(2):
        got = torch.cat([i for _, _, i in loader])
        assert torch.equal(got, torch.randperm(n, generator=torch.Generator().manual_seed(3 + epoch)))


def test_sample_seed_depends_on_seed_epoch_and_index_only():
    seeds = {sample_seed(s, e, i) for s in (0, 1) for e in (0, 1) for i in (0, 1, 2)}
    assert len(seeds) == 12
    assert sample_seed(5, 2, 7) == sample_seed(5, 2, 7)
    with pytest.raises(ValueError, match="epoch and index must be non-negative"):
        sample_seed(0, -1, 0)


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_map_on_list_files(dataset_root, tmp_path):
    """torchrun --nproc_per_node 2 against one process, multi-label list files: mAP within 1e-4."""
    params = dict(study="t", dataset="listfile", root=str(dataset_root), data_dir=str(tmp_path / "data"),
                  method="dsh", variant="nhl", code_lengths=[8, 16], backbone="cnn", image_size=12, resize_size=16,
                  val_fraction=0.2, epochs=2, eval_every=1, patience=0, batch_size=8, eval_batch_size=16,
                  device="cpu")
    config = tmp_path / "run.json"
    config.write_text(json.dumps(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    entry = ["-m", "nhllib.training.experiment", "--config", str(config)]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *entry, "--results", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, *entry, "--results", str(tmp_path / "one")], capture_output=True,
                         text=True, env=env, timeout=300, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    (run_two,) = (tmp_path / "two" / "t").iterdir()
    run_one = tmp_path / "one" / "t" / run_two.name
    a, b = pd.read_csv(run_two / "metrics.csv"), pd.read_csv(run_one / "metrics.csv")
    maps = a.metric.isin(["map", "val_map", "map_last"])
    assert maps.sum() == 6
    assert (a.value[maps] - b.value[maps]).abs().max() < 1e-4
    objectives = pd.read_csv(run_two / "history.csv"), pd.read_csv(run_one / "history.csv")
    keep = objectives[0].metric == "objective"
    assert (objectives[0].value[keep] - objectives[1].value[keep]).abs().max() < 1e-4
