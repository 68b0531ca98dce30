"""SHCIR: Deep Hashing with Semantic Hash Centers for Image Retrieval (the SHC method).

Chen, Liu, Zhou, Ma, Chen, Zhang. "Deep Hashing with Semantic Hash Centers for Image Retrieval",
arXiv 2507.08404 (ACM TOIS 2025). Implemented as in the NHL reference code (``bit_length/SHCIR.py``)::

    e_k = exp(sqrt(L) * (cos(u, c_k) - m)),  D = e_pos + sum_neg e_neg
    l_i = log(e_pos / D) + 1/(C - 1) * sum_neg log(1 - e_neg / D)
    loss = -mean_i l_i + lam * mean((|u| - 1)^2)

with ``m = 0``. The margin shifts every class's logit alike, so it cancels in both softmax terms: the
loss does not depend on ``m`` (kept as a parameter to mirror the reference). Vectorised in log space (``log(1 - e_neg / D)`` as a log-sum-exp over the other
classes) instead of the reference's Python loop over samples; same values where the reference's
are finite.

Single-label only (the reference's loop assumes exactly one positive class): a ``y`` row with more
or fewer than one label raises ``ValueError``.

Centres: the reference loads ``tmp_file/SHCIR/SHCIR_{dataset}_{L}.npy``, made by an ADMM search
started from CSQ's Hadamard centres whose extra term pulls centre inner products toward a class
similarity matrix taken from a fine-tuned ResNet-50 classifier head (Hadamard centres unchanged
for L > 64). Reproducing that needs the pretrained classifier, so we use the same seeded
max-min-distance centres as MDSH (:func:`nhllib.core.losses.centers.max_min_distance_centers`):
Hadamard rows when ``C <= 2L``, a greedy farthest-point fill otherwise. They carry no semantic
class structure.

Nested models (:meth:`SHCIRLoss.nest`, docs/method.md §3): by default every length's centres are the
prefixes of the longest length's (:func:`~nhllib.core.losses.nested_targets.nested_max_min_centers`):
the ±Hadamard assignment when every length is a power of two and ``C <= 2 L_1`` (then each length's
minimum distance equals the independent construction's), else the shortest length's centres extended
block by block to the largest minimum distance. ``targets="independent"`` keeps per-length centres.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import HashLoss, _single_label_or_raise, check_float, log_one_minus_softmax
from .centers import make_generator, max_min_distance_centers, padded_cosines, per_length_means, per_length_values
from .nested_targets import nest_max_min_losses


class SHCIRLoss(HashLoss):
    """SHCIR loss; ``lam`` weighs the quantisation term (reference 1e-4), ``m`` the cosine margin (0)."""

    method_name = "SHCIR"
    supports_multi_label = False
    #: The buffer holding the per-class targets (``(C, L)``, entries ±1).
    target_buffer: ClassVar[str] = "centers"
    centers: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 1e-4, m: float = 0.0) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        if num_classes < 2:
            raise ValueError(f"SHCIR needs num_classes >= 2, got {num_classes}")
        self.lam = check_float("lam", lam, minimum=0.0)
        self.m = check_float("m", m)
        self.register_buffer("centers", max_min_distance_centers(num_classes, code_length,
                                                                 make_generator(seed)))
        self.targets_mode = "independent"

    @classmethod
    def nest(cls, losses: Sequence[SHCIRLoss], *, targets: str = "nested") -> None:
        """Make every length's centres prefixes of the longest length's (see the module docstring);
        ``targets="independent"`` or a single length leaves the losses as built."""
        nest_max_min_losses(cls, losses, targets)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        _single_label_or_raise(y, self.method_name)
        cosines = F.normalize(u) @ F.normalize(self.centers.to(u.dtype)).t()
        return _shcir_loss(cosines, math.sqrt(self.code_length), self.m, y, u, self.lam, Tensor.mean, Tensor.mean)

    @classmethod
    def nested_losses(cls, losses: Sequence[SHCIRLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths at once: the ``(K, B, C)`` cosines from one batched product
        (:func:`~nhllib.core.losses.centers.padded_cosines`), one log-space pass, and the quantisation terms
        side by side. Each ``codes[k]`` enters whole, so loss k depends on ``codes[k]`` alone."""
        _single_label_or_raise(y, cls.method_name)
        u = torch.cat(list(codes), 1)
        widths = [loss.code_length for loss in losses]
        scales = u.new_tensor([math.sqrt(n) for n in widths]).view(-1, 1, 1)
        margins = u.new_tensor([loss.m for loss in losses]).view(-1, 1, 1)
        cosines = padded_cosines(codes, [loss.centers for loss in losses])
        lam = per_length_values([loss.lam for loss in losses], None, u)
        return _shcir_loss(cosines, scales, margins, y, u, lam, lambda terms: terms.mean(dim=1),
                           lambda terms: per_length_means(terms, widths))


def _shcir_loss(cosines: Tensor, scale: float | Tensor, m: float | Tensor, y: Tensor, u: Tensor,
                lam: float | Tensor, mean_samples: Callable[[Tensor], Tensor],
                mean_bits: Callable[[Tensor], Tensor]) -> Tensor:
    """SHCIR's loss from the cosines (..., B, C) between the codes ``u`` and the centres.

    One length: ``cosines`` (B, C), ``u`` (B, L), float ``scale``, ``m`` and ``lam``, both means ``Tensor.mean``.
    All lengths: ``cosines`` (K, B, C), the codes side by side, ``(K, 1, 1)`` scales and margins, ``(K,)`` or
    float ``lam``, means per length. The caller's means keep each path's own reduction order.
    """
    z = scale * (cosines - m)
    s = y.to(u.dtype)
    positive_term = (s * z).sum(dim=-1) - torch.logsumexp(z, dim=-1)
    log_not_p = log_one_minus_softmax(z.flatten(0, -2)).view_as(z)
    negative_term = ((1 - s) * log_not_p).sum(dim=-1) / (z.shape[-1] - 1)
    center_loss = -mean_samples(positive_term + negative_term)
    return center_loss + lam * mean_bits((u.abs() - 1).pow(2))
