"""Search with nested binary codes: exhaustive 128-bit search against prefix shortlists, buckets and funnels.

Every configuration answers the same queries (top-1000) in one process; rounds are interleaved, so a busy
neighbour on a shared machine slows all of them alike, and the median over rounds is reported (the best
round is kept in the JSON too). For each configuration: queries per second, speed-up over exhaustive
128-bit search (faiss ``IndexBinaryFlat``), bits scanned per query, and mAP@1000 / precision@100 of the
returned rankings, absolute and relative to exhaustive search, plus the overlap of the returned top-1000
with the exhaustive top-1000.

Data: ``--codes FILE.npz`` (arrays ``query_codes`` (Q, L) ±1, ``db_codes`` (N, L) ±1, ``query_labels``,
``db_labels``; optional ``code_lengths``), e.g. codes of a trained NHL model; or, by default, synthetic
nested codes (see :func:`synthetic_nested_codes`). ``--db-size`` runs the benchmark at each given database
size; a codes file is subsampled or grown with perturbed copies of its items to reach it.

Work measure ``bits_scanned`` (per query): prefix bits x prefix keys compared + re-rank bits x candidates.
For the bucket implementation the prefix keys are the distinct prefixes (an upper bound: near levels are
probed by lookup instead). ``bits_scanned_flat_prefix`` counts the prefix stage as a scan of every item
(prefix bits x N + re-rank bits x shortlist), the textbook cost of a shortlist.

Usage: python benchmarks/bench_retrieval.py [--codes FILE.npz] [--db-size 60000 1000000] [--queries 1000]
                                            [--rounds 3] [--out benchmarks/results/bench_retrieval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nhllib.retrieval import NestedIndex, pack_codes, ranking_metrics, unpack_codes

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


def load_codes_file(path: Path) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    if not path.is_file():
        raise FileNotFoundError(f"--codes file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"query_codes", "db_codes", "query_labels", "db_labels"} - set(data.files)
        if missing:
            raise KeyError(f"{path} lacks arrays {sorted(missing)}")
        arrays = {name: data[name] for name in data.files}
    width = arrays["db_codes"].shape[1]
    if arrays["query_codes"].shape[1] != width:
        raise ValueError(f"query_codes width {arrays['query_codes'].shape[1]} != db_codes width {width}")
    lengths = tuple(int(x) for x in arrays.get("code_lengths", [b for b in DEFAULT_LENGTHS if b <= width]))
    out = {
        "db": pack_codes(arrays["db_codes"]),
        "db_labels": arrays["db_labels"],
        "queries": pack_codes(arrays["query_codes"]),
        "query_labels": arrays["query_labels"],
    }
    return out, lengths


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
    """(name, strategy, params) of every configuration compared; shortlists below k or not below n are skipped."""
    longest = lengths[-1]
    configs: list[dict[str, Any]] = [
        {"name": f"exhaustive {longest}", "strategy": "exhaustive", "params": {"bits": longest}},
        {"name": f"exhaustive {longest} (faiss 1 thread)", "strategy": "exhaustive",
         "params": {"bits": longest, "faiss_threads": 1}},
    ]
    for b in (16, 64):  # the short codes alone, for context
        if b in lengths and b < longest:
            configs.append({"name": f"exhaustive {b}", "strategy": "exhaustive", "params": {"bits": b}})

    def add(name: str, strategy: str, **params: Any) -> None:
        configs.append({"name": name, "strategy": strategy, "params": params})

    for prefix, sizes in ((16, (1000, 2000, 5000)), (32, (2000,)), (8, (5000,))):
        if prefix in lengths and prefix < longest:
            for s in sizes:
                if k <= s < n:
                    add(f"shortlist {prefix}->{longest} s={s}", "shortlist", prefix_bits=prefix, shortlist=s)
    if 16 in lengths and 16 < longest:  # shortlists looked up in a precomputed per-prefix table
        for s in (1000, 2000):
            if k <= s < n:
                add(f"shortlist 16->{longest} s={s} (table)", "shortlist_table", prefix_bits=16, shortlist=s)
    for b, flips in ((16, (0, 1, 2, 3)), (32, (2, 4)), (8, (0,))):
        if b in lengths and b < longest:
            for f in flips:
                add(f"buckets {b} nflip={f} ->{longest}", "buckets", bucket_bits=b, nflip=f, backend="auto")
    if 16 in lengths and 16 < longest:  # both backends explicitly, and faiss IndexBinaryHash as it is
        add(f"buckets 16 nflip=1 ->{longest} (numpy)", "buckets", bucket_bits=16, nflip=1, backend="numpy")
        if longest >= 64:
            add(f"buckets 16 nflip=1 ->{longest} (faiss)", "buckets", bucket_bits=16, nflip=1, backend="faiss")
            for f in (1, 2):
                add(f"faiss IndexBinaryHash 16 nflip={f} *", "faiss_hash", bucket_bits=16, nflip=f)
    for bits, sizes in (((16, 32, longest), (5000, 2000)), ((16, 64, longest), (5000, 1000)),
                        ((8, 16, 32, longest), (20000, 5000, 2000))):
        if set(bits) <= set(lengths) and len(set(bits)) == len(bits) and all(k <= s < n for s in sizes):
            add("funnel " + "->".join(map(str, bits)) + " s=" + "/".join(map(str, sizes)), "funnel",
                bits=bits, shortlists=sizes)
    return configs


def make_call(index: NestedIndex, table_index: NestedIndex, config: dict[str, Any], queries: np.ndarray, k: int,
              stats: bool = False) -> Callable[[], Any]:
    """The search call of a configuration; with ``stats`` it also returns :class:`SearchStats` (not timed).

    ``table_index`` holds the same codes plus precomputed shortlist tables (kept apart so that the plain
    shortlist rows compute their shortlists).
    """
    import faiss

    p = config["params"]
    if config["strategy"] == "exhaustive":
        def exhaustive() -> Any:
            default = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(p.get("faiss_threads", default))
            try:
                return index.search(queries, k, bits=p["bits"])
            finally:
                faiss.omp_set_num_threads(default)
        return exhaustive
    if config["strategy"] in ("shortlist", "shortlist_table"):
        if config["strategy"] == "shortlist_table":
            index = table_index
        return lambda: index.search_shortlist(queries, k, prefix_bits=p["prefix_bits"], shortlist=p["shortlist"],
                                              return_stats=stats)
    if config["strategy"] == "buckets":
        return lambda: index.search_buckets(queries, k, bucket_bits=p["bucket_bits"], nflip=p["nflip"],
                                            backend=p["backend"], return_stats=stats)
    if config["strategy"] == "faiss_hash":
        hashed = faiss.IndexBinaryHash(index.max_length, p["bucket_bits"])
        hashed.add(index.codes())
        hashed.nflip = p["nflip"]
        q_bytes = np.ascontiguousarray(pack_codes(unpack_codes(queries)) if queries.dtype != np.uint8 else queries)

        def faiss_hash() -> Any:
            d, i = hashed.search(q_bytes, k)
            if not stats:
                return d, i
            # same candidate set as the bucket search: take its work statistics
            return d, i, index.search_buckets(queries, 1, bucket_bits=p["bucket_bits"], nflip=p["nflip"],
                                              backend="numpy", return_stats=True)[2]
        return faiss_hash
    return lambda: index.search_funnel(queries, k, bits=p["bits"], shortlists=p["shortlists"], return_stats=stats)


def overlap(ids: np.ndarray, reference: np.ndarray) -> float:
    """Mean fraction of each reference row's ids that appear in the same row of ``ids``."""
    hits = [np.intersect1d(a[a >= 0], b, assume_unique=True).size / b.size for a, b in zip(ids, reference)]
    return float(np.mean(hits))


