"""Private torch APIs the library uses for speed, each behind a feature check that says when to fall back.

A private op can vanish or change its rules in any torch release; ``hasattr`` alone would only notice the first.
Each check runs the op once on a tiny input and compares with the exact answer, so a missing or misbehaving op
sends the caller to its public fallback (tested in tests/test_compat.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

__all__ = ["int8_matmul"]


@cache  # one probe per process: whether an op works does not change while it runs
def int8_matmul() -> Callable[..., torch.Tensor] | None:
    """``torch._int_mm`` (exact int8 x int8 -> int32 product on CPU) if it works here, else None.

    Callers fall back to a float32 product, exact for the small integer sums they form.
    """
    op = getattr(torch, "_int_mm", None)
    if op is None:
        return None
    # The op asks for more than 16 rows and inner / outer sizes that are multiples of 8.
    a = torch.arange(24 * 8, dtype=torch.int64).remainder_(7).sub_(3).to(torch.int8).view(24, 8)
    b = torch.arange(8 * 8, dtype=torch.int64).remainder_(5).sub_(2).to(torch.int8).view(8, 8)
    try:
        result = op(a, b)
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    expected = a.to(torch.int32) @ b.to(torch.int32)
    return op if result.dtype == torch.int32 and torch.equal(result, expected) else None
