"""Training-time speed-up of one NHL model over K single-length models, and the cost of NHL's extras.

On Fashion-MNIST with the small CNN and K = 5 lengths (8, 16, 32, 64, 128), builds in one process the five
single-length models (`separate`), one plain nested model (`nhl-plain`, conflicts not even monitored) and one full
NHL model (`nhl`: gradient-conflict weighting + cascade distillation), and trains each for the same number of
epochs, interleaving them epoch by epoch (in a rotating order) so that machine noise hits all alike. Only the
training loop is timed (no evaluation). Writes JSON: per-model training times, the ratio sum(separate) / nhl (the
limit at equal epochs is K = 5), the per-step overhead of full NHL over plain NHL, and that of conflict monitoring
alone; from the median epoch of each model and, as a check, from its fastest epoch.

    python benchmarks/bench_speedup.py [--epochs 10] [--method csq] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nhllib.config import RunConfig
from nhllib.experiment import build_run
from nhllib.train import train_epoch
from nhllib.utils import synchronize
from nhllib.weighting import Uniform

LENGTHS = (8, 16, 32, 64, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--method", default="csq")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/bench_speedup_<method>.json")
    args = parser.parse_args()

    base = RunConfig.from_dict(dict(study="bench", method=args.method, data_dir=args.data_dir, device=args.device,
                                    database_per_class=10, epochs=args.epochs))
    runs = {f"separate-{n}": build_run(base.updated(variant="separate", code_lengths=(n,)), progress=False)
            for n in LENGTHS}
    runs["nhl-plain"] = build_run(base.updated(variant="nhl-plain", code_lengths=LENGTHS), progress=False)
    runs["nhl-plain"].weighting = Uniform()  # nothing monitored: the bare nested model
    # the study's nhl-plain: uniform weights, but gradient conflicts measured every step
    runs["nhl-plain+monitor"] = build_run(base.updated(variant="nhl-plain", code_lengths=LENGTHS),
                                          progress=False)
    runs["nhl"] = build_run(base.updated(variant="nhl", code_lengths=LENGTHS), progress=False)
    optimizers = {}
    for name, run in runs.items():
        run.model.to(run.device)
        for loss in run.losses:
            loss.to(run.device)
        training = base.training
        optimizers[name] = torch.optim.Adam(run.model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    seconds = {name: [] for name in runs}
    steps = {name: 0 for name in runs}
    names = list(runs)
    for epoch in range(1, args.epochs + 1):
        # Rotate the order every epoch so that no model always runs in the same slot of the round.
        shift = (epoch - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            synchronize(run.device)
            start = time.perf_counter()
            log = train_epoch(run.model, run.losses, run.data.train, optimizers[name], run.weighting, epoch,
                              run.device, distill_weight=run.plan.distill_weight)
            synchronize(run.device)
            seconds[name].append(time.perf_counter() - start)
            steps[name] += log["steps"]
    # Another process can stall one epoch by many times its cost on a shared machine; the median epoch of
    # each model, times the epochs, is the robust figure (the raw sums are reported too).
    raw_totals = {name: sum(values) for name, values in seconds.items()}
    totals = {name: statistics.median(values) * args.epochs for name, values in seconds.items()}
    # The fastest epoch of each model is its cost with the least interference (noise only ever adds time).
    fastest = {name: min(values) for name, values in seconds.items()}
    separate_total = sum(totals[f"separate-{n}"] for n in LENGTHS)
    per_step = {name: totals[name] / steps[name] for name in runs}
    report = {
        "benchmark": "bench_speedup",
        "method": args.method, "backbone": base.model.backbone, "dataset": base.data.dataset,
        "code_lengths": list(LENGTHS), "epochs": args.epochs, "train_images": runs["nhl"].data.sizes()["train"],
        "batch_size": base.data.batch_size,
        "device": str(runs["nhl"].device), "torch_threads": torch.get_num_threads(),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "train_seconds": totals,
        "train_seconds_note": "median epoch time x epochs (robust to interference); raw sums in train_seconds_raw",
        "train_seconds_raw": raw_totals,
        "speedup_separate_over_nhl_raw": sum(raw_totals[f"separate-{n}"] for n in LENGTHS) / raw_totals["nhl"],
        "train_seconds_per_epoch": seconds,
        "seconds_per_step": per_step,
        "separate_sum_seconds": separate_total,
        "speedup_separate_over_nhl": separate_total / totals["nhl"],
        "speedup_separate_over_nhl_plain": separate_total / totals["nhl-plain"],
        "speedup_separate_over_nhl_fastest_epochs": sum(fastest[f"separate-{n}"] for n in LENGTHS) / fastest["nhl"],
        "nhl_overhead_fastest_epochs": fastest["nhl"] / fastest["nhl-plain"] - 1,
        "nhl_overhead_per_step_over_plain": per_step["nhl"] / per_step["nhl-plain"] - 1,
        "monitor_overhead_per_step_over_plain": per_step["nhl-plain+monitor"] / per_step["nhl-plain"] - 1,
    }
    out = Path(args.out or f"benchmarks/results/bench_speedup_{args.method}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"sum of 5 separate: {separate_total:.1f} s | nhl-plain {totals['nhl-plain']:.1f} s | "
          f"nhl {totals['nhl']:.1f} s")
    print(f"speed-up separate/nhl = {report['speedup_separate_over_nhl']:.2f}x "
          f"(separate/nhl-plain = {report['speedup_separate_over_nhl_plain']:.2f}x); "
          f"full-NHL overhead per step over plain = {100 * report['nhl_overhead_per_step_over_plain']:.1f}%, "
          f"conflict monitoring alone = {100 * report['monitor_overhead_per_step_over_plain']:.1f}%")
    print(f"fastest epochs: speed-up {report['speedup_separate_over_nhl_fastest_epochs']:.2f}x, "
          f"full-NHL overhead {100 * report['nhl_overhead_fastest_epochs']:.1f}%")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
