"""Export a student copy of the course notebooks: the tour and the exercises, without the solutions.

    python -m nhllib.teaching.student_copy DIR

writes ``DIR/00_tour.ipynb`` and ``DIR/05_exercises.ipynb`` with every output cleared and the paragraphs
addressed to teachers removed; the solutions file is not copied. ``DIR`` must not exist yet or be empty, so a
copy (perhaps already edited by students) is never overwritten. The copy is checked before it is written: no
solution's code may appear in it. The notebooks still import ``nhllib`` (the students install the package).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from pathlib import Path

from nhllib.workdir import PROJECT_ROOT

__all__ = ["STUDENT_NOTEBOOKS", "export_student_copy", "student_notebook"]

logger = logging.getLogger(__name__)

STUDENT_NOTEBOOKS = ("00_tour.ipynb", "05_exercises.ipynb")
TEACHER_MARK = "**Teachers:**"  # a Markdown paragraph starting with this is for teachers only


def student_notebook(notebook: dict) -> dict:
    """The notebook with outputs and execution counts cleared and every teachers' paragraph removed."""
    cells = []
    for cell in notebook["cells"]:
        cell = {**cell, "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k in ("tags",)}}
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if cell["cell_type"] == "markdown":
            paragraphs = "".join(cell["source"]).split("\n\n")
            kept = "\n\n".join(p for p in paragraphs if not p.lstrip().startswith(TEACHER_MARK))
            cell["source"] = kept.splitlines(keepends=True)
        cells.append(cell)
    return {**notebook, "cells": cells, "metadata": {k: v for k, v in notebook.get("metadata", {}).items()
                                                     if k in ("kernelspec", "language_info")}}


def _solution_bodies(solutions: Path) -> list[str]:
    """The code lines of every solution function (docstrings and signatures aside): none may leak."""
    tree = ast.parse(solutions.read_text())
    lines = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines += [ast.unparse(statement).splitlines()[0] for statement in body]
    return [line for line in lines if len(line) > 12]


def export_student_copy(target: str | Path, notebooks_dir: Path = PROJECT_ROOT / "notebooks",
                        solutions: Path | None = None) -> list[Path]:
    """Write the student notebooks into ``target`` (new or empty); returns the files written."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder: choose a new folder (a student copy is "
                              "never overwritten)")
    solutions = solutions or notebooks_dir / "solutions" / "05_exercises_solutions.py"
    leaks = _solution_bodies(solutions) if solutions.is_file() else []
    copies = {}
    for name in STUDENT_NOTEBOOKS:
        copy = student_notebook(json.loads((notebooks_dir / name).read_text()))
        text = json.dumps(copy, indent=1, ensure_ascii=False) + "\n"
        leaked = [line for line in leaks if line in "".join("".join(c["source"]) for c in copy["cells"])]
        if leaked:
            raise RuntimeError(f"{name} would carry solution code ({leaked[0]!r}); nothing written")
        copies[name] = text
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in copies.items():
        (target / name).write_text(text)
        written.append(target / name)
    logger.info("student copy: %s", ", ".join(str(p) for p in written))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.teaching.student_copy",
                                     description="Write the tour and the exercises, outputs cleared, without the "
                                                 "solutions or the teachers' notes, into a new folder.")
    parser.add_argument("folder", help="a folder that does not exist yet, or is empty")
    args = parser.parse_args(argv)
    try:
        written = export_student_copy(args.folder)
    except (FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
