"""DSH: Deep Supervised Hashing.

Liu, Wang, Shan, Chen. "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016.
Implemented as in the NHL reference code (``bit_length/DSH.py``)::

    write (u, y) into the bank at index
    dist_ij = ||u_i - U_j||^2  (B x num_train);  ybar_ij = 1[y_i . Y_j == 0]  (1 = dissimilar)
    loss = mean_ij[(1 - ybar)/2 dist + ybar/2 max(m - dist, 0)] + alpha * mean |1 - |u||

with ``m = 2L`` by default. The bank (``U``, ``Y`` buffers, zero at start) is written before the
loss and the pairwise term is averaged over the whole bank, unvisited zero rows included. Bank
writes happen only in training mode (the reference also wrote test codes into it, docs/reference-defects.md
item 7). The distances are computed as ``|u|^2 + |U|^2 - 2 u.U`` (clamped at 0) instead
of the reference's (B, num_train, L) broadcast, which needs O(B * num_train * L) memory; the
values agree to rounding.

``pairs="batch"`` takes the B(B-1)/2 pairs i < j of the batch instead of the bank, the DSH paper's
online pair generation (no bank is kept). In the from-scratch small-CNN setting the bank version's
codes collapse, while the in-batch form trains (docs/method.md section 3). Nested models: every
length in one pass, see :class:`~nhllib.core.losses.base.MemoryBankLoss`.
"""

from __future__ import annotations

from torch import Tensor

from .base import MemoryBankLoss, check_float
from .pair_means import contrastive_pair_mean


class DSHLoss(MemoryBankLoss):
    """DSH loss; ``m`` is the contrastive margin (default ``2 * code_length``), ``alpha`` 0.1;
    ``pairs`` is ``"bank"`` (the reference) or ``"batch"`` (in-batch pairs, the paper)."""

    method_name = "DSH"
    needs_distances = True
    pair_hparams = ("m",)

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 m: float | None = None, alpha: float = 0.1, pairs: str = "bank") -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed, pairs=pairs)
        self.m = 2.0 * code_length if m is None else check_float("m", m, strictly_positive=True)
        self.alpha = check_float("alpha", alpha, minimum=0.0)

    def _pair_terms(self, inner: Tensor, distance: Tensor | None, similar: Tensor, *, m) -> Tensor:
        return similar / 2 * distance + (1 - similar) / 2 * (m - distance).clamp(min=0)

    def _bank_pair_mean(self, inner: Tensor, code_squares: Tensor | None, bank_squares: Tensor | None,
                        similar: Tensor, *, m) -> Tensor:
        return contrastive_pair_mean(inner, code_squares, bank_squares, similar, m)

    def _code_term(self, u: Tensor) -> Tensor:
        return self.alpha * (1 - u.abs()).abs().mean()
