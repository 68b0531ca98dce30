"""Tests for nhllib.retrieval: packing, HammingIndex, NestedIndex, ranking_metrics.

Oracles are written independently of the library: Hamming distances by comparing ±1 entries,
rankings by Python's ``sorted`` on (distance, id) tuples, AP by a plain loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhllib.retrieval import (
    HammingIndex,
    NestedIndex,
    pack_codes,
    prefix_bytes,
    ranking_metrics,
    unpack_codes,
)

faiss = pytest.importorskip("faiss")


# ----------------------------------------------------------------------------- oracles and data


def pm1(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, bits))


def clustered(rng: np.random.Generator, n: int, bits: int, n_centres: int = 4, flip: float = 0.1) -> np.ndarray:
    """Codes near a few centres: many identical short prefixes, i.e. many ties and big buckets."""
    centres = pm1(rng, n_centres, bits)
    codes = centres[rng.integers(0, n_centres, n)]
    flips = rng.random((n, bits)) < flip
    return np.where(flips, -codes, codes).astype(np.int8)


def hamming(q: np.ndarray, db: np.ndarray, bits: int) -> np.ndarray:
    return (q[:, None, :bits] != db[None, :, :bits]).sum(axis=-1)


def oracle_topk(dist: np.ndarray, k: int, candidates=None) -> tuple[list[list[int]], list[list[int]]]:
    """Per row, the k smallest (distance, id) among ``candidates[row]`` (default: all ids)."""
    ids_out, d_out = [], []
    for r, row in enumerate(dist):
        pool = range(len(row)) if candidates is None else candidates[r]
        best = sorted(pool, key=lambda j: (row[j], j))[:k]
        ids_out.append(best)
        d_out.append([int(row[j]) for j in best])
    return ids_out, d_out


def assert_rows(distances, ids, exp_ids, exp_d, k, pad_id=-1):
    for r in range(len(exp_ids)):
        got_i = list(ids[r])
        want_i = list(exp_ids[r]) + [pad_id] * (k - len(exp_ids[r]))
        assert got_i == want_i, f"row {r}"
        n = len(exp_d[r])
        assert list(distances[r][:n]) == exp_d[r], f"row {r}"


# ----------------------------------------------------------------------------- packing


def test_pack_hand_made_byte_layout():
    # bit 0 of the code is the most significant bit of byte 0; >= 0 -> 1, < 0 -> 0
    code = np.array([[1, -1, -1, -1, -1, -1, -1, 0.0, -1, -1, -1, -1, -1, -1, 1, -0.5]])
    assert pack_codes(code).tolist() == [[0b10000001, 0b00000010]]


@pytest.mark.parametrize("bits", [8, 16, 24, 64, 128])
@pytest.mark.parametrize("dtype", [np.int8, np.float32, np.float64, np.int64])
def test_pack_round_trip(bits, dtype):
    rng = np.random.default_rng(bits)
    codes = pm1(rng, 50, bits).astype(dtype)
    packed = pack_codes(codes)
    assert packed.shape == (50, bits // 8) and packed.dtype == np.uint8
    assert np.array_equal(unpack_codes(packed), codes.astype(np.int8))


def test_pack_any_real_values_and_torch():
    x = torch.tensor([[0.3, -2.0, 0.0, -1e-9, 5.0, -0.1, 1e9, -3.0]])
    expected = np.array([[1, -1, 1, -1, 1, -1, 1, -1]], dtype=np.int8)
    assert np.array_equal(unpack_codes(pack_codes(x)), expected)
    assert np.array_equal(pack_codes(x.to(torch.bfloat16)), pack_codes(expected))


def test_prefix_property():
    rng = np.random.default_rng(0)
    codes = pm1(rng, 30, 128)
    packed = pack_codes(codes)
    for bits in (8, 16, 32, 64, 128):
        short = pack_codes(codes[:, :bits])
        assert np.array_equal(short, packed[:, : bits // 8])
        assert np.array_equal(prefix_bytes(packed, bits), short)
        assert np.array_equal(unpack_codes(packed, bits), codes[:, :bits])


def test_pack_errors():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(np.ones((2, 12)))
    with pytest.raises(TypeError, match="bool"):
        pack_codes(np.ones((2, 8), dtype=bool))
    with pytest.raises(TypeError, match="uint8"):
        pack_codes(np.ones((2, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        pack_codes(np.array([[1.0, np.nan, 1, 1, 1, 1, 1, 1]]))
    with pytest.raises(TypeError, match="uint8"):
        unpack_codes(np.ones((2, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="exceeds"):
        prefix_bytes(np.zeros((2, 2), dtype=np.uint8), 24)


# ----------------------------------------------------------------------------- HammingIndex


@pytest.mark.parametrize("algorithm", ["auto", "heap", "count"])
@pytest.mark.parametrize("bits", [8, 16])
def test_hamming_topk_matches_brute_force_with_ties(algorithm, bits):
    rng = np.random.default_rng(bits)
    db, q = pm1(rng, 600, bits), pm1(rng, 70, bits)  # 70 queries > faiss's 32-query batches
    index = HammingIndex(bits, algorithm=algorithm)
    index.add(db)
    dist = hamming(q, db, bits)
    for k in (1, 7, 100, 600):
        d, i = index.search(q, k)
        assert d.shape == (70, k) and d.dtype == np.int32 and i.dtype == np.int64
        exp_i, exp_d = oracle_topk(dist, k)
        assert_rows(d, i, exp_i, exp_d, k)


def test_hamming_ties_across_faiss_database_blocks():
    # faiss scans the database in blocks of 65,536 codes; ties must stay in id order across blocks
    rng = np.random.default_rng(1)
    db, q = pm1(rng, 70_000, 8), pm1(rng, 4, 8)
    index = HammingIndex(8)
    index.add(db)
    dist = hamming(q, db, 8)
    d, i = index.search(q, 400)
    for r in range(4):
        order = np.lexsort((np.arange(len(db)), dist[r]))[:400]
        assert np.array_equal(i[r], order) and np.array_equal(d[r], dist[r][order])


def test_sort_rows_by_distance_id_repairs_order():
    from nhllib.retrieval.hamming import sort_rows_by_distance_id

    d = np.array([[1, 1, 0, 2], [0, 1, 1, 2]], dtype=np.int32)
    i = np.array([[5, 3, 9, 1], [4, 2, 7, 0]], dtype=np.int64)
    d2, i2 = sort_rows_by_distance_id(d.copy(), i.copy())
    assert d2.tolist() == [[0, 1, 1, 2], [0, 1, 1, 2]]
    assert i2.tolist() == [[9, 3, 5, 1], [4, 2, 7, 0]]


def test_hamming_range_search_matches_brute_force():
    rng = np.random.default_rng(2)
    db, q = pm1(rng, 300, 16), pm1(rng, 9, 16)
    index = HammingIndex(16)
    index.add(pack_codes(db))
    dist = hamming(q, db, 16)
    for radius in (0, 3, 6):
        results = index.range_search(q, radius)
        assert len(results) == 9
        for r, res in enumerate(results):
            want = sorted((int(dist[r, j]), j) for j in range(300) if dist[r, j] <= radius)
            assert [(int(d), int(j)) for d, j in zip(res.distances, res.ids)] == want


def test_hamming_incremental_add_and_torch_input():
    rng = np.random.default_rng(3)
    db, q = pm1(rng, 200, 16), pm1(rng, 5, 16)
    one = HammingIndex(16)
    one.add(db)
    inc = HammingIndex(16)
    for part in np.array_split(db, [50, 120]):
        inc.add(torch.from_numpy(part.astype(np.float32)))
    assert len(inc) == 200
    for a, b in zip(one.search(q, 30), inc.search(torch.from_numpy(q), 30)):
        assert np.array_equal(a, b)
    assert np.array_equal(inc.codes(), pack_codes(db))


def test_hamming_save_load(tmp_path):
    rng = np.random.default_rng(4)
    db, q = pm1(rng, 100, 32), pm1(rng, 5, 32)
    index = HammingIndex(32)
    index.add(db)
    path = tmp_path / "index.faiss"
    index.save(path)
    loaded = HammingIndex.load(path)
    assert len(loaded) == 100 and loaded.code_length == 32
    for a, b in zip(index.search(q, 10), loaded.search(q, 10)):
        assert np.array_equal(a, b)
    with pytest.raises(FileNotFoundError):
        HammingIndex.load(tmp_path / "missing.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="faiss"):
        HammingIndex.load(bad)


def test_hamming_errors():
    with pytest.raises(ValueError, match="multiple of 8"):
        HammingIndex(12)
    index = HammingIndex(16)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.ones((1, 16)), 1)
    index.add(np.ones((5, 16)))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones((1, 16)), 0)
    with pytest.raises(ValueError, match="exceeds"):
        index.search(np.ones((1, 16)), 6)
    with pytest.raises(ValueError, match="width 8"):
        index.add(np.ones((2, 8)))
    with pytest.raises(ValueError, match="bytes"):
        index.search(np.ones((1, 3), dtype=np.uint8), 1)
    with pytest.raises(TypeError, match="bool"):
        index.add(np.ones((2, 16), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 16), np.nan), 1)
    with pytest.raises(ValueError, match="radius"):
        index.range_search(np.ones((1, 16)), -1)


# ----------------------------------------------------------------------------- NestedIndex

LENGTHS = (8, 16, 32, 64)


def blocky(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Random codes whose first byte takes one of 6 values: a few big 8-bit buckets, many equally near."""
    codes = pm1(rng, n, bits)
    codes[:, :8] = pm1(rng, 6, 8)[rng.integers(0, 6, n)]
    return codes


