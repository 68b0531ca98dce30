"""Long-to-short cascade self-distillation (docs/method.md §2.4).

Similarity-preserving (SP) distillation of Tung & Mori (ICCV 2019) between adjacent nested codes: the
(k+1)-th, longer code is the teacher of the k-th. For a batch of continuous codes H (B×L), G = H Hᵀ with each
row L2-normalised; SP(H_s, H_t) = ‖Ĝ_t − Ĝ_s‖_F² / B². The teacher is detached, so only the student path
receives gradient (as in the reference). The reference's unused "preserve" loss is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
    see docs/method.md §2.5).
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
    return _Cascade.apply(codes[-1].detach(), *codes[:-1])


_EPS = 1e-12  # F.normalize's floor on a row norm


class _Cascade(torch.autograd.Function):
    """All K-1 SP terms with a hand-written backward: the same values and gradients as the autograd graph
    of :func:`similarity_preserving_loss` per pair (the tests compare them), in a few batched operations.

    Forward: G_k = u_k u_kᵀ, N_k = G_k / max(‖row‖, eps), D_k = ‖N_{k+1} − N_k‖² / B². Backward, with the
    teacher N_{k+1} constant: ∂D_k/∂N_k = −2 (N_{k+1} − N_k) / B²; through the row normalisation
    ∂/∂G = (∂/∂N − N ⟨∂/∂N, N⟩_row) / ‖row‖ (no projection where the floor applies); ∂/∂u_k = (∂G + ∂Gᵀ) u_k.
    Computed in float32 at least, outside autocast, and returned in each code's dtype.
    """

    @staticmethod
    def forward(ctx, teacher: torch.Tensor, *students: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(teacher.dtype, torch.float32)
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            codes = [c.to(dtype) for c in (*students, teacher)]
            grams = torch.stack([c @ c.T for c in codes])
            row_norms = torch.linalg.vector_norm(grams, dim=2, keepdim=True).clamp_min_(_EPS)
            normed = grams / row_norms
            diff = normed[1:] - normed[:-1]
        ctx.save_for_backward(normed, row_norms, diff, *codes[:-1])
        ctx.student_dtypes = [s.dtype for s in students]
        return diff.pow(2).sum((1, 2)) / teacher.shape[0] ** 2

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        normed, row_norms, diff, *students = ctx.saved_tensors
        batch = normed.shape[1]
        d_normed = diff * (grad_out.to(diff.dtype)[:, None, None] * (-2.0 / batch**2))
        student_normed, student_norms = normed[:-1], row_norms[:-1]
        projection = torch.where(student_norms > _EPS, student_normed * (d_normed * student_normed).sum(2, keepdim=True),
                                 0.0)
        d_gram = (d_normed - projection) / student_norms
        d_sym = d_gram + d_gram.mT
        grads = [(d_sym[k] @ u).to(dtype) for k, (u, dtype) in enumerate(zip(students, ctx.student_dtypes))]
        return (None, *grads)
