"""Long-to-short cascade self-distillation (METHOD.md §2.4).

Similarity-preserving (SP) distillation of Tung & Mori (ICCV 2019) between adjacent nested codes: the
(k+1)-th, longer code is the teacher of the k-th. For a batch of continuous codes H (B×L), G = H Hᵀ with each
row L2-normalised; SP(H_s, H_t) = ‖Ĝ_t − Ĝ_s‖_F² / B². The teacher is detached, so only the student path
receives gradient (as in the reference). The reference's unused "preserve" loss is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

__all__ = ["similarity_preserving_loss", "cascade_distillation"]


def _normalised_gram(codes: torch.Tensor) -> torch.Tensor:
    return F.normalize(codes @ codes.T, p=2, dim=1)


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SP loss between a student (B, L_s) and a teacher (B, L_t) batch of continuous codes.

    The teacher is used as given; :func:`cascade_distillation` detaches it.
    """
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student and teacher must be (batch, length) with the same batch size, "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    batch = student.shape[0]
    diff = _normalised_gram(teacher) - _normalised_gram(student)
    return diff.pow(2).sum() / batch**2


def cascade_distillation(codes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return ``D`` of shape (K−1,): ``D[k] = SP(codes[k], stopgrad(codes[k+1]))``.

    ``codes`` are the K continuous codes from shortest to longest (the output of a NestedHashLayer). The full
    NHL objective is Σ_k w_k (ℓ_k + λ D_k) with D_K = 0, over all K lengths (the released code drops ℓ_K;
    see METHOD.md §2.5).
    """
    codes = list(codes)
    if len(codes) < 2:
        raise ValueError(f"cascade_distillation needs at least two code lengths, got {len(codes)}")
    for short, long in zip(codes, codes[1:]):
        if short.shape[1] >= long.shape[1]:
            raise ValueError(
                f"codes must be ordered from shortest to longest, got widths {[c.shape[1] for c in codes]}"
            )
    if len({c.shape[0] for c in codes}) != 1:
        raise ValueError(f"codes must share one batch size, got {[c.shape[0] for c in codes]}")
    # All K Gram matrices in one batched product of the codes, transposed and zero-padded to the longest
    # width (padding adds nothing to u uᵀ). The longest code is only ever a teacher: detached, it stays out
    # of the graph.
    transposed = pad_sequence([c.T for c in codes[:-1]] + [codes[-1].detach().T], batch_first=True)
    grams = F.normalize(transposed.mT @ transposed, p=2, dim=2)
    batch = codes[0].shape[0]
    return (grams[1:].detach() - grams[:-1]).pow(2).sum((1, 2)) / batch**2
