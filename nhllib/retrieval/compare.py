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

A configuration is a flat dict: ``{"strategy": ..., **parameters}``; the strategies are the entries of
:data:`~nhllib.retrieval.strategies.STRATEGY_REGISTRY` (lengths, labels, checks and call of each):

- ``exhaustive``: ``bits`` (default: longest), optional ``faiss_threads``;
- ``shortlist`` / ``shortlist_table``: ``prefix_bits``, ``shortlist``, optional ``rerank_bits`` (the table
  variant looks shortlists up in :meth:`~nhllib.retrieval.NestedIndex.build_shortlist_table`);
- ``buckets``: ``bucket_bits``, ``nflip``, optional ``rerank_bits``, ``backend``;
- ``funnel``: ``bits`` (increasing lengths), ``shortlists``;
- ``faiss_hash``: ``bucket_bits``, ``nflip`` (faiss ``IndexBinaryHash`` as it is: ties at the k-th
  distance in faiss's visit order, not by id).

:func:`compare_strategies` runs in three steps: plan (check the inputs and configurations), time (interleaved
rounds) and score (rankings against the exhaustive reference). The codes a study run saved are read by
:func:`nhllib.store.results.read_codes`: this package knows no run folders.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from nhllib.checks import check_integer
from .metrics import ranking_metrics
from .nested import NestedIndex
from .packing import as_packed
from .strategies import MAX_BUCKET_BITS, STRATEGIES, STRATEGY_REGISTRY, SearchSetup

__all__ = [
    "STRATEGIES",
    "STRATEGY_REGISTRY",
    "compare_strategies",
    "default_configs",
    "summarize_tradeoff",
    "summary",
]

logger = logging.getLogger(__name__)

_SUMMARY = ["configuration", "strategy", "ms_per_query", "queries_per_s", "speedup", "bits_scanned",
            "map_at_k", "map_ratio", "precision_ratio", "overlap_at_k", "filled_at_k"]


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
    if prefix <= MAX_BUCKET_BITS:
        configs += [{"strategy": "shortlist_table", "prefix_bits": prefix, "shortlist": s} for s in sizes]
        configs += [{"strategy": "buckets", "bucket_bits": prefix, "nflip": f} for f in (0, 1, 2)]
    return configs


def _lengths_of(config: Mapping[str, Any], longest: int) -> tuple[int, ...]:
    """(first-stage length, ..., ranking length) of a configuration."""
    return STRATEGY_REGISTRY[config["strategy"]].lengths(config, longest)


def _label(config: Mapping[str, Any], longest: int) -> str:
    """A readable description of the parameters, e.g. ``16→128, s=1000``."""
    return STRATEGY_REGISTRY[config["strategy"]].label(config, _lengths_of(config, longest))


def _invalid_reason(config: Mapping[str, Any], lengths: tuple[int, ...], k: int) -> str | None:
    """Why a well-formed configuration cannot run on these lengths / this k (None: it can)."""
    chain = _lengths_of(config, lengths[-1])
    missing = [b for b in chain if b not in lengths]
    if missing:
        return f"lengths {missing} are not among the code lengths {lengths}"
    if any(b <= a for a, b in itertools.pairwise(chain)):
        return f"lengths {chain} must increase from the first stage to the ranking length"
    return STRATEGY_REGISTRY[config["strategy"]].check(config, chain, k)


def _checked(configs: Sequence[Mapping[str, Any]], lengths: tuple[int, ...], k: int) -> list[dict[str, Any]]:
    """Well-formed configurations that can run; the others are skipped with a warning. Malformed ones raise."""
    out = []
    for config in configs:
        if not isinstance(config, Mapping):
            raise TypeError(f"each configuration must be a dict, got {type(config).__name__}")
        strategy = config.get("strategy")
        if strategy not in STRATEGY_REGISTRY:
            raise ValueError(f"configuration {dict(config)}: strategy must be one of {tuple(STRATEGY_REGISTRY)}, "
                             f"got {strategy!r}")
        absent = [p for p in STRATEGY_REGISTRY[strategy].required if p not in config]
        if absent:
            raise ValueError(f"configuration {dict(config)}: strategy {strategy!r} needs the parameters {absent}")
        reason = _invalid_reason(config, lengths, k)
        if reason:
            logger.warning("skipped configuration %s: %s", dict(config), reason)
            continue
        out.append(dict(config))
    return out


# ----------------------------------------------------------------------------- timing


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
    plan = _plan(query_codes, db_codes, query_labels, db_labels, code_lengths, k, configs, rounds, precision_k)
    timing = _time(plan, rounds, n_threads)
    return _score(plan, timing, query_labels, db_labels, rounds)


@dataclass(frozen=True)
class _Plan:
    """The checked inputs and the configurations to run, the reference (exhaustive, longest length) first."""

    lengths: tuple[int, ...]
    queries: np.ndarray
    db: np.ndarray
    k: int
    precision_k: int
    configs: list[dict[str, Any]]
    names: list[str]
    is_reference: list[bool]

    @property
    def longest(self) -> int:
        return self.lengths[-1]


@dataclass
class _Timing:
    """Each configuration's output (with statistics), its first (cache-building) call and its timed rounds."""

    add_s: float
    outputs: list[Any] = field(default_factory=list)
    first_call_s: list[float] = field(default_factory=list)
    times: list[list[float]] = field(default_factory=list)
    tables: dict[str, dict[str, float]] = field(default_factory=dict)


def _plan(query_codes, db_codes, query_labels, db_labels, code_lengths, k, configs, rounds, precision_k) -> _Plan:
    """Check the inputs, clamp k, and order the configurations that can run (the reference first)."""
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
    check_integer("k", k, minimum=1, what="an int >= 1")
    check_integer("rounds", rounds, minimum=1, what="an int >= 1")
    if k > n:
        logger.warning("k=%d exceeds the database size %d; using k=%d", k, n, n)
        k = n
    check_integer("precision_k", precision_k, minimum=1, what="an int >= 1")
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
    return _Plan(lengths, queries, db, k, precision_k, chosen, names, is_reference)


def _time(plan: _Plan, rounds: int, n_threads: int | None) -> _Timing:
    """Build the indexes, call every configuration once for its caches and once for its results, then time
    ``rounds`` interleaved rounds (module docstring)."""
    index = NestedIndex(plan.lengths, n_threads=n_threads)
    start = time.perf_counter()
    index.add(plan.db)
    timing = _Timing(add_s=time.perf_counter() - start)
    table_index = None
    if any(c["strategy"] == "shortlist_table" for c in plan.configs):
        table_index = NestedIndex(plan.lengths, n_threads=n_threads)
        table_index.add(plan.db)
        for name, c in zip(plan.names, plan.configs):
            if c["strategy"] == "shortlist_table":
                start = time.perf_counter()
                n_bytes = table_index.build_shortlist_table(int(c["prefix_bits"]), int(c["shortlist"]))
                timing.tables[name] = {"table_build_s": time.perf_counter() - start, "table_mib": n_bytes / 2**20}
    setup = SearchSetup(index, table_index, plan.queries, plan.k)
    calls = [STRATEGY_REGISTRY[c["strategy"]].call(setup, c, False) for c in plan.configs]
    for config, call in zip(plan.configs, calls):
        start = time.perf_counter()
        call()  # builds the per-length caches
        timing.first_call_s.append(time.perf_counter() - start)
        timing.outputs.append(STRATEGY_REGISTRY[config["strategy"]].call(setup, config, True)())
    timing.times = [[] for _ in calls]
    for _ in range(rounds):
        for j, call in enumerate(calls):
            start = time.perf_counter()
            call()
            timing.times[j].append(time.perf_counter() - start)
    return timing


def _score(plan: _Plan, timing: _Timing, query_labels, db_labels, rounds: int) -> pd.DataFrame:
    """One row per configuration: its speed, its work and the quality of its rankings against the reference."""
    k, precision_k, longest = plan.k, plan.precision_k, plan.longest
    n, n_q = len(plan.db), len(plan.queries)
    base_time = min(statistics.median(t) for t, ref in zip(timing.times, plan.is_reference) if ref)
    ref_ids = timing.outputs[0][1]
    base_map = base_precision = None
    rows = []
    for name, config, out, t, t_first in zip(plan.names, plan.configs, timing.outputs, timing.times,
                                             timing.first_call_s):
        strategy = STRATEGY_REGISTRY[config["strategy"]]
        ids = out[1]
        at_k = ranking_metrics(ids, query_labels, db_labels, k)
        at_p = ranking_metrics(ids, query_labels, db_labels, precision_k)
        if base_map is None:
            base_map, base_precision = at_k["map"], at_p["precision"]
        chain = _lengths_of(config, longest)
        if strategy.scans_everything:
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
            "parameters": strategy.label(config, chain),
            "short_label": strategy.short_label(config, chain),
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
            **timing.tables.get(name, {}),
        })
    frame = pd.DataFrame(rows)
    frame.attrs["add_s"] = timing.add_s
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
