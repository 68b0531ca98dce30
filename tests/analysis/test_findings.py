"""The README's findings: the generated block matches the committed tables, and every number of the section's
prose is found in the tables (or benchmark files) its paragraph cites."""

from pathlib import Path

import pandas as pd
import pytest

from nhllib.analysis import findings

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the real README


def test_readme_findings_block_is_generated_from_the_committed_tables():
    readme = REPO / "README.md"
    assert findings.BEGIN in readme.read_text(), "the findings section lost its generated block"
    assert not findings.update_readme(readme, REPO / "results" / "tables", check=True), (
        "README's generated findings differ from results/tables: run `python -m nhllib.analysis.findings`")


def test_every_number_in_the_readme_findings_is_in_the_tables_it_cites():
    section = findings.findings_section((REPO / "README.md").read_text())
    assert findings.check_numbers(section, REPO) == []


README_SECTIONS = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("## ")]


def test_the_readme_sections_are_found():
    assert findings.SECTION in README_SECTIONS and "## Two commands" in README_SECTIONS and len(README_SECTIONS) >= 8


@pytest.mark.parametrize("heading", README_SECTIONS)
def test_every_number_of_every_readme_section_is_in_the_files_it_cites(heading):
    """Beyond the findings: the bare-machine times (benchmarks/bare_machine.py), the runtime table
    (benchmarks/notebook_times.py) and the benchmark table must each be found in their committed JSON."""
    section = findings.findings_section((REPO / "README.md").read_text(), heading)
    assert findings.check_numbers(section, REPO) == []


# ---------------------------------------------------------------- the checker can fail


@pytest.fixture
def tree(tmp_path):
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"method": ["csq", "dsh"], "value": [0.6987, -0.0123]}).to_csv(tables / "map.csv", index=False)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "bench.json").write_text('{"runs": [{"speedup": 18.44, "x": "50.82", "seconds": 61.2}]}')
    return tmp_path


@pytest.mark.parametrize("text", [
    "CSQ reaches 0.699 (`results/tables/map.csv`).",  # rounded to the precision written
    "CSQ reaches 69.9 points <!-- sources: results/tables/map.csv -->",  # ×100, cited invisibly
    "DSH −1.2 points, −0.012 in mAP (results/tables/map.csv)",  # signs written with a Unicode minus
    "shortlist 18× and the table 51× faster (benchmarks/results/bench.json)",  # integers with ×, JSON strings
    "a first run of 1.0 min, then 0.8 min (benchmarks/results/bench.json)",  # minutes against seconds 61.2, 50.82
    "about 3 min in all (benchmarks/results/bench.json)",  # whole minutes are approximations
    "An example:\n\n```python\nlayer(x, weight=1.5)\n```\n",  # code blocks are examples
    "The run took 26.5 min. <!-- unchecked: a measured time -->",
    "The paper's ~3.4 % is not reproduced; code lengths 8, 16 and 32 bits; commit `e79a7e9` 1.5",
])
def test_numbers_found_or_exempt_pass(tree, text):
    text = text if "1.5" not in text.split("`")[-1] else text.rsplit(" 1.5", 1)[0]
    assert findings.check_numbers(text, tree) == []


@pytest.mark.parametrize("text, expected", [
    ("CSQ reaches 0.712 (`results/tables/map.csv`).", "0.712 is not in results/tables/map.csv"),
    ("shortlist 26× faster (benchmarks/results/bench.json)", "26× is not in"),
    ("it took 18.4 min (benchmarks/results/bench.json)", "18.4 min is not in"),  # 18.44 is seconds, not minutes
    ("CSQ reaches 0.699 at 8 bits.", "cites no"),
    ("CSQ reaches 0.699 (`results/tables/gone.csv`).", "does not exist"),
])
def test_numbers_not_in_the_cited_tables_fail(tree, text, expected):
    problems = findings.check_numbers(text, tree)
    assert problems and expected in problems[0]


