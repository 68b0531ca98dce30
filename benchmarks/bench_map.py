"""Benchmark: vectorised, tie-aware mAP (nhllib.core.evaluate) against the common per-query loop.

Synthetic CIFAR-like setting (docs/evaluation.md §3): 10 classes, 128-bit ±1 class centres, codes =
sign(centre + Gaussian noise) with 20% bit flips, 1,000 queries x 54,000 class-ordered database items,
nested prefixes of 8/16/32/64/128 bits, mAP over the whole database.

The baseline is the loop found in DeepHash-pytorch / the NHL reference (``CalcTopMap``), in numpy: for
each query, relevance from a label product, Hamming distance from a code product, ``argsort`` (here
stable, so that ties follow database order) and the AP of the sorted relevance. Its values must equal
``ties="index"``; the default ``ties="expected"`` and the optimistic/pessimistic bounds are reported too.

Usage::

    python benchmarks/bench_map.py [--out benchmarks/results/bench_map.json] [--queries 1000] ...

Thread counts are left at their defaults (recorded in the JSON); set ``OMP_NUM_THREADS`` in the
environment to pin torch and the numpy BLAS alike. On a machine shared with other jobs, one thread per
process avoids OpenMP barrier stalls that can dominate the timings of both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nhllib.core.evaluate import evaluate_nested, mean_average_precision
from nhllib.machine import cpu_name

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_map.json"


def make_codes(queries: int, database: int, classes: int, bits: int, flip: float, seed: int):
    """Class-structured ±1 codes: sign(centre + noise), noise scaled so each bit flips with prob. ``flip``."""
    rng = np.random.default_rng(seed)
    sigma = 1.0 / statistics.NormalDist().inv_cdf(1.0 - flip)
    centres = rng.choice([-1.0, 1.0], size=(classes, bits))
    db_cls = np.repeat(np.arange(classes), -(-database // classes))[:database]  # class-ordered, like CIFAR files
    q_cls = np.repeat(np.arange(classes), -(-queries // classes))[:queries]

    def codes(cls: np.ndarray) -> np.ndarray:
        noisy = centres[cls] + sigma * rng.standard_normal((cls.size, bits))
        return np.where(noisy >= 0, 1.0, -1.0).astype(np.float32)

    eye = np.eye(classes, dtype=np.float32)
    return codes(q_cls), eye[q_cls], codes(db_cls), eye[db_cls]


def loop_map(q_codes: np.ndarray, q_labels: np.ndarray, db_codes: np.ndarray, db_labels: np.ndarray,
             topk: int | None = None) -> float:
    """The community per-query loop (CalcTopMap), with a stable argsort and without the [:-1] slice."""
    n_bits = db_codes.shape[1]
    k = db_codes.shape[0] if topk is None else topk
    total = 0.0
    for i in range(q_codes.shape[0]):
        gnd = (q_labels[i] @ db_labels.T > 0).astype(np.float32)
        hamm = 0.5 * (n_bits - db_codes @ q_codes[i])
        order = np.argsort(hamm, kind="stable")
        tgnd = gnd[order][:k]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.arange(1, tsum + 1, dtype=np.float64)
        tindex = np.flatnonzero(tgnd) + 1.0
        total += float(np.mean(count / tindex))
    return total / q_codes.shape[0]


def timed(fn, repeats: int):
    """(result of the last call, wall times in s, process CPU times in s summed over threads)."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return out, times, cpu


