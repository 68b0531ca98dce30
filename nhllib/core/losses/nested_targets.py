"""Nested hash centres and target codes: every shorter length's targets are prefixes of the longest's.

A nested model's L_k-bit code *is* the prefix of its L_K-bit code, so per-length targets built
independently (the reference) ask the same bits for different values whenever a long target's prefix
differs from the short target (docs/method.md §3, "Cross-length structure"). Here the longest
length's targets are built from short to long so that every prefix keeps the method's guarantees
where they can hold:

- :func:`nested_hadamard_centers`: ±Sylvester-Hadamard rows at every length, the shortest length's
  centres equal to the standard ones (CSQ, MDSH and SHCIR whenever every length is a power of two
  and ``C <= 2 L_1``).
- :func:`extend_max_min`: otherwise, one block of bits per length, each block chosen greedily to
  maximise the minimum Hamming distance of the extended codes (ties: the larger summed distance).

:func:`target_distances` is the per-length table (minimum Hamming distance and number of distinct
targets, nested against independent) that :func:`install_nested_targets` logs and
:func:`nhllib.core.losses.compare_targets` returns.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nhllib.vocab import TARGET_MODES

from .centers import (_EXHAUSTIVE_MAX_LENGTH, is_power_of_two, make_generator, max_min_distance_centers,
                      min_hamming_distance, pairwise_hamming, random_signed_codes, sylvester_hadamard)

logger = logging.getLogger(__name__)

#: Random candidates per block when the exhaustive set of blocks is larger than this.
POOL_SIZE = 8192


def check_targets_mode(targets: object) -> str:
    if targets not in TARGET_MODES:
        raise ValueError(f"targets must be one of {TARGET_MODES}, got {targets!r}")
    return targets  # type: ignore[return-value]


# ---------------------------------------------------------------- constructions

def nested_hadamard_centers(num_classes: int, code_lengths: Sequence[int]) -> Tensor | None:
    """Centres of the longest length whose prefixes are ±Hadamard centres at every length, or ``None``.

    At the shortest length L_1 class ``c`` gets the standard centre, row ``c`` of ``[H; -H]``: sign
    ``s_c = +1`` and row ``r_c = c`` for ``c < L_1``, else ``s_c = -1`` and ``r_c = c - L_1``. In a
    Sylvester matrix row ``r`` of ``H_{L'}`` (``L'`` a power-of-two multiple of ``L``) starts with row
    ``r mod L`` of ``H_L``, so a centre ``s H_{L'}[r']`` has the prefix ``s H_L[r]`` exactly when
    ``r' = r (mod L)`` and the sign is kept. At every longer length each class (in class order) takes
    the smallest such row not taken by an earlier class: at most two classes share a residue (a
    centre and its negation at L_1) and there are ``L'/L >= 2`` rows per residue, so the rows are
    distinct. Distinct rows are ``L'/2`` apart, which is the independent construction's distance
    matrix too (for ``C <= L'`` it takes ``C`` distinct rows of ``H_{L'}``). A class keeps its
    standard centre at every length unless that centre is negated at L_1 (``c >= L_1``); those get
    ``-H_{L'}[c]`` (e.g. C = 10, 8..128 bits: classes 8 and 9 get ``-H_L`` rows 8 and 9 at L >= 16).

    Returns ``None`` (no such assignment) when a length is not a power of two (lengths double at
    least: each is a power of two and larger than the previous) or ``C > 2 L_1``.
    """
    lengths = tuple(code_lengths)
    if not all(is_power_of_two(length) for length in lengths) or num_classes > 2 * lengths[0]:
        return None
    first = lengths[0]
    signs = torch.tensor([1.0 if c < first else -1.0 for c in range(num_classes)])
    rows = [c % first for c in range(num_classes)]
    for previous, length in zip(lengths, lengths[1:]):
        taken: set[int] = set()
        for c, row in enumerate(rows):
            while row in taken:  # the next row with the same prefix
                row += previous
            if row >= length:  # cannot happen (see above); a loud failure rather than a wrong centre
                raise AssertionError(f"no free Hadamard row for class {c} at length {length}")
            taken.add(row)
            rows[c] = row
    return signs.unsqueeze(1) * sylvester_hadamard(lengths[-1])[rows]


def extend_max_min(prefix: Tensor, candidates: Tensor) -> Tensor:
    """Append one candidate block to every row of ``prefix``, greedily, in row order.

    Row ``c`` gets the candidate that maximises the minimum Hamming distance of the extended row to
    the rows ``0..c-1`` already extended, ties going to the larger summed distance and then to the
    earlier candidate (row 0 gets candidate 0). ``prefix`` may have zero columns (then this builds
    codes from scratch). Returns the ``(C, width)`` blocks.
    """
    num_rows = prefix.shape[0]
    base = pairwise_hamming(prefix.double()) if prefix.shape[1] else prefix.new_zeros(num_rows, num_rows,
                                                                                      dtype=torch.float64)
    pool = candidates.double()
    # Lexicographic (min, sum) as one exact float64 score: a sum never reaches `scale`.
    scale = float(num_rows * (prefix.shape[1] + pool.shape[1]) + 1)
    to_chosen = torch.empty(pool.shape[0], num_rows, dtype=torch.float64)
    chosen = []
    for c in range(num_rows):
        if c == 0:
            best = 0
        else:
            total = base[c, :c] + to_chosen[:, :c]
            best = int(torch.argmax(total.min(dim=1).values * scale + total.sum(dim=1)))
        chosen.append(best)
        to_chosen[:, c] = pairwise_hamming(pool, pool[best: best + 1])[:, 0]
    return candidates[chosen].clone()


def center_block_candidates(width: int, generator: torch.Generator, *, pool_size: int = POOL_SIZE) -> Tensor:
    """Candidate blocks for centres: the rows of ``[H; -H]`` first (when ``width`` is a power of two),
    then every ±1 vector in a seeded order (``width <= 13``) or ``pool_size`` seeded random ones."""
    parts = []
    if is_power_of_two(width):
        h = sylvester_hadamard(width)
        parts += [h, -h]
    if width <= min(_EXHAUSTIVE_MAX_LENGTH, int(math.log2(pool_size))):
        values = torch.arange(2 ** width).unsqueeze(1)
        every = ((values >> torch.arange(width)) & 1).float() * 2 - 1
        parts.append(every[torch.randperm(every.shape[0], generator=generator)])
    else:
        parts.append(torch.randint(0, 2, (pool_size, width), generator=generator).float() * 2 - 1)
    return torch.cat(parts)


def weighted_block_candidates(width: int, num_negative: int, generator: torch.Generator, *,
                              pool_size: int = POOL_SIZE) -> Tensor:
    """Candidate blocks with exactly ``num_negative`` entries at -1: all of them in a seeded order when
    there are at most ``pool_size``, else ``pool_size`` seeded random ones."""
    if math.comb(width, num_negative) <= pool_size:
        every = torch.ones(math.comb(width, num_negative), width)
        for i, negative in enumerate(itertools.combinations(range(width), num_negative)):
            every[i, list(negative)] = -1.0
        return every[torch.randperm(every.shape[0], generator=generator)]
    return random_signed_codes(pool_size, width, num_negative, generator)


def nested_max_min_centers(num_classes: int, code_lengths: Sequence[int], seeds: Sequence[int], *,
                           first: Tensor | None = None) -> Tensor:
    """Centres of the longest length, built block by block: the ±Hadamard assignment of
    :func:`nested_hadamard_centers` where it exists, else ``first`` (default: the max-min centres of
    the shortest length, :func:`~nhllib.core.losses.centers.max_min_distance_centers` with ``seeds[0]``)
    extended by :func:`extend_max_min` with :func:`center_block_candidates` seeded by ``seeds[k]``."""
    hadamard = nested_hadamard_centers(num_classes, code_lengths)
    if hadamard is not None:
        return hadamard
    lengths = tuple(code_lengths)
    logger.info("no nested Hadamard assignment for C=%d and lengths %s (it needs powers of two and "
                "C <= 2 * %d); extending max-min centres block by block", num_classes, lengths, lengths[0])
    codes = max_min_distance_centers(num_classes, lengths[0], make_generator(seeds[0])) if first is None else first
    for k in range(1, len(lengths)):
        width = lengths[k] - lengths[k - 1]
        candidates = center_block_candidates(width, make_generator(seeds[k]))
        codes = torch.cat([codes, extend_max_min(codes, candidates)], dim=1)
    return codes


def nested_weighted_codes(num_classes: int, code_lengths: Sequence[int], p: float, seeds: Sequence[int]) -> Tensor:
    """DPN targets of the longest length with exactly ``int(L_k p)`` bits at -1 in every prefix L_k.

    Block k (bits ``[L_{k-1}, L_k)``) has ``int(L_k p) - int(L_{k-1} p)`` bits at -1, chosen from
    :func:`weighted_block_candidates` (seeded by ``seeds[k]``) by :func:`extend_max_min`; the first
    block too, so the shortest targets are well separated rather than plain random draws.
    """
    codes = torch.zeros(num_classes, 0)
    previous = 0
    for length, seed in zip(code_lengths, seeds):
        num_negative = int(length * p) - int(previous * p)
        candidates = weighted_block_candidates(length - previous, num_negative, make_generator(seed))
        codes = torch.cat([codes, extend_max_min(codes, candidates)], dim=1)
        previous = length
    return codes


def nested_tie_break(tie_breaks: Sequence[Tensor]) -> Tensor:
    """One tie-break vector of the longest length whose block k comes from the k-th length's own vector,
    so the shortest length keeps its own and every multi-label target is a prefix of the longest's."""
    blocks, previous = [], 0
    for tie in tie_breaks:
        blocks.append(tie[previous:])
        previous = tie.shape[0]
    return torch.cat(blocks)


# ---------------------------------------------------------------- installing and reporting

def target_distances(nested: Sequence[Tensor], independent: Sequence[Tensor]) -> list[dict[str, int]]:
    """Per length: the minimum Hamming distance between two classes' targets and the number of distinct
    targets, for the nested and the independent construction (one dict per length, shortest first)."""
    if len(nested) != len(independent):
        raise ValueError(f"need the same number of lengths, got {len(nested)} nested and {len(independent)} "
                         "independent target matrices")
    rows = []
    for a, b in zip(nested, independent):
        if a.shape != b.shape:
            raise ValueError(f"target shapes differ: {tuple(a.shape)} nested, {tuple(b.shape)} independent")
        rows.append({"code_length": a.shape[1],
                     "nested_min": min_hamming_distance(a), "independent_min": min_hamming_distance(b),
                     "nested_distinct": torch.unique(a, dim=0).shape[0],
                     "independent_distinct": torch.unique(b, dim=0).shape[0]})
    return rows


def format_target_distances(rows: Sequence[dict[str, int]]) -> str:
    return "; ".join(f"{r['code_length']} bits: min {r['nested_min']} (independent {r['independent_min']}), "
                     f"distinct {r['nested_distinct']} ({r['independent_distinct']})" for r in rows)


def check_nestable(losses: Sequence[Any], cls: type) -> tuple[int, ...]:
    """The code lengths of ``losses``, after checking they are ``cls`` losses of one model, shortest first."""
    losses = list(losses)
    if not losses:
        raise ValueError("losses must hold at least one loss, got none")
    if not all(type(loss) is cls for loss in losses):
        raise TypeError(f"{cls.__name__}.nest needs {cls.__name__} losses only, got "
                        f"{sorted({type(loss).__name__ for loss in losses})}")
    lengths = tuple(loss.code_length for loss in losses)
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise ValueError(f"losses must be ordered by strictly increasing code_length, got {lengths}")
    if len({loss.num_classes for loss in losses}) > 1:
        raise ValueError(f"losses must share num_classes, got {[loss.num_classes for loss in losses]}")
    if any(getattr(loss, "targets_mode", "independent") != "independent" for loss in losses):
        raise ValueError("these losses are already nested; nest() ties freshly built losses together once")
    return lengths


def install_nested_targets(losses: Sequence[Any], buffer: str, longest: Tensor, *,
                           tie_break: Tensor | None = None) -> list[dict[str, int]]:
    """Replace each loss's ``buffer`` (and ``tie_break``) by the prefix of ``longest``; log and return the
    per-length :func:`target_distances` table against the targets the losses held before."""
    before = [getattr(loss, buffer) for loss in losses]
    for loss in losses:
        setattr(loss, buffer, longest[:, :loss.code_length].clone().to(getattr(loss, buffer)))
        if tie_break is not None:
            loss.tie_break = tie_break[:loss.code_length].clone().to(loss.tie_break)
        loss.targets_mode = "nested"
    table = target_distances([getattr(loss, buffer) for loss in losses], before)
    logger.info("%s nested targets, C=%d: %s", losses[0].method_name, losses[0].num_classes,
                format_target_distances(table))
    return table


def nest_max_min_losses(cls: type, losses: Sequence[Any], targets: str) -> None:
    """``cls.nest`` of the losses with max-min centres in ``centers`` (MDSH, SHCIR)."""
    check_nestable(losses, cls)
    if check_targets_mode(targets) == "independent" or len(losses) < 2:
        return
    longest = nested_max_min_centers(losses[0].num_classes, [loss.code_length for loss in losses],
                                     [loss.seed for loss in losses], first=losses[0].centers)
    install_nested_targets(losses, "centers", longest)
