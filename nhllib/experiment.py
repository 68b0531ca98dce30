"""From a :class:`RunConfig` to a complete run folder: build, fit, final evaluation, write.

This is what the ``01_train`` notebook calls. Method names meet code only in the registries
(``LOSSES``, ``DATASETS``, ``BACKBONES``, ``VARIANTS``); nothing here branches on them.

It is also the data-parallel entry point (one run on N GPUs, :mod:`nhllib.distributed`)::

    torchrun --standalone --nproc_per_node N -m nhllib.experiment --config RUN.json --results results

``RUN.json`` holds the run's parameters (a :class:`RunConfig` as a dict, or a run folder's ``config.json``);
``batch_size`` is the global batch, split across the N processes. Without torchrun the same command trains in
one process. Rank 0 alone writes the run folder, evaluates and logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nhllib.backbones import build_backbone
from nhllib.config import VARIANTS, RunConfig
from nhllib.data import SplitSpec, load_hashing_data
from nhllib.distributed import DataParallel, DistContext, barrier, convert_sync_batchnorm, process_group, shard_loader
from nhllib.final_eval import final_evaluation
from nhllib.losses import build_losses
from nhllib.model import HashingModel
from nhllib.nested import NestedHashLayer, SeparateHashHeads
from nhllib.results import RunStore
from nhllib.train import TrainSettings, fit
from nhllib.utils import git_commit, package_versions, resolve_device, seed_everything
from nhllib.weighting import ConflictAware, Uniform, WeightingStrategy

__all__ = ["BuiltRun", "build_run", "run_experiment", "main", "HEADS", "METRIC_COLUMNS", "HISTORY_COLUMNS"]

logger = logging.getLogger(__name__)

HEADS = {"nested": NestedHashLayer, "separate": SeparateHashHeads}
HISTORY_COLUMNS = ["epoch", "code_length", "split", "metric", "value"]
METRIC_COLUMNS = [
    "run_id", "study", "method", "variant", "dataset", "backbone", "code_length", "weighting", "distill_weight",
    "seed", "metric", "value",
]


@dataclass
class BuiltRun:
    config: RunConfig
    model: HashingModel
    losses: list
    data: object
    weighting: WeightingStrategy
    settings: TrainSettings
    device: torch.device
    parallel: DataParallel | None = None  # data-parallel training across ranks; None: one process


def build_run(cfg: RunConfig, progress: bool = True, ctx: DistContext | None = None) -> BuiltRun:
    """Build data, model, per-length losses and the weighting strategy for ``cfg`` (seeded).

    With a multi-rank ``ctx`` the run is set up for data-parallel training: every rank builds the same model and
    losses, the training loader yields the rank's share of each global batch, batch norm runs over the global
    batch, and the weighting averages per-length gradients over ranks.
    """
    variant = VARIANTS[cfg.variant]
    distributed = ctx is not None and ctx.enabled
    device = ctx.device if distributed else resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if distributed and not ctx.is_main:
        barrier()  # rank 0 builds first: it may write the split file the others then read
    data = load_hashing_data(
        cfg.dataset,
        data_dir=cfg.data_dir,
        seed=cfg.split_seed,
        shuffle_seed=cfg.seed,
        split=SplitSpec(cfg.query_per_class, cfg.train_per_class, cfg.val_per_class, cfg.database_per_class),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        image_size=cfg.image_size,
        download=cfg.download,
    )
    if distributed and ctx.is_main:
        barrier()
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, in_channels=data.in_channels,
                              image_size=data.image_size)
    head = HEADS[variant.head](backbone.out_features, cfg.code_lengths)
    model = HashingModel(backbone, head)
    losses = build_losses(cfg.method, cfg.code_lengths, data.num_classes, data.num_train,
                          nested=isinstance(head, NestedHashLayer), seed=cfg.seed, **cfg.loss_hparams)
    # Conflicts are monitored in every run with a shared nested weight and several lengths, applied only when
    # the variant asks for it.
    if model.shared_weight is not None and len(cfg.code_lengths) > 1:
        weighting: WeightingStrategy = ConflictAware(
            cfg.code_lengths, beta=cfg.beta, threshold_norm=cfg.threshold_norm,
            apply=variant.conflict_weighting, every=cfg.conflict_every,
        )
    else:
        weighting = Uniform()
    settings = TrainSettings(
        epochs=cfg.epochs, eval_every=cfg.eval_every, patience=cfg.patience, lr=cfg.lr,
        weight_decay=cfg.weight_decay, distill_weight=cfg.distill_weight if variant.distillation else 0.0,
        amp=cfg.amp, topk=cfg.topk, ties=cfg.ties, progress=progress and (ctx is None or ctx.is_main),
    )
    built = BuiltRun(cfg, model, losses, data, weighting, settings, device)
    if distributed:
        _make_data_parallel(built, ctx)
    return built


def _make_data_parallel(built: BuiltRun, ctx: DistContext) -> None:
    """The hooks of data-parallel training (global-batch BN, DDP, sharded loader, averaged gradients)."""
    built.model = convert_sync_batchnorm(built.model, ctx.device).to(ctx.device)
    built.parallel = DataParallel(built.model, ctx)
    built.data = replace(built.data, train=shard_loader(built.data.train, ctx.rank, ctx.world_size))
    if isinstance(built.weighting, ConflictAware):
        built.weighting.reduce_gradients = built.parallel.reduce_gradients


def _weighting_label(cfg: RunConfig) -> str:
    return "conflict" if VARIANTS[cfg.variant].conflict_weighting else "uniform"


def run_experiment(cfg: RunConfig, results_root: str | Path = "results", overwrite: bool = False,
                   progress: bool = True, save_codes: bool = True, ctx: DistContext | None = None) -> Path:
    """Train and evaluate one run and write its complete folder; returns the folder.

    A complete folder for the same config raises :class:`~nhllib.results.RunExistsError` unless ``overwrite``;
    an incomplete one is redone. The completion marker is written last. With a multi-rank ``ctx`` (torchrun)
    every rank trains its share and rank 0 alone evaluates and writes.
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
    if main_rank:
        store.prepare(overwrite=overwrite)
    try:
        _train_and_write(cfg, built, store, started, save_codes, ctx)
    except BaseException:
        if main_rank:
            store.discard()  # no half-written results left looking usable; the notebook and its log stay
        raise
    return store.path


