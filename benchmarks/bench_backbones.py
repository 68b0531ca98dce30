"""CPU throughput of the small backbones on 28x28 grayscale input, side by side in one process.

Training: batch 64, Adam (lr 1e-3), backbone + Linear(out_features, 10) + cross-entropy, forward + backward +
step. Encoding: eval mode, no_grad, batch 512. Configurations are measured in interleaved rounds (so a busy
neighbour on a shared machine slows all of them alike) and the median over rounds is reported.

Usage: python benchmarks/bench_backbones.py [--rounds 5] [--train-steps 30] [--encode-batches 10]
Writes benchmarks/results/bench_backbones.json and prints a short summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from nhllib.training.backbones import build_backbone

CONFIGS = {
    "cnn (16, 32, 64)": ("cnn", {"channels": (16, 32, 64)}),
    "cnn (32, 64, 128)": ("cnn", {"channels": (32, 64, 128)}),
    "mlp 512-512": ("mlp", {}),
}


def train_rate(model: nn.Module, head: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               steps: int) -> float:
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(x) / (time.perf_counter() - start)


@torch.no_grad()
def encode_rate(model: nn.Module, x: torch.Tensor, batches: int) -> float:
    model.eval()
    start = time.perf_counter()
    for _ in range(batches):
        model(x)
    return batches * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--encode-batches", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_backbones.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    x_train, y_train = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    x_enc = torch.randn(512, 1, 28, 28)
    setups = {}
    for label, (name, options) in CONFIGS.items():
        model = build_backbone(name, in_channels=1, image_size=28, **options)
        head = nn.Linear(model.out_features, 10)
        opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
        train_rate(model, head, opt, x_train, y_train, 3)  # warm-up (allocator, kernels)
        encode_rate(model, x_enc, 1)
        setups[label] = (model, head, opt)

    rates: dict[str, dict[str, list[float]]] = {label: {"train": [], "encode": []} for label in CONFIGS}
    for _ in range(args.rounds):
        for label, (model, head, opt) in setups.items():
            rates[label]["train"].append(train_rate(model, head, opt, x_train, y_train, args.train_steps))
            rates[label]["encode"].append(encode_rate(model, x_enc, args.encode_batches))

    results = {
        "command": "python benchmarks/bench_backbones.py "
                   f"--rounds {args.rounds} --train-steps {args.train_steps} --encode-batches {args.encode_batches}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "input": "random float32 (B, 1, 28, 28)",
        "train": "batch 64, Adam lr 1e-3, backbone + Linear(out, 10) + cross-entropy, forward+backward+step",
        "encode": "eval, no_grad, batch 512",
        "results": {
            label: {
                "train_images_per_s_median": statistics.median(r["train"]),
                "encode_images_per_s_median": statistics.median(r["encode"]),
                "train_images_per_s_rounds": r["train"],
                "encode_images_per_s_rounds": r["encode"],
            }
            for label, r in rates.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'backbone':<20} {'train img/s':>12} {'encode img/s':>13}")
    for label, r in results["results"].items():
        print(f"{label:<20} {r['train_images_per_s_median']:>12.0f} {r['encode_images_per_s_median']:>13.0f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
