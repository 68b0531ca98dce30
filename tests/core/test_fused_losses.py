"""Fused nested losses: all lengths of a nested model in one pass equal the per-length losses.

Reference: one independently built loss per length (its own bank), each called on its own code. Fused:
``build_losses(..., nested=True)`` (one shared bank) and :func:`per_length_losses`. Compared: values, the
gradient of every length's loss to every code and to the layer weight, and the bank after several steps
with overlapping indices; float32 and float64; codes of a NestedHashLayer (fused) and of the separate-heads
control (not nested, must take the per-length path). In-batch pairs (``pairs="batch"``) against an oracle
written from the formulas.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nhllib.core.losses import HashLoss, build_loss, build_losses, per_length_losses
from nhllib.core.losses import base as losses_base
from nhllib.core.losses.base import cumulative_products, prefix_products, prefix_views
from nhllib.core.nested import NestedHashLayer, SeparateHashHeads

FUSED = ["dbdh", "dch", "dhn", "dsh", "dtsh", "lcdsh"]
BANK = ["dbdh", "dhn", "dsh"]
LENGTHS = (4, 8, 12, 20)
B, C, N, D = 9, 4, 23, 6
# every method with each pairs mode it has
CASES = [(m, {}) for m in FUSED] + [(m, {"pairs": "batch"}) for m in BANK]
CASE_IDS = [m + ("-batch" if hp else "") for m, hp in CASES]


def _tolerances(dtype):
    # float32: the products are summed chunk by chunk instead of in one dot product; rounding only.
    return {"rtol": 1e-7, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}


def _head(kind: str, dtype) -> nn.Module:
    torch.manual_seed(0)
    head = (NestedHashLayer if kind == "nested" else SeparateHashHeads)(D, LENGTHS).to(dtype)
    for p in head.parameters():  # codes of order 1, so that every branch of every loss is exercised
        nn.init.normal_(p, std=0.6)
    return head


def _batches(dtype, steps: int = 3):
    """Batches whose indices overlap from step to step (rows rewritten, rows kept, rows never seen)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for step in range(steps):
        index = torch.randperm(N, generator=g)[:B] if step else torch.arange(B)
        labels = torch.randint(0, C, (B,), generator=g)
        y = torch.nn.functional.one_hot(labels, C).to(dtype)
        if step == 1:  # one multi-label row
            y[0, (labels[0] + 1) % C] = 1
        out.append((torch.randn(B, D, generator=g, dtype=dtype), y, index))
    return out


def _per_code_grads(values, codes):
    """grads[k][j] = d values[k] / d codes[j], zeros where there is no path."""
    grads = []
    for value in values:
        parts = torch.autograd.grad(value, codes, retain_graph=True, allow_unused=True)
        grads.append([torch.zeros_like(c) if g is None else g for c, g in zip(codes, parts)])
    return grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["nested", "heads"])
@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_fused_equals_per_length(name, hparams, kind, dtype, monkeypatch):
    head = _head(kind, dtype)
    reference = [loss.to(dtype) for loss in build_losses(name, LENGTHS, C, N, nested=False, **hparams)]
    fused = [loss.to(dtype) for loss in build_losses(name, LENGTHS, C, N, nested=kind == "nested", **hparams)]
    per_length_path = HashLoss.__dict__["nested_losses"].__func__
    calls = {"per_length": 0, "products": 0}

    def spy_per_length(cls, *args):
        calls["per_length"] += 1
        return per_length_path(cls, *args)

    real_apply = losses_base._PrefixProducts.apply

    def spy_apply(*args):
        calls["products"] += 1
        return real_apply(*args)

    monkeypatch.setattr(HashLoss, "nested_losses", classmethod(spy_per_length))
    monkeypatch.setattr(losses_base._PrefixProducts, "apply", spy_apply)
    tol = _tolerances(dtype)
    weights = torch.linspace(0.5, 2.0, len(LENGTHS), dtype=dtype)
    for features, y, index in _batches(dtype):
        codes = head(features)
        expected = torch.stack([loss(u, y, index) for loss, u in zip(reference, codes)])
        got = per_length_losses(fused, codes, y, index)
        torch.testing.assert_close(got, expected, **tol)
        for want, have in zip(_per_code_grads(expected, codes), _per_code_grads(got, codes)):
            for w, h in zip(want, have):
                torch.testing.assert_close(h, w, **tol)
        params = list(head.parameters())
        want = torch.autograd.grad((weights * expected).sum(), params, retain_graph=True)
        have = torch.autograd.grad((weights * got).sum(), params)
        for w, h in zip(want, have):
            torch.testing.assert_close(h, w, **tol)
        if hparams.get("pairs", "bank") == "bank" and name in BANK:
            for loss, ref in zip(fused, reference):  # the bank is a copy: equal bit for bit, not to rounding
                assert loss.bank_owner is (fused[-1] if kind == "nested" else loss)
                assert torch.equal(loss.bank_owner.U[:, :ref.code_length], ref.U)
                assert torch.equal(loss.bank_owner.Y, ref.Y)
    if kind == "nested":
        assert calls == {"per_length": 0, "products": 3}, calls
    else:
        assert calls == {"per_length": 3, "products": 0}, calls


