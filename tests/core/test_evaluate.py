"""Tests of nhllib.core.evaluate / nhllib.core.metrics against independent plain-Python oracles.

The oracles below rank by an explicit sort or enumerate every order of the tied items; they share no
code or formula with the closed forms in nhllib.core.metrics.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from nhllib.core.evaluate import (
    TIE_MODES,
    encode,
    evaluate_nested,
    mean_average_precision,
    precision_at_k,
    precision_recall_curve,
    precision_within_radius,
)

COUNT_MODES = ("expected", "optimistic", "pessimistic")


# ----------------------------------------------------------------------------- oracles


def _bit(v: float) -> int:
    return 1 if v >= 0 else -1


def _dist(a, b) -> int:
    return sum(_bit(x) != _bit(y) for x, y in zip(a, b))


def _rel(a, b) -> bool:
    return any(x == 1 and y == 1 for x, y in zip(a, b))


def _ap(rel_in_rank_order: list[bool], k: int | None) -> float:
    cut = rel_in_rank_order if k is None else rel_in_rank_order[:k]
    hits, total = 0, 0.0
    for pos, r in enumerate(cut, start=1):
        if r:
            hits += 1
            total += hits / pos
    return total / hits if hits else 0.0


def _precision(rel_in_rank_order: list[bool], k: int) -> float:
    cut = rel_in_rank_order[:k]
    return sum(cut) / len(cut)


def _query_setup(qc, ql, dc, dl):
    d = [_dist(qc, x) for x in dc]
    r = [_rel(ql, y) for y in dl]
    return d, r


def _all_tie_orders(d: list[int]):
    """Every ranking (list of db indices) consistent with the distances: all permutations inside ties."""
    groups = [[i for i in range(len(d)) if d[i] == v] for v in sorted(set(d))]
    for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in choice for i in part]


def _index_order(d: list[int]) -> list[int]:
    return sorted(range(len(d)), key=lambda i: (d[i], i))


def _reduce(values: list[float], ties: str) -> float:
    if ties == "expected":
        return sum(values) / len(values)
    return max(values) if ties == "optimistic" else min(values)


def brute_map(qc, ql, dc, dl, topk, ties) -> float:
    """mAP by explicit rankings: 'index' sorts by (distance, position); other modes enumerate all tie orders."""
    aps = []
    for qi in range(len(qc)):
        d, r = _query_setup(qc[qi], ql[qi], dc, dl)
        if ties == "index":
            aps.append(_ap([r[i] for i in _index_order(d)], topk))
        else:
            aps.append(_reduce([_ap([r[i] for i in order], topk) for order in _all_tie_orders(d)], ties))
    return sum(aps) / len(aps)


def brute_patk(qc, ql, dc, dl, k, ties) -> float:
    vals = []
    for qi in range(len(qc)):
        d, r = _query_setup(qc[qi], ql[qi], dc, dl)
        if ties == "index":
            vals.append(_precision([r[i] for i in _index_order(d)], k))
        else:
            vals.append(_reduce([_precision([r[i] for i in o], k) for o in _all_tie_orders(d)], ties))
    return sum(vals) / len(vals)


def _random_case(seed, q, n, bits, classes, multi=False, continuous=False):
    g = torch.Generator().manual_seed(seed)
    if continuous:
        qc, dc = torch.randn(q, bits, generator=g), torch.randn(n, bits, generator=g)
    else:
        qc = torch.randint(0, 2, (q, bits), generator=g).float() * 2 - 1
        dc = torch.randint(0, 2, (n, bits), generator=g).float() * 2 - 1
    if multi:
        ql = (torch.rand(q, classes, generator=g) < 0.35).float()
        dl = (torch.rand(n, classes, generator=g) < 0.35).float()
    else:
        ql = nn.functional.one_hot(torch.randint(0, classes, (q,), generator=g), classes).float()
        dl = nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    return qc, ql, dc, dl


def _lists(*tensors):
    return [t.tolist() for t in tensors]


# ----------------------------------------------------------------------------- mAP against brute force


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("multi", [False, True])
def test_map_matches_exhaustive_tie_enumeration(seed, multi):
    # Tiny: 7 items, 3 bits -> at most 4 distances, so ties everywhere and every order can be enumerated.
    qc, ql, dc, dl = _random_case(seed, q=4, n=7, bits=3, classes=3, multi=multi, continuous=seed % 2 == 1)
    lists = _lists(qc, ql, dc, dl)
    for topk in (None, 1, 2, 3, 4, 5, 7, 9):
        for ties in TIE_MODES:
            got = mean_average_precision(qc, ql, dc, dl, topk=topk, ties=ties)
            want = brute_map(*lists, topk, ties)
            assert got == pytest.approx(want, abs=1e-12), (topk, ties)


@pytest.mark.parametrize("seed", range(3))
def test_index_mode_matches_stable_sort_on_larger_case(seed):
    qc, ql, dc, dl = _random_case(seed, q=9, n=60, bits=5, classes=4, multi=seed == 2)
    lists = _lists(qc, ql, dc, dl)
    for topk in (None, 1, 17, 60, 100):
        got = mean_average_precision(qc, ql, dc, dl, topk=topk, ties="index", block_size=4)
        assert got == pytest.approx(brute_map(*lists, topk, "index"), abs=1e-12)


def test_bounds_are_relevant_first_and_last_without_cut():
    qc, ql, dc, dl = _random_case(7, q=6, n=50, bits=4, classes=3)
    qs, qls, ds, dls = _lists(qc, ql, dc, dl)
    for ties, rel_key in (("optimistic", lambda r: 0 if r else 1), ("pessimistic", lambda r: 1 if r else 0)):
        aps = []
        for qi in range(len(qs)):
            d, r = _query_setup(qs[qi], qls[qi], ds, dls)
            order = sorted(range(len(d)), key=lambda i: (d[i], rel_key(r[i])))
            aps.append(_ap([r[i] for i in order], None))
        assert mean_average_precision(qc, ql, dc, dl, ties=ties) == pytest.approx(sum(aps) / len(aps), abs=1e-12)


@pytest.mark.parametrize("topk", [None, 13, 30])
def test_expected_matches_average_over_random_tie_orders(topk):
    # 40 items at 4 bits: groups of ~8, K=13 and 30 cut groups. Monte Carlo over 20,000 seeded shuffles.
    qc, ql, dc, dl = _random_case(11, q=5, n=40, bits=4, classes=3, multi=True)
    qs, qls, ds, dls = _lists(qc, ql, dc, dl)
    rng = np.random.default_rng(0)
    samples = 20_000
    for qi in range(len(qs)):
        d, r = _query_setup(qs[qi], qls[qi], ds, dls)
        d, r = np.array(d, dtype=float), np.array(r, dtype=float)
        order = np.argsort(d[None, :] + 0.5 * rng.random((samples, len(d))), axis=1)  # random tie-break
        rel = r[order][:, : (len(d) if topk is None else topk)]
        hits = rel.cumsum(1)
        found = hits[:, -1]
        ap = np.where(found > 0, (rel * hits / np.arange(1, rel.shape[1] + 1)).sum(1) / np.maximum(found, 1), 0.0)
        got = mean_average_precision(qc[qi:qi + 1], ql[qi:qi + 1], dc, dl, topk=topk)
        tol = 5 * ap.std() / math.sqrt(samples) + 1e-12
        assert abs(got - ap.mean()) <= tol, (qi, got, ap.mean(), tol)


def test_bound_ordering_with_and_without_cut():
    for seed in range(5):
        qc, ql, dc, dl = _random_case(100 + seed, q=20, n=200, bits=6, classes=4, multi=seed % 2 == 0)
        for topk in (None, 7, 50, 199):
            o, e, p = (mean_average_precision(qc, ql, dc, dl, topk=topk, ties=t)
                       for t in ("optimistic", "expected", "pessimistic"))
            assert o >= e - 1e-12 and e >= p - 1e-12, (seed, topk, o, e, p)


def test_optimistic_under_cut_is_the_true_maximum_not_relevant_first():
    # Rank 1: relevant; ranks 2-9: irrelevant; ranks 10-11: a tie group with one relevant item; K = 10.
    q = torch.ones(1, 4)
    db = torch.ones(11, 4)
    db[1:9, 0] = -1  # distance 1
    db[9:, :2] = -1  # distance 2
    ql = torch.tensor([[1.0, 0.0]])
    dl = torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 8 + [[1.0, 0.0], [0.0, 1.0]])
    relevant_first = (1 + 2 / 10) / 2  # hit at rank 10 lowers the average
    relevant_last = 1.0  # the tied relevant item falls outside the top 10
    assert mean_average_precision(q, ql, db, dl, topk=10, ties="optimistic") == pytest.approx(relevant_last)
    assert mean_average_precision(q, ql, db, dl, topk=10, ties="pessimistic") == pytest.approx(relevant_first)
    assert mean_average_precision(q, ql, db, dl, topk=10, ties="expected") == pytest.approx(
        (relevant_first + relevant_last) / 2)
    assert mean_average_precision(q, ql, db, dl, topk=10, ties="index") == pytest.approx(relevant_first)


# ----------------------------------------------------------------------------- hand-made cases and edges


def test_perfect_ranking_gives_one_in_every_mode():
    g = torch.Generator().manual_seed(0)
    centres = torch.randint(0, 2, (3, 8), generator=g).float() * 2 - 1
    centres[1] = -centres[0]
    db_cls = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1])
    dl = nn.functional.one_hot(db_cls, 3).float()
    ql = nn.functional.one_hot(torch.tensor([0, 1]), 3).float()
    qc, dc = centres[:2], centres[db_cls]
    for ties in TIE_MODES:
        for topk in (None, 1, 3, 8):
            assert mean_average_precision(qc, ql, dc, dl, topk=topk, ties=ties) == pytest.approx(1.0)


def test_hand_computed_multilabel_case():
    q = torch.tensor([[1.0, 1.0, 1.0]])
    db = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, -1.0]])  # distances 0, 1, 2
    ql = torch.tensor([[1.0, 1.0, 0.0]])
    dl = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])  # shares label 1 / none / label 0
    for ties in TIE_MODES:
        assert mean_average_precision(q, ql, db, dl, ties=ties) == pytest.approx((1 / 1 + 2 / 3) / 2)
        assert mean_average_precision(q, ql, db, dl, topk=2, ties=ties) == pytest.approx(1.0)


def test_last_database_item_counts_with_topk_none():
    n = 6
    q = torch.ones(1, 4)
    db = torch.ones(n, 4)
    db[-1] = -1  # the only relevant item: last position, farthest, alone at its distance
    ql = torch.tensor([[1.0, 0.0]])
    dl = torch.tensor([[0.0, 1.0]] * (n - 1) + [[1.0, 0.0]])
    for ties in TIE_MODES:
        assert mean_average_precision(q, ql, db, dl, ties=ties) == pytest.approx(1 / n)
        assert mean_average_precision(q, ql, db, dl, topk=n, ties=ties) == pytest.approx(1 / n)
        assert mean_average_precision(q, ql, db, dl, topk=n + 10, ties=ties) == pytest.approx(1 / n)
        assert mean_average_precision(q, ql, db, dl, topk=n - 1, ties=ties) == 0.0


def test_zero_hit_queries_count_as_zero():
    qc, _, dc, dl = _random_case(3, q=1, n=20, bits=4, classes=3)
    ql = torch.tensor([[1.0, 0.0, 0.0]])
    dl[:, 2] = 0.0
    assert dl[:, 0].sum() > 0
    no_hit = torch.tensor([[0.0, 0.0, 1.0]])
    for ties in TIE_MODES:
        one = mean_average_precision(qc, ql, dc, dl, ties=ties)
        both = mean_average_precision(torch.cat([qc, qc]), torch.cat([ql, no_hit]), dc, dl, ties=ties)
        assert one > 0 and both == pytest.approx(one / 2)


def test_numpy_input_and_block_size_do_not_change_results():
    qc, ql, dc, dl = _random_case(5, q=13, n=70, bits=6, classes=3, multi=True, continuous=True)
    for ties in TIE_MODES:
        ref = mean_average_precision(qc, ql, dc, dl, topk=20, ties=ties)
        assert mean_average_precision(qc.numpy(), ql.numpy(), dc.numpy(), dl.numpy(), topk=20, ties=ties) == \
            pytest.approx(ref, abs=1e-12)
        for block in (1, 4, 13, 100):
            assert mean_average_precision(qc, ql, dc, dl, topk=20, ties=ties, block_size=block) == \
                pytest.approx(ref, abs=1e-12)


def test_sign_zero_is_plus_one_and_int8_codes_accepted():
    qc, ql, dc, dl = _random_case(8, q=5, n=30, bits=5, classes=3)
    zeroed = dc.clone()
    zeroed[zeroed > 0] = 0.0  # +1 bits written as 0: x >= 0 -> +1 must give the same codes
    ref = mean_average_precision(qc, ql, dc, dl, ties="index")
    assert mean_average_precision(qc, ql, zeroed, dl, ties="index") == pytest.approx(ref, abs=1e-12)
    assert mean_average_precision(qc.to(torch.int8), ql, dc.to(torch.int8), dl, ties="index") == \
        pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------- nested


@pytest.mark.parametrize("nested", [True, False])
def test_evaluate_nested_equals_per_length_calls(nested):
    qc, ql, dc, dl = _random_case(21, q=11, n=80, bits=16, classes=4, multi=True, continuous=True)
    lengths = (4, 8, 16)
    if nested:
        qd = {k: qc[:, :k] for k in lengths}
        dd = {k: dc[:, :k] for k in lengths}
    else:  # separate heads: the short codes are not prefixes of the long one
        other_q, _, other_d, _ = _random_case(22, q=11, n=80, bits=16, classes=4, continuous=True)
        qd = {4: other_q[:, :4], 8: qc[:, 8:], 16: qc}
        dd = {4: other_d[:, :4], 8: dc[:, 8:], 16: dc}
    for ties in TIE_MODES:
        for topk in (None, 25):
            got = evaluate_nested(qd, ql, dd, dl, topk=topk, ties=ties, block_size=3)
            assert list(got) == list(lengths)
            for k in lengths:
                want = mean_average_precision(qd[k], ql, dd[k], dl, topk=topk, ties=ties)
                assert got[k] == pytest.approx(want, abs=1e-12), (ties, topk, k)


# ----------------------------------------------------------------------------- P@K, PR, radius


@pytest.mark.parametrize("seed", range(3))
def test_precision_at_k_matches_brute_force(seed):
    qc, ql, dc, dl = _random_case(30 + seed, q=4, n=7, bits=3, classes=3, multi=seed == 1)
    lists = _lists(qc, ql, dc, dl)
    ks = [1, 2, 3, 5, 7, 10]
    for ties in TIE_MODES:
        got = precision_at_k(qc, ql, dc, dl, ks, ties=ties)
        want = [brute_patk(*lists, k, ties) for k in ks]
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=ties)


def test_precision_at_k_index_on_larger_case():
    qc, ql, dc, dl = _random_case(40, q=8, n=90, bits=6, classes=3)
    lists = _lists(qc, ql, dc, dl)
    ks = [1, 10, 33, 90]
    got = precision_at_k(qc, ql, dc, dl, ks, ties="index", block_size=3)
    np.testing.assert_allclose(got, [brute_patk(*lists, k, "index") for k in ks], atol=1e-12)
    assert precision_at_k(qc, ql, dc, dl, 10)[0] == pytest.approx(precision_at_k(qc, ql, dc, dl, [10])[0])


def _brute_radius(qs, qls, ds, dls, radius):
    precision, recall = [], []
    for qi in range(len(qs)):
        d, r = _query_setup(qs[qi], qls[qi], ds, dls)
        inside = [i for i in range(len(d)) if d[i] <= radius]
        hits = sum(r[i] for i in inside)
        precision.append(hits / len(inside) if inside else 0.0)
        recall.append(hits / sum(r) if sum(r) else 0.0)
    return sum(precision) / len(precision), sum(recall) / len(recall)


def test_precision_recall_curve_and_radius_match_brute_force():
    qc, ql, dc, dl = _random_case(50, q=12, n=60, bits=8, classes=4, multi=True, continuous=True)
    ql[0] = 0.0  # a query with no relevant item: recall 0 at every radius, still counted
    lists = _lists(qc, ql, dc, dl)
    curve = precision_recall_curve(qc, ql, dc, dl, block_size=5)
    assert curve["radius"].tolist() == list(range(9))
    for radius in range(9):
        p, r = _brute_radius(*lists, radius)
        assert curve["precision"][radius] == pytest.approx(p, abs=1e-12)
        assert curve["recall"][radius] == pytest.approx(r, abs=1e-12)
    assert curve["precision"][0] < 1  # some queries retrieve nothing at radius 0 and count as 0
    assert precision_within_radius(qc, ql, dc, dl) == pytest.approx(_brute_radius(*lists, 2)[0], abs=1e-12)
    assert precision_within_radius(qc, ql, dc, dl, radius=20) == pytest.approx(_brute_radius(*lists, 8)[0])


# ----------------------------------------------------------------------------- encode


class _Prefixes(nn.Module):
    """Returns prefixes of its input as nested 'continuous codes' and records how it was called."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Dropout(0.5)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        u = self.inner(x)
        return [u[:, :2], u[:, :4]]


