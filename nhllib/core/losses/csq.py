"""CSQ: Central Similarity Quantization.

Yuan, Wang, Chen, Feng, Tay, Yan, Feng. "Central Similarity Quantization for Efficient Image and
Video Retrieval", CVPR 2020. Implemented as in the NHL reference code (``bit_length/CSQ.py``)::

    t = tanh(u);  loss = BCE((t + 1) / 2, (c_y + 1) / 2) + lam * mean((|t| - 1)^2)

with the hash centre ``c_y`` of each sample's label: the class centre for a one-hot ``y``, and for
a multi-hot ``y`` the sign of the summed centres with zero entries broken by a fixed seeded random
bit vector (``tie_break``). One formula covers both cases, because for a one-hot row the sign of
the sum is that class's centre; single- versus multi-label is thus read from ``y`` itself, not
from a dataset name as in the reference. Centres: see :func:`nhllib.core.losses.centers.csq_centers`.

Deviations from the reference: any power-of-two length gets Hadamard centres (the reference only
8..128); other lengths get seeded *balanced* random centres (the reference: unbalanced
``sign(uniform)``); a row with no label gets the tie-break vector (the reference's single-label
branch gave it class 0's centre). The BCE of a ±1 target is evaluated as -log((1 + c t) / 2),
the same function without the rounding of 1 - (t + 1) / 2 (see :func:`_centre_bce`).

Nested models (:meth:`CSQLoss.nest`, docs/method.md §3): by default every length's centres are the
prefixes of the longest length's, built by
:func:`~nhllib.core.losses.nested_targets.nested_hadamard_centers`; ``targets="independent"`` keeps the
reference's per-length centres.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from .base import HashLoss, check_float
from .centers import (csq_centers, label_to_center, make_generator, max_min_distance_centers,
                      min_hamming_distance, per_length_means, per_length_values, random_signs)
from .nested_targets import (check_nestable, check_targets_mode, install_nested_targets,
                             nested_max_min_centers, nested_tie_break)

logger = logging.getLogger(__name__)


class CSQLoss(HashLoss):
    """CSQ loss; ``lam`` weighs the quantisation term (reference 1e-4)."""

    method_name = "CSQ"
    #: The buffer holding the per-class targets (``(C, L)``, entries ±1).
    target_buffer: ClassVar[str] = "centers"
    centers: Tensor
    tie_break: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 1e-4) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.lam = check_float("lam", lam, minimum=0.0)
        generator = make_generator(seed)
        self.register_buffer("centers", csq_centers(num_classes, code_length, generator))
        self.register_buffer("tie_break", random_signs(code_length, generator))
        self.targets_mode = "independent"

    @classmethod
    def nest(cls, losses: Sequence[CSQLoss], *, targets: str = "nested") -> None:
        """Make every length's centres (and tie-break bits) prefixes of the longest length's.

        Where every length is a power of two and ``C <= 2 L_1``: the ±Hadamard assignment (every
        length's centres are rows of ``[H_L; -H_L]`` with the independent construction's pairwise
        distances, the shortest length's are the standard ones). Otherwise (logged): the shortest
        length's standard centres (max-min centres instead if those hold duplicates) extended block by
        block to the largest minimum distance (:func:`~nhllib.core.losses.nested_targets.extend_max_min`).
        ``targets="independent"`` or a single length leaves the losses as built.
        """
        check_nestable(losses, cls)
        if check_targets_mode(targets) == "independent" or len(losses) < 2:
            return
        first = losses[0]
        start = first.centers
        if min_hamming_distance(start) == 0 and first.num_classes <= 2 ** min(first.code_length, 62):
            logger.info("CSQ: the standard %d-bit centres of %d classes hold duplicates; nesting from "
                        "max-min centres instead", first.code_length, first.num_classes)
            start = max_min_distance_centers(first.num_classes, first.code_length, make_generator(first.seed))
        longest = nested_max_min_centers(first.num_classes, [loss.code_length for loss in losses],
                                         [loss.seed for loss in losses], first=start)
        install_nested_targets(losses, "centers", longest,
                               tie_break=nested_tie_break([loss.tie_break for loss in losses]))

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return _csq_terms(u, y, self.centers, self.tie_break, self.lam).mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[CSQLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths at once: the codes side by side, per-length centres side by side, one pass.

        Each length's loss is the sum of its columns' BCE + lam * quantisation terms over the batch,
        divided by B * L, which is what the per-length means are. Each ``codes[k]`` enters whole, so
        loss k depends on ``codes[k]`` alone even when the codes are prefixes of one tensor (the
        conflict weighting reads ∂O_k/∂h_k from one backward pass).
        """
        u = torch.cat(list(codes), 1)
        centers = torch.cat([loss.centers for loss in losses], 1)
        tie_break = torch.cat([loss.tie_break for loss in losses])
        widths = [loss.code_length for loss in losses]
        lam = per_length_values([loss.lam for loss in losses], widths, u)
        return per_length_means(_csq_terms(u, y, centers, tie_break, lam), widths)


def _csq_terms(u: Tensor, y: Tensor, centers: Tensor, tie_break: Tensor, lam: float | Tensor) -> Tensor:
    """CSQ's elementwise terms (B, L): the BCE to each sample's centre plus ``lam`` times the quantisation.

    The codes of one length, or of all lengths side by side (their centres, tie-break bits and a per-column
    ``lam`` likewise); the caller takes the mean, over everything or per length.
    """
    t = u.tanh()
    target = label_to_center(y.to(u.dtype), centers.to(u.dtype), tie_break.to(u.dtype))
    return _centre_bce(t, target) + lam * (t.abs() - 1).pow(2)


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
