"""The study's pre-flight and the clear words around a first GPU or cluster run (issue 24).

Missing pretrained weights or data give one message listing every problem and how to fix it, and no run folder;
a wrong file under the weights' name is refused, naming the hash prefix torchvision publishes; a GPU profile on
a machine without CUDA is refused unless the device is set; ``--executor slurm`` without Slurm is one line; AMP
that cannot run is recorded as inactive; an analysis newer than every run is current.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from nhllib import study as S
from nhllib.study.preflight import PreflightError, analysis_is_current, check_study
from nhllib.training.backbones import WeightFile, build_backbone, check_weight_file, pretrained_weight_file

TINY = {"dataset": "fashion-mnist", "query_per_class": 2, "train_per_class": 4, "val_per_class": 2,
        "database_per_class": 4, "epochs": 1, "batch_size": 8}


def _profile(tmp_path: Path, name: str = "pf", **defaults) -> Path:
    import yaml

    spec = {"study": name, "defaults": {**TINY, "data_dir": str(tmp_path / "data"), **defaults},
            "grid": [{"variant": "separate", "sweep": {"method": ["csq"], "code_lengths": [[8], [16]]}}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_and_data_are_one_message_and_no_run_folder(tmp_path, empty_hub, capsys):
    import yaml

    profile = _profile(tmp_path, backbone="resnet18", pretrained=True, image_size=32, device="cpu")
    spec = yaml.safe_load(profile.read_text())
    spec["grid"].append({"variant": "separate", "backbone": "alexnet", "dataset": "listfile",
                         "root": str(tmp_path / "nowhere"), "sweep": {"method": ["csq"], "code_lengths": [[8]]}})
    profile.write_text(yaml.safe_dump(spec))
    results = tmp_path / "res"
    assert S.main([str(profile), "--results", str(results), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "nothing was started (3 problem(s))" in err
    resnet = pretrained_weight_file("resnet18")
    alexnet = pretrained_weight_file("alexnet")
    assert f"missing: {resnet.path}" in err and f"missing: {alexnet.path}" in err
    assert resnet.url in err and f"place {resnet.path.name} in {empty_hub}" in err
    assert "(2 run(s))" in err  # the two resnet18 runs share one line
    assert "dataset 'listfile'" in err and str(tmp_path / "nowhere") in err
    assert not results.exists(), "the pre-flight made a folder"


def test_a_random_file_under_the_weights_name_is_refused_naming_the_hash(tmp_path, empty_hub):
    file = pretrained_weight_file("resnet18")
    assert file.path.parent == empty_hub and file.hash_prefix and file.hash_prefix in file.path.name
    empty_hub.mkdir(parents=True)
    torch.save({"fc.weight": torch.randn(2, 2)}, file.path)  # a loadable state dict, not the published one
    configs = S.load_profile(str(_profile(tmp_path, backbone="resnet18", pretrained=True, image_size=32,
                                          device="cpu"))).configs
    with pytest.raises(PreflightError) as info:
        check_study("pf", configs, tmp_path)
    message = str(info.value)
    assert "refused" in message and f"torchvision publishes {file.hash_prefix} in the file name" in message
    assert str(file.path) in message and "1 problem(s)" in message
    # and the backbone itself refuses it, rather than loading it as ImageNet weights
    with pytest.raises(RuntimeError, match=file.hash_prefix):
        build_backbone("resnet18", pretrained=True, in_channels=3, image_size=32)


def test_a_file_whose_hash_matches_its_name_passes(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(b"some weights")
    prefix = hashlib.sha256(b"some weights").hexdigest()[:8]
    good = WeightFile("x", "X.V1", "https://example.org/x.pth", tmp_path / f"x-{prefix}.pth")
    shutil.copy(path, good.path)
    check_weight_file(good)
    bad = WeightFile("x", "X.V1", "https://example.org/x.pth", tmp_path / "x-00000000.pth")
    shutil.copy(path, bad.path)
    with pytest.raises(ValueError, match=f"its SHA-256 begins {prefix}, but torchvision publishes 00000000"):
        check_weight_file(bad)


def test_backbones_without_pretrained_weights_need_no_file():
    assert pretrained_weight_file("cnn") is None and pretrained_weight_file("mlp") is None
    assert pretrained_weight_file("resnet50").path.name == "resnet50-0676ba61.pth"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_gpu_profile_without_cuda_is_refused_unless_the_device_is_set(tmp_path):
    gpu = S.load_profile(str(_profile(tmp_path, amp=True))).configs
    with pytest.raises(PreflightError, match="CUDA is not available here") as info:
        check_study("pf", gpu, tmp_path)
    assert "`device: cpu`" in str(info.value)
    check_study("pf", gpu, tmp_path, local=False, gpus_per_run=1)  # a cluster's jobs have the GPUs
    check_study("pf", S.load_profile(str(_profile(tmp_path, amp=True, device="cpu"))).configs, tmp_path)
    assert S.load_profile("gpu").configs[0].training.amp  # the shipped gpu profile is one of these


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="Slurm is installed here")
def test_slurm_executor_without_slurm_is_one_line(tmp_path, capsys):
    assert S.main([str(_profile(tmp_path, device="cpu")), "--results", str(tmp_path / "res"),
                   "--executor", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sbatch command was not found" in err and "--executor submitit-local" in err
    assert not (tmp_path / "res").exists()


def test_amp_that_cannot_run_is_recorded_as_inactive(tmp_path, caplog):
    from nhllib.training.config import RunConfig
    from nhllib.training.experiment import run_experiment

    cfg = RunConfig.from_dict(dict(study="t", method="csq", variant="separate", code_lengths=(8,), device="cpu",
                                   amp=True, data_dir=str(tmp_path / "data"), **TINY))
    with caplog.at_level(logging.WARNING):
        folder = run_experiment(cfg, tmp_path / "res", progress=False, save_codes=False)
    written = json.loads((folder / "config.json").read_text())
    assert written["config"]["training"]["amp"] is True and written["amp_active"] is False
    assert "amp asked for, but inactive on cpu" in caplog.text


def test_analysis_is_current_only_when_newer_than_every_complete_run(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
        (run / "COMPLETE").write_text("")
    marker = tmp_path / "ANALYSIS_COMPLETE"
    assert not analysis_is_current(marker, runs, "COMPLETE")
    marker.write_text("{}")
    later = time.time() + 5
    os.utime(marker, (later, later))
    assert analysis_is_current(marker, runs, "COMPLETE")
    os.utime(runs[1] / "COMPLETE", (later + 5, later + 5))  # a run redone after the analysis
    assert not analysis_is_current(marker, runs, "COMPLETE")
    os.utime(runs[1] / "COMPLETE", (later - 5, later - 5))
    (runs[0] / "COMPLETE").unlink()  # an incomplete run
    assert not analysis_is_current(marker, runs, "COMPLETE")


class _FakeCluster:
    """A non-local executor that 'trains' by marking runs complete and counts the analysis jobs."""

    kind = "slurm"
    folder = Path("jobs")

    def __init__(self) -> None:
        from nhllib.study.executors import SlurmOptions

        self.options = SlurmOptions(gpus_per_run=0, cpus_per_run=1)
        self.analyses = 0

    def map(self, fn, tasks):
        import json

        from nhllib.store.results import COMPLETE_MARKER
        from nhllib.store.run_manifest import marker_record

        for task in tasks:
            task.output.parent.mkdir(parents=True, exist_ok=True)
            # a marker that records what the run wrote (nothing here), as a real run's does
            (task.output.parent / COMPLETE_MARKER).write_text(json.dumps(marker_record(task.output.parent)))
            yield task, None, 0.0

    def run(self, fn, item):
        self.analyses += 1
        return item, None, 0.0


def test_a_cluster_pass_that_trained_nothing_skips_a_current_analysis(tmp_path):
    profile = S.load_profile(str(_profile(tmp_path, device="cpu")))
    cluster, said = _FakeCluster(), []
    assert S.run_study(profile, tmp_path / "res", executor=cluster, echo=said.append) == []
    assert cluster.analyses == 1 and (tmp_path / "res" / "pf" / S.ANALYSIS_MARKER).is_file()
    assert S.run_study(profile, tmp_path / "res", executor=cluster, echo=said.append) == []
    assert cluster.analyses == 1 and any("[analysis] current" in line for line in said)
    assert S.run_study(profile, tmp_path / "res", executor=cluster, echo=said.append, analysis_only=True) == []
    assert cluster.analyses == 2  # asked for explicitly
    later = time.time() + 60
    run = tmp_path / "res" / "pf" / profile.configs[0].run_id
    os.utime(run / "COMPLETE", (later, later))  # a run redone since
    assert S.run_study(profile, tmp_path / "res", executor=cluster, echo=said.append) == []
    assert cluster.analyses == 3
