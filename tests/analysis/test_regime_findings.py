"""The README's regimes block is generated from the regimes tables (and is never stale)."""

from pathlib import Path

import pandas as pd
import pytest

from nhllib.analysis import regime_findings
from nhllib.analysis.findings import findings_section

REPO = Path(__file__).resolve().parents[2]


def _tables(folder: Path) -> Path:
    folder.mkdir(parents=True)
    regimes = ["mlp from scratch", "mlp in-domain pretrained, fine-tuned"]
    pd.DataFrame([{"regime": r, "cells": 10, "methods": 2, "gain": g, "tie": 10 - g, "lose": 0, "higher": 6 + g,
                   "lower": 4 - g, "sign_p": p, "mean_difference": d}
                  for r, g, p, d in ((regimes[0], 1, 0.754, 0.0012), (regimes[1], 3, 0.021, -0.0041))]
                 ).to_csv(folder / "regime_sign_tests.csv", index=False)
    pd.DataFrame([{"regime": r, "method": m, "lengths": 5, "points": pts, "relative_pct": pts}
                  for r, rows in zip(regimes, (((("csq", -0.25), ("dsh", 1.5))), (("csq", 0.4), ("dsh", -2.0))))
                  for m, pts in rows]).to_csv(folder / "regime_average_gain.csv", index=False)
    pd.DataFrame([{"regime": r, "code_length": n, "mean": m, "std": 0.01, "n": 3, "seeds": "0,1,2",
                   "formatted": f"{m:.3f} ± 0.010"} for r, base in zip(regimes, (0.15, 0.3)) for n, m in
                  ((8, base), (128, base + 0.3))]).to_csv(folder / "regime_reference.csv", index=False)
    pd.DataFrame([{"name": "e", "backbone": "mlp", "labels": "in-domain", "probe_accuracy": 0.879,
                   "probe_accuracy_random_init": 0.791}]).to_csv(folder / "pretrained_backbones.csv", index=False)
    pd.DataFrame([{"regime": r, "code_length": n, "methods": 2, "gain": 0, "tie": 2, "lose": 0, "higher": 1,
                   "lower": 1, "sign_p": 1.0} for r in regimes for n in (8, 128)]
                 ).to_csv(folder / "regime_verdict_counts.csv", index=False)
    pd.DataFrame([{"regime": r, "methods": 2, "speedup_mean": s, "speedup_min": s - 1, "speedup_max": s + 1,
                   "backbone_share": sh} for r, s, sh in ((regimes[0], 3.0, 0.526), (regimes[1], 3.5, 0.526))]
                 ).to_csv(folder / "regime_speedup_share.csv", index=False)
    return folder


def test_the_block_states_each_regimes_start_verdicts_and_cost(tmp_path):
    text = regime_findings.render_regime_findings(_tables(tmp_path / "t"))
    assert "| mlp in-domain pretrained, fine-tuned | 0.8790 | 0.300 ± 0.010 | 0.600 ± 0.010 |" in text
    assert "| mlp from scratch | 0.7910 (random init) | 0.150 ± 0.010 | 0.450 ± 0.010 |" in text
    assert "| mlp in-domain pretrained, fine-tuned | 2 | 10 | 3 / 7 / 0 | 9 / 1 | 0.021 | −0.004 | −2.00 (dsh) to " \
           "+0.40 (csq) |" in text
    assert "| mlp from scratch | 3.00× (2.00–4.00) | 0.526 |" in text
    assert text == regime_findings.render_regime_findings(tmp_path / "t")  # deterministic


def test_without_tables_the_block_says_how_to_make_them(tmp_path):
    assert regime_findings.render_regime_findings(tmp_path) == regime_findings.NO_TABLES + "\n"


def test_update_rewrites_only_the_block_and_check_writes_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## What changes with the regime\n\nintro 0.5\n\n{regime_findings.BEGIN}\nold\n"
                      f"{regime_findings.END}\n\nafter\n")
    tables = _tables(tmp_path / "t")
    assert regime_findings.update_readme(readme, tables, check=True) is True
    assert "old" in readme.read_text()
    assert regime_findings.update_readme(readme, tables) is True
    text = readme.read_text()
    assert "old" not in text and text.startswith("# x") and text.endswith("after\n") and "0.8790" in text
    assert regime_findings.update_readme(readme, tables, check=True) is False
    # the number checker skips the generated block (its own test keeps it current)
    assert "0.8790" not in findings_section(text, "## What changes with the regime")


def test_the_readmes_block_is_current():
    readme = REPO / "README.md"
    if regime_findings.BEGIN not in readme.read_text():
        pytest.fail("the README lacks the regimes block markers")
    assert regime_findings.update_readme(readme, check=True) is False, \
        "stale: run python -m nhllib.analysis.regime_findings"
