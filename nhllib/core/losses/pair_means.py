"""The mean pair term of a memory-bank loss over a (B, num_train) block, with its gradient written out.

Under autograd the elementwise pair term of DHN, DBDH or DSH keeps every intermediate (B, num_train) tensor and
walks back through each (about ten full passes forward, fifteen backward, per length): with a bank of thousands
of rows that costs more than a small CNN's step. These functions compute the same mean with the intermediates
freed, and return the gradient in two or three passes: ``d/dθ [log(1 + e^θ) − sθ] = σ(θ) − s`` and, for the
contrastive term, ``s/2 − (1 − s)/2 · 1[d < m]`` on the distance. Values are computed by the same elementwise
formulas as before; the gradients agree with autograd's to rounding, including its choice at the kinks
(a clamp passes no gradient at its bound, ``|x|`` has none at 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import logistic_pair_nll


class _LogisticPairMean(torch.autograd.Function):
    """``mean(log(1 + e^θ) − s θ)`` for ``θ = scale · inner`` (the pairwise NLL of DHN and DBDH)."""

    @staticmethod
    def forward(ctx, inner: Tensor, similar: Tensor, scale: float) -> Tensor:
        theta = inner * scale
        # log1p(e^{−|θ|}) + max(θ, 0) − sθ, the stable form, in place.
        terms = theta.abs().neg_().exp_().log1p_().add_(theta.clamp(min=0)).sub_(similar * theta)
        ctx.save_for_backward(theta, similar)
        ctx.scale = scale
        return terms.mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        theta, similar = ctx.saved_tensors
        # σ(θ) − s, except at θ = 0, where autograd's pieces (|θ| and the clamp) both pass 0: −s there.
        slope = torch.sigmoid(theta).masked_fill_(theta == 0, 0.0).sub_(similar)
        return slope.mul_(grad * (ctx.scale / theta.numel())), None, None


class _ContrastivePairMean(torch.autograd.Function):
    """``mean(s/2 · d + (1 − s)/2 · max(m − d, 0))`` with ``d = max(|u|² + |U|² − 2 inner, 0)`` (DSH).

    ``s`` is 0 or 1, so each term is ``d/2`` or ``max(m − d, 0)/2``: picked with ``where``, the same value bit for
    bit (halving is exact), in a third of the passes.
    """

    @staticmethod
    def forward(ctx, inner: Tensor, code_squares: Tensor, bank_squares: Tensor, similar: Tensor, m) -> Tensor:
        raw = (code_squares + bank_squares.unsqueeze(0)).sub_(inner, alpha=2)
        distance = raw.clamp(min=0)
        similar = similar.bool()
        terms = torch.where(similar, distance, (m - distance).clamp_(min=0))
        ctx.save_for_backward(raw, similar)
        ctx.m = m
        return terms.sum().div_(2 * terms.numel())

    @staticmethod
    def backward(ctx, grad: Tensor):
        raw, similar = ctx.saved_tensors
        # ∂/∂d = 1/2 for a similar pair, −1/2 · 1[m − d > 0] otherwise; ∂d/∂raw = 1[raw > 0] (no gradient at
        # either clamp's bound).
        half = grad / (2 * raw.numel())
        slope = torch.where(similar, half, torch.where(raw.clamp(min=0) < ctx.m, -half, 0.0))
        slope = slope.masked_fill_(raw <= 0, 0.0)
        grad_inner = slope * -2 if ctx.needs_input_grad[0] else None
        grad_codes = slope.sum(dim=1, keepdim=True) if ctx.needs_input_grad[1] else None
        grad_bank = slope.sum(dim=0) if ctx.needs_input_grad[2] else None
        return grad_inner, grad_codes, grad_bank, None, None


def logistic_pair_mean(inner: Tensor, similar: Tensor, scale: float = 0.5) -> Tensor:
    """``logistic_pair_nll(scale * inner, similar).mean()`` (0-dim) with a hand-written backward."""
    return _LogisticPairMean.apply(inner, similar, scale)


def contrastive_pair_mean(inner: Tensor, code_squares: Tensor, bank_squares: Tensor, similar: Tensor, m) -> Tensor:
    """DSH's mean pair term over a (B, N) block (0-dim) with a hand-written backward.

    ``inner`` (B, N) are the inner products, ``code_squares`` (B, 1) the codes' squared norms, ``bank_squares``
    (N,) the bank rows' squared norms, ``similar`` (B, N) the 0/1 similarities and ``m`` the margin.
    """
    return _ContrastivePairMean.apply(inner, code_squares, bank_squares, similar, m)


class LogisticPairs:
    """The pair terms of the logistic-likelihood bank losses (DHN, DBDH): -log p(s | sigma(theta)), theta = <u, b> / 2,
    per pair and as the batch x bank mean with its written-out gradient. Mixed into a MemoryBankLoss."""

    def _pair_terms(self, inner: Tensor, distance: Tensor | None, similar: Tensor) -> Tensor:
        return logistic_pair_nll(0.5 * inner, similar)

    def _bank_pair_mean(self, inner: Tensor, code_squares: Tensor | None, bank_squares: Tensor | None,
                        similar: Tensor) -> Tensor:
        return logistic_pair_mean(inner, similar, 0.5)