# ----------------------------------------------------------------------------- run


def run_size(data: dict[str, np.ndarray], lengths: tuple[int, ...], args: argparse.Namespace) -> dict[str, Any]:
    n, n_q = len(data["db"]), len(data["queries"])
    index = NestedIndex(lengths)
    start = time.perf_counter()
    index.add(data["db"])
    add_s = time.perf_counter() - start
    configs = configurations(lengths, args.k, n)
    table_index = NestedIndex(lengths)
    table_index.add(data["db"])
    tables = {}
    for c in configs:
        if c["strategy"] == "shortlist_table":
            start = time.perf_counter()
            n_bytes = table_index.build_shortlist_table(c["params"]["prefix_bits"], c["params"]["shortlist"])
            tables[c["name"]] = {"table_build_s": time.perf_counter() - start, "table_mib": n_bytes / 2**20}
    calls = [make_call(index, table_index, c, data["queries"], args.k) for c in configs]

    # first call: builds the per-length caches (prefix tables, faiss flat/hash copies); timed separately.
    # Results and work statistics come from an extra, untimed call.
    outputs, first_call_s = [], []
    for config, call in zip(configs, calls):
        start = time.perf_counter()
        call()
        first_call_s.append(time.perf_counter() - start)
        outputs.append(make_call(index, table_index, config, data["queries"], args.k, stats=True)())
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(args.rounds):
        for j, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[j].append(time.perf_counter() - start)

    rows = []
    ref_ids = outputs[0][1]
    # speed-ups are relative to the faster exhaustive baseline (faiss with its default threads or with
    # one thread: on a busy machine OpenMP threads can slow faiss down)
    base_time = min(statistics.median(times[0]), statistics.median(times[1]))
    base_metrics = None
    for config, out, t, t_first in zip(configs, outputs, times, first_call_s):
        ids = out[1]
        stats = out[2] if len(out) == 3 else None
        metrics_k = ranking_metrics(ids, data["query_labels"], data["db_labels"], args.k)
        metrics_p = ranking_metrics(ids, data["query_labels"], data["db_labels"], args.precision_k)
        if base_metrics is None:
            base_metrics = (metrics_k["map"], metrics_p["precision"])
        bits = config["params"].get("bits", lengths[-1])
        if config["strategy"] == "exhaustive":
            scanned = flat_prefix = float(bits * n)
            candidates = float(n)
        else:
            scanned = stats.bits_scanned
            flat_prefix = stats.prefix_bits * n + sum(b * c for b, c in zip(stats.rerank_bits, stats.candidates))
            candidates = stats.candidates[-1]
        median_t = statistics.median(t)
        rows.append({
            "name": config["name"],
            "strategy": config["strategy"],
            "params": {key: list(v) if isinstance(v, tuple) else v for key, v in config["params"].items()},
            "time_median_s": median_t,
            "time_best_s": min(t),
            "first_call_s": t_first,
            "qps": n_q / median_t,
            "speedup_vs_exhaustive": base_time / median_t,
            "bits_scanned": scanned,
            "bits_scanned_flat_prefix": flat_prefix,
            "final_candidates_per_query": candidates,
            f"map_at_{args.k}": metrics_k["map"],
            f"precision_at_{args.precision_k}": metrics_p["precision"],
            "map_ratio": metrics_k["map"] / base_metrics[0] if base_metrics[0] else float("nan"),
            "precision_ratio": metrics_p["precision"] / base_metrics[1] if base_metrics[1] else float("nan"),
            f"overlap_at_{args.k}": overlap(ids, ref_ids),
            **tables.get(config["name"], {}),
        })
    return {"db_size": n, "n_queries": n_q, "add_s": add_s, "results": rows}


def print_table(run: dict[str, Any], k: int, pk: int) -> None:
    print(f"\nN = {run['db_size']:,} database items, {run['n_queries']:,} queries, top-{k}")
    head = f"{'configuration':40s} {'QPS':>8s} {'speedup':>8s} {'Mbit/q':>8s} {'mAP@' + str(k):>9s} {'rel':>6s} " \
           f"{'P@' + str(pk):>7s} {'rel':>6s} {'overlap':>8s}"
    print(head)
    print("-" * len(head))
    for r in run["results"]:
        print(f"{r['name']:40s} {r['qps']:8.0f} {r['speedup_vs_exhaustive']:7.2f}x {r['bits_scanned'] / 1e6:8.2f} "
              f"{r[f'map_at_{k}']:9.4f} {r['map_ratio']:6.3f} {r[f'precision_at_{pk}']:7.4f} "
              f"{r['precision_ratio']:6.3f} {r[f'overlap_at_{k}']:8.3f}")


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
            data, lengths = load_codes_file(args.codes)
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
        "notes": "rows marked * use faiss IndexBinaryHash directly: same candidates as 'buckets', but ties at "
                 "the k-th distance in faiss's bucket-visit order, not id order; 'buckets ... (faiss)' is the "
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
