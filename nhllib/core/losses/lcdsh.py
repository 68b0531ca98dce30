"""LCDSH: Locality-Constrained Deep Supervised Hashing.

Zhu, Gao. "Locality Constrained Deep Supervised Hashing for Image Retrieval", IJCAI 2017.
Implemented as in the NHL reference code (``bit_length/LCDSH.py``), in-batch::

    s'_ij = 2 * 1[y_i . y_j > 0] - 1;  theta = clamp(u u^T / 2, -50, 50);  b = sign(u)
    loss = mean log(1 + e^{-s' theta}) + lam * mean(sigmoid(theta) - sigmoid(b b^T / 2))^2

The sign branch carries no gradient, as in the reference.

Nested models: the K Gram matrices of the codes and of their signs from
:func:`~nhllib.core.losses.base.prefix_products` / :func:`~nhllib.core.losses.base.cumulative_products`, the
similarity once; see :meth:`LCDSHLoss.nested_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import (HashLoss, check_float, cumulative_products, pairwise_similarity, prefix_products, prefix_views,
                   stack_hparam)


class LCDSHLoss(HashLoss):
    """LCDSH loss; ``lam`` weighs the sign-consistency term (reference 3)."""

    method_name = "LCDSH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 3.0) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.lam = check_float("lam", lam, minimum=0.0)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        b = u.sign()
        return _lcdsh(u @ u.t(), b @ b.t(), y, self.lam)

    @classmethod
    def nested_losses(cls, losses: Sequence[LCDSHLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """Nested codes (:func:`~nhllib.core.losses.base.prefix_views`): all lengths in one pass; otherwise
        the per-length path."""
        losses, codes = list(losses), list(codes)
        if not prefix_views(codes):
            return super().nested_losses(losses, codes, y, index)
        longest = codes[-1]
        signs = longest.detach().sign()  # no gradient through the sign branch, as per length
        sign_grams = cumulative_products(signs, signs, [u.shape[1] for u in codes])
        return _lcdsh(torch.stack(prefix_products(codes)), sign_grams, y, stack_hparam(losses, "lam", longest, dims=0))


def _lcdsh(gram: Tensor, sign_gram: Tensor, y: Tensor, lam) -> Tensor:
    """The loss from the Gram matrices of the codes and of their signs (..., B, B)."""
    s = 2 * pairwise_similarity(y, y).to(gram.dtype) - 1
    theta = (0.5 * gram).clamp(min=-50, max=50)
    likelihood = torch.log(1 + torch.exp(-s * theta)).mean(dim=(-2, -1))
    theta_binary = 0.5 * sign_gram
    consistency = (theta.sigmoid() - theta_binary.sigmoid()).pow(2).mean(dim=(-2, -1))
    return likelihood + lam * consistency
