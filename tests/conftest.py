"""Fixtures shared by every test folder: a tiny synthetic dataset and a tiny run configuration.

The unit suite (``-m "not slow"``) never reads the real Fashion-MNIST: :func:`tiny_data` writes a small synthetic
stand-in in the IDX format Fashion-MNIST ships in (10 classes, 28x28 uint8, one bright block per class plus noise,
so a model learns it in a few steps) and points ``NHL_DATA_DIR`` at it, which the loader reads before any other
place (nhllib.data.pools). Checked on a machine without the data by hiding it:
``NHL_SYSTEM_FASHION_MNIST_DIR=<empty folder> python -m pytest -m "not slow"``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

#: Images per class in the synthetic train and test files (the pool is their union: 70 per class).
SYNTHETIC_PER_CLASS = {"train": 60, "t10k": 10}
SYNTHETIC_CLASSES = 10

#: The tiny run every training test starts from (overrides per test); sized for the synthetic pool.
TINY_RUN = dict(study="t", query_per_class=3, train_per_class=12, val_per_class=3, database_per_class=20, epochs=2,
                eval_every=1, patience=0, batch_size=16, eval_batch_size=128, device="cpu")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships it: magic (0, 0, type 0x08 = uint8, ndim), big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_synthetic_fashion_mnist(folder: Path, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX files in ``folder``, with synthetic images; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, per_class in SYNTHETIC_PER_CLASS.items():
        labels = np.repeat(np.arange(SYNTHETIC_CLASSES), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row: 12 + 10 * row, 1 + 5 * col: 6 + 5 * col] += 180
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def synthetic_fashion_dir(tmp_path_factory) -> Path:
    return write_synthetic_fashion_mnist(tmp_path_factory.mktemp("synthetic") / "fashion-mnist")


@pytest.fixture()
def tiny_data(synthetic_fashion_dir, monkeypatch) -> Path:
    """The synthetic Fashion-MNIST, found through ``NHL_DATA_DIR`` (by this process and its subprocesses)."""
    monkeypatch.setenv("NHL_DATA_DIR", str(synthetic_fashion_dir))
    return synthetic_fashion_dir


@pytest.fixture()
def tiny_config(tiny_data, tmp_path):
    """``tiny_config(**overrides)``: a :class:`RunConfig` of :data:`TINY_RUN` on the synthetic data, with its
    splits under this test's ``tmp_path``."""
    from nhllib.training.config import RunConfig

    def make(**overrides):
        return RunConfig.from_dict({**TINY_RUN, "data_dir": str(tmp_path / "data"), **overrides})

    return make


@pytest.fixture(autouse=True)
def _unit_tests_read_synthetic_data(request, synthetic_fashion_dir, monkeypatch):
    """Every unit test (not marked ``slow``) finds the synthetic Fashion-MNIST first, so the unit suite gives the
    same result on a machine with or without the real data. A test about missing data removes ``NHL_DATA_DIR``
    itself; the slow notebook runs read the real data, as a user's run does."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("NHL_DATA_DIR", str(synthetic_fashion_dir))
