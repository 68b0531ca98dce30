"""benchmarks/gpu_check.py runs end to end on a CPU (--device cpu --quick), so it is known to work before a GPU."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # the whole benchmark script: every loss, two backbones, minutes on two shared cores
def test_gpu_check_runs_on_cpu_quick(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert _load().main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] and report["quick"]
    assert set(report["checks"]) == {"map", "losses", "weighting", "distillation"}
    assert len(report["checks"]["losses"]) == 10 and all(v["ok"] for v in report["checks"]["losses"].values())
    for backbone in ("resnet50", "cnn"):
        numbers = report["throughput"][backbone]
        assert numbers["separate"]["images_per_s"] > 0 and numbers["nhl"]["code_lengths"] == [8, 16, 32, 64, 128]
    assert "skipped" in report["data_parallel"]


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert _load().main(["--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
