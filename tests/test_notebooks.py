"""Notebook hygiene and the end-to-end smoke study (every notebook through papermill on tiny data)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURES = ["map_vs_length", "verdict", "training_time", "speedup_vs_gain", "training_curves", "ablation",
           "conflict_rates", "conflict_heatmap", "cosine_distribution", "weights", "distill_sensitivity", "ties",
           "pr_curves", "retrieval_scaling", "nested_layer"]
TABLES = ["map", "collapsed", "verdict", "verdict_counts", "average_gain", "delta", "speedup", "best_epochs",
          "weights", "conflicts", "retrieval"]


def test_every_expected_notebook_exists():
    names = {p.name for p in NOTEBOOKS}
    assert {"00_tour.ipynb", "01_train.ipynb", "02_gradient_conflicts.ipynb", "03_figures.ipynb",
            "04_retrieval.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs_and_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip the outputs"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code)
    source = "\n".join("".join(c["source"]) for c in code)
    if path.name == "05_exercises.ipynb":  # the exception: the student writes the functions, checks live in nhllib
        return
    assert "\ndef " not in "\n" + source and "\nclass " not in "\n" + source, "notebooks stay thin"


@pytest.mark.slow
def test_smoke_study_renders_every_figure(tmp_path):
    """`./run_all.sh smoke` runs every notebook and produces every figure file."""
    done = subprocess.run([str(ROOT / "run_all.sh"), "smoke", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = tmp_path / "smoke" / "figures"
    for name in FIGURES + ["retrieval_tradeoff"]:
        assert (figures / f"{name}.png").is_file(), f"missing figure {name}.png"
        assert (figures / f"{name}.pdf").is_file()
    assert not (figures / "precision_at_k.png").exists()
    slides = figures / "slides"
    for name in ("nested_layer", "verdict", "speedup_vs_gain", "conflict_pairs", "retrieval_scaling", "map_csq"):
        assert (slides / f"{name}.png").is_file() and (slides / f"{name}.txt").read_text().strip(), name
    for name in TABLES:
        assert (tmp_path / "smoke" / "tables" / f"{name}.csv").is_file(), f"missing table {name}.csv"
    # the untrained block of the profile gives the reference row of the mAP table
    import pandas as pd

    table = pd.read_csv(tmp_path / "smoke" / "tables" / "map.csv")
    assert (table["variant"] == "untrained").sum() == 3 and set(table.loc[table.variant == "untrained", "method"]) == {"(any)"}
    verdict = pd.read_csv(tmp_path / "smoke" / "tables" / "verdict.csv")
    assert "untrained" not in set(verdict["variant"])
    for notebook in ("02_gradient_conflicts.ipynb", "03_figures.ipynb", "04_retrieval.ipynb"):
        assert (tmp_path / "smoke" / notebook).is_file()
    # the course kit, checked by the driver: every check passes on the solutions, fails on the blank answers
    assert "[exercises] 05_exercises.ipynb with the solutions: 5 of 5 checks pass" in done.stdout
    assert "[exercises] 05_exercises.ipynb with blank answers: 0 of 5 checks pass" in done.stdout
    kit = tmp_path / "smoke" / "exercises"
    solved, blank = (json.loads((kit / f"scoreboard_{name}.json").read_text())["results"] for name in ("solutions", "blank"))
    assert len(solved) == len(blank) == 5 and all(r["passed"] for r in solved)
    assert not any(r["passed"] for r in blank) and all(r["message"].startswith("not implemented yet") for r in blank)
    assert (kit / "05_exercises_solutions.ipynb").is_file() and (kit / "05_exercises_blank.ipynb").is_file()
    # a second pass skips every complete run
    again = subprocess.run([sys.executable, "-m", "nhllib.study", "smoke", "--results", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 10


@pytest.mark.parametrize("command", [["run_all.sh"], [sys.executable, "-m", "nhllib.study"]])
def test_unknown_profile_is_refused_before_anything_runs(tmp_path, command):
    if command == ["run_all.sh"]:
        command = [str(ROOT / "run_all.sh")]
    done = subprocess.run([*command, "fast", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown profile 'fast'" in done.stderr
    assert not any(tmp_path.iterdir())
