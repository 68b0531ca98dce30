"""The retrieval strategies :func:`~nhllib.retrieval.compare.compare_strategies` can run, as a registry.

Each :class:`Strategy` says, for a configuration dict ``{"strategy": name, **parameters}``, which code lengths
it searches (first stage ... ranking length), how it is labelled, why it cannot run on given lengths / ``k``,
and how it is called on a :class:`SearchSetup`. A new strategy is one entry in :data:`STRATEGY_REGISTRY`; the
comparison never branches on a strategy's name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .hamming import require_faiss
from .nested import NestedIndex
from .packing import as_packed

__all__ = ["Strategy", "SearchSetup", "STRATEGY_REGISTRY", "STRATEGIES", "MAX_BUCKET_BITS"]

MAX_BUCKET_BITS = 64  # prefix keys are one machine word

Config = Mapping[str, Any]


@dataclass(frozen=True)
class SearchSetup:
    """What every search call shares: the index, the index with precomputed shortlist tables (kept apart so
    that plain shortlist rows compute their shortlists), the packed queries and k."""

    index: NestedIndex
    table_index: NestedIndex | None
    queries: np.ndarray
    k: int


@dataclass(frozen=True)
class Strategy:
    """One way of answering the queries.

    ``lengths(config, longest)``: (first-stage length, ..., ranking length). ``label(config, chain)`` and
    ``short_label(config, chain)``: a readable description, and what tells it apart from the other
    configurations of the strategy. ``check(config, chain, k)``: why it cannot run (None: it can).
    ``call(setup, config, stats)``: a no-argument search returning ``(distances, ids)``, plus the
    :class:`~nhllib.retrieval.SearchStats` with ``stats``. ``scans_everything``: its work is a scan of every
    item at its first length (no statistics needed).
    """

    required: tuple[str, ...]
    lengths: Callable[[Config, int], tuple[int, ...]]
    label: Callable[[Config, tuple[int, ...]], str]
    short_label: Callable[[Config, tuple[int, ...]], str]
    check: Callable[[Config, tuple[int, ...], int], str | None]
    call: Callable[[SearchSetup, Config, bool], Callable[[], Any]]
    scans_everything: bool = False


def _first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)


def _bucket_prefix(name: str, chain: tuple[int, ...]) -> str | None:
    if chain[0] > MAX_BUCKET_BITS:
        return f"a {name} prefix must be at most {MAX_BUCKET_BITS} bits, got {chain[0]}"
    return None


def _faiss_rerank(chain: tuple[int, ...]) -> str | None:
    if chain[-1] < 64:
        return f"faiss IndexBinaryHash re-ranks codes of at least 64 bits, got {chain[-1]}"
    return None


def _shortlist_below_k(config: Config, k: int) -> str | None:
    return f"shortlist {config['shortlist']} is below k={k}" if int(config["shortlist"]) < k else None


def _backend_suffix(config: Config, sep: str) -> str:
    backend = config.get("backend", "auto")
    return "" if backend == "auto" else f"{sep}{backend}"


# ---------------------------------------------------------------- exhaustive


def _exhaustive_call(setup: SearchSetup, config: Config, stats: bool) -> Callable[[], Any]:
    faiss = require_faiss()

    def exhaustive() -> Any:
        default = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(int(config.get("faiss_threads", default)))
        try:
            return setup.index.search(setup.queries, setup.k, bits=config.get("bits"))
        finally:
            faiss.omp_set_num_threads(default)
    return exhaustive


def _exhaustive_label(config: Config, chain: tuple[int, ...]) -> str:
    threads = int(config.get("faiss_threads", 0))
    faiss = f", faiss {threads} thread{'s' * (threads != 1)}" if threads else ""
    return f"{'→'.join(map(str, chain))} bits{faiss}"


EXHAUSTIVE = Strategy(
    required=(),
    lengths=lambda config, longest: (int(config.get("bits", longest)),),
    label=_exhaustive_label,
    short_label=lambda config, chain: f"{chain[0]} b" + (f", {config['faiss_threads']} thr"
                                                         if "faiss_threads" in config else ""),
    check=lambda config, chain, k: None,
    call=_exhaustive_call,
    scans_everything=True,
)


# ---------------------------------------------------------------- prefix shortlist + re-rank


def _shortlist_strategy(table: bool) -> Strategy:
    name = "shortlist_table" if table else "shortlist"

    def call(setup: SearchSetup, config: Config, stats: bool) -> Callable[[], Any]:
        target = setup.table_index if table else setup.index
        return lambda: target.search_shortlist(setup.queries, setup.k, prefix_bits=config["prefix_bits"],
                                               shortlist=config["shortlist"], rerank_bits=config.get("rerank_bits"),
                                               return_stats=stats)

    return Strategy(
        required=("prefix_bits", "shortlist"),
        lengths=lambda config, longest: (int(config["prefix_bits"]), int(config.get("rerank_bits", longest))),
        label=lambda config, chain: (f"{'→'.join(map(str, chain))}, s={config['shortlist']}"
                                     + (", precomputed table" if table else "")),
        short_label=lambda config, chain: f"s={config['shortlist']}",
        check=lambda config, chain, k: _first_reason(_bucket_prefix(name, chain) if table else None,
                                                     _shortlist_below_k(config, k)),
        call=call,
    )


# ---------------------------------------------------------------- prefix buckets


def _buckets_call(setup: SearchSetup, config: Config, stats: bool) -> Callable[[], Any]:
    return lambda: setup.index.search_buckets(setup.queries, setup.k, bucket_bits=config["bucket_bits"],
                                              nflip=config["nflip"], rerank_bits=config.get("rerank_bits"),
                                              backend=config.get("backend", "auto"), return_stats=stats)


BUCKETS = Strategy(
    required=("bucket_bits", "nflip"),
    lengths=lambda config, longest: (int(config["bucket_bits"]), int(config.get("rerank_bits", longest))),
    label=lambda config, chain: (f"{'→'.join(map(str, chain))}, nflip={config['nflip']}"
                                 + _backend_suffix(config, ", ")),
    short_label=lambda config, chain: f"nflip={config['nflip']}" + _backend_suffix(config, " "),
    check=lambda config, chain, k: _first_reason(
        _bucket_prefix("buckets", chain), _faiss_rerank(chain) if config.get("backend") == "faiss" else None),
    call=_buckets_call,
)


# ---------------------------------------------------------------- funnel


def _funnel_check(config: Config, chain: tuple[int, ...], k: int) -> str | None:
    sizes = [int(v) for v in config["shortlists"]]
    increasing = any(b > a for a, b in itertools.pairwise(sizes))
    if len(sizes) != len(chain) - 1 or any(v < k for v in sizes) or increasing:
        return f"funnel shortlists {sizes} must be one per stage, >= k={k} and non-increasing"
    return None


FUNNEL = Strategy(
    required=("bits", "shortlists"),
    lengths=lambda config, longest: tuple(int(b) for b in config["bits"]),
    label=lambda config, chain: f"{'→'.join(map(str, chain))}, s=" + "/".join(map(str, config["shortlists"])),
    short_label=lambda config, chain: "/".join(map(str, config["shortlists"])),
    check=_funnel_check,
    call=lambda setup, config, stats: lambda: setup.index.search_funnel(
        setup.queries, setup.k, bits=config["bits"], shortlists=config["shortlists"], return_stats=stats),
)


# ---------------------------------------------------------------- faiss IndexBinaryHash, as it is


def _faiss_hash_call(setup: SearchSetup, config: Config, stats: bool) -> Callable[[], Any]:
    index = setup.index
    hashed = require_faiss().IndexBinaryHash(index.max_length, int(config["bucket_bits"]))
    hashed.add(index.codes())
    hashed.nflip = int(config["nflip"])
    q_bytes = as_packed(setup.queries, index.max_length, "queries")

    def faiss_hash() -> Any:
        d, i = hashed.search(q_bytes, setup.k)
        if not stats:
            return d, i
        # the same candidate set as the bucket search: take its work statistics
        return d, i, index.search_buckets(setup.queries, 1, bucket_bits=config["bucket_bits"], nflip=config["nflip"],
                                          backend="numpy", return_stats=True)[2]
    return faiss_hash


FAISS_HASH = Strategy(
    required=("bucket_bits", "nflip"),
    lengths=lambda config, longest: (int(config["bucket_bits"]), longest),
    label=BUCKETS.label,
    short_label=BUCKETS.short_label,
    check=lambda config, chain, k: _first_reason(_bucket_prefix("faiss_hash", chain), _faiss_rerank(chain)),
    call=_faiss_hash_call,
)


#: Strategy name -> what it means. The order is the order of the documentation and of the error messages.
STRATEGY_REGISTRY: dict[str, Strategy] = {
    "exhaustive": EXHAUSTIVE,
    "shortlist": _shortlist_strategy(table=False),
    "shortlist_table": _shortlist_strategy(table=True),
    "buckets": BUCKETS,
    "funnel": FUNNEL,
    "faiss_hash": FAISS_HASH,
}
STRATEGIES = tuple(STRATEGY_REGISTRY)
