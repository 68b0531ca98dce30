"""DTSH: Deep Supervised Hashing with Triplet Labels.

Wang, Shi, Kitani. "Deep Supervised Hashing with Triplet Labels", ACCV 2016. Implemented as in
the NHL reference code (``bit_length/DTSH.py``), in-batch::

    theta = u u^T;  s_ij = 1[y_i . y_j > 0]   (i itself counts as a positive of i)
    for each anchor i with >= 1 positive and >= 1 negative, over all (j positive, k negative):
        t = clamp(theta_ij - theta_ik - alpha, -100, 50);  l_i = -mean(t - log(1 + e^t))
    loss = mean over valid anchors of l_i + lam * mean((u - sign u)^2)

Vectorised over a (B, B, B) triplet tensor instead of the reference's Python loop over anchors
(memory O(B^3)); ``t - log(1 + e^t)`` is evaluated as ``-softplus(-t)``. When no anchor is valid
the triplet term is a zero tensor attached to the graph (the reference returned the Python int 0
for it).

Nested models: all K Gram matrices from :func:`~nhllib.losses.base.prefix_products` in one pass.
The O(B^3) elementwise work per length cannot be shared: the log-likelihood is not linear in theta,
so it is paid K times, length by length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import HashLoss, check_float, prefix_products, prefix_views


class DTSHLoss(HashLoss):
    """DTSH loss; ``alpha`` is the triplet margin (reference 5), ``lam`` the quantisation weight (1)."""

    method_name = "DTSH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 alpha: float = 5.0, lam: float = 1.0) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.alpha = check_float("alpha", alpha)
        self.lam = check_float("lam", lam, minimum=0.0)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return _triplet(u @ u.t(), y, self.alpha) + self._quantization(u)

    def _quantization(self, u: Tensor) -> Tensor:
        return self.lam * (u - u.sign()).pow(2).mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[DTSHLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """Nested codes (:func:`~nhllib.losses.base.prefix_views`): all lengths in one pass; otherwise
        the per-length path."""
        losses, codes = list(losses), list(codes)
        if not prefix_views(codes):
            return super().nested_losses(losses, codes, y, index)
        # Length by length on the (B, B, B) triplet tensors: a (K, B, B, B) stack falls out of cache and
        # was measured slower on CPU than the per-length path.
        return torch.stack([_triplet(gram, y, loss.alpha) + loss._quantization(u)
                            for loss, u, gram in zip(losses, codes, prefix_products(codes))])


def _triplet(theta: Tensor, y: Tensor, alpha) -> Tensor:
    """The triplet term from the Gram matrix ``theta`` (..., B, B): shape ``theta.shape[:-2]``."""
    positive = (y @ y.t()) > 0
    negative = ~positive
    # t[i, j, k] = theta_ij - theta_ik - alpha; only (j positive, k negative) of anchor i count.
    t = (theta.unsqueeze(-1) - theta.unsqueeze(-2) - alpha).clamp(min=-100, max=50)
    log_likelihood = -F.softplus(-t)
    mask = positive.unsqueeze(2) & negative.unsqueeze(1)
    per_anchor_sum = (log_likelihood * mask.to(theta.dtype)).sum(dim=(-2, -1))
    count = positive.sum(dim=1) * negative.sum(dim=1)
    valid = (count > 0).to(theta.dtype)
    per_anchor = -per_anchor_sum / count.clamp(min=1).to(theta.dtype)
    return (per_anchor * valid).sum(dim=-1) / valid.sum().clamp(min=1)