def _loader(x, y, batch, shuffle_seed=None):
    idx = list(range(len(x)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(idx)
    for s in range(0, len(idx), batch):
        part = torch.tensor(idx[s:s + batch])
        yield x[part], y[part], part


def test_encode_returns_sorted_int8_codes_and_restores_mode():
    x = torch.tensor([[0.5, -1.0, 0.0, 2.0], [-0.1, 0.0, 3.0, -2.0], [1.0, 1.0, -1.0, 0.0],
                      [-3.0, 2.0, 0.0, -0.5], [0.0, 0.0, 0.0, 0.0]])
    y = torch.eye(5)[:, :3]
    model = _Prefixes()
    model.train()
    codes, labels = encode(model, _loader(x, y, batch=2, shuffle_seed=1), "cpu")
    want = torch.where(x >= 0, 1, -1).to(torch.int8)  # sign(0) -> +1
    assert set(codes) == {2, 4}
    assert codes[4].dtype == torch.int8 and codes[4].device.type == "cpu"
    assert torch.equal(codes[4], want) and torch.equal(codes[2], want[:, :2])
    assert torch.equal(labels, y) and labels.dtype == torch.float32
    assert all(call == (False, False) for call in model.calls)  # eval mode, no grad
    assert model.training and model.inner.training
    model.eval()
    model.inner.train()  # a mixed state is restored module by module
    encode(model, _loader(x, y, batch=3), "cpu")
    assert not model.training and model.inner.training


def test_encode_single_tensor_output_and_codes_feed_evaluate_nested():
    torch.manual_seed(0)
    x = torch.randn(20, 6)
    y = nn.functional.one_hot(torch.arange(20) % 3, 3).float()
    lin = nn.Linear(6, 8)
    codes, labels = encode(lin, [(x[:7], y[:7], torch.arange(7)), (x[7:], y[7:], torch.arange(7, 20))], "cpu")
    assert list(codes) == [8] and codes[8].shape == (20, 8)
    res = evaluate_nested(codes, labels, codes, labels)
    assert res[8] == pytest.approx(mean_average_precision(lin(x).detach(), y, lin(x).detach(), y))


def test_encode_errors():
    x, y = torch.randn(4, 4), torch.eye(4)
    with pytest.raises(ValueError, match="duplicate indices"):
        encode(_Prefixes(), [(x, y, torch.tensor([0, 1, 1, 2]))], "cpu")
    with pytest.raises(ValueError, match="2-D multi-hot"):
        encode(_Prefixes(), [(x, torch.arange(4), torch.arange(4))], "cpu")
    with pytest.raises(ValueError, match="no batch"):
        encode(_Prefixes(), [], "cpu")
    with pytest.raises(ValueError, match="NaN"):
        encode(_Prefixes(), [(torch.full((4, 4), float("nan")), y, torch.arange(4))], "cpu")
    with pytest.raises(TypeError, match="loader must yield"):
        encode(_Prefixes(), [x], "cpu")


# ----------------------------------------------------------------------------- input errors


def test_input_errors_name_the_argument():
    qc, ql, dc, dl = _random_case(0, q=3, n=10, bits=4, classes=2)
    with pytest.raises(ValueError, match="ties must be one of 'expected', 'optimistic', 'pessimistic', 'index'"):
        mean_average_precision(qc, ql, dc, dl, ties="random")
    with pytest.raises(ValueError, match="topk must be >= 1"):
        mean_average_precision(qc, ql, dc, dl, topk=0)
    with pytest.raises(TypeError, match="topk must be a positive int"):
        mean_average_precision(qc, ql, dc, dl, topk=2.5)
    with pytest.raises(ValueError, match="query_codes must be 2-D"):
        mean_average_precision(qc[0], ql, dc, dl)
    with pytest.raises(ValueError, match="db_labels must be 2-D"):
        mean_average_precision(qc, ql, dc, dl[:, 0])
    with pytest.raises(ValueError, match="query_codes has 4 bits but db_codes has 3"):
        mean_average_precision(qc, ql, dc[:, :3], dl)
    with pytest.raises(ValueError, match="db_labels has 9 rows but db_codes has 10"):
        mean_average_precision(qc, ql, dc, dl[:9])
    with pytest.raises(ValueError, match="query_labels has 2 rows but query_codes has 3"):
        mean_average_precision(qc, ql[:2], dc, dl)
    with pytest.raises(ValueError, match="query_labels has 2 classes but db_labels has 3"):
        mean_average_precision(qc, ql, dc, torch.cat([dl, dl[:, :1]], 1))
    nan_codes = dc.clone()
    nan_codes[0, 0] = float("nan")
    with pytest.raises(ValueError, match="db_codes contains NaN"):
        mean_average_precision(qc, ql, nan_codes, dl)
    with pytest.raises(ValueError, match="query_codes holds only 0 and 1"):
        mean_average_precision((qc > 0).float(), ql, dc, dl)
    with pytest.raises(ValueError, match="query_labels must be multi-hot"):
        mean_average_precision(qc, ql * 2 - 1, dc, dl)
    with pytest.raises(TypeError, match="db_codes must be a torch.Tensor or numpy.ndarray"):
        mean_average_precision(qc, ql, dc.tolist(), dl)
    with pytest.raises(ValueError, match="query_codes must hold at least one row"):
        mean_average_precision(qc[:0], ql[:0], dc, dl)
    with pytest.raises(ValueError, match="radius must be a non-negative int"):
        precision_within_radius(qc, ql, dc, dl, radius=-1)
    with pytest.raises(ValueError, match="ks must hold positive ints"):
        precision_at_k(qc, ql, dc, dl, [5, 0])
    with pytest.raises(ValueError, match="same code lengths"):
        evaluate_nested({4: qc}, ql, {2: dc[:, :2], 4: dc}, dl)
    with pytest.raises(ValueError, match=r"key 8 must equal its codes' width"):
        evaluate_nested({8: qc}, ql, {8: dc}, dl)
    with pytest.raises(TypeError, match="query_codes must be a dict"):
        evaluate_nested(qc, ql, {4: dc}, dl)


def test_cut_group_grid_chunking_does_not_change_results(monkeypatch):
    from nhllib.core import metrics

    qc, ql, dc, dl = _random_case(12, q=6, n=300, bits=4, classes=3, multi=True)
    ref = {t: mean_average_precision(qc, ql, dc, dl, topk=77, ties=t) for t in COUNT_MODES}
    monkeypatch.setattr(metrics, "_GRID_BUDGET", 3)  # one hit-count value per chunk
    for ties in COUNT_MODES:
        assert mean_average_precision(qc, ql, dc, dl, topk=77, ties=ties) == pytest.approx(ref[ties], abs=1e-12)


def test_threaded_histograms_give_the_same_numbers(monkeypatch):
    """The bincount split over threads (used on large problems) changes no number."""
    import nhllib.core.evaluate as evaluate

    gen = torch.Generator().manual_seed(11)
    q = torch.randint(0, 2, (40, 32), generator=gen) * 2 - 1
    db = torch.randint(0, 2, (500, 32), generator=gen) * 2 - 1
    ql = torch.eye(4)[torch.randint(0, 4, (40,), generator=gen)]
    dbl = torch.eye(4)[torch.randint(0, 4, (500,), generator=gen)]
    codes_q = {8: q[:, :8], 32: q}
    codes_db = {8: db[:, :8], 32: db}
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        serial = {t: evaluate.evaluate_nested(codes_q, ql, codes_db, dbl, ties=t) for t in ("expected", "index")}
        monkeypatch.setattr(evaluate, "_PARALLEL_MIN", 0)
        threaded = {t: evaluate.evaluate_nested(codes_q, ql, codes_db, dbl, ties=t) for t in ("expected", "index")}
    finally:
        torch.set_num_threads(previous)
    assert threaded == serial


def _sorted_ap(qc, ql, dc, dl, key) -> float:
    """mAP@all of explicit rankings sorted by ``key(distance, relevant, position)``."""
    aps = []
    for qi in range(len(qc)):
        d, r = _query_setup(qc[qi], ql[qi], dc, dl)
        order = sorted(range(len(d)), key=lambda i: key(d[i], r[i], i))
        aps.append(_ap([r[i] for i in order], None))
    return sum(aps) / len(aps)


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("multi", [False, True])
def test_joint_histograms_on_wide_and_irregular_lengths(nested, multi):
    """Lengths that pair up, that do not (radix > 127) and odd widths, against explicit sorts."""
    lengths = (3, 10, 130, 131, 260)
    qc, ql, dc, dl = _random_case(40 + multi, q=5, n=70, bits=260, classes=3, multi=multi)
    if nested:
        qd = {k: qc[:, :k] for k in lengths}
        dd = {k: dc[:, :k] for k in lengths}
    else:  # each length its own codes: the last bits of the 260-bit codes
        qd = {k: qc[:, -k:] for k in lengths}
        dd = {k: dc[:, -k:] for k in lengths}
    oracles = {"index": lambda d, r, i: (d, i), "optimistic": lambda d, r, i: (d, not r),
               "pessimistic": lambda d, r, i: (d, r)}
    for ties, key in oracles.items():
        got = evaluate_nested(qd, ql, dd, dl, ties=ties, block_size=2)
        for k in lengths:
            want = _sorted_ap(*_lists(qd[k], ql, dd[k], dl), key)
            assert got[k] == pytest.approx(want, abs=1e-12), (ties, k)
    got = evaluate_nested(qd, ql, dd, dl)
    for k in lengths:
        assert got[k] == pytest.approx(mean_average_precision(qd[k], ql, dd[k], dl), abs=1e-12), k


def test_float_product_fallback_gives_the_same_numbers(monkeypatch):
    """Where torch has no int8 product (e.g. MPS) the float32 path must give identical numbers."""
    import nhllib.core.evaluate as evaluate

    qc, ql, dc, dl = _random_case(31, q=9, n=120, bits=64, classes=4, multi=True)
    qd = {k: qc[:, :k] for k in (8, 16, 64)}
    dd = {k: dc[:, :k] for k in (8, 16, 64)}

    def everything():
        return ({t: evaluate.evaluate_nested(qd, ql, dd, dl, topk=50, ties=t) for t in TIE_MODES},
                evaluate.precision_at_k(qc, ql, dc, dl, ks=[5, 60]).tolist(),
                evaluate.precision_recall_curve(qc, ql, dc, dl)["precision"].tolist())

    integer = everything()
    monkeypatch.setattr(evaluate, "_int8_product_available", lambda device: False)
    assert everything() == integer
