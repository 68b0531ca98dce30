"""LCDSH: Locality-Constrained Deep Supervised Hashing.

Zhu, Gao. "Locality Constrained Deep Supervised Hashing for Image Retrieval", IJCAI 2017.
Implemented as in the NHL reference code (``bit_length/LCDSH.py``), in-batch::

    s'_ij = 2 * 1[y_i . y_j > 0] - 1;  theta = clamp(u u^T / 2, -50, 50);  b = sign(u)
    loss = mean log(1 + e^{-s' theta}) + lam * mean(sigmoid(theta) - sigmoid(b b^T / 2))^2

The sign branch carries no gradient, as in the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import HashLoss, check_float, pairwise_similarity


class LCDSHLoss(HashLoss):
    """LCDSH loss; ``lam`` weighs the sign-consistency term (reference 3)."""

    method_name = "LCDSH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 3.0) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.lam = check_float("lam", lam, minimum=0.0)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        s = 2 * pairwise_similarity(y, y).to(u.dtype) - 1
        theta = (0.5 * (u @ u.t())).clamp(min=-50, max=50)
        likelihood = torch.log(1 + torch.exp(-s * theta)).mean()
        b = u.sign()
        theta_binary = 0.5 * (b @ b.t())
        consistency = (theta.sigmoid() - theta_binary.sigmoid()).pow(2).mean()
        return likelihood + self.lam * consistency
