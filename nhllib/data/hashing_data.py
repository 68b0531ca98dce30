"""``load_hashing_data``: one call from a dataset name to train / validation / query / database loaders.

Every loader yields ``(x float32 (B, C, H, W), y float32 multi-hot (B, num_classes), index long (B,))``, where
``index`` is the position within that split. ``DATASETS`` maps each name to its builder; it is the only place a
dataset name becomes code.

Validation: pooled single-label sets (Fashion-MNIST, CIFAR-10) draw it per class and keep it out of the
database (:mod:`nhllib.data.split`). List-file sets carve it from ``train.txt`` (``val_fraction``, seeded and
saved); their official database usually contains the training images, hence the validation images too, so a
validation-vs-database mAP there is optimistic; it is meant for model selection only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .listfile import LIST_FILES, ListFileDataset, holdout_split, list_file_transform, parse_list_file
from .loader import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, InMemoryLoader, channel_stats, one_hot
from .pools import DATA_DIR_ENV, ImagePool, load_cifar10, load_fashion_mnist
from .sampler import GlobalOrderBatchSampler
from .split import SPLIT_NAMES, SplitSpec, load_index_arrays, load_or_make_split, save_index_arrays
from ..checks import check_int
from .config import DataConfig

logger = logging.getLogger(__name__)

DEFAULT_SPLIT = SplitSpec()  # frozen, so sharing it as a default is safe


@dataclass(frozen=True)
class HashingData:
    """The four loaders of a hashing benchmark plus the facts a model needs.

    ``train`` is shuffled (seeded per epoch); the others keep a fixed order. ``num_train`` is the size of the
    training split (memory-bank losses need it). ``split_path`` is the saved split file, ``source`` the folder
    the images came from.
    """

    name: str
    train: Iterable
    validation: Iterable
    query: Iterable
    database: Iterable
    num_classes: int
    in_channels: int
    image_size: int
    num_train: int
    split_path: Path | None
    source: str

    def sizes(self) -> dict[str, int]:
        """Number of images of each split."""
        return {part: _num_samples(getattr(self, part)) for part in ("train", "validation", "query", "database")}


def _num_samples(loader: Iterable) -> int:
    if isinstance(loader, InMemoryLoader):
        return loader.num_samples
    return len(loader.dataset)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Build:
    """What a dataset builder gets: the data configuration plus where and in which order to serve batches."""

    config: DataConfig
    order_seed: int  # seed of the training order (epoch e shuffles with order_seed + e)
    device: torch.device | str | None = None


def _train_drop_last(num_train: int, batch_size: int) -> bool:
    # A final batch of one image breaks BatchNorm in training mode; dropping it (a different one each
    # shuffled epoch) is harmless.
    return num_train > batch_size and num_train % batch_size == 1


# ---------------------------------------------------------------- pooled single-label sets


def _pool_transform(pool: ImagePool, train_images: torch.Tensor, req: _Build) -> tuple[BatchTransform, int, int]:
    """The batch transform plus the resulting (channels, image size)."""
    cfg = req.config
    size = cfg.image_size if cfg.image_size is not None else int(pool.images.shape[-1])
    mode = cfg.normalization
    if mode == "auto":
        mode = "imagenet" if cfg.image_size is not None else "dataset"
    if mode == "imagenet":
        # ImageNet statistics are per RGB channel, so grayscale is repeated to 3 channels here.
        return BatchTransform(IMAGENET_MEAN, IMAGENET_STD, size=cfg.image_size, channels=3), 3, size
    if mode == "dataset":
        mean, std = channel_stats(train_images)  # training split only: no peeking at queries
        return BatchTransform(mean, std, size=cfg.image_size), int(pool.images.shape[1]), size
    raise ValueError(f"normalization must be 'auto', 'dataset' or 'imagenet', got {cfg.normalization!r}")


def _build_pool_dataset(req: _Build, load_pool: Callable[..., ImagePool]) -> HashingData:
    cfg = req.config
    pool = load_pool(root=cfg.root, data_dir=cfg.data_dir, download=cfg.download)
    split, path = load_or_make_split(cfg.dataset, pool.labels, cfg.split, cfg.split_seed, cfg.data_dir)
    labels = one_hot(torch.from_numpy(pool.labels), pool.num_classes)
    images = {part: pool.images[torch.from_numpy(getattr(split, part))] for part in SPLIT_NAMES}
    transform, channels, size = _pool_transform(pool, images["train"], req)

    def make(part: str, shuffle: bool, batch_size: int, drop_last: bool = False) -> InMemoryLoader:
        index = torch.from_numpy(getattr(split, part))
        return InMemoryLoader(
            images[part], labels[index], batch_size, shuffle=shuffle, seed=req.order_seed,
            transform=transform, drop_last=drop_last, device=req.device,
        )

    num_train = len(split.train)
    return HashingData(
        name=cfg.dataset,
        train=make("train", True, cfg.batch_size, _train_drop_last(num_train, cfg.batch_size)),
        validation=make("validation", False, cfg.eval_batch_size),
        query=make("query", False, cfg.eval_batch_size),
        database=make("database", False, cfg.eval_batch_size),
        num_classes=pool.num_classes,
        in_channels=channels,
        image_size=size,
        num_train=num_train,
        split_path=path,
        source=pool.source,
    )


# ---------------------------------------------------------------- list-file sets


def _find_list_root(req: _Build) -> Path:
    cfg = req.config
    candidates: list[tuple[str, Path]] = []
    if cfg.root is not None:
        candidates.append(("root", Path(cfg.root)))
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        candidates += [(f"${DATA_DIR_ENV}", Path(env) / cfg.dataset), (f"${DATA_DIR_ENV}", Path(env))]
    candidates.append(("data_dir", Path(cfg.data_dir) / cfg.dataset))
    for label, folder in candidates:
        if all((folder / f).is_file() for f in LIST_FILES.values()):
            if cfg.root is not None and label != "root":
                logger.warning("%s list files not found under root=%s; using %s", cfg.dataset, cfg.root, folder)
            return folder
    looked = "; ".join(f"{label}: {folder}" for label, folder in candidates)
    raise FileNotFoundError(
        f"{cfg.dataset}: no folder holds {', '.join(LIST_FILES.values())}. Looked in {looked}. Pass root= (or set "
        f"{DATA_DIR_ENV}) to the dataset folder, or put it under <data_dir>/{cfg.dataset}/; image paths in the lists "
        f"are relative to that folder. See data/README.md for the list-file format."
    )


def _build_list_dataset(req: _Build) -> HashingData:
    cfg = req.config
    root = _find_list_root(req)
    lists = {part: parse_list_file(root / name) for part, name in LIST_FILES.items()}
    widths = {lf.num_classes for lf in lists.values()}
    if len(widths) != 1:
        detail = ", ".join(f"{lf.path}: {lf.num_classes}" for lf in lists.values())
        raise ValueError(f"list files disagree on the number of label values ({detail})")
    train_list = lists["train"]

    # Validation is carved from train.txt; saved (and checked) like the pooled splits.
    path = Path(cfg.data_dir) / "splits" / f"{cfg.dataset}_val{cfg.val_fraction:g}_seed{cfg.split_seed}.npz"
    meta = {
        "dataset": cfg.dataset,
        "val_fraction": cfg.val_fraction,
        "seed": int(cfg.split_seed),
        "num_train_lines": len(train_list.images),
        "train_list_sha256": hashlib.sha256(train_list.path.read_bytes()).hexdigest(),
    }
    if path.exists():
        saved = load_index_arrays(path, ("train", "validation"), meta)
        train_idx, val_idx = saved["train"], saved["validation"]
    else:
        train_idx, val_idx = holdout_split(len(train_list.images), cfg.val_fraction, cfg.split_seed)
        save_index_arrays(path, {"train": train_idx, "validation": val_idx}, meta)

    image_size = cfg.image_size if cfg.image_size is not None else 224
    # The reference resizes to 256 before a 224 crop; keep that ratio for other sizes unless given.
    resize_size = cfg.resize_size if cfg.resize_size is not None else round(image_size * 256 / 224)
    train_tf = list_file_transform(True, image_size, resize_size)
    eval_tf = list_file_transform(False, image_size, resize_size)
    num_train = int(train_idx.size)

    _warn_if_unfed(cfg, req.device)
    options = _list_loader_options(cfg.num_workers)

    def make(dataset: ListFileDataset, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **options)

    # The training order is the global one of data-parallel training (seed + epoch) and every sample's crop and
    # flip is seeded by (seed, epoch, index): one process and N ranks see the same batches.
    train_set = ListFileDataset(train_list, root, train_tf, train_idx, augment_seed=req.order_seed)
    train_order = GlobalOrderBatchSampler(num_train, cfg.batch_size, shuffle=True, seed=req.order_seed,
                                          drop_last=_train_drop_last(num_train, cfg.batch_size), with_epoch=True)
    return HashingData(
        name=cfg.dataset,
        train=DataLoader(train_set, batch_sampler=train_order, **options),
        validation=make(ListFileDataset(train_list, root, eval_tf, val_idx), cfg.eval_batch_size),
        query=make(ListFileDataset(lists["query"], root, eval_tf), cfg.eval_batch_size),
        database=make(ListFileDataset(lists["database"], root, eval_tf), cfg.eval_batch_size),
        num_classes=widths.pop(),
        in_channels=3,
        image_size=image_size,
        num_train=num_train,
        split_path=path,
        source=str(root),
    )


#: Batches each DataLoader worker keeps ready ahead of the training step (torch's default is 2).
PREFETCH_BATCHES = 4


def _list_loader_options(num_workers: int) -> dict[str, Any]:
    """Decoding in ``num_workers`` processes, ``PREFETCH_BATCHES`` ahead each, into page-locked memory on CUDA
    (the step's ``non_blocking`` copy then overlaps the computation)."""
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available()}
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES)
    return options


