"""Hamming-ranking evaluation of binary codes: tie-aware mAP@K, P@K, PR curves and ``encode``.

Conventions (shared by every function here; docs/evaluation.md §2-§4):

- **Codes.** Any real values, binarised as ``x >= 0 -> +1`` and ``x < 0 -> -1`` (so ``sign(0) = +1``,
  unlike ``torch.sign``). NaN is rejected, and so are {0, 1} bit matrices (map them with ``2 * b - 1``),
  which this rule would otherwise turn into all-(+1) codes.
- **Relevance.** A database item is relevant to a query when their multi-hot label vectors share at least
  one label. Labels must be 0/1.
- **Ranking.** By Hamming distance. ``ties`` says how items at equal distance are ordered:

  ``"expected"`` (default)
      the exact expectation over a uniformly random order within each tie group, in closed form (no
      sampling; also when K cuts a tie group). This is what shuffling the database before a stable
      sort estimates, and it does not depend on how the database happens to be stored.
  ``"optimistic"`` / ``"pessimistic"``
      the best / worst value over all tie orders: relevant items first / last within every tie group.
      For AP@K with K cutting a tie group, the exact extreme can keep some relevant items of the cut
      group outside the top K (see ``nhllib.core.metrics``); for P@K, recall and mAP@all it is plainly
      relevant first / last.
  ``"index"``
      ties ordered by database position, i.e. a stable sort (faiss's order as well).

- **AP@K.** Mean over the relevant items in the top K of (hits so far) / (rank), i.e. normalised by the
  number of relevant items *inside the top K* (DeepHash-pytorch, HashNet, the NHL reference). A query
  with none there contributes 0 and still counts in the mean. ``topk=None`` (or K >= N) ranks the whole
  database, last item included (the reference's ``[:-1]`` slice is not reproduced).

Implementation: distances take only L+1 values, so each query's ranking is summarised by two histograms
(items and relevant items per distance), from which ``nhllib.core.metrics`` computes every count-based tie
mode exactly. Queries are processed in blocks (memory O(block x N)). Per block, one exact int8 matrix
product (labels and ±1 codes in, int32 out) gives histogram keys for up to two lengths at once, packed as a
joint histogram, and one bincount counts them; for nested codes the longer length's distance is the
shorter prefix's plus that of the next bits (see the "distance histograms" section). Only
``ties="index"`` sorts (a stable sort per block and length).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nhllib.checks import check_integer
from nhllib.compat import int8_matmul
from nhllib.core import metrics
from nhllib.retrieval.packing import check_real_codes
from nhllib.vocab import TIE_MODES  # the valid values of every ``ties`` argument

__all__ = [
    "TIE_MODES",
    "mean_average_precision",
    "evaluate_nested",
    "precision_at_k",
    "precision_recall_curve",
    "precision_within_radius",
    "encode",
]

logger = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray

_PARALLEL_MIN = 1 << 20  # query-item pairs below which threads cost more than they save
_BLOCK_ELEMENTS = 1 << 23  # query-item pairs per block: one int32 (block x N) key buffer of 32 MB
_COUNT_BATCH_ROWS = 4096  # queries whose counts go to the metrics in one call
# Joint histograms (see "distance histograms"): at most two lengths per pass, int8 radices, and a joint
# histogram small enough to stay in cache while bincount fills it.
_MAX_JOINT_LENGTHS = 2
_MAX_RADIX = 127
_MAX_JOINT_CELLS = 1 << 13


# ----------------------------------------------------------------------------- input handling


def _as_tensor(x: object, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_2d(x: Tensor, name: str, what: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D {what}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")


def _binarise(codes: object, name: str, device: torch.device) -> Tensor:
    """±1 int8 codes on ``device`` (x >= 0 -> +1); rejects NaN and {0, 1} bit matrices."""
    x = _as_tensor(codes, name)
    _check_2d(x, name, "codes (items, bits)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one bit, got shape {tuple(x.shape)}")
    check_real_codes(x, name)  # the check shared with retrieval: ±1 / real codes only, with how to convert
    x = x.to(device)
    positive = x >= 0
    return positive.to(torch.int8).mul_(2).sub_(1)


def _labels(labels: object, name: str, device: torch.device) -> Tensor:
    y = _as_tensor(labels, name)
    _check_2d(y, name, "multi-hot labels (items, classes)")
    y = y.to(device=device, dtype=torch.float32)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{name} must be multi-hot with values in {{0, 1}} (relevance = sharing a label)")
    return y.contiguous()


def _check_ties(ties: object) -> str:
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {', '.join(map(repr, TIE_MODES))}; got {ties!r}")
    return ties  # type: ignore[return-value]


def _check_topk(topk: object) -> int | None:
    if topk is None:
        return None
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be a positive int or None (whole database), got {topk!r}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1 or None (whole database), got {topk}")
    return int(topk)


def _device_of(x: object, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return x.device if isinstance(x, Tensor) else torch.device("cpu")


class _Problem:
    """Validated inputs of one evaluation: ±1 int8 codes per length, float32 labels, one device.

    ``single`` names the arguments without a ``[L]`` suffix (the one-length functions); otherwise the
    dict keys must equal the code widths.
    """

    def __init__(self, query_codes: Mapping[int, object], query_labels: object, db_codes: Mapping[int, object],
                 db_labels: object, device: torch.device, single: bool = False):
        if set(query_codes) != set(db_codes):
            raise ValueError(f"query_codes and db_codes must have the same code lengths (keys), got "
                             f"{sorted(query_codes)} and {sorted(db_codes)}")
        if not query_codes:
            raise ValueError("query_codes must hold at least one code length")
        for key in query_codes:
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise TypeError(f"query_codes keys must be int code lengths, got {key!r}")
        self.lengths = sorted(int(k) for k in query_codes)
        self.query: dict[int, Tensor] = {}
        self.db: dict[int, Tensor] = {}
        for length in self.lengths:
            tag = "" if single else f"[{length}]"
            q = _binarise(query_codes[length], "query_codes" + tag, device)
            d = _binarise(db_codes[length], "db_codes" + tag, device)
            if q.shape[1] != d.shape[1]:
                raise ValueError(f"query_codes{tag} has {q.shape[1]} bits but db_codes{tag} has {d.shape[1]}; "
                                 f"query and database codes must have the same width")
            if q.shape[1] != length:
                raise ValueError(f"query_codes key {length} must equal its codes' width, got {q.shape[1]} bits")
            self.query[length], self.db[length] = q, d
        self.query_labels = _labels(query_labels, "query_labels", device)
        self.db_labels = _labels(db_labels, "db_labels", device)
        for side, codes, labels in (("query", self.query, self.query_labels), ("db", self.db, self.db_labels)):
            for length in self.lengths:
                if codes[length].shape[0] != labels.shape[0]:
                    tag = "" if single else f"[{length}]"
                    raise ValueError(f"{side}_labels has {labels.shape[0]} rows but {side}_codes{tag} has "
                                     f"{codes[length].shape[0]}; one label row per code is expected")
        if self.query_labels.shape[1] != self.db_labels.shape[1]:
            raise ValueError(f"query_labels has {self.query_labels.shape[1]} classes but db_labels has "
                             f"{self.db_labels.shape[1]}")
        self.device = device
        self.num_queries = self.query_labels.shape[0]
        self.num_db = self.db_labels.shape[0]
        longest = self.lengths[-1]
        # Nested when every shorter code is a prefix of the longest (NestedHashLayer output): then one
        # accumulated distance pass serves all lengths. Otherwise each length gets its own product.
        self.nested = all(
            torch.equal(self.query[k], self.query[longest][:, :k]) and torch.equal(self.db[k], self.db[longest][:, :k])
            for k in self.lengths[:-1]
        )
        logger.debug("evaluating %d queries x %d items at lengths %s (nested=%s)", self.num_queries,
                     self.num_db, self.lengths, self.nested)


def _single(query_codes: object, query_labels: object, db_codes: object, db_labels: object,
            device: torch.device | str | None) -> tuple[_Problem, int]:
    dev = _device_of(query_codes, device)
    q = _as_tensor(query_codes, "query_codes")
    d = _as_tensor(db_codes, "db_codes")
    _check_2d(q, "query_codes", "codes (items, bits)")
    _check_2d(d, "db_codes", "codes (items, bits)")
    if q.shape[1] != d.shape[1]:  # packed codes beside unpacked ones: say so, rather than "widths differ"
        check_real_codes(q, "query_codes")
        check_real_codes(d, "db_codes")
        raise ValueError(f"query_codes has {q.shape[1]} bits but db_codes has {d.shape[1]}; query and database "
                         f"codes must have the same width")
    width = q.shape[1]
    return _Problem({width: q}, query_labels, {width: d}, db_labels, dev, single=True), width


# ----------------------------------------------------------------------------- distance histograms
#
# One query block is summarised per code length by counts over (distance, relevance). Keys
#     key = row * stride + 2 * cell + relevant
# come out of ONE integer matrix product per group of lengths plus a row offset, and one bincount turns
# them into counts. A group serves up to two lengths through a joint histogram: its variables v_i
# (Hamming distances over column blocks) are packed as cell = sum_i radix_i * v_i, and since
# 2 v_i = bits_i - <q_i, db_i>, the product of [labels, -radix-weighted codes] with [labels, codes] gives
# 2 * cell + relevant up to a constant. For nested codes the variables are the distance over the shorter
# prefix and over the next bits, so the longer length's distance is their sum. Entries are int8
# (|radix| <= 127) and products int32, hence exact; where torch has no int8 product the same matrices go
# through a float32 product, also exact (small integers, even with TF32/bf16 inputs).


@dataclass(frozen=True)
class _Group:
    """One matrix product and one bincount serving ``lengths``."""

    lengths: tuple[int, ...]
    query: Tensor  # (Q, K) int8 (float32 when there is no int8 product): [labels, -radix * codes]
    db_t: Tensor  # (K, N) same dtype: [labels; codes]
    constant: int  # sum_i radix_i * bits_i: 2 * cell + relevant = constant + <query row, db column>
    cells: int
    cell_distance: dict[int, Tensor]  # length -> (cells,) long: its Hamming distance in each cell

    @property
    def stride(self) -> int:
        return 2 * self.cells


def _int8_product_available(device: torch.device) -> bool:
    """Whether ``torch._int_mm`` (exact int8 x int8 -> int32, about 4x a float32 product on CPU) is used.

    The op is private: :func:`nhllib.compat.int8_matmul` probes it once; without it the float32 product (exact
    for these integer sums) is the tested fallback.
    """
    return device.type == "cpu" and int8_matmul() is not None


def _plan_variables(problem: _Problem, joint: bool) -> list[list[tuple[int, slice | None]]]:
    """Groups of ``(length, columns)``: ``columns`` of the longest code (nested) or ``None`` (own codes).

    Lengths are taken in increasing order and joined to the current group while it has fewer than
    ``_MAX_JOINT_LENGTHS`` lengths, the next radix fits int8 and the joint histogram stays under
    ``_MAX_JOINT_CELLS`` cells per query; ``joint=False`` gives one length per group (the key layout
    ``row * 2(L+1) + 2d + relevant`` that the sorting tie mode needs).
    """
    groups: list[list[tuple[int, slice | None]]] = []
    cells = 0  # of the current group's joint histogram = the radix a next variable would get
    for length in problem.lengths:
        group = groups[-1] if groups else []
        start = group[-1][0] if group and problem.nested else 0
        values = length - start + 1 if problem.nested else length + 1
        if (joint and group and len(group) < _MAX_JOINT_LENGTHS and cells <= _MAX_RADIX
                and cells * values <= _MAX_JOINT_CELLS):
            group.append((length, slice(start, length) if problem.nested else None))
            cells *= values
        else:
            groups.append([(length, slice(0, length) if problem.nested else None)])
            cells = length + 1
    return groups


def _build_group(problem: _Problem, variables: list[tuple[int, slice | None]], with_labels: bool,
                 integer: bool) -> _Group:
    longest_q, longest_db = problem.query[problem.lengths[-1]], problem.db[problem.lengths[-1]]
    q_parts, db_parts = [], []
    if with_labels:
        q_parts.append(problem.query_labels)
        db_parts.append(problem.db_labels)
    radices, value_counts, constant = [], [], 0
    radix = 1
    for length, columns in variables:
        q = problem.query[length] if columns is None else longest_q[:, columns]
        d = problem.db[length] if columns is None else longest_db[:, columns]
        q_parts.append(q * -radix)
        db_parts.append(d)
        radices.append(radix)
        value_counts.append(q.shape[1] + 1)
        constant += radix * q.shape[1]
        radix *= q.shape[1] + 1
    cells = radix
    dtype = torch.int8 if integer else torch.float32
    width = sum(part.shape[1] for part in q_parts)
    pad = -width % 8  # aligned inner dimension for the int8 kernels
    q_parts.append(longest_q.new_zeros(problem.num_queries, pad))
    db_parts.append(longest_db.new_zeros(problem.num_db, pad))
    query = torch.cat([part.to(dtype) for part in q_parts], 1)
    db_t = torch.cat([part.to(dtype) for part in db_parts], 1).T.contiguous()
    cell = torch.arange(cells, device=problem.device)
    values = [(cell // r) % n for r, n in zip(radices, value_counts)]
    cell_distance = {}
    for i, (length, columns) in enumerate(variables):
        # Nested: the length's distance is the sum of the group's variables up to its own.
        cell_distance[length] = torch.stack(values[: i + 1]).sum(0) if columns is not None else values[i]
    return _Group(tuple(length for length, _ in variables), query.contiguous(), db_t, constant, cells,
                  cell_distance)


def _block_rows(problem: _Problem, groups: list[_Group], block_size: int | None) -> int:
    if block_size is None:
        rows = max(1, _BLOCK_ELEMENTS // max(problem.num_db, 1))
    else:
        check_integer("block_size", block_size, minimum=1, what="a positive int or None")
        rows = block_size
    # int32 keys: row * stride + constant + labels must stay below 2**31
    cap = min(((1 << 31) - 1 - g.constant - problem.query_labels.shape[1]) // g.stride for g in groups)
    return max(1, min(rows, cap, problem.num_queries))


def _bincount(keys: Tensor, minlength: int, pool: ThreadPoolExecutor | None, workers: int = 1) -> Tensor:
    """``torch.bincount`` split over the ``workers`` threads of ``pool``: on CPU it runs on one core, and it is
    the evaluation's hot spot."""
    if pool is None:
        return torch.bincount(keys, minlength=minlength)
    parts = list(pool.map(lambda chunk: torch.bincount(chunk, minlength=minlength), keys.chunk(workers)))
    return torch.stack(parts).sum(0)