@pytest.mark.parametrize(("name", "hparams"), [
    ("dch", {"gamma": [5.0, 10.0, 20.0, 40.0]}), ("dtsh", {"alpha": [1.0, 2.0, 3.0, 5.0]}),
    ("lcdsh", {"lam": [0.5, 1.0, 2.0, 3.0]}), ("dsh", {"m": [3.0, 7.0, 11.0, 13.0]}),
    ("dsh", {"m": [3.0, 7.0, 11.0, 13.0], "pairs": "batch"}),
], ids=["dch-gamma", "dtsh-alpha", "lcdsh-lam", "dsh-m", "dsh-m-batch"])
def test_fused_with_a_hyper_parameter_per_length(name, hparams):
    varying = {k: v for k, v in hparams.items() if isinstance(v, list)}
    fixed = {k: v for k, v in hparams.items() if not isinstance(v, list)}
    losses = [build_loss(name, n, C, N, seed=k, **fixed, **{key: v[k] for key, v in varying.items()}).double()
              for k, n in enumerate(LENGTHS)]
    if name in BANK and fixed.get("pairs", "bank") == "bank":
        type(losses[0]).nest(losses)
    reference = [build_loss(name, n, C, N, seed=k, **fixed, **{key: v[k] for key, v in varying.items()}).double()
                 for k, n in enumerate(LENGTHS)]
    features, y, index = _batches(torch.float64, 1)[0]
    codes = _head("nested", torch.float64)(features)
    expected = torch.stack([loss(u, y, index) for loss, u in zip(reference, codes)])
    torch.testing.assert_close(per_length_losses(losses, codes, y, index), expected, rtol=1e-10, atol=1e-12)


def test_prefix_views_accepts_only_prefix_views_of_one_tensor():
    features = torch.randn(B, D)
    nested = _head("nested", torch.float32)(features)
    assert prefix_views(nested)
    assert prefix_views(nested[1:3])  # any increasing subset of prefixes is still prefixes
    assert not prefix_views(_head("heads", torch.float32)(features))
    assert not prefix_views([u.clone() for u in nested])  # equal values, but not one tensor
    assert not prefix_views(nested[::-1])
    assert not prefix_views(nested[:1])
    longest = nested[-1]
    assert not prefix_views([longest[1:, :4], longest[:, :8]])  # other rows
    assert not prefix_views([longest[:, 1:5], longest[:, :8]])  # not starting at column 0
    assert not prefix_views([longest[:, :8:2], longest[:, :8]])  # other strides
    assert not prefix_views([longest[:, :4], longest[:, :4]])  # widths must increase


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "bank"])
def test_prefix_products_values_and_per_code_gradients(gram):
    torch.manual_seed(3)
    longest = torch.randn(B, LENGTHS[-1], dtype=torch.float64, requires_grad=True)
    codes = [longest[:, :n] for n in LENGTHS]
    other = None if gram else torch.randn(N, LENGTHS[-1] + 3, dtype=torch.float64)
    got = torch.stack(prefix_products(codes, other))
    expected = torch.stack([u @ (u if gram else other[:, :u.shape[1]]).t() for u in codes])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(got)
    outputs = prefix_products(codes, other)
    for k in range(len(LENGTHS)):
        want = torch.autograd.grad((probe[k] * expected[k]).sum(), codes, retain_graph=True, allow_unused=True)
        have = torch.autograd.grad((probe[k] * outputs[k]).sum(), codes, retain_graph=True, allow_unused=True)
        for j, (w, h) in enumerate(zip(want, have)):
            if j != k:  # out[k] reaches codes[k] only
                assert all(g is None or not g.any() for g in (w, h))
            else:
                torch.testing.assert_close(h, w, rtol=1e-12, atol=1e-12)
    signs = longest.detach().sign()
    assert torch.equal(cumulative_products(signs, signs, LENGTHS),
                       torch.stack([signs[:, :n] @ signs[:, :n].t() for n in LENGTHS]))


@pytest.mark.parametrize("name", BANK)
def test_nest_keeps_one_bank_at_the_longest_length(name):
    losses = build_losses(name, LENGTHS, C, N, nested=True)
    owner = losses[-1]
    assert owner.U.shape == (N, LENGTHS[-1]) and owner.Y.shape == (N, C)
    for loss in losses[:-1]:
        assert loss.U is None and loss.Y is None and loss.bank_owner is owner
        assert "U" not in loss.state_dict()
    separate = build_losses(name, LENGTHS, C, N, nested=False)
    assert all(loss.bank_owner is loss and loss.U.shape == (N, loss.code_length) for loss in separate)
    batch = build_losses(name, LENGTHS, C, N, nested=True, pairs="batch")
    assert all(loss.U is None and loss.bank_owner is loss for loss in batch)


