"""CSQ: Central Similarity Quantization.

Yuan, Wang, Chen, Feng, Tay, Yan, Feng. "Central Similarity Quantization for Efficient Image and
Video Retrieval", CVPR 2020. Implemented as in the NHL reference code (``bit_length/CSQ.py``)::

    t = tanh(u);  loss = BCE((t + 1) / 2, (c_y + 1) / 2) + lam * mean((|t| - 1)^2)

with the hash centre ``c_y`` of each sample's label: the class centre for a one-hot ``y``, and for
a multi-hot ``y`` the sign of the summed centres with zero entries broken by a fixed seeded random
bit vector (``tie_break``). One formula covers both cases, because for a one-hot row the sign of
the sum is that class's centre; single- versus multi-label is thus read from ``y`` itself, not
from a dataset name as in the reference. Centres: see :func:`nhllib.losses.centers.csq_centers`.

Deviations from the reference: any power-of-two length gets Hadamard centres (the reference only
8..128); other lengths get seeded *balanced* random centres (the reference: unbalanced
``sign(uniform)``); a row with no label gets the tie-break vector (the reference's single-label
branch gave it class 0's centre).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import HashLoss, check_float
from .centers import csq_centers, label_to_center, make_generator, random_signs


class CSQLoss(HashLoss):
    """CSQ loss; ``lam`` weighs the quantisation term (reference 1e-4)."""

    method_name = "CSQ"
    centers: Tensor
    tie_break: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 1e-4) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.lam = check_float("lam", lam, minimum=0.0)
        generator = make_generator(seed)
        self.register_buffer("centers", csq_centers(num_classes, code_length, generator))
        self.register_buffer("tie_break", random_signs(code_length, generator))

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        t = u.tanh()
        target = label_to_center(y.to(u.dtype), self.centers.to(u.dtype), self.tie_break.to(u.dtype))
        center_loss = F.binary_cross_entropy(0.5 * (t + 1), 0.5 * (target + 1))
        quantization = (t.abs() - 1).pow(2).mean()
        return center_loss + self.lam * quantization
