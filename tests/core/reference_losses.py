"""The pre-change implementations of the losses reformulated for speed, kept as test oracles.

These are copies of the code as it stood at commit c9a4e60 (before issue 23): DTSH's dense (B, B, B) triplet
tensor and the memory-bank losses' pair terms evaluated elementwise under autograd. They are slow on purpose and
are not used by the library; ``tests/core/test_loss_oracles.py`` checks the current losses' values and gradients
against them in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_similarity(y_a: Tensor, y_b: Tensor) -> Tensor:
    return (y_a @ y_b.t() > 0).to(y_a.dtype)


def logistic_pair_nll(theta: Tensor, s: Tensor) -> Tensor:
    return torch.log1p(torch.exp(-theta.abs())) + theta.clamp(min=0) - s * theta


# ---------------------------------------------------------------- DTSH (nhllib/core/losses/dtsh.py at c9a4e60)

def dtsh_triplet(theta: Tensor, y: Tensor, alpha) -> Tensor:
    """The triplet term from the Gram matrix ``theta`` (B, B) over the dense (B, B, B) triplet tensor."""
    positive = (y @ y.t()) > 0
    negative = ~positive
    t = (theta.unsqueeze(-1) - theta.unsqueeze(-2) - alpha).clamp(min=-100, max=50)
    log_likelihood = -F.softplus(-t)
    mask = positive.unsqueeze(2) & negative.unsqueeze(1)
    per_anchor_sum = (log_likelihood * mask.to(theta.dtype)).sum(dim=(-2, -1))
    count = positive.sum(dim=1) * negative.sum(dim=1)
    valid = (count > 0).to(theta.dtype)
    per_anchor = -per_anchor_sum / count.clamp(min=1).to(theta.dtype)
    return (per_anchor * valid).sum(dim=-1) / valid.sum().clamp(min=1)


def dtsh_loss(u: Tensor, y: Tensor, alpha: float = 5.0, lam: float = 1.0) -> Tensor:
    return dtsh_triplet(u @ u.t(), y, alpha) + lam * (u - u.sign()).pow(2).mean()


# ---------------------------------------------------------------- memory-bank losses (base.py, dhn/dbdh/dsh.py)

def _log_cosh(x: Tensor) -> Tensor:
    ax = x.abs()
    return ax + torch.log1p(torch.exp(-2 * ax)) - math.log(2.0)


def _logistic_terms(inner: Tensor, distance: Tensor | None, similar: Tensor, m) -> Tensor:
    return logistic_pair_nll(0.5 * inner, similar)  # DHN, DBDH


def _contrastive_terms(inner: Tensor, distance: Tensor | None, similar: Tensor, m) -> Tensor:
    return similar / 2 * distance + (1 - similar) / 2 * (m - distance).clamp(min=0)  # DSH


def _balance(u: Tensor, alpha: float, p: int) -> Tensor:
    bit_mean = u.mean(dim=1)
    return alpha * (bit_mean.abs().mean() if p == 1 else bit_mean.pow(2).mean())


# name -> (code transform, elementwise pair terms, code term, needs distances)
BANK_METHODS = {
    "dbdh": (lambda u: u.clamp(min=-1, max=1), _logistic_terms, _balance, False),
    "dhn": (lambda u: u, _logistic_terms, lambda u, alpha, p: alpha * _log_cosh(u.abs() - 1).mean(), False),
    "dsh": (lambda u: u, _contrastive_terms, lambda u, alpha, p: alpha * (1 - u.abs()).abs().mean(), True),
}


def bank_loss(method: str, u: Tensor, y: Tensor, bank_u: Tensor, bank_y: Tensor, *, alpha: float = 0.1,
              m: float | None = None, p: int = 2) -> Tensor:
    """One length's loss against a bank already holding the batch (``pairs="bank"``), as computed at c9a4e60."""
    transform, pair_terms, code_term, needs_distances = BANK_METHODS[method]
    u = transform(u)
    inner = u @ bank_u.t()
    distance = None
    m = 2.0 * u.shape[1] if m is None else m
    if needs_distances:
        distance = (u.pow(2).sum(dim=1, keepdim=True) + bank_u.pow(2).sum(dim=1).unsqueeze(0) - 2 * inner).clamp(min=0)
    similar = pairwise_similarity(y, bank_y).to(u.dtype)
    return pair_terms(inner, distance, similar, m).mean() + code_term(u, alpha, p)