def _histograms(problem: _Problem, block_size: int | None, joint: bool = True
                ) -> Iterator[tuple[slice, int, Tensor, Tensor | None]]:
    """Yield ``(rows, L, counts, keys)`` per query block and code length.

    ``counts`` is int64 (rows, L+1, 2): items at each distance, split by relevance (index 1 = relevant).
    With ``joint=False`` every length has its own pass and ``keys`` is an int32 (rows, N) view
    ``row * 2(L+1) + 2 * distance + relevant`` (row local to the block), overwritten at the next step;
    with ``joint=True`` (fewer passes) ``keys`` is None.
    """
    dev, n_db = problem.device, problem.num_db
    integer = _int8_product_available(dev)
    int_mm = int8_matmul() if integer else None
    # Relevance is the label product itself unless two multi-label rows can share several labels; then it
    # is clamped once per block and added to every group's keys.
    multi_label = bool((problem.query_labels.sum(1) > 1).any()) and bool((problem.db_labels.sum(1) > 1).any())
    groups = [_build_group(problem, variables, not multi_label, integer)
              for variables in _plan_variables(problem, joint)]
    rows_per_block = _block_rows(problem, groups, block_size)
    key_buf = torch.empty(rows_per_block * n_db, dtype=torch.int32, device=dev)
    float_buf = None if integer else torch.empty(rows_per_block * n_db, dtype=torch.float32, device=dev)
    rel_buf = labels_q = labels_db_t = None
    if multi_label:
        rel_buf = torch.empty_like(key_buf)
        labels_q = problem.query_labels.to(torch.int8 if integer else torch.float32)
        labels_db_t = problem.db_labels.to(labels_q.dtype).T.contiguous()
    threads = torch.get_num_threads() if dev.type == "cpu" else 1
    pool = ThreadPoolExecutor(threads) if threads > 1 and problem.num_queries * n_db >= _PARALLEL_MIN else None

    def product(a: Tensor, b_t: Tensor, out: Tensor) -> Tensor:
        if integer:
            return int_mm(a, b_t, out=out)  # exact int8 GEMM, no public equivalent
        acc = float_buf[: out.numel()].view(out.shape)
        torch.matmul(a, b_t, out=acc)
        return out.copy_(acc)

    try:
        for start in range(0, problem.num_queries, rows_per_block):
            stop = min(start + rows_per_block, problem.num_queries)
            rows, b = slice(start, stop), stop - start
            keys = key_buf[: b * n_db].view(b, n_db)
            if rel_buf is not None:
                relevant = product(labels_q[rows], labels_db_t, rel_buf[: b * n_db].view(b, n_db)).clamp_(max=1)
            row_index = torch.arange(b, device=dev, dtype=torch.int32)[:, None]
            for group in groups:
                product(group.query[rows], group.db_t, keys)
                keys.add_(row_index * group.stride + group.constant)
                if rel_buf is not None:
                    keys.add_(relevant)
                joint_counts = _bincount(keys.view(-1), b * group.stride, pool, threads)
                if joint_counts.numel() != b * group.stride:
                    raise RuntimeError("internal error: Hamming histogram keys out of range")
                joint_counts = joint_counts.view(b, group.cells, 2)
                for length in group.lengths:
                    if len(group.lengths) == 1:
                        counts = joint_counts
                    else:
                        counts = joint_counts.new_zeros(b, length + 1, 2).index_add_(
                            1, group.cell_distance[length], joint_counts)
                    yield rows, length, counts, None if joint else keys
    finally:
        if pool is not None:
            pool.shutdown()


