"""The study driver as a package (issue 22's split): one job per module, no teaching code imported, and
``python -m nhllib.study`` still the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_layers import PACKAGE, imports_of

TEACHING = ("nhllib.teaching.exercises", "nhllib.teaching.tour", "nhllib.teaching")


def _teaching_imports(path: Path) -> set[str]:
    return {module for _, module in imports_of(path) if module.startswith(TEACHING)}


def test_the_study_imports_no_teaching_code():
    offenders = {str(p.relative_to(PACKAGE)): sorted(_teaching_imports(p))
                 for p in sorted((PACKAGE / "study").rglob("*.py")) if _teaching_imports(p)}
    assert not offenders


def test_the_teaching_check_can_fail(tmp_path):
    probe = PACKAGE / "study" / "_teaching_probe_tmp.py"
    probe.write_text("def f():\n    from nhllib.teaching.exercises import exercise_names\n")  # a function-level import too
    try:
        assert _teaching_imports(probe) == {"nhllib.teaching.exercises"}
    finally:
        probe.unlink()


def test_the_package_runs_as_a_module_and_the_old_modules_are_gone():
    root = PACKAGE.parent
    done = subprocess.run([sys.executable, "-m", "nhllib.study", "--help"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": ""}, timeout=120)
    assert done.returncode == 0 and "usage: python -m nhllib.study" in done.stdout
    assert not any((PACKAGE / name).exists() for name in ("study.py", "locks.py", "executors.py"))
    assert (PACKAGE / "store" / "locks.py").is_file()  # below the study: training takes run locks too
    assert {p.stem for p in (PACKAGE / "study").glob("*.py")} >= {"profile", "execution", "processes", "cli",
                                                                   "executors", "__main__"}