@pytest.fixture(scope="module")
def nested_data():
    """Three regimes: clustered codes (ties, big buckets), random codes (mostly singleton buckets),
    and blocky codes (several big buckets at the same prefix distance: the tie bound is searched)."""
    rng = np.random.default_rng(5)
    out = {}
    regimes = (
        ("clustered", clustered(rng, 1500, 64)),
        ("random", pm1(rng, 1500, 64)),
        ("blocky", blocky(rng, 1500, 64)),
    )
    for name, db in regimes:
        q = np.concatenate([clustered(rng, 20, 64), pm1(rng, 20, 64)])
        index = NestedIndex(LENGTHS)
        index.add(db)
        out[name] = (index, db, q)
    return out


@pytest.mark.parametrize("regime", ["clustered", "random"])
def test_nested_exhaustive_and_full_shortlist(nested_data, regime):
    index, db, q = nested_data[regime]
    dist = hamming(q, db, 64)
    exp_i, exp_d = oracle_topk(dist, 25)
    assert_rows(*index.search(q, 25), exp_i, exp_d, 25)
    for s in (len(db), len(db) + 10):
        for prefix in (8, 16):
            d, i = index.search_shortlist(q, 25, prefix_bits=prefix, shortlist=s)
            assert_rows(d, i, exp_i, exp_d, 25)
    for backend in ("numpy", "faiss"):
        d, i = index.search_buckets(q, 25, bucket_bits=16, nflip=16, backend=backend)
        assert_rows(d, i, exp_i, exp_d, 25)
    d, i = index.search_funnel(q, 25, bits=(8, 16, 64), shortlists=(len(db), len(db)))
    assert_rows(d, i, exp_i, exp_d, 25)


