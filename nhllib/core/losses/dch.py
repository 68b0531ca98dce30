"""DCH: Deep Cauchy Hashing.

Cao, Long, Liu, Wang. "Deep Cauchy Hashing for Hamming Space Retrieval", CVPR 2018. Implemented
as in the NHL reference code (``bit_length/DCH.py``), in-batch::

    d(a, b) = (1 - min(cos(a, b), 0.99)) * L / 2        (cos with the norm product clamped >= 1e-4)
    s_ij = 1[y_i . y_j > 0];  w = s |S| / |S_1| + (1 - s) |S| / |S_0|  (w = 1 if S_1 or S_0 is empty)
    loss = mean_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)]
           + lam * mean log(1 + d(|u|, 1) / gamma)

The pairs include i = j, as in the reference. The reference sized the all-ones matrix of the
quantisation term by ``batch_size = 64``; every row of it is the same all-ones vector, so the
mean is the same for any number of rows and we use a single row (no batch-size dependence).

Nested models: all K Gram matrices from :func:`~nhllib.core.losses.base.prefix_products` and the pair
weights once (they depend on the labels only); see :meth:`DCHLoss.nested_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import HashLoss, check_float, pairwise_similarity, prefix_products, prefix_views, stack_hparam


class DCHLoss(HashLoss):
    """DCH loss; ``gamma`` is the Cauchy scale (reference 20), ``lam`` the quantisation weight (0.1)."""

    method_name = "DCH"

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 gamma: float = 20.0, lam: float = 0.1) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.gamma = check_float("gamma", gamma, strictly_positive=True)
        self.lam = check_float("lam", lam, minimum=0.0)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        w, s = _pair_weights(y, u.dtype)
        cauchy = _cauchy_terms(u @ u.t(), _norm_products(u.norm(dim=1)), w, s, self.code_length, self.gamma)
        return cauchy.mean() + self._quantization(u)

    def _quantization(self, u: Tensor) -> Tensor:
        # The distance of |u| to the all-ones code: one row serves every sample (module docstring).
        a, ones = u.abs(), u.new_ones(1, self.code_length)
        norms = a.norm(dim=1, keepdim=True) @ ones.norm(dim=1, keepdim=True).t()
        d = _cauchy_distance(a @ ones.t(), norms, self.code_length)
        return self.lam * torch.log(1 + d / self.gamma).mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[DCHLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """Nested codes (:func:`~nhllib.core.losses.base.prefix_views`): the K Gram matrices in one pass,
        the pair weights once; otherwise the per-length path."""
        losses, codes = list(losses), list(codes)
        if not prefix_views(codes):
            return super().nested_losses(losses, codes, y, index)
        longest = codes[-1]
        w, s = _pair_weights(y, longest.dtype)
        norms = torch.stack([u.norm(dim=1) for u in codes])
        lengths = stack_hparam(losses, "code_length", longest)
        gamma = stack_hparam(losses, "gamma", longest)
        cauchy = _cauchy_terms(torch.stack(prefix_products(codes)), _norm_products(norms), w, s, lengths, gamma)
        return cauchy.mean(dim=(1, 2)) + torch.stack([loss._quantization(u) for loss, u in zip(losses, codes)])


def _cauchy_terms(inner: Tensor, norms: Tensor, w: Tensor, s: Tensor, code_length, gamma) -> Tensor:
    """The weighted Cauchy pair terms ``w [s log(d / gamma) + log(1 + gamma / d)]`` (..., B, B) from the
    inner products and norm products; one length (floats) or all K at once (``(K, 1, 1)`` lengths, and
    ``gamma`` a float or ``(K, 1, 1)``)."""
    d = _cauchy_distance(inner, norms, code_length)
    return w * (s * torch.log(d / gamma) + torch.log(1 + gamma / d))


def _cauchy_distance(inner: Tensor, norms: Tensor, code_length) -> Tensor:
    """DCH's distance ``(1 - min(cos, 0.99)) * L / 2``, the cosine with the norm product clamped at 1e-4."""
    cos = inner / norms.clamp(min=1e-4)
    return (1 - cos.clamp(max=0.99)) * code_length / 2


def _pair_weights(y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The balancing weights w and the similarity s of the batch's pairs."""
    s = pairwise_similarity(y, y).to(dtype)
    n_pairs = s.numel()
    n_similar = s.sum()
    n_dissimilar = n_pairs - n_similar
    # The reference falls back to w = 1 when S_1 or S_0 is empty; with the counts clamped at 1
    # the balanced formula already gives 1 on every pair then, so no branch (or host sync).
    w = s * n_pairs / n_similar.clamp(min=1) + (1 - s) * n_pairs / n_dissimilar.clamp(min=1)
    return w, s


def _norm_products(norms: Tensor) -> Tensor:
    """``|u_i| |u_j|`` from the row norms (..., B): a product of two numbers, exact either way."""
    return norms.unsqueeze(-1) * norms.unsqueeze(-2)
