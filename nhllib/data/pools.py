"""Single-label image pools held in memory: Fashion-MNIST (embedded default) and CIFAR-10.

A pool is the union of a dataset's official train and test parts (70,000 and 60,000 images); the hashing
protocol re-splits it (:mod:`nhllib.data.split`). Where each dataset is looked for, in order:

1. ``root=`` given by the caller, then the folder named by the environment variable ``NHL_DATA_DIR``
   (the files directly in it, or in its ``fashion-mnist/`` / ``cifar10/`` sub-folder);
2. ``<data_dir>/fashion-mnist/`` or ``<data_dir>/cifar10/`` of the project;
3. Fashion-MNIST only: the Debian package ``dataset-fashion-mnist`` (:data:`DEBIAN_FASHION_MNIST_DIR`; the
   environment variable ``NHL_SYSTEM_FASHION_MNIST_DIR`` replaces that folder, e.g. to hide it in a test);
4. with ``download=True``: a torchvision download into ``<data_dir>/<dataset>/``.

A folder also matches when it holds torchvision's layout (``FashionMNIST/raw/``, ``cifar-10-batches-py/``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .idx import read_idx

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "NHL_DATA_DIR"
SYSTEM_DIR_ENV = "NHL_SYSTEM_FASHION_MNIST_DIR"
#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the original IDX files
#: (``$NHL_SYSTEM_FASHION_MNIST_DIR`` replaces it, read once at import).
DEBIAN_FASHION_MNIST_DIR = Path(os.environ.get(SYSTEM_DIR_ENV) or "/usr/share/datasets/fashion-mnist")

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class ImagePool:
    """All images of a single-label dataset: uint8 (N, C, H, W) images, int64 (N,) class ids."""

    images: Tensor
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"pool images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"pool labels must have shape ({self.images.shape[0]},), got {self.labels.shape}")


def _env_dirs(subfolder: str) -> list[Path]:
    env = os.environ.get(DATA_DIR_ENV)
    return [Path(env), Path(env) / subfolder] if env else []


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` or its torchvision layout ``FashionMNIST/raw``, else None."""
    for candidate in (folder, folder / "FashionMNIST" / "raw"):
        found = {key: _idx_file(candidate, stem) for key, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _read_fashion(files: dict[str, Path]) -> ImagePool:
    parts = {key: read_idx(files[key]) for key in ("train_images", "test_images")}
    for key, part in parts.items():  # checked per file: np.concatenate would fail naming neither
        if part.ndim != 3 or part.shape[1:] != (28, 28) or part.dtype != np.uint8:
            raise ValueError(f"{files[key]}: holds images of shape {part.shape[1:]} ({part.dtype}); Fashion-MNIST "
                             f"images are uint8 28x28 (IDX shape (N, 28, 28)); replace the file")
    images = np.concatenate([parts["train_images"], parts["test_images"]])
    label_parts = [read_idx(files["train_labels"]), read_idx(files["test_labels"])]
    labels = np.concatenate(label_parts).astype(np.int64)
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(
            f"{files['train_images'].parent}: IDX files hold images {images.shape} {images.dtype} and "
            f"{len(labels)} labels; expected uint8 (N, 28, 28) images with one label each"
        )
    classes = len(FASHION_MNIST_CLASSES)
    for key, part in zip(("train_labels", "test_labels"), label_parts):
        # checked here, per file: a bad label would otherwise surface later as a split error naming no file
        bad = np.flatnonzero(part.astype(np.int64) >= classes)
        if bad.size:
            raise ValueError(f"{files[key]}: label record {int(bad[0])} is {int(part[bad[0]])}; Fashion-MNIST "
                             f"labels are 0..{classes - 1} ({bad.size} bad record(s)); replace the file")
    return ImagePool(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=labels,
        num_classes=len(FASHION_MNIST_CLASSES),
        class_names=FASHION_MNIST_CLASSES,
        source=str(files["train_images"].parent),
    )


def load_fashion_mnist(
    root: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    system_dir: str | Path | None = DEBIAN_FASHION_MNIST_DIR,
) -> ImagePool:
    """Load Fashion-MNIST train + test (70,000 images, uint8 (N, 1, 28, 28)) as one pool.

    Raises
    ------
    FileNotFoundError
        If no location holds the files and the download is off or fails; the message lists every option.
    """
    candidates: list[tuple[str, Path]] = []
    if root is not None:
        candidates.append(("root", Path(root)))
    candidates += [(f"${DATA_DIR_ENV}", d) for d in _env_dirs("fashion-mnist")]
    if data_dir is not None:
        candidates.append(("data_dir", Path(data_dir) / "fashion-mnist"))
    if system_dir is not None:
        candidates.append(("Debian package", Path(system_dir)))
    for label, folder in candidates:
        files = _fashion_files(folder)
        if files is not None:
            if root is not None and label != "root":
                logger.warning("Fashion-MNIST not found under root=%s; using %s", root, folder)
            logger.info("loading Fashion-MNIST from %s (%s)", folder, label)
            return _read_fashion(files)

    failure = "download=False"
    if download and data_dir is not None:
        target = Path(data_dir) / "fashion-mnist"
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(root=str(target), train=train, download=True)
            files = _fashion_files(target)
            if files is not None:
                return _read_fashion(files)
            failure = f"the download into {target} finished but the IDX files are not there"
        except Exception as exc:  # network, checksum or disk errors: all mean "not available"
            failure = f"the torchvision download into {target} failed: {type(exc).__name__}: {exc}"
    elif download:
        failure = "download=True needs data_dir to download into"
    looked = "; ".join(f"{label}: {folder}" for label, folder in candidates) or "no folder given"
    names = ", ".join(f"{stem}[.gz]" for stem in FASHION_MNIST_FILES.values())
    raise FileNotFoundError(
        f"Fashion-MNIST not found ({names}). Looked in {looked}; {failure}. Options: pass root= or set "
        f"{DATA_DIR_ENV} to a folder holding the four IDX files; copy them to <data_dir>/fashion-mnist/; "
        f"install the Debian package (`apt-get install dataset-fashion-mnist`, files under "
        f"{DEBIAN_FASHION_MNIST_DIR}); or pass download=True to download them through torchvision into "
        f"<data_dir>/fashion-mnist/ (needs internet once)."
    )


def _cifar_pool(dataset_cls: type, folder: Path, download: bool) -> ImagePool:
    parts = [dataset_cls(root=str(folder), train=train, download=download) for train in (True, False)]
    images = np.concatenate([np.asarray(p.data, dtype=np.uint8) for p in parts])  # (N, 32, 32, 3)
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    classes = tuple(getattr(parts[0], "classes", ())) or tuple(str(c) for c in range(int(labels.max()) + 1))
    return ImagePool(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=labels,
        num_classes=len(classes),
        class_names=classes,
        source=str(folder),
    )


def load_cifar10(
    root: str | Path | None = None, data_dir: str | Path | None = None, download: bool = False
) -> ImagePool:
    """Load CIFAR-10 train + test (60,000 images, uint8 (N, 3, 32, 32)) through torchvision as one pool.

    Raises
    ------
    FileNotFoundError
        If no location holds ``cifar-10-batches-py`` and the download is off or fails.
    """
    from torchvision import datasets

    candidates: list[tuple[str, Path]] = []
    if root is not None:
        candidates.append(("root", Path(root)))
    candidates += [(f"${DATA_DIR_ENV}", d) for d in _env_dirs("cifar10")]
    if data_dir is not None:
        candidates.append(("data_dir", Path(data_dir) / "cifar10"))
    errors: list[str] = []
    for label, folder in candidates:
        if (folder / "cifar-10-batches-py").is_dir():
            try:
                pool = _cifar_pool(datasets.CIFAR10, folder, download=False)
            except RuntimeError as exc:  # torchvision's "not found or corrupted" (checksum) error
                errors.append(f"{folder}: {exc}")
                continue
            logger.info("loaded CIFAR-10 from %s (%s)", folder, label)
            return pool
    failure = "download=False"
    if download and data_dir is not None:
        target = Path(data_dir) / "cifar10"
        try:
            return _cifar_pool(datasets.CIFAR10, target, download=True)
        except Exception as exc:  # network, checksum or disk errors
            failure = f"the torchvision download into {target} failed: {type(exc).__name__}: {exc}"
    elif download:
        failure = "download=True needs data_dir to download into"
    looked = "; ".join(f"{label}: {folder}" for label, folder in candidates) or "no folder given"
    extra = f" Unreadable copies: {'; '.join(errors)}." if errors else ""
    raise FileNotFoundError(
        f"CIFAR-10 not found (a cifar-10-batches-py/ folder). Looked in {looked}; {failure}.{extra} Options: pass "
        f"root= or set {DATA_DIR_ENV} to a folder containing cifar-10-batches-py/; put it under "
        f"<data_dir>/cifar10/; or pass download=True to download it through torchvision into <data_dir>/cifar10/ "
        f"(needs internet once)."
    )
