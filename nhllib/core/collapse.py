"""Whether a run's codes collapsed: the check that keeps a diverged model from passing for a trained one.

A well-trained centre-based model legitimately maps each class to about one code, so "few distinct codes" alone
is not collapse. A length counts as collapsed when its query codes take fewer distinct values than there are
classes (capped by what the length and the query set allow), or when more than half of its bits are constant
over the query set (those bits carry nothing). ``lr=1e6`` with CSQ, for example, gives one code for every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CodeHealth", "code_health"]


@dataclass(frozen=True)
class CodeHealth:
    code_length: int
    distinct_codes: int  # distinct sign patterns among the query codes
    constant_bits: int  # bits taking one value for every query
    collapsed: bool


def code_health(codes: dict[int, object], num_classes: int) -> dict[int, CodeHealth]:
    """Per code length, the health of real-valued or ±1 ``codes`` (rows = items; tensors or arrays)."""
    out = {}
    for length, values in codes.items():
        bits = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values) > 0
        distinct = len(np.unique(np.packbits(bits, axis=1), axis=0)) if len(bits) else 0
        constant = int(np.sum(bits.all(axis=0) | (~bits).all(axis=0))) if len(bits) else 0
        expected = min(num_classes, 2 ** min(int(length), 62), len(bits))
        collapsed = distinct < expected or constant > int(length) / 2
        out[int(length)] = CodeHealth(int(length), int(distinct), constant, bool(collapsed))
    return out
