"""DBDH: Deep Balanced Discrete Hashing.

Zheng, Zhang, Song, Lu, Shen. "Deep Balanced Discrete Hashing for Image Retrieval",
Neurocomputing 2020. Implemented as in the NHL reference code (``bit_length/DBDH.py``)::

    u <- clamp(u, -1, 1);  write (u, y) into the bank at index
    theta = u U^T / 2  (B x num_train);  s_ij = 1[y_i . Y_j > 0]
    loss = mean_ij[log(1 + e^{-|theta|}) + max(theta, 0) - s theta] + alpha * mean_i |mean_k u_ik|^p

The bank (``U``, ``Y`` buffers, zero at start, the clamped codes are stored) is written before the
loss and the pairwise term is averaged over the whole bank, unvisited zero rows included. Bank
writes happen only in training mode (the reference also wrote test codes into it, docs/reference-defects.md
item 7). ``p`` must be 1 or 2: the reference used the square for any ``p != 1``.

``pairs="batch"`` takes the B(B-1)/2 pairs i < j of the batch instead of the bank (no bank is kept).
Nested models: every length in one pass, see :class:`~nhllib.core.losses.base.MemoryBankLoss` (the clamp
is elementwise, so clamped prefixes are prefixes of the clamped longest code).
"""

from __future__ import annotations

from torch import Tensor

from .base import MemoryBankLoss, check_float
from .pair_means import LogisticPairs


class DBDHLoss(LogisticPairs, MemoryBankLoss):
    """DBDH loss; ``alpha`` weighs the bit-balance term of power ``p`` (reference 0.1, 2); ``pairs``
    is ``"bank"`` (the reference) or ``"batch"`` (in-batch pairs)."""

    method_name = "DBDH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 alpha: float = 0.1, p: int = 2, pairs: str = "bank") -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed, pairs=pairs)
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        if p not in (1, 2) or isinstance(p, bool):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = int(p)

    def _transform(self, u: Tensor) -> Tensor:
        return u.clamp(min=-1, max=1)

    def _code_term(self, u: Tensor) -> Tensor:
        bit_mean = u.mean(dim=1)
        balance = bit_mean.abs().mean() if self.p == 1 else bit_mean.pow(2).mean()
        return self.alpha * balance
