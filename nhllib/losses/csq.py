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
branch gave it class 0's centre). The BCE of a ±1 target is evaluated as -log((1 + c t) / 2),
the same function without the rounding of 1 - (t + 1) / 2 (see :func:`_centre_bce`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
        terms = _centre_bce(t, target) + self.lam * (t.abs() - 1).pow(2)
        return terms.mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[CSQLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths at once: the codes side by side, per-length centres side by side, one pass.

        Each length's loss is the sum of its columns' BCE + lam * quantisation terms over the batch,
        divided by B * L, which is what the per-length means are; gradients reach every ``codes[k]``.
        """
        u = torch.cat(list(codes), 1)
        t = u.tanh()
        centers = torch.cat([loss.centers for loss in losses], 1).to(u.dtype)
        tie_break = torch.cat([loss.tie_break for loss in losses]).to(u.dtype)
        target = label_to_center(y.to(u.dtype), centers, tie_break)
        widths = [loss.code_length for loss in losses]
        lams = {loss.lam for loss in losses}
        lam = lams.pop() if len(lams) == 1 else torch.cat([u.new_full((n,), loss.lam) for n, loss in
                                                             zip(widths, losses)])
        column_sums = (_centre_bce(t, target) + lam * (t.abs() - 1).pow(2)).sum(0)
        sums = torch.stack([part.sum() for part in column_sums.split(widths)])
        return sums / torch.tensor(widths, dtype=u.dtype, device=u.device).mul_(u.shape[0])


def _centre_bce(t: Tensor, target: Tensor) -> Tensor:
    """Elementwise ``F.binary_cross_entropy((t + 1) / 2, (target + 1) / 2)`` for ±1 ``target``.

    With a 0/1 target, BCE is -log of the probability given to the target bit, (1 + target * t) / 2:
    one log instead of the general kernel's two, and no cancellation in 1 - (t + 1) / 2. The
    probability is floored at the smallest normal float, so an exactly saturated wrong bit
    (tanh = ∓1) costs about 87.3 (float32) where PyTorch's BCE clamps the log at -100; its
    gradient with respect to ``u`` is 0 either way.
    """
    probability = (1 + target * t) * 0.5
    return probability.clamp_min(torch.finfo(t.dtype).tiny).log().neg()
