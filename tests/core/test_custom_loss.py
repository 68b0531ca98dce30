"""A user's own loss class runs through RunConfig, run_experiment, a study grid and 01_train, named by import path."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from nhllib.core.losses import build_losses, resolve_loss
from nhllib.store.results import load_results
from nhllib.study import expand_grid
from nhllib.training.config import RunConfig
from nhllib.training.experiment import run_experiment

from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[2]
MODULE = textwrap.dedent('''
    import torch
    from nhllib.core.losses import HashLoss

    class PairCosineLoss(HashLoss):
        """Cosine of tanh codes pulled to +1 for pairs sharing a label, to -1 otherwise."""
        method_name = "pair-cosine"

        def __init__(self, code_length, num_classes, num_train, *, seed=0, scale: float = 1.0):
            super().__init__(code_length, num_classes, num_train, seed=seed)
            self.scale = scale

        def compute_loss(self, u, y, index):
            t = torch.nn.functional.normalize(torch.tanh(u), dim=1)
            s = (y @ y.t() > 0).to(u.dtype) * 2 - 1
            return self.scale * ((t @ t.t() - s) ** 2).mean()

    class NotALoss:
        pass
''')
METHOD = "user_hash_losses:PairCosineLoss"
USER_RUN = dict(study="custom", epochs=1, backbone="mlp", method=METHOD, loss_hparams={"scale": 2.0})
TINY = {**TINY_RUN, **USER_RUN}


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / "user_hash_losses.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{REPO}")
    yield folder
    sys.modules.pop("user_hash_losses", None)


def test_resolve_by_import_path_and_errors(user_module):
    cls = resolve_loss(METHOD)
    assert cls.__name__ == "PairCosineLoss"
    losses = build_losses(METHOD, (8, 16), 3, 10, nested=True, scale=0.5)
    assert [loss.code_length for loss in losses] == [8, 16] and losses[0].scale == 0.5
    with pytest.raises(ValueError, match="subclass of nhllib.core.losses.HashLoss"):
        resolve_loss("user_hash_losses:NotALoss")
    with pytest.raises(ValueError, match="cannot import 'Missing'.*PYTHONPATH"):
        resolve_loss("user_hash_losses:Missing")
    with pytest.raises(KeyError, match="module:ClassName"):
        resolve_loss("no-such-loss")
    with pytest.raises(ValueError, match="method must be one of .* 'module:ClassName', got 'nope'"):
        RunConfig.from_dict({"method": "nope"})


def test_a_user_loss_trains_through_run_experiment_and_a_grid(user_module, tmp_path, tiny_config):
    cfg = tiny_config(**USER_RUN, variant="nhl", code_lengths=(8, 16))
    assert ":" not in cfg.run_id and cfg.run_id.startswith("user-hash-losses-PairCosineLoss_nhl_8-16_")
    run_dir = run_experiment(cfg, tmp_path / "results", progress=False)
    assert (run_dir / "COMPLETE").is_file()
    metrics = load_results(tmp_path / "results", "custom")
    assert set(metrics.dropna(subset=["code_length"]).query("metric == 'map'").code_length) == {8, 16}
    grid = [{"variant": "separate", "sweep": {"method": [METHOD, "csq"], "code_lengths": [[8], [16]]}}]
    configs = expand_grid("custom", {k: v for k, v in TINY.items() if k not in ("study", "method")}, grid)
    assert sorted({c.hashing.method for c in configs}) == sorted({METHOD, "csq"}) and len(configs) == 4


@pytest.mark.slow
def test_a_user_loss_runs_in_the_training_notebook(user_module, tmp_path, tiny_data):
    out = tmp_path / "out.ipynb"
    params = {**TINY, "variant": "separate", "code_lengths": [8], "data_dir": str(tmp_path / "data"),
              "results_root": str(tmp_path / "results"), "progress": False}
    args = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "01_train.ipynb"), str(out), "-k", "python3"]
    import yaml

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    done = subprocess.run([*args, "-f", str(params_file)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = load_results(tmp_path / "results", "custom")
    assert isinstance(metrics, pd.DataFrame) and set(metrics["method"]) == {METHOD}
