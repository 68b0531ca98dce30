"""Estimate the wall time of a profile (studies/regimes.yaml) from the measured runs of its pilot.

Basis: every pilot run (studies/regimes_pilot.yaml: CSQ, seed 0, per regime one untrained, one 32-bit separate and
one nhl run at the profile's real size) gives, per regime and kind of run, its notebook's wall time (papermill's
``duration``, kernel start and evaluation included) and its training-loop time (``train_time_s``). A run of the
profile is estimated as that wall time with the training part scaled by the method's cost relative to CSQ, taken
from the committed default study (``results/tables/speedup.csv``: the summed ``separate`` and the ``nhl``
training times per method). The runs of the profile are summed and divided by the jobs run at a time (the
pilot's runs already ran that many at a time, so their times include the sharing); the analysis notebooks'
measured time is added. Untrained runs are not scaled (they do not train).

The pilot's times carry the load of the machine it ran on. So the same model also estimates a calibration profile
whose whole run was measured on a quiet machine (``--calibrate default``: ``./run_all.sh`` on this project's 2-core
AMD EPYC, ``benchmarks/results/bare_machine.json``, 219 runs with the analysis and the course-kit check); the ratio
of that measured time to its estimate rescales the estimate to a quiet machine.

Usage: python benchmarks/estimate_regimes.py [--profile regimes] [--pilot results/regimes_pilot] [--jobs 2]
Writes benchmarks/results/estimate_regimes.json and prints the estimate per regime.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import pandas as pd

from nhllib.analysis.regimes import regime_name
from nhllib.store.results import load_runs
from nhllib.study import ANALYSIS_NOTEBOOKS, load_profile

KINDS = {"untrained": "untrained", "separate": "separate"}  # every other variant is a nested model: "nhl"


def _kind(variant: str) -> str:
    return KINDS.get(variant, "nhl")


def _duration(notebook: Path) -> float:
    return float(json.loads(notebook.read_text())["metadata"]["papermill"]["duration"])


def pilot_times(pilot: Path) -> pd.DataFrame:
    runs = load_runs(pilot.parent, pilot.name)
    rows = []
    for run in runs.itertuples():
        folder = pilot / run.run_id
        timing = json.loads((folder / "timing.json").read_text())
        rows.append({"regime": regime_name(run.backbone, run.pretrained, getattr(run, "freeze_backbone", False)),
                     "kind": _kind(run.variant), "method": run.method, "wall_s": _duration(folder / "01_train.ipynb"),
                     "train_s": float(timing["train_time_s"])})
    return pd.DataFrame(rows)


def method_ratios(speedup_csv: Path) -> dict[tuple[str, str], float]:
    table = pd.read_csv(speedup_csv)
    table = table[(table["variant"] == "nhl") & (table["distill_weight"] == 1.0) & (table["targets"] == "nested")]
    csq = table[table["method"] == "csq"].iloc[0]
    ratios = {}
    for row in table.itertuples():
        ratios[(row.method, "separate")] = row.separate_time_s_mean / csq["separate_time_s_mean"]
        ratios[(row.method, "nhl")] = row.variant_time_s_mean / csq["variant_time_s_mean"]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="regimes")
    parser.add_argument("--pilot", type=Path, default=Path("results/regimes_pilot"))
    parser.add_argument("--speedup", type=Path, default=Path("results/tables/speedup.csv"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--calibrate", default="default", help="a profile measured on a quiet machine")
    parser.add_argument("--calibrate-json", type=Path, default=Path("benchmarks/results/bare_machine.json"))
    parser.add_argument("--calibrate-command", default="./run_all.sh")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "estimate_regimes.json")
    args = parser.parse_args()
    pilot = pilot_times(args.pilot)
    measured = {(r.regime, r.kind): r for r in pilot.itertuples()}
    ratios = method_ratios(args.speedup)
    per_regime = _estimate(load_profile(args.profile), measured, ratios)
    calibration = _estimate(load_profile(args.calibrate), measured, ratios)
    quiet = next(r for r in json.loads(args.calibrate_json.read_text())["runs"] if r["command"] == args.calibrate_command)
    analysis_s = sum(_duration(args.pilot / nb) for nb in ANALYSIS_NOTEBOOKS if (args.pilot / nb).is_file())
    total_runs_s = sum(v["run_s"] for v in per_regime.values())
    wall_s = total_runs_s / args.jobs + analysis_s
    calibration_s = sum(v["run_s"] for v in calibration.values()) / args.jobs + analysis_s
    factor = quiet["work_s"] / calibration_s
    for regime, v in per_regime.items():
        print(f"{regime:40s} {v['runs']:4d} runs, {v['run_s'] / args.jobs / 60:6.1f} min at {args.jobs} jobs "
              f"(quiet: {factor * v['run_s'] / args.jobs / 60:5.1f} min)")
    print(f"{'analysis (as measured on the pilot)':40s}       {analysis_s / 60:6.1f} min")
    print(f"{'in all':40s} {sum(v['runs'] for v in per_regime.values()):4d} runs, {wall_s / 60:6.1f} min at the "
          f"pilot's load; x {factor:.3f} (profile {args.calibrate!r}: measured quiet {quiet['work_s']:.0f} s, "
          f"estimated here {calibration_s:.0f} s) = {factor * wall_s / 60:.1f} min on a quiet machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": f"python benchmarks/estimate_regimes.py --profile {args.profile} --pilot {args.pilot} "
                   f"--jobs {args.jobs} --calibrate {args.calibrate}",
        "load_average_now": os.getloadavg(), "pilot": pilot.to_dict("records"),
        "per_regime": {k: {**v, "wall_s": v["run_s"] / args.jobs} for k, v in per_regime.items()},
        "analysis_s": analysis_s, "estimated_wall_s": wall_s,
        "calibration": {"profile": args.calibrate, "measured_quiet_s": quiet["work_s"], "source": str(args.calibrate_json),
                        "cpu": quiet["cpu"], "commit": quiet["commit"], "estimated_s": calibration_s, "factor": factor},
        "estimated_quiet_wall_s": factor * wall_s,
    }, indent=2) + "\n")


def _estimate(profile, measured, ratios) -> dict[str, dict]:
    per_regime: dict[str, dict] = defaultdict(lambda: {"runs": 0, "run_s": 0.0})
    missing = set()
    for cfg in profile.configs:
        regime = regime_name(cfg.model.backbone, cfg.model.pretrained, cfg.training.freeze_backbone)
        kind = _kind(cfg.hashing.variant)
        base = measured.get((regime, kind))
        if base is None:
            missing.add((regime, kind))
            continue
        ratio = 1.0 if kind == "untrained" else ratios[(cfg.hashing.method, kind)]
        per_regime[regime]["runs"] += 1
        per_regime[regime]["run_s"] += base.wall_s - base.train_s + base.train_s * ratio
    if missing:
        raise SystemExit(f"the pilot has no run of {sorted(missing)}; run ./run_all.sh regimes_pilot first")
    return dict(per_regime)


if __name__ == "__main__":
    main()
