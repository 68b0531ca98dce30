"""``DataConfig``: everything that decides which images a run sees and how they are batched.

The data part of :class:`nhllib.training.config.RunConfig`, and the one argument of every dataset builder: a new data
option is a field here, read where it is used. Torch-free, so configurations validate without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nhllib.checks import (
    MAX_BATCH, MAX_IMAGE_SIDE, MAX_PER_CLASS, MAX_WORKERS, check_bool, check_choice, check_int, check_name,
    check_optional, check_positive_int,
)

from .split import SplitSpec

__all__ = ["DataConfig", "NORMALIZATIONS"]

NORMALIZATIONS = ("auto", "dataset", "imagenet")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, split protocol and loader options; checked on construction (the dataset name by the registry's
    user, :func:`nhllib.data.load_data`, which knows the registry)."""

    dataset: str = "fashion-mnist"
    data_dir: str = "data"  # datasets under <data_dir>/<dataset>/, splits under <data_dir>/splits/
    query_per_class: int = 100
    train_per_class: int = 500
    val_per_class: int = 100
    database_per_class: int | None = None  # None: every remaining image
    split_seed: int = 0  # the split is shared by every run of a study, whatever its training seed
    image_size: int | None = None  # pooled sets: resize to this side (None: native); list files: crop (224)
    batch_size: int = 64
    eval_batch_size: int = 1024
    download: bool = False  # let torchvision download Fashion-MNIST / CIFAR-10 into data_dir when missing
    root: str | None = None  # folder holding the dataset's files, looked at first
    resize_size: int | None = None  # list files: side of the Resize before cropping (image_size * 256 / 224)
    normalization: str = "auto"  # pooled sets: dataset | imagenet | auto (imagenet when image_size is set)
    val_fraction: float = 0.1  # list files: share of train.txt held out (seeded) for validation
    num_workers: int = 0  # list files: DataLoader worker processes

    def __post_init__(self) -> None:
        check_name("dataset", self.dataset)
        if isinstance(self.data_dir, bool) or not isinstance(self.data_dir, (str, Path)) or not str(self.data_dir):
            raise ValueError(f"data_dir must be a non-empty path, got {self.data_dir!r}")
        if self.root is not None and not isinstance(self.root, (str, Path)):
            raise ValueError(f"root must be a path or None, got {self.root!r}")
        check_positive_int("query_per_class", self.query_per_class, maximum=MAX_PER_CLASS)
        check_positive_int("train_per_class", self.train_per_class, maximum=MAX_PER_CLASS)
        check_int("val_per_class", self.val_per_class, maximum=MAX_PER_CLASS)
        check_optional(check_positive_int, "database_per_class", self.database_per_class, maximum=MAX_PER_CLASS)
        check_int("split_seed", self.split_seed, maximum=2**32 - 1)  # as RunConfig's seed (MAX_SEED)
        check_optional(check_positive_int, "image_size", self.image_size, maximum=MAX_IMAGE_SIDE)
        check_optional(check_positive_int, "resize_size", self.resize_size, maximum=MAX_IMAGE_SIDE)
        check_positive_int("batch_size", self.batch_size, maximum=MAX_BATCH)
        check_positive_int("eval_batch_size", self.eval_batch_size, maximum=MAX_BATCH)
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1), got {self.val_fraction!r}")
        check_int("num_workers", self.num_workers, maximum=MAX_WORKERS)
        check_bool("download", self.download)

    @property
    def split(self) -> SplitSpec:
        """The per-class counts of the split protocol."""
        return SplitSpec(self.query_per_class, self.train_per_class, self.val_per_class, self.database_per_class)
