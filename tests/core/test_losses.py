"""Tests of nhllib.core.losses: loop oracles from docs/method.md §3, the shared contract, centres, errors.

Oracles are plain Python loops over samples, pairs and triplets on tiny seeded inputs (B=6, L=8,
C=3, num_train=10), written from the formulas, not from the vectorised code. Centres and target
vectors are read from the loss object (they are state, tested separately below).
"""

from __future__ import annotations

import math

import pytest
import torch

from nhllib.core.losses import LOSSES, MemoryBankLoss, build_loss, loss_hparams
from nhllib.core.losses.centers import (csq_centers, dpn_targets, label_to_center, make_generator,
                                        max_min_distance_centers, min_hamming_distance,
                                        sylvester_hadamard)

B, L, C, N = 6, 8, 3, 10
INDEX = torch.tensor([0, 2, 3, 5, 7, 9])
SINGLE = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1.]])
# row 4 shares a label with every row (no negative: an invalid DTSH anchor)
MULTI = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 1, 1.]])
ONE_CLASS = torch.tensor([[0, 1, 0]] * B, dtype=torch.float32)
BANK_LOSSES = sorted(n for n, cls in LOSSES.items() if issubclass(cls, MemoryBankLoss))
SINGLE_ONLY = sorted(n for n, cls in LOSSES.items() if not cls.supports_multi_label)


def codes(seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, generator=g) * scale).requires_grad_(True)


def close(value: torch.Tensor, expected: float) -> bool:
    """Oracle comparisons run the loss in float64, so float32 rounding cannot hide a real error."""
    assert value.dtype == torch.float64
    return bool(torch.isclose(value.detach(), torch.tensor(expected, dtype=torch.float64),
                              rtol=1e-9, atol=1e-12))


# ---------------------------------------------------------------- plain-Python helpers

def dot(a, b):
    return sum(x * z for x, z in zip(a, b))


def norm(a):
    return math.sqrt(dot(a, a))


def sign(x):
    return (x > 0) - (x < 0)


def similar(a, b):
    return dot(a, b) > 0


def quant_sq(u):  # mean over all entries of (|u| - 1)^2
    return sum((abs(x) - 1) ** 2 for row in u for x in row) / (len(u) * len(u[0]))


def target_code(y_row, centers, tie_break):
    out = []
    for k in range(len(tie_break)):
        total = sum(y_row[c] * centers[c][k] for c in range(len(centers)))
        out.append(1.0 if total > 0 else -1.0 if total < 0 else tie_break[k])
    return out


# ---------------------------------------------------------------- oracles (docs/method.md §3)

def oracle_csq(loss, u, y, bank):
    centers, tie = loss.centers.tolist(), loss.tie_break.tolist()
    bce, q, n = 0.0, 0.0, len(u) * len(u[0])
    for i, row in enumerate(u):
        c = target_code(y[i], centers, tie)
        for k, x in enumerate(row):
            t = math.tanh(x)
            p, target = (t + 1) / 2, (c[k] + 1) / 2
            bce -= target * math.log(p) + (1 - target) * math.log(1 - p)
            q += (abs(t) - 1) ** 2
    return bce / n + loss.lam * q / n


def bank_step(bank, u, y, index):
    """Write the batch into the oracle bank (rows by dataset index), as the reference does."""
    for i, j in enumerate(index):
        bank["U"][j] = list(u[i])
        bank["Y"][j] = list(y[i])


def bank_pair_nll(u, y, bank):
    """Sum over batch rows i and bank rows j of log(1 + e^θ) - s θ, θ = <u_i, U_j> / 2 (DBDH, DHN)."""
    total = 0.0
    for i in range(len(u)):
        for j in range(N):
            theta = 0.5 * dot(u[i], bank["U"][j])
            s = 1.0 if similar(y[i], bank["Y"][j]) else 0.0
            total += math.log(1 + math.exp(theta)) - s * theta
    return total


