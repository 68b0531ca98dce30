"""Making a batch against the training step, on this CPU: does the data path keep up with the model?

Each case is a real run built as a study builds it (:func:`nhllib.training.feed_timing.feed_and_step_times`: data on the
run's device, the model, losses and weighting), timed over the same batches two ways: iterating the training
loader alone (``build_s``: gather, resize and normalise a pooled set; decode, crop and flip list-file images)
and the training loop (``step_s``: batch building plus ``train_step``). ``feed_share = build_s / step_s``.

Cases: Fashion-MNIST at 28 px with the small CNN (the smoke / full setting) and the MLP (the default study);
Fashion-MNIST resized to 224 px on the device for a ResNet-18 (the pooled path of the paper protocol); a
list-file set of generated 256 px JPEGs, random 224 crops, ResNet-18, decoded in the training thread and in one
worker process. Times on a CPU say what the data path costs; on a GPU the step shrinks, hence gpu_check.

Usage: python benchmarks/bench_feed.py [--steps 20] [--big-steps 3] [--out benchmarks/results/bench_feed.json]
The machine's load average is recorded before and after (a shared machine slows every case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nhllib.machine import cpu_name
from nhllib.training.config import RunConfig
from nhllib.training.feed_timing import feed_and_step_times

SMALL = dict(query_per_class=10, train_per_class=200, val_per_class=10, database_per_class=20)


def write_jpeg_list_dataset(root: Path, n_train: int, side: int = 256, classes: int = 10, seed: int = 0) -> None:
    """Random-noise JPEGs (``side`` px) with one-hot labels: train.txt, test.txt and database.txt."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    for part, n in (("train.txt", n_train), ("test.txt", classes), ("database.txt", classes)):
        lines = []
        for i in range(n):
            rel = f"img/{part[:-4]}_{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / rel, quality=90)
            label = ["0"] * classes
            label[i % classes] = "1"
            lines.append(f"{rel} {' '.join(label)}\n")
        (root / part).write_text("".join(lines))


def cases(list_root: Path, steps: int, big_steps: int) -> dict[str, tuple[dict, int, int]]:
    return {
        "fashion-mnist 28px cnn nhl": (dict(backbone="cnn", variant="nhl", code_lengths=[8, 16, 32, 64, 128],
                                            batch_size=64, **SMALL), steps, 3),
        "fashion-mnist 28px mlp separate": (dict(backbone="mlp", variant="separate", code_lengths=[32],
                                                 batch_size=64, **SMALL), steps, 3),
        "fashion-mnist 28->224px resnet18 separate": (dict(backbone="resnet18", image_size=224, variant="separate",
                                                           code_lengths=[32], batch_size=16, **SMALL), big_steps, 1),
        "list-file 256->224px resnet18 separate, 0 workers": (
            dict(dataset="listfile", root=str(list_root), backbone="resnet18", image_size=224, variant="separate",
                 code_lengths=[32], batch_size=16, val_fraction=0.1), big_steps, 1),
        "list-file 256->224px resnet18 separate, 1 worker": (
            dict(dataset="listfile", root=str(list_root), backbone="resnet18", image_size=224, variant="separate",
                 code_lengths=[32], batch_size=16, val_fraction=0.1, num_workers=1), big_steps, 1),
    }


def _uptime() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="batches timed for the 28 px cases")
    parser.add_argument("--big-steps", type=int, default=3, help="batches timed for the 224 px cases")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_feed.json"))
    args = parser.parse_args(argv)
    common = dict(study="bench_feed", device="cpu", data_dir=args.data_dir, method="csq", seed=0)
    load_start, uptime_start = os.getloadavg(), _uptime()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        list_root = Path(tmp) / "jpegs"
        write_jpeg_list_dataset(list_root, n_train=80)
        for name, (params, steps, warmup) in cases(list_root, args.steps, args.big_steps).items():
            cfg = RunConfig.from_dict({**common, **params, "data_dir": str(Path(tmp) / "data")
                                       if params.get("dataset") == "listfile" else args.data_dir})
            start = time.perf_counter()
            results[name] = feed_and_step_times(cfg, steps, warmup)
            print(f"{name}: build {results[name]['build_s'] * 1e3:.1f} ms, step {results[name]['step_s'] * 1e3:.1f} ms "
                  f"per batch of {results[name]['batch']} (feed share {results[name]['feed_share']:.3f}; "
                  f"{time.perf_counter() - start:.0f} s)")
    report = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "uptime_start": uptime_start, "uptime_end": _uptime(),
        "note": "a shared machine: other jobs ran at the same time (see the load averages)",
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}; load average {load_start} -> {report['load_average_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
