"""Training-time speed-up of one NHL model over K single-length models, at equal epochs and to accuracy.

On Fashion-MNIST with the small CNN and K = 5 lengths (8, 16, 32, 64, 128), builds in one process the five
single-length models (`separate`), one plain nested model (`nhl-plain`, conflicts not even monitored), the
study's plain nested model (`nhl-plain+monitor`, conflicts measured every step) and one full NHL model (`nhl`:
gradient-conflict weighting + cascade distillation), and trains each for the same number of epochs,
interleaving them epoch by epoch (in a rotating order) so that machine noise hits all alike. That is the best a
shared machine allows; it is not isolation, and single epochs can still be stalled by other processes.

Two figures per method:

- **equal epochs**: sum of the five separate models' training times over the NHL model's (the limit is K = 5),
  from the median epoch of each model (robust to stalls), with the raw sums and the fastest epochs as checks;
  and the per-step overhead of full NHL over plain NHL;
- **time to accuracy**: after every epoch each model's validation mAP is measured (evaluation time is not
  training time and is excluded); a model is trained once it first reaches 99 % of its own best validation
  mAP over the run, and for a nested model once every length has (the latest of its lengths). The time to
  get there is its median epoch time x that many epochs (raw cumulative seconds reported too); the ratio is
  the five separate models' sum over the NHL model's. Also costed at each model's fastest epoch, the figure
  to trust when other jobs stall most epochs (``--rederive`` adds it to reports written before it existed).

Each JSON also holds the **per-step cost breakdown** of every model (:mod:`step_breakdown`: backbone forward and
backward, each length's loss forward and backward, distillation, conflict rule, optimizer step, measured part by
part on one batch) and the speed-up ceilings it implies (``breakdown_ratios``), and the machine's load averages
before and after (``load_average``), since the machine may be shared.

Writes one JSON per method, ``benchmarks/results/bench_speedup_<method>.json`` (with ``--method all``, every
registered method in one invocation, one after the other; ``--tag`` adds a suffix to the file name).

    python benchmarks/bench_speedup.py [--epochs 10] [--method csq|all|dsh,dtsh] [--out-dir DIR]

Where users train (no validation mAP, a few steps per epoch, so no time to accuracy):

    python benchmarks/bench_speedup.py --backbone resnet50 --image-size 224 --batch-size 8 --steps 2 --epochs 2 \
        --breakdown-rounds 2 --breakdown-of nested --tag resnet50_224
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from nhllib.core.losses import LOSSES
from nhllib.core.weighting import FIRST_STEP, Uniform
from nhllib.machine import cpu_name
from nhllib.training.config import RunConfig
from nhllib.training.experiment import build_run
from nhllib.training.optimizers import build_optimizer
from nhllib.training.train import evaluate_model, train_epoch
from nhllib.utils import synchronize
from step_breakdown import ceilings, step_breakdown

LENGTHS = (8, 16, 32, 64, 128)
#: A model counts as trained once its validation mAP reaches this share of its own best.
ACCURACY_SHARE = 0.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--method", default="csq", help="a method, a comma-separated list, or 'all'")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--database-per-class", type=int, default=200,
                        help="database images per class for the validation mAP (the training split is unchanged)")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--backbone", default=None, help="a backbone of nhllib.training.backbones (default: the config's)")
    parser.add_argument("--image-size", type=int, default=None, help="resize the images to this side")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="train only this many steps per epoch and skip the validation mAP (no time to accuracy)")
    parser.add_argument("--breakdown-rounds", type=int, default=15,
                        help="rounds of the per-step cost breakdown (0: none)")
    parser.add_argument("--breakdown-of", choices=("all", "nested"), default="all",
                        help="the models whose step is broken down (nested: nhl-plain and nhl, what the ratios use)")
    parser.add_argument("--tag", default="", help="suffix of the JSON file names (bench_speedup_<method>_<tag>.json)")
    parser.add_argument("--rederive", nargs="+", metavar="JSON",
                        help="only recompute the derived figures (fastest-epoch time to accuracy, breakdown ratios) "
                             "of reports written earlier")
    args = parser.parse_args()
    if args.rederive:
        for path in map(Path, args.rederive):
            report = json.loads(path.read_text())
            if "time_to_accuracy" in report:
                report = _with_fastest_epoch_figures(report)
            if report.get("step_breakdown"):
                report["breakdown_ratios"] = ceilings(report["step_breakdown"])
            path.write_text(json.dumps(report, indent=2) + "\n")
            print(_line(report), f"-> {path}")
        return
    methods = sorted(LOSSES) if args.method == "all" else args.method.split(",")
    unknown = [m for m in methods if m not in LOSSES]
    if unknown:
        parser.error(f"--method: unknown {unknown}; valid: all or {', '.join(sorted(LOSSES))}")
    summary = []
    for method in methods:
        report = bench_method(method, args)
        out = Path(args.out_dir) / f"bench_speedup_{method}{'_' + args.tag if args.tag else ''}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        summary.append(report)
        print(_line(report), f"-> {out}", flush=True)
    if len(summary) > 1:
        print("\n".join(["", "method  equal-epochs  fastest-epochs  to-accuracy [fastest]  overhead"]
                        + [_line(r) for r in summary]))


def bench_method(method: str, args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    params = dict(study="bench", method=method, data_dir=args.data_dir, device=args.device,
                  database_per_class=args.database_per_class, epochs=args.epochs)
    for option in ("backbone", "image_size", "batch_size"):
        if getattr(args, option) is not None:
            params[option] = getattr(args, option)
    base = RunConfig.from_dict(params)

    def build(variant: str, lengths: tuple[int, ...]):
        return build_run(RunConfig.from_dict({**params, "variant": variant, "code_lengths": lengths}), progress=False)

    runs = {f"separate-{n}": build("separate", (n,)) for n in LENGTHS}
    runs["nhl-plain"] = build("nhl-plain", LENGTHS)
    runs["nhl-plain"].weighting = Uniform()  # nothing monitored: the bare nested model
    # the study's nhl-plain: uniform weights, but gradient conflicts measured every step
    runs["nhl-plain+monitor"] = build("nhl-plain", LENGTHS)
    runs["nhl"] = build("nhl", LENGTHS)
    optimizers = {}
    for name, run in runs.items():
        run.model.to(run.device)
        for loss in run.losses:
            loss.to(run.device)
        optimizers[name] = build_optimizer(run.model, base.training.optimizer, base.training.lr,
                                           base.training.weight_decay)
    seconds = {name: [] for name in runs}
    val_map = {name: [] for name in runs}  # per epoch: {length: mAP}
    steps = {name: 0 for name in runs}
    states = {name: FIRST_STEP for name in runs}  # each weighting's state, carried across epochs as fit does
    names = list(runs)
    for epoch in range(1, args.epochs + 1):
        # Rotate the order every epoch so that no model always runs in the same slot of the round.
        shift = (epoch - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            for loss in run.losses:
                loss.set_epoch(epoch)
            synchronize(run.device)
            start = time.perf_counter()
            loader = run.data.train if args.steps is None else list(itertools.islice(run.data.train, args.steps))
            if args.steps is not None:  # the batches are loaded before the clock starts, as nothing else is timed
                synchronize(run.device)
                start = time.perf_counter()
            log, states[name] = train_epoch(run.model, run.losses, loader, optimizers[name], run.weighting,
                                            epoch, run.device, distill_weight=run.plan.distill_weight,
                                            state=states[name])
            synchronize(run.device)
            seconds[name].append(time.perf_counter() - start)
            steps[name] += log["steps"]
            if args.steps is not None:
                continue
            # Not timed: the validation mAP that decides when the model is trained.
            scores = evaluate_model(run.model, run.data, run.device, run.config.training.topk,
                                    run.config.training.ties,
                                    splits=("validation",))
            val_map[name].append({int(n): float(v) for n, v in scores["validation"].items()})
    # Another process can stall one epoch by many times its cost on a shared machine; the median epoch of
    # each model, times the epochs, is the robust figure (the raw sums are reported too).
    raw_totals = {name: sum(values) for name, values in seconds.items()}
    median_epoch = {name: statistics.median(values) for name, values in seconds.items()}
    totals = {name: median_epoch[name] * args.epochs for name in runs}
    # The fastest epoch of each model is its cost with the least interference (noise only ever adds time).
    fastest = {name: min(values) for name, values in seconds.items()}
    separate = [f"separate-{n}" for n in LENGTHS]
    separate_total = sum(totals[name] for name in separate)
    per_step = {name: totals[name] / steps[name] for name in runs}
    breakdowns = {}
    if args.breakdown_rounds > 0:
        batch = next(iter(runs["nhl"].data.train))
        for name, run in runs.items():
            if args.breakdown_of == "nested" and name not in ("nhl-plain", "nhl"):
                continue
            breakdowns[name] = step_breakdown(
                run, batch, lambda params: torch.optim.Adam(params, lr=base.training.lr,
                                                            weight_decay=base.training.weight_decay),
                rounds=args.breakdown_rounds, warmup=1 if args.breakdown_rounds <= 3 else 3)
    run = runs["nhl"]
    report = {
        "benchmark": "bench_speedup",
        "method": method, "loss_hparams": base.hashing.loss_hparams, "backbone": base.model.backbone,
        "dataset": base.data.dataset,
        "code_lengths": list(LENGTHS), "epochs": args.epochs, "train_images": run.data.sizes()["train"],
        "validation_images": run.data.sizes()["validation"], "database_images": run.data.sizes()["database"],
        "batch_size": base.data.batch_size, "device": str(run.device), "torch_threads": torch.get_num_threads(),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu": cpu_name(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "timing_note": "models interleaved epoch by epoch in one process on a shared machine (rotating order); "
                       "evaluation excluded from training time",
        "train_seconds": totals,
        "train_seconds_note": "median epoch time x epochs (robust to interference); raw sums in train_seconds_raw",
        "train_seconds_raw": raw_totals,
        "speedup_separate_over_nhl_raw": sum(raw_totals[name] for name in separate) / raw_totals["nhl"],
        "train_seconds_per_epoch": seconds,
        "seconds_per_step": per_step,
        "separate_sum_seconds": separate_total,
        "speedup_separate_over_nhl": separate_total / totals["nhl"],
        "speedup_separate_over_nhl_plain": separate_total / totals["nhl-plain"],
        "speedup_separate_over_nhl_fastest_epochs": sum(fastest[name] for name in separate) / fastest["nhl"],
        "nhl_overhead_fastest_epochs": fastest["nhl"] / fastest["nhl-plain"] - 1,
        "nhl_overhead_per_step_over_plain": per_step["nhl"] / per_step["nhl-plain"] - 1,
        "monitor_overhead_per_step_over_plain": per_step["nhl-plain+monitor"] / per_step["nhl-plain"] - 1,
        "image_size": run.data.image_size, "steps_per_epoch_limit": args.steps,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg()),
                         "note": "os.getloadavg() (1, 5, 15 min) when this method's benchmark started and ended; the "
                                 "machine is shared, so other jobs' load is in it"},
        "step_breakdown_note": "seconds per part of one step, each part timed alone on one batch in interleaved "
                               "rounds (benchmarks/step_breakdown.py); median and min over the rounds",
        "step_breakdown": breakdowns,
        "breakdown_ratios": ceilings(breakdowns) if breakdowns else None,
    }
    if args.steps is not None:
        return report
    to_accuracy = {name: _time_to_accuracy(val_map[name], seconds[name], median_epoch[name]) for name in runs}

    def tta_ratio(nested: str, key: str) -> float:
        return sum(to_accuracy[name][key] for name in separate) / to_accuracy[nested][key]

    return _with_fastest_epoch_figures({**report,
        "validation_map_per_epoch": {name: [{str(n): v for n, v in row.items()} for row in rows]
                                     for name, rows in val_map.items()},
        "time_to_accuracy_note": f"first epoch whose validation mAP is >= {ACCURACY_SHARE} x the model's own best "
                                 "(nested: the latest over its lengths); seconds = median epoch x epochs, raw = "
                                 "cumulative measured seconds",
        "time_to_accuracy": to_accuracy,
        "time_to_accuracy_separate_sum_seconds": sum(to_accuracy[name]["seconds"] for name in separate),
        "speedup_to_accuracy_separate_over_nhl": tta_ratio("nhl", "seconds"),
        "speedup_to_accuracy_separate_over_nhl_raw": tta_ratio("nhl", "seconds_raw"),
        "speedup_to_accuracy_separate_over_nhl_plain": tta_ratio("nhl-plain", "seconds"),
    })


def _with_fastest_epoch_figures(report: dict) -> dict:
    """Add the time to accuracy costed at each model's fastest epoch (``seconds_fastest``) and its ratio.

    On a machine shared with other jobs most epochs can be stalled, which even the median does not survive;
    the fastest epoch is the cost with the least interference, so this is the figure to trust then.
    """
    separate = [f"separate-{n}" for n in report["code_lengths"]]
    for name, entry in report["time_to_accuracy"].items():
        entry["seconds_fastest"] = min(report["train_seconds_per_epoch"][name]) * entry["epochs"]
    tta = report["time_to_accuracy"]
    report["speedup_to_accuracy_separate_over_nhl_fastest_epochs"] = (
        sum(tta[name]["seconds_fastest"] for name in separate) / tta["nhl"]["seconds_fastest"])
    return report


def _time_to_accuracy(val_map: list[dict[int, float]], seconds: list[float], median_epoch: float) -> dict:
    """Epochs and training seconds until every length first reaches ACCURACY_SHARE of its own best mAP."""
    per_length = {}
    for length in val_map[0]:
        series = [row[length] for row in val_map]
        best = max(series)
        per_length[str(length)] = {"best_map": best, "best_epoch": series.index(best) + 1,
                                   "epochs": next(e for e, v in enumerate(series, 1) if v >= ACCURACY_SHARE * best)}
    epochs = max(entry["epochs"] for entry in per_length.values())
    return {"epochs": epochs, "seconds": median_epoch * epochs, "seconds_raw": sum(seconds[:epochs]),
            "per_length": per_length}


def _line(report: dict) -> str:
    ratios = report.get("breakdown_ratios") or {}
    ceiling = (f"  predicted {ratios['predicted']:.2f}x, forced-loss ceiling {ratios['ceiling_forced_losses']:.2f}x"
               if ratios else "")
    if "time_to_accuracy" not in report:
        return (f"{report['method']:6s}  {report['speedup_separate_over_nhl']:.2f}x  "
                f"{report['speedup_separate_over_nhl_fastest_epochs']:.2f}x  (no time to accuracy)  "
                f"{100 * report['nhl_overhead_per_step_over_plain']:+.1f}%{ceiling}")
    return (f"{report['method']:6s}  {report['speedup_separate_over_nhl']:.2f}x  "
            f"{report['speedup_separate_over_nhl_fastest_epochs']:.2f}x  "
            f"{report['speedup_to_accuracy_separate_over_nhl']:.2f}x "
            f"[fastest {report['speedup_to_accuracy_separate_over_nhl_fastest_epochs']:.2f}x] "
            f"(nhl {report['time_to_accuracy']['nhl']['epochs']} ep)  "
            f"{100 * report['nhl_overhead_per_step_over_plain']:+.1f}%{ceiling}")


if __name__ == "__main__":
    main()
