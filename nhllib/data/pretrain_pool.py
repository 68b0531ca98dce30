"""The pretraining pool: the images of a pooled dataset that are in none of query, train, validation or database.

With the default study's split (per class 100 query, 500 train, 100 validation, 1,000 database) Fashion-MNIST
leaves 5,300 images per class unused: enough to pretrain a backbone with cross-entropy without touching a
single image the hashing runs train on, select on, query with or retrieve (:mod:`nhllib.training.pretrain`). The pool is
a pure function of the split (by image index), so it is as reproducible as the split itself.

Two label sets (:data:`nhllib.weight_sources.LABEL_SETS`):

- ``in-domain``: the dataset's own classes, the stand-in for pretraining that saw the retrieval classes (as
  ImageNet pretraining does for ImageNet-100);
- ``coarse``: a grouping of the classes into a few super-classes (:data:`COARSE_GROUPS`), a transfer stand-in:
  the features learn what garments look like but not the distinctions the retrieval task is scored on.

For Fashion-MNIST the grouping is by the kind of item, the grouping a shop's catalogue makes: **tops**
(T-shirt/top, Pullover, Coat, Shirt), **bottoms and dresses** (Trouser, Dress), **footwear** (Sandal, Sneaker,
Ankle boot) and **bags** (Bag). It puts the classes Fashion-MNIST classifiers confuse most (shirt, T-shirt,
pullover, coat) into one super-class, so coarse pretraining is never rewarded for separating them: exactly the
part of the retrieval task left for fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nhllib.checks import check_optional, check_positive_int
from nhllib.weight_sources import LABEL_SETS

from .config import DataConfig
from .pools import ImagePool
from .split import SPLIT_NAMES, Split

__all__ = ["COARSE_GROUPS", "PretrainPool", "pool_indices", "pretraining_pool"]

#: Per dataset: super-class name -> the class ids it groups (every class in exactly one group).
COARSE_GROUPS: dict[str, dict[str, tuple[int, ...]]] = {
    "fashion-mnist": {
        "tops": (0, 2, 4, 6),  # T-shirt/top, Pullover, Coat, Shirt
        "bottoms-dresses": (1, 3),  # Trouser, Dress
        "footwear": (5, 7, 9),  # Sandal, Sneaker, Ankle boot
        "bags": (8,),  # Bag
    },
}


@dataclass(frozen=True)
class PretrainPool:
    """Pool images (uint8 (N, C, H, W)), their labels under ``label_set`` (int64 (N,)), and their indices in the
    dataset's image pool (int64 (N,), disjoint from every part of the split)."""

    images: Tensor
    labels: np.ndarray
    indices: np.ndarray
    label_set: str
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def pool_indices(num_images: int, split: Split, labels: np.ndarray, max_per_class: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the images in none of the split's parts; at most ``max_per_class`` per class, drawn
    with ``numpy.random.default_rng((seed, 2, class))`` when the class has more."""
    check_optional(check_positive_int, "max_per_class", max_per_class)
    used = np.zeros(num_images, dtype=bool)
    for part in SPLIT_NAMES:
        used[getattr(split, part)] = True
    free = np.flatnonzero(~used)
    if max_per_class is None:
        return free
    chosen = []
    for cls in np.unique(labels[free]):
        members = free[labels[free] == cls]
        if len(members) > max_per_class:
            members = np.sort(np.random.default_rng((seed, 2, int(cls))).choice(members, max_per_class,
                                                                                  replace=False))
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else free


def _relabel(dataset: str, label_set: str, labels: np.ndarray, pool: ImagePool) -> tuple[np.ndarray, tuple]:
    if label_set == "in-domain":
        return labels, tuple(pool.class_names)
    if dataset not in COARSE_GROUPS:
        raise ValueError(f"label set 'coarse' needs a grouping of {dataset!r}'s classes into super-classes; "
                         f"COARSE_GROUPS has one for {sorted(COARSE_GROUPS)}")
    groups = COARSE_GROUPS[dataset]
    mapping = np.full(pool.num_classes, -1, dtype=np.int64)
    for group, (name, members) in enumerate(groups.items()):
        mapping[list(members)] = group
    if (mapping < 0).any():  # a grouping that forgets a class would silently drop its images
        raise ValueError(f"COARSE_GROUPS[{dataset!r}] leaves class(es) {np.flatnonzero(mapping < 0).tolist()} "
                         "out of every super-class")
    return mapping[labels], tuple(groups)


def pretraining_pool(config: DataConfig, label_set: str, max_per_class: int | None = None,
                     seed: int = 0) -> PretrainPool:
    """The pretraining pool of the split ``config`` describes (the same saved split its runs use).

    Only pooled datasets have images outside the split (list-file datasets fix their parts in the files).
    Raises ``ValueError`` for an unknown label set, a dataset without a pool, or an empty pool (a split that
    uses every image, ``database_per_class=None``).
    """
    from .hashing_data import POOL_LOADERS
    from .split import load_or_make_split

    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set must be one of {list(LABEL_SETS)}, got {label_set!r}")
    if config.dataset not in POOL_LOADERS:
        raise ValueError(f"dataset {config.dataset!r} has no pretraining pool: only the pooled datasets "
                         f"{sorted(POOL_LOADERS)} have images outside their split")
    pool = POOL_LOADERS[config.dataset](root=config.root, data_dir=config.data_dir, download=config.download)
    split, _ = load_or_make_split(config.dataset, pool.labels, config.split, config.split_seed, config.data_dir)
    indices = pool_indices(len(pool.labels), split, pool.labels, max_per_class, seed)
    if indices.size == 0:
        raise ValueError(f"the split {config.split.tag} of {config.dataset!r} uses every image, so the pretraining "
                         "pool is empty; set database_per_class to leave images out of the database")
    labels, names = _relabel(config.dataset, label_set, pool.labels[indices], pool)
    return PretrainPool(pool.images[torch.from_numpy(indices)], labels, indices, label_set, names)
