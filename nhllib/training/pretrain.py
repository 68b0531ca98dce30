"""Backbones pretrained here with cross-entropy on the pretraining pool, trained once and cached.

A run that says ``pretrained: pool-in-domain`` (or ``pool-coarse``, :mod:`nhllib.weight_sources`) starts its
backbone from the weights of one cache entry: the backbone trained on the images of its dataset that no hashing
run sees (:mod:`nhllib.data.pretrain_pool`), under one label set, with one recipe (:data:`RECIPES`) and one
seed. The entry is a folder ``<data_dir>/pretrained/<dataset>_<backbone>_<labels>_<recipe>_seed<seed>_<hash>/``
(the hash covers everything that decides the weights: the split, the recipe's values, the input shape) holding
``backbone.pt`` and ``pretrain.json`` (the specification, the provenance, the training log and the backbone's
linear-probe accuracy on the validation split, with the same probe on the random initialisation beside it).
``pretrain.json`` is written last, so an entry without it is incomplete and is trained again. The first run to
need an entry trains it under the entry's lock (:mod:`nhllib.store.locks`); a run that needs it meanwhile waits for the
lock, then reads the finished entry. Pretraining draws from its own seeded generators inside
``torch.random.fork_rng``, so a run's own initialisation (the hash layer) is the same whichever run trained the
entry.

``python -m nhllib.study.pretrain PROFILE`` pretrains (or finds) every entry the runs of a profile name and prints
each one's linear-probe accuracy; ``--list`` only prints what is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nhllib.checks import check_int, check_number, check_optional, check_positive_int
from nhllib.data import DataConfig, HashingData, InMemoryLoader, one_hot
from nhllib.data.pretrain_pool import pretraining_pool
from nhllib.store.locks import FolderLock, LockedError
from nhllib.store.results import atomic_write_text
from nhllib.training.backbones import build_backbone
from nhllib.weight_sources import IMAGENET, pool_labels, weight_source
from nhllib.utils import git_commit, package_versions

__all__ = ["PretrainRecipe", "RECIPES", "PretrainSpec", "Pretrained", "ensure_pretrained", "starting_backbone",
           "linear_probe_accuracy", "cache_root", "main"]

logger = logging.getLogger(__name__)

RECORD = "pretrain.json"
WEIGHTS = "backbone.pt"
#: How long a run waits for another process that is pretraining the entry it needs.
LOCK_WAIT_S = 3 * 3600


@dataclass(frozen=True)
class PretrainRecipe:
    """Cross-entropy training of backbone + linear classifier with Adam; ``max_per_class`` caps the pool."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 1e-5
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_number("lr", self.lr, positive=True)
        check_positive_int("batch_size", self.batch_size)
        check_number("weight_decay", self.weight_decay)
        check_optional(check_positive_int, "max_per_class", self.max_per_class)


#: Recipe name -> recipe. ``default``: the whole pool (5,300 images per class in the default split), 10 epochs;
#: ``smoke``: a few images for one epoch (tests and the smoke of the pilot).
RECIPES: dict[str, PretrainRecipe] = {
    "default": PretrainRecipe(),
    "smoke": PretrainRecipe(epochs=1, batch_size=32, max_per_class=20),
}


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that decides a pretrained backbone's weights."""

    backbone: str
    labels: str  # a label set of nhllib.weight_sources.LABEL_SETS
    recipe: str
    seed: int
    data: DataConfig  # the split whose unused images form the pool (and whose train split sets the normalisation)
    in_channels: int
    image_size: int

    def identity(self) -> dict[str, Any]:
        d = self.data
        return {
            "backbone": self.backbone, "labels": self.labels, "recipe": self.recipe,
            "recipe_values": asdict(RECIPES[self.recipe]), "seed": self.seed, "dataset": d.dataset,
            "split": d.split.tag, "split_seed": d.split_seed, "image_size": self.image_size,
            "in_channels": self.in_channels, "normalization": d.normalization, "resize": d.image_size,
        }

    @property
    def name(self) -> str:
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.data.dataset}_{self.backbone}_{self.labels}_{self.recipe}_seed{self.seed}_{digest}"

    @property
    def folder(self) -> Path:
        return cache_root(self.data.data_dir) / self.name


