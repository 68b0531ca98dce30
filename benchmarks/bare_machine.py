"""First run of the project's commands on a bare machine: a fresh clone, no environment, no Fashion-MNIST.

For each command, clones the committed HEAD of this repository into a temporary folder (so there is no ``.venv``
and nothing under ``data/``), optionally removes the Debian package ``dataset-fashion-mnist`` first (so that
``scripts/get_data.sh`` has to install it again), runs the command there and times it. Every output line is
stamped with the seconds since the start, which splits the time into its phases: the Python environment (until
``get_data`` speaks), obtaining the data (until ``get_data`` reports it found), and the work itself.

    python benchmarks/bare_machine.py --remove-data-package                        # ./run_tests.sh, ./run_all.sh smoke
    python benchmarks/bare_machine.py --remove-data-package --command "./run_all.sh"   # the default study (about an hour)

``--keep DIR`` moves each finished clone to ``DIR/<slug>`` instead of deleting it, so that what the command made
(``results/``, ``docs/rendered/``) can be compared with the committed copies.

Writes ``benchmarks/results/bare_machine.json`` (one entry per command; an existing entry for the same command
is replaced, the others kept) and the full output of each command beside it as ``bare_machine_<slug>.log``.
Removing the package needs root or password-less sudo; without ``--remove-data-package`` an installed copy is
found and the data phase takes about a second. Run it on a quiet machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# It runs before any environment exists, with the system's python3: the package (its standard-library part) is
# read from this checkout.
sys.path.insert(0, str(REPO))
from nhllib.machine import cpu_name  # noqa: E402

DATA_PACKAGE = "dataset-fashion-mnist"
DEFAULT_COMMANDS = ("./run_tests.sh", "./run_all.sh smoke")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", action="append", dest="commands",
                        help=f"a command to time, run in the clone's root (repeatable; default: {DEFAULT_COMMANDS})")
    parser.add_argument("--remove-data-package", action="store_true",
                        help=f"remove the Debian package {DATA_PACKAGE} before each command")
    parser.add_argument("--out", default="benchmarks/results/bare_machine.json")
    parser.add_argument("--keep", type=Path, help="move each finished clone to KEEP/<slug> (must not exist yet)")
    args = parser.parse_args()
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    for command in args.commands or DEFAULT_COMMANDS:
        run = time_bare_run(command, args.remove_data_package, out.parent, args.keep)
        print(json.dumps({k: v for k, v in run.items() if k != "summary"}, indent=2))
        report["runs"] = [r for r in report["runs"] if r["command"] != command] + [run]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def time_bare_run(command: str, remove_data_package: bool, log_dir: Path, keep: Path | None = None) -> dict:
    commit = _git("rev-parse", "--short", "HEAD")
    slug = re.sub(r"[^a-z0-9]+", "_", command.lower()).strip("_")
    if keep is not None and (keep / slug).exists():
        raise SystemExit(f"--keep: {keep / slug} exists already; choose another folder (nothing is overwritten)")
    data_removed = remove_data_package and _remove_data_package()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nhllib-bare-") as tmp:
        clone = Path(tmp) / "nhllib"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "NHL_VENV")}
        start = time.perf_counter()
        proc = subprocess.Popen(shlex.split(command), cwd=clone, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, bufsize=1)
        stamped = []
        for line in proc.stdout:  # type: ignore[union-attr]
            stamped.append((time.perf_counter() - start, line.rstrip("\n")))
        returncode = proc.wait()
        total = time.perf_counter() - start
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.move(str(clone), str(keep / slug))
    log = log_dir / f"bare_machine_{slug}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"[{t:7.1f} s] {_clean(text, clone)}\n" for t, text in stamped
                           if "file:///" not in text))  # pip's notes on this machine's local package mirror
    return {
        "command": command,
        "returncode": returncode,
        "total_s": round(total, 1),
        **phases(stamped, total),
        "data_package_removed_first": data_removed,
        "summary": [_clean(text, clone) for _, text in stamped[-3:]],
        "log": log.name,
        "commit": commit,
        "load_average_before": round(load_before, 2),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _remove_data_package() -> bool:
    if shutil.which("dpkg") is None or subprocess.run(["dpkg", "-s", DATA_PACKAGE], capture_output=True).returncode:
        return False  # not installed: nothing to remove
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "apt-get", "remove", "-y", "-qq", DATA_PACKAGE], check=True, capture_output=True)
    return True


def _clean(text: str, clone: Path) -> str:
    """A log line without this machine's paths: the temporary clone becomes ".", pip's build folders a tag."""
    text = text.replace(str(clone), ".")
    return re.sub(r"/tmp/pip-[^/\s]+/\S*?site-packages/", "<pip build env>/", text)


def phases(stamped: list[tuple[float, str]], total: float) -> dict:
    """Split a run's seconds by its stamped output: the environment lasts until ``get_data`` first speaks, the data
    until it reports Fashion-MNIST found or downloaded, the work until the end (None where a mark is missing)."""
    env_end = _first(stamped, "get_data:")
    data_end = _first(stamped, "get_data: Fashion-MNIST found") or _first(stamped, "get_data: Fashion-MNIST downloaded")
    installed_by = ("apt" if any("installing the Debian package" in text for _, text in stamped) else
                    "torchvision download" if any("downloading Fashion-MNIST" in text for _, text in stamped) else
                    "already there")
    return {
        "environment_s": _round(env_end),
        "data_s": _round(data_end - env_end) if env_end is not None and data_end is not None else None,
        "work_s": _round(total - data_end) if data_end is not None else None,
        "data_obtained_by": installed_by,
    }


def _first(stamped: list[tuple[float, str]], prefix: str) -> float | None:
    return next((t for t, text in stamped if text.startswith(prefix)), None)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    main()