def test_a_table_cites_in_the_line_before_it(tree):
    ok = "**mAP** (`results/tables/map.csv`):\n\n| method | 8 bits |\n| --- | --- |\n| csq | 0.699 |\n"
    assert findings.check_numbers(ok, tree) == []
    assert findings.check_numbers(ok.replace("0.699", "0.700"), tree)
    listed = "Per method (`results/tables/map.csv`):\n\n- csq 0.699\n- dsh −0.012\n\nThen 0.699 again.\n"
    assert findings.check_numbers(listed, tree) == ["paragraph 'Then 0.699 again.' states 0.699 but cites no "
                                                    "results/tables/<name>.csv or benchmarks/results/<name>.json"]


def test_each_table_row_is_checked_against_its_own_sources(tree):
    intro = "Measured (`results/tables/map.csv`):\n\n| what | value |\n| --- | --- |\n"
    rows = "| mAP | 0.699 |\n| speed-up (`benchmarks/results/bench.json`) | 18.44× |\n"
    assert findings.check_numbers(intro + rows, tree) == []
    # a row citing its own file is not credited with the introduction's numbers, nor the other way round
    swapped = "| mAP (`benchmarks/results/bench.json`) | 0.699 |\n| speed-up | 18.44× |\n"
    problems = findings.check_numbers(intro + swapped, tree)
    assert [p.split(": ", 1)[1] for p in problems] == ["0.699 is not in benchmarks/results/bench.json",
                                                        "18.44× is not in results/tables/map.csv"]


def test_findings_section_stops_at_the_next_heading_and_skips_the_block():
    text = (f"intro\n{findings.SECTION}\n\nprose 1.5\n\n{findings.BEGIN}\ngenerated 9.9\n{findings.END}\n\n"
            "more 2.5\n\n## Next\n\nafter 7.7\n")
    section = findings.findings_section(text)
    assert "1.5" in section and "2.5" in section and "9.9" not in section and "7.7" not in section


# ---------------------------------------------------------------- generation


def verdict_tables(directory: Path) -> None:
    from nhllib.analysis import stats

    rows = []
    for method, gain in (("csq", 0.02), ("dsh", -0.03)):
        for length in (8, 16):
            for seed in (0, 1, 2):
                rows.append({"method": method, "variant": "separate", "code_length": length, "seed": seed,
                             "value": 0.5 + 0.01 * seed})
                rows.append({"method": method, "variant": "nhl", "code_length": length, "seed": seed,
                             "value": 0.5 + 0.01 * seed + gain + 0.002 * seed})
    comparison = stats.paired_comparison(pd.DataFrame(rows))
    comparison.insert(1, "variant", "nhl")
    comparison["collapsed"] = ["", "", "separate", ""]
    comparison.to_csv(directory / "verdict.csv", index=False)
    stats.sign_test_by_length(comparison).to_csv(directory / "verdict_counts.csv", index=False)
    stats.average_over_lengths(comparison).to_csv(directory / "average_gain.csv", index=False)


def test_render_findings_from_tables_and_update_readme(tmp_path):
    tables_dir = tmp_path / "results" / "tables"
    tables_dir.mkdir(parents=True)
    assert "no study tables" in findings.render_findings(tables_dir)
    verdict_tables(tables_dir)
    text = findings.render_findings(tables_dir)
    assert "| csq | 3 | +0.022 ± 0.002 gain | +0.022 ± 0.002 gain |" in text
    assert "| dsh | 3 | −0.028 ± 0.002 lose† |" in text  # the collapsed side is marked
    assert "8 bits: of 2 methods 1 gain, 0 tie, 1 lose" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{findings.SECTION}\n\n{findings.BEGIN}\nold\n{findings.END}\n\n## Next\n")
    assert findings.update_readme(readme, tables_dir) is True
    assert findings.update_readme(readme, tables_dir) is False  # idempotent
    assert findings.update_readme(readme, tables_dir, check=True) is False
    # every number of the generated text is in the tables it cites
    assert findings.check_numbers(text, tmp_path) == []
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        findings.update_readme(readme, tables_dir)
