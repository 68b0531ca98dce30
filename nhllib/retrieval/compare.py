"""Side-by-side timing and quality of retrieval strategies over one set of nested codes.

:func:`compare_strategies` answers the same queries with exhaustive search at the longest length and with
the nested strategies of :class:`~nhllib.retrieval.NestedIndex` (prefix shortlist + re-rank, precomputed
shortlist tables, prefix buckets, funnels, faiss ``IndexBinaryHash``), and returns one row per
configuration: time per query, work (bits scanned per query) and the quality of the returned rankings
(:func:`~nhllib.retrieval.ranking_metrics`), absolute and relative to exhaustive search.

Timing protocol: each configuration is called once untimed-for-the-median (that call builds its caches:
bucket tables, faiss copies; its time is kept as ``first_call_s``), once more for its results and work
statistics, then ``rounds`` timed rounds are run *interleaved* (configuration 1, 2, ..., then again), so a
busy neighbour on a shared machine slows every configuration alike; the median is reported. All queries
go in one batch, so ``ms_per_query`` is the batch time divided by the number of queries.

A configuration is a flat dict: ``{"strategy": ..., **parameters}``, with the strategies

- ``exhaustive``: ``bits`` (default: longest), optional ``faiss_threads``;
- ``shortlist`` / ``shortlist_table``: ``prefix_bits``, ``shortlist``, optional ``rerank_bits`` (the table
  variant looks shortlists up in :meth:`~nhllib.retrieval.NestedIndex.build_shortlist_table`);
- ``buckets``: ``bucket_bits``, ``nflip``, optional ``rerank_bits``, ``backend``;
- ``funnel``: ``bits`` (increasing lengths), ``shortlists``;
- ``faiss_hash``: ``bucket_bits``, ``nflip`` (faiss ``IndexBinaryHash`` as it is: ties at the k-th
  distance in faiss's visit order, not by id).

The codes a study run saved are read by :func:`nhllib.results.read_codes` (this package knows no run folders).
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .hamming import require_faiss
from .metrics import ranking_metrics
from .nested import NestedIndex
from .packing import as_packed

__all__ = [
    "STRATEGIES",
    "compare_strategies",
    "default_configs",
    "summarize_tradeoff",
    "summary",
]

logger = logging.getLogger(__name__)

STRATEGIES = ("exhaustive", "shortlist", "shortlist_table", "buckets", "funnel", "faiss_hash")
_REQUIRED = {
    "exhaustive": (),
    "shortlist": ("prefix_bits", "shortlist"),
    "shortlist_table": ("prefix_bits", "shortlist"),
    "buckets": ("bucket_bits", "nflip"),
    "funnel": ("bits", "shortlists"),
    "faiss_hash": ("bucket_bits", "nflip"),
}
_SUMMARY = ["configuration", "strategy", "ms_per_query", "queries_per_s", "speedup", "bits_scanned",
            "map_at_k", "map_ratio", "precision_ratio", "overlap_at_k", "filled_at_k"]
_MAX_BUCKET_BITS = 64  # prefix keys are one machine word


# ----------------------------------------------------------------------------- configurations


def default_configs(code_lengths: Sequence[int], k: int, n_db: int) -> list[dict[str, Any]]:
    """The configurations compared by default, valid for ``code_lengths``, ``k`` and a database of ``n_db``.

    Exhaustive search at the longest length (faiss with its default threads, and with one thread: on a
    busy machine OpenMP threads can slow faiss down) and at the prefix length alone; with the prefix
    ``p`` = 16 bits (or the shortest length >= 16 below the longest): shortlists of 500 / 1000 / 2000
    re-ranked at the longest length, computed and looked up in a precomputed table, and buckets of the
    ``p``-bit prefix probed within 0, 1 and 2 bit flips. Shortlists below ``k`` (invalid) or not below
    ``n_db`` (the whole database: the exhaustive result) are left out.
    """
    lengths = tuple(sorted(int(v) for v in code_lengths))
    longest = lengths[-1]
    configs: list[dict[str, Any]] = [
        {"strategy": "exhaustive", "bits": longest},
        {"strategy": "exhaustive", "bits": longest, "faiss_threads": 1},
    ]
    prefix = next((b for b in lengths if 16 <= b < longest), None)
    if prefix is None:
        logger.info("no prefix length >= 16 below %d bits in %s: exhaustive search only", longest, lengths)
        return configs
    configs.append({"strategy": "exhaustive", "bits": prefix})
    sizes = [s for s in (500, 1000, 2000) if k <= s < n_db]
    configs += [{"strategy": "shortlist", "prefix_bits": prefix, "shortlist": s} for s in sizes]
    if prefix <= _MAX_BUCKET_BITS:
        configs += [{"strategy": "shortlist_table", "prefix_bits": prefix, "shortlist": s} for s in sizes]
        configs += [{"strategy": "buckets", "bucket_bits": prefix, "nflip": f} for f in (0, 1, 2)]
    return configs


def _lengths_of(config: Mapping[str, Any], longest: int) -> tuple[int, ...]:
    """(first-stage length, ..., ranking length) of a configuration."""
    s = config["strategy"]
    if s == "exhaustive":
        return (int(config.get("bits", longest)),)
    if s in ("shortlist", "shortlist_table"):
        return int(config["prefix_bits"]), int(config.get("rerank_bits", longest))
    if s in ("buckets",):
        return int(config["bucket_bits"]), int(config.get("rerank_bits", longest))
    if s == "faiss_hash":
        return int(config["bucket_bits"]), longest
    return tuple(int(b) for b in config["bits"])


def _label(config: Mapping[str, Any], longest: int) -> str:
    """A readable description of the parameters, e.g. ``16→128, s=1000``."""
    s = config["strategy"]
    chain = "→".join(map(str, _lengths_of(config, longest)))
    if s == "exhaustive":
        threads = int(config.get("faiss_threads", 0))
        return f"{chain} bits" + (f", faiss {threads} thread{'s' * (threads != 1)}" if threads else "")
    if s in ("shortlist", "shortlist_table"):
        return f"{chain}, s={config['shortlist']}" + (", precomputed table" if s == "shortlist_table" else "")
    if s in ("buckets", "faiss_hash"):
        backend = config.get("backend", "auto")
        return f"{chain}, nflip={config['nflip']}" + ("" if backend == "auto" else f", {backend}")
    return f"{chain}, s=" + "/".join(map(str, config["shortlists"]))


def _short_label(config: Mapping[str, Any], longest: int) -> str:
    """What tells a configuration apart from the others of its strategy (a figure's point label)."""
    s = config["strategy"]
    if s == "exhaustive":
        return f"{_lengths_of(config, longest)[0]} b" + (f", {config['faiss_threads']} thr" if "faiss_threads" in config
                                                        else "")
    if s in ("shortlist", "shortlist_table"):
        return f"s={config['shortlist']}"
    if s in ("buckets", "faiss_hash"):
        backend = config.get("backend", "auto")
        return f"nflip={config['nflip']}" + ("" if backend == "auto" else f" {backend}")
    return "/".join(map(str, config["shortlists"]))


def _invalid_reason(config: Mapping[str, Any], lengths: tuple[int, ...], k: int) -> str | None:
    """Why a well-formed configuration cannot run on these lengths / this k (None: it can)."""
    longest = lengths[-1]
    chain = _lengths_of(config, longest)
    missing = [b for b in chain if b not in lengths]
    if missing:
        return f"lengths {missing} are not among the code lengths {lengths}"
    if any(b <= a for a, b in itertools.pairwise(chain)):
        return f"lengths {chain} must increase from the first stage to the ranking length"
    s = config["strategy"]
    if s in ("shortlist_table", "buckets", "faiss_hash") and chain[0] > _MAX_BUCKET_BITS:
        return f"a {s} prefix must be at most {_MAX_BUCKET_BITS} bits, got {chain[0]}"
    if s in ("shortlist", "shortlist_table") and int(config["shortlist"]) < k:
        return f"shortlist {config['shortlist']} is below k={k}"
    if s == "funnel":
        sizes = [int(v) for v in config["shortlists"]]
        increasing = any(b > a for a, b in itertools.pairwise(sizes))
        if len(sizes) != len(chain) - 1 or any(v < k for v in sizes) or increasing:
            return f"funnel shortlists {sizes} must be one per stage, >= k={k} and non-increasing"
    if (s == "faiss_hash" or config.get("backend") == "faiss") and chain[-1] < 64:
        return f"faiss IndexBinaryHash re-ranks codes of at least 64 bits, got {chain[-1]}"
    return None


def _checked(configs: Sequence[Mapping[str, Any]], lengths: tuple[int, ...], k: int) -> list[dict[str, Any]]:
    """Well-formed configurations that can run; the others are skipped with a warning. Malformed ones raise."""
    out = []
    for config in configs:
        if not isinstance(config, Mapping):
            raise TypeError(f"each configuration must be a dict, got {type(config).__name__}")
        strategy = config.get("strategy")
        if strategy not in STRATEGIES:
            raise ValueError(f"configuration {dict(config)}: strategy must be one of {STRATEGIES}, got {strategy!r}")
        absent = [p for p in _REQUIRED[strategy] if p not in config]
        if absent:
            raise ValueError(f"configuration {dict(config)}: strategy {strategy!r} needs the parameters {absent}")
        reason = _invalid_reason(config, lengths, k)
        if reason:
            logger.warning("skipped configuration %s: %s", dict(config), reason)
            continue
        out.append(dict(config))
    return out


# ----------------------------------------------------------------------------- timing


def _make_call(index: NestedIndex, table_index: NestedIndex | None, config: Mapping[str, Any], queries: np.ndarray,
               k: int, stats: bool = False) -> Callable[[], Any]:
    """The search call of a configuration; with ``stats`` it also returns :class:`SearchStats` (not timed).

    ``table_index`` holds the same codes plus the precomputed shortlist tables (kept apart so that the plain
    shortlist rows compute their shortlists).
    """
    s = config["strategy"]
    rerank = config.get("rerank_bits")
    if s == "exhaustive":
        faiss = require_faiss()

        def exhaustive() -> Any:
            default = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(int(config.get("faiss_threads", default)))
            try:
                return index.search(queries, k, bits=config.get("bits"))
            finally:
                faiss.omp_set_num_threads(default)
        return exhaustive
    if s in ("shortlist", "shortlist_table"):
        target = table_index if s == "shortlist_table" else index
        return lambda: target.search_shortlist(queries, k, prefix_bits=config["prefix_bits"],
                                               shortlist=config["shortlist"], rerank_bits=rerank, return_stats=stats)
    if s == "buckets":
        return lambda: index.search_buckets(queries, k, bucket_bits=config["bucket_bits"], nflip=config["nflip"],
                                            rerank_bits=rerank, backend=config.get("backend", "auto"),
                                            return_stats=stats)
    if s == "funnel":
        return lambda: index.search_funnel(queries, k, bits=config["bits"], shortlists=config["shortlists"],
                                           return_stats=stats)
    hashed = require_faiss().IndexBinaryHash(index.max_length, int(config["bucket_bits"]))
    hashed.add(index.codes())
    hashed.nflip = int(config["nflip"])
    q_bytes = as_packed(queries, index.max_length, "queries")

    def faiss_hash() -> Any:
        d, i = hashed.search(q_bytes, k)
        if not stats:
            return d, i
        # the same candidate set as the bucket search: take its work statistics
        return d, i, index.search_buckets(queries, 1, bucket_bits=config["bucket_bits"], nflip=config["nflip"],
                                          backend="numpy", return_stats=True)[2]
    return faiss_hash


def _overlap(ids: np.ndarray, reference: np.ndarray) -> float:
    """Mean fraction of each reference row's ids that appear in the same row of ``ids``."""
    hits = [np.intersect1d(a[a >= 0], b, assume_unique=True).size / b.size for a, b in zip(ids, reference)]
    return float(np.mean(hits))


def compare_strategies(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    code_lengths: Sequence[int],
    k: int = 1000,
    configs: Sequence[Mapping[str, Any]] | None = None,
    rounds: int = 3,
    *,
    precision_k: int = 100,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """Time every configuration on the same queries and score its rankings; one row per configuration.

    Parameters
    ----------
    query_codes, db_codes
        Nested codes at the longest length: packed ``uint8`` rows or real ±1 codes.
    query_labels, db_labels
        Class ids or multi-hot rows (see :func:`~nhllib.retrieval.ranking_metrics`).
    code_lengths
        The nested lengths the codes were trained at.
    k
        Results per query and the cut-off of mAP@k; clamped (with a warning) to the database size.
    configs
        Configurations (module docstring); default :func:`default_configs`. Those the lengths or ``k`` do
        not allow are skipped with a warning; exhaustive search at the longest length is always run first,
        as the reference of every ratio.
    rounds
        Timed rounds (interleaved across configurations); the median is reported.
    precision_k
        Cut-off of the precision column ``precision_at_<precision_k>`` (lowered to ``k`` if above it).
    n_threads
        Threads of the numpy search paths (:class:`NestedIndex`); default all CPUs.

    Returns
    -------
    One row per configuration: ``configuration, strategy, parameters, short_label, ranking_bits, k, db_size,
    n_queries, rounds, time_median_s, time_best_s, first_call_s, queries_per_s, ms_per_query, speedup,
    bits_scanned, bits_scanned_flat_prefix, candidates_per_query, map_at_k, precision_at_<precision_k>,
    map_ratio, precision_ratio, overlap_at_k, filled_at_k`` and, for precomputed tables, ``table_build_s,
    table_mib``.
    ``speedup`` is relative to the faster exhaustive longest-length row; ``*_ratio`` and ``overlap_at_k``
    (share of the exhaustive top-k returned) to the first one. ``filled_at_k``: the share of the k result
    slots holding an item (below 1 where a bucket search finds fewer than k candidates; mAP@k, normalised by
    the relevant items returned, does not penalise the empty slots, precision@k does). ``bits_scanned`` per
    query: prefix bits x prefix keys compared + re-rank bits x candidates (bucket tables count their distinct
    prefixes, an upper bound); ``bits_scanned_flat_prefix`` counts the prefix stage as a scan of every item.
    """
    lengths = tuple(sorted(int(v) for v in code_lengths))
    if not lengths:
        raise ValueError("code_lengths must not be empty")
    longest = lengths[-1]
    queries = as_packed(query_codes, longest, "query_codes")
    db = as_packed(db_codes, longest, "db_codes")
    n, n_q = len(db), len(queries)
    if n == 0 or n_q == 0:
        raise ValueError(f"need at least one query and one database code, got {n_q} queries and {n} codes")
    if len(query_labels) != n_q or len(db_labels) != n:
        raise ValueError(f"labels ({len(query_labels)} query, {len(db_labels)} db) must match the codes "
                         f"({n_q} query, {n} db)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if k > n:
        logger.warning("k=%d exceeds the database size %d; using k=%d", k, n, n)
        k = n
    if isinstance(precision_k, bool) or not isinstance(precision_k, (int, np.integer)) or precision_k < 1:
        raise ValueError(f"precision_k must be an int >= 1, got {precision_k!r}")
    if precision_k > k:
        logger.info("precision_k=%d exceeds k=%d; reporting precision_at_%d", precision_k, k, k)
        precision_k = k
    k, precision_k = int(k), int(precision_k)

    reference = {"strategy": "exhaustive", "bits": longest}
    chosen = _checked(default_configs(lengths, k, n) if configs is None else configs, lengths, k)
    is_reference = [c["strategy"] == "exhaustive" and _lengths_of(c, longest) == (longest,) for c in chosen]
    if not any(is_reference):
        chosen.insert(0, reference)
        is_reference.insert(0, True)
    first = is_reference.index(True)  # the reference goes first: its rankings anchor every ratio
    chosen.insert(0, chosen.pop(first))
    is_reference.insert(0, is_reference.pop(first))
    names = [f"{c['strategy']} {_label(c, longest)}" for c in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate configurations: {sorted({x for x in names if names.count(x) > 1})}")

    index = NestedIndex(lengths, n_threads=n_threads)
    start = time.perf_counter()
    index.add(db)
    add_s = time.perf_counter() - start
    table_index, tables = None, {}
    if any(c["strategy"] == "shortlist_table" for c in chosen):
        table_index = NestedIndex(lengths, n_threads=n_threads)
        table_index.add(db)
        for name, c in zip(names, chosen):
            if c["strategy"] == "shortlist_table":
                start = time.perf_counter()
                n_bytes = table_index.build_shortlist_table(int(c["prefix_bits"]), int(c["shortlist"]))
                tables[name] = {"table_build_s": time.perf_counter() - start, "table_mib": n_bytes / 2**20}
    calls = [_make_call(index, table_index, c, queries, k) for c in chosen]

    outputs, first_call_s = [], []
    for config, call in zip(chosen, calls):
        start = time.perf_counter()
        call()  # builds the per-length caches
        first_call_s.append(time.perf_counter() - start)
        outputs.append(_make_call(index, table_index, config, queries, k, stats=True)())
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for j, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[j].append(time.perf_counter() - start)

    base_time = min(statistics.median(t) for t, ref in zip(times, is_reference) if ref)
    ref_ids = outputs[0][1]
    base_map = base_precision = None
    rows = []
    for name, config, out, t, t_first in zip(names, chosen, outputs, times, first_call_s):
        ids = out[1]
        at_k = ranking_metrics(ids, query_labels, db_labels, k)
        at_p = ranking_metrics(ids, query_labels, db_labels, precision_k)
        if base_map is None:
            base_map, base_precision = at_k["map"], at_p["precision"]
        chain = _lengths_of(config, longest)
        if config["strategy"] == "exhaustive":
            scanned = flat_prefix = float(chain[0] * n)
            candidates = float(n)
        else:
            stats = out[2]
            scanned = stats.bits_scanned
            flat_prefix = stats.prefix_bits * n + sum(b * c for b, c in zip(stats.rerank_bits, stats.candidates))
            candidates = float(stats.candidates[-1])
        median_t = statistics.median(t)
        rows.append({
            "configuration": name,
            "strategy": config["strategy"],
            "parameters": _label(config, longest),
            "short_label": _short_label(config, longest),
            "ranking_bits": chain[-1],
            "k": k,
            "db_size": n,
            "n_queries": n_q,
            "rounds": rounds,
            "time_median_s": median_t,
            "time_best_s": min(t),
            "first_call_s": t_first,
            "queries_per_s": n_q / median_t,
            "ms_per_query": 1000 * median_t / n_q,
            "speedup": base_time / median_t,
            "bits_scanned": scanned,
            "bits_scanned_flat_prefix": flat_prefix,
            "candidates_per_query": candidates,
            "map_at_k": at_k["map"],
            f"precision_at_{precision_k}": at_p["precision"],
            "map_ratio": at_k["map"] / base_map if base_map else math.nan,
            "precision_ratio": at_p["precision"] / base_precision if base_precision else math.nan,
            "overlap_at_k": _overlap(ids, ref_ids),
            "filled_at_k": float((ids[:, :k] >= 0).mean()),
            **tables.get(name, {}),
        })
    frame = pd.DataFrame(rows)
    frame.attrs["add_s"] = add_s
    return frame


# ----------------------------------------------------------------------------- reading the result


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading of a :func:`compare_strategies` table (for a Markdown view)."""
    precision = [c for c in frame.columns if c.startswith("precision_at_")]
    return frame[[c for c in _SUMMARY[:7] + precision + _SUMMARY[7:] if c in frame.columns]]


def summarize_tradeoff(frame: pd.DataFrame, threshold: float = 0.99) -> str:
    """One paragraph: the fastest configuration whose mAP@k is at least ``threshold`` × exhaustive.

    Only configurations that return k items for every query count (``filled_at_k`` = 1 where the column
    exists): with empty slots mAP@k can exceed the exhaustive one while returning less. Numbers only; a
    notebook prints it next to its own prose.
    """
    missing = {"configuration", "strategy", "ranking_bits", "ms_per_query", "speedup", "bits_scanned",
               "map_at_k", "map_ratio", "k", "db_size"} - set(frame.columns)
    if missing:
        raise KeyError(f"frame lacks the columns {sorted(missing)}; pass a compare_strategies table")
    if frame.empty:
        raise ValueError("frame has no rows")
    longest = frame["ranking_bits"].max()
    exhaustive = frame[(frame["strategy"] == "exhaustive") & (frame["ranking_bits"] == longest)]
    best_ex = exhaustive.loc[exhaustive["ms_per_query"].idxmin()]
    k, n = int(frame["k"].iloc[0]), int(frame["db_size"].iloc[0])
    text = (f"Database of {n:,} items, top-{k}. Exhaustive {longest}-bit search: mAP@{k} = "
            f"{best_ex['map_at_k']:.4f}, {best_ex['ms_per_query']:.3f} ms per query (fastest exhaustive row). ")
    others = frame[frame["strategy"] != "exhaustive"]
    if others.empty:
        return text + "No nested strategy was run (the code lengths allow none)."
    if "filled_at_k" in others:
        short = others[others["filled_at_k"] < 1]
        others = others[others["filled_at_k"] >= 1]
        if not short.empty:
            text += (f"Not counted, since they return fewer than k items for some queries: "
                     f"{'; '.join(short['configuration'])}. ")
        if others.empty:
            return text + "No nested configuration returned k items for every query."
    good = others[others["map_ratio"] >= threshold]
    if good.empty:
        best = others.loc[others["map_ratio"].idxmax()]
        return text + (f"No nested configuration keeps {threshold * 100:g}% of the exhaustive mAP; the closest is "
                       f"{best['configuration']} at {best['map_ratio']:.3f}× ({best['speedup']:.2f}× the speed).")
    best = good.loc[good["speedup"].idxmax()]
    faster = "faster" if best["speedup"] > 1 else "slower"
    return text + (
        f"Fastest configuration within {(1 - threshold) * 100:g}% of that mAP: {best['configuration']}, mAP ratio "
        f"{best['map_ratio']:.4f}, {best['ms_per_query']:.3f} ms per query ({best['speedup']:.2f}×, i.e. "
        f"{faster} than exhaustive), {best_ex['bits_scanned'] / best['bits_scanned']:.1f}× fewer bits scanned.")
