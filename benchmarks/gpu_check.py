"""One-shot GPU check: device paths equal the CPU, a real run's throughput, AMP against fp32, determinism.

    python benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --device cpu --quick     # a few minutes: proves the script runs (tests do this)

Fashion-MNIST must be reachable (``--data-dir``, default ``data``: ``data/fashion-mnist/`` holding the four IDX
files, or ``$NHL_DATA_DIR``, or the Debian package). On a fresh GPU machine: copy the four files there first.

Sections (each recorded in the JSON; the script exits 1 if any check fails). What to expect on the first GPU:

1. ``checks``: the parts with device paths computed on ``--device`` and on the CPU, with their largest
   differences: the mAP evaluation (every tie mode, nested codes), every loss (values and gradients), the
   conflict rule, the cascade distillation. Expected: every ``ok`` true.
2. ``throughput``: the compute ceiling: training steps on synthetic images already on the device (a
   ``paper``-like ResNet-50 at 224 px under AMP with ``channels_last``, then the small CNN at 28 px), images/s
   of one single-length model (``separate``) and of the full NHL model (5 lengths, conflict weighting,
   distillation), and their per-step time ratio. A real run cannot beat these numbers.
3. ``real_run``: the same two backbones through the real path, ``load_data`` -> ``train_step``
   (:func:`nhllib.training.feed_timing.feed_and_step_times`: Fashion-MNIST on the device, batches gathered, resized to
   224 px for ResNet-50 and normalised there): ``images_per_s``, ``build_s`` (making a batch alone) against
   ``step_s``, ``feed_share`` and ``peak_memory_gib``. Expected on CUDA: ``feed_share`` well below 1 (the
   batch is built on the device; compare ``benchmarks/results/bench_feed.json``, measured on a CPU) and
   ``images_per_s`` not far below ``throughput``'s; ``peak_memory_gib`` is None on a CPU.
4. ``amp_vs_fp32``: one short real training (small CNN, NHL with 5 lengths, CSQ) under AMP and in fp32 from the
   same seed: query mAP per length, their differences, and ``eval_s`` (one evaluation: validation and query
   against the database). Expected: ``amp_active`` true on CUDA (false, and differences 0, on a CPU); the mAP
   differences are those of two slightly different trainings, a few hundredths at most being ordinary; a
   difference of several tenths means AMP breaks a loss.
5. ``determinism``: the fp32 training twice: the largest mAP and parameter differences. Expected 0 on a CPU;
   on CUDA non-deterministic kernels (atomic adds in backward passes) may leave small differences.
6. ``profile_estimate``: the time of ``studies/gpu.yaml`` from ``real_run.cnn``'s step times and
   ``amp_vs_fp32``'s evaluation time: an upper bound that assumes every run trains all its epochs (early
   stopping ends many sooner). Copy it into the profile's header after the first run.
7. ``data_parallel``: with two GPUs or more, the data-parallel contract on NCCL (2 ranks with B/2 against one
   GPU with B, :mod:`nhllib.training.parallel_check`); skipped, with the reason, otherwise.

Top level: ``device_name`` (the GPU's or the CPU's model), ``peak_memory_gib`` (the largest of the sections,
None on a CPU), versions, ``elapsed_s``. Sized for at most 8 minutes on one H100/H200 (not yet measured).
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

from nhllib.core.distill import cascade_distillation
from nhllib.core.evaluate import TIE_MODES, evaluate_nested
from nhllib.core.losses import LOSSES, build_losses, per_length_losses
from nhllib.core.model import HashingModel
from nhllib.core.nested import NestedHashLayer
from nhllib.core.weighting import ConflictAware, ConflictRule, Uniform
from nhllib.data.loader import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, InMemoryLoader
from nhllib.training.backbones import build_backbone
from nhllib.training.config import RunConfig
from nhllib.training.feed_timing import LoopedBatches, feed_and_step_times
from nhllib.training.train import train_epoch
from nhllib.utils import amp_active, synchronize

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
        loader = LoopedBatches(InMemoryLoader(images, labels, batch, shuffle=True, transform=transform, device=device),
                        n_steps)
        synchronize(device)
        start = time.perf_counter()
        train_epoch(model, losses, loader, optimizer, weighting, 1, device, distill_weight=1.0 if nested else 0.0,
                    scaler=scaler)
        synchronize(device)
        return time.perf_counter() - start

    if warmup:
        run(warmup)  # cudnn autotuning, allocator, lazy initialisation
    seconds = run(steps)
    return {"backbone": backbone, "image_size": image_size, "batch": batch, "code_lengths": list(lengths),
            "steps": steps, "amp": scaler is not None, "seconds": seconds, "step_s": seconds / steps,
            "images_per_s": steps * batch / seconds}


def throughput(device: torch.device, quick: bool) -> dict:
    if quick:  # proves the path runs; the numbers mean little
        plans = {"resnet50": dict(backbone="resnet50", image_size=32, channels=3, batch=4, steps=1, warmup=0),
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


# ---------------------------------------------------------------- 3-6. a real run: feed, AMP, determinism, estimate


def _run_config(device: torch.device, data_dir: str, quick: bool, **params) -> RunConfig:
    sizes = (dict(query_per_class=5, train_per_class=10, val_per_class=5, database_per_class=20) if quick
             else dict(query_per_class=100, train_per_class=500, val_per_class=100, database_per_class=None))
    values = dict(study="gpu_check", dataset="fashion-mnist", data_dir=data_dir, device=str(device), seed=0,
                  method="csq", batch_size=64, eval_batch_size=4096, amp=True, **sizes)
    return RunConfig.from_dict({**values, **params})


def real_run(device: torch.device, data_dir: str, quick: bool) -> dict:
    """Images/s of load_data -> train_step per backbone, batch building against the step, peak memory."""
    if quick:  # proves the path runs; the numbers mean little
        plans = {"resnet50": dict(backbone="resnet50", image_size=32, batch_size=4, steps=1, warmup=0),
                 "cnn": dict(backbone="cnn", batch_size=32, steps=5, warmup=2)}
    else:
        plans = {"resnet50": dict(backbone="resnet50", image_size=224, batch_size=64, steps=100, warmup=10),
                 "cnn": dict(backbone="cnn", batch_size=64, steps=300, warmup=30)}
    out = {}
    for name, plan in plans.items():
        steps, warmup = plan.pop("steps"), plan.pop("warmup")
        out[name] = {
            variant: feed_and_step_times(_run_config(device, data_dir, quick, variant=variant,
                                                     code_lengths=lengths, **plan), steps, warmup)
            for variant, lengths in (("separate", (PAPER_LENGTHS[-1],)), ("nhl", PAPER_LENGTHS))
        }
    return out


def _short_training(device: torch.device, data_dir: str, quick: bool, amp: bool) -> dict:
    from nhllib.training.experiment import build_run

    cfg = _run_config(device, data_dir, quick, backbone="cnn", variant="nhl", code_lengths=PAPER_LENGTHS, amp=amp,
                      epochs=1 if quick else 4, eval_every=1 if quick else 2, patience=0)
    built = build_run(cfg, progress=False)
    result = built.fit()
    evaluations = sum(row["metric"] == "eval_time_s" for row in result.history)
    state = {k: v.detach().float().cpu() for k, v in built.model.state_dict().items()}
    return {"amp_active": amp_active(amp, built.device), "epochs": result.epochs_run,
            "train_time_s": result.train_time_s, "eval_s": result.eval_time_s / max(evaluations, 1),
            "query_map": {str(n): v for n, v in result.query_map_best.items()}, "state": state,
            "sizes": built.data.sizes()}


def amp_and_determinism(device: torch.device, data_dir: str, quick: bool) -> tuple[dict, dict]:
    """The same short training under AMP and twice in fp32: mAP differences per length, parameter differences."""
    amp = _short_training(device, data_dir, quick, amp=True)
    fp32 = _short_training(device, data_dir, quick, amp=False)
    again = _short_training(device, data_dir, quick, amp=False)
    lengths = list(fp32["query_map"])
    compared = {
        "amp_active": amp["amp_active"], "sizes": fp32["sizes"], "epochs": fp32["epochs"],
        "map_amp": amp["query_map"], "map_fp32": fp32["query_map"],
        "map_diff": {n: amp["query_map"][n] - fp32["query_map"][n] for n in lengths},
        "train_time_s": {"amp": amp["train_time_s"], "fp32": fp32["train_time_s"]},
        "eval_s": fp32["eval_s"],
    }
    param_diff = max(float((fp32["state"][k] - again["state"][k]).abs().max()) for k in fp32["state"])
    map_diff = max(abs(fp32["query_map"][n] - again["query_map"][n]) for n in lengths)
    determinism = {"runs": 2, "max_map_diff": map_diff, "max_param_diff": param_diff,
                   "identical": map_diff == 0.0 and param_diff == 0.0}
    return compared, determinism


def profile_estimate(real: dict, eval_s: float, profile: str = "gpu") -> dict:
    """Upper bound on ``profile``'s time from the measured CNN step times: every run trains all its epochs."""
    from dataclasses import replace

    from nhllib.data import load_data
    from nhllib.study import load_profile

    configs = load_profile(profile).configs
    num_train: dict = {}  # training images per data configuration, read from the data itself
    total_train = total_eval = 0.0
    for cfg in configs:
        evaluations = 1
        if cfg.plan.trains:
            key = replace(cfg.data, batch_size=1, eval_batch_size=1)
            if key not in num_train:
                num_train[key] = load_data(key).num_train
            per_epoch = -(-num_train[key] // cfg.data.batch_size)
            step_s = real["cnn"]["nhl" if len(cfg.model.code_lengths) > 1 else "separate"]["step_s"]
            total_train += cfg.training.epochs * per_epoch * step_s
            evaluations = -(-cfg.training.epochs // cfg.training.eval_every) + 1  # and the final evaluation
        total_eval += evaluations * eval_s
    return {"profile": profile, "runs": len(configs), "backbones": sorted({c.model.backbone for c in configs}),
            "train_h_at_most": total_train / 3600, "eval_h_at_most": total_eval / 3600,
            "total_h_at_most": (total_train + total_eval) / 3600,
            "basis": "real_run.cnn step_s (separate: 1 length, nhl: 5) x epochs x ceil(train images / batch), plus "
                     "amp_vs_fp32.eval_s per evaluation; every run trains all its epochs (an upper bound)"}


# ---------------------------------------------------------------- 7. data-parallel equivalence


def data_parallel(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"skipped": "not a CUDA run (the CPU/gloo contract is in tests/training/test_distributed.py)"}
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU visible; the NCCL check needs 2"}
    from nhllib.training.parallel_check import compare_with_single_process

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
    parser.add_argument("--data-dir", default="data", help="data folder holding fashion-mnist/ (default: data)")
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available; use --device cpu --quick to try the script",
              file=sys.stderr)
        return 2
    from nhllib.machine import cpu_name

    start = time.perf_counter()
    report: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick, "python": platform.python_version(),
    }
    if device.type == "cuda":
        report["device_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    shared: dict = {}

    def amp_section() -> dict:
        shared["amp"], shared["determinism"] = amp_and_determinism(device, args.data_dir, args.quick)
        return shared["amp"]

    sections = {
        "checks": lambda: {"map": check_map(device), "losses": check_losses(device),
                           "weighting": check_weighting(device), "distillation": check_distillation(device)},
        "throughput": lambda: throughput(device, args.quick),
        "real_run": lambda: real_run(device, args.data_dir, args.quick),
        "amp_vs_fp32": amp_section,
        "determinism": lambda: shared["determinism"],
        "profile_estimate": lambda: profile_estimate(report["real_run"], report["amp_vs_fp32"]["eval_s"]),
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
    peaks = [v for v in _values(report.get("real_run"), "peak_memory_gib") if v is not None]
    report["peak_memory_gib"] = max(peaks) if peaks else None
    report["elapsed_s"] = time.perf_counter() - start
    report["ok"] = all(_all_ok(report[name]) for name in sections)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ok": report["ok"], "elapsed_s": round(report["elapsed_s"], 1), "out": str(out)}))
    return 0 if report["ok"] else 1


def _values(node, key: str):
    """Every value stored under ``key`` in a nested dict."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            else:
                yield from _values(v, key)


if __name__ == "__main__":
    sys.exit(main())
