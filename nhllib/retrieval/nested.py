"""Search over nested binary codes: short-prefix shortlist or buckets, then re-rank with a longer code.

With NHL the b-bit prefix of every 128-bit code is itself a trained b-bit code, so it can pick
candidates cheaply and a longer code re-ranks only those (Matryoshka-style adaptive retrieval, MRL
§"adaptive retrieval", for binary codes).

:class:`NestedIndex` stores each item once, as its longest packed code. Strategies:

- :meth:`NestedIndex.search`: exhaustive search at one length (faiss ``IndexBinaryFlat`` on the prefix);
- :meth:`NestedIndex.search_shortlist`: the ``shortlist`` items nearest by the ``prefix_bits`` prefix
  (or all items within ``radius`` of it), re-ranked by the ``rerank_bits`` code;
- :meth:`NestedIndex.search_buckets`: items bucketed by their ``bucket_bits`` prefix; the buckets within
  ``nflip`` bit flips of the query's prefix are probed and their items re-ranked;
- :meth:`NestedIndex.search_funnel`: a cascade over several lengths with shrinking shortlists
  (MRL's funnel retrieval), e.g. 16 -> 32 -> 128.

Tie rule, everywhere: an ordering by (Hamming distance, database id), so among equally distant items
the one added first wins, both inside a shortlist and in the final top-k. Results are therefore
deterministic, and a shortlist as large as the database gives exactly the exhaustive result.

How the prefix stage avoids touching every item: a :class:`~nhllib.retrieval.buckets.PrefixTable` per
prefix length (built lazily, rebuilt after :meth:`NestedIndex.add`) groups the items by prefix value,
so distances are taken to distinct prefixes, not to items. Queries with the same prefix share one
shortlist, and :meth:`NestedIndex.build_shortlist_table` can precompute the shortlist of every prefix
in the database (memory: distinct prefixes x s ids) so that a search only re-ranks.

Measured trade-offs (``benchmarks/bench_retrieval.py``, numpy vs faiss's C++ scan): a 16-bit top-1000
shortlist computed per query costs about as much as a faiss scan of a few tens of thousands of 128-bit
codes, so it pays off on large databases; looked up in a precomputed table it pays off at 60,000 items.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nhllib.checks import check_integer
from .buckets import PrefixTable, rank_in_row
from .hamming import HammingIndex, _check_k, require_faiss, sort_rows_by_distance_id
from .packing import _check_bits, as_packed, popcount, to_words

__all__ = ["NestedIndex", "SearchStats"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
# Work arrays of one query batch hold about batch * width elements; this caps them (~32-64 MiB).
_BATCH_ELEMENTS = 2**22
_MAX_BATCH = 1024
# A padded result slot (fewer candidates than k): same convention as faiss.
PAD_ID = -1
PAD_DISTANCE = np.iinfo(np.int32).max
_FULL_WORD = np.uint64(2**64 - 1)
# Mean candidates per query above which search_buckets(backend="auto") uses faiss IndexBinaryHash: numpy
# was faster at ~2,000 candidates per query and faiss ~3x faster at ~35,000 (bench_retrieval.py).
_FAISS_HASH_MIN_CANDIDATES = 8192


@dataclass(frozen=True)
class SearchStats:
    """Work done by one search call, averaged per query.

    ``prefix_keys``: prefixes compared or probed at ``prefix_bits`` (for the bucket table, its number of
    distinct prefixes, an upper bound since near levels are probed by lookup; for a flat scan, the
    database size; for buckets, at most the number of probes within ``nflip``). ``candidates``: items
    re-ranked at ``rerank_bits`` (for a funnel, per stage). ``bits_scanned``: bits x comparisons, summed.
    """

    prefix_bits: int
    prefix_keys: float
    rerank_bits: tuple[int, ...]
    candidates: tuple[float, ...]

    @property
    def bits_scanned(self) -> float:
        return self.prefix_bits * self.prefix_keys + sum(
            b * c for b, c in zip(self.rerank_bits, self.candidates)
        )


def _faiss_available() -> bool:
    try:
        require_faiss()
    except ImportError:
        return False
    return True


def _word_mask(bits: int) -> np.ndarray:
    """uint64 masks keeping the first ``bits`` bits (in packed byte order) of a row of words."""
    n_words = -(-bits // 64)
    mask = np.zeros(8 * n_words, dtype=np.uint8)
    mask[: bits // 8] = 0xFF
    return mask.view(np.uint64)


def _batch_rows(width: int) -> int:
    """Queries per batch so that the (batch, width) work arrays stay bounded."""
    return int(max(1, min(_MAX_BATCH, _BATCH_ELEMENTS // max(width, 1))))


class NestedIndex:
    """Index of nested binary codes with shortlist / bucket / funnel search and exact re-ranking.

    Parameters
    ----------
    code_lengths
        The nested lengths the codes were trained at (strictly increasing positive multiples of 8),
        e.g. ``(16, 32, 64, 128)``. Prefix, bucket and re-rank lengths must be among them: only those
        prefixes are trained codes.
    n_threads
        Threads for the numpy search paths (query batches run in parallel); default: all CPUs, as
        faiss does. Results do not depend on it.

    Codes passed to :meth:`add` and queries are at the longest length: real ±1 arrays/tensors of
    width ``max(code_lengths)`` or packed ``uint8`` rows (see :mod:`nhllib.retrieval.packing`).
    The index stores each code once, at the longest length, and that is all :meth:`save` writes.
    Searches build derived structures on first use and keep them (see :meth:`memory_usage`): a
    bucket table per prefix length, faiss copies of the codes for exhaustive search at a length and
    for ``search_buckets(backend="faiss")``, and the tables of :meth:`build_shortlist_table`.
    Every search returns ``(distances, ids)``: ``int32`` / ``int64`` arrays ``(Q, k)``, rows ordered
    by (distance at the re-rank length, id). Where a bucket search finds fewer than k candidates, the
    row is padded with id ``-1`` and distance ``2**31 - 1`` (faiss's convention).
    """

    def __init__(self, code_lengths: Sequence[int], *, n_threads: int | None = None) -> None:
        if n_threads is None:
            n_threads = os.cpu_count() or 1
        check_integer("n_threads", n_threads, minimum=1, what="a positive int or None")
        self.n_threads = n_threads
        lengths = tuple(code_lengths)
        if not lengths:
            raise ValueError("code_lengths must not be empty")
        for length in lengths:
            _check_bits(length, "code_lengths entry")
        if any(b <= a for a, b in itertools.pairwise(lengths)):
            raise ValueError(f"code_lengths must be strictly increasing, got {lengths}")
        self.code_lengths = tuple(int(x) for x in lengths)
        self.max_length = self.code_lengths[-1]
        n_words = -(-self.max_length // 64)
        # The codes: 64-bit words stored column by column (word w of every item is contiguous), so
        # gathering one word of many candidates is a fast 1-D take.
        self._cols = np.zeros((n_words, 0), dtype=np.uint64)
        self._tables: dict[int, PrefixTable] = {}
        self._flat: dict[int, HammingIndex] = {}
        self._shortlists: dict[tuple[int, int], np.ndarray] = {}  # (prefix bits, s) -> (U, s) ids
        self._hash: dict[tuple[int, int], Any] = {}  # faiss IndexBinaryHash per (bucket, rerank) bits

    # ---------------------------------------------------------------- storage

    def __len__(self) -> int:
        return self._cols.shape[1]

    @property
    def ntotal(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"NestedIndex(code_lengths={self.code_lengths}, ntotal={len(self)})"

    def memory_usage(self) -> dict[str, int]:
        """Bytes held by the codes and by each derived search structure built so far."""
        usage = {"codes": int(self._cols.nbytes)}
        for bits, table in self._tables.items():
            usage[f"bucket_table_{bits}"] = int(table.ids.nbytes + table.keys.nbytes + table.starts.nbytes
                                                + table._bucket_id.nbytes + table.sizes.nbytes)
        for (bits, s), ids in self._shortlists.items():
            usage[f"shortlist_table_{bits}_{s}"] = int(ids.nbytes)
        for bits, flat in self._flat.items():
            usage[f"faiss_flat_{bits}"] = len(flat) * bits // 8
        for (bucket_bits, bits), hashed in self._hash.items():
            usage[f"faiss_hash_{bucket_bits}_{bits}"] = int(hashed.ntotal) * (bits // 8 + 8)  # codes + ids
        return usage

    def codes(self, bits: int | None = None) -> np.ndarray:
        """Packed codes ``(ntotal, bits // 8)`` (a copy); ``bits`` defaults to the longest length."""
        bits = self.max_length if bits is None else self._check_length(bits, "bits")
        return np.ascontiguousarray(self._cols.T).view(np.uint8)[:, : bits // 8].copy()

    def add(self, codes: Any) -> None:
        """Append codes (longest length); they get the next ids in order.

        faiss copies are extended; bucket tables are rebuilt on the next search that needs them;
        precomputed shortlist tables are dropped (rebuild them with :meth:`build_shortlist_table`).
        """
        packed = as_packed(codes, self.max_length, "codes")
        if len(packed) == 0:
            return
        self._cols = np.ascontiguousarray(np.concatenate([self._cols, to_words(packed).T], axis=1))
        self._tables.clear()  # rebuilt lazily by the next search that needs them
        if self._shortlists:
            logger.info("add() dropped the precomputed shortlist tables; call build_shortlist_table again")
            self._shortlists.clear()
        for bits, flat in self._flat.items():
            flat.add(np.ascontiguousarray(packed[:, : bits // 8]))
        for (_, bits), hashed in self._hash.items():
            hashed.add(np.ascontiguousarray(packed[:, : bits // 8]))

    def save(self, path: str | os.PathLike) -> None:
        """Write the packed longest codes and ``code_lengths`` to one ``.npz`` file at exactly ``path``."""
        path = Path(path)
        if not path.parent.exists():
            raise FileNotFoundError(f"directory of path does not exist: {path.parent}")
        with open(path, "wb") as fh:  # a file object stops numpy from appending ".npz"
            np.savez(
                fh,
                format_version=np.int64(_FORMAT_VERSION),
                code_lengths=np.asarray(self.code_lengths, dtype=np.int64),
                packed=self.codes(),
            )

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_threads: int | None = None) -> NestedIndex:
        """Read an index written by :meth:`save` (``n_threads`` as in the constructor)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no NestedIndex file at {path}")
        import zipfile
        import zlib

        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path} is not a NestedIndex .npz file: {err}") from err
        with data:
            missing = {"format_version", "code_lengths", "packed"} - set(data.files)
            if missing:
                raise KeyError(f"{path} is not a NestedIndex file; missing arrays {sorted(missing)}")
            try:  # the arrays are read lazily: a truncated or bit-flipped member fails here
                version = int(data["format_version"])
                lengths = [int(x) for x in data["code_lengths"]]
                packed = data["packed"]
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
                raise ValueError(f"{path}: truncated or corrupt NestedIndex file ({type(err).__name__}: {err}); "
                                 "rebuild the index and save it again") from None
            if version != _FORMAT_VERSION:
                raise ValueError(f"{path} has format_version {version}, expected {_FORMAT_VERSION}")
            try:
                index = cls(lengths, n_threads=n_threads)
                index.add(packed)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: the stored index is inconsistent ({err})") from None
        return index

    # ---------------------------------------------------------------- helpers

    def _batch_step(self, n_rows: int, step: int) -> int:
        """Batch size: at most ``step`` rows, and at least one batch per thread."""
        return max(1, min(step, -(-n_rows // self.n_threads)))

    def _run_batches(self, n_rows: int, step: int, work: Callable[[int, int], None]) -> None:
        """Call ``work(lo, hi)`` on consecutive query batches, on up to ``n_threads`` threads.

        numpy releases the GIL in the heavy kernels (take, sort, partition, ufuncs), so batches on
        threads use the cores as faiss does with OpenMP. Batches write disjoint output rows.
        """
        step = self._batch_step(n_rows, step)
        bounds = [(lo, min(lo + step, n_rows)) for lo in range(0, n_rows, step)]
        if self.n_threads <= 1 or len(bounds) == 1:
            for lo, hi in bounds:
                work(lo, hi)
            return
        with ThreadPoolExecutor(max_workers=self.n_threads) as pool:
            list(pool.map(lambda b: work(*b), bounds))

    def _check_length(self, bits: int, name: str) -> int:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(bits).__name__}")
        if int(bits) not in self.code_lengths:
            raise ValueError(f"{name}={bits} is not one of code_lengths {self.code_lengths}")
        return int(bits)

    def _queries(self, queries: Any) -> np.ndarray:
        """Query words ``(Q, n_words)``."""
        return to_words(as_packed(queries, self.max_length, "queries"))

    def _table(self, bits: int) -> PrefixTable:
        if bits not in self._tables:
            self._tables[bits] = PrefixTable(self._cols[0], bits)
            logger.debug("built %d-bit prefix table: %d buckets", bits, len(self._tables[bits]))
        return self._tables[bits]

    def _flat_index(self, bits: int) -> HammingIndex:
        if bits not in self._flat:
            flat = HammingIndex(bits)
            if len(self):
                flat.add(self.codes(bits))
            self._flat[bits] = flat
        return self._flat[bits]

    def _distances(
        self, q_words: np.ndarray, cand: np.ndarray, bits: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Hamming distances at ``bits`` (``uint16``) between queries and candidate ids.

        Either ``cand`` is ``(B, s)`` and row b holds candidates of query b, or ``cand`` is flat ``(T,)``
        and ``rows`` ``(T,)`` names each candidate's query.
        """
        dist = None
        for w, mask in enumerate(_word_mask(bits)):
            q_col = np.ascontiguousarray(q_words[:, w])
            q = q_col[:, None] if rows is None else np.take(q_col, rows)
            x = np.take(self._cols[w], cand) ^ q
            if mask != _FULL_WORD:
                x &= mask
            count = popcount(x)
            dist = count.astype(np.uint16) if dist is None else dist + count
        return dist

    def _key_layout(self, bits: int) -> tuple[type, int]:
        """Sort keys ``(distance << shift) | id``: uint32 when they fit (faster sorts), else uint64."""
        shift = max(1, (len(self) - 1).bit_length())
        dtype = np.uint32 if shift + int(bits).bit_length() <= 32 else np.uint64
        return dtype, shift

    def _rerank(self, q_words: np.ndarray, cand: np.ndarray, bits: int, keep: int, ordered: bool):
        """The ``keep`` smallest (distance, id) among candidate rows ``(B, s)``.

        Returns ``(distances, ids)`` ``(B, keep)``, sorted when ``ordered`` (the final stage).
        """
        dtype, shift = self._key_layout(bits)
        keys = (self._distances(q_words, cand, bits).astype(dtype) << dtype(shift)) | cand.astype(dtype)
        if keep < keys.shape[1]:
            keys = np.partition(keys, keep - 1, axis=1)[:, :keep]
        if ordered:
            keys = np.sort(keys, axis=1)
        id_mask = dtype((1 << shift) - 1)
        return (keys >> dtype(shift)).astype(np.int32), (keys & id_mask).astype(np.int64)

    def _rerank_pairs(self, q_words: np.ndarray, rows: np.ndarray, ids: np.ndarray, bits: int, k: int):
        """Top-k per query from row-major (row, id) candidate pairs; short rows are padded."""
        n_rows = len(q_words)
        dist = self._distances(q_words, ids, bits, rows=rows)
        # Drop candidates beyond each row's k-th distance first (a histogram per row), so the padded
        # array that is sorted below is about k wide instead of as wide as the largest candidate set.
        levels = bits + 1
        hist = np.bincount(rows * levels + dist, minlength=n_rows * levels).reshape(n_rows, levels)
        kth_level = (np.cumsum(hist, axis=1) < k).sum(axis=1)
        keep = dist <= kth_level[rows]
        rows, ids, dist = rows[keep], ids[keep], dist[keep]
        dtype, shift = self._key_layout(bits)
        pad_key = np.iinfo(dtype).max  # sorts after every real key
        width = max(k, int(np.bincount(rows, minlength=n_rows).max(initial=0)))
        keys = np.full(n_rows * width, pad_key, dtype=dtype)
        keys[rows * width + rank_in_row(rows, n_rows)] = (dist.astype(dtype) << dtype(shift)) | ids.astype(dtype)
        keys = keys.reshape(n_rows, width)
        if k < width:
            keys = np.partition(keys, k - 1, axis=1)[:, :k]
        keys = np.sort(keys, axis=1)
        pad = keys == pad_key
        id_mask = dtype((1 << shift) - 1)
        out_d = (keys >> dtype(shift)).astype(np.int32)
        out_i = (keys & id_mask).astype(np.int64)
        out_d[pad] = PAD_DISTANCE
        out_i[pad] = PAD_ID
        return out_d, out_i

    def _shortlist(self, table: PrefixTable, q_keys: np.ndarray, s: int) -> np.ndarray:
        """Top-s ids by (prefix distance, id) per query key, from the precomputed table where it has the key."""
        pre = self._shortlists.get((table.bits, s))
        if pre is None:
            return table.top(q_keys, s)
        pos = np.minimum(np.searchsorted(table.keys, q_keys), len(table.keys) - 1)
        hit = table.keys[pos] == q_keys
        out = np.empty((len(q_keys), s), dtype=np.int64)
        out[hit] = pre[pos[hit]]
        if not hit.all():
            out[~hit] = table.top(q_keys[~hit], s)
        return out

    def build_shortlist_table(self, prefix_bits: int, shortlist: int) -> int:
        """Precompute the ``shortlist`` nearest items of every prefix that occurs in the database.

        A shortlist depends only on the query's ``prefix_bits`` prefix, and a short prefix takes few
        distinct values, so :meth:`search_shortlist` and :meth:`search_funnel` (first stage) can then look
        the shortlist up instead of computing it; queries whose prefix is not in the database still get
        it computed. Results are identical. Costs ``distinct prefixes x shortlist`` ids of memory (returned,
        in bytes); :meth:`add` drops the table.
        """
        prefix_bits = self._check_length(prefix_bits, "prefix_bits")
        if prefix_bits > 64:
            raise ValueError(f"prefix_bits must be at most 64 for a shortlist table, got {prefix_bits}")
        check_integer("shortlist", shortlist, minimum=1, what="an int >= 1")
        if len(self) == 0:
            raise ValueError("the index is empty; add codes before building a shortlist table")
        s = min(int(shortlist), len(self))
        table = self._table(prefix_bits)
        id_dtype = np.int32 if len(self) < 2**31 else np.int64
        out = np.empty((len(table), s), dtype=id_dtype)

        def work(lo: int, hi: int) -> None:
            out[lo:hi] = table.top(table.keys[lo:hi], s)

        self._run_batches(len(table), _batch_rows(max(s, len(table))), work)
        self._shortlists[(prefix_bits, s)] = out
        return int(out.nbytes)

    # ---------------------------------------------------------------- search

    def search(self, queries: Any, k: int, *, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive top-k at ``bits`` (default the longest length), via faiss ``IndexBinaryFlat``."""
        bits = self.max_length if bits is None else self._check_length(bits, "bits")
        _check_k(k, len(self))
        q = as_packed(queries, self.max_length, "queries")
        return self._flat_index(bits).search(np.ascontiguousarray(q[:, : bits // 8]), k)

    def search_shortlist(
        self,
        queries: Any,
        k: int,
        *,
        prefix_bits: int,
        shortlist: int | None = None,
        radius: int | None = None,
        rerank_bits: int | None = None,
        method: str = "auto",
        return_stats: bool = False,
    ) -> Any:
        """Shortlist by the ``prefix_bits`` prefix, then re-rank exactly by the ``rerank_bits`` code.

        Give exactly one of ``shortlist`` (the ``shortlist`` items with the smallest (prefix distance,
        id); ``k <= shortlist``; a shortlist ``>= len(self)`` means every item, i.e. the exhaustive
        result) or ``radius`` (every item whose prefix is within Hamming distance ``radius``, as
        :meth:`search_buckets` with ``nflip=radius``; rows with fewer than k candidates are padded).

        ``method`` computes the top-``shortlist`` prefix stage with the bucket table (``"buckets"``,
        prefixes of at most 64 bits), a faiss flat scan of the prefixes (``"flat"``), or
        ``"auto"`` (buckets when ``prefix_bits <= 64`` and there are at most half as many distinct
        prefixes as items, or when faiss is not installed). Both give the same result. With
        ``return_stats=True`` a :class:`SearchStats` is returned as a third element.
        """
        if (shortlist is None) == (radius is None):
            raise ValueError("give exactly one of shortlist and radius")
        rerank_bits = self.max_length if rerank_bits is None else rerank_bits
        if radius is not None:
            return self.search_buckets(
                queries, k, bucket_bits=prefix_bits, nflip=radius, rerank_bits=rerank_bits,
                return_stats=return_stats,
            )
        return self.search_funnel(
            queries, k, bits=(prefix_bits, rerank_bits), shortlists=(shortlist,), method=method,
            return_stats=return_stats,
        )

    def search_funnel(
        self,
        queries: Any,
        k: int,
        *,
        bits: Sequence[int],
        shortlists: Sequence[int],
        method: str = "auto",
        return_stats: bool = False,
    ) -> Any:
        """Cascade: top ``shortlists[0]`` by ``bits[0]``, re-ranked by ``bits[1]`` down to ``shortlists[1]``, ...

        ``bits`` are strictly increasing code lengths (``len(shortlists) + 1`` of them); the last
        stage re-ranks by ``bits[-1]`` and returns the top k. ``shortlists`` must be non-increasing and
        ``>= k`` (values above ``len(self)`` are clamped to it). E.g. ``bits=(16, 32, 128),
        shortlists=(4000, 1000)``. ``method`` is as in :meth:`search_shortlist`.
        """
        bits = tuple(self._check_length(b, "bits entry") for b in bits)
        shortlists = tuple(shortlists)
        if len(bits) < 2 or len(shortlists) != len(bits) - 1:
            raise ValueError(
                f"need at least two lengths and len(shortlists) == len(bits) - 1, got bits={bits}, "
                f"shortlists={shortlists}"
            )
        if any(b <= a for a, b in itertools.pairwise(bits)):
            raise ValueError(f"funnel bits must be strictly increasing, got {bits}")
        _check_k(k, len(self))
        for s in shortlists:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"shortlist sizes must be ints, got {shortlists}")
            if s < k:
                raise ValueError(f"every shortlist must be >= k={k}, got {shortlists}")
        if any(b > a for a, b in itertools.pairwise(shortlists)):
            raise ValueError(f"shortlists must be non-increasing, got {shortlists}")
        if method not in ("auto", "buckets", "flat"):
            raise ValueError(f"method must be 'auto', 'buckets' or 'flat', got {method!r}")
        n = len(self)
        sizes = tuple(min(int(s), n) for s in shortlists)
        q_words = self._queries(queries)
        first = bits[0]

        if sizes[0] >= n:
            stage = "all"  # the prefix stage would select every item: skip it
        elif method == "flat" or first > 64:
            if method == "buckets":
                raise ValueError(f"method='buckets' supports prefixes of at most 64 bits, got {first}")
            stage = "flat"
        elif method == "buckets":
            stage = "buckets"
        else:
            stage = "flat" if len(self._table(first)) > n // 2 and _faiss_available() else "buckets"

        if stage == "flat":
            q_bytes = np.ascontiguousarray(q_words.view(np.uint8)[:, : first // 8])
            _, flat_cands = self._flat_index(first).search(q_bytes, sizes[0])
        n_q = len(q_words)
        out_d = np.empty((n_q, k), dtype=np.int32)
        out_i = np.empty((n_q, k), dtype=np.int64)
        table = self._table(first) if stage == "buckets" else None
        stages = list(zip(bits[1:], sizes[1:] + (k,)))

        def work(lo: int, hi: int) -> None:
            qb = q_words[lo:hi]
            if stage == "all":
                cand = np.broadcast_to(np.arange(n, dtype=np.int64), (len(qb), n))
            elif stage == "flat":
                cand = flat_cands[lo:hi]
            else:
                cand = self._shortlist(table, table.query_keys(qb[:, 0]), sizes[0])
            for i, (stage_bits, keep) in enumerate(stages):
                d, cand = self._rerank(qb, cand, stage_bits, keep, ordered=i == len(stages) - 1)
            out_d[lo:hi] = d
            out_i[lo:hi] = cand

        self._run_batches(n_q, _batch_rows(max(sizes[0], len(table) if table is not None else 0)), work)
        if not return_stats:
            return out_d, out_i
        prefix_keys = {"all": 0.0, "flat": float(n), "buckets": float(len(self._table(first)))}[stage]
        stats = SearchStats(first, prefix_keys, bits[1:], tuple(float(s) for s in sizes))
        return out_d, out_i, stats

    def search_buckets(
        self,
        queries: Any,
        k: int,
        *,
        bucket_bits: int,
        nflip: int,
        rerank_bits: int | None = None,
        backend: str = "auto",
        return_stats: bool = False,
    ) -> Any:
        """Probe the buckets within ``nflip`` bit flips of the query's ``bucket_bits`` prefix, re-rank.

        Candidates are all items whose ``bucket_bits`` prefix differs from the query's in at most
        ``nflip`` bits; they are ranked by (``rerank_bits`` distance, id). Rows with fewer than k
        candidates are padded (id ``-1``). ``nflip >= bucket_bits`` probes every bucket, i.e. gives the
        exhaustive result.

        ``backend``: ``"numpy"`` re-ranks the candidates of the bucket table in numpy; ``"faiss"`` probes
        and re-ranks in faiss ``IndexBinaryHash`` (C++; it keeps its own copy of the codes at
        ``rerank_bits``, built on first use) and then restores the tie rule, which faiss does not
        follow (it keeps items tied at the k-th distance in bucket-visit order): every candidate up to
        each query's k-th distance is fetched with a faiss range search and sorted by (distance, id).
        ``"auto"``: faiss for large candidate sets (at least ``8192`` per query on average; measured
        faster there), when faiss is installed, ``rerank_bits >= 64`` (faiss hashes the first 8 bytes
        of a code) and enumerating the probes is not dearer than scanning the buckets; else numpy. Both
        give the same result.
        """
        bucket_bits = self._check_length(bucket_bits, "bucket_bits")
        rerank_bits = self.max_length if rerank_bits is None else self._check_length(rerank_bits, "rerank_bits")
        if bucket_bits > 64:
            raise ValueError(f"bucket_bits must be at most 64, got {bucket_bits}")
        if isinstance(nflip, bool) or not isinstance(nflip, (int, np.integer)):
            raise TypeError(f"nflip must be an int, got {type(nflip).__name__}")
        if nflip < 0:
            raise ValueError(f"nflip must be >= 0, got {nflip}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if backend not in ("auto", "faiss", "numpy"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy', got {backend!r}")
        if backend == "faiss" and rerank_bits < 64:
            raise ValueError(f"backend='faiss' needs rerank_bits >= 64, got {rerank_bits}")
        if len(self) == 0:
            raise ValueError("the index is empty; add codes before searching")
        nflip = min(int(nflip), bucket_bits)
        q_words = self._queries(queries)
        table = self._table(bucket_bits)
        n_q = len(q_words)
        n_probes = sum(math.comb(bucket_bits, level) for level in range(nflip + 1))

        # candidate buckets of every query (cheap: bucket level); they decide the backend
        step = self._batch_step(n_q, _batch_rows(len(table)))
        pairs = [table.select(table.query_keys(q_words[lo : lo + step, 0]), radius=nflip)[:2]
                 for lo in range(0, n_q, step)]
        n_cand = sum(int(table.sizes[buckets].sum()) for _, buckets in pairs) / n_q
        if backend == "auto":
            use_faiss = (
                rerank_bits >= 64 and n_cand >= _FAISS_HASH_MIN_CANDIDATES
                and n_probes <= 4 * len(table) and _faiss_available()
            )
            backend = "faiss" if use_faiss else "numpy"
        if backend == "faiss":
            q_bytes = np.ascontiguousarray(q_words.view(np.uint8)[:, : rerank_bits // 8])
            out_d, out_i = self._hash_search(q_bytes, k, bucket_bits, nflip, rerank_bits)
        else:
            out_d, out_i = self._bucket_search(q_words, k, table, pairs, step, rerank_bits)
        if not return_stats:
            return out_d, out_i
        keys = float(min(n_probes, len(table)))
        return out_d, out_i, SearchStats(bucket_bits, keys, (rerank_bits,), (n_cand,))

    def _bucket_search(
        self, q_words: np.ndarray, k: int, table: PrefixTable, pairs: list, step: int, rerank_bits: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """numpy backend: expand each batch's (row, bucket) pairs into items and re-rank them."""
        n_q = len(q_words)
        out_d = np.empty((n_q, k), dtype=np.int32)
        out_i = np.empty((n_q, k), dtype=np.int64)

        def work(batch: int) -> None:
            lo = batch * step
            qb = q_words[lo : lo + step]
            rows, ids = table._expand(*pairs[batch])
            out_d[lo : lo + step], out_i[lo : lo + step] = self._rerank_pairs(qb, rows, ids, rerank_bits, k)

        if self.n_threads > 1 and len(pairs) > 1:
            with ThreadPoolExecutor(max_workers=self.n_threads) as pool:
                list(pool.map(work, range(len(pairs))))
        else:
            for batch in range(len(pairs)):
                work(batch)
        return out_d, out_i

    def _hash_index(self, bucket_bits: int, rerank_bits: int) -> Any:
        """faiss IndexBinaryHash over the ``rerank_bits`` codes, hashed on the first ``bucket_bits`` (cached)."""
        key = (bucket_bits, rerank_bits)
        if key not in self._hash:
            index = require_faiss().IndexBinaryHash(rerank_bits, bucket_bits)
            index.add(self.codes(rerank_bits))
            self._hash[key] = index
        return self._hash[key]

    def _hash_search(
        self, q_bytes: np.ndarray, k: int, bucket_bits: int, nflip: int, rerank_bits: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss backend of :meth:`search_buckets`, with ties at the k-th distance restored to id order."""
        index = self._hash_index(bucket_bits, rerank_bits)
        index.nflip = nflip
        distances, ids = index.search(q_bytes, k)
        distances, ids = sort_rows_by_distance_id(distances.astype(np.int32, copy=False), ids)
        # A row with k results may hold the wrong items among those tied at its k-th distance (faiss
        # keeps the first visited). Fetch every candidate up to that distance and keep the k smallest
        # (distance, id). Rows with fewer than k results already hold every candidate.
        full = ids[:, -1] >= 0
        kth = distances[:, -1]
        dtype, shift = self._key_layout(rerank_bits)
        for radius in np.unique(kth[full]):
            rows = np.flatnonzero(full & (kth == radius))
            lims, dist, found = index.range_search(q_bytes[rows], int(radius) + 1)
            counts = np.diff(lims.astype(np.int64))
            cand_rows = np.repeat(np.arange(len(rows)), counts)
            width = int(counts.max())
            keys = np.full(len(rows) * width, np.iinfo(dtype).max, dtype=dtype)
            keys[cand_rows * width + rank_in_row(cand_rows, len(rows))] = (
                dist.astype(dtype) << dtype(shift)
            ) | found.astype(dtype)
            keys = np.sort(keys.reshape(len(rows), width), axis=1)[:, :k]
            distances[rows] = (keys >> dtype(shift)).astype(np.int32)
            ids[rows] = (keys & dtype((1 << shift) - 1)).astype(np.int64)
        return distances, ids
