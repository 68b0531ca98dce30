"""Items grouped by the value of their b-bit prefix, and exact prefix-distance selection over the groups.

:class:`PrefixTable` sorts a database once by prefix value (b <= 64 bits): a sorted array of distinct
prefixes ("buckets") and, per bucket, its item ids in increasing order. Queries then work on buckets,
not items:

- :meth:`PrefixTable.select` finds the buckets near each query prefix, level by level in increasing
  Hamming distance: near levels by enumerating the keys within a few bit flips and looking them up (as
  faiss ``IndexBinaryHash`` does), farther levels by comparing with every distinct prefix;
- :meth:`PrefixTable.within` lists the items of all buckets within a radius;
- :meth:`PrefixTable.top` returns the exact top-s items by (prefix distance, id): whole buckets below
  the boundary distance, and at the boundary the smallest ids across the tied buckets.

Used by :class:`nhllib.retrieval.NestedIndex`; all arrays are numpy, nothing needs faiss.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .packing import popcount

__all__ = ["PrefixTable", "prefix_keys", "rank_in_row"]

# Enumerating one probe key (a binary search) is counted as this many bucket-key comparisons of a scan.
_PROBE_COST = 16


def rank_in_row(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Position of each element among the elements of its row (``rows`` sorted ascending)."""
    counts = np.bincount(rows, minlength=n_rows)
    first = np.cumsum(counts) - counts
    return np.arange(len(rows), dtype=np.int64) - np.repeat(first, counts)


def prefix_keys(first_word: np.ndarray, bits: int) -> np.ndarray:
    """The first ``bits`` (<= 64) bits of each code as one unsigned integer of the smallest fitting size.

    The bytes are read little-endian, so the key's value is the same on every machine; small keys
    make the query-to-bucket XOR + popcount cheaper than on full 64-bit words.
    """
    n_bytes = bits // 8
    size = 1 if n_bytes <= 1 else 2 if n_bytes <= 2 else 4 if n_bytes <= 4 else 8
    raw = np.ascontiguousarray(first_word).view(np.uint8).reshape(-1, 8)
    buf = np.zeros((len(raw), size), dtype=np.uint8)
    buf[:, :n_bytes] = raw[:, :n_bytes]
    return buf.view(f"<u{size}").reshape(-1).astype(f"=u{size}")