def _warn_if_unfed(cfg: DataConfig, device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda" and cfg.num_workers == 0:
        logger.warning("%s: list-file images are decoded in the training thread (num_workers=0), so the GPU waits "
                       "for every batch; set num_workers (e.g. the CPU cores of the run minus one)", cfg.dataset)


#: Pooled dataset name -> the loader of its image pool (the datasets that have a pretraining pool).
POOL_LOADERS: dict[str, Callable[..., ImagePool]] = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}

#: Dataset name -> builder. List-file names are looked for in ``<data_dir>/<name>/``; ``listfile`` is any
#: other dataset in that format (pass ``root=``).
DATASETS: dict[str, Callable[[_Build], HashingData]] = {
    **{name: partial(_build_pool_dataset, load_pool=load) for name, load in POOL_LOADERS.items()},
    "imagenet100": _build_list_dataset,
    "coco": _build_list_dataset,
    "nuswide": _build_list_dataset,
    "listfile": _build_list_dataset,
}


def load_data(config: DataConfig, *, shuffle_seed: int | None = None,
              device: torch.device | str | None = None) -> HashingData:
    """Load the hashing benchmark ``config`` describes, with its seeded, saved split.

    ``shuffle_seed`` is the seed of the training order (epoch e shuffles with shuffle_seed + e; ``None``: the
    split seed): a study keeps one split for all its runs and varies the order with the training seed.
    ``device`` is where pooled sets produce their batches. Raises ``KeyError`` for an unknown dataset name (the
    message lists the valid ones).
    """
    if not isinstance(config, DataConfig):
        raise TypeError(f"config must be a DataConfig, got {type(config).__name__}")
    if config.dataset not in DATASETS:
        raise KeyError(f"unknown dataset {config.dataset!r}; valid names: {', '.join(sorted(DATASETS))}")
    order_seed = config.split_seed if shuffle_seed is None else check_int("shuffle_seed", shuffle_seed)
    data = DATASETS[config.dataset](_Build(config, order_seed, device))
    logger.info("%s: %s, %d classes, %d channels, %d px", config.dataset, data.sizes(), data.num_classes,
                data.in_channels, data.image_size)
    return data


