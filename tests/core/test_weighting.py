import itertools

import pytest
import torch
from torch import nn

from nhllib.core.nested import NestedHashLayer
from nhllib.core.weighting import (ConflictAware, Static, Uniform, WeightingState, conflict_weights,
                                   weights_from_alpha)

LENGTHS = (4, 8, 16)


def rule_oracle(grads, lengths, beta=1.0, threshold_norm="own"):
    """docs/method.md §2.3 step by step with Python floats over flattened row-major gradients."""
    k = len(lengths)
    flat = [g.flatten().tolist() for g in grads]
    width = grads[0].shape[1]
    alpha = {}
    for s in range(k - 1):
        n = lengths[s] * width
        ref = flat[s][:n] if threshold_norm == "own" else flat[0][:n]
        tau = beta * sum(v * v for v in ref) / (k - 1)
        for l in range(s + 1, k):
            dot = sum(a * b for a, b in zip(flat[s][:n], flat[l][:n]))
            alpha[s, l] = tau / -dot if dot < 0 and -dot > tau else 1.0
    for s in range(k):
        for l in range(s + 2, k):
            alpha[s, l] = min(alpha[s, l], alpha[s, s + 1])
    raw = [1.0] + [float(torch.tensor([alpha[s, l] for s in range(l)]).prod()) for l in range(1, k)]
    return [k * w / sum(raw) for w in raw]


def masked(grad, rows):
    out = torch.zeros_like(grad)
    out[:rows] = grad[:rows]
    return out


def make_grads(seed, conflict_scale):
    """Per-length gradients shaped like the real ones (length k touches only its first L_k rows).

    The longer lengths get -conflict_scale × the shortest gradient on the shared rows, so they conflict.
    """
    gen = torch.Generator().manual_seed(seed)
    base = [masked(torch.randn(16, 5, generator=gen), n) for n in LENGTHS]
    return [base[0]] + [g - conflict_scale * masked(base[0], LENGTHS[0]) for g in base[1:]]


@pytest.mark.parametrize("threshold_norm", ["own", "shortest"])
@pytest.mark.parametrize("seed, scale", list(itertools.product(range(4), [0.0, 0.3, 1.0, 3.0])))
def test_matches_oracle(threshold_norm, seed, scale):
    grads = make_grads(seed, scale)
    weights, stats = conflict_weights(grads, LENGTHS, threshold_norm=threshold_norm)
    assert weights == pytest.approx(rule_oracle(grads, LENGTHS, threshold_norm=threshold_norm), rel=1e-5)
    assert float(weights.sum()) == pytest.approx(len(LENGTHS))
    assert not weights.requires_grad


def test_threshold_norms_differ_when_shorter_norms_differ():
    gen = torch.Generator().manual_seed(5)
    g1 = masked(torch.randn(16, 5, generator=gen) * 0.1, 4)  # a weak shortest gradient
    g2 = masked(torch.randn(16, 5, generator=gen) * 5, 8)
    g3 = masked(-0.2 * g2, 8) + masked(torch.randn(16, 5, generator=gen), 16)
    own, _ = conflict_weights([g1, g2, g3], LENGTHS, threshold_norm="own")
    shortest, _ = conflict_weights([g1, g2, g3], LENGTHS, threshold_norm="shortest")
    assert not torch.allclose(own, shortest)
    assert own == pytest.approx(rule_oracle([g1, g2, g3], LENGTHS, threshold_norm="own"), rel=1e-5)
    assert shortest == pytest.approx(rule_oracle([g1, g2, g3], LENGTHS, threshold_norm="shortest"), rel=1e-5)


def test_aligned_gradients_give_all_ones():
    g = torch.randn(16, 5)
    grads = [masked(g, n) for n in LENGTHS]
    weights, stats = conflict_weights(grads, LENGTHS)
    assert torch.equal(weights, torch.ones(3))
    assert not stats.conflict.any()
    assert stats.cosine[0, 1].item() == pytest.approx(1.0, abs=1e-6)


def test_conflicting_longer_length_is_damped():
    g = masked(torch.randn(16, 5), 16)
    grads = [masked(g, 4), masked(g, 8), masked(-g, 16)]  # the 16-bit objective opposes both shorter ones
    weights, stats = conflict_weights(grads, LENGTHS)
    assert weights[2] < weights[1] and weights[2] < weights[0]
    assert bool(stats.conflict[0, 2]) and bool(stats.conflict[1, 2]) and not bool(stats.conflict[0, 1])
    assert stats.alpha[0, 2].item() < 1
    assert float(weights.sum()) == pytest.approx(3.0)
    assert weights[0] == weights.max()


def test_small_conflict_below_threshold_is_not_damped():
    g = masked(torch.randn(16, 5), 4)
    grads = [g, masked(-0.1 * g, 8), masked(-0.1 * g, 16)]
    # -δ = 0.1‖g‖² < τ = ‖g‖²/2: a conflict, but within the shorter code's share
    weights, stats = conflict_weights(grads, LENGTHS)
    assert bool(stats.conflict[0, 1])
    assert torch.allclose(weights, torch.ones(3))


def test_worked_example_from_method_md():
    alpha = torch.ones(5, 5)
    alpha[0, 1:] = torch.tensor([0.5, 1, 0.8, 1])
    alpha[1, 2:] = torch.tensor([1, 0.6, 1])
    alpha[2, 3:] = torch.tensor([1, 1])
    alpha[3, 4] = 0.9
    capped, raw, weights = weights_from_alpha(alpha)
    assert capped[0, 1:].tolist() == pytest.approx([0.5] * 4)
    assert raw.tolist() == pytest.approx([1, 0.5, 0.5, 0.3, 0.45])
    assert weights.tolist() == pytest.approx([1.82, 0.91, 0.91, 0.55, 0.82], abs=0.006)


