"""A hashing model: a backbone whose features feed a (nested or separate-heads) hash head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HashingModel"]


class HashingModel(nn.Module):
    """``forward(x)`` returns the list of K continuous codes, shortest first.

    ``head`` is a :class:`~nhllib.nested.NestedHashLayer` (one length is K = 1) or a
    :class:`~nhllib.nested.SeparateHashHeads`; ``backbone`` must expose ``out_features``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        width = getattr(backbone, "out_features", None)
        if width != getattr(head, "in_features", None):
            raise ValueError(
                f"the head expects {getattr(head, 'in_features', None)} features but the backbone gives {width}"
            )
        self.backbone = backbone
        self.head = head

    @property
    def code_lengths(self) -> tuple[int, ...]:
        return self.head.code_lengths

    @property
    def shared_weight(self) -> nn.Parameter | None:
        """The nested layer's shared weight, or None for separate heads."""
        return getattr(self.head, "shared_weight", None)

    @property
    def codes_are_linear(self) -> bool:
        """Whether each code is the head's linear map of the features, h_k = f W[:L_k]ᵀ + b[:L_k].

        Not so with code centring (a BatchNorm over the outputs): the conflict weighting must then take each
        length's gradient of the shared weight by autograd instead of from ∂O_k/∂h_k and the features.
        """
        return not getattr(self.head, "center", False)

    def forward(self, images: torch.Tensor, return_features: bool = False):
        """The K codes; with ``return_features``, ``(codes, features)`` (the weighting needs the features).

        Training goes through ``forward`` (not ``backbone`` and ``head`` separately) so that a
        ``DistributedDataParallel`` wrapper sees every step.
        """
        features = self.backbone(images)
        codes = self.head(features)
        return (codes, features) if return_features else codes
