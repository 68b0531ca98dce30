"""DTSH: Deep Supervised Hashing with Triplet Labels.

Wang, Shi, Kitani. "Deep Supervised Hashing with Triplet Labels", ACCV 2016. Implemented as in
the NHL reference code (``bit_length/DTSH.py``), in-batch::

    theta = u u^T;  s_ij = 1[y_i . y_j > 0]   (i itself counts as a positive of i)
    for each anchor i with >= 1 positive and >= 1 negative, over all (j positive, k negative):
        t = clamp(theta_ij - theta_ik - alpha, -100, 50);  l_i = -mean(t - log(1 + e^t))
    loss = mean over valid anchors of l_i + lam * mean((u - sign u)^2)

Vectorised over the valid triplets only, instead of the reference's Python loop over anchors: each anchor's
positives and negatives are gathered into a padded (B, P, N) block, P and N the largest counts in the batch
(about B^3 / 10 entries for ten balanced classes, never more than a dense (B, B, B) tensor). The triplets of
an anchor are summed in a different order than a dense tensor would, so values agree to rounding.
``t - log(1 + e^t)`` is evaluated as ``-softplus(-t)``. When no anchor is valid the triplet term is a zero
tensor attached to the graph (the reference returned the Python int 0 for it).

Nested models: all K Gram matrices from :func:`~nhllib.core.losses.base.prefix_products` in one pass and the
triplets' indices found once. The elementwise work over the triplets cannot be shared between lengths: the
log-likelihood is not linear in theta, so it is paid K times, length by length.
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
        return _triplet(u @ u.t(), _Triplets(y), self.alpha) + self._quantization(u)

    def _quantization(self, u: Tensor) -> Tensor:
        return self.lam * (u - u.sign()).pow(2).mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[DTSHLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """Nested codes (:func:`~nhllib.core.losses.base.prefix_views`): all lengths in one pass; otherwise
        the per-length path."""
        losses, codes = list(losses), list(codes)
        if not prefix_views(codes):
            return super().nested_losses(losses, codes, y, index)
        triplets = _Triplets(y)  # the same triplets at every length
        return torch.stack([_triplet(gram, triplets, loss.alpha) + loss._quantization(u)
                            for loss, u, gram in zip(losses, codes, prefix_products(codes))])


class _Triplets:
    """The valid (anchor, positive, negative) triplets of a batch, as padded index blocks.

    ``positives[i, :p_i]`` are the positives of anchor i (i itself included), ``negatives[i, :n_i]`` its
    negatives, the rest padding; ``mask[i, a, b]`` says whether (positive a, negative b) of anchor i is real.
    """

    def __init__(self, y: Tensor) -> None:
        positive = (y @ y.t()) > 0
        self.positive_count = positive.sum(dim=1)
        self.negative_count = positive.shape[1] - self.positive_count
        # A stable sort of the 0/1 flags puts each row's positives (negatives) first, in index order.
        flags = positive.to(torch.uint8)
        widest_p = int(self.positive_count.max()) if positive.numel() else 0
        widest_n = int(self.negative_count.max()) if positive.numel() else 0
        self.positives = torch.sort(flags, dim=1, descending=True, stable=True).indices[:, :widest_p]
        self.negatives = torch.sort(flags, dim=1, stable=True).indices[:, :widest_n]
        slots_p = torch.arange(widest_p, device=y.device) < self.positive_count[:, None]
        slots_n = torch.arange(widest_n, device=y.device) < self.negative_count[:, None]
        self.mask = slots_p[:, :, None] & slots_n[:, None, :]


def _triplet(theta: Tensor, triplets: _Triplets, alpha) -> Tensor:
    """The triplet term (0-dim) from the Gram matrix ``theta`` (B, B) over the batch's valid triplets."""
    # t[i, a, b] = theta_{i, positive a} - theta_{i, negative b} - alpha, for the anchor's own triplets only.
    t = (theta.gather(1, triplets.positives)[:, :, None] - theta.gather(1, triplets.negatives)[:, None, :]
         - alpha).clamp(min=-100, max=50)
    log_likelihood = -F.softplus(-t)
    per_anchor_sum = (log_likelihood * triplets.mask.to(theta.dtype)).sum(dim=(1, 2))
    count = triplets.positive_count * triplets.negative_count
    valid = (count > 0).to(theta.dtype)
    per_anchor = -per_anchor_sum / count.clamp(min=1).to(theta.dtype)
    return (per_anchor * valid).sum(dim=-1) / valid.sum().clamp(min=1)
