"""Issue 25, class 2: a complete run proves itself. Its COMPLETE marker records what it wrote; a table truncated,
emptied or stripped of a column afterwards is reported by run and folder at --list, by load_study (so by the
analysis), and redone by the driver with the damaged folder kept aside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nhllib.analysis.selection import load_study
from nhllib.store.results import HISTORY_COLUMNS, METRIC_COLUMNS, RunStore
from nhllib.store.run_manifest import DamagedRunError, check_run
from nhllib.study import load_profile, run_study
from nhllib.study import execution as E
from nhllib.study.cli import main
from nhllib.training.config import RunConfig

from tests.training.test_bad_inputs import _fake_execute, _tiny_profile

CFG = dict(study="tiny", code_lengths=(8, 16), variant="nhl", method="csq", seed=0, query_per_class=2,
           train_per_class=5, val_per_class=2, database_per_class=5, epochs=1, eval_every=1, patience=0,
           device="cpu")


def _complete_run(root: Path) -> RunStore:
    """A complete run as 01_train writes it, with small but well-formed tables."""
    cfg = RunConfig.from_dict(CFG)
    store = RunStore(root, cfg.study, cfg.run_id)
    store.prepare()
    store.write_json("config.json", {"config": cfg.to_dict()})
    rows = [{**{c: "x" for c in METRIC_COLUMNS}, "run_id": cfg.run_id, "study": "tiny", "method": "csq",
             "variant": "nhl", "code_length": n, "distill_weight": 1.0, "seed": 0, "metric": "map", "value": v}
            for n, v in ((8, 0.5), (16, 0.6))]
    store.write_rows("metrics.csv", rows, METRIC_COLUMNS)
    store.write_rows("history.csv", [{"epoch": e, "code_length": 8, "split": "val", "metric": "map", "value": 0.1}
                                     for e in range(4)], HISTORY_COLUMNS)
    store.mark_complete()
    return store


def _truncate(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _empty(path: Path) -> None:
    path.write_text("")


def _drop_column(path: Path) -> None:
    import pandas as pd

    pd.read_csv(path).drop(columns=["value"]).to_csv(path, index=False)


DAMAGE = {"truncate": (_truncate, "metrics.csv has 1 rows, the marker records 2"),
          "empty": (_empty, "metrics.csv has 0 rows, the marker records 2"),
          "drop a column": (_drop_column, "metrics.csv differs from what the run wrote"),
          "truncated history": (lambda p: _truncate(p.parent / "history.csv"),
                                "history.csv has 3 rows, the marker records 4"),
          "deleted": (lambda p: p.unlink(), "metrics.csv is missing")}


def test_the_marker_records_files_rows_and_checksums(tmp_path):
    store = _complete_run(tmp_path)
    record = json.loads((store.path / "COMPLETE").read_text())
    assert record["files"]["metrics.csv"]["rows"] == 2 and record["files"]["history.csv"]["rows"] == 4
    assert len(record["files"]["metrics.csv"]["sha256"]) == 64 and "config.json" in record["files"]
    assert check_run(store.path).status == "verified"


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_run_is_reported_at_list_by_load_study_and_redone_aside(tmp_path, monkeypatch, capsys, how):
    damage, message = DAMAGE[how]
    store = _complete_run(tmp_path / "res")
    damage(store.path / "metrics.csv")
    profile = _tiny_profile(tmp_path)
    before = sorted(p.name for p in store.path.iterdir())

    assert main([str(profile), "--list", "--results", str(tmp_path / "res")]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED    {store.path.name}  {message}" in out and str(store.path) in out
    assert sorted(p.name for p in store.path.iterdir()) == before  # listing changes nothing

    with pytest.raises(DamagedRunError, match=f"{store.path.name} \\({store.path}\\): {message}"):
        load_study(tmp_path / "res", "tiny")  # what 02_gradient_conflicts and 03_figures call first

    calls, lines = [], []
    monkeypatch.setattr(E, "_execute", _fake_execute(calls))
    assert run_study(load_profile(str(profile)), tmp_path / "res", echo=lines.append) == []
    (aside,) = (tmp_path / "res" / "tiny" / ".damaged").iterdir()
    assert aside.name.startswith(store.path.name) and sorted(p.name for p in aside.iterdir()) == before
    assert [n for n, _ in calls].count(E.TRAIN_NOTEBOOK) == 1  # redone
    assert any("DAMAGED" in line and message in line and str(aside) in line for line in lines)
    assert store.state == "complete" and check_run(store.path).status == "verified"


def test_an_old_marker_is_read_as_unverified_and_checked_for_what_it_can(tmp_path, capsys):
    store = _complete_run(tmp_path / "res")
    (store.path / "COMPLETE").write_text(json.dumps({"finished": "2026-01-01T00:00:00+00:00"}))  # before records
    assert check_run(store.path).status == "unverified"
    assert main([str(_tiny_profile(tmp_path)), "--list", "--results", str(tmp_path / "res")]) == 0
    assert "unverified " + store.path.name in capsys.readouterr().out
    assert len(load_study(tmp_path / "res", "tiny").metrics) == 2
    text = (store.path / "metrics.csv").read_text().replace("0.6", "n/a")
    (store.path / "metrics.csv").write_text(text)  # pandas would read it as NaN
    assert check_run(store.path).problems == ("metrics.csv holds 1 non-numeric value(s), e.g. 'n/a' on data row 2",)
    _drop_column(store.path / "metrics.csv")
    assert "metrics.csv lacks the column(s) ['value']" in check_run(store.path).problems


def test_the_baseline_kind_of_folder_copies_keep_verifying(tmp_path):
    """A complete folder copied elsewhere (or restored from a backup) still verifies: the record is relative."""
    store = _complete_run(tmp_path / "a")
    shutil.copytree(store.path, tmp_path / "b" / store.path.name)
    assert check_run(tmp_path / "b" / store.path.name).status == "verified"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "empty", "drop a column"])
def test_the_analysis_notebook_stops_naming_the_damaged_run(tmp_path, how):
    damage, message = DAMAGE[how]
    store = _complete_run(tmp_path / "res")
    damage(store.path / "metrics.csv")
    task = E.AnalysisTask("tiny", tmp_path / "res", Path(__file__).resolve().parents[2], {})
    with pytest.raises(E.NotebookFailed, match="DamagedRunError"):
        E.analyse_one(task, "02_gradient_conflicts.ipynb")
    log = (tmp_path / "res" / "tiny" / "02_gradient_conflicts.log").read_text()
    assert f"{store.path.name} ({store.path}): {message}" in log
