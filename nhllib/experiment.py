"""From a :class:`RunConfig` to a complete run folder: build, fit, final evaluation, write.

This is what the ``01_train`` notebook calls. Method names meet code only in the registries
(``LOSSES``, ``DATASETS``, ``BACKBONES``, ``VARIANTS``); nothing here branches on them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nhllib.backbones import build_backbone
from nhllib.config import VARIANTS, RunConfig
from nhllib.data import SplitSpec, load_hashing_data
from nhllib.final_eval import final_evaluation
from nhllib.losses import build_losses
from nhllib.model import HashingModel
from nhllib.nested import NestedHashLayer, SeparateHashHeads
from nhllib.results import RunStore
from nhllib.train import TrainSettings, fit
from nhllib.utils import git_commit, package_versions, resolve_device, seed_everything
from nhllib.weighting import ConflictAware, Uniform, WeightingStrategy

__all__ = ["BuiltRun", "build_run", "run_experiment", "HEADS", "METRIC_COLUMNS", "HISTORY_COLUMNS"]

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


def build_run(cfg: RunConfig, progress: bool = True) -> BuiltRun:
    """Build data, model, per-length losses and the weighting strategy for ``cfg`` (seeded)."""
    variant = VARIANTS[cfg.variant]
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
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
        amp=cfg.amp, topk=cfg.topk, ties=cfg.ties, progress=progress,
    )
    return BuiltRun(cfg, model, losses, data, weighting, settings, device)


def _weighting_label(cfg: RunConfig) -> str:
    return "conflict" if VARIANTS[cfg.variant].conflict_weighting else "uniform"


def run_experiment(cfg: RunConfig, results_root: str | Path = "results", overwrite: bool = False,
                   progress: bool = True, save_codes: bool = True) -> Path:
    """Train and evaluate one run and write its complete folder; returns the folder.

    A complete folder for the same config raises :class:`~nhllib.results.RunExistsError` unless ``overwrite``;
    an incomplete one is redone. The completion marker is written last.
    """
    store = RunStore(results_root, cfg.study, cfg.run_id)
    if store.state == "complete" and not overwrite:
        store.prepare(overwrite=False)  # raises RunExistsError before any work
    started = datetime.now(timezone.utc).isoformat()
    built = build_run(cfg, progress=progress)  # data and model first: a missing dataset leaves no folder behind
    store.prepare(overwrite=overwrite)
    try:
        _train_and_write(cfg, built, store, started, save_codes)
    except BaseException:
        store.discard()  # no half-written results left looking usable; the notebook and its log stay
        raise
    return store.path


def _train_and_write(cfg: RunConfig, built: BuiltRun, store: RunStore, started: str, save_codes: bool) -> None:
    store.write_json("config.json", {
        "run_id": cfg.run_id, "config": cfg.to_dict(), "device": str(built.device), "started": started,
        "git_commit": git_commit(), "versions": package_versions(), "data": {
            "split_file": str(built.data.split_path.name) if built.data.split_path else None,
            "sizes": built.data.sizes(), "source": built.data.source,
        },
        "parameters": sum(p.numel() for p in built.model.parameters()),
    })
    result = fit(built.model, built.losses, built.data, built.settings, built.weighting, built.device)
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