def test_errors():
    grads = make_grads(0, 1.0)
    with pytest.raises(ValueError, match="threshold_norm"):
        conflict_weights(grads, LENGTHS, threshold_norm="longest")
    with pytest.raises(ValueError, match="one gradient per code length"):
        conflict_weights(grads[:2], LENGTHS)
    with pytest.raises(ValueError, match="shared weight"):
        conflict_weights([g[:8] for g in grads], LENGTHS)
    with pytest.raises(ValueError, match="beta"):
        conflict_weights(grads, LENGTHS, beta=0)
    with pytest.raises(ValueError, match="positive"):
        Static([1.0, -1.0])
    with pytest.raises(ValueError, match="every"):
        ConflictAware(LENGTHS, every=0)


class TinyNested(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.head = NestedHashLayer(5, LENGTHS)

    def forward(self, x):
        return self.head(self.backbone(x))


def objectives_for(model, x, target):
    codes = model(x)
    return torch.stack([((c - target[:, : c.shape[1]]) ** 2).mean() for c in codes])


def test_conflict_aware_matches_detached_feature_gradients_and_leaves_no_grad():
    torch.manual_seed(0)
    model = TinyNested()
    x, target = torch.randn(7, 6), torch.randn(7, 16).sign()
    strategy = ConflictAware(LENGTHS)
    objectives = objectives_for(model, x, target)
    result = strategy(objectives, model.head.shared_weight)
    weights = result.weights
    # no .grad written anywhere: nothing stale can reach the optimizer step
    assert all(p.grad is None for p in model.parameters())
    # oracle: gradients of each objective w.r.t. W with the features detached (the reference's procedure)
    feats = model.backbone(x).detach()
    grads = []
    for k, length in enumerate(LENGTHS):
        model.zero_grad(set_to_none=True)
        code = model.head(feats)[k]
        ((code - target[:, :length]) ** 2).mean().backward()
        grads.append(model.head.shared_weight.grad.clone())
    expected, _ = conflict_weights(grads, LENGTHS)
    assert torch.allclose(weights, expected)
    assert result.stats is not None


def test_monitor_mode_reports_but_applies_ones_and_every():
    torch.manual_seed(0)
    model = TinyNested()
    x, target = torch.randn(7, 6), torch.randn(7, 16).sign()
    monitor = ConflictAware(LENGTHS, apply=False, every=2)
    first = monitor(objectives_for(model, x, target), model.head.shared_weight)
    assert torch.equal(first.weights, torch.ones(3)) and first.stats is not None
    skipped = monitor(objectives_for(model, x, target), model.head.shared_weight, state=first.state)
    assert skipped.stats is None  # skipped step
    assert monitor(objectives_for(model, x, target), model.head.shared_weight, state=skipped.state).stats is not None


def test_conflict_aware_keeps_no_state_between_calls():
    """Every step is a function of its inputs and the state passed in: the same call twice gives the same result,
    and the weights held between statistics steps are those the state carries."""
    torch.manual_seed(0)
    model = TinyNested()
    x, target = torch.randn(7, 6), -torch.randn(7, 16).sign()
    strategy = ConflictAware(LENGTHS, every=3)
    first = strategy(objectives_for(model, x, target), model.head.shared_weight)
    again = strategy(objectives_for(model, x, target), model.head.shared_weight)
    assert again.stats is not None and torch.equal(first.weights, again.weights)  # no hidden call counter
    assert first.state.step == 1 and torch.equal(first.state.weights, first.weights)
    held = WeightingState(step=1, weights=torch.tensor([0.5, 1.0, 1.5]))
    between = strategy(objectives_for(model, x, target), model.head.shared_weight, state=held)
    assert between.stats is None and torch.equal(between.weights, held.weights)
    assert between.state == WeightingState(2, held.weights)


def test_uniform_and_static():
    obj = torch.rand(3, requires_grad=True)
    assert torch.equal(Uniform()(obj, None).weights, torch.ones(3))
    assert Static([2.0, 1.5, 1.0])(obj, None).weights.tolist() == [2.0, 1.5, 1.0]
    with pytest.raises(ValueError, match="3 code lengths"):
        Static([1.0, 1.0])(obj, None)
    with pytest.raises(ValueError, match="shared weight"):
        ConflictAware(LENGTHS)(obj, None)


@pytest.mark.parametrize("distill", [False, True])
def test_one_pass_gradients_equal_per_length_autograd(distill):
    """The fast path (codes + features, one backward) gives the same weights and stats as K passes."""
    from nhllib.core.distill import cascade_distillation

    torch.manual_seed(3)
    model = TinyNested()
    x, target = torch.randn(9, 6), torch.randn(9, 16).sign()
    features = model.backbone(x)
    codes = model.head(features)
    objectives = torch.stack([((c - target[:, : c.shape[1]]) ** 2).mean() for c in codes])
    objectives = objectives * torch.tensor([1.0, -2.0, 0.5])  # make some lengths conflict
    if distill:
        objectives = objectives + torch.cat([cascade_distillation(codes), objectives.new_zeros(1)])
    slow, fast = ConflictAware(LENGTHS), ConflictAware(LENGTHS)
    r_slow = slow(objectives, model.head.shared_weight)
    r_fast = fast(objectives, model.head.shared_weight, codes=codes, features=features)
    assert torch.allclose(r_slow.weights, r_fast.weights, atol=1e-6)
    assert torch.allclose(r_slow.stats.dot, r_fast.stats.dot, rtol=1e-4, atol=1e-7)
    assert torch.allclose(r_slow.stats.alpha, r_fast.stats.alpha, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
