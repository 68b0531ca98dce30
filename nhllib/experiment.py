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

import torch

from nhllib.backbones import build_backbone
from nhllib.config import RunConfig, RunPlan
from nhllib.data import HashingData, load_data
from nhllib.collapse import code_health
from nhllib.final_eval import final_evaluation
from nhllib.locks import FolderLock
from nhllib.losses import build_losses
from nhllib.model import HashingModel
from nhllib.nested import NestedHashLayer, SeparateHashHeads
from nhllib.results import CONFLICT_COLUMNS, HISTORY_COLUMNS, METRIC_COLUMNS, RunStore, write_codes
from nhllib.train import FitResult, fit
from nhllib.utils import git_commit, package_versions, resolve_device, seed_everything
from nhllib.weighting import ConflictAware, Uniform, WeightingStrategy

__all__ = ["BuiltRun", "build_run", "run_experiment", "HEADS"]

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

    def fit(self) -> FitResult:
        """Train with the run's training part and the λ its variant puts in effect."""
        return fit(self.model, self.losses, self.data, self.config.training, self.weighting, self.device,
                   distill_weight=self.plan.distill_weight, progress=self.progress, train=self.plan.trains)


def build_run(cfg: RunConfig, progress: bool = True) -> BuiltRun:
    """Build data, model, per-length losses and the weighting strategy for ``cfg`` (seeded)."""
    plan = cfg.plan
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = load_data(cfg.data, shuffle_seed=cfg.seed)
    backbone = build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained, in_channels=data.in_channels,
                              image_size=data.image_size)
    lengths = cfg.model.code_lengths
    # Passed only when asked for: the option is new, and a head without it keeps its old signature.
    centring = {"center": True} if cfg.model.center_codes else {}
    head = HEADS[plan.head](backbone.out_features, lengths, **centring)
    model = HashingModel(backbone, head)
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
    return BuiltRun(cfg, plan, model, losses, data, weighting, device, progress)


def run_experiment(cfg: RunConfig, results_root: str | Path = "results", overwrite: bool = False,
                   progress: bool = True, save_codes: bool = True) -> Path:
    """Train and evaluate one run and write its complete folder; returns the folder.

    A complete folder for the same config raises :class:`~nhllib.results.RunExistsError` unless ``overwrite``;
    an incomplete one is redone. The completion marker is written last. The run folder is locked while the run
    writes it (:class:`~nhllib.locks.LockedError`, naming the holder, when another process is training it).
    """
    store = RunStore(results_root, cfg.study, cfg.run_id)
    if store.state == "complete" and not overwrite:
        store.prepare(overwrite=False)  # raises RunExistsError before any work
    started = datetime.now(timezone.utc).isoformat()
    built = build_run(cfg, progress=progress)  # data and model first: a missing dataset leaves no folder behind
    with FolderLock(store.path, "training run"):
        store.prepare(overwrite=overwrite)  # the state is checked again, now that no one else can change it
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
    result = built.fit()
    start = time.perf_counter()
    built.model.load_state_dict(result.best_state)
    final = final_evaluation(built.model, built.data, built.device, topk=cfg.training.topk)
    final_time = time.perf_counter() - start

    base = {
        "run_id": cfg.run_id, "study": cfg.study, "method": cfg.hashing.method, "variant": cfg.hashing.variant,
        "dataset": cfg.data.dataset, "backbone": cfg.model.backbone, "weighting": built.plan.weighting,
        "distill_weight": built.plan.distill_weight, "seed": cfg.seed,
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
    if result.conflicts is not None:
        store.write_rows("conflicts.csv", result.conflicts.rows, CONFLICT_COLUMNS)
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
