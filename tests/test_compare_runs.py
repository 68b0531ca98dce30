"""scripts/compare_runs.py: identical run folders pass, a changed value, array or missing run is reported."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
_spec = importlib.util.spec_from_file_location("compare_runs", REPO / "scripts" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _run(folder: Path, value: float = 0.5, code: int = 1, seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame({"metric": ["map", "train_time_s"], "value": [value, seconds]}).to_csv(folder / "metrics.csv",
                                                                                      index=False)
    np.savez(folder / "codes.npz", query_8=np.array([[code, 0]], dtype=np.int8))
    (folder / "COMPLETE").write_text("")
    return folder


def test_identical_runs_pass_and_timings_are_ignored(tmp_path, capsys):
    _run(tmp_path / "a" / "run1")
    _run(tmp_path / "b" / "run1", seconds=9.0)
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "all identical" in capsys.readouterr().out


def test_a_changed_metric_is_reported(tmp_path, capsys):
    _run(tmp_path / "a" / "run1")
    _run(tmp_path / "b" / "run1", value=0.5000001)
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "metrics.csv: 1 of 1 rows differ" in capsys.readouterr().out


def test_a_changed_code_array_is_reported(tmp_path, capsys):
    _run(tmp_path / "a" / "run1")
    _run(tmp_path / "b" / "run1", code=-1)
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "codes.npz[query_8] differs" in capsys.readouterr().out


def test_a_run_complete_in_one_folder_only_is_reported(tmp_path, capsys):
    _run(tmp_path / "a" / "run1")
    _run(tmp_path / "a" / "run2")
    _run(tmp_path / "b" / "run1")
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "run2: complete in only one of the two folders" in capsys.readouterr().out
