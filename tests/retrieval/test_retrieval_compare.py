"""Tests for nhllib.retrieval.compare (strategy comparison, run codes) and plots.plot_retrieval_tradeoff.

Oracles are independent of the library: rankings by Python's ``sorted`` on (Hamming distance, id), AP by a
plain loop, bits scanned from the definition.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from nhllib import plots
from nhllib.analysis.selection import find_run
from nhllib.retrieval.compare import (
    compare_strategies,
    default_configs,
    summarize_tradeoff,
    summary,
)
from nhllib.store.results import read_codes as load_run_codes

pytest.importorskip("faiss")

LENGTHS = (8, 16, 32)


@pytest.fixture(scope="module")
def nested():
    """Clustered ±1 codes (many equal prefixes: ties, big buckets), labels = the cluster, with 15% noise."""
    rng = np.random.default_rng(7)
    centres = rng.choice(np.array([-1, 1], dtype=np.int8), size=(5, 32))

    def draw(n):
        labels = rng.integers(0, 5, n)
        codes = centres[labels]
        codes = np.where(rng.random((n, 32)) < 0.15, -codes, codes).astype(np.int8)
        return codes, labels

    db, db_labels = draw(120)
    q, q_labels = draw(12)
    return q, db, q_labels, db_labels


def oracle_map(q, db, q_labels, db_labels, k, bits):
    """mAP@k of exact (distance, id) ranking at ``bits``, by plain loops."""
    aps = []
    for i in range(len(q)):
        dist = [int((q[i, :bits] != db[j, :bits]).sum()) for j in range(len(db))]
        ranking = sorted(range(len(db)), key=lambda j: (dist[j], j))[:k]
        hits, total = 0, 0.0
        for rank, j in enumerate(ranking, start=1):
            if db_labels[j] == q_labels[i]:
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
    return float(np.mean(aps))


def test_full_shortlists_equal_exhaustive_and_metrics_match_the_oracle(nested):
    q, db, q_labels, db_labels = nested
    n = len(db)
    configs = [
        {"strategy": "shortlist", "prefix_bits": 16, "shortlist": n},
        {"strategy": "shortlist_table", "prefix_bits": 8, "shortlist": n},
        {"strategy": "buckets", "bucket_bits": 16, "nflip": 16},  # every bucket
        {"strategy": "funnel", "bits": (8, 16, 32), "shortlists": (n, n)},
    ]
    frame = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=50, configs=configs, rounds=1,
                               precision_k=10, n_threads=1)
    assert frame["strategy"].tolist() == ["exhaustive", "shortlist", "shortlist_table", "buckets", "funnel"]
    assert frame["map_ratio"].tolist() == [1.0] * 5
    assert frame["precision_ratio"].tolist() == [1.0] * 5
    assert frame["overlap_at_k"].tolist() == [1.0] * 5
    assert frame["map_at_k"].iloc[0] == pytest.approx(oracle_map(q, db, q_labels, db_labels, 50, 32))
    # bits scanned, from the definition: exhaustive scans 32 bits of every item; a whole-database shortlist
    # skips the prefix stage and re-ranks every item at 32 bits
    assert frame.loc[0, "bits_scanned"] == 32 * n
    assert frame.loc[1, "bits_scanned"] == 32 * n
    assert (frame["k"] == 50).all() and (frame["db_size"] == n).all() and (frame["n_queries"] == len(q)).all()
    assert frame.loc[0, "speedup"] == pytest.approx(1.0)


def test_columns_and_a_real_shortlist(nested):
    q, db, q_labels, db_labels = nested
    configs = [{"strategy": "shortlist", "prefix_bits": 8, "shortlist": 30}]
    frame = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=20, configs=configs, rounds=2,
                               precision_k=10, n_threads=1)
    for column in ("configuration", "strategy", "parameters", "short_label", "queries_per_s", "ms_per_query",
                   "bits_scanned", "map_at_k", "precision_at_10", "map_ratio", "precision_ratio", "speedup",
                   "overlap_at_k", "time_median_s", "first_call_s", "candidates_per_query"):
        assert column in frame.columns, column
    row = frame.iloc[1]
    assert row["parameters"] == "8→32, s=30" and row["candidates_per_query"] == 30
    assert row["ms_per_query"] == pytest.approx(1000 / row["queries_per_s"])
    # the shortlist is the 30 best by the 8-bit prefix: the final top-20 is an exact re-rank of it
    expected_ids = []
    for i in range(len(q)):
        d8 = [int((q[i, :8] != db[j, :8]).sum()) for j in range(len(db))]
        short = sorted(range(len(db)), key=lambda j: (d8[j], j))[:30]
        d32 = {j: int((q[i] != db[j]).sum()) for j in short}
        expected_ids.append(sorted(short, key=lambda j: (d32[j], j))[:20])
    hits = [len(set(e) & set(sorted(range(len(db)), key=lambda j: (int((q[i] != db[j]).sum()), j))[:20])) / 20
            for i, e in enumerate(expected_ids)]
    assert row["overlap_at_k"] == pytest.approx(np.mean(hits))
    assert list(summary(frame).columns)[:3] == ["configuration", "strategy", "ms_per_query"]


def test_filled_at_k_counts_the_slots_a_bucket_search_fills(nested):
    q, db, q_labels, db_labels = nested
    frame = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=40, rounds=1, n_threads=1,
                               configs=[{"strategy": "buckets", "bucket_bits": 8, "nflip": 0}])
    # candidates: the items whose 8-bit prefix equals the query's
    same = [sum(bool((db[j, :8] == q[i, :8]).all()) for j in range(len(db))) for i in range(len(q))]
    assert frame.loc[1, "filled_at_k"] == pytest.approx(np.mean([min(c, 40) / 40 for c in same]))
    assert frame.loc[1, "candidates_per_query"] == pytest.approx(np.mean(same))
    assert frame.loc[0, "filled_at_k"] == 1.0


def test_invalid_configs_are_skipped_and_the_reference_is_added(nested, caplog):
    q, db, q_labels, db_labels = nested
    configs = [
        {"strategy": "shortlist", "prefix_bits": 64, "shortlist": 50},  # no 64-bit code
        {"strategy": "shortlist", "prefix_bits": 16, "shortlist": 5},  # below k
        {"strategy": "buckets", "bucket_bits": 32, "nflip": 1},  # prefix not shorter than the ranking length
        {"strategy": "faiss_hash", "bucket_bits": 16, "nflip": 1},  # needs >= 64-bit codes
        {"strategy": "exhaustive", "bits": 16},
    ]
    with caplog.at_level(logging.WARNING, logger="nhllib.retrieval.compare"):
        frame = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, configs=configs, rounds=1,
                                   precision_k=10, n_threads=1)
    assert frame["configuration"].tolist() == ["exhaustive 32 bits", "exhaustive 16 bits"]
    assert sum("skipped configuration" in r.getMessage() for r in caplog.records) == 4


def test_default_configs_follow_the_lengths():
    smoke = default_configs((8, 16, 32), k=300, n_db=300)
    assert {c["strategy"] for c in smoke} == {"exhaustive", "buckets"}  # every shortlist would be >= n or < k
    assert all(c.get("bucket_bits", 16) == 16 for c in smoke)
    assert {c["strategy"] for c in default_configs((8, 32), 10, 1000)} == {"exhaustive"}
    full = default_configs((8, 16, 32, 64, 128), k=100, n_db=1000)
    assert sorted(c["shortlist"] for c in full if c["strategy"] == "shortlist") == [500]
    assert {c["prefix_bits"] for c in full if "prefix_bits" in c} == {16}
    assert {c["nflip"] for c in full if c["strategy"] == "buckets"} == {0, 1, 2}
    assert {c["prefix_bits"] for c in default_configs((8, 24, 48), 10, 10_000) if "prefix_bits" in c} == {24}


def test_k_is_clamped_to_the_database(nested, caplog):
    q, db, q_labels, db_labels = nested
    with caplog.at_level(logging.WARNING, logger="nhllib.retrieval.compare"):
        frame = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=1000, rounds=1, n_threads=1)
    assert (frame["k"] == len(db)).all()
    assert any("exceeds the database size" in r.getMessage() for r in caplog.records)
    assert set(frame["strategy"]) == {"exhaustive", "buckets"}


def test_bad_configs_and_arguments_raise(nested):
    q, db, q_labels, db_labels = nested
    with pytest.raises(ValueError, match="strategy must be one of"):
        compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, configs=[{"strategy": "hnsw"}])
    with pytest.raises(ValueError, match=r"needs the parameters \['shortlist'\]"):
        compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, configs=[{"strategy": "shortlist",
                                                                                "prefix_bits": 8}])
    with pytest.raises(ValueError, match="duplicate configurations"):
        compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, configs=[{"strategy": "exhaustive"}] * 2)
    with pytest.raises(ValueError, match="labels"):
        compare_strategies(q, db, q_labels[:3], db_labels, LENGTHS, k=10)
    with pytest.raises(ValueError, match="rounds"):
        compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, rounds=0)


# ----------------------------------------------------------------------------- run codes


def save_like_a_run(path, q, db, q_labels, db_labels, lengths):
    """codes.npz in the format nhllib.training.experiment writes (packbits of code > 0, multi-hot uint8 labels)."""
    onehot = np.eye(5, dtype=np.uint8)
    np.savez_compressed(path, query_codes=np.packbits(q > 0, axis=1), db_codes=np.packbits(db > 0, axis=1),
                        code_length=max(lengths), code_lengths=np.array(lengths),
                        query_labels=onehot[q_labels], db_labels=onehot[db_labels])


def test_load_run_codes_round_trip(tmp_path, nested):
    q, db, q_labels, db_labels = nested
    save_like_a_run(tmp_path / "codes.npz", q, db, q_labels, db_labels, LENGTHS)
    qc, dc, ql, dl, lengths = load_run_codes(tmp_path)
    assert lengths == LENGTHS and qc.dtype == np.uint8 and qc.shape == (len(q), 4)
    assert np.array_equal(np.unpackbits(dc, axis=1).astype(np.int8) * 2 - 1, db)
    assert np.array_equal(ql.argmax(1), q_labels)
    # multi-hot labels from the file give the same metrics as the class ids
    frame_ids = compare_strategies(q, db, q_labels, db_labels, LENGTHS, k=10, configs=[], rounds=1, n_threads=1)
    frame_file = compare_strategies(qc, dc, ql, dl, lengths, k=10, configs=[], rounds=1, n_threads=1)
    assert frame_file["map_at_k"].tolist() == frame_ids["map_at_k"].tolist()
    # ±1 codes in the file are packed on loading; the .npz path itself is accepted
    np.savez(tmp_path / "pm1.npz", query_codes=q, db_codes=db, query_labels=q_labels, db_labels=db_labels,
             code_lengths=np.array(LENGTHS))
    assert np.array_equal(load_run_codes(tmp_path / "pm1.npz")[1], dc)


def test_load_run_codes_errors(tmp_path, nested):
    with pytest.raises(FileNotFoundError, match=r"no codes file at .*codes\.npz"):
        load_run_codes(tmp_path)
    q, db, q_labels, db_labels = nested
    np.savez(tmp_path / "codes.npz", query_codes=q, db_codes=db, query_labels=q_labels)
    with pytest.raises(KeyError, match="db_labels"):
        load_run_codes(tmp_path)
    save_like_a_run(tmp_path / "codes.npz", q, db, q_labels, db_labels, (8, 16))
    with pytest.raises(ValueError, match="32 bits wide but code_lengths is"):
        load_run_codes(tmp_path)


def test_find_run_names_what_is_missing(tmp_path):
    (tmp_path / "mystudy").mkdir()
    with pytest.raises(FileNotFoundError, match=r"method 'csq', variant 'nhl', seed 0 in study 'mystudy'"):
        find_run(tmp_path, "mystudy", "csq", "nhl", 0)


def test_find_run_picks_the_main_lambda(tmp_path):
    from nhllib.training.config import RunConfig
    from nhllib.store.results import RunStore

    made = {}
    for lam in (1.0, 1.0, 0.1):  # two runs at λ = 1 (seeds 0, 1) make it the main λ
        seed = 1 if lam == 1.0 and made else 0
        cfg = RunConfig.from_dict(dict(study="s", method="csq", variant="nhl", code_lengths=(8, 16), seed=seed,
                        distill_weight=lam, device="cpu"))
        folder = tmp_path / "s" / cfg.run_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "device": "cpu"}))
        RunStore(tmp_path, "s", cfg.run_id).mark_complete()  # its marker records config.json
        made[(seed, lam)] = folder
    assert find_run(tmp_path, "s", "csq", "nhl", 0) == made[(0, 1.0)]


# ----------------------------------------------------------------------------- summary and figure


def hand_frame() -> pd.DataFrame:
    rows = [  # configuration, strategy, ranking_bits, ms, bits, map_ratio, speedup
        ("exhaustive 128", "exhaustive", 128, 0.50, 1.28e6, 1.000, 1.0),
        ("exhaustive 16", "exhaustive", 16, 0.40, 1.6e5, 0.930, 1.25),
        ("shortlist a", "shortlist", 128, 0.20, 2.0e5, 0.995, 2.5),
        ("shortlist b", "shortlist", 128, 0.10, 1.0e5, 0.980, 5.0),
        ("buckets c", "buckets", 128, 0.25, 3.0e5, 0.992, 2.0),
    ]
    frame = pd.DataFrame(rows, columns=["configuration", "strategy", "ranking_bits", "ms_per_query", "bits_scanned",
                                        "map_ratio", "speedup"])
    return frame.assign(parameters=frame["configuration"], short_label=["128 b", "16 b", "a", "b", "c"],
                        map_at_k=0.8 * frame["map_ratio"], k=1000, db_size=10_000, n_queries=1000, rounds=3,
                        study="default", run_id="csq_nhl_x")


def test_summarize_tradeoff_picks_the_fastest_within_threshold():
    text = summarize_tradeoff(hand_frame())
    assert "shortlist a" in text and "2.50×" in text and "6.4× fewer bits" in text
    assert "shortlist b" in summarize_tradeoff(hand_frame(), threshold=0.98)
    assert "No nested configuration keeps 99.9%" in summarize_tradeoff(hand_frame(), threshold=0.999)
    with pytest.raises(KeyError, match="map_ratio"):
        summarize_tradeoff(hand_frame().drop(columns="map_ratio"))
    # a configuration that leaves result slots empty is not counted, however high its mAP ratio
    partial = hand_frame().assign(filled_at_k=[1, 1, 0.6, 1, 1])
    text = summarize_tradeoff(partial)
    assert "Not counted, since they return fewer than k items for some queries: shortlist a." in text
    assert "Fastest configuration within 1% of that mAP: buckets c" in text


def test_plot_retrieval_tradeoff_is_complete(tmp_path):
    fig = plots.plot_retrieval_tradeoff(hand_frame())
    assert isinstance(fig, Figure) and fig.get_suptitle()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    assert [ax.get_xlabel() for ax in visible] == ["time per query (ms, log scale)",
                                                   "bits scanned per query (log scale)"]
    assert all(ax.get_ylabel() == "mAP@1000 relative to exhaustive (1 = equal)" and ax.get_title() for ax in visible)
    assert all(ax.get_xscale() == "log" for ax in visible)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("exhaustive, longest code") and "99% of the exhaustive mAP" in legend
    assert "exhaustive, shorter code alone" in legend  # the 16-bit exhaustive row is not the reference
    captions = [t.get_text() for t in fig.texts if t.get_text().startswith("Source: study")]
    assert len(captions) == 1 and "run csq_nhl_x" in captions[0] and "10,000 items" in captions[0]
    # one marker per configuration in each panel: 5 points
    assert all(sum(len(c.get_offsets()) for c in ax.collections) == 5 for ax in visible)
    assert {p.name for p in plots.save_figure(fig, tmp_path, "retrieval_tradeoff")} == {
        "retrieval_tradeoff.png", "retrieval_tradeoff.pdf"}
    with pytest.raises(KeyError, match="bits_scanned"):
        plots.plot_retrieval_tradeoff(hand_frame().drop(columns="bits_scanned"))
    partial = plots.plot_retrieval_tradeoff(hand_frame().assign(filled_at_k=[1, 1, 0.6, 1, 1]))
    notes = [t.get_text() for ax in partial.axes for t in ax.texts]
    assert notes.count("a (60% of k filled)") == 2 and notes.count("b") == 2


def test_a_registered_strategy_runs_without_touching_the_comparison(monkeypatch):
    """A new strategy is one registry entry: here a shortlist under another name, which must give the same row."""
    from nhllib.retrieval import strategies

    monkeypatch.setitem(strategies.STRATEGY_REGISTRY, "my_shortlist", strategies.STRATEGY_REGISTRY["shortlist"])
    rng = np.random.default_rng(1)
    q, d = rng.standard_normal((20, 32)), rng.standard_normal((400, 32))
    ql, dl = rng.integers(0, 3, 20), rng.integers(0, 3, 400)
    configs = [{"strategy": s, "prefix_bits": 16, "shortlist": 100} for s in ("shortlist", "my_shortlist")]
    frame = compare_strategies(q, d, ql, dl, (16, 32), k=50, configs=configs, rounds=1)
    mine, theirs = frame.set_index("strategy").loc[["my_shortlist", "shortlist"], ["map_at_k", "bits_scanned"]].values
    assert list(mine) == list(theirs)
    with pytest.raises(ValueError, match="strategy must be one of .*my_shortlist"):
        compare_strategies(q, d, ql, dl, (16, 32), k=50, configs=[{"strategy": "nope"}], rounds=1)