def oracle_dbdh(loss, u, y, bank):
    u = [[min(max(x, -1.0), 1.0) for x in row] for row in u]
    bank_step(bank, u, y, bank["index"])
    total = bank_pair_nll(u, y, bank)
    balance = sum(abs(sum(row) / len(row)) ** loss.p for row in u) / len(u)
    return total / (len(u) * N) + loss.alpha * balance


def oracle_dhn(loss, u, y, bank):
    bank_step(bank, u, y, bank["index"])
    total = bank_pair_nll(u, y, bank)
    q = sum(math.log(math.cosh(abs(x) - 1)) for row in u for x in row) / (len(u) * L)
    return total / (len(u) * N) + loss.alpha * q


def oracle_dsh(loss, u, y, bank):
    bank_step(bank, u, y, bank["index"])
    total = 0.0
    for i in range(len(u)):
        for j in range(N):
            dist = sum((a - b) ** 2 for a, b in zip(u[i], bank["U"][j]))
            if similar(y[i], bank["Y"][j]):
                total += dist / 2
            else:
                total += max(loss.m - dist, 0.0) / 2
    q = sum(abs(1 - abs(x)) for row in u for x in row) / (len(u) * L)
    return total / (len(u) * N) + loss.alpha * q


def oracle_dch(loss, u, y, bank):
    n = len(u)

    def d(a, b):
        cos = dot(a, b) / max(norm(a) * norm(b), 1e-4)
        return (1 - min(cos, 0.99)) * L / 2

    s = [[1.0 if similar(y[i], y[j]) else 0.0 for j in range(n)] for i in range(n)]
    n_sim = sum(map(sum, s))
    n_dis = n * n - n_sim
    total = 0.0
    for i in range(n):
        for j in range(n):
            if n_sim and n_dis:
                w = n * n / n_sim if s[i][j] else n * n / n_dis
            else:
                w = 1.0
            dij = d(u[i], u[j])
            total += w * (s[i][j] * math.log(dij / loss.gamma) + math.log(1 + loss.gamma / dij))
    q = sum(math.log(1 + d([abs(x) for x in row], [1.0] * L) / loss.gamma) for row in u) / n
    return total / (n * n) + loss.lam * q


def oracle_dpn(loss, u, y, bank):
    targets, tie = loss.targets.tolist(), loss.tie_break.tolist()
    total = 0.0
    for i, row in enumerate(u):
        t = target_code(y[i], targets, tie)
        total += sum(max(0.0, loss.m - x * tk) for x, tk in zip(row, t))
    return total / (len(u) * L)


def oracle_dtsh(loss, u, y, bank):
    n = len(u)
    theta = [[dot(u[i], u[j]) for j in range(n)] for i in range(n)]
    anchors = []
    for i in range(n):
        pos = [j for j in range(n) if similar(y[i], y[j])]
        neg = [k for k in range(n) if not similar(y[i], y[k])]
        if not pos or not neg:
            continue
        terms = []
        for j in pos:
            for k in neg:
                t = min(max(theta[i][j] - theta[i][k] - loss.alpha, -100.0), 50.0)
                terms.append(-(t - math.log(1 + math.exp(t))))
        anchors.append(sum(terms) / len(terms))
    triplet = sum(anchors) / len(anchors) if anchors else 0.0
    q = sum((x - sign(x)) ** 2 for row in u for x in row) / (n * L)
    return triplet + loss.lam * q


def oracle_lcdsh(loss, u, y, bank):
    n = len(u)
    l1 = l2 = 0.0
    for i in range(n):
        for j in range(n):
            s = 1.0 if similar(y[i], y[j]) else -1.0
            theta = min(max(0.5 * dot(u[i], u[j]), -50.0), 50.0)
            theta_b = 0.5 * dot([sign(x) for x in u[i]], [sign(x) for x in u[j]])
            l1 += math.log(1 + math.exp(-s * theta))
            l2 += (1 / (1 + math.exp(-theta)) - 1 / (1 + math.exp(-theta_b))) ** 2
    return l1 / (n * n) + loss.lam * l2 / (n * n)


