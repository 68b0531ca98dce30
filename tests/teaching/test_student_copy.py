"""The teacher's kit: ``python -m nhllib.teaching.student_copy DIR`` exports the tour and the exercises without
the solutions or the teachers' notes, outputs cleared, and never overwrites a folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nhllib.teaching.student_copy import STUDENT_NOTEBOOKS, TEACHER_MARK, export_student_copy

ROOT = Path(__file__).resolve().parents[2]


def test_the_copy_holds_the_notebooks_without_solutions_or_outputs(tmp_path):
    written = export_student_copy(tmp_path / "class")
    assert sorted(p.name for p in written) == sorted(STUDENT_NOTEBOOKS)
    assert sorted(p.name for p in (tmp_path / "class").iterdir()) == sorted(STUDENT_NOTEBOOKS)
    for path in written:
        cells = json.loads(path.read_text())["cells"]
        text = "".join("".join(c["source"]) for c in cells)
        assert TEACHER_MARK not in text
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")
    exercises = (tmp_path / "class" / "05_exercises.ipynb").read_text()
    assert "raise NotImplementedError" in exercises  # the blanks are there
    assert "comb(i - 1, j - 1)" not in exercises and "torch.argsort(distances, stable=True)" not in exercises


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "05_exercises.ipynb").write_text("a student's work")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_student_copy(tmp_path / "class")
    assert (tmp_path / "class" / "05_exercises.ipynb").read_text() == "a student's work"


def test_a_notebook_carrying_solution_code_is_refused(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "solutions").mkdir(parents=True)
    solution = (ROOT / "notebooks" / "solutions" / "05_exercises_solutions.py").read_text()
    (notebooks / "solutions" / "05_exercises_solutions.py").write_text(solution)
    for name in STUDENT_NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / name).read_text())
        if name == "05_exercises.ipynb":  # a teacher pasted an answer into the notebook
            nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                "source": ["order = torch.argsort(distances, stable=True)  # equal distances keep their database order\n"]})
        (notebooks / name).write_text(json.dumps(nb))
    with pytest.raises(RuntimeError, match="would carry solution code"):
        export_student_copy(tmp_path / "out", notebooks_dir=notebooks)
    assert not (tmp_path / "out").exists()


def test_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nhllib.teaching.student_copy", str(tmp_path / "c")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and (tmp_path / "c" / "00_tour.ipynb").is_file(), done.stderr
    again = subprocess.run([sys.executable, "-m", "nhllib.teaching.student_copy", str(tmp_path / "c")],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    helped = subprocess.run([sys.executable, "-m", "nhllib.teaching.student_copy", "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and "usage" in helped.stdout and not any(p.name != "c" for p in tmp_path.iterdir())
