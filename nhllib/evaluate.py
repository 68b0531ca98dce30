"""Hamming-ranking evaluation of binary codes: tie-aware mAP@K, P@K, PR curves and ``encode``.

Conventions (shared by every function here; METHOD.md §5 and ECOSYSTEM.md §3.3):

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
      group outside the top K (see ``nhllib.metrics``); for P@K, recall and mAP@all it is plainly
      relevant first / last.
  ``"index"``
      ties ordered by database position, i.e. a stable sort (faiss's order as well).

- **AP@K.** Mean over the relevant items in the top K of (hits so far) / (rank), i.e. normalised by the
  number of relevant items *inside the top K* (DeepHash-pytorch, HashNet, the NHL reference). A query
  with none there contributes 0 and still counts in the mean. ``topk=None`` (or K >= N) ranks the whole
  database, last item included (the reference's ``[:-1]`` slice is not reproduced).

Implementation: distances take only L+1 values, so each query's ranking is summarised by two histograms
(items and relevant items per distance), from which ``nhllib.metrics`` computes every count-based tie
mode exactly. Queries are processed in blocks (memory O(block x N)); distances come from float32 matrix
products of ±1 codes, which are exact integers. For nested codes one distance pass serves every length:
the inner product of the L_k-bit prefixes is that of the L_{k-1}-bit prefixes plus the product of bits
[L_{k-1}, L_k), accumulated in place. Only ``ties="index"`` sorts (a stable sort per block).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from nhllib import metrics

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

#: Valid values of every ``ties`` argument.
TIE_MODES = ("expected", "optimistic", "pessimistic", "index")

ArrayLike = Tensor | np.ndarray

# Query-item pairs per block (~8M): two float32/int32 (block x N) buffers, 32 MB each, stay alive.
_PARALLEL_MIN = 1 << 20  # query-item pairs below which threads cost more than they save
_BLOCK_ELEMENTS = 1 << 23
# Distances travel through the bits of a float32 held in [2**23, 2**24): there a float is an exact
# integer and its bit pattern is _FLOAT_BASE_BITS + (value - 2**23), so a subtraction on the int32
# view yields histogram keys without a float->int conversion pass.
_FLOAT_BASE = float(1 << 23)
_FLOAT_BASE_BITS = 0x4B000000


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
    """±1 float32 codes on ``device`` (x >= 0 -> +1); rejects NaN and {0, 1} bit matrices."""
    x = _as_tensor(codes, name)
    _check_2d(x, name, "codes (items, bits)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one bit, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool:
        raise ValueError(f"{name} is boolean; pass ±1 codes (e.g. 2 * bits - 1), not {{0, 1}} bits")
    x = x.to(device)
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN; codes must be real numbers (binarised by x >= 0)")
    positive = x >= 0
    if bool(positive.all()) and bool(((x == 0) | (x == 1)).all()) and bool((x == 0).any()):
        raise ValueError(f"{name} holds only 0 and 1; pass ±1 codes (e.g. 2 * bits - 1): with the x >= 0 -> +1 "
                         f"rule every bit would be +1")
    one = torch.ones((), dtype=torch.float32, device=device)
    return torch.where(positive, one, -one)


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
    """Validated inputs of one evaluation: ±1 float32 codes per length, float32 labels, one device.

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
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query_codes has {q.shape[1]} bits but db_codes has {d.shape[1]}; query and database "
                         f"codes must have the same width")
    width = q.shape[1]
    return _Problem({width: q}, query_labels, {width: d}, db_labels, dev, single=True), width


# ----------------------------------------------------------------------------- distance histograms