def cosine_logits(u_row, centers, margin=0.0):
    return [math.sqrt(L) * (dot(u_row, c) / (norm(u_row) * norm(c)) - margin) for c in centers]


def oracle_mdsh(loss, u, y, bank):
    centers = loss.centers.tolist()
    total = 0.0
    for i, row in enumerate(u):
        z = cosine_logits(row, centers)
        den = sum(math.exp(v) for v in z)
        for c in range(C):
            p = math.exp(z[c]) / den
            total += y[i][c] * math.log(p) + (1 - y[i][c]) * math.log(1 - p)
    return -total / (len(u) * C) + loss.lam * quant_sq(u)


def oracle_shcir(loss, u, y, bank):
    centers = loss.centers.tolist()
    total = 0.0
    for i, row in enumerate(u):
        e = [math.exp(v) for v in cosine_logits(row, centers, loss.m)]
        pos = y[i].index(1.0)
        den = sum(e)
        total += math.log(e[pos] / den)
        total += sum(math.log(1 - e[k] / den) for k in range(C) if k != pos) / (C - 1)
    return -total / len(u) + loss.lam * quant_sq(u)


ORACLES = {"csq": oracle_csq, "dbdh": oracle_dbdh, "dch": oracle_dch, "dhn": oracle_dhn,
           "dpn": oracle_dpn, "dsh": oracle_dsh, "dtsh": oracle_dtsh, "lcdsh": oracle_lcdsh,
           "mdsh": oracle_mdsh, "shcir": oracle_shcir}


def label_sets(name):
    sets = {"single": SINGLE, "one_class": ONE_CLASS}
    if LOSSES[name].supports_multi_label:
        sets["multi"] = MULTI
    return sets


ORACLE_CASES = [(n, k) for n in sorted(LOSSES) for k in label_sets(n)]


def test_every_loss_has_an_oracle():
    assert set(ORACLES) == set(LOSSES)


@pytest.mark.parametrize("name,labels", ORACLE_CASES)
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_matches_loop_oracle(name, labels, scale):
    y = label_sets(name)[labels].double()
    loss = build_loss(name, L, C, N, seed=3).double()
    u = codes(seed=1, scale=scale).double()
    bank = {"U": [[0.0] * L for _ in range(N)], "Y": [[0.0] * C for _ in range(N)],
            "index": INDEX.tolist()}
    expected = ORACLES[name](loss, u.tolist(), y.tolist(), bank)
    assert close(loss(u, y, INDEX), expected)


@pytest.mark.parametrize("name", BANK_LOSSES)
def test_bank_persists_across_batches(name):
    """Second batch sees the first batch's rows, its own rows (overwritten) and zero rows."""
    loss = build_loss(name, L, C, N).double()
    bank = {"U": [[0.0] * L for _ in range(N)], "Y": [[0.0] * C for _ in range(N)]}
    first_index, second_index = INDEX, torch.tensor([1, 2, 4, 5, 6, 9])
    u1, u2 = codes(seed=4).double(), codes(seed=5, scale=2.0).double()
    bank["index"] = first_index.tolist()
    expected1 = ORACLES[name](loss, u1.tolist(), MULTI.tolist(), bank)
    assert close(loss(u1, MULTI.double(), first_index), expected1)
    bank["index"] = second_index.tolist()
    expected2 = ORACLES[name](loss, u2.tolist(), SINGLE.tolist(), bank)
    assert close(loss(u2, SINGLE.double(), second_index), expected2)
    # rows 0, 3, 7 still hold the first batch; rows 8 stays zero
    assert torch.equal(loss.Y[7], MULTI[4].double()) and not loss.U[8].any() and not loss.Y[8].any()