def _batched_counts(problem: _Problem, block_size: int | None) -> Iterator[tuple[int, Tensor]]:
    """``(L, counts)`` over batches of at least ``_COUNT_BATCH_ROWS`` queries (fewer calls of the metrics)."""
    pending: dict[int, list[Tensor]] = {length: [] for length in problem.lengths}
    buffered = 0
    for rows, length, counts, _ in _histograms(problem, block_size):
        pending[length].append(counts)
        if length == problem.lengths[-1]:
            buffered += rows.stop - rows.start
            if buffered >= _COUNT_BATCH_ROWS or rows.stop == problem.num_queries:
                for key in problem.lengths:
                    yield key, torch.cat(pending[key])
                    pending[key] = []
                buffered = 0


def _ranked_relevance(keys: Tensor, length: int, k: int) -> Tensor:
    """Relevance (rows, k), bool, of the first k items ranked by (distance, database position)."""
    row_base = torch.arange(keys.shape[0], device=keys.device, dtype=torch.int32)[:, None] * (length + 1)
    dist = (keys >> 1).sub_(row_base)
    if keys.device.type == "cpu" and length < (1 << 15):
        # numpy's stable sort is a radix sort for 16-bit keys: O(N), far faster than a comparison sort.
        order = torch.from_numpy(np.argsort(dist.to(torch.int16).numpy(), axis=1, kind="stable")[:, :k])
    else:
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return (keys.gather(1, order) & 1).bool()


