"""01_train files its run under the project's results/ whatever folder it is started in, shows its learning curve
inline, and a hand run goes to its own study (``hand``), never into a committed study's folder."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nhllib.workdir import PROJECT_ROOT, work_from_project_root

ROOT = Path(__file__).resolve().parents[1]


def test_a_kernel_started_in_notebooks_works_from_the_project_root(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "notebooks" / "solutions").mkdir(parents=True)
    for start, expected in ((root / "notebooks", root), (root / "notebooks" / "solutions", root),
                            (tmp_path, tmp_path), (root, root)):
        monkeypatch.chdir(start)
        assert work_from_project_root(root=root) == expected.resolve()
        assert Path.cwd().resolve() == expected.resolve()


def test_the_package_knows_its_checkout():
    assert PROJECT_ROOT == ROOT and (PROJECT_ROOT / "notebooks" / "01_train.ipynb").is_file()


def test_hand_runs_default_to_their_own_study():
    cells = json.loads((ROOT / "notebooks" / "01_train.ipynb").read_text())["cells"]
    parameters = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("from typing import Optional\n" + "".join(parameters["source"]), namespace)
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    committed = {Path(f).parts[1] for f in tracked if len(Path(f).parts) > 2}
    committed |= {p.stem for p in (ROOT / "studies").glob("*.yaml")}
    assert {"default", "two_machines"} <= committed
    assert namespace["study"] == "hand" and namespace["study"] not in committed


@pytest.mark.slow
def test_papermill_from_notebooks_files_the_run_under_the_project_and_shows_the_curve(tmp_path):
    study = f"test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.ipynb"
    params = dict(study=study, code_lengths=[8, 16], query_per_class=2, train_per_class=5, val_per_class=2,
                  database_per_class=5, epochs=2, eval_every=1, patience=0, device="cpu", progress=False)
    (tmp_path / "p.yaml").write_text(json.dumps(params))
    try:
        done = subprocess.run([sys.executable, "-m", "papermill", "01_train.ipynb", str(out), "-f",
                               str(tmp_path / "p.yaml"), "-k", "python3", "--no-progress-bar"],
                              cwd=ROOT / "notebooks", capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        (run_dir,) = (ROOT / "results" / study).iterdir()
        assert (run_dir / "COMPLETE").is_file() and (run_dir / "learning_curve.png").is_file()
        assert not (ROOT / "notebooks" / "results").exists() and not (ROOT / "notebooks" / "data").exists()
        images = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        assert images, "the learning curve is not shown in the notebook"
    finally:
        shutil.rmtree(ROOT / "results" / study, ignore_errors=True)
