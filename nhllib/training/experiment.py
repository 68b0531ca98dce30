"""From a :class:`RunConfig` to a complete run folder: build, fit, final evaluation, write.

This is what the ``01_train`` notebook calls. Method names meet code only in the registries
(``LOSSES``, ``DATASETS``, ``BACKBONES``, ``VARIANTS``); nothing here branches on them.

It is also the data-parallel entry point (one run on N GPUs, :mod:`nhllib.training.distributed`)::

    torchrun --standalone --nproc_per_node N -m nhllib.training.experiment --config RUN.json --results results

``RUN.json`` holds the run's parameters (flat or nested, as :meth:`RunConfig.from_dict` reads them, or a run
folder's ``config.json``); ``batch_size`` is the global batch, split across the N processes. Without torchrun the
same command trains in one process. Rank 0 alone evaluates, logs and writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from nhllib.core.collapse import code_health
from nhllib.core.losses import build_losses
from nhllib.core.model import HashingModel
from nhllib.core.nested import NestedHashLayer, SeparateHashHeads
from nhllib.core.weighting import ConflictAware, Uniform, WeightingStrategy
from nhllib.data import HashingData, load_data
from nhllib.store.locks import FolderLock
from nhllib.store.results import CONFLICT_COLUMNS, HISTORY_COLUMNS, METRIC_COLUMNS, RunStore, write_codes
from nhllib.training.config import RunConfig, RunPlan
from nhllib.training.distributed import (DataParallel, DistContext, barrier, convert_sync_batchnorm, process_group,
                                         shard_loader)
from nhllib.training.final_eval import final_evaluation
from nhllib.training.optimizers import FrozenBackbone
from nhllib.training.pretrain import starting_backbone
from nhllib.training.train import FitResult, evaluate_untrained, fit
from nhllib.utils import amp_active, git_commit, package_versions, resolve_device, seed_everything

__all__ = ["BuiltRun", "build_run", "run_experiment", "main", "HEADS"]

logger = logging.getLogger(__name__)

#: Head kind (nhllib.vocab.HEAD_KINDS) -> the hash layer that builds it.
HEADS = {"nested": NestedHashLayer, "multi-head": SeparateHashHeads}


@dataclass
class BuiltRun:
    """Everything one run trains with; ``plan`` is the variant decoded (head kind, weighting, λ in effect)."""

    config: RunConfig
    plan: RunPlan
    model: HashingModel
    losses: list
    data: HashingData
    weighting: WeightingStrategy
    device: torch.device
    progress: bool = True
    parallel: DataParallel | None = None  # data-parallel training across ranks; None: one process

    def fit(self) -> FitResult:
        """Train with the run's training part and the λ its variant puts in effect; a variant that does not
        train (the untrained reference) is evaluated once instead."""
        if not self.plan.trains:
            return evaluate_untrained(self.model, self.data, self.config.training, self.device,
                                      parallel=self.parallel)
        return fit(self.model, self.losses, self.data, self.config.training, self.weighting, self.device,
                   distill_weight=self.plan.distill_weight, progress=self.progress, parallel=self.parallel)


def build_run(cfg: RunConfig, progress: bool = True, ctx: DistContext | None = None) -> BuiltRun:
    """Build data, model, per-length losses and the weighting strategy for ``cfg`` (seeded).

    With a multi-rank ``ctx`` the run is set up for data-parallel training (:func:`_make_data_parallel`):
    every rank builds the same model and losses from the same seed.
    """
    plan = cfg.plan
    distributed = ctx is not None and ctx.enabled
    device = ctx.device if distributed else resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if distributed and not ctx.is_main:
        barrier()  # rank 0 builds first: it may write the split file the others then read
    # The fed device: in-memory sets move to the device once and build their batches there (gather, resize,
    # normalise); list-file sets decode in DataLoader workers into pinned memory.
    data = load_data(cfg.data, shuffle_seed=cfg.seed, device=device)
    if distributed and ctx.is_main:
        barrier()
    backbone = starting_backbone(cfg, data)  # random, torchvision's or pool-pretrained weights (cfg.model.pretrained)
    if cfg.training.freeze_backbone:
        backbone = FrozenBackbone(backbone)
    lengths = cfg.model.code_lengths
    # Passed only when asked for: the option is new, and a head without it keeps its old signature.
    centring = {"center": True} if cfg.model.center_codes else {}
    head = HEADS[plan.head](backbone.out_features, lengths, **centring)
    model = HashingModel(backbone, head)
    if device.type == "cuda":
        # NHWC convolutions: the layout cuDNN's tensor-core kernels want (most of the gain under AMP).
        model = model.to(memory_format=torch.channels_last)
    hashing = cfg.hashing
    losses = build_losses(hashing.method, lengths, data.num_classes, data.num_train,
                          nested=isinstance(head, NestedHashLayer), targets=hashing.targets, seed=cfg.seed,
                          **hashing.loss_hparams)
    # Conflicts are monitored in every run with a shared nested weight and several lengths, applied only when
    # the variant asks for it.
    if model.shared_weight is not None and len(lengths) > 1:
        weighting: WeightingStrategy = ConflictAware(
            lengths, beta=hashing.beta, threshold_norm=hashing.threshold_norm,
            apply=plan.apply_conflict_weights, every=hashing.conflict_every,
        )
    else:
        weighting = Uniform()
    built = BuiltRun(cfg, plan, model, losses, data, weighting, device, progress and (ctx is None or ctx.is_main))
    if distributed:
        _make_data_parallel(built, ctx)
    return built


def _make_data_parallel(built: BuiltRun, ctx: DistContext) -> None:
    """The hooks of data-parallel training: batch norm over the global batch, DDP, this rank's share of every
    training batch (the step averages the per-length gradients over ranks through ``built.parallel``)."""
    built.model = convert_sync_batchnorm(built.model, ctx.device).to(ctx.device)
    built.parallel = DataParallel(built.model, ctx)
    built.data = replace(built.data, train=shard_loader(built.data.train, ctx.rank, ctx.world_size))


def run_experiment(cfg: RunConfig, results_root: str | Path = "results", overwrite: bool = False,
                   progress: bool = True, save_codes: bool = True, ctx: DistContext | None = None) -> Path:
    """Train and evaluate one run and write its complete folder; returns the folder.

    A complete folder for the same config raises :class:`~nhllib.store.results.RunExistsError` unless ``overwrite``;
    an incomplete one is redone. The completion marker is written last. With a multi-rank ``ctx`` (torchrun)
    every rank trains its share and rank 0 alone evaluates and writes. The run folder is locked (by rank 0) while
    the run writes it (:class:`~nhllib.store.locks.LockedError`, naming the holder, when another process is
    training it).
    """
    main_rank = ctx is None or ctx.is_main
    store = RunStore(results_root, cfg.study, cfg.run_id)
    complete = store.state == "complete"
    if ctx is not None and ctx.enabled:
        barrier()  # every rank has read the state before rank 0 touches the folder
    if complete and not overwrite:
        store.prepare(overwrite=False)  # raises RunExistsError before any work
    started = datetime.now(timezone.utc).isoformat()
    built = build_run(cfg, progress=progress, ctx=ctx)  # data and model first: a missing dataset leaves no folder
    with FolderLock(store.path, "training run") if main_rank else contextlib.nullcontext():
        if main_rank:
            store.prepare(overwrite=overwrite)  # the state is checked again, now that no one else can change it
        try:
            _train_and_write(cfg, built, store, started, save_codes, ctx)
        except BaseException:
            if main_rank:
                store.discard()  # no half-written results left looking usable; the notebook and its log stay
            raise
    return store.path


def _train_and_write(cfg: RunConfig, built: BuiltRun, store: RunStore, started: str, save_codes: bool,
                     ctx: DistContext | None = None) -> None:
    if ctx is not None and not ctx.is_main:
        built.fit()  # this rank's share of the training; rank 0 evaluates and writes
        return
    amp = amp_active(cfg.training.amp, built.device)
    if cfg.training.amp and not amp:
        logger.warning("run %s: amp asked for, but inactive on %s (mixed precision runs on CUDA only); recorded as "
                       "amp_active: false", cfg.run_id, built.device)
    store.write_json("config.json", {
        "run_id": cfg.run_id, "config": cfg.to_dict(), "device": str(built.device), "amp_active": amp,
        "world_size": 1 if ctx is None else ctx.world_size, "started": started,
        "git_commit": git_commit(), "versions": package_versions(), "data": {
            "split_file": str(built.data.split_path.name) if built.data.split_path else None,
            "sizes": built.data.sizes(), "source": built.data.source,
        },
        "parameters": sum(p.numel() for p in built.model.parameters()),
    })
    result = built.fit()
    start = time.perf_counter()
    built.model.load_state_dict(result.best_state)
    final = final_evaluation(built.model, built.data, built.device, topk=cfg.training.topk)
    final_time = time.perf_counter() - start

    base = {
        "run_id": cfg.run_id, "study": cfg.study, "method": cfg.hashing.method, "variant": cfg.hashing.variant,
        "dataset": cfg.data.dataset, "backbone": cfg.model.backbone, "weighting": built.plan.weighting,
        "distill_weight": built.plan.distill_weight, "targets": cfg.hashing.targets, "seed": cfg.seed,
    }
    health = code_health(final.codes["query"][0], built.data.num_classes)
    collapsed = sorted(length for length, h in health.items() if h.collapsed)
    if collapsed:
        logger.warning(
            "run %s: the codes of length(s) %s collapsed (distinct query codes %s for %d classes; constant bits %s); "
            "the model did not learn a usable hash (a learning rate too large?)", cfg.run_id, collapsed,
            {n: health[n].distinct_codes for n in collapsed}, built.data.num_classes,
            {n: health[n].constant_bits for n in collapsed})
    rows = []
    for length in cfg.model.code_lengths:
        per_length = {
            "distinct_codes": health[length].distinct_codes, "constant_bits": health[length].constant_bits,
            "map": result.query_map_best[length],
            "map_last": result.query_map_last[length],
            "val_map": result.val_map_best.get(length, float("nan")),
            **{name: values[length] for name, values in final.scalars.items()},
        }
        rows += [{**base, "code_length": length, "metric": k, "value": v} for k, v in per_length.items()]
    run_level = {
        "train_time_s": result.train_time_s, "eval_time_s": result.eval_time_s, "final_eval_time_s": final_time,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "train_steps": result.train_steps,
        "stopped_early": float(result.stopped_early), "collapsed": float(bool(collapsed)),
    }
    rows += [{**base, "code_length": None, "metric": k, "value": v} for k, v in run_level.items()]
    store.write_rows("history.csv", result.history, HISTORY_COLUMNS)
    store.write_rows("metrics.csv", rows, METRIC_COLUMNS)
    store.write_rows("curves.csv", final.curves, list(final.curves[0]) if final.curves else ["code_length"])
    if built.weighting.monitors_conflicts:  # an untrained run has an empty log: nothing was monitored
        store.write_rows("conflicts.csv", [] if result.conflicts is None else result.conflicts.rows, CONFLICT_COLUMNS)
    store.write_json("timing.json", {**run_level, "train_time_per_epoch_s": result.train_time_s / max(result.epochs_run, 1)})
    if save_codes:
        _write_codes(store, final, built.model.code_lengths)
    store.mark_complete()
    logger.info("run %s complete: %s", cfg.run_id, {k: round(v, 4) for k, v in result.query_map_best.items()})


def _write_codes(store: RunStore, final, code_lengths) -> None:
    """The query and database codes of the longest length (for retrieval experiments)."""
    query_codes, query_labels = final.codes["query"]
    db_codes, db_labels = final.codes["database"]
    longest = max(query_codes)
    write_codes(store.path, query_codes[longest].numpy(), db_codes[longest].numpy(), query_labels.numpy(),
                db_labels.numpy(), code_lengths)


def _read_config(path: Path) -> RunConfig:
    """A run's parameters from JSON: flat or nested (:meth:`RunConfig.from_dict`), or a run's ``config.json``."""
    values = json.loads(Path(path).read_text())
    if isinstance(values.get("config"), dict) and "run_id" in values:
        values = values["config"]
    return RunConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    """``python -m nhllib.training.experiment --config RUN.json --results DIR``, under torchrun or in one process."""
    parser = argparse.ArgumentParser(prog="python -m nhllib.training.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's parameters (JSON)")
    parser.add_argument("--results", default="results", type=Path, help="results root (default: results)")
    parser.add_argument("--overwrite", action="store_true", help="redo a complete run")
    parser.add_argument("--no-codes", action="store_true", help="do not write codes.npz")
    args = parser.parse_args(argv)
    try:
        cfg = _read_config(args.config)
    except (OSError, ValueError, TypeError) as err:
        print(f"error: --config {args.config}: {err}", file=sys.stderr)
        return 2
    with process_group(device=cfg.device) as ctx:
        logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING,
                            format=f"%(asctime)s [rank {ctx.rank}/{ctx.world_size}] %(name)s: %(message)s")
        run_experiment(cfg, args.results, overwrite=args.overwrite, progress=False, save_codes=not args.no_codes,
                       ctx=ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