# ---------------------------------------------------------------- contract over the registry

@pytest.mark.parametrize("name", sorted(LOSSES))
def test_scalar_finite_and_gradient_reaches_u(name):
    loss = build_loss(name, L, C, N)
    u = codes(seed=2)
    value = loss(u, SINGLE, INDEX)
    assert value.dim() == 0 and torch.isfinite(value)
    (grad,) = torch.autograd.grad(value, u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nothing_to_learn_batch_still_backprops(name):
    """One class only: no dissimilar pair (DCH, LCDSH), no valid DTSH anchor."""
    loss = build_loss(name, L, C, N)
    u = codes(seed=6)
    value = loss(u, ONE_CLASS, INDEX)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad
    value.backward()
    assert torch.isfinite(u.grad).all()


def test_dtsh_without_valid_anchor_is_an_attached_zero():
    loss = build_loss("dtsh", L, C, N)
    u = torch.sign(codes(seed=7)).detach().requires_grad_(True)  # quantisation term is 0 too
    value = loss(u, ONE_CLASS, INDEX)
    assert isinstance(value, torch.Tensor) and value.requires_grad and value.item() == 0.0
    value.backward()
    assert torch.equal(u.grad, torch.zeros_like(u))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_buffers_follow_to_and_state_dict(name):
    loss = build_loss(name, L, C, N)
    buffers = dict(loss.named_buffers())
    assert set(buffers) <= set(loss.state_dict())
    if issubclass(LOSSES[name], MemoryBankLoss):
        assert {"U", "Y"} <= set(buffers)
        assert buffers["U"].shape == (N, L) and buffers["Y"].shape == (N, C)
    if name in {"csq", "mdsh", "shcir"}:
        assert loss.centers.shape == (C, L)
    loss.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in loss.buffers())
    value = loss(codes(seed=8).double(), SINGLE.double(), INDEX)
    assert value.dtype == torch.float64
    if buffers:
        loss.to("meta")
        assert all(b.device.type == "meta" for b in loss.buffers())
        with pytest.raises(ValueError, match="move the loss with .to"):
            loss(codes(seed=8).double(), SINGLE.double(), INDEX)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_eval_mode_leaves_state_untouched(name):
    loss = build_loss(name, L, C, N)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    loss.eval()
    loss(codes(seed=9), SINGLE, INDEX)
    after = loss.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", BANK_LOSSES)
def test_training_mode_writes_bank_rows_by_index(name):
    loss = build_loss(name, L, C, N)
    u = codes(seed=10, scale=0.5)
    loss(u, SINGLE, INDEX)
    written = u.detach().clamp(-1, 1) if name == "dbdh" else u.detach()
    assert torch.equal(loss.U[INDEX], written) and torch.equal(loss.Y[INDEX], SINGLE)
    untouched = torch.tensor([1, 4, 6, 8])
    assert not loss.U[untouched].any() and not loss.Y[untouched].any()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_set_epoch_is_accepted(name):
    loss = build_loss(name, L, C, N)
    loss.set_epoch(3)
    with pytest.raises(ValueError, match="epoch"):
        loss.set_epoch(-1)


def test_hparams_have_reference_defaults():
    expected = {"csq": {"lam": 1e-4}, "dbdh": {"alpha": 0.1, "p": 2, "pairs": "bank"},
                "dch": {"gamma": 20.0, "lam": 0.1}, "dhn": {"alpha": 0.1, "pairs": "bank"},
                "dpn": {"m": 1.0, "p": 0.5}, "dsh": {"m": None, "alpha": 0.1, "pairs": "bank"},
                "dtsh": {"alpha": 5.0, "lam": 1.0}, "lcdsh": {"lam": 3.0},
                "mdsh": {"lam": 1e-4}, "shcir": {"lam": 1e-4, "m": 0.0}}
    for name, hparams in expected.items():
        assert loss_hparams(name) == {"seed": 0, **hparams}
    assert build_loss("dsh", 16, C, N).m == 32


