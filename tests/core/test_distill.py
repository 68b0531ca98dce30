import pytest
import torch

from nhllib.core.distill import cascade_distillation, similarity_preserving_loss


def sp_oracle(student, teacher):
    """SP loss written out element by element from docs/method.md §2.4."""
    b = student.shape[0]

    def normalised_gram(h):
        g = [[float(sum(h[i][a] * h[j][a] for a in range(len(h[0])))) for j in range(b)] for i in range(b)]
        out = []
        for row in g:
            norm = max(sum(v * v for v in row) ** 0.5, 1e-12)
            out.append([v / norm for v in row])
        return out

    gs, gt = normalised_gram(student.tolist()), normalised_gram(teacher.tolist())
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_sp_matches_oracle():
    torch.manual_seed(1)
    s, t = torch.randn(5, 4), torch.randn(5, 8)
    assert similarity_preserving_loss(s, t).item() == pytest.approx(sp_oracle(s, t), rel=1e-5)


def test_cascade_pairs_and_teacher_gets_no_gradient():
    torch.manual_seed(2)
    longest = torch.randn(6, 16, requires_grad=True)
    codes = [longest[:, :4], longest[:, :8], longest[:, :16]]
    d = cascade_distillation(codes)
    assert d.shape == (2,)
    assert d[0].item() == pytest.approx(sp_oracle(codes[0].detach(), codes[1].detach()), rel=1e-5)
    # gradient of D_1 (8 <- 16) reaches only the student's 8 columns, never the teacher's extra columns
    d[1].backward()
    assert torch.count_nonzero(longest.grad[:, 8:]) == 0
    assert torch.count_nonzero(longest.grad[:, :8]) > 0


def test_teacher_detached_even_for_separate_tensors():
    s = torch.randn(4, 4, requires_grad=True)
    t = torch.randn(4, 8, requires_grad=True)
    cascade_distillation([s, t]).sum().backward()
    assert t.grad is None and s.grad is not None


def test_identical_geometry_gives_zero():
    h = torch.randn(5, 8)
    assert cascade_distillation([h[:, :4] * 0 + h[:, :4], torch.cat([h[:, :4], torch.zeros(5, 4)], 1)])[0] < 1e-10


def test_errors():
    with pytest.raises(ValueError, match="at least two"):
        cascade_distillation([torch.randn(3, 4)])
    with pytest.raises(ValueError, match="shortest to longest"):
        cascade_distillation([torch.randn(3, 8), torch.randn(3, 4)])
    with pytest.raises(ValueError, match="same batch size"):
        similarity_preserving_loss(torch.randn(3, 4), torch.randn(4, 8))


@pytest.mark.parametrize("prefixes", [True, False])
def test_cascade_equals_pairwise_sp_with_the_same_gradients(prefixes):
    """The batched form (all Gram matrices in one product) against one SP loss per adjacent pair."""
    torch.manual_seed(3)
    widths = (2, 5, 8, 13)
    longest = torch.randn(7, 13, dtype=torch.float64, requires_grad=True)
    separate = [torch.randn(7, n, dtype=torch.float64, requires_grad=True) for n in widths]
    codes = [longest[:, :n] for n in widths] if prefixes else separate
    leaves = [longest] if prefixes else separate
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    got = cascade_distillation(codes)
    want = torch.stack([similarity_preserving_loss(s, t.detach()) for s, t in zip(codes, codes[1:])])
    assert torch.allclose(got, want, rtol=1e-12)
    got_grads = torch.autograd.grad((weights * got).sum(), leaves, allow_unused=True)
    want_grads = torch.autograd.grad((weights * want).sum(), leaves, allow_unused=True)
    for g, w in zip(got_grads, want_grads):
        assert (g is None and w is None) or torch.allclose(g, w, rtol=1e-10, atol=1e-14)


def test_cascade_backward_with_a_zero_row_and_low_precision_codes():
    """A sample whose codes are all zero (the row-norm floor applies) and bfloat16 codes."""
    torch.manual_seed(4)
    longest = torch.randn(5, 12, dtype=torch.float64)
    longest[2] = 0.0
    longest.requires_grad_(True)
    codes = [longest[:, :n] for n in (3, 6, 12)]
    got = cascade_distillation(codes)
    want = torch.stack([similarity_preserving_loss(s, t.detach()) for s, t in zip(codes, codes[1:])])
    assert torch.allclose(got, want, rtol=1e-12)
    (g,) = torch.autograd.grad(got.sum(), longest)
    (w,) = torch.autograd.grad(want.sum(), longest)
    assert torch.allclose(g, w, rtol=1e-10, atol=1e-14) and torch.isfinite(g).all()
    low = [c.detach().to(torch.bfloat16).requires_grad_(True) for c in codes]
    value = cascade_distillation(low)
    assert value.dtype == torch.float32
    value.sum().backward()
    assert all(c.grad is None for c in low[-1:]) and all(c.grad.dtype == torch.bfloat16 for c in low[:-1])
