"""DSH: Deep Supervised Hashing.

Liu, Wang, Shan, Chen. "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016.
Implemented as in the NHL reference code (``bit_length/DSH.py``)::

    write (u, y) into the bank at index
    dist_ij = ||u_i - U_j||^2  (B x num_train);  ybar_ij = 1[y_i . Y_j == 0]  (1 = dissimilar)
    loss = mean_ij[(1 - ybar)/2 dist + ybar/2 max(m - dist, 0)] + alpha * mean |1 - |u||

with ``m = 2L`` by default. The bank (``U``, ``Y`` buffers, zero at start) is written before the
loss and the pairwise term is averaged over the whole bank, unvisited zero rows included. Bank
writes happen only in training mode (the reference also wrote test codes into it, METHOD.md
section 6 item 7). The distances are computed as ``|u|^2 + |U|^2 - 2 u.U`` (clamped at 0) instead
of the reference's (B, num_train, L) broadcast, which needs O(B * num_train * L) memory; the
values agree to rounding.
"""

from __future__ import annotations

from torch import Tensor

from .base import MemoryBankLoss, check_float


class DSHLoss(MemoryBankLoss):
    """DSH loss; ``m`` is the contrastive margin (default ``2 * code_length``), ``alpha`` 0.1."""

    method_name = "DSH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 m: float | None = None, alpha: float = 0.1) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.m = 2.0 * code_length if m is None else check_float("m", m, strictly_positive=True)
        self.alpha = check_float("alpha", alpha, minimum=0.0)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        bank_u, bank_y = self._bank(u, y, index)
        dist = (u.pow(2).sum(dim=1, keepdim=True) + bank_u.pow(2).sum(dim=1).unsqueeze(0)
                - 2 * (u @ bank_u.t())).clamp(min=0)
        dissimilar = (y @ bank_y.t() == 0).to(u.dtype)
        contrastive = (1 - dissimilar) / 2 * dist + dissimilar / 2 * (self.m - dist).clamp(min=0)
        quantization = (1 - u.abs()).abs().mean()
        return contrastive.mean() + self.alpha * quantization
