"""DHN: Deep Hashing Network.

Zhu, Long, Wang, Cao. "Deep Hashing Network for Efficient Similarity Retrieval", AAAI 2016.
Implemented as in the NHL reference code (``bit_length/DHN.py``)::

    write (u, y) into the bank at index
    theta = u U^T / 2  (B x num_train, no clamp);  s_ij = 1[y_i . Y_j > 0]
    loss = mean_ij[log(1 + e^{-|theta|}) + max(theta, 0) - s theta] + alpha * mean log cosh(|u| - 1)

The bank (``U``, ``Y`` buffers, zero at start) is written before the loss and the pairwise term is
averaged over the whole bank, unvisited zero rows included. Bank writes happen only in training
mode (the reference also wrote test codes into it, docs/reference-defects.md item 7). ``log cosh`` is
evaluated in an overflow-free form with the same value where the reference's is finite.

``pairs="batch"`` takes the B(B-1)/2 pairs i < j of the batch instead of the bank (no bank is kept).
Nested models: every length in one pass, see :class:`~nhllib.core.losses.base.MemoryBankLoss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MemoryBankLoss, check_float
from .pair_means import LogisticPairs


def _log_cosh(x: Tensor) -> Tensor:
    ax = x.abs()
    return ax + torch.log1p(torch.exp(-2 * ax)) - math.log(2.0)


class DHNLoss(LogisticPairs, MemoryBankLoss):
    """DHN loss; ``alpha`` weighs the log-cosh quantisation term (reference 0.1); ``pairs`` is
    ``"bank"`` (the reference) or ``"batch"`` (in-batch pairs)."""

    method_name = "DHN"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 alpha: float = 0.1, pairs: str = "bank") -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed, pairs=pairs)
        self.alpha = check_float("alpha", alpha, minimum=0.0)

    def _code_term(self, u: Tensor) -> Tensor:
        return self.alpha * _log_cosh(u.abs() - 1).mean()
