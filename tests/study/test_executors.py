"""Executors of the study: local threads, and Slurm through submitit (its local executor stands in for Slurm)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nhllib.study.executors import LocalExecutor, SlurmOptions, SubmititExecutor, make_executor

ROOT = Path(__file__).resolve().parents[2]


def _square(x: int) -> None:
    if x == 3:
        raise ValueError("three is refused")


def test_slurm_options_validate_and_map_to_submitit_parameters():
    options = SlurmOptions.from_dict({"partition": "gpu", "gpus_per_run": 4, "time_min": 90, "mem_gb": 64,
                                      "qos": "high", "extra": {"exclude": "node12"}})
    params = options.submitit_parameters()
    assert params["gpus_per_node"] == 4 and params["timeout_min"] == 90 and params["mem_gb"] == 64
    assert params["slurm_partition"] == "gpu" and params["slurm_qos"] == "high"
    assert params["slurm_additional_parameters"] == {"exclude": "node12"}
    assert "slurm_account" not in params
    assert options.submitit_parameters(gpus=0)["gpus_per_node"] == 0  # the analysis job
    with pytest.raises(ValueError, match="unknown slurm option.*'gpus'"):
        SlurmOptions.from_dict({"gpus": 2})
    with pytest.raises(ValueError, match="time_min"):
        SlurmOptions(time_min=0)
    with pytest.raises(ValueError, match="gpus_per_run"):
        SlurmOptions(gpus_per_run=-1)
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("pbs")


def test_local_executor_reports_every_item_in_order_with_its_error():
    outcomes = list(LocalExecutor(2).map(_square, [1, 2, 3, 4]))
    assert [item for item, _, _ in outcomes] == [1, 2, 3, 4]
    errors = {item: err for item, err, _ in outcomes}
    assert isinstance(errors[3], ValueError) and errors[1] is None and errors[4] is None


@pytest.mark.slow  # submitit starts a process per job
def test_submitit_local_executor_runs_an_array_and_a_single_job(tmp_path):
    executor = SubmititExecutor(tmp_path, SlurmOptions(gpus_per_run=0, cpus_per_run=1, array_parallelism=2),
                                cluster="local")
    # The jobs unpickle the function in a fresh process: a library function (a test module is not importable).
    outcomes = list(executor.map(math.sqrt, [1.0, -1.0, 4.0]))
    assert [item for item, _, _ in outcomes] == [1.0, -1.0, 4.0]
    assert [err is None for _, err, _ in outcomes] == [True, False, True]
    assert "math domain error" in str(outcomes[1][1])
    _, err, seconds = executor.run(math.sqrt, 2.0)
    assert err is None and seconds >= 0


@pytest.mark.slow
def test_smoke_study_through_submitit_completes_then_skips_everything(tmp_path):
    """The Slurm code path (job array, then the analysis job) with submitit's local executor."""
    command = [sys.executable, "-m", "nhllib.study", "smoke", "--results", str(tmp_path),
               "--executor", "submitit-local", "--gpus-per-run", "0", "--cpus-per-run", "1",
               "--array-parallelism", "3"]
    from nhllib.study import load_profile

    expected = len(load_profile("smoke").configs)
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"{expected} runs, 0 failure(s)" in first.stdout
    runs = [p for p in (tmp_path / "smoke").iterdir() if p.is_dir() and p.name.startswith("csq_")]
    assert len(runs) == expected and all((run / "COMPLETE").is_file() for run in runs)
    assert (tmp_path / "smoke" / "03_figures.ipynb").is_file()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == expected
    assert "submitting" not in again.stdout


@pytest.mark.slow  # torchrun with two processes
def test_a_run_with_two_devices_goes_through_torchrun(tmp_path, tiny_config):
    """A TrainTask with gpus=2 runs `torchrun -m nhllib.training.experiment` (here 2 CPU processes) and completes the run."""
    from nhllib.store.results import RunStore
    from nhllib.study.execution import TrainTask, _train_parameters, train_one

    cfg = tiny_config(method="csq", variant="nhl", code_lengths=(8, 16), epochs=1)
    store = RunStore(tmp_path / "results", cfg.study, cfg.run_id)
    train_one(TrainTask(_train_parameters(cfg, tmp_path / "results"), store.path / "01_train.ipynb", ROOT,
                        threads=2, gpus=2))
    assert store.state == "complete"
    assert '"world_size": 2' in (store.path / "config.json").read_text()
    assert (store.path / "torchrun.log").is_file() and not (tmp_path / "results" / "t" / ".launch" / f"{cfg.run_id}.json").exists()


def test_local_executor_refuses_parallel_multi_gpu_runs():
    done = subprocess.run([sys.executable, "-m", "nhllib.study", "smoke", "--gpus-per-run", "2", "--jobs", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "use --jobs 1" in done.stderr


def test_the_slurm_array_script_carries_the_options(tmp_path, monkeypatch):
    """What sbatch would receive, captured by stand-ins for srun and sbatch (no Slurm here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {bin_dir}/script\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    options = SlurmOptions(partition="gpu", gpus_per_run=4, cpus_per_run=16, mem_gb=64, time_min=600,
                           array_parallelism=2, account="lab", constraint="h100", extra={"exclude": "node12"})
    executor = SubmititExecutor(tmp_path / "logs", options, cluster="slurm", name="nhl-paper")
    jobs = executor._executor(None, "nhl-paper-runs").map_array(math.sqrt, [1.0, 2.0, 3.0])
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = (bin_dir / "script").read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=4", "--cpus-per-task=16", "--mem=64GB",
                 "--time=600", "--account=lab", "--constraint=h100", "--exclude=node12", "--ntasks-per-node=1",
                 "--job-name=nhl-paper-runs"):
        assert f"#SBATCH {line}\n" in script, line


def test_a_profile_slurm_block_is_validated_with_the_grid(tmp_path):
    from nhllib.study import load_profile

    (tmp_path / "p.yaml").write_text("study: p\ngrid: [{variant: nhl, code_lengths: [8, 16]}]\nslurm: {gpus: 2}\n")
    with pytest.raises(ValueError, match=r"p.yaml, block 'slurm': unknown slurm option\(s\) \['gpus'\]"):
        load_profile("p", profiles_dir=tmp_path)
    (tmp_path / "p.yaml").write_text("study: p\ngrid: [{variant: nhl, code_lengths: [8, 16]}]\n"
                                     "slurm: {gpus_per_run: 2, partition: gpu}\n")
    assert load_profile("p", profiles_dir=tmp_path).slurm == {"gpus_per_run": 2, "partition": "gpu"}
