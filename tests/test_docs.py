"""docs/: every citation of a docs page resolves (file, section, item), and nothing cites documents that are
not in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
BACKGROUND = re.compile(r"\b(METHOD|ECOSYSTEM|DESIGN|STYLE)\.md\b")
# Files that still cite the background documents (not in the repository), until their citations are rewritten
# to docs/method.md, docs/evaluation.md or docs/reference-defects.md. Remove a file here once it is clean; add none.
PENDING = {
    "benchmarks/bench_map.py", "nhllib/config.py", "nhllib/data/split.py", "nhllib/distill.py",
    "nhllib/evaluate.py", "nhllib/losses/base.py", "nhllib/losses/dbdh.py", "nhllib/losses/dhn.py",
    "nhllib/losses/dsh.py", "nhllib/nested.py", "nhllib/retrieval/metrics.py", "nhllib/retrieval/packing.py",
    "nhllib/train.py", "nhllib/weighting.py", "tests/test_distill.py", "tests/test_losses.py",
    "tests/test_weighting.py",
}
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
    new = sorted(citing - PENDING)
    assert not new, f"these files cite METHOD/ECOSYSTEM/DESIGN/STYLE.md, which are not in the repository; cite " \
                    f"docs/method.md, docs/evaluation.md or docs/reference-defects.md instead: {new}"
