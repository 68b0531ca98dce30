"""03_figures on a study with two regimes: the regime tables and figure, then one regime's usual tables (slow)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.plots.test_plots_tables import REPO, write_fake_study


def _second_regime(root: Path, study: str) -> None:
    """Every run again, as if its backbone had started from the in-domain pool weights (new run ids)."""
    for folder in sorted(p for p in (root / study).iterdir() if p.is_dir()):
        twin = folder.with_name(folder.name + "-pool")
        shutil.copytree(folder, twin)
        info = json.loads((twin / "config.json").read_text())
        info["config"]["model"]["pretrained"] = "pool-in-domain"
        (twin / "config.json").write_text(json.dumps(info))
        for name in ("metrics.csv", "history.csv", "conflicts.csv", "curves.csv"):
            if (twin / name).is_file():
                frame = pd.read_csv(twin / name)
                if "run_id" in frame.columns:
                    frame["run_id"] = twin.name
                if name == "metrics.csv":  # the pretrained regime is 0.05 better everywhere, nhl included
                    frame.loc[frame["metric"] == "map", "value"] += 0.05
                frame.to_csv(twin / name, index=False)


@pytest.mark.slow
def test_03_figures_renders_the_regimes_of_a_study_with_several(tmp_path):
    papermill = pytest.importorskip("papermill")
    root = tmp_path / "results"
    write_fake_study(root, "fake")
    _second_regime(root, "fake")
    papermill.execute_notebook(str(REPO / "notebooks" / "03_figures.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"study": "fake", "results_root": str(root)}, cwd=str(REPO),
                               kernel_name="python3", progress_bar=False)
    tables_dir, figures = root / "fake" / "tables", root / "fake" / "figures"
    verdict = pd.read_csv(tables_dir / "regime_verdict.csv")
    assert list(dict.fromkeys(verdict["regime"])) == ["mlp from scratch", "mlp in-domain pretrained, fine-tuned"] \
        or list(dict.fromkeys(verdict["regime"])) == ["cnn from scratch", "cnn in-domain pretrained, fine-tuned"]
    by_regime = verdict.groupby("regime")["mean"].apply(list)
    assert by_regime.iloc[0] == pytest.approx(by_regime.iloc[1])  # the same +0.05 on both sides
    for name in ("regime_verdict_counts", "regime_average_gain", "regime_speedup", "regime_best_epochs",
                 "regime_conflicts", "regime_reference", "regime_sign_tests", "regime_speedup_share"):
        assert (tables_dir / f"{name}.csv").is_file(), name
    assert (figures / "regime_differences.png").is_file()
    # the usual tables after the regime section hold the first regime only
    assert not any(r.endswith("-pool") for r in pd.read_csv(tables_dir / "collapsed.csv")["run_id"])


@pytest.mark.slow
def test_03_figures_reads_a_regime_from_another_study_and_02_shows_the_chosen_regime(tmp_path):
    """The regimes profile's wiring: its own runs (pretrained) plus the default study's (from scratch) through
    with_studies; 02_gradient_conflicts on the chosen regime only (04_retrieval's choice, find_run among a regime's
    runs, is tested in tests/analysis/test_with_studies.py: the fake runs hold no codes)."""
    papermill = pytest.importorskip("papermill")
    root = tmp_path / "results"
    write_fake_study(root, "base")
    _second_regime(root, "base")
    (root / "regimes").mkdir()
    for twin in sorted((root / "base").glob("*-pool")):  # the pretrained regime lives in its own study
        shutil.move(str(twin), str(root / "regimes" / twin.name))
    papermill.execute_notebook(str(REPO / "notebooks" / "03_figures.ipynb"), str(tmp_path / "out03.ipynb"),
                               parameters={"study": "regimes", "results_root": str(root), "with_studies": ["base"]},
                               cwd=str(REPO), kernel_name="python3", progress_bar=False)
    verdict = pd.read_csv(root / "regimes" / "tables" / "regime_verdict.csv")
    assert len(set(verdict["regime"])) == 2  # from scratch (the other study) and pretrained (this one)
    chosen = next(r for r in verdict["regime"] if "pretrained" in r)
    for notebook in ("02_gradient_conflicts",):
        out = tmp_path / f"{notebook}.ipynb"
        papermill.execute_notebook(str(REPO / "notebooks" / f"{notebook}.ipynb"), str(out),
                                   parameters={"study": "regimes", "results_root": str(root), "regime": chosen},
                                   cwd=str(REPO), kernel_name="python3", progress_bar=False)
        printed = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                          for o in c.get("outputs", []))
        assert f"regime {chosen!r}" in printed, notebook
