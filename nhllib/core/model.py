"""A hashing model: a backbone whose features feed a (nested or separate-heads) hash head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HashingModel"]


class HashingModel(nn.Module):
    """``forward(x)`` returns the list of K continuous codes, shortest first.

    ``head`` is a :class:`~nhllib.core.nested.NestedHashLayer` (one length is K = 1) or a
    :class:`~nhllib.core.nested.SeparateHashHeads`; ``backbone`` must expose ``out_features``.
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

    def linear_code_grads(self, features: torch.Tensor):
        """A map from ∂O_k/∂h_k to ∂O_k/∂z_k (z = the head's linear outputs) for this batch's features, or None
        when the codes are the linear outputs (no centring) or there is no shared linear map (separate heads).
        See NestedHashLayer.linear_code_grads."""
        head_map = getattr(self.head, "linear_code_grads", None)
        if head_map is None or not getattr(self.head, "center", False):
            return None  # the codes are the linear outputs themselves (or there is no shared linear map)
        return lambda code_grads: head_map(features, code_grads)

    def forward(self, images: torch.Tensor, return_features: bool = False):
        """The K codes; with ``return_features``, ``(codes, features)`` (the weighting needs the features).

        Training goes through ``forward`` (not ``backbone`` and ``head`` separately) so that a
        ``DistributedDataParallel`` wrapper sees every step.
        """
        features = self.backbone(images)
        codes = self.head(features)
        return (codes, features) if return_features else codes
