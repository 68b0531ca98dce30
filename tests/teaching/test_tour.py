"""Helpers of the tour notebook: toy codes at exact distances, distance histograms against a pair loop,
figures built from small hand-made frames, and clear errors."""

import itertools
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from nhllib.core.losses import build_losses
from nhllib.teaching import tour
from nhllib.training.config import RunConfig

REPO = Path(__file__).resolve().parents[2]


def loop_distance(a, b):
    return sum(1 for x, y in zip(a.tolist(), b.tolist()) if (x >= 0) != (y >= 0))


@pytest.fixture
def tiny():
    gen = torch.Generator().manual_seed(0)
    longest = torch.randn(5, 8, generator=gen)
    db_longest = torch.randn(7, 8, generator=gen)
    q_labels = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1])]
    db_labels = torch.eye(3)[torch.tensor([0, 0, 1, 2, 2, 1, 0])]
    db_labels[3, 0] = 1  # one multi-label item: relevant to classes 0 and 2
    q = {4: longest[:, :4], 8: longest}
    db = {4: db_longest[:, :4], 8: db_longest}
    return q, q_labels, db, db_labels


def test_codes_at_distances_exact_and_seeded():
    query = torch.tensor([1.0, -1, 1, 1, -1, -1, 1, -1])
    distances = [0, 1, 3, 8, 3]
    codes = tour.codes_at_distances(query, distances, seed=3)
    assert codes.shape == (5, 8)
    assert [loop_distance(query, row) for row in codes] == distances
    assert torch.equal(codes, tour.codes_at_distances(query, distances, seed=3))
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("distances, match", [([9], "0..8"), ([-1], "0..8"), ([], "at least one"),
                                               ([1.5], "ints")])
def test_codes_at_distances_rejects_bad_distances(distances, match):
    with pytest.raises(ValueError, match=match):
        tour.codes_at_distances(torch.ones(8), distances)


def test_codes_at_distances_rejects_non_pm_one_query():
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        tour.codes_at_distances(torch.tensor([1.0, 0.0]), [1])


def test_hamming_histograms_match_pair_loop(tiny):
    q, q_labels, db, db_labels = tiny
    frame = tour.hamming_histograms(q, q_labels, db, db_labels)
    for length in (4, 8):
        expected = {("relevant", d): 0 for d in range(length + 1)}
        expected.update({("irrelevant", d): 0 for d in range(length + 1)})
        for i, j in itertools.product(range(5), range(7)):
            shared = any(a == 1 and b == 1 for a, b in zip(q_labels[i].tolist(), db_labels[j].tolist()))
            expected[("relevant" if shared else "irrelevant", loop_distance(q[length][i], db[length][j]))] += 1
        part = frame[frame["code_length"] == length]
        got = {(r.pair, r.distance): r.count for r in part.itertuples()}
        assert got == expected
        for pair in ("relevant", "irrelevant"):
            fractions = part[part["pair"] == pair]["fraction"]
            assert fractions.sum() == pytest.approx(1.0)
    assert frame["count"].sum() == 2 * 5 * 7


def test_hamming_histograms_errors(tiny):
    q, q_labels, db, db_labels = tiny
    with pytest.raises(ValueError, match="same lengths"):
        tour.hamming_histograms(q, q_labels, {8: db[8]}, db_labels)
    with pytest.raises(ValueError, match="must have 4 bits"):
        tour.hamming_histograms({4: q[8]}, q_labels, {4: db[8]}, db_labels)
    with pytest.raises(ValueError, match="db_labels"):
        tour.hamming_histograms(q, q_labels, db, db_labels[:3])
    with pytest.raises(TypeError, match="dict"):
        tour.hamming_histograms(q[8], q_labels, db, db_labels)


