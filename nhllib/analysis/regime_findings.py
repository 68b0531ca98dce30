"""The README's regimes block: what the regimes study (``studies/regimes.yaml``) found, generated from its tables.

``python -m nhllib.analysis.regime_findings`` rewrites the text between :data:`BEGIN` and :data:`END` in the README
from ``results/regimes/tables`` (written by ``03_figures`` for the regimes study) and
``results/regimes/tables/pretrained_backbones.csv`` (written by ``python -m nhllib.study.pretrain regimes --csv``);
``--check`` only reports a stale block. Per regime: where the backbone starts (its linear probe, the untrained
reference), the nhl − separate verdicts over every method × length cell with the sign test, the per-length sign
tests, the average gain per method, the training speed-up beside the backbone's share of a step, the epochs to the
best validation mAP and the most conflicted pair. The prose around the block is written by hand and checked like
the default study's (:func:`nhllib.analysis.findings.check_numbers`).

Torch-free: it reads CSV only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from nhllib.analysis.findings import PROJECT_ROOT, replace_block

__all__ = ["BEGIN", "END", "render_regime_findings", "update_readme", "main"]

BEGIN = ("<!-- regimes:begin (generated from results/regimes/tables by python -m nhllib.analysis.regime_findings; "
         "do not edit) -->")
END = "<!-- regimes:end -->"
TABLES = Path("results") / "regimes" / "tables"
NO_TABLES = "_(no regimes tables yet: run ./run_all.sh default, then ./run_all.sh regimes)_"


def _read(tables_dir: Path, name: str) -> pd.DataFrame | None:
    path = tables_dir / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _source(*names: str) -> str:
    return "(" + ", ".join(f"`{(TABLES / name).as_posix()}.csv`" for name in names) + ")"


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def _probe(regime: str, backbones: pd.DataFrame | None) -> str:
    """The linear-probe accuracy of the regime's starting backbone on the validation split."""
    if backbones is None or backbones.empty:
        return "–"
    backbone, rest = regime.split(" ", 1)
    mine = backbones[backbones["backbone"] == backbone]
    if mine.empty:
        return "–"
    for labels in mine["labels"]:
        if rest.startswith(f"{labels} pretrained"):
            return f"{mine.loc[mine['labels'] == labels, 'probe_accuracy'].iloc[0]:.4f}"
    if rest.startswith("from scratch"):
        return f"{mine['probe_accuracy_random_init'].iloc[0]:.4f} (random init)"
    return "–"