@pytest.mark.parametrize("regime", ["clustered", "random", "blocky"])
@pytest.mark.parametrize("prefix", [8, 16, 32])
@pytest.mark.parametrize("s", [10, 37, 400])
def test_nested_shortlist_matches_oracle(nested_data, regime, prefix, s):
    index, db, q = nested_data[regime]
    k = 10
    short = hamming(q, db, prefix)
    long = hamming(q, db, 64)
    shortlists, _ = oracle_topk(short, s)
    exp_i, exp_d = oracle_topk(long, k, candidates=shortlists)
    for method in ("buckets", "flat"):  # bucket table and faiss flat scan of the prefixes
        d, i = index.search_shortlist(q, k, prefix_bits=prefix, shortlist=s, method=method)
        assert_rows(d, i, exp_i, exp_d, k)


def test_nested_shortlist_rerank_at_shorter_length(nested_data):
    index, db, q = nested_data["clustered"]
    shortlists, _ = oracle_topk(hamming(q, db, 8), 200)
    exp_i, exp_d = oracle_topk(hamming(q, db, 32), 15, candidates=shortlists)
    assert_rows(*index.search_shortlist(q, 15, prefix_bits=8, shortlist=200, rerank_bits=32), exp_i, exp_d, 15)


@pytest.mark.parametrize("regime", ["clustered", "random"])
@pytest.mark.parametrize("bucket_bits,nflip", [(8, 0), (8, 2), (16, 1), (16, 3), (32, 4)])
def test_nested_buckets_match_oracle_with_padding(nested_data, regime, bucket_bits, nflip):
    index, db, q = nested_data[regime]
    k = 30
    short = hamming(q, db, bucket_bits)
    pools = [[j for j in range(len(db)) if short[r, j] <= nflip] for r in range(len(q))]
    exp_i, exp_d = oracle_topk(hamming(q, db, 64), k, candidates=pools)
    # faiss IndexBinaryHash alone keeps items tied at the k-th distance in bucket-visit order; the
    # faiss backend must still return them in id order
    for backend in ("numpy", "faiss"):
        d, i, stats = index.search_buckets(
            q, k, bucket_bits=bucket_bits, nflip=nflip, backend=backend, return_stats=True
        )
        assert_rows(d, i, exp_i, exp_d, k)
        assert np.all(d[i == -1] == np.iinfo(np.int32).max)
        assert stats.candidates[0] == pytest.approx(np.mean([len(p) for p in pools]))
    # the radius form of the shortlist strategy is the same search
    d2, i2 = index.search_shortlist(q, k, prefix_bits=bucket_bits, radius=nflip)
    assert np.array_equal(i, i2) and np.array_equal(d, d2)