def machine_info() -> dict:
    cpu = cpu_name()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_num_threads": torch.get_num_threads(), "git_sha": sha,
        "thread_env": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=54000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lengths", default="8,16,32,64,128", help="comma-separated nested code lengths")
    parser.add_argument("--flip", type=float, default=0.2, help="probability that a bit differs from its centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of the vectorised calls")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    lengths = sorted(int(v) for v in args.lengths.split(","))

    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    qc, ql, dc, dl = make_codes(args.queries, args.database, args.classes, lengths[-1], args.flip, args.seed)
    q_nested = {k: torch.from_numpy(qc[:, :k].copy()) for k in lengths}
    db_nested = {k: torch.from_numpy(dc[:, :k].copy()) for k in lengths}
    ql_t, dl_t = torch.from_numpy(ql), torch.from_numpy(dl)

    # Per length, the loop (once: it is the slow side) and then the vectorised call, interleaved so that
    # both see similar machine load.
    loop_values, loop_times, loop_cpu, per_length = {}, {}, {}, {}
    for k in lengths:
        qk, dk = np.ascontiguousarray(qc[:, :k]), np.ascontiguousarray(dc[:, :k])
        value, times, cpu = timed(lambda: loop_map(qk, ql, dk, dl), 1)
        loop_values[k], loop_times[k], loop_cpu[k] = value, times[0], cpu[0]
        _, times, _ = timed(lambda: mean_average_precision(q_nested[k], ql_t, db_nested[k], dl_t), args.repeats)
        per_length[k] = statistics.median(times)

    nested = {}
    for ties in ("expected", "index"):
        values, times, cpu = timed(lambda: evaluate_nested(q_nested, ql_t, db_nested, dl_t, ties=ties),
                                   args.repeats)
        nested[ties] = {"values": values, "times_s": times, "median_s": statistics.median(times),
                        "cpu_s": cpu}
    bounds = {ties: evaluate_nested(q_nested, ql_t, db_nested, dl_t, ties=ties)
              for ties in ("optimistic", "pessimistic")}

    max_diff = max(abs(nested["index"]["values"][k] - loop_values[k]) for k in lengths)
    assert max_diff < 1e-9, f"ties='index' disagrees with the per-query loop by {max_diff}"

    loop_total = sum(loop_times.values())
    result = {
        "command": " ".join(["python", "benchmarks/bench_map.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {"queries": args.queries, "database": args.database, "classes": args.classes,
                   "lengths": lengths, "flip": args.flip, "seed": args.seed, "repeats": args.repeats,
                   "topk": None},
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "loop": {"values": loop_values, "times_s": loop_times, "total_s": loop_total, "cpu_s": loop_cpu,
                 "total_cpu_s": sum(loop_cpu.values())},
        "evaluate_nested": nested,
        "mean_average_precision_median_s": per_length,
        "mean_average_precision_total_s": sum(per_length.values()),
        "bounds": bounds,
        "index_vs_loop_max_abs_diff": max_diff,
        "speedup": {
            "nested_expected_vs_loop": loop_total / nested["expected"]["median_s"],
            "nested_index_vs_loop": loop_total / nested["index"]["median_s"],
            "per_length_expected_vs_loop": {k: loop_times[k] / per_length[k] for k in lengths},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{args.queries} queries x {args.database} items, torch threads {torch.get_num_threads()}, "
          f"load average {load_start} -> {result['load_average_end']}")
    print(f"{'bits':>5} {'loop s':>8} {'mAP() s':>8} {'loop/mAP()':>10} {'index':>8} {'expected':>8} "
          f"{'optimistic':>10} {'pessimistic':>11}")
    for k in lengths:
        print(f"{k:>5} {loop_times[k]:>8.2f} {per_length[k]:>8.3f} {loop_times[k] / per_length[k]:>10.1f} "
              f"{nested['index']['values'][k]:>8.4f} {nested['expected']['values'][k]:>8.4f} "
              f"{bounds['optimistic'][k]:>10.4f} {bounds['pessimistic'][k]:>11.4f}")
    print(f"all lengths: loop {loop_total:.2f} s | evaluate_nested expected {nested['expected']['median_s']:.3f} s "
          f"({result['speedup']['nested_expected_vs_loop']:.1f}x) | index {nested['index']['median_s']:.3f} s "
          f"({result['speedup']['nested_index_vs_loop']:.1f}x) | index vs loop max |diff| {max_diff:.1e}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
