r"""Retrieval metrics in closed form from per-distance counts, with exact tie handling.

A b-bit code has only b+1 Hamming distances, so one query's whole ranking is summarised by two count
vectors over the distance groups g = 0..b: ``total[g]`` (database items at distance g) and
``relevant[g]`` (relevant ones among them). Every quantity here is a function of those counts, so no
sort is needed; ``nhllib.core.evaluate`` builds the counts and handles inputs. All functions are vectorised
over queries (rows) and return float64.

Notation for one query (all per distance group g, in ranking order):

- ``n_g``, ``r_g``: items and relevant items in the group; ``s_g = n_0 + ... + n_{g-1}`` items and
  ``R_g = r_0 + ... + r_{g-1}`` relevant items rank before it; ``H_k = 1 + 1/2 + ... + 1/k`` (H_0 = 0).
- Top-K: with ``K' = min(K, N)``, the *cut group* g* is the first group with ``s_g + n_g >= K'``;
  only its first ``m = K' - s_{g*}`` positions (1 <= m <= n_{g*}) are inside the top K'.
- AP@K (the reference convention) = (sum of precision@p over the relevant positions p <= K') / (number
  of relevant items in the top K'); 0 when there is none.

Sums of precisions (derivation)
-------------------------------
*A block of c relevant items right after a offset.* If a group's relevant items occupy its positions
t+1..t+c (s items before the group, R of them relevant), their precisions add up to

    T(s, R, t, c) = sum_{i=1..c} (R + i) / (s + t + i) = c - (s + t - R) (H_{s+t+c} - H_{s+t}),

using (R + i)/(a + i) = 1 - (a - R)/(a + i). Relevant-first is t = 0, relevant-last is t = n - r.

*Uniformly random order inside a group* (n items, r relevant, s/R before). Position j of the group holds
a relevant item with probability r/n; given that, the other r-1 relevant items are spread uniformly over
the other n-1 positions, so the expected number of them in the j-1 positions before it is
(j-1)(r-1)/(n-1). By linearity the expected sum of precisions is

    W(n, r, s, R) = (r/n) sum_{j=1..n} [R + 1 + (j-1)(r-1)/(n-1)] / (s + j)
                  = (r/n) [(R + 1) A + (r-1)/(n-1) B],   A = H_{s+n} - H_s,   B = n - (s + 1) A,

since sum_j (j-1)/(s+j) = sum_j [1 - (s+1)/(s+j)]. For n = 1, B = 0 (the ratio is never needed).

Expected AP when K cuts a tie group
-----------------------------------
Tie orders of different groups are independent. Groups before g* lie wholly inside the top K', so
their expected precision sum is S = sum_{g<g*} W(n_g, r_g, s_g, R_g), whatever happens in g*. Let X be
the number of relevant items among the m visible positions of g*: X is hypergeometric,

    P(X = x) = C(r, x) C(n - r, m - x) / C(n, m),   max(0, m - (n - r)) <= x <= min(r, m),

with n, r the counts of g*. The normaliser R_{g*} + X is random, so AP is *not* (expected sum) /
(expected hits). Conditioning on X = x fixes the normaliser; given x, the x relevant items are uniformly
placed among the m visible positions, which is the random-group case with n -> m and r -> x, so

    E[AP] = sum_x P(X = x) [S + W(m, x, s_{g*}, R_{g*})] / (R_{g*} + x)     (a term with R_{g*} + x = 0 is 0).

When K' ends exactly at a group boundary (m = n, e.g. K = None), X = r with probability 1 and this is
S / R_total. The sum has at most min(m, n - m, r, n - r) + 1 terms; no sampling is involved.

Best and worst tie orders
-------------------------
For a fixed number x of visible relevant items in g*, the normaliser is fixed and every precision is
largest with relevant items first (smallest with them last) in each wholly visible group and at the
front (back) of the visible part of g*. Hence

    best  = max_x [sum_{g<g*} T(s_g, R_g, 0, r_g)         + T(s, R, 0, x)    ] / (R + x),
    worst = min_x [sum_{g<g*} T(s_g, R_g, n_g - r_g, r_g) + T(s, R, m - x, x)] / (R + x),

which are the exact maximum and minimum of AP@K over all tie orders. When K' does not cut a group
they are the relevant-first / relevant-last rankings. When it does, relevant-first is *not* always the
best order under this normaliser: a late extra hit with a low precision can lower the average (e.g. one
hit at rank 1, then 8 misses, then a tie group of 2 with one relevant cut after its first slot:
relevant-first gives (1 + 2/10)/2 = 0.6, relevant-last gives 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "COUNT_TIE_MODES",
    "RankTables",
    "harmonic_numbers",
    "average_precision_from_counts",
    "hits_at_k_from_counts",
    "average_precision_from_ranking",
    "radius_precision_recall_from_counts",
]

#: Tie modes that are exact functions of the per-distance counts.
COUNT_TIE_MODES = ("expected", "optimistic", "pessimistic")

# Upper bound on the elements of one (queries x hit-count values) grid, so that cut groups with many
# possible hit counts are processed in column chunks with bounded memory.
_GRID_BUDGET = 1 << 21


def harmonic_numbers(n: int, device: torch.device | str | None = None) -> Tensor:
    """``H[k] = sum_{i<=k} 1/i`` for k = 0..n, float64 (H[0] = 0)."""
    out = torch.zeros(n + 1, dtype=torch.float64, device=device)
    if n > 0:
        out[1:] = torch.cumsum(1.0 / torch.arange(1, n + 1, dtype=torch.float64, device=device), 0)
    return out


@dataclass(frozen=True)
class RankTables:
    """Lookup tables for a database of N items: ``harmonic[k] = H_k`` and ``log_factorial[k] = log k!``."""

    harmonic: Tensor
    log_factorial: Tensor

    @classmethod
    def build(cls, n: int, device: torch.device | str | None = None) -> "RankTables":
        k = torch.arange(n + 1, dtype=torch.float64, device=device)
        return cls(harmonic_numbers(n, device), torch.lgamma(k + 1.0))


def _block_sum(h: Tensor, s: Tensor, r0: Tensor, t: Tensor, c: Tensor) -> Tensor:
    """T(s, R, t, c): precisions summed over c relevant items at group positions t+1..t+c (int64 in)."""
    a = s + t
    return c.double() - (a - r0).double() * (torch.take(h, a + c) - torch.take(h, a))


def _random_sum(h: Tensor, n: Tensor, r: Tensor, s: Tensor, r0: Tensor) -> Tensor:
    """W(n, r, s, R): expected precision sum of a group in uniformly random order (int64 in)."""
    nf, rf = n.double(), r.double()
    a = torch.take(h, s + n) - torch.take(h, s)
    b = nf - (s.double() + 1.0) * a
    ratio = (rf - 1.0) / (nf - 1.0).clamp(min=1.0)  # only multiplies b, and b = 0 when n = 1
    return rf / nf.clamp(min=1.0) * ((r0.double() + 1.0) * a + ratio * b)  # 0 when r = 0 (so when n = 0)


def _log_binom(lf: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.take(lf, a) - torch.take(lf, b) - torch.take(lf, a - b)


def _cut_group(total: Tensor, relevant: Tensor, k: Tensor) -> dict[str, Tensor]:
    """Locate the group holding rank k (per query, int64 (Q, J)) and the counts around it."""
    cum_n = total.cumsum(1)
    cum_r = relevant.cumsum(1)
    g = torch.searchsorted(cum_n, k)  # first group whose inclusive count reaches k
    n = total.gather(1, g)
    r = relevant.gather(1, g)
    s = cum_n.gather(1, g) - n
    r0 = cum_r.gather(1, g) - r
    m = k - s
    return {"g": g, "n": n, "r": r, "s": s, "r0": r0, "m": m,
            "lo": (m - (n - r)).clamp(min=0), "hi": torch.minimum(r, m)}


def _check_counts(total: Tensor, relevant: Tensor) -> None:
    if total.shape != relevant.shape or total.ndim != 2:
        raise ValueError(f"total and relevant must be (queries, distances) of one shape, got "
                         f"{tuple(total.shape)} and {tuple(relevant.shape)}")


def average_precision_from_counts(total: Tensor, relevant: Tensor, topk: int | None = None,
                                  ties: str = "expected", tables: RankTables | None = None) -> Tensor:
    """Per-query AP@K from counts per Hamming distance (see the module docstring for the formulas).

    Parameters
    ----------
    total, relevant:
        int64 ``(Q, G)``: database items / relevant items at each distance 0..G-1; every row of
        ``total`` sums to the database size N.
    topk:
        K; ``None`` (or K >= N) ranks the whole database.
    ties:
        ``"expected"`` (mean over uniformly random orders within ties), ``"optimistic"`` (best order)
        or ``"pessimistic"`` (worst order).
    tables:
        Optional precomputed ``RankTables.build(N)`` (reused across blocks).

    Returns
    -------
    float64 ``(Q,)``; a query with no relevant item in its top K contributes 0.
    """
    _check_counts(total, relevant)
    if ties not in COUNT_TIE_MODES:
        raise ValueError(f"ties must be one of {COUNT_TIE_MODES} here, got {ties!r}")
    q, groups = total.shape
    n_db = int(total[0].sum()) if q else 0
    tables = RankTables.build(n_db, total.device) if tables is None else tables
    h = tables.harmonic
    k_eff = n_db if topk is None else min(int(topk), n_db)
    cut = _cut_group(total, relevant, torch.full((q, 1), k_eff, dtype=torch.long, device=total.device))
    cut = {key: value[:, 0] for key, value in cut.items()}

    # Precision sums of the groups wholly inside the top K (those before the cut group).
    s_all = total.cumsum(1) - total
    r0_all = relevant.cumsum(1) - relevant
    if ties == "expected":
        per_group = _random_sum(h, total, relevant, s_all, r0_all)
    elif ties == "optimistic":
        per_group = _block_sum(h, s_all, r0_all, torch.zeros_like(total), relevant)
    else:
        per_group = _block_sum(h, s_all, r0_all, total - relevant, relevant)
    before = torch.arange(groups, device=total.device)[None, :] < cut["g"][:, None]
    head = torch.where(before, per_group, torch.zeros_like(per_group)).sum(1)
    if ties == "expected":
        return _expected_with_cut(tables, head, cut)
    return _extreme_with_cut(h, head, cut, best=ties == "optimistic")


def _grid(lo: Tensor, hi: Tensor) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Chunks ``(rows, x, valid)`` covering x = lo..hi for the rows where X takes several values."""
    rows = torch.nonzero(hi > lo).flatten()
    if not rows.numel():
        return
    lo_r, hi_r = lo[rows, None], hi[rows, None]
    width = int((hi_r - lo_r).max()) + 1
    chunk = max(1, _GRID_BUDGET // rows.numel())
    for start in range(0, width, chunk):
        x = lo_r + torch.arange(start, min(start + chunk, width), device=lo.device)[None, :]
        valid = x <= hi_r
        yield rows, torch.minimum(x, hi_r), valid


def _expected_with_cut(tables: RankTables, head: Tensor, cut: dict[str, Tensor]) -> Tensor:
    """E[AP] = sum_x P(X=x) [S + W(m, x, s, R)] / (R + x), summed in a reduced form.

    S + W(m, x, s, R) = a2 x^2 + a1 x + S is a quadratic in x (a2 = B / (m (m-1)), a1 = (R+1) A / m - a2),
    so dividing by (R + x) gives alpha x + beta + gamma / (R + x) with alpha = a2, beta = a1 - a2 R,
    gamma = S - R beta. Over the x with R + x > 0 (an x = 0 term with R = 0 is an AP of 0):
    E[AP] = alpha E[X] + beta (1 - p0) + gamma E[1 / (R + X); R + X > 0], where E[X] = m r / n and
    p0 = P(X = 0) when R = 0 (else 0). Only the last expectation needs the sum over x.
    """
    h, lf = tables.harmonic, tables.log_factorial
    n, r, s, r0, m, lo, hi = (cut[key] for key in ("n", "r", "s", "r0", "m", "lo", "hi"))
    mf, r0f = m.double(), r0.double()
    a = torch.take(h, s + m) - torch.take(h, s)
    b = mf - (s.double() + 1.0) * a
    a2 = b / (mf * (mf - 1.0)).clamp(min=1.0)  # b = 0 when m = 1
    a1 = (r0f + 1.0) * a / mf - a2
    beta = a1 - a2 * r0f
    gamma = head - r0f * beta
    mean_x = mf * r.double() / n.double()
    # Deterministic X (= lo): the inverse moment and P(R + X = 0) are direct.
    hits = (r0 + lo).double()
    inv = torch.where(hits > 0, 1.0 / hits.clamp(min=1.0), torch.zeros_like(hits))
    p0 = (hits == 0).double()
    spread = hi > lo  # these rows are summed over the grid below
    inv = torch.where(spread, torch.zeros_like(inv), inv)
    p0 = torch.where(spread, torch.zeros_like(p0), p0)
    for rows, x, valid in _grid(lo, hi):
        nn_, rr, mm, rr0 = (t[rows, None] for t in (n, r, m, r0))
        log_p = _log_binom(lf, rr, x) + _log_binom(lf, nn_ - rr, mm - x) - _log_binom(lf, nn_, mm)
        p = torch.where(valid, torch.exp(log_p), torch.zeros_like(log_p))
        xh = (rr0 + x).double()
        inv[rows] += torch.where(xh > 0, p / xh.clamp(min=1.0), torch.zeros_like(p)).sum(1)
        p0[rows] += torch.where(xh == 0, p, torch.zeros_like(p)).sum(1)
    return a2 * mean_x + beta * (1.0 - p0) + gamma * inv


def _extreme_with_cut(h: Tensor, head: Tensor, cut: dict[str, Tensor], best: bool) -> Tensor:
    """max (best) or min over the feasible visible-hit counts x of the extreme-order AP (module docstring)."""
    s, r0, m, lo, hi = (cut[key] for key in ("s", "r0", "m", "lo", "hi"))

    def value(x: Tensor, rows: Tensor | slice) -> Tensor:
        ss, rr0, mm = (t[rows].reshape(x.shape[0], -1) for t in (s, r0, m))
        offset = torch.zeros_like(x) if best else mm - x
        part = _block_sum(h, ss, rr0, offset, x)
        hits = (rr0 + x).double()
        total = head[rows].reshape(x.shape[0], -1) + part
        return torch.where(hits > 0, total / hits.clamp(min=1.0), torch.zeros_like(total))

    out = value(lo[:, None], slice(None))[:, 0]  # exact wherever X takes a single value
    for rows, x, valid in _grid(lo, hi):
        vals = value(x, rows)
        if best:
            found = torch.where(valid, vals, torch.full_like(vals, -torch.inf)).amax(1)
            out[rows] = torch.maximum(out[rows], found)
        else:
            found = torch.where(valid, vals, torch.full_like(vals, torch.inf)).amin(1)
            out[rows] = torch.minimum(out[rows], found)
    return out


def hits_at_k_from_counts(total: Tensor, relevant: Tensor, ks: Tensor, ties: str = "expected") -> Tensor:
    """Relevant items among the first ``min(K, N)`` ranks, per query and K: float64 ``(Q, len(ks))``.

    ``"expected"`` is the mean over uniformly random tie orders (R + m r / n, the hypergeometric mean),
    ``"optimistic"`` / ``"pessimistic"`` the most / fewest possible (R + min(r, m), R + max(0, m - (n - r))).
    """
    _check_counts(total, relevant)
    if ties not in COUNT_TIE_MODES:
        raise ValueError(f"ties must be one of {COUNT_TIE_MODES} here, got {ties!r}")
    n_db = int(total[0].sum()) if total.shape[0] else 0
    k = ks.to(device=total.device, dtype=torch.long).clamp(max=n_db)[None, :].expand(total.shape[0], -1)
    cut = _cut_group(total, relevant, k.contiguous())
    if ties == "expected":
        inside = cut["m"].double() * cut["r"].double() / cut["n"].double().clamp(min=1.0)
    elif ties == "optimistic":
        inside = cut["hi"].double()
    else:
        inside = cut["lo"].double()
    return cut["r0"].double() + inside


def average_precision_from_ranking(relevance: Tensor) -> Tensor:
    """Per-query AP of explicit rankings: ``relevance`` is (Q, K) 0/1 or bool in rank order, cut to K.

    Works on the relevant positions only: the j-th hit of a row at (1-based) rank p adds j / p.
    """
    q = relevance.shape[0]
    rows, cols = torch.nonzero(relevance, as_tuple=True)
    found = torch.bincount(rows, minlength=q)
    first = found.cumsum(0) - found
    hit_rank = torch.arange(1, rows.numel() + 1, device=relevance.device) - first[rows]
    total = torch.zeros(q, dtype=torch.float64, device=relevance.device)
    total.index_add_(0, rows, hit_rank.double() / (cols + 1).double())
    return torch.where(found > 0, total / found.clamp(min=1).double(), torch.zeros_like(total))


def radius_precision_recall_from_counts(total: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor]:
    """Per-query precision and recall of the items within Hamming radius 0..G-1: two float64 ``(Q, G)``.

    Precision is 0 where nothing lies within the radius, recall is 0 where the database holds no
    relevant item (both conventions of thulab/DeepHash's ``get_precision_recall_by_Hamming_Radius``).
    """
    _check_counts(total, relevant)
    retrieved = total.cumsum(1).double()
    hits = relevant.cumsum(1).double()
    all_relevant = hits[:, -1:]
    precision = torch.where(retrieved > 0, hits / retrieved.clamp(min=1.0), torch.zeros_like(hits))
    recall = torch.where(all_relevant > 0, hits / all_relevant.clamp(min=1.0), torch.zeros_like(hits))
    return precision, recall
