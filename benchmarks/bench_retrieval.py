"""Search with nested binary codes: exhaustive 128-bit search against prefix shortlists, buckets and funnels.

Every configuration answers the same queries (top-1000) in one process; rounds are interleaved, so a busy
neighbour on a shared machine slows all of them alike, and the median over rounds is reported (the best
round is kept in the JSON too). For each configuration: queries per second, speed-up over exhaustive
128-bit search (faiss ``IndexBinaryFlat``), bits scanned per query, and mAP@1000 / precision@100 of the
returned rankings, absolute and relative to exhaustive search, plus the overlap of the returned top-1000
with the exhaustive top-1000.

Data: ``--codes FILE.npz`` (arrays ``query_codes`` (Q, L) and ``db_codes`` (N, L), ±1 or packed with
``numpy.packbits`` (Q, L / 8), ``query_labels``, ``db_labels``; optional ``code_lengths``), e.g. the
``codes.npz`` a study run saves, read with :func:`nhllib.store.results.read_codes`; or, by default,
synthetic nested codes (see :func:`synthetic_nested_codes`). ``--db-size`` runs the benchmark at each given
database size; a codes file is subsampled or grown to reach it, each added item a copy of a random real item
with every bit flipped with probability ``--grow-flip`` and the original's labels. A grown database is not
a sample of real images: past the real size the numbers show how the cost scales, not the quality a real
database of that size would give.
The ``filled`` column is the share of the k result slots holding an item (bucket searches can find fewer
than k candidates; mAP@k does not count the empty slots, precision@k does).

Work measure ``bits_scanned`` (per query): prefix bits x prefix keys compared + re-rank bits x candidates.
For the bucket implementation the prefix keys are the distinct prefixes (an upper bound: near levels are
probed by lookup instead). ``bits_scanned_flat_prefix`` counts the prefix stage as a scan of every item
(prefix bits x N + re-rank bits x shortlist), the textbook cost of a shortlist.

The timing and scoring are :func:`nhllib.retrieval.compare.compare_strategies` (the same code behind
``notebooks/04_retrieval.ipynb``); this script adds the data, a longer list of configurations and the JSON.

Usage: python benchmarks/bench_retrieval.py [--codes FILE.npz] [--db-size 60000 1000000] [--queries 1000]
                                            [--rounds 3] [--out benchmarks/results/bench_retrieval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nhllib.retrieval import pack_codes, unpack_codes
from nhllib.retrieval.compare import compare_strategies, default_configs
from nhllib.store.results import read_codes

DEFAULT_LENGTHS = (8, 16, 32, 64, 128)


# ----------------------------------------------------------------------------- data


def synthetic_nested_codes(
    n_db: int,
    n_query: int,
    *,
    n_bits: int = 128,
    n_classes: int = 10,
    n_groups: int = 4,
    group_spread: float = 0.25,
    flip_first: float = 0.08,
    flip_last: float = 0.16,
    confused: float = 0.06,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Packed codes that behave like a trained nested hashing model's, with class labels.

    Classes have ±1 centres; to make some classes confusable (as shirt / T-shirt / pullover in
    Fashion-MNIST) the centres come in ``n_groups`` groups: each class centre is its group's centre with
    ``group_spread`` of the bits flipped. An item is its class centre with each bit j flipped with
    probability ``p_j * difficulty`` (capped at 0.5), where ``p_j`` rises linearly from ``flip_first`` at
    bit 0 to ``flip_last`` at the last bit and ``difficulty ~ Gamma(2, 0.5)`` (mean 1) varies per item.

    A fraction ``confused`` of items is embedded at the centre of another class of its group (the model
    mistakes them, as a small CNN misclassifies several % of Fashion-MNIST test images): they cap the mAP of
    every length, so longer codes gain less and less, as with trained codes.

    Why this shape: in a nested code the first bits are shared by every length and trained by every
    length's loss, so they are the most reliable, and a short prefix is an informative but coarse code
    (many items share it: ties and big buckets), which is what makes prefix shortlists work or fail.
    Queries and database items are drawn the same way. Generated in chunks; only packed bytes are kept.
    """
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_groups, n_bits))
    class_group = np.arange(n_classes) % n_groups
    spread = rng.random((n_classes, n_bits)) < group_spread
    centres = np.where(spread, -groups[class_group], groups[class_group]).astype(np.int8)
    p = np.linspace(flip_first, flip_last, n_bits)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        packed, labels = [], []
        for lo in range(0, n, 100_000):
            m = min(100_000, n - lo)
            lab = rng.integers(0, n_classes, m)
            # a confused item takes the centre of another class in its group (classes c and c + n_groups*j)
            shift = rng.integers(1, max(2, n_classes // n_groups), m) * n_groups
            embedded = np.where(rng.random(m) < confused, (lab + shift) % n_classes, lab)
            difficulty = rng.gamma(2.0, 0.5, size=(m, 1))
            flips = rng.random((m, n_bits)) < np.minimum(p[None, :] * difficulty, 0.5)
            packed.append(pack_codes(np.where(flips, -centres[embedded], centres[embedded])))
            labels.append(lab)
        return np.concatenate(packed), np.concatenate(labels)

    db, db_labels = draw(n_db)
    q, q_labels = draw(n_query)
    return {"db": db, "db_labels": db_labels, "queries": q, "query_labels": q_labels}


def resize_database(
    data: dict[str, np.ndarray], n: int, flip: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Subsample the database to ``n`` items, or grow it with copies of random items, each bit flipped w.p. ``flip``."""
    db, labels = data["db"], data["db_labels"]
    if n <= len(db):
        keep = np.sort(rng.choice(len(db), n, replace=False))
        return {**data, "db": db[keep], "db_labels": labels[keep]}
    extra_db, extra_labels = [], []
    for lo in range(len(db), n, 100_000):
        m = min(100_000, n - lo)
        src = rng.integers(0, len(db), m)
        codes = unpack_codes(db[src])
        codes = np.where(rng.random(codes.shape) < flip, -codes, codes)
        extra_db.append(pack_codes(codes))
        extra_labels.append(labels[src])
    return {**data, "db": np.concatenate([db, *extra_db]), "db_labels": np.concatenate([labels, *extra_labels])}


# ----------------------------------------------------------------------------- configurations


def configurations(lengths: tuple[int, ...], k: int, n: int) -> list[dict[str, Any]]:
    """Every configuration compared (in :func:`nhllib.retrieval.compare.compare_strategies` format).

    :func:`~nhllib.retrieval.compare.default_configs` (exhaustive, shortlists, tables, buckets at the 16-bit
    prefix) plus more prefixes, shortlist sizes, flips, both bucket backends, faiss ``IndexBinaryHash`` as it
    is, and funnels. Shortlists below k or not below n are left out; configurations the lengths do not allow
    are skipped by ``compare_strategies``.
    """
    longest = lengths[-1]
    configs = default_configs(lengths, k, n)
    seen = {repr(sorted(c.items())) for c in configs}

    def add(strategy: str, **params: Any) -> None:
        config = {"strategy": strategy, **params}
        sizes = [params["shortlist"]] if "shortlist" in params else list(params.get("shortlists", []))
        if all(k <= s < n for s in sizes) and repr(sorted(config.items())) not in seen:
            seen.add(repr(sorted(config.items())))
            configs.append(config)

    if 64 in lengths and 64 < longest:
        add("exhaustive", bits=64)  # a mid length alone, for context
    for prefix, sizes in ((16, (1000, 2000, 5000)), (32, (2000,)), (8, (5000,))):
        for s in sizes:
            add("shortlist", prefix_bits=prefix, shortlist=s)
    for s in (1000, 2000):  # shortlists looked up in a precomputed per-prefix table
        add("shortlist_table", prefix_bits=16, shortlist=s)
    for b, flips in ((16, (0, 1, 2, 3)), (32, (2, 4)), (8, (0,))):
        for f in flips:
            add("buckets", bucket_bits=b, nflip=f)
    add("buckets", bucket_bits=16, nflip=1, backend="numpy")  # both backends explicitly
    add("buckets", bucket_bits=16, nflip=1, backend="faiss")
    for f in (1, 2):
        add("faiss_hash", bucket_bits=16, nflip=f)
    for bits, sizes in (((16, 32, longest), (5000, 2000)), ((16, 64, longest), (5000, 1000)),
                        ((8, 16, 32, longest), (20000, 5000, 2000))):
        if len(set(bits)) == len(bits):
            add("funnel", bits=bits, shortlists=sizes)
    return configs


# ----------------------------------------------------------------------------- run


def run_size(data: dict[str, np.ndarray], lengths: tuple[int, ...], args: argparse.Namespace) -> dict[str, Any]:
    frame = compare_strategies(data["queries"], data["db"], data["query_labels"], data["db_labels"], lengths,
                               k=args.k, configs=configurations(lengths, args.k, len(data["db"])),
                               rounds=args.rounds, precision_k=args.precision_k)
    rows = [{key: value for key, value in row.items() if not (isinstance(value, float) and np.isnan(value))}
            for row in frame.to_dict("records")]
    return {"db_size": len(data["db"]), "n_queries": len(data["queries"]), "add_s": frame.attrs["add_s"],
            "results": rows}


def print_table(run: dict[str, Any], k: int, pk: int) -> None:
    print(f"\nN = {run['db_size']:,} database items, {run['n_queries']:,} queries, top-{k}")
    head = f"{'configuration':48s} {'QPS':>8s} {'speedup':>8s} {'Mbit/q':>8s} {'mAP@' + str(k):>9s} {'rel':>6s} " \
           f"{'P@' + str(pk):>7s} {'rel':>6s} {'overlap':>8s} {'filled':>7s}"
    print(head)
    print("-" * len(head))
    for r in run["results"]:
        print(f"{r['configuration']:48s} {r['queries_per_s']:8.0f} {r['speedup']:7.2f}x {r['bits_scanned'] / 1e6:8.2f} "
              f"{r['map_at_k']:9.4f} {r['map_ratio']:6.3f} {r[f'precision_at_{pk}']:7.4f} "
              f"{r['precision_ratio']:6.3f} {r['overlap_at_k']:8.3f} {r['filled_at_k']:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=Path, default=None,
                        help="npz with query_codes, db_codes, query_labels, db_labels (default: synthetic codes)")
    parser.add_argument("--db-size", type=int, nargs="+", default=[60_000], help="database sizes to run")
    parser.add_argument("--queries", type=int, default=1000, help="number of queries (a codes file: its first ones)")
    parser.add_argument("--k", type=int, default=1000, help="results per query; mAP@k")
    parser.add_argument("--precision-k", type=int, default=100, help="precision@k cut-off")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration (median reported)")
    parser.add_argument("--grow-flip", type=float, default=0.05,
                        help="bit-flip probability of the copies that grow a codes file's database")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_retrieval.json")
    args = parser.parse_args()
    if args.precision_k > args.k:
        parser.error("--precision-k must be <= --k")

    import faiss

    runs = []
    load_start = os.getloadavg()
    for n in args.db_size:
        rng = np.random.default_rng(args.seed)
        if args.codes is None:
            data = synthetic_nested_codes(n, args.queries, seed=args.seed)
            lengths = DEFAULT_LENGTHS
            source = {"kind": "synthetic", "generator": "synthetic_nested_codes", "seed": args.seed}
        else:
            queries, db, query_labels, db_labels, lengths = read_codes(args.codes)
            data = {"db": db, "db_labels": db_labels, "queries": queries, "query_labels": query_labels}
            data["queries"] = data["queries"][: args.queries]
            data["query_labels"] = data["query_labels"][: args.queries]
            if n != len(data["db"]):
                data = resize_database(data, n, args.grow_flip, rng)
            source = {"kind": "file", "path": str(args.codes), "grow_flip": args.grow_flip, "seed": args.seed}
        run = run_size(data, lengths, args)
        run["data"] = {**source, "code_lengths": list(lengths)}
        runs.append(run)
        print_table(run, args.k, args.precision_k)

    record = {
        "benchmark": "bench_retrieval",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "k": args.k,
        "precision_k": args.precision_k,
        "rounds": args.rounds,
        "timing": "median over interleaved rounds; speed-up relative to the faster of the two exhaustive "
                  "longest-length rows (faiss default threads, faiss 1 thread)",
        "notes": "faiss_hash rows use faiss IndexBinaryHash directly: same candidates as 'buckets', but ties at "
                 "the k-th distance in faiss's bucket-visit order, not id order; 'buckets ..., faiss' is the "
                 "same search with the id tie order restored by a range search",
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "nested_index_threads": os.cpu_count(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
