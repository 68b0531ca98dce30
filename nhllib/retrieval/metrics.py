"""Ranking metrics of returned result lists (ids), as used to compare retrieval strategies.

These score the rankings an index actually returned, so a search strategy that drops a relevant item
from its shortlist is penalised; code-level (tie-aware) mAP over the whole database lives in
:mod:`nhllib.core.evaluate`.

Definitions (the project convention, docs/evaluation.md §4):

- an item is relevant to a query when they share at least one label;
- AP@k = (1 / H) * sum over relevant ranks j <= k of (relevant items in ranks 1..j) / j, where H is the
  number of relevant items in the top k; a query with H = 0 contributes AP 0;
- precision@k = H / k.

A padded slot (id ``-1``, returned by bucket searches with fewer than k candidates) is never relevant
and still counts in the k of precision@k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nhllib.checks import check_integer
from .packing import _to_numpy

__all__ = ["ranking_metrics"]

_BATCH_ELEMENTS = 2**24


def _labels(labels: Any, name: str) -> np.ndarray:
    arr = _to_numpy(labels, name)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D class ids or 2-D multi-hot (n, C), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric or bool, got {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr > 0 if arr.ndim == 2 else arr


def ranking_metrics(ids: Any, query_labels: Any, db_labels: Any, k: int) -> dict[str, float]:
    """mAP@k and precision@k of the first ``k`` columns of ``ids``.

    Parameters
    ----------
    ids
        ``(Q, >= k)`` integer database ids per query, best first; ``-1`` marks an empty slot.
    query_labels, db_labels
        Either 1-D class ids (relevant = same class) or 2-D multi-hot ``(n, C)`` (relevant = shares at
        least one label); both in the same form.
    k
        Cut-off.

    Returns
    -------
    ``{"map": mean AP@k, "precision": mean precision@k}`` over all queries.
    """
    ids = _to_numpy(ids, "ids")
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 2-D integer array (Q, k), got shape {ids.shape} dtype {ids.dtype}")
    check_integer("k", k, minimum=1, what="an int >= 1")
    if ids.shape[1] < k:
        raise ValueError(f"ids has {ids.shape[1]} columns, fewer than k={k}")
    q_lab = _labels(query_labels, "query_labels")
    db_lab = _labels(db_labels, "db_labels")
    if q_lab.ndim != db_lab.ndim or (q_lab.ndim == 2 and q_lab.shape[1] != db_lab.shape[1]):
        raise ValueError(
            f"query_labels {q_lab.shape} and db_labels {db_lab.shape} must both be 1-D class ids "
            "or both multi-hot with the same number of classes"
        )
    if len(q_lab) != len(ids):
        raise ValueError(f"query_labels has {len(q_lab)} rows but ids has {len(ids)}")
    ids = ids[:, :k].astype(np.int64)
    if ids.size and (ids.min() < -1 or ids.max() >= len(db_lab)):
        raise ValueError(f"ids must lie in [-1, {len(db_lab) - 1}] (database size {len(db_lab)})")

    n_q = len(ids)
    if n_q == 0:
        raise ValueError("ids has no queries")
    ap = np.zeros(n_q)
    hits = np.zeros(n_q)
    ranks = np.arange(1, k + 1)
    n_classes = db_lab.shape[1] if db_lab.ndim == 2 else 1
    step = max(1, _BATCH_ELEMENTS // (k * n_classes))
    for lo in range(0, n_q, step):
        block = ids[lo : lo + step]
        valid = block >= 0
        gathered = db_lab[np.where(valid, block, 0)]
        if db_lab.ndim == 2:
            rel = (gathered & q_lab[lo : lo + step, None, :]).any(axis=-1)
        else:
            rel = gathered == q_lab[lo : lo + step, None]
        rel &= valid
        cum = np.cumsum(rel, axis=1)
        h = cum[:, -1]
        prec_sum = (rel * (cum / ranks)).sum(axis=1)
        ap[lo : lo + step] = np.divide(prec_sum, h, out=np.zeros_like(prec_sum), where=h > 0)
        hits[lo : lo + step] = h
    return {"map": float(ap.mean()), "precision": float((hits / k).mean())}