def test_plot_codes_rows_sorted_by_class():
    labels = torch.eye(3)[torch.tensor([2, 0, 1, 0, 2, 1, 0])]
    codes = torch.arange(7).float().unsqueeze(1).repeat(1, 16) - 3  # row i: all bits sign(i - 3)
    fig = tour.plot_codes(codes, labels, per_class=2, class_names=["a", "b", "c"], boundaries=(8,))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    # class 0: items 1, 3; class 1: items 2, 5; class 2: items 0, 4 -> signs of (i - 3)
    assert image[:, 0].tolist() == [-1, 1, -1, 1, -1, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="class_names"):
        tour.plot_codes(codes, labels, class_names=["a"])
    with pytest.raises(ValueError, match="per_class"):
        tour.plot_codes(codes, labels, per_class=0)


def test_plot_map_by_length():
    maps = pd.DataFrame([{"code_length": length, "ties": ties, "map": value}
                         for length in (8, 16) for ties, value in
                         (("pessimistic", 0.2), ("expected", 0.3), ("optimistic", 0.4), ("index", 0.31))])
    fig = tour.plot_map_by_length(maps)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="unknown tie rules"):
        tour.plot_map_by_length(maps.assign(ties="random"))
    with pytest.raises(KeyError, match="ties"):
        tour.plot_map_by_length(maps.drop(columns="ties"))


def test_plot_hamming_distributions(tiny):
    frame = tour.hamming_histograms(*tiny)
    fig = tour.plot_hamming_distributions(frame)
    assert [ax.get_title().split()[0] for ax in fig.axes if ax.get_visible()] == ["4", "8"]
    with pytest.raises(ValueError, match="empty"):
        tour.plot_hamming_distributions(frame.iloc[0:0])


def test_plot_conflicts_weighted_pair_means():
    rows = []
    for epoch, steps, rate in ((1, 10, 0.5), (2, 30, 0.1)):
        for short, long in ((8, 16), (8, 32), (16, 32)):
            rows.append({"epoch": epoch, "short_length": short, "long_length": long, "steps": steps,
                         "conflict_rate": rate, "mean_cosine": -rate})
    weights = pd.DataFrame([{"epoch": e, "code_length": c, "weight": 1.0} for e in (1, 2) for c in (8, 16, 32)])
    fig = tour.plot_conflicts(pd.DataFrame(rows), weights)
    texts = [t.get_text() for t in fig.axes[0].texts]
    # step-weighted: (10 * 0.5 + 30 * 0.1) / 40 = 0.2 for each of the three pairs
    assert texts == ["0.20"] * 3
    assert {t.get_color() for t in fig.axes[0].texts} == {"black"}  # light cells get dark text
    dark = tour.plot_conflicts(pd.DataFrame(rows).assign(conflict_rate=1.0))
    assert {t.get_color() for t in dark.axes[0].texts} == {"white"}
    assert "40 measured steps" in fig._suptitle.get_text()
    assert len(tour.plot_conflicts(pd.DataFrame(rows)).axes) == 4  # two panels + two colour bars
    with pytest.raises(KeyError, match="steps"):
        tour.plot_conflicts(pd.DataFrame(rows).drop(columns="steps"))


# ----------------------------------------------------------------------------- diagrams and the conflict rule


@pytest.mark.parametrize("g_short, g_long, num_lengths", [([1.0, 0.0], [0.6, 0.9], 4), ([1.0, 0.0], [-0.25, 1.0], 4),
                                                           ([1.0, 0.0], [-1.2, 0.6], 4), ([2.0, 1.0], [-3.0, 0.5], 2),
                                                           ([0.5, -1.0, 2.0], [-0.4, 1.0, -0.9], 5)])
