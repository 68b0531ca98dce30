"""SHCIR: Deep Hashing with Semantic Hash Centers for Image Retrieval (the SHC method).

Chen, Liu, Zhou, Ma, Chen, Zhang. "Deep Hashing with Semantic Hash Centers for Image Retrieval",
arXiv 2507.08404 (ACM TOIS 2025). Implemented as in the NHL reference code (``bit_length/SHCIR.py``)::

    e_k = exp(sqrt(L) * (cos(u, c_k) - m)),  D = e_pos + sum_neg e_neg
    l_i = log(e_pos / D) + 1/(C - 1) * sum_neg log(1 - e_neg / D)
    loss = -mean_i l_i + lam * mean((|u| - 1)^2)

with ``m = 0``. Vectorised in log space (``log(1 - e_neg / D)`` as a log-sum-exp over the other
classes) instead of the reference's Python loop over samples; same values where the reference's
are finite.

Single-label only (the reference's loop assumes exactly one positive class): a ``y`` row with more
or fewer than one label raises ``ValueError``.

Centres: the reference loads ``tmp_file/SHCIR/SHCIR_{dataset}_{L}.npy``, made by an ADMM search
started from CSQ's Hadamard centres whose extra term pulls centre inner products toward a class
similarity matrix taken from a fine-tuned ResNet-50 classifier head (Hadamard centres unchanged
for L > 64). Reproducing that needs the pretrained classifier, so we use the same seeded
max-min-distance centres as MDSH (:func:`nhllib.losses.centers.max_min_distance_centers`):
Hadamard rows when ``C <= 2L``, a greedy farthest-point fill otherwise. They carry no semantic
class structure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import HashLoss, _single_label_or_raise, check_float, log_one_minus_softmax
from .centers import make_generator, max_min_distance_centers


class SHCIRLoss(HashLoss):
    """SHCIR loss; ``lam`` weighs the quantisation term (reference 1e-4), ``m`` the cosine margin (0)."""

    method_name = "SHCIR"
    supports_multi_label = False
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

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        _single_label_or_raise(y, self.method_name)
        cos = F.normalize(u) @ F.normalize(self.centers.to(u.dtype)).t()
        z = math.sqrt(self.code_length) * (cos - self.m)
        s = y.to(u.dtype)
        positive_term = (s * z).sum(dim=1) - torch.logsumexp(z, dim=1)
        negative_term = ((1 - s) * log_one_minus_softmax(z)).sum(dim=1) / (self.num_classes - 1)
        center_loss = -(positive_term + negative_term).mean()
        quantization = (u.abs() - 1).pow(2).mean()
        return center_loss + self.lam * quantization