@dataclass(frozen=True)
class Pretrained:
    """A cache entry read back: the backbone's weights, its record, and whether this call trained it."""

    state: dict[str, torch.Tensor]
    record: dict[str, Any]
    folder: Path
    trained_now: bool


def cache_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "pretrained"


def entry_complete(folder: Path) -> bool:
    return (folder / RECORD).is_file() and (folder / WEIGHTS).is_file()


def _read(folder: Path, trained_now: bool) -> Pretrained:
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    return Pretrained(state, json.loads((folder / RECORD).read_text()), folder, trained_now)


def ensure_pretrained(spec: PretrainSpec, data: HashingData, lock_wait_s: float = LOCK_WAIT_S) -> Pretrained:
    """The cache entry of ``spec``: read when complete, else trained now (under its lock) and written.

    ``data`` is the run's hashing data: its training loader's transform normalises the pool the same way, and
    its train / validation splits are the linear probe's. Another process training the same entry is waited
    for (up to ``lock_wait_s``), then its entry is read.
    """
    if spec.recipe not in RECIPES:
        raise ValueError(f"pretrain_recipe must be one of {sorted(RECIPES)}, got {spec.recipe!r}")
    folder = spec.folder
    if entry_complete(folder):
        return _read(folder, trained_now=False)
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            lock = FolderLock(folder, "pretraining").acquire()
            break
        except LockedError as err:
            if time.monotonic() > deadline:
                raise
            logger.info("waiting for the pretraining of %s: %s", folder.name, err)
            time.sleep(2.0)
    try:
        if entry_complete(folder):  # finished by the process we waited for
            return _read(folder, trained_now=False)
        _train_and_write(spec, data)
        return _read(folder, trained_now=True)
    finally:
        lock.release()


def _train_and_write(spec: PretrainSpec, data: HashingData) -> None:
    recipe = RECIPES[spec.recipe]
    folder = spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).unlink(missing_ok=True)
    started = datetime.now(timezone.utc).isoformat()
    pool = pretraining_pool(spec.data, spec.labels, recipe.max_per_class, spec.seed)
    transform = getattr(data.train, "transform", None)
    with torch.random.fork_rng(devices=[]):  # the run's own random stream stays untouched
        torch.manual_seed(spec.seed)
        backbone = build_backbone(spec.backbone, in_channels=spec.in_channels, image_size=spec.image_size)
        random_probe = linear_probe_accuracy(backbone, data)
        log, seconds = _train(backbone, pool, recipe, transform, spec.seed)
        probe = linear_probe_accuracy(backbone, data)
    tmp = folder / f".{WEIGHTS}.tmp"
    torch.save(backbone.state_dict(), tmp)
    os.replace(tmp, folder / WEIGHTS)
    counts = np.bincount(pool.labels, minlength=pool.num_classes)
    record = {
        "spec": spec.identity(), "name": spec.name, "started": started,
        "finished": datetime.now(timezone.utc).isoformat(), "git_commit": git_commit(),
        "versions": package_versions(), "torch_threads": torch.get_num_threads(),
        "pool": {"images": int(len(pool.labels)), "classes": list(pool.class_names),
                 "per_class": [int(c) for c in counts]},
        "train_time_s": seconds, "epochs": log,
        "probe_accuracy": probe, "probe_accuracy_random_init": random_probe,
        "probe": "logistic regression on the standardised features of the train split, accuracy on validation",
    }
    atomic_write_text(folder / RECORD, json.dumps(record, indent=2) + "\n")  # last: marks the entry complete
    logger.info("pretrained %s: linear probe %.4f (random init %.4f), %.0f s", spec.name, probe, random_probe,
                seconds)