@pytest.mark.parametrize("bucket_bits,nflip", [(8, 1), (16, 2)])
def test_nested_buckets_visit_the_items_faiss_index_binary_hash_visits(nested_data, bucket_bits, nflip):
    index, db, q = nested_data["clustered"]
    reference = faiss.IndexBinaryHash(64, bucket_bits)
    reference.add(pack_codes(db))
    reference.nflip = nflip
    lims, _, ref_ids = reference.range_search(pack_codes(q), 65)  # radius above any distance: all visited
    _, ids = index.search_buckets(q, len(db), bucket_bits=bucket_bits, nflip=nflip)
    for r in range(len(q)):
        assert set(ids[r][ids[r] >= 0].tolist()) == set(ref_ids[lims[r] : lims[r + 1]].tolist())


@pytest.mark.parametrize("regime", ["clustered", "blocky"])
def test_nested_precomputed_shortlist_table_gives_same_results(nested_data, regime):
    _, db, q = nested_data[regime]
    index = NestedIndex(LENGTHS)
    index.add(db)
    plain = index.search_shortlist(q, 10, prefix_bits=16, shortlist=120)
    funnel = index.search_funnel(q, 10, bits=(16, 32, 64), shortlists=(120, 40))
    n_bytes = index.build_shortlist_table(16, 120)
    n_keys = len(np.unique(pack_codes(db[:, :16]), axis=0))
    assert n_bytes == n_keys * 120 * 4
    assert index.memory_usage()["shortlist_table_16_120"] == n_bytes
    # the random half of the queries mostly has prefixes absent from the database: computed, not looked up
    for a, b in zip(plain, index.search_shortlist(q, 10, prefix_bits=16, shortlist=120)):
        assert np.array_equal(a, b)
    for a, b in zip(funnel, index.search_funnel(q, 10, bits=(16, 32, 64), shortlists=(120, 40))):
        assert np.array_equal(a, b)
    index.add(db[:5])  # the table is dropped; results follow the grown database
    exp_i, exp_d = oracle_topk(
        hamming(q, np.concatenate([db, db[:5]]), 64), 10,
        candidates=oracle_topk(hamming(q, np.concatenate([db, db[:5]]), 16), 120)[0],
    )
    assert_rows(*index.search_shortlist(q, 10, prefix_bits=16, shortlist=120), exp_i, exp_d, 10)