def test_hparams_change_the_loss():
    u = codes(seed=11)
    base = build_loss("dtsh", L, C, N)(u, SINGLE, INDEX)
    other = build_loss("dtsh", L, C, N, alpha=1.0, lam=0.5)(u, SINGLE, INDEX)
    assert not torch.isclose(base, other)


# ---------------------------------------------------------------- centres

def test_sylvester_hadamard_matches_definition():
    h = sylvester_hadamard(8)
    for i in range(8):
        for j in range(8):
            assert h[i, j] == (-1) ** bin(i & j).count("1")
    assert torch.equal(h @ h.t(), 8 * torch.eye(8))


def test_csq_centres_are_hadamard_rows_then_balanced_fill():
    g = make_generator(0)
    h = sylvester_hadamard(8)
    assert torch.equal(csq_centers(3, 8, g), h[:3])
    assert torch.equal(csq_centers(12, 8, g), torch.cat([h, -h[:4]]))
    big = csq_centers(20, 8, make_generator(5))
    assert torch.equal(big[:16], torch.cat([h, -h]))
    assert torch.equal(big[16:].sum(dim=1), torch.zeros(4))  # balanced: four -1 of eight
    assert torch.equal(big, csq_centers(20, 8, make_generator(5)))
    assert not torch.equal(big, csq_centers(20, 8, make_generator(6)))


def test_csq_non_power_of_two_is_seeded_balanced():
    c = csq_centers(5, 12, make_generator(1))
    assert c.shape == (5, 12) and set(c.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(c.sum(dim=1), torch.zeros(5))
    assert torch.equal(c, csq_centers(5, 12, make_generator(1)))


def test_loss_centres_deterministic_per_seed():
    for name in ("csq", "dpn", "mdsh", "shcir"):
        a, b = build_loss(name, L, 20, N, seed=2), build_loss(name, L, 20, N, seed=2)
        assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers()))


def test_csq_multi_label_centre_uses_tie_break():
    loss = build_loss("csq", L, C, N, seed=4)
    c, tie = loss.centers, loss.tie_break
    summed = c[0] + c[1]  # rows 0 and 1 of H_8 differ in four bits -> four zeros
    assert (summed == 0).sum() == 4
    target = label_to_center(torch.tensor([[1.0, 1.0, 0.0]]), c, tie)[0]
    for k in range(L):
        expected = tie[k] if summed[k] == 0 else torch.sign(summed[k])
        assert target[k] == expected
    single = label_to_center(SINGLE, c, tie)
    assert torch.equal(single, c[SINGLE.argmax(dim=1)])


def test_dpn_targets_have_exact_negative_count():
    t = dpn_targets(7, 10, 0.3, make_generator(0))
    assert torch.equal((t == -1).sum(dim=1), torch.full((7,), 3))
    assert set(t.unique().tolist()) == {-1.0, 1.0}


def test_max_min_centres_hadamard_then_exact_greedy():
    h = sylvester_hadamard(8)
    assert torch.equal(max_min_distance_centers(3, 8, make_generator(0)), h[:3])
    centres = max_min_distance_centers(20, 8, make_generator(0))
    assert torch.equal(centres[:16], torch.cat([h, -h]))
    # brute force: each added centre is as far as any of the 256 codes from those before it
    every = [[1.0 if (v >> k) & 1 else -1.0 for k in range(8)] for v in range(256)]
    rows = centres.tolist()
    for n in range(16, 20):
        def hamming_to_set(code):
            return min(sum(a != b for a, b in zip(code, rows[m])) for m in range(n))
        assert hamming_to_set(rows[n]) == max(hamming_to_set(code) for code in every)
    assert torch.equal(centres, max_min_distance_centers(20, 8, make_generator(0)))


