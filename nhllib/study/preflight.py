"""The study's pre-flight: what a grid needs is checked once, before any run starts.

:func:`check_study` looks at every run of a profile and collects, in one message, what would make runs fail
one by one (on a cluster: every job of an array):

- **data**: every dataset the grid uses loads (``load_data``; for list files, every listed image exists);
- **pretrained weights**: every weight file is in ``torch.hub``'s checkpoint folder and its SHA-256 starts with
  the prefix torchvision publishes in the file name (torch.hub checks it only when it downloads);
- **the device**: runs that ask for AMP on the ``auto`` device are meant for a GPU; on a machine without CUDA
  (local executor) they are refused rather than trained on the CPU without a word. Setting ``device: cpu`` in
  the profile runs them there on purpose.

Nothing is written but the data's split files (the runs would write the same ones); no run folder is made.
:func:`analysis_is_current` tells the driver when the analysis notebooks need not run again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from nhllib.training.config import RunConfig

__all__ = ["PreflightError", "Problem", "check_study", "find_problems", "analysis_is_current"]

logger = logging.getLogger(__name__)


class PreflightError(ValueError):
    """What a profile needs and does not have; the message lists each problem with how to fix it."""


@dataclass(frozen=True)
class Problem:
    what: str  # what is missing or wrong
    fix: str  # how to put it right
    runs: int = 1  # how many runs of the grid it would fail

    def line(self) -> str:
        return f"- {self.what} ({self.runs} run(s)). {self.fix}"


def _absolute(path: str | None, cwd: Path) -> str | None:
    if path is None or os.path.isabs(os.path.expanduser(path)):
        return None if path is None else os.path.expanduser(path)
    return str(cwd / path)


def _data_problems(configs: Sequence[RunConfig], cwd: Path) -> list[Problem]:
    from nhllib.data import load_data

    counts: dict = {}
    for cfg in configs:
        # Batching does not change which images a split holds; paths are the runs' (relative to their cwd).
        key = replace(cfg.data, batch_size=1, eval_batch_size=1, num_workers=0,
                      data_dir=_absolute(cfg.data.data_dir, cwd), root=_absolute(cfg.data.root, cwd))
        counts[key] = counts.get(key, 0) + 1
    problems = []
    for data_cfg, runs in counts.items():
        try:
            load_data(data_cfg)
        except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
            problems.append(Problem(f"dataset {data_cfg.dataset!r}: {err}",
                                    "Place the data as the message says (see data/README.md).", runs))
    return problems


def _weight_problems(configs: Sequence[RunConfig]) -> list[Problem]:
    from nhllib.training.backbones import check_weight_file, pretrained_weight_file

    counts: dict[str, int] = {}
    for cfg in configs:
        if cfg.model.pretrained:
            counts[cfg.model.backbone] = counts.get(cfg.model.backbone, 0) + 1
    problems = []
    for backbone, runs in counts.items():
        file = pretrained_weight_file(backbone)
        if file is None:
            continue  # a backbone without pretrained weights: RunConfig / build_backbone say so
        if not file.path.is_file():
            problems.append(Problem(
                f"pretrained weights for {backbone!r} ({file.weights}) missing: {file.path}",
                f"Download {file.url} (on a machine with internet: python -c \"import torch; "
                f"torch.hub.load_state_dict_from_url('{file.url}')\") and place {file.path.name} in "
                f"{file.path.parent}/ ($TORCH_HOME/hub/checkpoints/; set TORCH_HOME to a shared folder on a cluster)",
                runs))
            continue
        try:
            check_weight_file(file)
        except (OSError, ValueError) as err:
            problems.append(Problem(f"pretrained weights for {backbone!r} refused: {err}",
                                    f"Delete {file.path} and place the genuine file.", runs))
    return problems


def _device_problems(configs: Sequence[RunConfig], local: bool, gpus_per_run: int) -> list[Problem]:
    import torch

    wants_gpu = [cfg for cfg in configs if cfg.device == "auto" and cfg.training.amp]
    explicit_cuda = [cfg for cfg in configs if cfg.device.startswith("cuda")]
    problems = []
    if local and not torch.cuda.is_available():
        if wants_gpu:
            problems.append(Problem(
                "the profile asks for AMP on device 'auto' (a GPU profile), but CUDA is not available here: its runs "
                "would train on the CPU, with AMP inactive",
                "Run it where a GPU is (or with --executor slurm), or set the device explicitly to run it here "
                "anyway: `device: cpu` in the profile's defaults", len(wants_gpu)))
        if explicit_cuda:
            problems.append(Problem(
                f"device {explicit_cuda[0].device!r} asked for, but CUDA is not available here",
                "Run the study where a GPU is, or set `device: cpu` (or auto)", len(explicit_cuda)))
    if not local and gpus_per_run == 0 and (wants_gpu or explicit_cuda):
        problems.append(Problem("runs meant for a GPU submitted with --gpus-per-run 0",
                                "Give each run a GPU (--gpus-per-run 1) or set `device: cpu`",
                                len(wants_gpu) + len(explicit_cuda)))
    return problems


def find_problems(configs: Sequence[RunConfig], cwd: Path, *, local: bool = True,
                  gpus_per_run: int = 1) -> list[Problem]:
    """Every problem the pre-flight finds in ``configs`` (the runs still to train), in a stable order.

    ``cwd`` is the runs' working directory (relative data paths are theirs); ``local`` whether the runs train
    on this machine, ``gpus_per_run`` how many GPUs each gets elsewhere.
    """
    return (_device_problems(configs, local, gpus_per_run) + _weight_problems(configs)
            + _data_problems(configs, Path(cwd)))


def check_study(name: str, configs: Sequence[RunConfig], cwd: Path, *, local: bool = True,
                gpus_per_run: int = 1) -> None:
    """Raise :class:`PreflightError` listing every problem of ``configs`` (see :func:`find_problems`)."""
    problems = find_problems(configs, cwd, local=local, gpus_per_run=gpus_per_run)
    if problems:
        raise PreflightError(
            f"profile {name!r} is not ready, nothing was started ({len(problems)} problem(s)):\n"
            + "\n".join(problem.line() for problem in problems))
    logger.info("pre-flight of %s: %d run(s) ready", name, len(configs))


def analysis_is_current(marker: Path, run_folders: Iterable[Path], complete_marker: str) -> bool:
    """True when the analysis marker is newer than every run's completion marker (and every run is complete).

    Then the analysis notebooks would read exactly the runs they read last time: the driver skips them.
    """
    if not marker.is_file():
        return False
    finished = marker.stat().st_mtime
    for folder in run_folders:
        done = folder / complete_marker
        if not done.is_file() or done.stat().st_mtime > finished:
            return False
    return True