def test_pair_rule_matches_the_formula(g_short, g_long, num_lengths):
    dot = sum(a * b for a, b in zip(g_short, g_long))
    tau = sum(a * a for a in g_short) / (num_lengths - 1)
    alpha = tau / -dot if dot < 0 and -dot > tau else 1.0
    rule = tour.pair_rule(g_short, g_long, num_lengths)
    assert rule["dot"] == pytest.approx(dot, rel=1e-6)
    assert rule["tau"] == pytest.approx(tau)
    assert rule["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert rule["conflict"] == float(dot < 0)


def test_pair_rule_errors():
    with pytest.raises(ValueError, match="one size"):
        tour.pair_rule([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="num_lengths"):
        tour.pair_rule([1.0], [1.0], num_lengths=1)


def test_plot_conflict_rule_titles_say_what_the_rule_did():
    fig = tour.plot_conflict_rule([([1.0, 0.0], [0.6, 0.9]), ([1.0, 0.0], [-0.25, 1.0]), ([1.0, 0.0], [-1.2, 0.6])])
    titles = [ax.get_title() for ax in fig.axes]
    assert "no conflict" in titles[0] and "α = 1" in titles[1] and "α = 0.28" in titles[2]
    with pytest.raises(ValueError, match="2-D"):
        tour.plot_conflict_rule([([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])])
    with pytest.raises(ValueError, match="at least one"):
        tour.plot_conflict_rule([])


def test_plot_nested_layer_bands_every_length():
    fig = tour.plot_nested_layer([8, 16, 32, 64], in_features=512)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert {"rows 0–7", "rows 8–15", "rows 16–31", "rows 32–63"} <= set(texts)
    assert any("Linear(512, 64)" in t for t in texts)
    with pytest.raises(ValueError, match="strictly increasing"):
        tour.plot_nested_layer([16, 8], 64)


def test_target_agreement_finds_the_csq_classes_whose_8_bit_centres_contradict():
    losses = build_losses("csq", (8, 16, 32), num_classes=10, num_train=20, nested=True, targets="independent")
    table = tour.target_agreement(losses, [f"c{i}" for i in range(10)])
    assert list(table.columns) == ["class", "8-bit = prefix", "16-bit = prefix"]
    assert table.loc[~table["8-bit = prefix"], "class"].tolist() == ["c8", "c9"]
    assert table["16-bit = prefix"].all()
    assert tour.target_agreement(build_losses("dtsh", (8, 16), 10, 20, nested=True)).empty
    assert tour.same_targets(losses, build_losses("csq", (8, 16, 32), 10, 20, nested=True, targets="independent"))
    assert not tour.same_targets(losses, build_losses("csq", (8, 16, 32), 12, 20, nested=True))


def test_plot_map_against_references_draws_references_dashed():
    table = pd.DataFrame({8: [0.6, 0.2, 0.1], 16: [0.7, 0.25, 0.1]},
                         index=["nhl", "untrained network (reference)", "same code for every image (chance)"])
    fig = tour.plot_map_against_references(table)
    styles = [line.get_linestyle() for line in fig.axes[0].get_lines()]
    assert styles == ["-", "--", "--"]
    with pytest.raises(ValueError, match="non-empty"):
        tour.plot_map_against_references(table.iloc[0:0])


# ----------------------------------------------------------------------------- training runs (synthetic data)

#: The tour's setting, shrunk (conftest's tiny_config supplies the rest).
TOUR_RUN = dict(study="tour", method="csq", variant="nhl", code_lengths=(8, 16), backbone="mlp", query_per_class=5,
                train_per_class=20, val_per_class=5, database_per_class=30, epochs=2, eval_every=1, seed=0,
                patience=3, batch_size=64, eval_batch_size=1024)


def test_train_run_separate_and_tables(tiny_config):
    cfg = tiny_config(**TOUR_RUN)
    run = tour.train_run(cfg, targets="independent", label="nhl")
    assert set(run.query_map) == {8, 16} and set(run.untrained_map) == {8, 16}
    assert 0.0 < run.chance_map < 0.2  # ten balanced classes: about 0.1
    assert run.result.epochs_run == 2 and run.wall_s >= run.result.train_time_s > 0
    separate = tour.train_separate(cfg)
    assert set(separate.query_map) == {8, 16} and separate.result.train_time_s > 0
    table = tour.map_table([run, separate])
    assert list(table.index) == ["nhl", "separate", "untrained network (reference)",
                                 "same code for every image (chance)"]
    assert list(table.columns) == [8, 16]
    times = tour.time_table([run, separate])
    assert list(times.index) == ["nhl", "separate"] and (times["epochs"] == 2).all()
    summary = tour.conflict_summary(run)
    assert list(summary.index) == ["8|16"] and 0 <= summary.loc["8|16", "conflict_rate"] <= 1
    weights = tour.weight_summary([run, separate])
    assert list(weights.index) == ["nhl"] and weights.loc["nhl"].sum() == pytest.approx(2.0, abs=1e-3)
    runs, note = tour.compare_targets(cfg, first=run)
    assert runs[0] is run and isinstance(note, str) and note
    if len(runs) == 2:  # the nhllib version builds different nested targets: the second run is trained
        assert runs[1].targets == "nested" and "same network" in note
    else:
        assert "not trained" in note
    with pytest.raises(ValueError, match="targets"):
        tour.train_run(cfg, targets="shared")


@pytest.mark.slow
def test_tour_notebook_runs_end_to_end(tmp_path, tiny_data):
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    out = tmp_path / "00_tour.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "00_tour.ipynb"), str(out),
        parameters={"data_dir": str(tmp_path / "data"), "epochs": 2, "query_per_class": 5, "train_per_class": 20,
                    "val_per_class": 5, "database_per_class": 30, "codes_per_class": 2},
        cwd=str(REPO), kernel_name="python3", progress_bar=False,
    )
    executed = nbformat.read(out, as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    # nested layer, conflict rule, mAP against references, mAP by tie rule, codes, distance distributions, conflicts
    assert len(images) == 7
    text = "\n".join(o.get("data", {}).get("text/plain", "") for c in executed.cells if c.cell_type == "code"
                     for o in c.outputs)
    assert "untrained network (reference)" in text and "separate" in text
    assert list((tmp_path / "data" / "splits").iterdir())  # the only file the tour writes: its split


def test_resolve_data_dir_from_the_notebooks_folder(tmp_path, monkeypatch):
    (tmp_path / "nhllib").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert tour.resolve_data_dir("data") == str(Path("..") / "data")
    assert tour.resolve_data_dir(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    assert tour.resolve_data_dir("data") == "data"


def test_compare_targets_trains_a_second_run_when_nested_targets_differ(tiny_config, monkeypatch):
    # Stand-in for a CSQ `nest` hook that derives the shorter centres from the longest one's prefix (what
    # targets="nested" is for); the tour must then train the second run and find no contradiction in it.
    from nhllib.core.losses import CSQLoss

    def nest(cls, losses, *, targets="nested"):
        if targets == "nested":
            for loss in losses[:-1]:
                loss.centers = losses[-1].centers[:, :loss.code_length].clone()

    monkeypatch.setattr(CSQLoss, "nest", classmethod(nest))
    cfg = tiny_config(**{**TOUR_RUN, "epochs": 1})
    runs, note = tour.compare_targets(cfg)
    assert [r.targets for r in runs] == ["independent", "nested"] and "every shorter target is the prefix" in note
    assert not tour.target_agreement(runs[0].built.losses)["8-bit = prefix"].all()
    assert tour.target_agreement(runs[1].built.losses)["8-bit = prefix"].all()
    assert list(tour.weight_summary(runs).index) == ["nhl, independent targets", "nhl, nested targets"]


def _story_run(method, losses):
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(hashing=SimpleNamespace(method=method)),
                           built=SimpleNamespace(losses=losses))


def test_targets_story_follows_the_method():
    from types import SimpleNamespace

    triplet = tour.targets_story(_story_run("dtsh", [torch.nn.Identity(), torch.nn.Identity()]))
    assert "**dtsh** has no per-class target codes" in triplet and "CSQ" not in triplet
    long = torch.tensor([[1.0, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, -1]])
    agree = [SimpleNamespace(centers=long[:, :2]), SimpleNamespace(centers=long)]
    assert "agree across lengths" in tour.targets_story(_story_run("csq", agree), ["a", "b", "c"])
    short = long[:, :2].clone()
    short[2] = -short[2]
    story = tour.targets_story(_story_run("csq", [SimpleNamespace(centers=short), SimpleNamespace(centers=long)]),
                               ["a", "b", "c"])
    assert "For 1 of 3 classes" in story and "c (2 bits)" in story