class PrefixTable:
    """Items grouped by their b-bit prefix (b <= 64): sorted distinct keys, and ids per key in id order."""

    def __init__(self, first_word: np.ndarray, bits: int) -> None:
        if bits > 64:
            raise ValueError(f"prefix buckets support prefixes of at most 64 bits, got {bits}")
        self.bits = bits
        item_keys = prefix_keys(first_word, bits)
        self.ids = np.argsort(item_keys, kind="stable")  # stable: ids ascending inside each bucket
        sorted_keys = item_keys[self.ids]
        first = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        self.keys = sorted_keys[first]
        self.starts = np.r_[first, len(sorted_keys)].astype(np.int64)
        self.sizes = np.diff(self.starts)
        self.n_items = len(sorted_keys)
        # (bucket, id) as one sorted int64: "how many ids below theta in bucket u" is a binary search
        bucket_of = np.repeat(np.arange(len(self.keys), dtype=np.int64), self.sizes)
        self._bucket_id = bucket_of * self.n_items + self.ids
        # per-level counts are matrix-vector products; float32 is exact for integer sums below 2**24
        self._sizes_f = self.sizes.astype(np.float32 if self.n_items < 2**24 else np.float64)
        self._masks: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def _expand(
        self, rows: np.ndarray, buckets: np.ndarray, take: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, bucket) pairs -> (row, item id) pairs: the first ``take`` ids (default all) of each bucket."""
        sizes = self.sizes[buckets] if take is None else take
        total = int(sizes.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ends = np.cumsum(sizes)
        pos = np.arange(total, dtype=np.int64) + np.repeat(self.starts[buckets] - (ends - sizes), sizes)
        return np.repeat(rows, sizes), self.ids[pos]

    def _level_masks(self, level: int) -> np.ndarray:
        """XOR masks flipping exactly ``level`` of the key's bits (the probes at that distance)."""
        if level not in self._masks:
            flips = np.array(list(itertools.combinations(range(self.bits), level)), dtype=np.int64)
            masks = np.zeros(len(flips), dtype=np.uint64)
            for column in flips.T:
                masks |= np.left_shift(np.uint64(1), column.astype(np.uint64))
            self._masks[level] = masks.astype(self.keys.dtype)
        return self._masks[level]

    def query_keys(self, q_first_word: np.ndarray) -> np.ndarray:
        """Prefix keys of queries, comparable with :attr:`keys`."""
        return prefix_keys(q_first_word, self.bits)

    def select(
        self, q_keys: np.ndarray, *, s: int | None = None, radius: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Buckets near each query prefix: all within ``radius``, or up to the level where ``s`` items are reached.

        Returns ``(rows, buckets, dist, threshold, below)``: row-major (row, bucket, distance) pairs for
        every bucket at distance ``<= threshold[row]``, the per-query threshold, and (for ``s``) the
        number of items strictly closer than the threshold.

        Levels are visited in increasing distance. While the number of keys at a level is small
        compared with the number of buckets, the keys at that distance are enumerated and looked up
        (hash-probing, as faiss ``IndexBinaryHash``); rows still open after that compare their prefix
        with every bucket key instead.
        """
        n_rows, n_keys = len(q_keys), len(self.keys)
        max_level = self.bits if s is not None else min(int(radius), self.bits)
        threshold = np.full(n_rows, max_level, dtype=np.int64)
        below = np.zeros(n_rows, dtype=np.int64)
        active = np.arange(n_rows)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        level = 0
        while active.size and level <= max_level and math.comb(self.bits, level) * _PROBE_COST <= n_keys:
            probes = q_keys[active][:, None] ^ self._level_masks(level)[None, :]
            pos = np.minimum(np.searchsorted(self.keys, probes), n_keys - 1)
            local, col = np.nonzero(self.keys[pos] == probes)
            buckets = pos[local, col]
            found.append((active[local], buckets, np.full(len(local), level, dtype=np.int64)))
            if s is not None:
                at_level = np.bincount(local, weights=self.sizes[buckets], minlength=len(active)).astype(np.int64)
                reached = below[active] + at_level >= s
                threshold[active[reached]] = level
                below[active[~reached]] += at_level[~reached]
                active = active[~reached]
            level += 1
        if active.size and level <= max_level:
            dist = popcount(q_keys[active][:, None] ^ self.keys[None, :])
            if s is not None:
                self._threshold(dist, s, level, active, threshold, below)
            local, buckets = np.nonzero((dist >= level) & (dist <= threshold[active][:, None]))
            found.append((active[local], buckets, dist[local, buckets].astype(np.int64)))
        rows, buckets, dist = (np.concatenate(parts) for parts in zip(*found)) if found else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        order = np.argsort(rows, kind="stable")
        return rows[order], buckets[order], dist[order], threshold, below

    def within(self, q_keys: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """All items whose prefix is within ``radius`` of each query: (row, id) pairs, row-major."""
        rows, buckets, _, _, _ = self.select(q_keys, radius=radius)
        return self._expand(rows, buckets)

    def _threshold(
        self, dist: np.ndarray, s: int, start: int, active: np.ndarray, threshold: np.ndarray, below: np.ndarray
    ) -> None:
        """Continue the per-level count from level ``start`` on scanned rows; fills threshold/below in place."""
        local = np.arange(len(active))
        sub = dist
        for level in range(start, self.bits + 1):
            at_level = np.rint((sub == level).astype(self._sizes_f.dtype) @ self._sizes_f).astype(np.int64)
            rows = active[local]
            reached = below[rows] + at_level >= s
            threshold[rows[reached]] = level
            below[rows[~reached]] += at_level[~reached]
            if reached.all():
                return
            if reached.any():  # keep working on the open rows only
                local = local[~reached]
                sub = dist[local]

    def top(self, q_keys: np.ndarray, s: int) -> np.ndarray:
        """The ``s`` items with the smallest (prefix distance, id) for each query: ``(B, s)`` ids, unordered."""
        # the shortlist depends on the query's prefix only, and queries often share prefixes
        unique, inverse = np.unique(q_keys, return_inverse=True)
        if len(unique) < len(q_keys):
            return self.top(unique, s)[inverse.reshape(-1)]
        n_rows = len(q_keys)
        rows, buckets, d, threshold, below = self.select(q_keys, s=s)
        is_lt = d < threshold[rows]
        lt_rows, lt_ids = self._expand(rows[is_lt], buckets[is_lt])
        ids = np.empty(n_rows * s, dtype=np.int64)
        ids[lt_rows * s + rank_in_row(lt_rows, n_rows)] = lt_ids
        # then, at the threshold distance, the `need` smallest ids of each row fill it up to s
        need = s - below
        for eq_rows, eq_ids in self._smallest_tied(rows[~is_lt], buckets[~is_lt], need, n_rows):
            ids[eq_rows * s + below[eq_rows] + rank_in_row(eq_rows, n_rows)] = eq_ids
        return ids.reshape(n_rows, s)

    def _smallest_tied(
        self, rows: np.ndarray, buckets: np.ndarray, need: np.ndarray, n_rows: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``need[row]`` smallest ids over each row's (row-major) buckets, as row-sorted (row, id) groups.

        A row with one bucket takes that bucket's first ids (they are in id order). Rows with several
        buckets either sort their candidates (when buckets are small), or binary-search the id bound
        theta below which exactly ``need`` of their ids lie and take each bucket's ids below it.
        """
        n = self.n_items
        take = np.minimum(self.sizes[buckets], need[rows])  # no bucket can contribute more than `need`
        multi = np.bincount(rows, minlength=n_rows)[rows] > 1
        groups = [self._expand(rows[~multi], buckets[~multi], take[~multi])]
        if not multi.any():
            return groups
        rows, buckets, take = rows[multi], buckets[multi], take[multi]
        n_iter = max(1, n.bit_length())
        if int(take.sum()) <= 2 * n_iter * len(rows):
            cand_rows, cand_ids = self._expand(rows, buckets, take)
            # sort each row's candidate ids in a padded 2-D array: row-wise sorts of 32-bit ids are
            # several times faster than one flat sort of (row, id) keys
            counts = np.bincount(cand_rows, minlength=n_rows)
            width = int(counts.max())
            id_dtype = np.uint32 if n < 2**32 - 1 else np.uint64
            pad = np.iinfo(id_dtype).max
            table = np.full(n_rows * width, pad, dtype=id_dtype)
            table[cand_rows * width + rank_in_row(cand_rows, n_rows)] = cand_ids
            table = table.reshape(n_rows, width)
            longest = int(need[counts > 0].max())
            if longest < width:  # only the first `need` ids of each row matter: partition, then sort those
                table = np.partition(table, longest - 1, axis=1)[:, :longest]
                width = longest
            table = np.sort(table, axis=1)
            kept = np.arange(width)[None, :] < np.minimum(need, counts)[:, None]
            kept_rows, kept_cols = np.nonzero(kept)
            groups.append((kept_rows, table[kept_rows, kept_cols].astype(np.int64)))
            return groups
        # row-major pairs: each row's buckets are one contiguous group
        group_first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        group_rows = rows[group_first]

        def count_below(theta: np.ndarray) -> np.ndarray:
            return np.searchsorted(self._bucket_id, buckets * n + theta[rows]) - self.starts[buckets]

        lo = np.zeros(n_rows, dtype=np.int64)  # count(ids < lo) < need
        hi = np.full(n_rows, n, dtype=np.int64)  # count(ids < hi) >= need
        while (hi - lo > 1)[group_rows].any():
            mid = (lo + hi) // 2
            total = np.zeros(n_rows, dtype=np.int64)
            total[group_rows] = np.add.reduceat(count_below(mid), group_first)
            ok = total >= need
            open_rows = hi - lo > 1
            hi = np.where(open_rows & ok, mid, hi)
            lo = np.where(open_rows & ~ok, mid, lo)
        groups.append(self._expand(rows, buckets, count_below(hi)))
        return groups