def load_hashing_data(name: str, *, seed: int, split: SplitSpec = DEFAULT_SPLIT, shuffle_seed: int | None = None,
                      device: torch.device | str | None = None, eval_batch_size: int = 512,
                      **options: Any) -> HashingData:
    """:func:`load_data` by dataset name: ``seed`` is the split seed, ``split`` the per-class counts, and
    ``options`` any other :class:`DataConfig` field (``data_dir``, ``root``, ``batch_size``, ``image_size``, ...).

    Raises ``KeyError`` for an unknown name and ``ValueError`` naming a bad or unknown option.
    """
    if not isinstance(split, SplitSpec):
        raise TypeError(f"split must be a SplitSpec, got {type(split).__name__}")
    known = {f.name for f in fields(DataConfig)} - {"dataset", "split_seed", *_SPLIT_FIELDS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown data option(s) {unknown}; valid options are {sorted(known)}")
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    counts = {f: getattr(split, f) for f in _SPLIT_FIELDS}
    config = DataConfig(dataset=name, split_seed=check_int("seed", seed), eval_batch_size=eval_batch_size,
                        **counts, **options)
    return load_data(config, shuffle_seed=shuffle_seed, device=device)


_SPLIT_FIELDS = ("query_per_class", "train_per_class", "val_per_class", "database_per_class")