def _map_per_length(problem: _Problem, topk: int | None, ties: str, block_size: int | None) -> dict[int, float]:
    sums = {length: 0.0 for length in problem.lengths}
    if ties == "index":
        k_eff = problem.num_db if topk is None else min(topk, problem.num_db)
        for _, length, _, keys in _histograms(problem, block_size, joint=False):
            sums[length] += float(metrics.average_precision_from_ranking(_ranked_relevance(keys, length, k_eff)).sum())
    else:
        tables = metrics.RankTables.build(problem.num_db, problem.device)
        for length, counts in _batched_counts(problem, block_size):
            ap = metrics.average_precision_from_counts(counts.sum(2), counts[..., 1], topk, ties, tables)
            sums[length] += float(ap.sum())
    return {length: sums[length] / problem.num_queries for length in problem.lengths}


# ----------------------------------------------------------------------------- public metrics


def mean_average_precision(query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike,
                           db_labels: ArrayLike, topk: int | None = None, ties: str = "expected", *,
                           block_size: int | None = None, device: torch.device | str | None = None) -> float:
    """mAP@K of Hamming ranking (conventions and tie modes: module docstring).

    Parameters
    ----------
    query_codes, db_codes:
        ``(Q, L)`` and ``(N, L)`` codes (torch or numpy; binarised by ``x >= 0``).
    query_labels, db_labels:
        ``(Q, C)`` and ``(N, C)`` multi-hot 0/1 labels.
    topk:
        K, or ``None`` for the whole database; K > N is the same as N.
    ties:
        ``"expected"`` | ``"optimistic"`` | ``"pessimistic"`` | ``"index"``.
    block_size:
        Queries per block (default: about 8M query-item pairs per block).
    device:
        Where to compute (default: ``query_codes``' device; CPU for numpy).

    Returns
    -------
    The mean over all Q queries of AP@K (zero-hit queries count as 0).
    """
    ties = _check_ties(ties)
    topk = _check_topk(topk)
    problem, width = _single(query_codes, query_labels, db_codes, db_labels, device)
    return _map_per_length(problem, topk, ties, block_size)[width]


