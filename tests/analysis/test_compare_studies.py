"""Comparing two runs of one study grid: cells matched by key, moves and verdict changes computed by hand."""

import pandas as pd
import pytest

from nhllib.analysis.compare_studies import compare_verdicts, main, summarize


def _verdicts(rows):
    return pd.DataFrame(rows, columns=["method", "variant", "code_length", "variant_mean", "reference_mean", "mean",
                                       "verdict", "n"])


BEFORE = _verdicts([
    ("csq", "nhl", 8, 0.70, 0.68, 0.02, "gain", 3),
    ("csq", "nhl", 16, 0.72, 0.73, -0.01, "tie", 3),
    ("dsh", "nhl", 8, 0.60, 0.65, -0.05, "lose", 3),
    ("dsh", "heads", 8, 0.66, 0.65, 0.01, "tie", 2),
])
AFTER = _verdicts([
    ("dsh", "nhl", 8, 0.63, 0.64, -0.01, "tie", 3),     # listed out of order on purpose
    ("csq", "nhl", 8, 0.71, 0.68, 0.03, "gain", 3),
    ("csq", "nhl", 16, 0.74, 0.73, 0.01, "tie", 3),
    ("dsh", "heads", 8, 0.66, 0.65, 0.01, "tie", 2),
])


def test_cells_are_matched_by_key_with_their_moves_and_verdict_changes():
    cells = compare_verdicts(BEFORE, AFTER).set_index(["method", "variant", "code_length"])
    assert len(cells) == 4
    dsh = cells.loc[("dsh", "nhl", 8)]
    assert dsh.variant_move == pytest.approx(0.03) and dsh.reference_move == pytest.approx(-0.01)
    assert (dsh.verdict_before, dsh.verdict_after, dsh.same_verdict) == ("lose", "tie", False)
    assert bool(dsh.same_sign)  # -0.05 and -0.01: both below 0
    csq16 = cells.loc[("csq", "nhl", 16)]
    assert bool(csq16.same_verdict) and not bool(csq16.same_sign)  # -0.01 became +0.01, still a tie


def test_the_summary_counts_per_variant():
    summary = summarize(compare_verdicts(BEFORE, AFTER)).set_index("variant")
    nhl = summary.loc["nhl"]
    assert (nhl.cells, nhl.same_verdict, nhl.same_sign) == (3, 2, 2)
    assert (nhl.gain_before, nhl.tie_before, nhl.lose_before) == (1, 1, 1)
    assert (nhl.gain_after, nhl.tie_after, nhl.lose_after) == (1, 2, 0)
    assert nhl.max_abs_variant_move == pytest.approx(0.03)
    assert nhl.mean_abs_variant_move == pytest.approx((0.01 + 0.02 + 0.03) / 3)
    assert nhl.max_abs_reference_move == pytest.approx(0.01)
    assert summary.loc["heads", "same_verdict"] == 1


def test_cells_in_only_one_table_are_left_out_with_a_warning(caplog):
    extra = pd.concat([AFTER, _verdicts([("dtsh", "nhl", 8, 0.7, 0.7, 0.0, "tie", 3)])])
    with caplog.at_level("WARNING"):
        cells = compare_verdicts(BEFORE, extra)
    assert len(cells) == 4 and "1 cell(s)" in caplog.text


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="before verdict table lacks the columns \\['verdict'\\]"):
        compare_verdicts(BEFORE.drop(columns="verdict"), AFTER)
    with pytest.raises(ValueError, match="share no"):
        compare_verdicts(BEFORE, AFTER.assign(method="other"))


def test_the_command_writes_both_tables(tmp_path):
    for name, table in (("a", BEFORE), ("b", AFTER)):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "verdict.csv", index=False)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    written = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert written.set_index("variant").loc["nhl", "same_verdict"] == 2
    assert (tmp_path / "out" / "verdicts.md").read_text().startswith("| method |")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
