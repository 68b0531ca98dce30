"""Hash centres and target codes shared by the centre-based losses (CSQ, DPN, MDSH, SHCIR), and the
helpers that compute those losses for all the lengths of a model in one pass.

All constructions are seeded through an explicit :class:`torch.Generator`; no global RNG is read
or changed. Codes are float tensors with entries +1/-1 on the CPU; the losses register them as
buffers so they follow ``.to(device)`` and ``state_dict``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

# Exhaustive candidate pools are used up to this code length (2**13 = 8192 candidates).
_EXHAUSTIVE_MAX_LENGTH = 13


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sylvester_hadamard(order: int) -> Tensor:
    """The Sylvester Hadamard matrix ``H_order`` (same row order as ``scipy.linalg.hadamard``)."""
    if not is_power_of_two(order):
        raise ValueError(f"order must be a power of two, got {order}")
    h = torch.ones(1, 1)
    while h.shape[0] < order:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def random_signed_codes(num_codes: int, code_length: int, num_negative: int,
                        generator: torch.Generator) -> Tensor:
    """``num_codes`` random +-1 rows, each with exactly ``num_negative`` entries equal to -1."""
    if not 0 <= num_negative <= code_length:
        raise ValueError(f"num_negative must lie in [0, code_length={code_length}], got {num_negative}")
    codes = torch.ones(num_codes, code_length)
    # argsort of uniform noise gives an independent random permutation per row.
    permutations = torch.rand(num_codes, code_length, generator=generator).argsort(dim=1)
    codes.scatter_(1, permutations[:, :num_negative], -1.0)
    return codes


def random_balanced_codes(num_codes: int, code_length: int, generator: torch.Generator) -> Tensor:
    """Random +-1 rows with ``code_length // 2`` entries at -1 (the CSQ fill rule)."""
    return random_signed_codes(num_codes, code_length, code_length // 2, generator)


def random_signs(code_length: int, generator: torch.Generator) -> Tensor:
    """A random +-1 vector (uniform, independent bits)."""
    return torch.randint(0, 2, (code_length,), generator=generator).float() * 2 - 1


def pairwise_hamming(a: Tensor, b: Tensor | None = None) -> Tensor:
    """Hamming distances between the +-1 rows of ``a`` and ``b`` (default ``a``)."""
    b = a if b is None else b
    return (a.shape[1] - a @ b.t()) / 2


def min_hamming_distance(codes: Tensor) -> int:
    """Smallest Hamming distance between two distinct rows (``code_length`` if only one row)."""
    if codes.shape[0] < 2:
        return codes.shape[1]
    d = pairwise_hamming(codes)
    d.fill_diagonal_(float("inf"))
    return int(d.min().item())


def label_to_center(y: Tensor, centers: Tensor, tie_break: Tensor) -> Tensor:
    """Target code of each row of ``y``: ``sign(y @ centers)``, zeros replaced by ``tie_break``.

    For a one-hot row this is exactly that class's centre (the reference's single-label rule),
    for a multi-hot row it is the reference's multi-label rule; a row with no label gets
    ``tie_break`` itself.
    """
    summed = y @ centers
    return torch.where(summed == 0, tie_break, summed.sign())


def csq_centers(num_classes: int, code_length: int, generator: torch.Generator, *,
                max_tries: int = 20) -> Tensor:
    """CSQ hash centres (Yuan et al., CVPR 2020, Algorithm 1 as in the NHL reference code).

    - ``code_length`` a power of two: the first ``num_classes`` rows of ``[H; -H]``.
    - more than ``2 * code_length`` classes: the missing rows are random balanced codes, redrawn
      up to ``max_tries`` times until every pair of centres is more than ``L/4`` apart and the
      mean pairwise distance is at least ``L/2``; the last draw is kept either way.
    - any other length: random balanced codes. (The reference used unbalanced ``sign(uniform)``
      rows, and also used them for powers of two outside 8..128; we use Hadamard rows for every
      power of two.)
    """
    if not is_power_of_two(code_length):
        return random_balanced_codes(num_classes, code_length, generator)
    h = sylvester_hadamard(code_length)
    h2 = torch.cat([h, -h], dim=0)
    if num_classes <= h2.shape[0]:
        return h2[:num_classes].clone()
    centers = h2
    for attempt in range(1, max_tries + 1):
        fill = random_balanced_codes(num_classes - h2.shape[0], code_length, generator)
        centers = torch.cat([h2, fill], dim=0)
        d = pairwise_hamming(centers)
        upper = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
        if upper.min() > code_length / 4 and upper.mean() >= code_length / 2:
            logger.debug("CSQ centres accepted at try %d (min %.0f, mean %.2f)",
                         attempt, upper.min(), upper.mean())
            break
    else:
        logger.info("CSQ centres for C=%d, L=%d: criterion not met after %d tries; keeping the last "
                    "draw (min Hamming %d)", num_classes, code_length, max_tries,
                    min_hamming_distance(centers))
    return centers


def dpn_targets(num_classes: int, code_length: int, p: float, generator: torch.Generator) -> Tensor:
    """DPN random target vectors: one +-1 row per class with ``int(code_length * p)`` bits at -1.

    The reference redraws all rows 20 times and keeps the last draw, which has the same
    distribution as a single draw; we draw once.
    """
    return random_signed_codes(num_classes, code_length, int(code_length * p), generator)


def _candidate_pool(code_length: int, pool_size: int, generator: torch.Generator) -> Tensor:
    if code_length <= min(_EXHAUSTIVE_MAX_LENGTH, int(math.log2(pool_size))):
        # every +-1 vector of this length, in a seeded random order (so ties depend on the seed)
        values = torch.arange(2 ** code_length).unsqueeze(1)
        bits = (values >> torch.arange(code_length)) & 1
        pool = bits.float() * 2 - 1
        return pool[torch.randperm(pool.shape[0], generator=generator)]
    return torch.randint(0, 2, (pool_size, code_length), generator=generator).float() * 2 - 1


def max_min_distance_centers(num_classes: int, code_length: int, generator: torch.Generator, *,
                             pool_size: int = 8192) -> Tensor:
    """Seeded hash centres with a large minimum pairwise Hamming distance.

    Start from the first ``min(C, 2L)`` rows of ``[H; -H]`` when ``L`` is a power of two (one
    random balanced code otherwise), then add centres greedily: each new centre is the candidate
    farthest (in minimum Hamming distance) from the centres chosen so far, ties going to the
    first candidate. Candidates are every +-1 vector for ``L <= 13`` (so the greedy step is
    exact) and ``pool_size`` seeded random vectors otherwise.

    Used for MDSH and SHCIR in place of the reference's precomputed ``.npy`` files.
    """
    if code_length < 63 and num_classes > 2 ** code_length:
        raise ValueError(f"cannot build {num_classes} distinct centres of code_length={code_length} "
                         f"(at most 2**{code_length})")
    if is_power_of_two(code_length):
        h = sylvester_hadamard(code_length)
        start = torch.cat([h, -h], dim=0)[:num_classes].clone()
    else:
        start = random_balanced_codes(1, code_length, generator)
    if start.shape[0] >= num_classes:
        return start
    pool = _candidate_pool(code_length, pool_size, generator)
    distance_to_set = pairwise_hamming(pool, start).min(dim=1).values
    chosen = [start]
    for _ in range(num_classes - start.shape[0]):
        best = int(torch.argmax(distance_to_set))
        center = pool[best: best + 1]
        chosen.append(center)
        distance_to_set = torch.minimum(distance_to_set, pairwise_hamming(pool, center)[:, 0])
    centers = torch.cat(chosen, dim=0)
    if min_hamming_distance(centers) == 0:
        logger.warning("max-min centres C=%d L=%d contain duplicates; increase pool_size",
                       num_classes, code_length)
    logger.debug("max-min centres C=%d L=%d: min Hamming %d", num_classes, code_length,
                 min_hamming_distance(centers))
    return centers


# ---------------------------------------------------------------- several lengths in one pass

def per_length_means(terms: Tensor, widths: Sequence[int]) -> Tensor:
    """``(K,)`` means of the column blocks of ``terms`` (B, sum(widths)): block k holds length k's
    elementwise terms, so entry k is what ``terms_k.mean()`` would be for that length alone."""
    sums = torch.stack([part.sum() for part in terms.sum(0).split(list(widths))])
    return sums / torch.tensor(widths, dtype=terms.dtype, device=terms.device).mul_(terms.shape[0])


def per_length_values(values: Sequence[float], widths: Sequence[int] | None, like: Tensor) -> float | Tensor:
    """One hyper-parameter per length: a plain float when all are equal, else a tensor in ``like``'s
    dtype, either ``(K,)`` (``widths`` None) or one entry per column (``values[k]`` repeated ``widths[k]`` times)."""
    if len(set(values)) == 1:
        return values[0]
    vector = torch.tensor(values, dtype=like.dtype, device=like.device)
    return vector if widths is None else vector.repeat_interleave(torch.tensor(widths, device=like.device))


def padded_cosines(codes: Sequence[Tensor], centers: Sequence[Tensor]) -> Tensor:
    """``(K, B, C)`` cosines between ``codes[k]`` (B, L_k) and ``centers[k]`` (C, L_k), in one batched
    product: zero-padding every length to the longest changes neither the inner products nor the norms,
    and the gradient of the padding reaches each ``codes[k]`` unchanged."""
    width = max(u.shape[1] for u in codes)
    u = torch.stack([F.pad(c, (0, width - c.shape[1])) for c in codes])
    c = torch.stack([F.pad(c.to(u.dtype), (0, width - c.shape[1])) for c in centers])
    return F.normalize(u, dim=-1) @ F.normalize(c, dim=-1).transpose(1, 2)
