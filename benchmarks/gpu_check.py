"""One-shot GPU check: device paths equal the CPU, training throughput, and 2-GPU data-parallel equivalence.

    python benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --device cpu --quick     # a few minutes: proves the script runs (tests do this)

Sections (each recorded in the JSON, the script exits 1 if any check fails):

1. ``checks``: the parts with device paths computed on ``--device`` and on the CPU, with their largest
   differences: the mAP evaluation (every tie mode, nested codes), every loss (values and gradients), the
   conflict rule, the cascade distillation.
2. ``throughput``: training steps of a ``paper``-like run on synthetic 224-px images with a randomly initialised
   ResNet-50 under AMP with ``channels_last`` (CUDA), then the small CNN at 28 px: images/s of one
   single-length model (``separate``) and of the full NHL model (5 lengths, conflict weighting, distillation),
   and their per-step time ratio (K = 5 single-length models cost about 5 separate steps).
3. ``data_parallel``: with two GPUs or more, the data-parallel contract on NCCL (2 ranks with B/2 against one GPU
   with B, :mod:`nhllib.parallel_check`); skipped, with the reason, otherwise.

On an H100/H200 the whole check takes about 2-4 minutes (budget: 8).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from nhllib.backbones import build_backbone
from nhllib.data.loader import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, InMemoryLoader
from nhllib.distill import cascade_distillation
from nhllib.evaluate import TIE_MODES, evaluate_nested
from nhllib.losses import LOSSES, build_losses, per_length_losses
from nhllib.model import HashingModel
from nhllib.nested import NestedHashLayer
from nhllib.train import train_epoch
from nhllib.utils import synchronize
from nhllib.weighting import ConflictAware, ConflictRule, Uniform

PAPER_LENGTHS = (8, 16, 32, 64, 128)
# Tolerances of "equal to the CPU": float32 reductions run in another order on a GPU.
TOL = {"map": 1e-6, "loss": 1e-4, "grad": 1e-4, "weights": 1e-5, "distill": 1e-5}
DDP_TOL = 1e-5


# ---------------------------------------------------------------- 1. device paths vs the CPU


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check_map(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    labels_q = (torch.rand(300, 12, generator=g) < 0.2).float()
    labels_db = (torch.rand(3000, 12, generator=g) < 0.2).float()
    longest_q = torch.randn(300, 64, generator=g)
    longest_db = torch.randn(3000, 64, generator=g)
    lengths = (16, 32, 64)
    q = {n: longest_q[:, :n] for n in lengths}
    db = {n: longest_db[:, :n] for n in lengths}
    worst = 0.0
    for ties in TIE_MODES:
        for topk in (None, 100):
            cpu = evaluate_nested(q, labels_q, db, labels_db, topk=topk, ties=ties, device="cpu")
            dev = evaluate_nested({n: c.to(device) for n, c in q.items()}, labels_q.to(device),
                                  {n: c.to(device) for n, c in db.items()}, labels_db.to(device), topk=topk,
                                  ties=ties, device=device)
            worst = max(worst, max(abs(cpu[n] - dev[n]) for n in lengths))
    return {"max_abs_diff": worst, "tol": TOL["map"], "ok": worst <= TOL["map"]}


def check_losses(device: torch.device) -> dict:
    lengths, classes, num_train, batch = (16, 32, 64), 10, 64, 32
    g = torch.Generator().manual_seed(1)
    longest = torch.randn(batch, lengths[-1], generator=g)
    labels = torch.nn.functional.one_hot(torch.randint(0, classes, (batch,), generator=g), classes).float()
    index = torch.randperm(num_train, generator=g)[:batch]
    out = {}
    for method in sorted(LOSSES):
        results = []
        built = build_losses(method, lengths, classes, num_train, nested=True, seed=0)
        for where in (torch.device("cpu"), device):
            losses = [copy.deepcopy(loss).to(where) for loss in built]
            u = longest.clone().to(where).requires_grad_()
            values = per_length_losses(losses, [u[:, :n] for n in lengths], labels.to(where), index.to(where))
            values.sum().backward()
            results.append((values.detach(), u.grad))
        loss_diff, grad_diff = _rel(results[1][0], results[0][0]), _rel(results[1][1], results[0][1])
        out[method] = {"loss_rel_diff": loss_diff, "grad_rel_diff": grad_diff,
                       "ok": loss_diff <= TOL["loss"] and grad_diff <= TOL["grad"]}
    return out


def check_weighting(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(2)
    lengths = PAPER_LENGTHS
    worst = 0.0
    for trial in range(20):
        grads = torch.randn(len(lengths), lengths[-1], 48, generator=g)
        grads[1:] -= (trial / 10) * grads[:1]  # from aligned to opposing gradients
        rule = ConflictRule(lengths)
        w_cpu, _ = rule(grads)
        w_dev, _ = rule(grads.to(device))
        worst = max(worst, float((w_cpu - w_dev.cpu()).abs().max()))
    return {"max_abs_diff": worst, "tol": TOL["weights"], "ok": worst <= TOL["weights"]}


def check_distillation(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(3)
    longest = torch.randn(64, PAPER_LENGTHS[-1], generator=g)
    results = []
    for where in (torch.device("cpu"), device):
        u = longest.clone().to(where).requires_grad_()
        values = cascade_distillation([u[:, :n] for n in PAPER_LENGTHS])
        (values * torch.arange(1, len(values) + 1, device=where)).sum().backward()
        results.append((values.detach(), u.grad))
    value_diff, grad_diff = _rel(results[1][0], results[0][0]), _rel(results[1][1], results[0][1])
    return {"value_rel_diff": value_diff, "grad_rel_diff": grad_diff, "tol": TOL["distill"],
            "ok": value_diff <= TOL["distill"] and grad_diff <= TOL["distill"]}


# ---------------------------------------------------------------- 2. throughput


def _throughput(device: torch.device, backbone: str, image_size: int, channels: int, batch: int, steps: int,
                warmup: int, lengths: tuple[int, ...], amp: bool, method: str = "csq") -> dict:
    """Images/s of training steps on synthetic images (a pool of 4 batches, held on the device)."""
    g = torch.Generator().manual_seed(0)
    classes = 100
    pool = 4 * batch
    images = torch.randint(0, 256, (pool, channels, image_size, image_size), generator=g, dtype=torch.uint8)
    labels = torch.nn.functional.one_hot(torch.randint(0, classes, (pool,), generator=g), classes).float()
    transform = BatchTransform(IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else BatchTransform((0.5,), (0.5,))
    torch.manual_seed(0)
    net = build_backbone(backbone, pretrained=False, in_channels=channels, image_size=image_size)
    model = HashingModel(net, NestedHashLayer(net.out_features, lengths)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    losses = [loss.to(device) for loss in build_losses(method, lengths, classes, pool, nested=len(lengths) > 1)]
    nested = len(lengths) > 1
    weighting = ConflictAware(lengths) if nested else Uniform()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def run(n_steps: int) -> float:
        loader = _Steps(InMemoryLoader(images, labels, batch, shuffle=True, transform=transform, device=device),
                        n_steps)
        synchronize(device)
        start = time.perf_counter()
        train_epoch(model, losses, loader, optimizer, weighting, 1, device, distill_weight=1.0 if nested else 0.0,
                    scaler=scaler)
        synchronize(device)
        return time.perf_counter() - start

    run(warmup)  # cudnn autotuning, allocator, lazy initialisation
    seconds = run(steps)
    return {"backbone": backbone, "image_size": image_size, "batch": batch, "code_lengths": list(lengths),
            "steps": steps, "amp": scaler is not None, "seconds": seconds, "step_s": seconds / steps,
            "images_per_s": steps * batch / seconds}


class _Steps:
    """Exactly ``steps`` batches from an in-memory loader, epoch after epoch."""

    def __init__(self, loader: InMemoryLoader, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        done = 0
        while done < self.steps:
            for batch in self.loader:
                yield batch
                done += 1
                if done == self.steps:
                    return


def throughput(device: torch.device, quick: bool) -> dict:
    if quick:  # proves the path runs; the numbers mean little
        plans = {"resnet50": dict(backbone="resnet50", image_size=32, channels=3, batch=4, steps=1, warmup=1),
                 "cnn": dict(backbone="cnn", image_size=28, channels=1, batch=32, steps=5, warmup=2)}
    else:
        plans = {"resnet50": dict(backbone="resnet50", image_size=224, channels=3, batch=64, steps=200, warmup=20),
                 "cnn": dict(backbone="cnn", image_size=28, channels=1, batch=64, steps=300, warmup=30)}
    out = {}
    for name, plan in plans.items():
        separate = _throughput(device, lengths=(PAPER_LENGTHS[-1],), amp=True, **plan)
        nhl = _throughput(device, lengths=PAPER_LENGTHS, amp=True, **plan)
        out[name] = {"separate": separate, "nhl": nhl, "nhl_over_separate_step": nhl["step_s"] / separate["step_s"],
                     "speedup_vs_5_separate": 5 * separate["step_s"] / nhl["step_s"]}
    return out


# ---------------------------------------------------------------- 3. data-parallel equivalence


def data_parallel(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"skipped": "not a CUDA run (the CPU/gloo contract is in tests/test_distributed.py)"}
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU visible; the NCCL check needs 2"}
    from nhllib.parallel_check import compare_with_single_process

    report = compare_with_single_process(("csq", "dsh", "dtsh"), world_size=2, device_type="cuda")
    worst = max(max(d["state"], d["weights"], d["dots"], d["buffers"]) for ranks in report.values() for d in ranks)
    return {"ranks": 2, "backend": "nccl", "per_method": report, "max_abs_diff": worst, "tol": DDP_TOL,
            "ok": worst <= DDP_TOL}


# ---------------------------------------------------------------- driver


def _all_ok(node) -> bool:
    if isinstance(node, dict):
        return node.get("ok", True) is not False and all(_all_ok(v) for v in node.values())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: minutes on a CPU, to prove it runs")
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available; use --device cpu --quick to try the script",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick, "python": platform.python_version(),
    }
    sections = {
        "checks": lambda: {"map": check_map(device), "losses": check_losses(device),
                           "weighting": check_weighting(device), "distillation": check_distillation(device)},
        "throughput": lambda: throughput(device, args.quick),
        "data_parallel": lambda: data_parallel(device),
    }
    for name, section in sections.items():
        t0 = time.perf_counter()
        try:
            report[name] = section()
        except Exception as err:  # noqa: BLE001 - one broken section must not hide the others' results
            report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        report[name + "_s"] = time.perf_counter() - t0
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    report["elapsed_s"] = time.perf_counter() - start
    report["ok"] = all(_all_ok(report[name]) for name in sections)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ok": report["ok"], "elapsed_s": round(report["elapsed_s"], 1), "out": str(out)}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
