"""List-file datasets of the deep-hashing community (HashNet / DeepHash-pytorch: ImageNet-100, MS-COCO, NUS-WIDE).

A root folder holds ``train.txt``, ``test.txt`` (the queries) and ``database.txt``. Each non-blank line is an
image path relative to the root, then the label as space-separated 0/1 values (one-hot for single-label sets,
multi-hot for COCO and NUS-WIDE)::

    images/n01440764/n01440764_10026.JPEG 1 0 0 0 ... 0

Paths may not contain spaces (the reference format splits on whitespace). Blank lines are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .loader import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

LIST_FILES = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}


@dataclass(frozen=True)
class ListFile:
    """Parsed list file: image paths (relative to the root), multi-hot labels (N, C), source line numbers."""

    path: Path
    images: tuple[str, ...]
    labels: np.ndarray
    line_numbers: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])


def parse_list_file(path: str | Path) -> ListFile:
    """Parse one list file.

    Raises
    ------
    FileNotFoundError
        If the list file does not exist.
    ValueError
        For a line with fewer than two fields, a label value other than 0/1, label widths that differ
        between lines, or a file without entries; the message names the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    images: list[str] = []
    rows: list[list[float]] = []
    line_numbers: list[int] = []
    first_width_line = 0
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(
                    f"{path}:{number}: expected an image path followed by 0/1 label values, got {len(fields)} field(s)"
                )
            row = []
            for position, token in enumerate(fields[1:], start=1):
                try:
                    value = float(token)
                except ValueError:
                    value = float("nan")
                if value not in (0.0, 1.0):
                    raise ValueError(
                        f"{path}:{number}: label value {position} is {token!r}; label values must be 0 or 1"
                    )
                row.append(value)
            if rows and len(row) != len(rows[0]):
                raise ValueError(
                    f"{path}:{number}: {len(row)} label values, but line {first_width_line} has {len(rows[0])}"
                )
            if not rows:
                first_width_line = number
            images.append(fields[0])
            rows.append(row)
            line_numbers.append(number)
    if not rows:
        raise ValueError(f"{path}: no entries (expected lines of an image path followed by 0/1 label values)")
    return ListFile(path, tuple(images), np.asarray(rows, dtype=np.float32), tuple(line_numbers))


def check_images_exist(list_file: ListFile, root: str | Path, entries: np.ndarray | None = None) -> None:
    """Raise FileNotFoundError naming the list file and line of the first missing image (and the count).

    ``entries`` restricts the check to those entry positions (default: every entry).
    """
    root = Path(root)
    positions = range(len(list_file.images)) if entries is None else (int(e) for e in entries)
    missing = [
        (list_file.line_numbers[e], list_file.images[e])
        for e in positions
        if not (root / list_file.images[e]).is_file()
    ]
    if missing:
        number, image = missing[0]
        raise FileNotFoundError(
            f"{list_file.path}:{number}: image file not found: {root / image} "
            f"({len(missing)} listed images missing in {list_file.path.name})"
        )


def list_file_transform(
    train: bool,
    image_size: int = 224,
    resize_size: int = 256,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Callable[[Image.Image], Tensor]:
    """The reference transforms: Resize(resize) then RandomCrop + horizontal flip (train) or CenterCrop (eval)."""
    from torchvision import transforms as T  # deferred: only list-file datasets need torchvision transforms

    if not 0 < image_size <= resize_size:
        raise ValueError(f"need 0 < image_size <= resize_size, got image_size={image_size}, resize_size={resize_size}")
    crop = [T.RandomCrop(image_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(image_size)]
    return T.Compose([T.Resize(resize_size), *crop, T.ToTensor(), T.Normalize(mean, std)])


def sample_seed(augment_seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch: a function of these three numbers alone.

    Not of the rank, the worker or the position in the batch, so one process and N data-parallel ranks crop
    and flip every image alike (the global RNG of a rank or a worker differs from one process's).
    """
    words = [int(augment_seed) % 2**63, int(epoch), int(index)]
    if words[1] < 0 or words[2] < 0:
        raise ValueError(f"epoch and index must be non-negative, got epoch={epoch}, index={index}")
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] % 2**63)


class ListFileDataset(Dataset):
    """Images of a list file (or a subset of its entries) as ``(image, y float multi-hot, index)``.

    ``index`` is the position within this dataset (0..len-1), i.e. within the split it represents. A key may
    also be ``(epoch, index)`` (what :class:`~nhllib.training.distributed.GlobalOrderBatchSampler` yields with
    ``with_epoch=True``): with an ``augment_seed``, the transform then runs under the torch seed
    :func:`sample_seed` gives, so a sample's random crop and flip depend on (seed, epoch, index) only.
    """

    def __init__(
        self,
        list_file: ListFile,
        root: str | Path,
        transform: Callable[[Image.Image], Tensor],
        entries: np.ndarray | None = None,
        check_files: bool = True,
        augment_seed: int | None = None,
    ) -> None:
        self.list_file = list_file
        self.root = Path(root)
        self.transform = transform
        self.augment_seed = augment_seed
        self.entries = np.arange(len(list_file.images)) if entries is None else np.asarray(entries, dtype=np.int64)
        if self.entries.size and (self.entries.min() < 0 or self.entries.max() >= len(list_file.images)):
            raise ValueError(f"entries must index the {len(list_file.images)} lines of {list_file.path}")
        self.labels = torch.from_numpy(list_file.labels[self.entries])
        if check_files:
            check_images_exist(list_file, self.root, self.entries)

    def __len__(self) -> int:
        return int(self.entries.size)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        index = int(index)
        entry = int(self.entries[index])
        path = self.root / self.list_file.images[entry]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # decodes now: a truncated or corrupt file fails here
        except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            line = self.list_file.line_numbers[entry]
            raise ValueError(f"{path} (line {line} of {self.list_file.path}): not a readable image "
                             f"({type(err).__name__}: {err}); replace the file or drop its line") from None
        if epoch is None or self.augment_seed is None:
            image = self.transform(rgb)
        else:
            # torchvision's random transforms draw from torch's global generator: seed it for this sample only.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.augment_seed, epoch, index))
                image = self.transform(rgb)
        return image, self.labels[index], index


def holdout_split(num_items: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) positions: ``round(val_fraction * num_items)`` items go to validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    num_val = int(round(val_fraction * num_items))
    if num_items - num_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training item out of {num_items}")
    perm = np.random.default_rng([int(seed), 2]).permutation(num_items)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])
