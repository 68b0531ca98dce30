"""The study's verdict on NHL: paired tests across seeds, and a sign test across methods.

Input is a tidy frame of one metric with the columns ``method, variant, code_length, seed, value`` (one row per
run and length, as :func:`nhllib.analysis.tables` builds them). A variant is compared with the reference (``separate``)
**paired by seed**: the same seed means the same split, initialisation stream and batch order, so the seed-to-seed
spread that both share cancels in the difference.

- Per method and length (:func:`paired_comparison`): the mean paired difference, its standard deviation, a
  two-sided paired t-test and the 95 % confidence interval of the mean difference. The verdict is ``gain`` when
  the interval lies above 0, ``lose`` when it lies below, else ``tie``. With n = 3 seeds the interval is wide
  (t₀.₉₇₅ with 2 degrees of freedom is 4.30), so a ``tie`` often means "not resolved by three seeds", not
  "equal"; the table keeps n so the reader can see it.
- Per length across methods (:func:`sign_test_by_length`): how many methods gain, tie or lose, and an exact
  two-sided sign test on the signs of the methods' mean differences (ties at exactly 0 dropped).
- Per method (:func:`average_over_lengths`): the difference averaged over lengths, in mAP points and relative
  to the reference, the form in which the paper states its gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = ["VERDICTS", "paired_test", "paired_comparison", "sign_test", "sign_test_by_length",
           "average_over_lengths"]

VERDICTS = ("gain", "tie", "lose")
_COLUMNS = ("method", "variant", "code_length", "seed", "value")


def paired_test(differences: Sequence[float], confidence: float = 0.95) -> dict[str, float | int | str]:
    """Mean, std, n, t, two-sided p and the confidence interval of paired differences, with a verdict.

    With one difference there is no spread: std, t, p and the interval are NaN and the verdict is ``tie``
    (an n = 1 point decides nothing).
    """
    from scipy import stats as sps

    values = [float(d) for d in differences]
    if not values:
        raise ValueError("differences must hold at least one value, got none")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    n = len(values)
    mean = sum(values) / n
    nan = float("nan")
    out: dict[str, float | int | str] = {"mean": mean, "std": nan, "n": n, "t": nan, "p": nan,
                                         "ci_low": nan, "ci_high": nan, "verdict": "tie"}
    if n < 2:
        return out
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    if std > 0:
        t = mean / (std / math.sqrt(n))
        out.update(t=t, p=float(2 * sps.t.sf(abs(t), n - 1)))
    elif mean != 0:  # identical non-zero differences: the interval is a point away from 0
        out.update(t=math.copysign(math.inf, mean), p=0.0)
    if out["ci_low"] > 0:
        out["verdict"] = "gain"
    elif out["ci_high"] < 0:
        out["verdict"] = "lose"
    return out


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the metric frame lacks column(s) {missing}; it needs {list(_COLUMNS)}")


def paired_comparison(frame: pd.DataFrame, variant: str = "nhl", reference: str = "separate",
                      confidence: float = 0.95) -> pd.DataFrame:
    """Per method and code length: ``variant`` − ``reference`` paired by seed (see the module docstring).

    Only seeds present in both count; a method or length without a common seed is left out. Columns:
    ``method, code_length, n, seeds, variant_mean, reference_mean, mean, std, t, p, ci_low, ci_high, verdict``.
    """
    _check_frame(frame)
    rows = []
    for (method, length), group in frame.groupby(["method", "code_length"], sort=True):
        by_variant = {name: g.set_index("seed")["value"] for name, g in group.groupby("variant")}
        if variant not in by_variant or reference not in by_variant:
            continue
        ours, ref = by_variant[variant], by_variant[reference]
        for name, series in ((variant, ours), (reference, ref)):
            if series.index.has_duplicates:
                raise ValueError(f"{name} has several runs per seed for {method} at {length} bits; "
                                 "select one configuration (for example one λ) first")
        seeds = sorted(set(ours.index) & set(ref.index))
        if not seeds:
            continue
        test = paired_test([ours[s] - ref[s] for s in seeds], confidence)
        rows.append({"method": method, "code_length": int(length), "seeds": ",".join(map(str, seeds)),
                     "variant_mean": float(ours[seeds].mean()), "reference_mean": float(ref[seeds].mean()),
                     **test})
    columns = ["method", "code_length", "n", "seeds", "variant_mean", "reference_mean", "mean", "std", "t", "p",
               "ci_low", "ci_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def sign_test(signs: Sequence[float]) -> dict[str, float | int]:
    """Exact two-sided sign test of the values' signs; exact zeros are dropped (the usual convention)."""
    from scipy import stats as sps

    positive = sum(1 for s in signs if s > 0)
    negative = sum(1 for s in signs if s < 0)
    n = positive + negative
    p = float(sps.binomtest(positive, n, 0.5).pvalue) if n else float("nan")
    return {"positive": positive, "negative": negative, "n": n, "p": p}


def sign_test_by_length(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per code length: methods that gain / tie / lose (paired verdicts) and a sign test on their mean differences."""
    rows = []
    for length, group in comparison.groupby("code_length", sort=True):
        counts = group["verdict"].value_counts()
        test = sign_test(group["mean"].tolist())
        rows.append({"code_length": int(length), "methods": len(group),
                     **{v: int(counts.get(v, 0)) for v in VERDICTS},
                     "higher": test["positive"], "lower": test["negative"], "sign_p": test["p"]})
    return pd.DataFrame(rows, columns=["code_length", "methods", *VERDICTS, "higher", "lower", "sign_p"])


def average_over_lengths(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per method: the mean difference over lengths in mAP points (×100) and relative to the reference (%)."""
    rows = []
    for method, group in comparison.groupby("method", sort=True):
        rows.append({"method": method, "lengths": len(group),
                     "points": 100 * float(group["mean"].mean()),
                     "relative_pct": 100 * float((group["variant_mean"] / group["reference_mean"] - 1).mean())})
    return pd.DataFrame(rows, columns=["method", "lengths", "points", "relative_pct"])