def evaluate_nested(query_codes: Mapping[int, ArrayLike], query_labels: ArrayLike,
                    db_codes: Mapping[int, ArrayLike], db_labels: ArrayLike, topk: int | None = None,
                    ties: str = "expected", *, block_size: int | None = None,
                    device: torch.device | str | None = None) -> dict[int, float]:
    """mAP@K for every code length of ``{L: codes}`` dicts (e.g. from :func:`encode`), in one pass.

    Equal to calling :func:`mean_average_precision` per length. When every shorter code is a prefix of
    the longest (nested codes) the distances of all lengths come from one accumulated pass over the
    longest codes; otherwise (e.g. separate heads) each length gets its own product. Keys must equal the
    code widths and be the same in both dicts. Returns ``{L: mAP}`` in increasing L.
    """
    ties = _check_ties(ties)
    topk = _check_topk(topk)
    for name, codes in (("query_codes", query_codes), ("db_codes", db_codes)):
        if not isinstance(codes, Mapping):
            raise TypeError(f"{name} must be a dict {{code_length: codes}}, got {type(codes).__name__}")
    first = next(iter(query_codes.values()), None)
    problem = _Problem(query_codes, query_labels, db_codes, db_labels, _device_of(first, device))
    return _map_per_length(problem, topk, ties, block_size)


