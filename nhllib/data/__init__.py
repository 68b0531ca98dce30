"""Datasets, seeded splits and fast batching for deep hashing.

- :class:`DataConfig` -> :func:`load_data` (or a name -> :func:`load_hashing_data`) -> :class:`HashingData`:
  train / validation / query / database loaders.
- :class:`SplitSpec`, :func:`make_split`, :func:`load_or_make_split`: the seeded, saved per-class protocol.
- :class:`InMemoryLoader`, :class:`BatchTransform`: whole-batch uint8 -> float batching for small images.
- :func:`load_fashion_mnist`, :func:`load_cifar10`: pooled train + test images.
- :func:`pretraining_pool`: the images in none of the split's parts, under a label set (pretraining).
- :func:`parse_list_file`, :class:`ListFileDataset`: the train.txt / test.txt / database.txt format.
"""

from .config import DataConfig
from .hashing_data import DATASETS, HashingData, load_data, load_hashing_data
from .idx import read_idx
from .listfile import ListFile, ListFileDataset, check_images_exist, holdout_split, list_file_transform, parse_list_file
from .loader import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, InMemoryLoader, channel_stats, one_hot
from .pretrain_pool import COARSE_GROUPS, PretrainPool, pretraining_pool
from .pools import DATA_DIR_ENV, DEBIAN_FASHION_MNIST_DIR, ImagePool, load_cifar10, load_fashion_mnist
from .split import Split, SplitSpec, load_or_make_split, make_split, split_path

__all__ = [
    "DATASETS", "DATA_DIR_ENV", "DEBIAN_FASHION_MNIST_DIR", "IMAGENET_MEAN", "IMAGENET_STD",
    "BatchTransform", "COARSE_GROUPS", "DataConfig", "HashingData", "ImagePool", "InMemoryLoader", "ListFile", "ListFileDataset",
    "Split", "SplitSpec",
    "channel_stats", "check_images_exist", "holdout_split", "list_file_transform", "load_cifar10",
    "load_data", "load_fashion_mnist", "load_hashing_data", "load_or_make_split", "make_split", "one_hot",
    "parse_list_file", "PretrainPool", "pretraining_pool", "read_idx", "split_path",
]