@pytest.mark.parametrize("n_threads", [1, 3])
def test_nested_results_do_not_depend_on_threads(nested_data, n_threads):
    index, db, q = nested_data["blocky"]
    other = NestedIndex(LENGTHS, n_threads=n_threads)
    other.add(db)
    calls = [
        lambda x: x.search_shortlist(q, 10, prefix_bits=8, shortlist=200),
        lambda x: x.search_buckets(q, 10, bucket_bits=16, nflip=2),
    ]
    for call in calls:
        for a, b in zip(call(index), call(other)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("regime", ["clustered", "random"])
def test_nested_funnel_matches_oracle(nested_data, regime):
    index, db, q = nested_data[regime]
    k = 12
    stage1, _ = oracle_topk(hamming(q, db, 8), 300)
    stage2, _ = oracle_topk(hamming(q, db, 16), 60, candidates=stage1)
    exp_i, exp_d = oracle_topk(hamming(q, db, 64), k, candidates=stage2)
    d, i, stats = index.search_funnel(q, k, bits=(8, 16, 64), shortlists=(300, 60), return_stats=True)
    assert_rows(d, i, exp_i, exp_d, k)
    assert stats.rerank_bits == (16, 64) and stats.candidates == (300.0, 60.0)
    assert stats.bits_scanned == pytest.approx(8 * stats.prefix_keys + 16 * 300 + 64 * 60)


def test_nested_incremental_add_equals_one_shot():
    rng = np.random.default_rng(6)
    db, q = clustered(rng, 900, 64), pm1(rng, 15, 64)
    one = NestedIndex(LENGTHS)
    one.add(db)
    inc = NestedIndex(LENGTHS)
    inc.add(db[:300])
    inc.search_shortlist(q, 5, prefix_bits=16, shortlist=50)  # builds caches that add() must update
    inc.search(q, 5, bits=16)
    inc.search_buckets(q, 5, bucket_bits=8, nflip=1, backend="faiss")
    inc.add(pack_codes(db[300:700]))
    inc.add(torch.from_numpy(db[700:].astype(np.float32)))
    assert len(inc) == 900 and np.array_equal(inc.codes(), one.codes())
    calls = [
        lambda x: x.search(q, 20),
        lambda x: x.search(q, 20, bits=16),
        lambda x: x.search_shortlist(q, 20, prefix_bits=16, shortlist=50),
        lambda x: x.search_buckets(q, 20, bucket_bits=8, nflip=1, backend="faiss"),
        lambda x: x.search_buckets(q, 20, bucket_bits=8, nflip=1, backend="numpy"),
    ]
    for call in calls:
        for a, b in zip(call(one), call(inc)):
            assert np.array_equal(a, b)


def test_nested_save_load(tmp_path):
    rng = np.random.default_rng(7)
    db, q = clustered(rng, 400, 64), pm1(rng, 6, 64)
    index = NestedIndex(LENGTHS)
    index.add(db)
    path = tmp_path / "nested.idx"  # saved at exactly this path, no suffix added
    index.save(path)
    loaded = NestedIndex.load(path)
    assert loaded.code_lengths == LENGTHS and np.array_equal(loaded.codes(), index.codes())
    for a, b in zip(index.search_shortlist(q, 9, prefix_bits=16, shortlist=40),
                    loaded.search_shortlist(q, 9, prefix_bits=16, shortlist=40)):
        assert np.array_equal(a, b)
    with pytest.raises(FileNotFoundError):
        NestedIndex.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, something=np.zeros(3))
    with pytest.raises(KeyError, match="packed"):
        NestedIndex.load(other)


