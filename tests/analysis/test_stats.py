"""The verdict statistics against closed forms: Student's t with 2 degrees of freedom and the binomial sign test."""

import math

import pandas as pd
import pytest

from nhllib.analysis.stats import average_over_lengths, paired_comparison, paired_test, sign_test, sign_test_by_length


def _t2_two_sided_p(t: float) -> float:
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p is 1 - |t| / sqrt(2 + t^2).
    return 1 - abs(t) / math.sqrt(2 + t * t)


def _t2_quantile(q: float) -> float:
    # Inverse of the df = 2 CDF: t = (2q - 1) sqrt(2 / (1 - (2q - 1)^2)).
    a = 2 * q - 1
    return a * math.sqrt(2 / (1 - a * a))


def test_paired_test_matches_the_df2_closed_form():
    out = paired_test([0.1, 0.2, 0.3])
    t = 0.2 / (0.1 / math.sqrt(3))
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.2) and out["std"] == pytest.approx(0.1)
    assert out["t"] == pytest.approx(t)
    assert out["p"] == pytest.approx(_t2_two_sided_p(t))
    half = _t2_quantile(0.975) * 0.1 / math.sqrt(3)
    assert out["ci_low"] == pytest.approx(0.2 - half) and out["ci_high"] == pytest.approx(0.2 + half)
    assert out["verdict"] == "tie"  # the 95 % interval (about -0.05 .. 0.45) contains 0


@pytest.mark.parametrize("diffs, verdict", [([0.10, 0.11, 0.12], "gain"), ([-0.10, -0.11, -0.12], "lose"),
                                            ([0.05, -0.04, 0.01], "tie"), ([0.2, 0.2, 0.2], "gain")])
def test_verdict_follows_the_interval(diffs, verdict):
    assert paired_test(diffs)["verdict"] == verdict


def test_single_difference_decides_nothing():
    out = paired_test([0.3])
    assert out["verdict"] == "tie" and math.isnan(out["p"]) and out["n"] == 1


def test_paired_test_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one"):
        paired_test([])


def test_sign_test_exact_binomial():
    out = sign_test([0.1] * 8 + [-0.1] * 2 + [0.0])
    assert (out["positive"], out["negative"], out["n"]) == (8, 2, 10)
    assert out["p"] == pytest.approx(2 * (45 + 10 + 1) / 1024)


def _frame():
    rows = []
    # method a gains by about 0.1 at 8 bits (paired); method b loses a little; seed 3 of 'nhl' has no partner.
    for seed, (sep, nhl) in enumerate([(0.5, 0.61), (0.6, 0.70), (0.4, 0.52)]):
        rows += [("a", "separate", 8, seed, sep), ("a", "nhl", 8, seed, nhl)]
    rows.append(("a", "nhl", 8, 3, 0.99))
    for seed, (sep, nhl) in enumerate([(0.5, 0.49), (0.6, 0.58), (0.4, 0.41)]):
        rows += [("b", "separate", 8, seed, sep), ("b", "nhl", 8, seed, nhl)]
    return pd.DataFrame(rows, columns=["method", "variant", "code_length", "seed", "value"])


def test_paired_comparison_pairs_by_seed():
    table = paired_comparison(_frame()).set_index("method")
    assert table.loc["a", "n"] == 3 and table.loc["a", "seeds"] == "0,1,2"
    assert table.loc["a", "mean"] == pytest.approx((0.11 + 0.10 + 0.12) / 3)
    assert table.loc["a", "verdict"] == "gain" and table.loc["b", "verdict"] == "tie"
    counts = sign_test_by_length(table.reset_index()).iloc[0]
    assert (counts["gain"], counts["tie"], counts["lose"], counts["higher"], counts["lower"]) == (1, 1, 0, 1, 1)
    avg = average_over_lengths(table.reset_index()).set_index("method")
    assert avg.loc["a", "points"] == pytest.approx(11.0)
    # relative to the reference: mean nhl 0.61 over mean separate 0.50
    assert avg.loc["a", "relative_pct"] == pytest.approx(22.0)


def test_paired_comparison_rejects_duplicate_seeds():
    frame = pd.concat([_frame(), _frame().iloc[[0]]])
    with pytest.raises(ValueError, match="several runs per seed"):
        paired_comparison(frame)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="seed"):
        paired_comparison(_frame().drop(columns="seed"))
