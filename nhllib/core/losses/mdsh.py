"""MDSH: Deep Hashing with Minimal-Distance-Separated Hash Centers, *as released* in NHL.

Wang, Pan, Liu, Lai, Yin, Liu. "Deep Hashing with Minimal-Distance-Separated Hash Centers",
CVPR 2023. Implemented as the NHL reference code runs it (``bit_length/MDSH.py``)::

    z = sqrt(L) * cos(u, c_k)  (B x C);  p = softmax(z)
    loss = -mean_{B x C}[s log p + (1 - s) log(1 - p)] + lam * mean((|u| - 1)^2)

with ``s`` the one-hot label. The reference forces its epoch counter to 0, so the MoCo pair loss
is never active and the momentum key encoder and its bank are pure overhead: MDSH reduces to
"cosine-softmax to fixed centres + quantisation", and that is all this class implements (no pair
loss, no bank, no momentum encoder). ``log(1 - p)`` is computed in log space (same value where the
reference's is finite).

Single-label only (as the reference, which has no centres for multi-label data): a ``y`` row with
more or fewer than one label raises ``ValueError``.

Centres: the reference loads ``tmp_file/MDSH/init_{C}_{L}.npy`` (ADMM / lp-box search; min
Hamming for C=100 was 1, 0 (duplicates), 10, 32, 47 at L=8..128, and L/2, 4 (L=8) or 49 (L=128)
for C=10). Those files are not shipped; we generate seeded centres with
:func:`nhllib.core.losses.centers.max_min_distance_centers`: the ``[H; -H]`` Hadamard rows when
``C <= 2L`` (min distance L/2, matching the C=10 files up to L=64 and beating L=128), else Hadamard
rows plus a greedy farthest-point fill, which avoids the reference's duplicate centres.

Nested models (:meth:`MDSHLoss.nest`, docs/method.md §3): by default every length's centres are the
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


class MDSHLoss(HashLoss):
    """MDSH (as released) loss; ``lam`` weighs the quantisation term (reference 1e-4)."""

    method_name = "MDSH"
    supports_multi_label = False
    #: The buffer holding the per-class targets (``(C, L)``, entries ±1).
    target_buffer: ClassVar[str] = "centers"
    centers: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 lam: float = 1e-4) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        if num_classes < 2:
            raise ValueError(f"MDSH needs num_classes >= 2, got {num_classes}")
        self.lam = check_float("lam", lam, minimum=0.0)
        self.register_buffer("centers", max_min_distance_centers(num_classes, code_length,
                                                                 make_generator(seed)))
        self.targets_mode = "independent"

    @classmethod
    def nest(cls, losses: Sequence[MDSHLoss], *, targets: str = "nested") -> None:
        """Make every length's centres prefixes of the longest length's (see the module docstring);
        ``targets="independent"`` or a single length leaves the losses as built."""
        nest_max_min_losses(cls, losses, targets)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        _single_label_or_raise(y, self.method_name)
        cosines = F.normalize(u) @ F.normalize(self.centers.to(u.dtype)).t()
        return _mdsh_loss(cosines, math.sqrt(self.code_length), y, u, self.lam, Tensor.mean, Tensor.mean)

    @classmethod
    def nested_losses(cls, losses: Sequence[MDSHLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths at once: the ``(K, B, C)`` cosines from one batched product
        (:func:`~nhllib.core.losses.centers.padded_cosines`), one softmax pass, and the quantisation terms
        side by side. Each ``codes[k]`` enters whole, so loss k depends on ``codes[k]`` alone."""
        _single_label_or_raise(y, cls.method_name)
        u = torch.cat(list(codes), 1)
        widths = [loss.code_length for loss in losses]
        scales = u.new_tensor([math.sqrt(n) for n in widths]).view(-1, 1, 1)
        cosines = padded_cosines(codes, [loss.centers for loss in losses])
        lam = per_length_values([loss.lam for loss in losses], None, u)
        return _mdsh_loss(cosines, scales, y, u, lam, lambda terms: terms.mean(dim=(1, 2)),
                          lambda terms: per_length_means(terms, widths))


def _mdsh_loss(cosines: Tensor, scale: float | Tensor, y: Tensor, u: Tensor, lam: float | Tensor,
               mean_scores: Callable[[Tensor], Tensor], mean_bits: Callable[[Tensor], Tensor]) -> Tensor:
    """MDSH's loss from the cosines (..., B, C) between the codes ``u`` and the centres.

    One length: ``cosines`` (B, C), ``u`` (B, L), float ``scale`` and ``lam``, both means ``Tensor.mean``. All
    lengths: ``cosines`` (K, B, C), the codes side by side, ``(K, 1, 1)`` scales and ``(K,)`` or float ``lam``,
    means per length. The caller's means keep each path's own reduction order.
    """
    z = scale * cosines
    s = y.to(u.dtype)
    log_p = z.log_softmax(dim=-1)
    log_not_p = log_one_minus_softmax(z.flatten(0, -2)).view_as(z)
    center_loss = -mean_scores(s * log_p + (1 - s) * log_not_p)
    return center_loss + lam * mean_bits((u.abs() - 1).pow(2))
