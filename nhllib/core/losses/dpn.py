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

Nested models (:meth:`DPNLoss.nest`, docs/method.md §3): independent random targets agree on only
about half of the prefix bits, so by default every length's targets are the prefixes of the longest
length's, built block by block with exactly ``int(L_k * p)`` bits at -1 in every prefix and the
blocks chosen (from seeded random candidates) to keep the targets of every prefix far apart;
``targets="independent"`` keeps the per-length random draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from .base import HashLoss, check_float
from .centers import dpn_targets, label_to_center, make_generator, per_length_means, per_length_values, random_signs
from .nested_targets import (check_nestable, check_targets_mode, install_nested_targets, nested_tie_break,
                             nested_weighted_codes)


class DPNLoss(HashLoss):
    """DPN loss; ``m`` is the polarisation margin (reference 1), ``p`` the share of -1 bits (0.5)."""

    method_name = "DPN"
    #: The buffer holding the per-class targets (``(C, L)``, entries ±1).
    target_buffer: ClassVar[str] = "targets"
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
        self.targets_mode = "independent"

    @classmethod
    def nest(cls, losses: Sequence[DPNLoss], *, targets: str = "nested") -> None:
        """Make every length's targets (and tie-break bits) prefixes of the longest length's.

        Built by :func:`~nhllib.core.losses.nested_targets.nested_weighted_codes`: every prefix L_k keeps
        DPN's exactly ``int(L_k * p)`` bits at -1, and each block maximises the minimum distance of the
        extended targets, so every prefix's targets are distinct wherever enough such codes exist.
        ``targets="independent"`` or a single length leaves the losses as built.
        """
        check_nestable(losses, cls)
        if check_targets_mode(targets) == "independent" or len(losses) < 2:
            return
        if len({loss.p for loss in losses}) > 1:
            raise ValueError(f"nested DPN targets need one p for every length, got {[loss.p for loss in losses]}")
        longest = nested_weighted_codes(losses[0].num_classes, [loss.code_length for loss in losses],
                                        losses[0].p, [loss.seed for loss in losses])
        install_nested_targets(losses, "targets", longest,
                               tie_break=nested_tie_break([loss.tie_break for loss in losses]))

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return _hinge_terms(u, y, self.targets, self.tie_break, self.m).mean()

    @classmethod
    def nested_losses(cls, losses: Sequence[DPNLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths at once: codes, targets and margins side by side, one hinge, per-length means.

        Each ``codes[k]`` enters whole, so loss k depends on ``codes[k]`` alone (as in CSQ).
        """
        u = torch.cat(list(codes), 1)
        targets = torch.cat([loss.targets for loss in losses], 1)
        tie_break = torch.cat([loss.tie_break for loss in losses])
        widths = [loss.code_length for loss in losses]
        m = per_length_values([loss.m for loss in losses], widths, u)
        return per_length_means(_hinge_terms(u, y, targets, tie_break, m), widths)


def _hinge_terms(u: Tensor, y: Tensor, targets: Tensor, tie_break: Tensor, m: float | Tensor) -> Tensor:
    """DPN's elementwise hinge terms (B, L) ``max(0, m - u * t_y)``.

    The codes of one length, or of all lengths side by side (their targets, tie-break bits and a per-column
    margin ``m`` likewise); the caller takes the mean, over everything or per length.
    """
    t = label_to_center(y.to(u.dtype), targets.to(u.dtype), tie_break.to(u.dtype))
    return (m - u * t).clamp(min=0)
