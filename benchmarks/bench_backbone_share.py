"""The backbone's share of one nested training step, per backbone, fine-tuned and frozen.

The speed-up of one nested model over K separate ones is bounded by what the K models share: the backbone. Its
share of a step is measured as ``1 - t(head step) / t(step)``: ``step`` is one ``nhllib.training.train.train_step`` of the
CSQ ``nhl`` model (lengths 8-128, code centring, the conflict rule monitored and applied, batch 64 of 28x28
grayscale images) with the backbone fine-tuned (or frozen: forward only, no backward through it), ``head step``
the same step on the backbone's features given as input (the backbone's cost removed, everything else kept).
Configurations are measured in interleaved rounds (a busy neighbour slows all alike); medians over rounds.

Usage: python benchmarks/bench_backbone_share.py [--rounds 5] [--steps 20] [--threads 1]
Writes benchmarks/results/backbone_share.json (read by nhllib.analysis.regimes.speedup_with_share).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from nhllib.core.losses import build_losses
from nhllib.core.model import HashingModel
from nhllib.core.nested import NestedHashLayer
from nhllib.core.weighting import ConflictAware
from nhllib.machine import cpu_name
from nhllib.training.backbones import build_backbone
from nhllib.training.config import TrainingConfig
from nhllib.training.optimizers import FrozenBackbone, parameter_groups
from nhllib.training.train import train_step

LENGTHS = (8, 16, 32, 64, 128)
BATCH = 64


class GivenFeatures(nn.Module):
    """A "backbone" whose input already is the features: the step without the backbone's cost."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _step_setup(backbone: nn.Module, frozen: bool):
    torch.manual_seed(0)
    head = NestedHashLayer(backbone.out_features, LENGTHS, center=True)
    model = HashingModel(backbone, head)
    losses = build_losses("csq", LENGTHS, 10, 5000, nested=True, targets="nested", seed=0)
    training = TrainingConfig(freeze_backbone=frozen)
    optimizer = torch.optim.Adam(parameter_groups(model, training), lr=1e-3)
    weighting = ConflictAware(LENGTHS)
    return model, losses, optimizer, weighting


def _time_steps(setup, x: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    model, losses, optimizer, weighting = setup
    model.train()
    index = torch.arange(len(x))
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, losses, (x, labels, index), optimizer, weighting, distill_weight=1.0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the study runs 1 per job)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backbone_share.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    x = torch.randn(BATCH, 1, 28, 28)
    labels = torch.eye(10)[torch.arange(BATCH) % 10]
    configs = {}
    for name in ("mlp", "cnn"):
        for frozen in (False, True):
            torch.manual_seed(0)
            backbone = build_backbone(name)
            with torch.no_grad():
                features = backbone.eval()(x)
            wrapped = FrozenBackbone(backbone) if frozen else backbone
            configs[(name, frozen)] = (_step_setup(wrapped, frozen),
                                       _step_setup(GivenFeatures(backbone.out_features), False), features)
    times = {key: {"step": [], "head": []} for key in configs}
    for key, (full, head, features) in configs.items():  # warm-up
        _time_steps(full, x, labels, 3)
        _time_steps(head, features, labels, 3)
    for _ in range(args.rounds):
        for key, (full, head, features) in configs.items():
            times[key]["step"].append(_time_steps(full, x, labels, args.steps))
            times[key]["head"].append(_time_steps(head, features, labels, args.steps))
    results = []
    for (name, frozen), t in times.items():
        step, head_step = statistics.median(t["step"]), statistics.median(t["head"])
        results.append({"backbone": name, "frozen": frozen, "step_s": step, "head_step_s": head_step,
                        "share": max(0.0, 1 - head_step / step)})
        print(f"{name:4s} {'frozen' if frozen else 'fine-tuned':10s} step {1e3 * step:7.2f} ms, without the "
              f"backbone {1e3 * head_step:7.2f} ms: backbone share {results[-1]['share']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_backbone_share.py "
                   f"--rounds {args.rounds} --steps {args.steps} --threads {args.threads}",
        "cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "batch": BATCH, "code_lengths": LENGTHS, "method": "csq nhl (centred)", "results": results,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