@pytest.mark.parametrize("name", BANK)
def test_shared_bank_called_length_by_length_equals_separate_banks(name):
    """Codes that are prefixes in value but not views (copies) take the per-length path; each length
    writes its own columns of the shared bank, which then matches K separate banks."""
    nested = [loss.double() for loss in build_losses(name, LENGTHS, C, N, nested=True)]
    separate = [loss.double() for loss in build_losses(name, LENGTHS, C, N, nested=False)]
    head = _head("nested", torch.float64)
    for features, y, index in _batches(torch.float64):
        codes = [u.detach().clone() for u in head(features)]
        assert not prefix_views(codes)
        got = per_length_losses(nested, codes, y, index)
        expected = torch.stack([loss(u, y, index) for loss, u in zip(separate, codes)])
        assert torch.equal(got, expected)
    for loss in separate:
        assert torch.equal(nested[-1].U[:, :loss.code_length], loss.U) and torch.equal(nested[-1].Y, loss.Y)


@pytest.mark.parametrize("name", BANK)
def test_fused_eval_mode_leaves_the_bank_alone(name):
    losses = build_losses(name, LENGTHS, C, N, nested=True)
    for loss in losses:
        loss.eval()
    features, y, index = _batches(torch.float32, 1)[0]
    per_length_losses(losses, _head("nested", torch.float32)(features), y, index)
    assert not losses[-1].U.any() and not losses[-1].Y.any()


def test_pairs_must_be_bank_or_batch():
    with pytest.raises(ValueError, match="pairs must be one of"):
        build_loss("dsh", 8, C, N, pairs="all")


# ---------------------------------------------------------------- in-batch pairs against the formulas

def _oracle_batch(name, loss, u, y):
    """The loss with in-batch pairs, from the formulas: mean over pairs i < j + the per-code term."""
    rows = [list(map(float, r)) for r in (u.clamp(-1, 1) if name == "dbdh" else u)]
    labels = [list(map(float, r)) for r in y]
    terms = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            similar = float(sum(a * b for a, b in zip(labels[i], labels[j])) > 0)
            if name == "dsh":
                dist = sum((a - b) ** 2 for a, b in zip(rows[i], rows[j]))
                terms.append(similar / 2 * dist + (1 - similar) / 2 * max(loss.m - dist, 0.0))
            else:
                theta = sum(a * b for a, b in zip(rows[i], rows[j])) / 2
                terms.append(math.log1p(math.exp(theta)) - similar * theta)
    pair = sum(terms) / len(terms) if terms else 0.0
    flat = [x for r in rows for x in r]
    if name == "dsh":
        code = sum(abs(1 - abs(x)) for x in flat) / len(flat)
    elif name == "dhn":
        code = sum(math.log(math.cosh(abs(x) - 1)) for x in flat) / len(flat)
    else:
        code = sum((sum(r) / len(r)) ** 2 for r in rows) / len(rows)
    return pair + loss.alpha * code


@pytest.mark.parametrize("batch", [B, 2, 1])
@pytest.mark.parametrize("name", BANK)
def test_in_batch_pairs_match_the_formulas(name, batch):
    loss = build_loss(name, 8, C, N, pairs="batch").double()
    torch.manual_seed(4)
    u = (torch.randn(batch, 8, dtype=torch.float64) * 1.5).requires_grad_(True)
    y = torch.nn.functional.one_hot(torch.arange(batch) % 3, C).double()
    y[0, 3] = 1.0
    index = torch.arange(batch)
    value = loss(u, y, index)
    assert value.item() == pytest.approx(_oracle_batch(name, loss, u.detach(), y), rel=1e-12, abs=1e-12)
    (grad,) = torch.autograd.grad(value, u)
    assert torch.isfinite(grad).all()
    assert not loss.state_dict()  # no bank at all


@pytest.mark.parametrize("name", BANK)
def test_a_shorter_length_writes_only_its_own_columns_of_the_shared_bank(name):
    losses = build_losses(name, LENGTHS, C, N, nested=True)
    head = _head("nested", torch.float32)
    (features, y, index), (features2, y2, _) = _batches(torch.float32, 2)
    per_length_losses(losses, head(features), y, index)
    before = losses[-1].U.clone()
    short = head(features2)[0].detach()
    losses[0](short, y2, index)
    width = LENGTHS[0]
    written = short.clamp(-1, 1) if name == "dbdh" else short
    assert torch.equal(losses[-1].U[index, :width], written)
    assert torch.equal(losses[-1].U[:, width:], before[:, width:])  # the longer lengths' columns are theirs
    assert torch.equal(losses[-1].Y[index], y2)
