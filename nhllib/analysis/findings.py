"""The README's findings, generated from the committed tables and checked against them.

Two mechanisms keep the numbers of the README section "What the default study found" true:

1. **Generated block.** :func:`render_findings` writes the verdict (``nhl`` − ``separate`` per method and
   length with its paired test), the counts across methods, the average gain, the speed-up, the epochs to the
   best validation mAP and the untrained reference level as Markdown, from ``results/tables/*.csv`` alone.
   :func:`update_readme` puts it between the markers :data:`BEGIN` and :data:`END`
   (``python -m nhllib.analysis.findings`` after ``03_figures`` has written the tables; ``--check`` only compares).
   A test regenerates the block and fails when the README's copy differs.
2. **Checked prose.** Outside the block, every paragraph (list item, table row) of the section that states a number
   with a decimal point, a ``%`` or a ``×`` must name the files it comes from (a ``.csv``, ``.md`` or ``.json``
   under ``results/``, a ``.json`` under ``benchmarks/results/``; in the text, or invisibly as
   ``<!-- sources: ... -->``), and each such number must be found in them (a row or item without its own sources
   uses those of the paragraph ending with ":" that introduces it), as written or as mAP points / percent (×100),
   at the precision written; minutes with a decimal point (``12.5 min``) are looked up as seconds. Exempt: numbers
   in inline code and code blocks, whole minutes, numbers written with a leading ``~`` (approximate or external,
   e.g. the paper's ~3.4 %), and a paragraph carrying ``<!-- unchecked: reason -->``. :func:`check_numbers` lists
   the failures. The tests apply it to every ``## `` section of the README (run times against
   ``benchmarks/results/*.json``), ``--check`` to this one.

Torch-free: it reads CSV and JSON only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path

import pandas as pd

__all__ = ["BEGIN", "END", "SECTION", "render_findings", "update_readme", "replace_block", "findings_section", "check_numbers",
           "main"]

logger = logging.getLogger(__name__)

BEGIN = "<!-- findings:begin (generated from results/tables by python -m nhllib.analysis.findings; do not edit) -->"
END = "<!-- findings:end -->"
SECTION = "## What the default study found"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_SOURCE = re.compile(r"(?:results/(?:[\w-]+/)*[\w.-]+\.(?:csv|md|json)"
                     r"|benchmarks/results/(?:[\w-]+/)*[\w.-]+\.json)")
_NUMBER = re.compile(r"(?<![\w.~/#-])([+\-−]?\d[\d,]*(?:\.\d+)?)(\s?(?:%|×|min\b))?(?![\w])")
_ANY_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------- generation


def _read(tables_dir: Path, name: str) -> pd.DataFrame | None:
    path = tables_dir / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _source(name: str) -> str:
    return f"(`results/tables/{name}.csv`)"


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def render_findings(tables_dir: str | Path = "results/tables") -> str:
    """The generated part of the findings section, from the tables in ``tables_dir`` (those absent are left
    out, with a line saying so). Deterministic: the same tables give the same text."""
    tables_dir = Path(tables_dir)
    parts: list[str] = []
    verdict = _read(tables_dir, "verdict")
    if verdict is not None and not verdict.empty:
        variant = verdict["variant"].iloc[0] if "variant" in verdict else "nhl"
        lengths = sorted(int(v) for v in verdict["code_length"].unique())
        lines = [f"**{variant} − separate, query mAP, paired by seed** (mean ± std of the per-seed differences; "
                 "verdict from the confidence interval `ci_low`–`ci_high`; † a side has a collapsed run) " + _source("verdict") + ":", "",
                 "| method | n | " + " | ".join(f"{v} bits" for v in lengths) + " |",
                 "| --- | ---: | " + " | ".join("---" for _ in lengths) + " |"]
        for method, group in verdict.groupby("method", sort=True):
            cells = []
            for length in lengths:
                row = group[group["code_length"] == length]
                if row.empty:
                    cells.append("")
                    continue
                row = row.iloc[0]
                text = _signed(row["mean"]) + ("" if pd.isna(row["std"]) else f" ± {row['std']:.3f}")
                mark = "†" if isinstance(row.get("collapsed"), str) and row["collapsed"] else ""
                cells.append(f"{text} {row['verdict']}{mark}")
            n = ",".join(sorted({str(int(v)) for v in group["n"]}))
            lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    counts = _read(tables_dir, "verdict_counts")
    if counts is not None and not counts.empty:
        items = []
        for row in counts.itertuples(index=False):
            p = "" if pd.isna(row.sign_p) else f", sign test p = {row.sign_p:.3f}"
            items.append(f"- {int(row.code_length)} bits: of {int(row.methods)} methods {int(row.gain)} gain, "
                         f"{int(row.tie)} tie, {int(row.lose)} lose; {int(row.higher)} higher and {int(row.lower)} "
                         f"lower on average{p}")
        parts.append("**Across methods** " + _source("verdict_counts") + ":\n\n" + "\n".join(items))
    average = _read(tables_dir, "average_gain")
    if average is not None and not average.empty:
        items = [f"{row.method} {_signed(row.points, 1)} points ({_signed(row.relative_pct, 1)} %)"
                 for row in average.itertuples(index=False)]
        parts.append("**Averaged over the code lengths**, nhl − separate: " + "; ".join(items) + " "
                     + _source("average_gain") + ".")
    speedup = _read(tables_dir, "speedup")
    if speedup is not None and not speedup.empty:
        rows = speedup[speedup["variant"] == "nhl"] if "nhl" in set(speedup["variant"]) else speedup
        if "distill_weight" in rows and rows["distill_weight"].nunique() > 1:
            main = rows["distill_weight"].value_counts().idxmax()
            rows = rows[rows["distill_weight"] == main]
        items = [f"{row.method} {row.speedup_formatted} (n = {int(row.n)})" for row in rows.itertuples(index=False)]
        parts.append("**Training-time speed-up** of one nhl model over the sum of the separate models (training loop "
                     "only): " + "; ".join(items) + " " + _source("speedup") + ".")
    epochs = _read(tables_dir, "best_epochs")
    if epochs is not None and not epochs.empty:
        items = []
        for method, group in epochs.groupby("method", sort=True):
            by = group.set_index("variant")
            pieces = [f"{v} {by.loc[v, 'formatted']}" for v in ("separate", "nhl") if v in by.index]
            if pieces:
                items.append(f"{method}: " + ", ".join(pieces))
        parts.append("**Epochs to the best validation mAP** (mean ± std over runs): " + "; ".join(items) + " "
                     + _source("best_epochs") + ".")
    maps = _read(tables_dir, "map")
    if maps is not None and "variant" in maps and (maps["variant"] == "untrained").any():
        ref = maps[maps["variant"] == "untrained"].sort_values("code_length")
        items = [f"{row.formatted} at {int(row.code_length)} bits" for row in ref.itertuples(index=False)]
        parts.append("**Reference level**, the untrained network: query mAP " + ", ".join(items) + " "
                     + _source("map") + ".")
    if not parts:
        parts.append("_(no study tables in results/tables yet: run ./run_all.sh)_")
    return "\n\n".join(parts) + "\n"


def replace_block(readme: str | Path, begin: str, end: str, body: str, check: bool = False) -> bool:
    """Put ``body`` between the markers ``begin`` and ``end`` of ``readme``; returns whether that changed the file.
    ``check=True`` writes nothing (a stale block returns True). The markers must already be there."""
    readme = Path(readme)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} lacks the markers {begin!r} and {end!r}; put them in its section")
    head, rest = text.split(begin, 1)
    _old, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{body}{end}{tail}"
    changed = new != text
    if changed and not check:
        from nhllib.store.results import atomic_write_text

        atomic_write_text(readme, new)
    return changed


def update_readme(readme: str | Path = PROJECT_ROOT / "README.md", tables_dir: str | Path | None = None,
                  check: bool = False) -> bool:
    """Replace the text between :data:`BEGIN` and :data:`END` with :func:`render_findings`; returns whether it
    changed. ``check=True`` writes nothing (a stale block returns True). The markers must already be there."""
    readme = Path(readme)
    tables_dir = Path(tables_dir) if tables_dir is not None else readme.parent / "results" / "tables"
    return replace_block(readme, BEGIN, END, render_findings(tables_dir), check)


# ---------------------------------------------------------------- checking


def findings_section(text: str, heading: str = SECTION) -> str:
    """The section under ``heading`` up to the next ``## `` heading, without the generated block."""
    if heading not in text:
        raise ValueError(f"the README has no section {heading!r}")
    body = text.split(heading, 1)[1]
    body = re.split(r"\n## ", body, maxsplit=1)[0]
    if BEGIN in body and END in body:
        head, rest = body.split(BEGIN, 1)
        body = head + rest.split(END, 1)[1]
    # any other generated block (<!-- name:begin ... --> ... <!-- name:end -->) is checked by its own test
    return re.sub(r"<!-- (\w+):begin.*?<!-- \1:end -->", "", body, flags=re.S)


