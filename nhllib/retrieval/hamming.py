"""Exhaustive Hamming search over packed binary codes, backed by faiss ``IndexBinaryFlat``.

Tie rule: results are ordered by (Hamming distance, database id), and among items tied at the k-th
distance the ones added first (smallest ids) are returned.

faiss documents neither part of that rule. It holds, by construction, in both exact k-NN kernels of
faiss (checked in ``faiss/utils/hamming.cpp`` and ``faiss/utils/Heap.h``, faiss-cpu 1.15.1):

- ``hammings_knn_hc`` (``use_heap=True``) scans the database in id order, admits an item only if it is
  *strictly* closer than the heap top, and its max-heap orders entries by (distance, id) (``CMax::cmp2``),
  so it keeps and sorts the lexicographically smallest (distance, id) pairs;
- ``hammings_knn_mc`` (``use_heap=False``, counting) appends ids to one list per distance in scan
  (id) order and reads the lists out by increasing distance.

We pin the approximate top-k mode to exact, check the order of every returned row (cheap) and re-sort
any row that breaks it, and ``tests/retrieval/test_retrieval.py`` compares against a brute-force numpy oracle on
codes with many ties, across faiss's query and database block boundaries, so a faiss release that
changes the kernels fails the tests. Enforcing the rule independently of faiss would need a second
full scan per query (all items at the k-th distance), which doubles the cost; we chose not to pay it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .packing import _check_bits, as_packed

__all__ = ["HammingIndex", "RangeResult", "require_faiss", "sort_rows_by_distance_id"]

logger = logging.getLogger(__name__)

# The counting kernel keeps up to k ids per distance value for each query in a batch:
# query_batch_size * (bits + 1) * k * 8 bytes. Above this budget we fall back to the heap kernel.
_COUNT_KERNEL_BYTES = 256 * 2**20
_ALGORITHMS = ("auto", "heap", "count")


class RangeResult(NamedTuple):
    """Range-search hits of one query, ordered by (distance, id)."""

    ids: np.ndarray  # int64 (n,)
    distances: np.ndarray  # int32 (n,)


def require_faiss() -> Any:
    """Import faiss, or raise an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "faiss is required for HammingIndex; install it with `pip install faiss-cpu` "
            "or `pip install nhllib[retrieval]`"
        ) from err
    return faiss


def _check_k(k: int, ntotal: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ntotal == 0:
        raise ValueError("the index is empty; add codes before searching")
    if k > ntotal:
        raise ValueError(f"k={k} exceeds the number of indexed codes ({ntotal})")


def sort_rows_by_distance_id(distances: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make every row ordered by (distance, id); rows already in order are left untouched."""
    bad_dist = distances[:, 1:] < distances[:, :-1]
    bad_tie = (distances[:, 1:] == distances[:, :-1]) & (ids[:, 1:] < ids[:, :-1])
    bad_rows = np.flatnonzero((bad_dist | bad_tie).any(axis=1))
    if bad_rows.size:
        logger.warning("re-sorting %d result rows that were not in (distance, id) order", bad_rows.size)
        for r in bad_rows:
            order = np.lexsort((ids[r], distances[r]))
            distances[r] = distances[r, order]
            ids[r] = ids[r, order]
    return distances, ids


class HammingIndex:
    """Exact top-k and range search in Hamming space over ``code_length``-bit codes.

    Codes are given as real ±1 arrays/tensors of width ``code_length`` or as packed ``uint8`` rows of
    ``code_length // 8`` bytes (see :mod:`nhllib.retrieval.packing`). Ids are database positions
    ``0 .. len(index) - 1`` in the order codes were added.

    ``algorithm`` picks the faiss kernel: ``"heap"``, ``"count"`` (counting per distance, faster for
    small k) or ``"auto"`` (counting unless its scratch memory would exceed 256 MiB). All give the same
    result.
    """

    def __init__(self, code_length: int, *, algorithm: str = "auto") -> None:
        _check_bits(code_length, "code_length")
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
        faiss = require_faiss()
        self.code_length = int(code_length)
        self.algorithm = algorithm
        self._index = faiss.IndexBinaryFlat(self.code_length)
        self._index.approx_topk_mode = faiss.EXACT_TOPK

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def ntotal(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"HammingIndex(code_length={self.code_length}, ntotal={len(self)})"

    def add(self, codes: Any) -> None:
        """Append codes; they get the next ids in order."""
        packed = as_packed(codes, self.code_length, "codes")
        self._index.add(packed)

    def codes(self) -> np.ndarray:
        """A packed copy ``(ntotal, code_length // 8)`` of every stored code."""
        if len(self) == 0:
            return np.zeros((0, self.code_length // 8), dtype=np.uint8)
        return self._index.reconstruct_n(0, len(self))

    def _use_heap(self, k: int) -> bool:
        if self.algorithm != "auto":
            return self.algorithm == "heap"
        scratch = self._index.query_batch_size * (self.code_length + 1) * k * 8
        return scratch > _COUNT_KERNEL_BYTES

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes per query.

        Returns ``(distances, ids)``: ``int32`` and ``int64`` arrays ``(Q, k)``, each row ordered by
        (distance, id). ``k`` must be in ``[1, len(self)]`` (a larger k raises rather than padding, so a
        metric never silently sees fewer than k results).
        """
        _check_k(k, len(self))
        q = as_packed(queries, self.code_length, "queries")
        self._index.use_heap = self._use_heap(int(k))
        distances, ids = self._index.search(q, int(k))
        return sort_rows_by_distance_id(distances.astype(np.int32, copy=False), ids)

    def range_search(self, queries: Any, radius: int) -> list[RangeResult]:
        """All codes within Hamming distance ``<= radius`` (inclusive) of each query.

        Returns one :class:`RangeResult` ``(ids, distances)`` per query, ordered by (distance, id).
        (faiss's own binary ``range_search`` is strict, ``< radius``; we pass ``radius + 1``.)
        """
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise TypeError(f"radius must be an int, got {type(radius).__name__}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        q = as_packed(queries, self.code_length, "queries")
        if len(self) == 0:
            return [RangeResult(np.zeros(0, np.int64), np.zeros(0, np.int32)) for _ in range(len(q))]
        lims, dists, ids = self._index.range_search(q, int(radius) + 1)
        out = []
        for i in range(len(q)):
            d = dists[lims[i] : lims[i + 1]].astype(np.int32)
            j = ids[lims[i] : lims[i + 1]].astype(np.int64)
            order = np.lexsort((j, d))
            out.append(RangeResult(j[order], d[order]))
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` (faiss binary-index format)."""
        path = Path(path)
        if not path.parent.exists():
            raise FileNotFoundError(f"directory of path does not exist: {path.parent}")
        require_faiss().write_index_binary(self._index, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, *, algorithm: str = "auto") -> HammingIndex:
        """Read an index written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no HammingIndex file at {path}")
        faiss = require_faiss()
        try:
            raw = faiss.read_index_binary(str(path))
        except RuntimeError as err:
            raise ValueError(f"{path} is not a faiss binary index file: {err}") from err
        if not isinstance(raw, faiss.IndexBinaryFlat):
            raise ValueError(f"{path} holds a {type(raw).__name__}, expected IndexBinaryFlat")  # noqa: TRY004
        index = cls(int(raw.d), algorithm=algorithm)
        index._index = raw
        index._index.approx_topk_mode = faiss.EXACT_TOPK
        return index