def _block_rows(num_queries: int, num_db: int, max_length: int, block_size: int | None) -> int:
    # Keys row * 2(L+1) + 2d + rel must stay below 2**23 for the float-bits trick.
    cap = max(1, ((1 << 23) - 4 * (max_length + 1)) // (2 * (max_length + 1)))
    if block_size is None:
        rows = max(1, _BLOCK_ELEMENTS // max(num_db, 1))
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
        rows = block_size
    return min(rows, cap, num_queries)


def _histograms(problem: _Problem, block_size: int | None) -> Iterator[tuple[slice, int, Tensor, Tensor]]:
    """Yield ``(rows, L, counts, keys)`` per query block and code length, lengths in increasing order.

    ``counts`` is int64 (rows, L+1, 2): items at each distance, split by relevance (index 1 = relevant).
    ``keys`` is an int32 (rows, N) view ``row * 2(Lmax+1) + 2 * distance + relevant`` (row local to the
    block); it is overwritten at the next step, so use it before advancing.
    """
    lmax = problem.lengths[-1]
    stride = 2 * (lmax + 1)
    rows_per_block = _block_rows(problem.num_queries, problem.num_db, lmax, block_size)
    n_db, dev = problem.num_db, problem.device
    multi_label = bool((problem.query_labels.sum(1) > 1).any()) and bool((problem.db_labels.sum(1) > 1).any())
    db_labels_t = problem.db_labels.T
    acc_buf = torch.empty(rows_per_block * n_db, dtype=torch.float32, device=dev)
    key_buf = torch.empty(rows_per_block * n_db, dtype=torch.int32, device=dev)
    base_buf = None if problem.nested else torch.empty_like(acc_buf)
    longest_q, longest_db = problem.query[lmax], problem.db[lmax]
    threads = torch.get_num_threads() if dev.type == "cpu" else 1
    pool = ThreadPoolExecutor(threads) if threads > 1 and problem.num_queries * n_db >= _PARALLEL_MIN else None
    try:
        yield from _histogram_blocks(problem, rows_per_block, stride, acc_buf, key_buf, base_buf, longest_q,
                                     longest_db, db_labels_t, multi_label, pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _pool_size(pool: ThreadPoolExecutor) -> int:
    return pool._max_workers  # noqa: SLF001 - the executor does not expose its size otherwise


def _bincount(keys: Tensor, minlength: int, pool: ThreadPoolExecutor | None) -> Tensor:
    """``torch.bincount`` split over threads: on CPU it runs on one core, and it is the evaluation's hot spot."""
    if pool is None:
        return torch.bincount(keys, minlength=minlength)
    parts = list(pool.map(lambda chunk: torch.bincount(chunk, minlength=minlength), keys.chunk(_pool_size(pool))))
    return torch.stack(parts).sum(0)


def _histogram_blocks(
    problem: _Problem, rows_per_block: int, stride: int, acc_buf: Tensor, key_buf: Tensor, base_buf: Tensor | None,
    longest_q: Tensor, longest_db: Tensor, db_labels_t: Tensor, multi_label: bool, pool: ThreadPoolExecutor | None,
) -> Iterator[tuple[slice, int, Tensor, Tensor]]:
    lmax, n_db, dev = problem.lengths[-1], problem.num_db, problem.device
    for start in range(0, problem.num_queries, rows_per_block):
        stop = min(start + rows_per_block, problem.num_queries)
        rows, b = slice(start, stop), stop - start
        acc = acc_buf[: b * n_db].view(b, n_db)
        keys = key_buf[: b * n_db].view(b, n_db)
        # acc = 2**23 + Lmax + row_offset + relevant - <q, db>: exact float32 integers throughout. Matrix
        # products only see ±1 / 0-1 entries (exact even in TF32/bf16 modes, accumulated in fp32); the
        # large offsets are added elementwise.
        torch.matmul(problem.query_labels[rows], db_labels_t, out=acc)
        if multi_label:  # label overlap can exceed 1 only if both sides have multi-label rows
            acc.clamp_(max=1.0)
        offsets = torch.arange(b, device=dev, dtype=torch.float32) * stride + (_FLOAT_BASE + lmax)
        acc.add_(offsets[:, None])
        if base_buf is not None:
            base = base_buf[: b * n_db].view(b, n_db)
            base.copy_(acc)
        done = 0
        for length in problem.lengths:
            if problem.nested:
                acc.addmm_(longest_q[rows, done:length], longest_db[:, done:length].T, alpha=-1.0)
                done = length
            else:
                acc.copy_(base)
                acc.addmm_(problem.query[length][rows], problem.db[length].T, alpha=-1.0)
            # key = row_offset + relevant + L - <q, db> = row_offset + 2 d + relevant
            torch.sub(acc.view(torch.int32), _FLOAT_BASE_BITS + lmax - length, out=keys)
            counts = _bincount(keys.view(-1), b * stride, pool)
            if counts.numel() != b * stride:
                raise RuntimeError("internal error: Hamming histogram keys out of range")
            counts = counts.view(b, lmax + 1, 2)[:, : length + 1]
            yield rows, length, counts, keys


def _ranked_relevance(keys: Tensor, lmax: int, k: int) -> Tensor:
    """Relevance (rows, k), bool, of the first k items ranked by (distance, database position)."""
    row_base = torch.arange(keys.shape[0], device=keys.device, dtype=torch.int32)[:, None] * (lmax + 1)
    dist = (keys >> 1).sub_(row_base)
    if keys.device.type == "cpu" and lmax < (1 << 15):
        # numpy's stable sort is a radix sort for 16-bit keys: O(N), far faster than a comparison sort.
        order = torch.from_numpy(np.argsort(dist.to(torch.int16).numpy(), axis=1, kind="stable")[:, :k])
    else:
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return (keys.gather(1, order) & 1).bool()


def _map_per_length(problem: _Problem, topk: int | None, ties: str, block_size: int | None) -> dict[int, float]:
    tables = metrics.RankTables.build(problem.num_db, problem.device)
    sums = {length: 0.0 for length in problem.lengths}
    k_eff = problem.num_db if topk is None else min(topk, problem.num_db)
    for _, length, counts, keys in _histograms(problem, block_size):
        if ties == "index":
            ap = metrics.average_precision_from_ranking(
                _ranked_relevance(keys, problem.lengths[-1], k_eff))
        else:
            total = counts.sum(2)
            ap = metrics.average_precision_from_counts(total, counts[..., 1], topk, ties, tables)
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
    problem, width = _single(query_codes, query_labels, db_codes, db_labels, device)
    n_db = problem.num_db
    k_eff = torch.tensor([min(int(k), n_db) for k in k_list], dtype=torch.long, device=problem.device)
    sums = torch.zeros(len(k_list), dtype=torch.float64, device=problem.device)
    for _, length, counts, keys in _histograms(problem, block_size):
        if ties == "index":
            hits = _ranked_relevance(keys, width, int(k_eff.max())).cumsum(1, dtype=torch.float64)
            found = hits[:, k_eff - 1]
        else:
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
    for _, _, counts, _ in _histograms(problem, block_size):
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
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
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