def _paragraphs(text: str) -> list[str]:
    """Paragraphs, list items and table rows (a line starting with ``- ``, ``1. `` or ``|`` begins a new one)."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            out.append([])
            continue
        if _is_item(line) or not out:
            out.append([])
        out[-1].append(line)
    return ["\n".join(p) for p in out if p]


def _is_item(text: str) -> bool:
    return text.lstrip().startswith("|") or bool(re.match(r"\s*(?:[-*]|\d+\.)\s", text))


def _source_numbers(path: Path) -> list[float]:
    if path.suffix == ".json":
        values: list[float] = []

        def walk(node) -> None:
            if isinstance(node, bool):
                return
            if isinstance(node, (int, float)):
                values.append(float(node))
            elif isinstance(node, str):
                values.extend(float(v) for v in _ANY_NUMBER.findall(node))
            elif isinstance(node, dict):
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(json.loads(path.read_text()))
        return values
    return [float(v) for v in _ANY_NUMBER.findall(path.read_text())]


def _found(value: float, digits: int, candidates: list[float], minutes: bool = False) -> bool:
    target = round(abs(value), digits)
    scales = (1.0 / 60.0,) if minutes else (1.0, 100.0)  # minutes are checked against seconds
    for v in candidates:
        if not math.isfinite(v):
            continue
        for scale in scales:
            if abs(round(abs(v) * scale, digits) - target) < 1e-9:
                return True
    return False


def check_numbers(section: str, root: str | Path = PROJECT_ROOT) -> list[str]:
    """Failures of the checked-prose convention (see the module docstring) in ``section``: a paragraph with
    numbers and no source, a source that does not exist, a number not found in the paragraph's sources."""
    root = Path(root)
    problems = []
    section = re.sub(r"^```.*?^```", "", section, flags=re.S | re.M)  # code blocks: examples, not results
    introduced: list[str] = []  # sources of the paragraph ending with ":" that introduces a table or list
    for paragraph in _paragraphs(section):
        item = _is_item(paragraph)
        if "<!-- unchecked" in paragraph:
            introduced = introduced if item else []
            continue
        sources = sorted(set(_SOURCE.findall(paragraph)))  # visible, or in a <!-- sources: ... --> comment
        if item:
            sources = sources or introduced  # a row or item cites its own files, or those of its introduction
        else:
            ends_with_colon = re.sub(r"<!--.*?-->", "", paragraph, flags=re.S).rstrip().rstrip("*").endswith(":")
            introduced = sources if ends_with_colon else []
        text = re.sub(r"<!--.*?-->", " ", paragraph, flags=re.S)
        text = re.sub(r"`[^`]*`", " ", text)  # inline code: paths, commands, commit ids
        text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
        numbers = []
        for match in _NUMBER.finditer(text):
            token, unit = match.group(1), match.group(2) or ""
            if "." not in token and unit.strip() in ("", "min"):
                continue  # plain integers (lengths, seeds, counts) are not checked
            numbers.append((token, unit))
        if not numbers:
            continue
        first = paragraph.strip().splitlines()[0][:70]
        if not sources:
            problems.append(f"paragraph {first!r} states {', '.join(t + u for t, u in numbers)} but cites no "
                            "results/tables/<name>.csv or benchmarks/results/<name>.json")
            continue
        candidates: list[float] = []
        for source in sources:
            path = root / source
            if not path.is_file():
                problems.append(f"paragraph {first!r} cites {source}, which does not exist")
                continue
            candidates.extend(_source_numbers(path))
        for token, unit in numbers:
            clean = token.replace("−", "-").replace(",", "").lstrip("+-")
            digits = len(clean.split(".")[1]) if "." in clean else 0
            if not _found(float(clean), digits, candidates, minutes=unit.strip() == "min"):
                problems.append(f"paragraph {first!r}: {token}{unit} is not in {', '.join(sources)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.analysis.findings", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(PROJECT_ROOT / "README.md"))
    parser.add_argument("--tables", default=None, help="tables folder (default: results/tables beside the README)")
    parser.add_argument("--check", action="store_true", help="only check: exit 1 when the block is stale or a "
                        "number of the section is not in the tables it cites")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    changed = update_readme(readme, args.tables, check=args.check)
    problems = check_numbers(findings_section(readme.read_text()), readme.parent)
    for problem in problems:
        print(f"findings: {problem}", file=sys.stderr)
    if args.check and changed:
        print("findings: the generated block is stale; run python -m nhllib.analysis.findings", file=sys.stderr)
    return 1 if problems or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
