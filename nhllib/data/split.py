"""Seeded, saved query / train / validation / database splits of a single-label image pool.

The protocol (the CIFAR-10 one of the deep-hashing literature, plus a validation set): per class draw
``query_per_class`` queries, ``train_per_class`` training images and ``val_per_class`` validation images;
the remaining images of the class form the database (or ``database_per_class`` of them). Validation images
are excluded from the database, so model selection never touches the query set or the database.

A split is a pure function of (pool labels, spec, seed): each class has its own ``numpy.random.Generator``
seeded with ``(seed, 0, class)``, so a class's draw does not depend on the other classes. Inside each split the
indices are put in a seeded random order (generator ``(seed, 1)``) rather than class by class, because a
class-ordered database biases tie-breaking in Hamming ranking (docs/evaluation.md §3). The split is saved to
``<data_dir>/splits/<dataset>_<spec.tag>_seed<seed>.npz`` and later calls re-load (and check) that file, so
every run of a study sees the same split even if numpy's generators change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("query", "train", "validation", "database")


@dataclass(frozen=True)
class SplitSpec:
    """Per-class counts of the split protocol (``database_per_class=None`` means "all the rest")."""

    query_per_class: int = 100
    train_per_class: int = 500
    val_per_class: int = 100
    database_per_class: int | None = None

    def __post_init__(self) -> None:
        for field, minimum in (("query_per_class", 1), ("train_per_class", 1), ("val_per_class", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"SplitSpec.{field} must be an int >= {minimum}, got {value!r}")
        d = self.database_per_class
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ValueError(f"SplitSpec.database_per_class must be None or an int >= 1, got {d!r}")

    @property
    def tag(self) -> str:
        """Short file-name tag, e.g. ``q100-t500-v100-dall``."""
        d = "all" if self.database_per_class is None else str(self.database_per_class)
        return f"q{self.query_per_class}-t{self.train_per_class}-v{self.val_per_class}-d{d}"


@dataclass(frozen=True)
class Split:
    """Pool indices (int64, disjoint) of each part of a split."""

    query: np.ndarray
    train: np.ndarray
    validation: np.ndarray
    database: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {name: int(len(getattr(self, name))) for name in SPLIT_NAMES}


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a non-empty 1-D integer array of class ids (single-label data), "
            f"got shape {labels.shape} and dtype {labels.dtype}"
        )
    return labels.astype(np.int64, copy=False)


def make_split(labels: np.ndarray, spec: SplitSpec, seed: int) -> Split:
    """Draw a split of a single-label pool; a pure function of ``(labels, spec, seed)``.

    Raises
    ------
    ValueError
        If a class has too few images for ``spec`` (the database of every class must keep at least one).
    """
    labels = _check_labels(labels)
    _check_seed(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    fixed = spec.query_per_class + spec.train_per_class + spec.val_per_class
    needed = fixed + (spec.database_per_class or 1)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < needed:
            raise ValueError(
                f"class {int(cls)} has {len(members)} images, but the split spec {spec} needs at least "
                f"{needed} ({fixed} for query/train/validation and "
                f"{spec.database_per_class or 1} for the database)"
            )
        perm = np.random.default_rng([int(seed), 0, int(cls)]).permutation(members)
        q, t = spec.query_per_class, spec.train_per_class
        parts["query"].append(perm[:q])
        parts["train"].append(perm[q : q + t])
        parts["validation"].append(perm[q + t : fixed])
        end = None if spec.database_per_class is None else fixed + spec.database_per_class
        parts["database"].append(perm[fixed:end])
    order_rng = np.random.default_rng([int(seed), 1])
    return Split(**{name: order_rng.permutation(np.concatenate(arrs)).astype(np.int64) for name, arrs in parts.items()})


def split_path(data_dir: str | Path, dataset: str, spec: SplitSpec, seed: int) -> Path:
    """Where the split of ``dataset`` for ``(spec, seed)`` is saved."""
    return Path(data_dir) / "splits" / f"{dataset}_{spec.tag}_seed{seed}.npz"


def labels_digest(labels: np.ndarray) -> str:
    """SHA-256 of the label array: ties a saved split to the pool it was drawn from."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def save_index_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write index arrays plus JSON metadata to ``path`` (.npz) atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: np.asarray(a, dtype=np.int64) for name, a in arrays.items()}
    payload["meta_json"] = np.array(json.dumps(meta, sort_keys=True))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_index_arrays(path: str | Path, names: tuple[str, ...], expected_meta: dict) -> dict[str, np.ndarray]:
    """Read arrays saved by :func:`save_index_arrays` and check their metadata.

    Raises
    ------
    ValueError
        If the file lacks an array or its metadata differs from ``expected_meta`` (delete the file to redraw).
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as saved:
        missing = [n for n in (*names, "meta_json") if n not in saved.files]
        if missing:
            raise ValueError(f"{path}: saved split lacks {missing}; delete the file to redraw the split")
        meta = json.loads(str(saved["meta_json"]))
        arrays = {n: saved[n].astype(np.int64) for n in names}
    expected = json.loads(json.dumps(expected_meta, sort_keys=True))  # same normalisation as saving
    diff = sorted(k for k in set(expected) | set(meta) if expected.get(k) != meta.get(k))
    if diff:
        detail = ", ".join(f"{k}: saved {meta.get(k)!r} vs expected {expected.get(k)!r}" for k in diff)
        raise ValueError(f"{path}: saved split does not match this request ({detail}); delete the file to redraw")
    return arrays


def _check_split(split: Split, pool_size: int, path: Path) -> None:
    seen = np.concatenate([getattr(split, n) for n in SPLIT_NAMES])
    if seen.size and (seen.min() < 0 or seen.max() >= pool_size):
        raise ValueError(f"{path}: split indices out of range for a pool of {pool_size} images")
    if np.unique(seen).size != seen.size:
        raise ValueError(f"{path}: query/train/validation/database indices overlap")


def load_or_make_split(
    dataset: str, labels: np.ndarray, spec: SplitSpec, seed: int, data_dir: str | Path
) -> tuple[Split, Path]:
    """Return the saved split of ``dataset`` for ``(spec, seed)``, drawing and saving it on first use.

    A saved split is checked against the request (dataset, spec, seed, pool size, label digest), for range
    and disjointness; it is also compared with a fresh draw, and a difference (e.g. after a numpy upgrade) is
    logged as a warning while the saved split is kept.
    """
    labels = _check_labels(labels)
    path = split_path(data_dir, dataset, spec, seed)
    meta = {
        "dataset": dataset,
        "spec": asdict(spec),
        "seed": int(seed),
        "pool_size": int(labels.size),
        "labels_sha256": labels_digest(labels),
    }
    fresh = make_split(labels, spec, seed)
    if path.exists():
        split = Split(**load_index_arrays(path, SPLIT_NAMES, meta))
        _check_split(split, labels.size, path)
        if any(not np.array_equal(getattr(split, n), getattr(fresh, n)) for n in SPLIT_NAMES):
            logger.warning("%s differs from a fresh draw with this numpy; keeping the saved split", path)
        logger.info("loaded split %s %s", path, split.sizes())
        return split, path
    save_index_arrays(path, {n: getattr(fresh, n) for n in SPLIT_NAMES}, meta)
    logger.info("saved new split %s %s", path, fresh.sizes())
    return fresh, path