def _train(backbone: nn.Module, pool, recipe: PretrainRecipe, transform, seed: int) -> tuple[list[dict], float]:
    classifier = nn.Linear(backbone.out_features, pool.num_classes)
    model = nn.Sequential(backbone, classifier)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    labels = torch.from_numpy(pool.labels)
    loader = InMemoryLoader(pool.images, one_hot(labels, pool.num_classes), recipe.batch_size, shuffle=True,
                            seed=seed, transform=transform, drop_last=len(labels) > recipe.batch_size)
    log, start = [], time.perf_counter()
    model.train()
    for epoch in range(1, recipe.epochs + 1):
        total, correct, seen = 0.0, 0, 0
        for images, targets, _ in loader:
            target = targets.argmax(1)
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(target)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
        log.append({"epoch": epoch, "loss": total / seen, "train_accuracy": correct / seen})
        logger.info("pretraining epoch %d: loss %.4f, accuracy %.4f", epoch, total / seen, correct / seen)
    return log, time.perf_counter() - start


@torch.no_grad()
def _features(backbone: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for images, targets, _ in loader:
        feats.append(backbone(images))
        labels.append(targets.argmax(1))
    return torch.cat(feats).double(), torch.cat(labels)


def linear_probe_accuracy(backbone: nn.Module, data: HashingData, l2: float = 1e-4, max_iter: int = 100) -> float:
    """Validation accuracy of a logistic regression on the backbone's frozen features of the train split.

    The features are standardised with the train split's statistics; the regression (L2 ``l2``) is fitted by
    full-batch L-BFGS in float64, so the number is deterministic for given weights. The backbone's mode is
    restored afterwards.
    """
    if data.validation is None:
        raise ValueError("the linear probe is scored on the validation split: val_per_class must be > 0")
    was_training = backbone.training
    backbone.eval()
    try:
        x_train, y_train = _features(backbone, _ordered(data))
        x_val, y_val = _features(backbone, data.validation)
    finally:
        backbone.train(was_training)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    classes = int(data.num_classes)
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x_train @ weight + bias, y_train) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x_val @ weight + bias).argmax(1) == y_val).double().mean())


def _ordered(data: HashingData):
    """The training split in a fixed order (no shuffling, no dropped batch) for the probe."""
    train = data.train
    if isinstance(train, InMemoryLoader):
        return InMemoryLoader(train.images, train.labels, 1024, transform=train.transform)
    return train


# ---------------------------------------------------------------- a run's starting backbone


def pretrain_spec(cfg, in_channels: int, image_size: int) -> PretrainSpec | None:
    """The cache entry a run's ``pretrained`` names, or None when it names no pool source."""
    labels = pool_labels(cfg.model.pretrained)
    if labels is None:
        return None
    check_int("pretrain_seed", cfg.model.pretrain_seed)
    return PretrainSpec(cfg.model.backbone, labels, cfg.model.pretrain_recipe, cfg.model.pretrain_seed, cfg.data,
                        in_channels, image_size)


def starting_backbone(cfg, data: HashingData) -> nn.Module:
    """The run's backbone with the weights its ``pretrained`` names: random, torchvision's, or a pool entry.

    The backbone is always built first (so a run consumes the same random numbers whatever its source, and its
    hash layer starts the same), then a pool entry's weights replace the random ones.
    """
    source = weight_source(cfg.model.pretrained)
    backbone = build_backbone(cfg.model.backbone, pretrained=source == IMAGENET, in_channels=data.in_channels,
                              image_size=data.image_size)
    spec = pretrain_spec(cfg, data.in_channels, data.image_size)
    if spec is not None:
        entry = ensure_pretrained(spec, data)
        backbone.load_state_dict(entry.state)
        logger.info("backbone %s starts from %s (linear probe %.4f)", cfg.model.backbone, entry.folder.name,
                    entry.record["probe_accuracy"])
    return backbone
