"""The study driver's command line: ``python -m nhllib.study PROFILE [options]`` (what ``run_all.sh`` runs)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from nhllib.store.locks import LockedError
from nhllib.store.results import RunStore, complete_runs
from nhllib.study.execution import run_study
from nhllib.study.executors import EXECUTORS, SlurmOptions, make_executor
from nhllib.study.preflight import PreflightError, check_study
from nhllib.study.processes import Children, Interrupted, stop_with_parent
from nhllib.study.profile import PROJECT_ROOT, Profile, available_profiles, load_profile

__all__ = ["main", "list_runs"]


def _env_jobs() -> int:
    """``$NHL_JOBS`` (default 2), checked: a typo there must read as an error, not a traceback."""
    text = os.environ.get("NHL_JOBS", "2").strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"NHL_JOBS must be a positive integer (runs at a time), got {text!r}")
    return int(text)


def list_runs(profile: Profile, results_root: Path) -> int:
    """``--list``: each run's state; a complete run is checked against its marker (verified, unverified: a marker
    from before file records, or damaged: what differs, and the folder). Exit status 1 when any run is damaged."""
    counts: dict[str, int] = {}
    for cfg in profile.configs:
        store = RunStore(results_root, cfg.study, cfg.run_id)
        state, note = store.state, ""
        if state == "complete":
            check = store.check()
            state = {"verified": "complete", "unverified": "unverified", "damaged": "DAMAGED"}[check.status]
            if check.damaged:
                note = f"  {'; '.join(check.problems)} ({store.path}); the driver redoes it, keeping this folder aside"
        counts[state] = counts.get(state, 0) + 1
        print(f"{state:10s} {cfg.run_id}{note}")
    print(f"{len(profile.configs)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items())
          + ("  (unverified: complete by a marker written before markers recorded files and checksums)"
             if "unverified" in counts else ""))
    return 1 if "DAMAGED" in counts else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study", description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="default",
                        help="a profile name (" + ", ".join(available_profiles()) + ") or the path of a .yaml file")
    parser.add_argument("--results", default="results",
                        help="results root, relative to the current directory (default: results)")
    parser.add_argument("--analysis-only", action="store_true", help="skip training; rerun the analysis notebooks")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at a time, sharing the CPU cores (default 2, or $NHL_JOBS)")
    parser.add_argument("--list", action="store_true", help="list the runs of the profile and their state (complete, unverified: an old marker, "
                             "DAMAGED: with what differs, incomplete, absent), then exit; changes nothing")
    cluster = parser.add_argument_group(
        "cluster", "--executor slurm submits the missing runs as one Slurm job array through submitit and waits "
        "for them (keep the driver alive: tmux, or a small CPU job); options override the profile's slurm: block")
    cluster.add_argument("--executor", choices=EXECUTORS, default="local",
                         help="local: here, --jobs at a time (default); slurm: a job array; submitit-local: the "
                              "slurm code path with jobs as local processes (to try it without a cluster)")
    cluster.add_argument("--partition", help="Slurm partition")
    cluster.add_argument("--gpus-per-run", type=int, help="GPUs per run (> 1: torchrun data-parallel; default 1)")
    cluster.add_argument("--cpus-per-run", type=int, help="CPU cores per run (default 8)")
    cluster.add_argument("--mem-gb", type=float, help="memory per run in GB (default: the partition's)")
    cluster.add_argument("--time-min", type=int, help="time limit per run in minutes (default 240)")
    cluster.add_argument("--array-parallelism", type=int, help="runs at once in the array (default 64)")
    cluster.add_argument("--account", help="Slurm account")
    cluster.add_argument("--qos", help="Slurm QOS")
    cluster.add_argument("--constraint", help="Slurm node constraint (e.g. a GPU type)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stop_with_parent()  # under run_all.sh: a kill -9 of run_all.sh stops the driver and its notebooks
    if not args.results.strip():
        print(f"error: --results must name a folder, got {args.results!r} (the default is results)", file=sys.stderr)
        return 2
    try:
        profile = load_profile(args.profile)
        args.jobs = args.jobs if args.jobs is not None else _env_jobs()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_root = Path(os.path.abspath(os.path.expanduser(args.results)))
    if args.list:
        return list_runs(profile, results_root)
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    overrides = {name: getattr(args, name) for name in ("partition", "gpus_per_run", "cpus_per_run", "mem_gb",
                                                        "time_min", "array_parallelism", "account", "qos", "constraint")
                 if getattr(args, name) is not None}
    try:
        slurm = SlurmOptions.from_dict({**profile.slurm, **overrides})
        executor = make_executor(args.executor, jobs=args.jobs, folder=results_root / profile.study / ".submitit",
                                 slurm=slurm, name=f"nhl-{profile.study}")
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gpus = slurm.gpus_per_run if args.executor != "local" else (args.gpus_per_run or 1)
    if args.executor == "local" and gpus > 1 and args.jobs > 1:
        print(f"error: --gpus-per-run {gpus} with --executor local gives every run GPUs 0..{gpus - 1}: "
              f"use --jobs 1", file=sys.stderr)
        return 2
    if not args.analysis_only:  # the pre-flight: data, weights and device, before any run starts
        missing = [c for c in profile.configs if RunStore(results_root, c.study, c.run_id).state != "complete"]
        try:
            check_study(profile.name, missing, PROJECT_ROOT, local=args.executor != "slurm", gpus_per_run=gpus)
        except PreflightError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    missing_studies = _missing_studies(profile, results_root)
    if missing_studies:
        print(f"error: {missing_studies}", file=sys.stderr)
        return 2
    children = Children()

    def stop(signum, _frame):
        if children.stopping.is_set():
            return  # a second signal (run_all.sh forwards a Ctrl-C as SIGTERM) lets the first stop finish
        print(f"stopping ({signal.Signals(signum).name}): ending the notebooks ...", file=sys.stderr, flush=True)
        children.stop()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        failures = run_study(profile, results_root, analysis_only=args.analysis_only, jobs=args.jobs,
                             executor=executor, gpus_per_run=gpus, children=children)
    except Interrupted as err:
        children.stop()
        print(f"{err}; the study is resumable: rerun the same command (complete runs are kept)", file=sys.stderr)
        return 128 + err.signum
    except LockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # a results folder that cannot be written: one error, before any run starts
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        print("failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _missing_studies(profile, results_root: Path) -> str:
    """What is wrong with the studies the profile's analysis reads besides its own (empty: nothing), said before
    any run starts rather than after hours of training."""
    problems = []
    for name in profile.with_studies:
        try:
            if not complete_runs(results_root, name):
                problems.append(f"study {name!r} has no complete run under {results_root}")
        except (OSError, ValueError) as err:  # an unreadable folder, or a damaged run (DamagedRunError)
            problems.append(f"study {name!r}: {err}")
    if not problems:
        return ""
    return (f"the analysis of profile {profile.name!r} reads the runs of {list(profile.with_studies)} "
            f"(with_studies) as well as its own, but {'; '.join(problems)}. Run "
            + " and ".join(f"./run_all.sh {name}" for name in profile.with_studies) + " first, with the same --results")


if __name__ == "__main__":
    sys.exit(main())
