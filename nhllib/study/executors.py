"""Where the study's work runs: threads on this machine, or Slurm jobs submitted through submitit.

The study driver hands an executor a module-level function and the items to apply it to; the executor reports,
in submission order, each item with the error it raised (None on success) and its duration. Two kinds:

- :class:`LocalExecutor`: a thread pool on this machine (``--jobs`` at a time), the default;
- :class:`SubmititExecutor`: one Slurm **job array** for the items (``sbatch --array``, at most
  ``array_parallelism`` running at once) and a single job for work that follows it. ``cluster="local"`` is
  submitit's local executor: the same code path with jobs as processes on this machine (no Slurm needed; the
  tests use it). It does not throttle arrays, so the items are submitted in waves of ``array_parallelism``.

Slurm settings come from :class:`SlurmOptions` (the profile's ``slurm:`` block, overridden on the command
line). Job logs and submitit's pickles go to ``folder`` (``%j`` is the job id).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nhllib.checks import check_positive_int

__all__ = ["SlurmOptions", "LocalExecutor", "SubmititExecutor", "EXECUTORS", "make_executor"]

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one training job (one run) on Slurm.

    ``gpus_per_run`` > 1 launches the run with ``torchrun`` inside its job (one process per GPU, the
    configured ``batch_size`` split across them). ``extra`` holds any other ``sbatch`` option by its long
    name without dashes (e.g. ``{"exclude": "node12", "mail-type": "FAIL"}``).
    """

    partition: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    mem_gb: float | None = None
    time_min: int = 240
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cpus_per_run", "time_min", "array_parallelism"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.gpus_per_run, bool) or not isinstance(self.gpus_per_run, int) or self.gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be a non-negative int (0: CPU jobs), got {self.gpus_per_run!r}")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool) or not self.mem_gb > 0):
            raise ValueError(f"mem_gb must be None or a positive number, got {self.mem_gb!r}")
        for name in ("partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be None or a non-empty string, got {value!r}")
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"extra must be a mapping of sbatch options, got {self.extra!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SlurmOptions:
        """Build from a profile's ``slurm:`` block, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown slurm option(s) {unknown}; valid options are {sorted(known)}")
        return cls(**values)

    def submitit_parameters(self, gpus: int | None = None) -> dict[str, Any]:
        """Parameters for ``AutoExecutor.update_parameters``; ``gpus`` overrides ``gpus_per_run``."""
        gpus = self.gpus_per_run if gpus is None else gpus
        params: dict[str, Any] = {
            "timeout_min": self.time_min, "cpus_per_task": self.cpus_per_run, "gpus_per_node": gpus,
            "tasks_per_node": 1, "nodes": 1, "slurm_array_parallelism": self.array_parallelism,
        }
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[f"slurm_{name}"] = getattr(self, name)
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


Outcome = tuple[Any, BaseException | None, float]  # (item, error or None, seconds)


def _timed(fn: Callable[[Any], Any], item: Any) -> float:
    start = time.perf_counter()
    fn(item)
    return time.perf_counter() - start


class LocalExecutor:
    """``jobs`` items at a time in threads of this process (each item usually starts its own subprocess)."""

    kind = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = check_positive_int("jobs", jobs)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
        def one(item: Any) -> Outcome:
            start = time.perf_counter()
            try:
                fn(item)
            except Exception as err:  # noqa: BLE001 - one failed item must not stop the others
                return item, err, time.perf_counter() - start
            return item, None, time.perf_counter() - start

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            yield from pool.map(one, list(items))

    def run(self, fn: Callable[[Any], Any], item: Any) -> Outcome:
        return next(iter(LocalExecutor(1).map(fn, [item])))


class SubmititExecutor:
    """Items as one job array, follow-up work as one CPU job, through submitit (Slurm or its local executor).

    Waits for the jobs and reports them in submission order. A job that fails (error, timeout, preemption
    beyond submitit's retries) is reported with submitit's error, which names its log files.
    """

    def __init__(self, folder: str | Path, options: SlurmOptions, cluster: str = "slurm", name: str = "nhl") -> None:
        try:
            import submitit
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the slurm executor needs submitit: pip install 'nhllib[cluster]'") from err
        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
        self.kind = "slurm" if cluster == "slurm" else "submitit-local"
        self.cluster = cluster
        self.options = options
        self.folder = Path(folder)
        self.name = name
        self._submitit = submitit

    def _executor(self, gpus: int | None, name: str):
        executor = self._submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params = self.options.submitit_parameters(gpus)
        if self.cluster == "local":
            # The local executor knows only the generic parameters; GPUs it would hand out by CUDA_VISIBLE_DEVICES.
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
            params.pop("mem_gb", None)
        executor.update_parameters(name=name, **params)
        return executor

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
        items = list(items)
        if not items:
            return
        wave = self.options.array_parallelism if self.cluster == "local" else len(items)
        for start in range(0, len(items), wave):
            chunk = items[start : start + wave]
            jobs = self._executor(None, f"{self.name}-runs").map_array(_timed, [fn] * len(chunk), chunk)
            logger.info("submitted %d job(s): %s", len(jobs), _array_id(jobs))
            for item, job in zip(chunk, jobs):
                yield self._outcome(item, job)

    def run(self, fn: Callable[[Any], Any], item: Any) -> Outcome:
        """One job without GPUs (the analysis notebooks)."""
        job = self._executor(0, f"{self.name}-analysis").submit(_timed, fn, item)
        return self._outcome(item, job)

    @staticmethod
    def _outcome(item: Any, job) -> Outcome:
        try:
            seconds = job.result()
        except Exception as err:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError name the logs
            return item, err, float("nan")
        return item, None, float(seconds)


def _array_id(jobs) -> str:
    ids = [str(job.job_id) for job in jobs]
    return ids[0].split("_")[0] if ids and "_" in ids[0] else ", ".join(ids)


def make_executor(kind: str, *, jobs: int = 1, folder: str | Path | None = None,
                  slurm: SlurmOptions | None = None, name: str = "nhl"):
    """The executor called ``kind`` (one of :data:`EXECUTORS`)."""
    if kind == "local":
        return LocalExecutor(jobs)
    if kind in ("slurm", "submitit-local"):
        if kind == "slurm" and shutil.which("sbatch") is None:
            raise ValueError("--executor slurm needs Slurm (its sbatch command was not found on PATH): run it on the "
                             "cluster's login node, or use --executor local (here) or --executor submitit-local (the same "
                             "code path with local processes)")
        if folder is None:
            raise ValueError(f"the {kind} executor needs a folder for its job logs")
        return SubmititExecutor(folder, slurm or SlurmOptions(), "slurm" if kind == "slurm" else "local", name)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
