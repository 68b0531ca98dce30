"""Nested targets (issue #9) and the fused per-length losses of the target-based methods (issue #10).

Oracles: Sylvester-Hadamard rows and Hamming distances written out from their definitions, the
issue's own statement of the C = 10 CSQ centres, and one loss call per length for the fused path.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from nhllib.core.losses import HashLoss, build_loss, build_losses, per_length_losses
from nhllib.core.losses import compare_targets
from nhllib.core.losses.centers import csq_centers, make_generator, max_min_distance_centers
from nhllib.core.losses.nested_targets import (extend_max_min, nested_hadamard_centers,
                                               target_distances)
from nhllib.core.nested import NestedHashLayer, SeparateHashHeads

TARGET_LOSSES = ("csq", "dpn", "mdsh", "shcir")
LENGTHS = (8, 16, 32, 64, 128)


def hadamard(order: int) -> list[list[int]]:
    """Sylvester H by its entry formula: H[i][j] = (-1)^popcount(i & j)."""
    return [[(-1) ** bin(i & j).count("1") for j in range(order)] for i in range(order)]


def hamming(a: list[float], b: list[float]) -> int:
    return sum(x != z for x, z in zip(a, b))


def min_distance(rows: list[list[float]]) -> int:
    return min(hamming(a, b) for i, a in enumerate(rows) for b in rows[i + 1:])


def targets_of(losses) -> list[torch.Tensor]:
    return [getattr(loss, type(loss).target_buffer) for loss in losses]


def build(name: str, lengths, num_classes: int, targets: str = "nested", seed: int = 0, **hparams):
    return build_losses(name, lengths, num_classes, 50, nested=True, targets=targets, seed=seed, **hparams)


# ---------------------------------------------------------------- CSQ: the Hadamard assignment

def test_csq_c10_centres_are_the_issue_fix():
    """8 bits: the standard centres; L >= 16: +H_L rows 0..7 and -H_L rows 8, 9 (issue #9)."""
    centres = targets_of(build("csq", LENGTHS, 10))
    assert centres[0].tolist() == (hadamard(8) + [[-x for x in row] for row in hadamard(8)])[:10]
    for length, c in zip(LENGTHS[1:], centres[1:]):
        h = hadamard(length)
        assert c.tolist() == h[:8] + [[-x for x in h[8]], [-x for x in h[9]]]


@pytest.mark.parametrize("num_classes, lengths", [
    (10, LENGTHS), (16, LENGTHS), (3, (4, 16, 64)), (8, (4, 8)), (4, (2, 8, 32)), (1, (8, 16)), (64, (32, 64, 128))])
def test_hadamard_assignment_keeps_csq_guarantees(num_classes, lengths):
    """Prefixes, rows of [H_L; -H_L] at every length, the independent distance matrix, standard shortest."""
    longest = nested_hadamard_centers(num_classes, lengths)
    assert longest is not None
    for seed_offset, length in enumerate(lengths):
        centres = longest[:, :length]
        h = hadamard(length)
        allowed = h + [[-x for x in row] for row in h]
        assert all(row in allowed for row in centres.tolist())
        independent = csq_centers(num_classes, length, make_generator(seed_offset)).tolist()
        got = centres.tolist()
        distances = [[hamming(a, b) for b in got] for a in got]
        assert distances == [[hamming(a, b) for b in independent] for a in independent]
    assert longest[:, :lengths[0]].tolist() == csq_centers(num_classes, lengths[0], make_generator(0)).tolist()


@pytest.mark.parametrize("num_classes, lengths", [(17, (8, 16)), (10, (12, 24)), (10, (8, 24)), (4, (6, 8))])
def test_no_hadamard_assignment_is_reported_as_none(num_classes, lengths):
    assert nested_hadamard_centers(num_classes, lengths) is None


# ---------------------------------------------------------------- every target-based method, through build_losses

CASES = [(10, LENGTHS), (20, LENGTHS), (10, (12, 24, 40)), (3, (2, 4, 8)), (5, (2, 8, 16))]


# Max-min centres (MDSH, SHCIR) cannot be built where 2^L < C (ValueError), CSQ and DPN then repeat targets.
@pytest.mark.parametrize("name, num_classes, lengths", [
    (name, c, lengths) for name in TARGET_LOSSES for c, lengths in CASES
    if name in ("csq", "dpn") or c <= 2 ** lengths[0]])
def test_nested_targets_are_prefixes_and_distinct(name, num_classes, lengths):
    losses = build(name, lengths, num_classes)
    targets = targets_of(losses)
    for loss, t in zip(losses, targets):
        assert t.shape == (num_classes, loss.code_length) and loss.targets_mode == "nested"
        assert torch.equal(t, targets[-1][:, :loss.code_length])
        assert set(t.unique().tolist()) <= {-1.0, 1.0}
        if 2 ** loss.code_length >= num_classes and (name != "dpn" or math.comb(loss.code_length,
                                                                                 loss.code_length // 2) >= num_classes):
            assert min_distance(t.tolist()) > 0, f"duplicate targets at {loss.code_length} bits"
        if hasattr(loss, "tie_break"):  # multi-label targets are prefixes too
            assert torch.equal(loss.tie_break, losses[-1].tie_break[:loss.code_length])
    if hasattr(losses[0], "tie_break"):
        assert torch.equal(losses[0].tie_break, build_loss(name, lengths[0], num_classes, 50, seed=0).tie_break)


@pytest.mark.parametrize("name", TARGET_LOSSES)
def test_c10_minimum_distances(name):
    """C = 10, 8..128 bits: L/2 at every length (4 at 8 bits, where 10 > 8 Hadamard rows); for the
    Hadamard methods that is also the independent construction's, and DPN's random one never beats it."""
    nested, independent = targets_of(build(name, LENGTHS, 10)), targets_of(build(name, LENGTHS, 10, "independent"))
    assert [min_distance(t.tolist()) for t in nested] == [4, 8, 16, 32, 64]
    table = target_distances(nested, independent)
    assert [row["nested_min"] for row in table] == [4, 8, 16, 32, 64]
    assert [row["independent_min"] for row in table] == [min_distance(t.tolist()) for t in independent]
    assert all(row["nested_distinct"] == 10 for row in table)
    if name != "dpn":
        assert [row["independent_min"] for row in table] == [4, 8, 16, 32, 64]


@pytest.mark.parametrize("p, lengths", [(0.5, (8, 16, 32)), (0.3, (8, 12, 20)), (0.75, (5, 9))])
def test_nested_dpn_targets_keep_the_negative_count_of_every_prefix(p, lengths):
    losses = build("dpn", lengths, 6, p=p)
    for loss in losses:
        assert (loss.targets == -1).sum(dim=1).tolist() == [int(loss.code_length * p)] * 6


def test_max_min_fallback_keeps_the_standard_shortest_centres():
    """C > 2 L_1 has no Hadamard assignment: the shortest length's own centres are extended."""
    for name in ("mdsh", "shcir"):
        centres = targets_of(build(name, (8, 16), 20))
        assert torch.equal(centres[0], max_min_distance_centers(20, 8, make_generator(0)))
    csq = targets_of(build("csq", (8, 16), 20))
    assert torch.equal(csq[0], csq_centers(20, 8, make_generator(0)))


def test_extend_max_min_is_the_greedy_rule():
    """Oracle: each row takes the first candidate with the largest (min, sum) distance to the rows before."""
    g = make_generator(3)
    prefix = torch.randint(0, 2, (6, 5), generator=g).float() * 2 - 1
    candidates = torch.randint(0, 2, (40, 4), generator=g).float() * 2 - 1
    blocks = extend_max_min(prefix, candidates).tolist()
    p, cand = prefix.tolist(), candidates.tolist()
    want = [cand[0]]
    for c in range(1, 6):
        def score(x):
            d = [hamming(p[c], p[b]) + hamming(x, want[b]) for b in range(c)]
            return (min(d), sum(d))
        best = max(range(len(cand)), key=lambda i: (score(cand[i]), -i))
        want.append(cand[best])
    assert blocks == want


# ---------------------------------------------------------------- what must not change

@pytest.mark.parametrize("name", TARGET_LOSSES)
def test_independent_targets_are_the_reference_construction(name):
    nested_model = build(name, LENGTHS, 10, "independent", seed=4)
    for k, (loss, length) in enumerate(zip(nested_model, LENGTHS)):
        alone = build_loss(name, length, 10, 50, seed=4 + k)
        assert loss.targets_mode == "independent"
        assert alone.state_dict().keys() == loss.state_dict().keys()
        assert all(torch.equal(alone.state_dict()[key], loss.state_dict()[key]) for key in alone.state_dict())
    if name == "csq":  # and that construction is the first C rows of [H_L; -H_L], per length
        assert [t.tolist() for t in targets_of(nested_model)] == [
            (hadamard(n) + [[-x for x in row] for row in hadamard(n)])[:10] for n in LENGTHS]


@pytest.mark.parametrize("name", TARGET_LOSSES)
def test_single_length_and_separate_models_are_unchanged(name):
    for lengths, nested in (((32,), True), (LENGTHS, False)):
        losses = build_losses(name, lengths, 10, 50, nested=nested, targets="nested", seed=2)
        for k, (loss, length) in enumerate(zip(losses, lengths)):
            alone = build_loss(name, length, 10, 50, seed=2 + k)
            assert all(torch.equal(alone.state_dict()[key], loss.state_dict()[key]) for key in alone.state_dict())
    one = [build_loss(name, 16, 10, 50)]
    type(one[0]).nest(one, targets="nested")
    assert torch.equal(targets_of(one)[0], targets_of([build_loss(name, 16, 10, 50)])[0])


def test_nested_centres_travel_in_the_state_dict():
    nested = build("dpn", (8, 16), 10)
    fresh = build_losses("dpn", (8, 16), 10, 50, nested=False)
    for source, target in zip(nested, fresh):
        target.load_state_dict(source.state_dict())
        assert torch.equal(target.targets, source.targets)


def test_nest_errors_name_the_problem():
    losses = [build_loss("csq", n, 10, 50) for n in (8, 16)]
    with pytest.raises(ValueError, match="targets must be one of"):
        type(losses[0]).nest(losses, targets="prefix")
    with pytest.raises(ValueError, match="strictly increasing code_length"):
        type(losses[0]).nest(losses[::-1])
    with pytest.raises(TypeError, match="CSQLoss losses only"):
        type(losses[0]).nest([losses[0], build_loss("dpn", 16, 10, 50)])
    with pytest.raises(ValueError, match="num_classes"):
        type(losses[0]).nest([losses[0], build_loss("csq", 16, 11, 50)])
    type(losses[0]).nest(losses)
    with pytest.raises(ValueError, match="already nested"):
        type(losses[0]).nest(losses)
    with pytest.raises(ValueError, match="one p"):
        dpn = [build_loss("dpn", 8, 10, 50, p=0.5), build_loss("dpn", 16, 10, 50, p=0.25)]
        type(dpn[0]).nest(dpn)


def test_nest_logs_and_compare_targets_returns_the_table(caplog):
    with caplog.at_level(logging.INFO, logger="nhllib.core.losses.nested_targets"):
        build("mdsh", LENGTHS, 10)
    assert "MDSH nested targets, C=10: 8 bits: min 4 (independent 4)" in caplog.text
    table = compare_targets("dpn", (8, 16), 10, seed=1)
    assert [row["code_length"] for row in table] == [8, 16]
    independent = targets_of(build("dpn", (8, 16), 10, "independent", seed=1))
    assert [row["independent_min"] for row in table] == [min_distance(t.tolist()) for t in independent]
    assert [row["independent_distinct"] for row in table] == [len({tuple(r) for r in t.tolist()}) for t in independent]
    with pytest.raises(ValueError, match="no per-length targets"):
        compare_targets("dtsh", (8, 16), 10)


# ---------------------------------------------------------------- fused per-length losses

FUSED_LENGTHS = (4, 8, 16)
BATCH = 7


def batch(num_classes: int, multi_label: bool, dtype):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, num_classes, (BATCH,), generator=g)
    y = torch.nn.functional.one_hot(labels, num_classes).to(dtype)
    if multi_label:
        y = ((y + (torch.rand(BATCH, num_classes, generator=g) < 0.4).to(dtype)) > 0).to(dtype)
    return y, torch.arange(BATCH)


@pytest.mark.parametrize("name", TARGET_LOSSES)
def test_target_losses_override_nested_losses(name):
    assert type(build_loss(name, 8, 3, 5)).nested_losses.__func__ is not HashLoss.nested_losses.__func__


@pytest.mark.parametrize("name", TARGET_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("head", ["nested", "separate"])
@pytest.mark.parametrize("targets", ["nested", "independent"])
def test_fused_losses_equal_the_per_length_path(name, dtype, head, targets):
    """Values and the gradients to every code (what the conflict weighting reads) and to the head."""
    torch.manual_seed(0)
    num_classes = 5
    layer = (NestedHashLayer if head == "nested" else SeparateHashHeads)(12, FUSED_LENGTHS).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    features = torch.randn(BATCH, 12, dtype=dtype)
    multi = name in ("csq", "dpn")
    y, index = batch(num_classes, multi, dtype)
    losses = [loss.to(dtype) for loss in build_losses(name, FUSED_LENGTHS, num_classes, BATCH,
                                                        nested=head == "nested", targets=targets)]

    def run(fused):
        codes = layer(features)
        values = per_length_losses(losses, codes, y, index) if fused else torch.stack(
            [loss(u, y, index) for loss, u in zip(losses, codes)])
        weighted = (values * torch.tensor([1.0, 2.0, 3.0], dtype=dtype)).sum()
        grads = torch.autograd.grad(weighted, list(codes) + list(layer.parameters()))
        return values.detach(), grads

    (values, grads), (want, want_grads) = run(True), run(False)
    rtol, atol = (1e-12, 1e-14) if dtype == torch.float64 else (2e-6, 1e-7)
    assert values.dtype == dtype and values.shape == (3,)
    torch.testing.assert_close(values, want, rtol=rtol, atol=atol)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)


# SHCIR's margin m is left out: it shifts every class's logit alike and cancels in the softmax.
@pytest.mark.parametrize("name, hparams", [("csq", "lam"), ("dpn", "m"), ("mdsh", "lam"), ("shcir", "lam")])
def test_fused_losses_take_each_lengths_own_hyper_parameter(name, hparams):
    values = {"lam": [0.5, 0.0, 2.0], "m": [0.5, 1.0, 2.0]}[hparams]
    losses = [build_loss(name, n, 5, BATCH, seed=k, **{hparams: v}).double()
              for k, (n, v) in enumerate(zip(FUSED_LENGTHS, values))]
    longest = torch.randn(BATCH, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    codes = [longest[:, :n] for n in FUSED_LENGTHS]
    y, index = batch(5, False, torch.float64)
    fused = per_length_losses(losses, codes, y, index)
    torch.testing.assert_close(fused, torch.stack([loss(u, y, index) for loss, u in zip(losses, codes)]),
                               rtol=1e-12, atol=1e-14)