def test_nested_errors(nested_data):
    index, _, q = nested_data["random"]
    with pytest.raises(ValueError, match="strictly increasing"):
        NestedIndex((16, 8))
    with pytest.raises(ValueError, match="multiple of 8"):
        NestedIndex((12, 24))
    with pytest.raises(ValueError, match="not one of code_lengths"):
        index.search_shortlist(q, 5, prefix_bits=24, shortlist=50)
    with pytest.raises(ValueError, match=">= k"):
        index.search_shortlist(q, 50, prefix_bits=16, shortlist=20)
    with pytest.raises(ValueError, match="exactly one"):
        index.search_shortlist(q, 5, prefix_bits=16, shortlist=20, radius=2)
    with pytest.raises(ValueError, match="exceeds"):
        index.search(q, len(index) + 1)
    with pytest.raises(ValueError, match="width 32"):
        index.search(q[:, :32], 5)
    with pytest.raises(ValueError, match="at most 64"):
        big = NestedIndex((64, 128))
        big.add(np.ones((3, 128)))
        big.search_buckets(np.ones((1, 128)), 1, bucket_bits=128, nflip=0)
    with pytest.raises(ValueError, match="nflip"):
        index.search_buckets(q, 5, bucket_bits=16, nflip=-1)
    with pytest.raises(ValueError, match="increasing"):
        index.search_funnel(q, 5, bits=(16, 8, 64), shortlists=(100, 50))
    with pytest.raises(ValueError, match="non-increasing"):
        index.search_funnel(q, 5, bits=(8, 16, 64), shortlists=(50, 100))
    with pytest.raises(ValueError, match="empty"):
        NestedIndex(LENGTHS).search_buckets(q, 5, bucket_bits=8, nflip=1)
    with pytest.raises(ValueError, match="rerank_bits >= 64"):
        index.search_buckets(q, 5, bucket_bits=8, nflip=1, rerank_bits=32, backend="faiss")
    with pytest.raises(ValueError, match="backend"):
        index.search_buckets(q, 5, bucket_bits=8, nflip=1, backend="gpu")
    with pytest.raises(ValueError, match="n_threads"):
        NestedIndex(LENGTHS, n_threads=0)


# ----------------------------------------------------------------------------- ranking metrics


def test_ranking_metrics_hand_computed():
    ids = np.array([[0, 1, 2], [3, 4, -1], [1, 3, 4]])
    db_labels = np.array([0, 1, 0, 2, 2])
    q_labels = np.array([0, 2, 1])
    # q0: relevant at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; q1: ranks 1, 2 -> AP = 1; q2: rank 1 -> 1
    m = ranking_metrics(ids, q_labels, db_labels, 3)
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 + 1) / 3)
    assert m["precision"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    # k=1 uses the first column only; a zero-hit query counts 0
    m1 = ranking_metrics(np.array([[1], [3]]), np.array([0, 2]), db_labels, 1)
    assert m1 == {"map": pytest.approx(0.5), "precision": pytest.approx(0.5)}


def test_ranking_metrics_multi_hot_matches_loop():
    rng = np.random.default_rng(8)
    db_labels = (rng.random((60, 4)) < 0.3).astype(np.float32)
    q_labels = (rng.random((7, 4)) < 0.3).astype(np.float32)
    ids = np.stack([rng.permutation(60)[:10] for _ in range(7)])
    ids[0, 5:] = -1
    k = 8
    aps, precs = [], []
    for r in range(7):
        hits, total = 0, 0.0
        for rank, j in enumerate(ids[r, :k], start=1):
            if j >= 0 and any(q_labels[r, c] > 0 and db_labels[j, c] > 0 for c in range(4)):
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
        precs.append(hits / k)
    m = ranking_metrics(ids, q_labels, db_labels, k)
    assert m["map"] == pytest.approx(np.mean(aps)) and m["precision"] == pytest.approx(np.mean(precs))


def test_ranking_metrics_errors():
    ids = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="fewer than k"):
        ranking_metrics(ids, np.zeros(2), np.zeros(5), 4)
    with pytest.raises(ValueError, match="both"):
        ranking_metrics(ids, np.zeros(2), np.zeros((5, 3)), 2)
    with pytest.raises(ValueError, match="rows"):
        ranking_metrics(ids, np.zeros(3), np.zeros(5), 2)
    with pytest.raises(ValueError, match="lie in"):
        ranking_metrics(ids + 7, np.zeros(2), np.zeros(5), 2)