def _train_and_write(cfg: RunConfig, built: BuiltRun, store: RunStore, started: str, save_codes: bool,
                     ctx: DistContext | None = None) -> None:
    main_rank = ctx is None or ctx.is_main
    world_size = 1 if ctx is None else ctx.world_size
    if main_rank:
        store.write_json("config.json", {
            "run_id": cfg.run_id, "config": cfg.to_dict(), "device": str(built.device), "world_size": world_size,
            "started": started, "git_commit": git_commit(), "versions": package_versions(), "data": {
                "split_file": str(built.data.split_path.name) if built.data.split_path else None,
                "sizes": built.data.sizes(), "source": built.data.source,
            },
            "parameters": sum(p.numel() for p in built.model.parameters()),
        })
    result = fit(built.model, built.losses, built.data, built.settings, built.weighting, built.device,
                 built.parallel)
    if not main_rank:
        return
    start = time.perf_counter()
    built.model.load_state_dict(result.best_state)
    final = final_evaluation(built.model, built.data, built.device, topk=cfg.topk)
    final_time = time.perf_counter() - start

    base = {
        "run_id": cfg.run_id, "study": cfg.study, "method": cfg.method, "variant": cfg.variant,
        "dataset": cfg.dataset, "backbone": cfg.backbone, "weighting": _weighting_label(cfg),
        "distill_weight": cfg.distill_weight if VARIANTS[cfg.variant].distillation else 0.0, "seed": cfg.seed,
    }
    rows = []
    for length in cfg.code_lengths:
        per_length = {
            "map": result.query_map_best[length],
            "map_last": result.query_map_last[length],
            "val_map": result.val_map_best.get(length, float("nan")),
            **{name: values[length] for name, values in final.scalars.items()},
        }
        rows += [{**base, "code_length": length, "metric": k, "value": v} for k, v in per_length.items()]
    run_level = {
        "train_time_s": result.train_time_s, "eval_time_s": result.eval_time_s, "final_eval_time_s": final_time,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "train_steps": result.train_steps,
        "stopped_early": float(result.stopped_early),
    }
    rows += [{**base, "code_length": None, "metric": k, "value": v} for k, v in run_level.items()]
    store.write_rows("history.csv", result.history, HISTORY_COLUMNS)
    store.write_rows("metrics.csv", rows, METRIC_COLUMNS)
    store.write_rows("curves.csv", final.curves, list(final.curves[0]) if final.curves else ["code_length"])
    if result.conflicts is not None:
        from nhllib.conflicts import CONFLICT_COLUMNS

        store.write_rows("conflicts.csv", result.conflicts.rows, CONFLICT_COLUMNS)
    store.write_json("timing.json", {**run_level, "train_time_per_epoch_s": result.train_time_s / result.epochs_run})
    if save_codes:
        _save_codes(store, final, built.model.code_lengths)
    store.mark_complete()
    logger.info("run %s complete: %s", cfg.run_id, {k: round(v, 4) for k, v in result.query_map_best.items()})


def _save_codes(store: RunStore, final, code_lengths) -> None:
    """Packed query and database codes of the longest length (for retrieval experiments), atomically."""
    query_codes, query_labels = final.codes["query"]
    db_codes, db_labels = final.codes["database"]
    longest = max(query_codes)
    target = store.path / "codes.npz"
    tmp = store.path / ".codes.tmp.npz"
    np.savez_compressed(
        tmp, query_codes=np.packbits(query_codes[longest].numpy() > 0, axis=1),
        db_codes=np.packbits(db_codes[longest].numpy() > 0, axis=1), code_length=longest,
        code_lengths=np.array(code_lengths), query_labels=query_labels.numpy().astype(np.uint8),
        db_labels=db_labels.numpy().astype(np.uint8),
    )
    tmp.replace(target)


def _read_config(path: Path) -> RunConfig:
    """A run's parameters from JSON: a RunConfig dict, or a run folder's ``config.json`` (its ``config`` key)."""
    values = json.loads(Path(path).read_text())
    if "config" in values and isinstance(values["config"], dict):
        values = values["config"]
    if "code_lengths" in values:
        values["code_lengths"] = tuple(values["code_lengths"])
    return RunConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    """``python -m nhllib.experiment --config RUN.json --results DIR``, under torchrun or in one process."""
    parser = argparse.ArgumentParser(prog="python -m nhllib.experiment", description=__doc__.splitlines()[0])
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
