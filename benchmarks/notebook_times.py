"""Wall time of the notebooks a learner runs by hand: the tour, the exercises (blank and with the solutions) and one
``01_train`` run of the default study's setting (CSQ ``nhl``, MLP, 10 epochs, 10,000-image database).

Each notebook is executed by papermill in a fresh kernel, one after the other, exactly as the README's runtime
table writes the command; the time includes the kernel's start and the imports. The load average before each run
is recorded, since on a shared machine it is what moves these numbers most. Needs Fashion-MNIST
(``scripts/get_data.sh``).

    python benchmarks/notebook_times.py            # writes benchmarks/results/notebook_times.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nhllib.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STUDY_RUN = ("-p", "backbone", "mlp", "-p", "center_codes", "True", "-p", "epochs", "10",
                     "-p", "patience", "2", "-p", "database_per_class", "1000")

# name -> (notebook, papermill parameters); the results folder of 01_train is added in a temporary folder
CASES = {
    "tour": ("notebooks/00_tour.ipynb", ()),
    "exercises_blank": ("notebooks/05_exercises.ipynb", ()),
    "exercises_solutions": ("notebooks/05_exercises.ipynb", ("-p", "use_solutions", "True")),
    "train_default_study_run": ("notebooks/01_train.ipynb", DEFAULT_STUDY_RUN),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/notebook_times.json")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="time these cases only")
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="nhllib-notebook-times-") as tmp:
        for name in args.only or CASES:
            runs[name] = time_notebook(name, Path(tmp))
            print(f"{name}: {runs[name]['seconds']} s (load {runs[name]['load_average_before']}), "
                  f"exit status {runs[name]['returncode']}", flush=True)
    report = {
        "runs": runs,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if any(run["returncode"] for run in runs.values()):
        sys.exit(1)


def time_notebook(name: str, tmp: Path) -> dict:
    notebook, parameters = CASES[name]
    extra = ("-p", "results_root", str(tmp / "results")) if notebook.endswith("01_train.ipynb") else ()
    command = [sys.executable, "-m", "papermill", "--no-progress-bar", notebook, str(tmp / f"{name}.ipynb"),
               *parameters, *extra]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
    return {
        "command": " ".join(["papermill", notebook, "out.ipynb", *parameters]),
        "seconds": round(seconds, 1),
        "returncode": proc.returncode,
        "load_average_before": round(load_before, 2),
    }


if __name__ == "__main__":
    main()
