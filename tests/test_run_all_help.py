"""``./run_all.sh --help`` / ``-h``: usage, one line per profile and the driver's options, at once, with no set-up;
``--help`` and ``--list`` write no tracked file and render nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_all(*args, env=None, cwd=ROOT):
    return subprocess.run([str(ROOT / "run_all.sh"), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _tracked_state() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["smoke", "--help"], ["default", "--jobs", "3", "-h"]])
def test_help_prints_usage_profiles_and_options_without_setting_up(tmp_path, args):
    venv = tmp_path / "venv"  # an environment that does not exist: the help must not try to create it
    before = _tracked_state()
    done = _run_all(*args, env={"NHL_VENV": str(venv), "CONDA_PREFIX": "", "VIRTUAL_ENV": ""}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ./run_all.sh") and not done.stderr
    assert not venv.exists() and not any(tmp_path.iterdir())
    assert _tracked_state() == before
    for profile in sorted(p.stem for p in (ROOT / "studies").glob("*.yaml")):
        line = next((row for row in done.stdout.splitlines() if row.split()[:1] == [profile]), None)
        assert line is not None, f"profile {profile} missing from --help"
        assert "see the comment" not in line, f"profile {profile} has no one-line description in run_all.sh"
        assert len(line) <= 110, f"profile {profile}: its line is longer than one terminal line"


def test_help_names_every_option_of_the_driver():
    driver = subprocess.run([sys.executable, "-m", "nhllib.study", "--help"], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    options = set(re.findall(r"(--[a-z][a-z-]+)", driver.stdout)) - {"--help"}
    assert {"--results", "--jobs", "--analysis-only", "--list", "--executor"} <= options
    shown = _run_all("--help").stdout
    missing = sorted(o for o in options if o not in shown)
    assert not missing, f"./run_all.sh --help does not name the driver's options {missing}"


def test_unknown_profile_still_refused_with_the_list():
    done = _run_all("fast")
    assert done.returncode == 2 and "unknown profile 'fast'" in done.stderr


@pytest.mark.slow  # run_all.sh and the driver in subprocesses over the 219-run grid (about 5 s)
def test_list_renders_nothing_and_writes_no_tracked_file():
    before = _tracked_state()
    done = _run_all("default", "--list")
    assert done.returncode == 0, done.stderr
    *runs, summary = [line for line in done.stdout.splitlines() if line.strip()]
    states = {line.split()[0] for line in runs}
    assert states and states <= {"absent", "complete", "unverified", "DAMAGED", "incomplete"}
    assert summary.startswith(f"{len(runs)} runs: ")
    assert "render_docs" not in done.stderr and "findings" not in done.stderr
    assert _tracked_state() == before


def test_readme_shows_the_current_help():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- run_all-help -->\n```text\n", 1)[1].split("```", 1)[0]
    assert block == _run_all("--help").stdout, "README's run_all.sh --help block is stale: paste the new output"
