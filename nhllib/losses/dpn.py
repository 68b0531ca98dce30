"""DPN: Deep Polarized Network.

Fan, Lin, Wang, Ye. "Deep Polarized Network for Supervised Learning of Accurate Binary Hashing
Codes", IJCAI 2020. Implemented as in the NHL reference code (``bit_length/DPN.py``)::

    loss = mean(max(0, m - u * t_y))

with a seeded random +-1 target per class having exactly ``int(L * p)`` bits at -1 (not Hadamard),
and for a multi-hot ``y`` the sign of the summed targets with zero entries broken by a fixed
seeded random bit vector (as CSQ); for a one-hot ``y`` that rule gives the class target, so no
dataset-name branch is needed.

Deviations from the reference: the reference filled a memory bank it never read (its adaptive
target update and the ternary "-T" variant are never called); we keep no bank. Targets are drawn
once instead of 20 times keeping the last draw (same distribution).
"""

from __future__ import annotations

from torch import Tensor

from .base import HashLoss, check_float
from .centers import dpn_targets, label_to_center, make_generator, random_signs


class DPNLoss(HashLoss):
    """DPN loss; ``m`` is the polarisation margin (reference 1), ``p`` the share of -1 bits (0.5)."""

    method_name = "DPN"
    targets: Tensor
    tie_break: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 m: float = 1.0, p: float = 0.5) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.m = check_float("m", m, strictly_positive=True)
        self.p = check_float("p", p, minimum=0.0)
        if self.p > 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        generator = make_generator(seed)
        self.register_buffer("targets", dpn_targets(num_classes, code_length, self.p, generator))
        self.register_buffer("tie_break", random_signs(code_length, generator))

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        t = label_to_center(y.to(u.dtype), self.targets.to(u.dtype), self.tie_break.to(u.dtype))
        return (self.m - u * t).clamp(min=0).mean()