def _starts(tables_dir: Path, order: list[str]) -> str | None:
    reference = _read(tables_dir, "regime_reference")
    if reference is None or reference.empty:
        return None
    backbones = _read(tables_dir, "pretrained_backbones")
    lengths = sorted(int(v) for v in reference["code_length"].unique())
    lines = ["**Where each regime starts**: the linear-probe accuracy of its backbone on the validation split "
             "(a logistic regression on the frozen features), and the untrained hash layer on that backbone, query "
             "mAP (mean ± std over seeds) " + _source("regime_reference", "pretrained_backbones") + ":", "",
             "| regime | linear probe | " + " | ".join(f"reference {v} bits" for v in lengths) + " |",
             "| --- | --- | " + " | ".join("---" for _ in lengths) + " |"]
    for regime in order:
        rows = reference[reference["regime"] == regime].set_index("code_length")
        cells = [rows.loc[v, "formatted"] if v in rows.index else "" for v in lengths]
        lines.append(f"| {regime} | {_probe(regime, backbones)} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def _verdicts(tables_dir: Path, order: list[str]) -> str | None:
    tests = _read(tables_dir, "regime_sign_tests")
    if tests is None or tests.empty:
        return None
    gains = _read(tables_dir, "regime_average_gain")
    lines = ["**nhl − separate over every method × length cell of a regime** (verdicts from the paired 95 % "
             "intervals; sign test of the cell means, descriptive since a method's lengths are not independent; "
             "average gain per method over the lengths, lowest and highest) "
             + _source("regime_sign_tests", "regime_average_gain") + ":", "",
             "| regime | methods | cells | gain / tie / lose | higher / lower | sign test p | mean difference | "
             "average gain per method, points |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | --- |"]
    for regime in order:
        row = tests[tests["regime"] == regime]
        if row.empty:
            continue
        r = row.iloc[0]
        spread = ""
        if gains is not None:
            mine = gains[gains["regime"] == regime].sort_values("points")
            if not mine.empty:
                low, high = mine.iloc[0], mine.iloc[-1]
                spread = (f"{_signed(low['points'], 2)} ({low['method']}) to {_signed(high['points'], 2)} "
                          f"({high['method']})")
        lines.append(f"| {regime} | {int(r['methods'])} | {int(r['cells'])} | {int(r['gain'])} / {int(r['tie'])} / "
                     f"{int(r['lose'])} | {int(r['higher'])} / {int(r['lower'])} | {r['sign_p']:.3f} | "
                     f"{_signed(r['mean_difference'])} | {spread} |")
    return "\n".join(lines)


def _per_length(tables_dir: Path, order: list[str]) -> str | None:
    counts = _read(tables_dir, "regime_verdict_counts")
    if counts is None or counts.empty:
        return None
    lengths = sorted(int(v) for v in counts["code_length"].unique())
    lines = ["**Per code length**: gain / tie / lose, then how many methods are higher / lower on average and the "
             "sign test p " + _source("regime_verdict_counts") + ":", "",
             "| regime | " + " | ".join(f"{v} bits" for v in lengths) + " |",
             "| --- | " + " | ".join("---" for _ in lengths) + " |"]
    for regime in order:
        rows = counts[counts["regime"] == regime].set_index("code_length")
        cells = []
        for v in lengths:
            if v not in rows.index:
                cells.append("")
                continue
            r = rows.loc[v]
            cells.append(f"{int(r['gain'])}/{int(r['tie'])}/{int(r['lose'])}; {int(r['higher'])}↑ {int(r['lower'])}↓, "
                         f"p = {r['sign_p']:.3f}")
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cost(tables_dir: Path, order: list[str]) -> str | None:
    share = _read(tables_dir, "regime_speedup_share")
    epochs = _read(tables_dir, "regime_best_epochs")
    conflicts = _read(tables_dir, "regime_conflicts")
    if share is None or share.empty:
        return None
    lines = ["**Cost and conflicts**: the training-time speed-up of one nhl model over its separate models (mean over "
             "methods, lowest and highest), the backbone's share of a training step of that regime "
             "(`benchmarks/bench_backbone_share.py`), epochs to the best validation mAP (mean over methods) and the "
             "most conflicted pair of lengths (share of steps whose gradients conflict) "
             + _source("regime_speedup_share", "regime_best_epochs", "regime_conflicts") + ":", "",
             "| regime | speed-up | backbone share | best epoch, separate / nhl | most conflicted pair |",
             "| --- | --- | ---: | --- | --- |"]
    for regime in order:
        row = share[share["regime"] == regime]
        if row.empty:
            continue
        r = row.iloc[0]
        best = ""
        if epochs is not None:
            mine = epochs[epochs["regime"] == regime].groupby("variant")["best_epoch_mean"].mean()
            if {"separate", "nhl"} <= set(mine.index):
                best = f"{mine['separate']:.1f} / {mine['nhl']:.1f}"
        worst = ""
        if conflicts is not None:
            mine = conflicts[(conflicts["regime"] == regime) & (conflicts["variant"] == "nhl")]
            if "targets" in mine:
                mine = mine[mine["targets"].fillna("nested") == "nested"]
            if not mine.empty:
                top = mine.sort_values("rate_mean").iloc[-1]
                worst = (f"{top['method']} {int(top['short_length'])}\\|{int(top['long_length'])}: "
                         f"{top['rate_mean']:.3f}")
        share_text = "–" if pd.isna(r["backbone_share"]) else f"{r['backbone_share']:.3f}"
        lines.append(f"| {regime} | {r['speedup_mean']:.2f}× ({r['speedup_min']:.2f}–{r['speedup_max']:.2f}) | "
                     f"{share_text} | {best} | {worst} |")
    return "\n".join(lines)


def render_regime_findings(tables_dir: str | Path = TABLES) -> str:
    """The generated block, from the regimes tables in ``tables_dir``; deterministic."""
    tables_dir = Path(tables_dir)
    tests = _read(tables_dir, "regime_sign_tests")
    if tests is None or tests.empty:
        return NO_TABLES + "\n"
    order = list(dict.fromkeys(tests["regime"]))
    parts = [part for part in (_starts(tables_dir, order), _verdicts(tables_dir, order),
                               _per_length(tables_dir, order), _cost(tables_dir, order)) if part]
    return "\n\n".join(parts) + "\n"


def update_readme(readme: str | Path = PROJECT_ROOT / "README.md", tables_dir: str | Path | None = None,
                  check: bool = False) -> bool:
    """Replace the block between :data:`BEGIN` and :data:`END`; returns whether it changed (``check``: write
    nothing). The markers must already be in the README."""
    readme = Path(readme)
    tables_dir = Path(tables_dir) if tables_dir is not None else readme.parent / TABLES
    return replace_block(readme, BEGIN, END, render_regime_findings(tables_dir), check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.analysis.regime_findings",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(PROJECT_ROOT / "README.md"))
    parser.add_argument("--tables", default=None, help="tables folder (default: results/regimes/tables beside the README)")
    parser.add_argument("--check", action="store_true", help="only check: exit 1 when the block is stale")
    args = parser.parse_args(argv)
    changed = update_readme(args.readme, args.tables, check=args.check)
    if args.check and changed:
        print("regime findings: the generated block is stale; run python -m nhllib.analysis.regime_findings",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