def precision_at_k(query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike, db_labels: ArrayLike,
                   ks: int | Sequence[int], ties: str = "expected", *, block_size: int | None = None,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Mean over queries of precision@K, for each K in ``ks``: float64 array ``(len(ks),)``.

    Precision@K = (relevant items among the first min(K, N) ranks) / min(K, N); K > N therefore
    measures the whole database. Ties as in :func:`mean_average_precision`: ``"expected"`` is the exact
    mean over random tie orders (the hypergeometric mean of the hits in a cut tie group), the bounds put
    relevant items first / last, ``"index"`` uses database order.
    """
    ties = _check_ties(ties)
    k_list = [ks] if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool) else list(ks)
    if not k_list:
        raise ValueError("ks must hold at least one K")
    for k in k_list:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must hold positive ints, got {k!r} in {k_list}")
    problem, _ = _single(query_codes, query_labels, db_codes, db_labels, device)
    n_db = problem.num_db
    k_eff = torch.tensor([min(int(k), n_db) for k in k_list], dtype=torch.long, device=problem.device)
    sums = torch.zeros(len(k_list), dtype=torch.float64, device=problem.device)
    if ties == "index":
        for _, length, _, keys in _histograms(problem, block_size, joint=False):
            hits = _ranked_relevance(keys, length, int(k_eff.max())).cumsum(1, dtype=torch.float64)
            sums += (hits[:, k_eff - 1] / k_eff.double()).sum(0)
    else:
        for _, counts in _batched_counts(problem, block_size):
            found = metrics.hits_at_k_from_counts(counts.sum(2), counts[..., 1], k_eff, ties)
            sums += (found / k_eff.double()).sum(0)
    return (sums / problem.num_queries).cpu().numpy()


def precision_recall_curve(query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike,
                           db_labels: ArrayLike, *, block_size: int | None = None,
                           device: torch.device | str | None = None) -> dict[str, np.ndarray]:
    """Precision and recall of the items within each Hamming radius 0..L, averaged over queries.

    Returns ``{"radius": (L+1,) int, "precision": (L+1,) float, "recall": (L+1,) float}``. Per query,
    precision = hits / retrieved and recall = hits / relevant items in the database; a query that
    retrieves nothing has precision 0 and one with no relevant item has recall 0, and every query
    counts in the means. A radius retrieves all tied items at once, so no tie rule is involved.
    """
    problem, width = _single(query_codes, query_labels, db_codes, db_labels, device)
    prec = torch.zeros(width + 1, dtype=torch.float64, device=problem.device)
    rec = torch.zeros_like(prec)
    for _, counts in _batched_counts(problem, block_size):
        p, r = metrics.radius_precision_recall_from_counts(counts.sum(2), counts[..., 1])
        prec += p.sum(0)
        rec += r.sum(0)
    return {"radius": np.arange(width + 1), "precision": (prec / problem.num_queries).cpu().numpy(),
            "recall": (rec / problem.num_queries).cpu().numpy()}


def precision_within_radius(query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike,
                            db_labels: ArrayLike, radius: int = 2, *, block_size: int | None = None,
                            device: torch.device | str | None = None) -> float:
    """Mean over queries of the precision of the items within Hamming distance ``radius`` (default 2).

    A query that retrieves nothing within the radius counts as precision 0 (the common convention, so
    long codes are not rewarded for retrieving nothing); a radius >= L retrieves the whole database.
    """
    check_integer("radius", radius, minimum=0)
    curve = precision_recall_curve(query_codes, query_labels, db_codes, db_labels, block_size=block_size,
                                   device=device)
    return float(curve["precision"][min(int(radius), len(curve["radius"]) - 1)])


# ----------------------------------------------------------------------------- encoding


def _unpack(batch: object) -> tuple[object, Tensor, Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(f"loader must yield (x, y, index) or (x, y) batches, got {type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    x, y = batch[0], batch[1]
    index = batch[2] if len(batch) == 3 else None
    if not isinstance(y, Tensor) or y.ndim != 2:
        raise ValueError(f"loader labels must be a 2-D multi-hot tensor (batch, classes), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    return x, y, index


def _outputs(out: object, batch: int) -> list[Tensor]:
    outs = [out] if isinstance(out, Tensor) else list(out) if isinstance(out, (list, tuple)) else None
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"model must return a code tensor (B, L) or a list/tuple of them, got {type(out).__name__}")
    widths = [o.shape[-1] if o.ndim == 2 else None for o in outs]
    if any(o.ndim != 2 or o.shape[0] != batch for o in outs):
        shapes = [tuple(o.shape) for o in outs]
        raise ValueError(f"model outputs must be (batch={batch}, L) tensors, got shapes {shapes}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"model outputs must have distinct code lengths, got {widths}")
    return outs


def encode(model: nn.Module, loader: Iterable, device: torch.device | str) -> tuple[dict[int, Tensor], Tensor]:
    """Binary codes of every length from one forward pass per batch.

    Runs ``model`` in eval mode under ``torch.no_grad()`` over ``loader``, which yields ``(x, y, index)``
    (or ``(x, y)``) batches with ``y`` multi-hot ``(B, C)``. The model returns one ``(B, L)`` tensor or a
    list/tuple of them (e.g. a ``NestedHashLayer`` head: all lengths from one pass). Codes are
    ``+1 if u >= 0 else -1`` (so an exact 0 gives +1, where ``torch.sign`` would give 0).

    Returns ``({L: int8 (N, L) ±1 codes on CPU}, float32 labels (N, C) on CPU)``. Rows follow the
    ``index`` values in increasing order when the loader yields them (so a shuffling loader gives the
    same result; duplicate indices raise), else the loader's order. Every module's train/eval flag is
    restored afterwards.
    """
    device = torch.device(device)
    modes = [(module, module.training) for module in model.modules()]
    codes: dict[int, list[Tensor]] = {}
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                x, y, index = _unpack(batch)
                if isinstance(x, Tensor):
                    x = x.to(device)
                outs = _outputs(model(x), y.shape[0])
                widths = sorted(o.shape[1] for o in outs)
                if codes and widths != sorted(codes):
                    raise ValueError(f"model returned code lengths {widths} for one batch but {sorted(codes)} "
                                     f"for earlier ones")
                for o in outs:
                    if o.is_floating_point() and bool(torch.isnan(o).any()):
                        raise ValueError(f"model produced NaN outputs for code length {o.shape[1]}")
                    codes.setdefault(o.shape[1], []).append(
                        torch.where(o >= 0, 1, -1).to(device="cpu", dtype=torch.int8))
                labels.append(y.detach().to(device="cpu", dtype=torch.float32))
                if index is not None:
                    indices.append(torch.as_tensor(index).reshape(-1).cpu())
    finally:
        model.train(modes[0][1])  # honours custom train() overrides; then restore each flag exactly
        for module, mode in modes:
            module.training = mode
    if not labels:
        raise ValueError("loader yielded no batch; nothing to encode")
    out = {length: torch.cat(parts) for length, parts in sorted(codes.items())}
    all_labels = torch.cat(labels)
    if indices:
        if len(indices) != len(labels):
            raise ValueError("loader yielded an index for some batches but not for others")
        index = torch.cat(indices)
        if index.numel() != all_labels.shape[0]:
            raise ValueError(f"loader yielded {index.numel()} indices for {all_labels.shape[0]} items")
        if torch.unique(index).numel() != index.numel():
            raise ValueError("loader yielded duplicate indices (e.g. a padded DistributedSampler); each item "
                             "must appear once")
        order = torch.argsort(index, stable=True)
        out = {length: c[order] for length, c in out.items()}
        all_labels = all_labels[order]
    return out, all_labels