def test_max_min_centres_have_no_duplicates_where_reference_had():
    # the reference's MDSH file for C=100, L=16 had duplicate centres (min Hamming 0)
    assert min_hamming_distance(max_min_distance_centers(100, 16, make_generator(0))) >= 2
    odd = max_min_distance_centers(10, 12, make_generator(0))
    assert odd.shape == (10, 12) and min_hamming_distance(odd) >= 4
    with pytest.raises(ValueError, match="distinct centres"):
        max_min_distance_centers(20, 4, make_generator(0))


# ---------------------------------------------------------------- errors

def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: csq, dbdh, dch, dhn, dpn, dsh, dtsh, lcdsh, mdsh, shcir"):
        build_loss("hashnet", L, C, N)


def test_unknown_hparam_lists_valid_ones():
    with pytest.raises(TypeError, match="unknown hyper-parameter.*gama.*valid: gamma, lam, seed"):
        build_loss("dch", L, C, N, gama=1.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("args,error,pattern", [
    (lambda u, y, i: (u[:, :7], y, i), ValueError, r"u must have shape \(batch, code_length=8\)"),
    (lambda u, y, i: (u[0], y, i), ValueError, r"u must have shape"),
    (lambda u, y, i: (u, y[:, :2], i), ValueError, r"y must have shape \(batch=6, num_classes=3\)"),
    (lambda u, y, i: (u, y[:5], i), ValueError, r"y must have shape"),
    (lambda u, y, i: (u, y, i[:5]), ValueError, r"index must have shape \(batch=6,\)"),
    (lambda u, y, i: (u, y, i + 1), ValueError, r"index values must lie in \[0, num_train=10\)"),
    (lambda u, y, i: (u, y, i - 1), ValueError, r"index values must lie"),
    (lambda u, y, i: (u.long(), y, i), TypeError, r"u must be a floating-point"),
    (lambda u, y, i: (u, y.long(), i), TypeError, r"y must be a floating-point"),
    (lambda u, y, i: (u, y, i.float()), TypeError, r"index must be an integer"),
    (lambda u, y, i: (u, y * 2, i), ValueError, r"y must be multi-hot"),
    (lambda u, y, i: (u.tolist(), y, i), TypeError, r"u must be a torch.Tensor"),
])
def test_bad_inputs_raise_naming_the_argument(name, args, error, pattern):
    loss = build_loss(name, L, C, N)
    with pytest.raises(error, match=pattern):
        loss(*args(codes().detach(), SINGLE, INDEX))


@pytest.mark.parametrize("name", SINGLE_ONLY)
def test_single_label_losses_reject_multi_label(name):
    loss = build_loss(name, L, C, N)
    with pytest.raises(ValueError, match=f"{name.upper()} supports single-label data only"):
        loss(codes(), MULTI, INDEX)
    with pytest.raises(ValueError, match="no label"):
        loss(codes(), SINGLE * torch.tensor([[1.0]] * 5 + [[0.0]]), INDEX)


def test_single_label_only_set_is_mdsh_and_shcir():
    assert SINGLE_ONLY == ["mdsh", "shcir"]


@pytest.mark.parametrize("kwargs,pattern", [
    ({"code_length": 0}, "code_length must be >= 1"),
    ({"num_classes": 2.5}, "num_classes must be an int"),
    ({"num_train": -3}, "num_train must be >= 1"),
])
def test_bad_sizes_raise(kwargs, pattern):
    sizes = {"code_length": L, "num_classes": C, "num_train": N, **kwargs}
    with pytest.raises((ValueError, TypeError), match=pattern):
        build_loss("csq", sizes["code_length"], sizes["num_classes"], sizes["num_train"])


@pytest.mark.parametrize("name,hparams,pattern", [
    ("dbdh", {"p": 3}, "p must be 1 or 2"),
    ("dch", {"gamma": 0.0}, "gamma must be > 0"),
    ("dpn", {"p": 1.5}, r"p must lie in \[0, 1\]"),
    ("csq", {"lam": -1.0}, "lam must be >= 0"),
    ("dsh", {"m": float("nan")}, "m must be finite"),
    ("dtsh", {"seed": "a"}, "seed must be an int"),
])
def test_bad_hparams_raise(name, hparams, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        build_loss(name, L, C, N, **hparams)


@pytest.mark.parametrize("name", SINGLE_ONLY)
def test_softmax_losses_need_two_classes(name):
    with pytest.raises(ValueError, match="num_classes >= 2"):
        build_loss(name, L, 1, N)


# ---------------------------------------------------------------- several lengths at once

NESTED_LENGTHS = (4, 8, 16)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("prefixes", [True, False])
def test_per_length_losses_equal_the_separate_calls(name, prefixes):
    """Values, gradients to every code and bank state equal those of one call per length (CSQ is fused)."""
    from nhllib.core.losses import per_length_losses

    gen = torch.Generator().manual_seed(11)
    y = SINGLE.double() if not LOSSES[name].supports_multi_label else MULTI.double()
    longest = (torch.randn(B, 16, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    others = [(torch.randn(B, n, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
              for n in NESTED_LENGTHS]
    codes_of = (lambda: [longest[:, :n] for n in NESTED_LENGTHS]) if prefixes else (lambda: others)
    leaves = [longest] if prefixes else others

    def run(together):
        losses = [build_loss(name, n, C, N, seed=5).double() for n in NESTED_LENGTHS]
        codes_now = codes_of()
        if together:
            values = per_length_losses(losses, codes_now, y, INDEX)
        else:
            values = torch.stack([loss(u, y, INDEX) for loss, u in zip(losses, codes_now)])
        grads = torch.autograd.grad((values * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum(), leaves)
        return values.detach(), grads, [dict(loss.state_dict()) for loss in losses]

    values, grads, states = run(True)
    want_values, want_grads, want_states = run(False)
    assert values.shape == (3,)
    assert torch.allclose(values, want_values, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, want_grads):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    for got, want in zip(states, want_states):
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in got)


def test_per_length_losses_validate_the_batch_and_the_pairing():
    from nhllib.core.losses import per_length_losses

    losses = [build_loss("csq", n, C, N) for n in (4, 8)]
    codes_ = [torch.randn(B, 4), torch.randn(B, 8)]
    with pytest.raises(ValueError, match="index values must lie in"):
        per_length_losses(losses, codes_, SINGLE, INDEX + N)
    with pytest.raises(ValueError, match="multi-hot"):
        per_length_losses(losses, codes_, SINGLE * 2, INDEX)
    with pytest.raises(ValueError, match="one code tensor per loss"):
        per_length_losses(losses, codes_[:1], SINGLE, INDEX)
    with pytest.raises(ValueError, match="code_length=8"):
        per_length_losses(losses, [codes_[0], codes_[0]], SINGLE, INDEX)


def test_csq_bce_matches_torch_bce_and_stays_finite_at_saturation():
    from nhllib.core.losses.csq import _centre_bce

    t = torch.linspace(-0.999, 0.999, 41, dtype=torch.float64)
    for sign in (1.0, -1.0):
        target = torch.full_like(t, sign)
        want = torch.nn.functional.binary_cross_entropy(0.5 * (t + 1), 0.5 * (target + 1), reduction="none")
        assert torch.allclose(_centre_bce(t, target), want, rtol=1e-12)
    # exactly saturated bits, right and wrong: finite values, zero gradient through tanh, no NaN
    u = torch.tensor([30.0, -30.0, 30.0, -30.0], requires_grad=True)
    value = _centre_bce(u.tanh(), torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert value[:2].abs().max() < 1e-6 and torch.isfinite(value).all() and value[2:].min() > 80
    (grad,) = torch.autograd.grad(value.sum(), u)
    assert torch.equal(grad, torch.zeros(4))
