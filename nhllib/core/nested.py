"""The Nested Hash Layer: one linear map whose output prefixes are the codes of every length.

For code lengths L_1 < ... < L_K the layer holds a single ``Linear(in_features, L_K)``; the L_k-bit
continuous code is the first L_k outputs (weight rows and bias sliced alike), so every shorter code is a
prefix of every longer one (docs/method.md §2.2). There is no activation: each hashing loss applies its own
tanh/clamp/normalisation, as in the reference implementation.

``center=True`` adds code centring: a ``BatchNorm1d(affine=False)`` over the hash outputs, applied in both
heads to every output unit on its own (batch statistics in training, running statistics in eval). It is
per unit, so the nested layer stays prefix-preserving, and a separate model, the nested layer and the
separate heads centre each unit alike. With centring a code is no longer affine in the hash weight, so a
shortcut that assumes ``h_k = f W[:L_k]ᵀ + b`` must differentiate through the normalisation instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nhllib.checks import validate_code_lengths

__all__ = ["NestedHashLayer", "SeparateHashHeads", "validate_code_lengths"]


def _check_in_features(in_features: int) -> int:
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
        raise ValueError(f"in_features must be a positive int (the backbone's out_features), got {in_features!r}")
    return in_features


def _check_center(center: object) -> bool:
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool (centre the codes with BatchNorm1d(affine=False)), got {center!r}")
    return center


def _centring(width: int) -> nn.BatchNorm1d:
    """Per-unit centring and scaling of the codes, no learnt affine part (issue #9: keeps pairwise bank losses
    such as DSH from drifting along one common offset)."""
    return nn.BatchNorm1d(width, affine=False)


def _check_features(features: torch.Tensor, in_features: int, owner: str) -> None:
    if features.ndim != 2 or features.shape[1] != in_features:
        raise ValueError(f"{owner} expects features of shape (batch, {in_features}), got {tuple(features.shape)}")


class NestedHashLayer(nn.Module):
    """One ``Linear(in_features, max(code_lengths))`` emitting K nested continuous codes.

    Parameters
    ----------
    in_features:
        Width of the backbone features (``backbone.out_features``); never hard-coded.
    code_lengths:
        Strictly increasing positive code lengths, e.g. ``(8, 16, 32, 64, 128)``.
    center:
        Centre the codes: a ``BatchNorm1d(max(code_lengths), affine=False)`` after the linear map (``norm``).

    ``forward(x)`` returns a list of K tensors, the k-th of shape ``(B, code_lengths[k])`` and equal to the
    first ``code_lengths[k]`` columns of the longest code. The weight is initialised N(0, 0.01²) and the bias
    to zero, as in the reference.
    """

    def __init__(self, in_features: int, code_lengths: Sequence[int], center: bool = False) -> None:
        super().__init__()
        self.in_features = _check_in_features(in_features)
        self.code_lengths = validate_code_lengths(code_lengths)
        self.center = _check_center(center)
        self.linear = nn.Linear(in_features, self.code_lengths[-1])
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)
        self.norm = _centring(self.code_lengths[-1]) if center else None

    @property
    def shared_weight(self) -> nn.Parameter:
        """The weight matrix shared by all lengths, shape ``(max(code_lengths), in_features)``."""
        return self.linear.weight

    def linear_code_grads(self, features: torch.Tensor, code_grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Map per-length gradients ∂O_k/∂h_k of the codes to ∂O_k/∂z_k of the linear outputs z = f Wᵀ + b.

        Without centring the codes are z's prefixes and the gradients are returned as they are. With centring
        (training mode: batch statistics) h = (z − μ)/σ per unit, whose backward is, per column,
        ∂z = (∂h − mean(∂h) − ĥ·mean(∂h·ĥ))/σ; it is linear in ∂h and never mixes columns, so each length's
        gradient maps on its own prefix. The conflict weighting uses it to get ∂O_k/∂W = (∂O_k/∂z_k)ᵀ f from one
        backward pass.
        """
        if self.norm is None:
            return list(code_grads)
        if not self.training:
            raise ValueError("linear_code_grads of a centred layer needs training mode (batch statistics)")
        with torch.no_grad():
            z = self.linear(features.detach()).float()
            mean, var = z.mean(0), z.var(0, unbiased=False)
            std = (var + self.norm.eps).sqrt()
            normed = (z - mean) / std
        out = []
        for grad in code_grads:
            width = grad.shape[1]
            g, h = grad.float(), normed[:, :width]
            out.append((g - g.mean(0) - h * (g * h).mean(0)) / std[:width])
        return out

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        _check_features(features, self.in_features, "NestedHashLayer")
        longest = self.linear(features)
        if self.norm is not None:
            longest = self.norm(longest)
        return [longest[:, :length] for length in self.code_lengths]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, code_lengths={self.code_lengths}, center={self.center}"


class SeparateHashHeads(nn.Module):
    """K independent, non-nested ``Linear(in_features, L_k)`` heads on one shared backbone.

    The ``heads`` control of the study (the reference's early "RML" variant): it shares the backbone like
    NHL but gives every length its own weights, isolating the effect of nesting. Same initialisation as
    :class:`NestedHashLayer`. It has no single shared weight, so gradient-conflict statistics do not apply.
    ``center=True`` gives every head its own ``BatchNorm1d(L_k, affine=False)`` (``norms``).
    """

    def __init__(self, in_features: int, code_lengths: Sequence[int], center: bool = False) -> None:
        super().__init__()
        self.in_features = _check_in_features(in_features)
        self.code_lengths = validate_code_lengths(code_lengths)
        self.center = _check_center(center)
        self.heads = nn.ModuleList(nn.Linear(in_features, length) for length in self.code_lengths)
        for head in self.heads:
            nn.init.normal_(head.weight, mean=0.0, std=0.01)
            nn.init.zeros_(head.bias)
        self.norms = nn.ModuleList(_centring(length) for length in self.code_lengths) if center else None

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        _check_features(features, self.in_features, "SeparateHashHeads")
        codes = [head(features) for head in self.heads]
        if self.norms is not None:
            codes = [norm(code) for norm, code in zip(self.norms, codes)]
        return codes

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, code_lengths={self.code_lengths}, center={self.center}"
