"""docs/: every citation of a docs page resolves (file, section, item), and nothing cites documents that are
not in the repository."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
# Names of the project's early design notes, which were never part of the repository: a citation of one is a
# dangling reference.
BACKGROUND = re.compile(r"\b(METHOD|ECOSYSTEM|DESIGN|STYLE)\.md\b")
CITATION = re.compile(r"docs/([a-z-]+\.md)(?:,? (?:§|section )(\d+(?:\.\d+)?)| item (\d+))?")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / line for line in out.splitlines()
            if line.endswith((".py", ".md", ".ipynb", ".yaml", ".sh", ".txt")) and (REPO / line).is_file()]


def sections(page: Path) -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", page.read_text(), flags=re.M)
    return set(heads)


def items(page: Path) -> set[str]:
    return set(re.findall(r"^\*\*(\d+)\. ", page.read_text(), flags=re.M))


def test_docs_pages_exist_and_keep_the_section_numbers():
    method = DOCS / "method.md"
    assert {"2.2", "2.3", "2.4", "2.5", "3", "4", "6"} <= sections(method)
    assert {"1", "2", "3", "4"} <= sections(DOCS / "evaluation.md")
    assert items(DOCS / "reference-defects.md") == {str(i) for i in range(1, 15)}


def test_every_docs_citation_resolves():
    bad = []
    for path in tracked_files():
        text = path.read_text(errors="replace")
        for match in CITATION.finditer(text):
            page, section, item = match.groups()
            target = DOCS / page
            rel = path.relative_to(REPO)
            if not target.is_file():
                bad.append(f"{rel}: {match.group(0)} (no such page)")
            elif section and section not in sections(target):
                bad.append(f"{rel}: {match.group(0)} (no section {section})")
            elif item and item not in items(target):
                bad.append(f"{rel}: {match.group(0)} (no item {item})")
    assert not bad, "\n".join(bad)


def test_no_new_citations_of_documents_outside_the_repository():
    citing = {str(p.relative_to(REPO)) for p in tracked_files()
              if p.name != "test_docs.py" and BACKGROUND.search(p.read_text(errors="replace"))}
    assert not citing, f"these files cite design notes that are not in the repository; cite docs/method.md, " \
                       f"docs/evaluation.md or docs/reference-defects.md instead: {sorted(citing)}"


def test_rendered_notebooks_are_executed_and_hold_no_machine_paths():
    rendered = DOCS / "rendered"
    names = {p.name for p in rendered.glob("*.ipynb")}
    assert {"00_tour.ipynb", "05_exercises_solutions.ipynb", "05_exercises_blank.ipynb"} <= names
    for path in rendered.glob("*.ipynb"):
        text = path.read_text()
        nb = json.loads(text)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name}: not executed"
        assert not re.search(r'"/(work|tmp|home|root|usr)/', text), f"{path.name} holds an absolute path"
        assert "Traceback" not in text, f"{path.name} holds an error"
    tour = (rendered / "00_tour.ipynb").read_text()
    assert "image/png" in tour and "untrained network (reference)" in tour
    assert "5 of 5 exercises pass" in (rendered / "05_exercises_solutions.ipynb").read_text()
    assert "0 of 5 exercises pass" in (rendered / "05_exercises_blank.ipynb").read_text()
