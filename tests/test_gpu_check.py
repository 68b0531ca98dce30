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
    # the new fields: the device's name, peak memory (not measured on a CPU), the real path per backbone
    assert report["device_name"] and report["device_name"] != "cpu" and report["peak_memory_gib"] is None
    for backbone in ("resnet50", "cnn"):
        for variant, lengths in (("separate", [128]), ("nhl", [8, 16, 32, 64, 128])):
            real = report["real_run"][backbone][variant]
            assert real["code_lengths"] == lengths and real["dataset"] == "fashion-mnist"
            assert real["images_per_s"] > 0 and 0 < real["build_s"] and real["step_s"] > 0
            assert real["feed_share"] == real["build_s"] / real["step_s"] and real["peak_memory_gib"] is None
    assert report["real_run"]["resnet50"]["nhl"]["image_size"] == 32 and not report["real_run"]["cnn"]["nhl"]["amp_active"]
    # AMP against fp32: inactive on a CPU, so the two trainings are the same one; one evaluation's time
    amp = report["amp_vs_fp32"]
    assert amp["amp_active"] is False and set(amp["map_diff"]) == {"8", "16", "32", "64", "128"}
    assert all(diff == 0.0 for diff in amp["map_diff"].values()) and amp["eval_s"] > 0
    assert all(0 < value <= 1 for value in amp["map_fp32"].values())
    assert report["determinism"] == {"runs": 2, "max_map_diff": 0.0, "max_param_diff": 0.0, "identical": True}
    estimate = report["profile_estimate"]
    assert estimate["profile"] == "gpu" and estimate["runs"] == 219 and estimate["backbones"] == ["cnn"]
    assert estimate["total_h_at_most"] == pytest.approx(estimate["train_h_at_most"] + estimate["eval_h_at_most"])


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert _load().main(["--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
