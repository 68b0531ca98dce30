"""Tests for nhllib.data: splits, in-memory batching, Fashion-MNIST / CIFAR-10 pools, list-file datasets."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nhllib import data as D
from nhllib.data import pools

# ---------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file by hand (uint8 payload), gzip-compressed when the name ends in .gz."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_fake_fashion(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    train_y = np.arange(n_train) % 10
    test_y = np.arange(n_test) % 10
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", train_x)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", train_y)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", test_x)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", test_y)
    return np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])


def toy_labels() -> np.ndarray:
    """Three classes of 20, 25 and 30 items in a shuffled order."""
    labels = np.array([0] * 20 + [1] * 25 + [2] * 30)
    return np.random.default_rng(123).permutation(labels)


SMALL = D.SplitSpec(query_per_class=2, train_per_class=3, val_per_class=1)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------- split


def test_split_counts_per_class_and_disjoint():
    labels = toy_labels()
    split = D.make_split(labels, SMALL, seed=0)
    expected = {"query": 2, "train": 3, "validation": 1}
    for part, per_class in expected.items():
        idx = getattr(split, part)
        for cls in range(3):
            assert sum(1 for i in idx if labels[i] == cls) == per_class, (part, cls)
    # database: all the rest of each class
    sizes_of_class = {0: 20, 1: 25, 2: 30}
    for cls, size in sizes_of_class.items():
        assert sum(1 for i in split.database if labels[i] == cls) == size - 6
    everything = [int(i) for part in ("query", "train", "validation", "database") for i in getattr(split, part)]
    assert len(everything) == len(set(everything)) == len(labels)
    assert split.sizes() == {"query": 6, "train": 9, "validation": 3, "database": 75 - 18}


def test_split_database_per_class_and_not_class_ordered():
    labels = toy_labels()
    spec = D.SplitSpec(query_per_class=2, train_per_class=3, val_per_class=0, database_per_class=4)
    split = D.make_split(labels, spec, seed=1)
    assert len(split.validation) == 0
    for cls in range(3):
        assert sum(1 for i in split.database if labels[i] == cls) == 4
    db_classes = labels[split.database]
    assert any(db_classes[k] > db_classes[k + 1] for k in range(len(db_classes) - 1))  # not sorted by class


def test_split_is_deterministic_and_seed_dependent():
    labels = toy_labels()
    a, b, c = (D.make_split(labels, SMALL, seed=s) for s in (5, 5, 6))
    for part in ("query", "train", "validation", "database"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert any(not np.array_equal(getattr(a, p), getattr(c, p)) for p in ("query", "train", "validation"))


def test_split_too_few_images_names_the_class():
    labels = np.array([0] * 10 + [1] * 4)
    with pytest.raises(ValueError, match="class 1 has 4 images"):
        D.make_split(labels, D.SplitSpec(query_per_class=2, train_per_class=2, val_per_class=0), seed=0)


@pytest.mark.parametrize("kwargs", [{"query_per_class": 0}, {"train_per_class": -1}, {"val_per_class": 1.5},
                                    {"database_per_class": 0}])
def test_split_spec_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        D.SplitSpec(**kwargs)


def test_split_rejects_multi_label_and_negative_seed():
    with pytest.raises(ValueError, match="1-D integer"):
        D.make_split(np.zeros((5, 2), dtype=np.int64), SMALL, seed=0)
    with pytest.raises(ValueError, match="seed"):
        D.make_split(toy_labels(), SMALL, seed=-1)


def test_saved_split_same_seed_same_file_and_reload(tmp_path):
    labels = toy_labels()
    s1, p1 = D.load_or_make_split("toy", labels, SMALL, 3, tmp_path / "a")
    s2, p2 = D.load_or_make_split("toy", labels, SMALL, 3, tmp_path / "b")
    assert p1.name == p2.name == f"toy_{SMALL.tag}_seed3.npz"
    assert p1 == D.split_path(tmp_path / "a", "toy", SMALL, 3) and p1.exists()
    with np.load(p1) as f1, np.load(p2) as f2:
        assert sorted(f1.files) == sorted(f2.files)
        for key in f1.files:
            assert np.array_equal(f1[key], f2[key]), key
    assert [p.name for p in p1.parent.iterdir()] == [p1.name]  # no temp file left behind
    # a later call re-loads the saved file, even if a fresh draw would differ
    arrays, meta = _read_saved(p1)
    arrays["query"], arrays["train"] = s1.train[: len(s1.query)], np.concatenate([s1.query, s1.train[len(s1.query):]])
    D.split.save_index_arrays(p1, arrays, meta)
    again, _ = D.load_or_make_split("toy", labels, SMALL, 3, tmp_path / "a")
    assert np.array_equal(again.query, arrays["query"]) and not np.array_equal(again.query, s1.query)
    other, p3 = D.load_or_make_split("toy", labels, SMALL, 4, tmp_path / "a")
    assert p3 != p1 and not np.array_equal(other.query, s2.query)


def _read_saved(path: Path) -> tuple[dict, dict]:
    with np.load(path) as saved:
        arrays = {k: saved[k].copy() for k in ("query", "train", "validation", "database")}
        meta = json.loads(str(saved["meta_json"]))
    return arrays, meta


def test_saved_split_is_checked_against_the_pool(tmp_path):
    labels = toy_labels()
    D.load_or_make_split("toy", labels, SMALL, 0, tmp_path)
    changed = labels.copy()
    other = int(np.flatnonzero(labels != labels[0])[0])
    changed[0], changed[other] = labels[other], labels[0]  # same class counts, different pool
    with pytest.raises(ValueError, match="does not match.*labels_sha256"):
        D.load_or_make_split("toy", changed, SMALL, 0, tmp_path)


def test_saved_split_with_overlap_is_rejected(tmp_path):
    labels = toy_labels()
    _, path = D.load_or_make_split("toy", labels, SMALL, 0, tmp_path)
    arrays, meta = _read_saved(path)
    arrays["query"][0] = arrays["train"][0]
    D.split.save_index_arrays(path, arrays, meta)
    with pytest.raises(ValueError, match="overlap"):
        D.load_or_make_split("toy", labels, SMALL, 0, tmp_path)


# ---------------------------------------------------------------- loader


def make_images(n: int = 10, c: int = 1, size: int = 4) -> torch.Tensor:
    return torch.arange(n * c * size * size, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, c, size, size)


def test_loader_shapes_dtypes_and_values():
    images = make_images(10)
    labels = D.one_hot([i % 3 for i in range(10)], 3)
    loader = D.InMemoryLoader(images, labels, batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    for x, y, index in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 4, 4)
        assert y.dtype == torch.float32 and y.shape[1] == 3
        assert index.dtype == torch.long
        for row, i in enumerate(index.tolist()):
            assert y[row].argmax().item() == i % 3
            for p, value in enumerate(images[i].flatten().tolist()):
                assert x[row].flatten()[p].item() == pytest.approx(value / 255.0)
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(10))


def test_loader_drop_last_and_bad_input():
    images, labels = make_images(10), D.one_hot([0] * 10, 2)
    loader = D.InMemoryLoader(images, labels, batch_size=4, drop_last=True)
    assert len(loader) == 2 and sum(len(x) for x, _, _ in loader) == 8
    with pytest.raises(TypeError, match="uint8"):
        D.InMemoryLoader(images.float(), labels, 4)
    with pytest.raises(ValueError, match="labels"):
        D.InMemoryLoader(images, labels[:5], 4)
    with pytest.raises(ValueError, match="batch_size"):
        D.InMemoryLoader(images, labels, 0)


def test_loader_shuffle_is_seeded_per_epoch():
    images, labels = make_images(12), D.one_hot([0] * 12, 1)

    def epoch_orders(loader, epochs=3):
        return [torch.cat([i for _, _, i in loader]).tolist() for _ in range(epochs)]

    a = epoch_orders(D.InMemoryLoader(images, labels, 5, shuffle=True, seed=7))
    b = epoch_orders(D.InMemoryLoader(images, labels, 5, shuffle=True, seed=7))
    c = epoch_orders(D.InMemoryLoader(images, labels, 5, shuffle=True, seed=8))
    assert a == b
    assert all(sorted(order) == list(range(12)) for order in a)
    assert a[0] != a[1] and a != c
    resumed = D.InMemoryLoader(images, labels, 5, shuffle=True, seed=7)
    resumed.set_epoch(2)
    assert epoch_orders(resumed, 1)[0] == a[2]
    # epoch e uses a generator seeded with seed + e
    assert a[1] == torch.randperm(12, generator=torch.Generator().manual_seed(8)).tolist()


def test_batch_transform_matches_elementwise_oracle():
    images = make_images(3, c=1, size=2)
    tf = D.BatchTransform(mean=(0.5, 0.25, 0.1), std=(0.2, 0.5, 1.0), channels=3)
    x = tf(images)
    assert x.shape == (3, 3, 2, 2)
    for n in range(3):
        for ch, (m, s) in enumerate(zip((0.5, 0.25, 0.1), (0.2, 0.5, 1.0), strict=True)):
            for i in range(2):
                for j in range(2):
                    expect = (images[n, 0, i, j].item() / 255.0 - m) / s
                    assert x[n, ch, i, j].item() == pytest.approx(expect, abs=1e-5)
    resized = D.BatchTransform((0.0,), (1.0,), size=6)(torch.full((2, 1, 3, 3), 51, dtype=torch.uint8))
    assert resized.shape == (2, 1, 6, 6) and torch.allclose(resized, torch.full_like(resized, 0.2))
    with pytest.raises(ValueError, match="channels"):
        D.BatchTransform((0.0,), (1.0,))(make_images(2, c=3))


def test_channel_stats_matches_numpy():
    images = torch.randint(0, 256, (7, 2, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = D.channel_stats(images, batch=3)
    arr = images.numpy().astype(np.float64) / 255.0
    for ch in range(2):
        assert mean[ch] == pytest.approx(arr[:, ch].mean())
        assert std[ch] == pytest.approx(arr[:, ch].std())


def test_one_hot_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        D.one_hot([0, 3], 3)


# ---------------------------------------------------------------- IDX and Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    out = D.read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="payload"):
        D.read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path, gz):
    images, labels = write_fake_fashion(tmp_path / "fm", gz=gz)
    pool = D.load_fashion_mnist(root=tmp_path / "fm", system_dir=None)
    assert pool.images.shape == (60, 1, 28, 28) and pool.images.dtype == torch.uint8
    assert np.array_equal(pool.images[:, 0].numpy(), images)
    assert np.array_equal(pool.labels, labels) and pool.num_classes == 10


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    env_images, _ = write_fake_fashion(tmp_path / "env" / "fashion-mnist", seed=1)
    dir_images, _ = write_fake_fashion(tmp_path / "proj" / "fashion-mnist", seed=2)
    tv_images, _ = write_fake_fashion(tmp_path / "tv" / "fashion-mnist" / "FashionMNIST" / "raw", seed=3)
    assert np.array_equal(D.load_fashion_mnist(data_dir=tmp_path / "proj", system_dir=None).images[:, 0], dir_images)
    assert np.array_equal(D.load_fashion_mnist(data_dir=tmp_path / "tv", system_dir=None).images[:, 0], tv_images)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "env"))
    assert np.array_equal(D.load_fashion_mnist(data_dir=tmp_path / "proj", system_dir=None).images[:, 0], env_images)
    # a root without the files falls through to the next location
    (tmp_path / "empty").mkdir()
    assert np.array_equal(D.load_fashion_mnist(root=tmp_path / "empty", system_dir=None).images[:, 0], env_images)


def _assert_names_every_option(message: str) -> None:
    for needle in ("root=", D.DATA_DIR_ENV, "<data_dir>/fashion-mnist", "apt-get install dataset-fashion-mnist",
                   "download=True"):
        assert needle in message, needle


def test_fashion_mnist_not_found_names_every_option(tmp_path, monkeypatch):
    for sub in ("root", "env", "data", "system"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        D.load_fashion_mnist(root=tmp_path / "root", data_dir=tmp_path / "data", download=False,
                             system_dir=tmp_path / "system")
    _assert_names_every_option(str(info.value))
    assert str(tmp_path / "system") in str(info.value)


def test_fashion_mnist_failed_download_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("simulated: no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError, match="simulated: no network") as info:
        D.load_fashion_mnist(data_dir=tmp_path, download=True, system_dir=None)
    _assert_names_every_option(str(info.value))


def test_load_hashing_data_fashion_fake_pool(tmp_path):
    write_fake_fashion(tmp_path / "fm", n_train=60, n_test=40)  # 10 images per class
    spec = D.SplitSpec(query_per_class=2, train_per_class=3, val_per_class=1, database_per_class=None)
    data = D.load_hashing_data("fashion-mnist", root=tmp_path / "fm", data_dir=tmp_path / "proj", seed=0,
                               split=spec, batch_size=8, eval_batch_size=16)
    assert data.sizes() == {"train": 30, "validation": 10, "query": 20, "database": 40}
    assert (data.num_classes, data.in_channels, data.image_size, data.num_train) == (10, 1, 28, 30)
    assert data.split_path == tmp_path / "proj" / "splits" / f"fashion-mnist_{spec.tag}_seed0.npz"
    seen = torch.cat([i for _, _, i in data.train])
    assert sorted(seen.tolist()) == list(range(30))
    # normalised with training-split statistics: the training images have mean ~0 and std ~1
    x_train = torch.cat([x for x, _, _ in data.train])
    assert abs(x_train.mean().item()) < 1e-4 and x_train.std().item() == pytest.approx(1.0, abs=1e-2)
    x, y, _ = next(iter(data.database))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16, 10) and torch.all(y.sum(1) == 1)
    resized = D.load_hashing_data("fashion-mnist", root=tmp_path / "fm", data_dir=tmp_path / "proj", seed=0,
                                  split=spec, image_size=32)
    x, _, _ = next(iter(resized.query))
    assert x.shape[1:] == (3, 32, 32) and (resized.in_channels, resized.image_size) == (3, 32)


def test_load_hashing_data_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(KeyError, match="fashion-mnist.*imagenet100"):
        D.load_hashing_data("mnist", data_dir=tmp_path, seed=0)


def test_load_hashing_data_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        D.load_hashing_data("fashion-mnist", data_dir=tmp_path, seed=0, batch_size=0)
    with pytest.raises(ValueError, match="normalization"):
        D.load_hashing_data("fashion-mnist", data_dir=tmp_path, seed=0, normalization="minmax")


@pytest.mark.skipif(not (pools.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST not installed at {pools.DEBIAN_FASHION_MNIST_DIR} "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package(tmp_path):
    pool = D.load_fashion_mnist(data_dir=tmp_path)
    assert pool.images.shape == (70_000, 1, 28, 28) and pool.images.dtype == torch.uint8
    assert np.bincount(pool.labels).tolist() == [7_000] * 10
    data = D.load_hashing_data("fashion-mnist", data_dir=tmp_path, seed=0)
    assert data.sizes() == {"train": 5_000, "validation": 1_000, "query": 1_000, "database": 63_000}


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_not_found_names_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        D.load_hashing_data("cifar10", data_dir=tmp_path / "data", root=tmp_path / "root", seed=0)
    message = str(info.value)
    for needle in ("cifar-10-batches-py", "root=", D.DATA_DIR_ENV, "<data_dir>/cifar10", "download=True"):
        assert needle in message, needle


def test_cifar10_pool_through_torchvision_api(tmp_path, monkeypatch):
    import torchvision.datasets

    rng = np.random.default_rng(0)

    class FakeCIFAR10:  # the attributes load_cifar10 reads from torchvision's CIFAR10
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, train=True, download=False):
            n = 50 if train else 30
            self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    spec = D.SplitSpec(query_per_class=1, train_per_class=4, val_per_class=1)
    data = D.load_hashing_data("cifar10", root=tmp_path / "c", data_dir=tmp_path, seed=0, split=spec,
                               image_size=64)
    assert data.sizes() == {"train": 40, "validation": 10, "query": 10, "database": 20}
    x, y, _ = next(iter(data.train))
    assert x.shape[1:] == (3, 64, 64) and y.shape[1] == 10
    # ImageNet normalisation: a value v maps to (v/255 - mean_c) / std_c
    flat = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    out = data.train.transform(flat)
    for ch, (m, s) in enumerate(zip(D.IMAGENET_MEAN, D.IMAGENET_STD, strict=True)):
        assert out[0, ch, 0, 0].item() == pytest.approx(-m / s, rel=1e-5)


# ---------------------------------------------------------------- list files

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 128, 128)]


def write_list_dataset(root: Path, labels: dict[str, list[list[int]]]) -> dict[str, list[tuple[str, list[int]]]]:
    """Solid-colour 12x12 images and train/test/database lists; returns (path, label) per list."""
    (root / "img").mkdir(parents=True)
    written: dict[str, list[tuple[str, list[int]]]] = {}
    counter = 0
    for part, rows in labels.items():
        entries = []
        for row in rows:
            rel = f"img/{part}_{counter}.png"
            Image.new("RGB", (12, 12), COLORS[counter % len(COLORS)]).save(root / rel)
            entries.append((rel, row))
            counter += 1
        (root / D.listfile.LIST_FILES[part]).write_text(
            "".join(f"{rel} {' '.join(map(str, row))}\n" for rel, row in entries))
        written[part] = entries
    return written


def _labels(n: int, width: int, multi: bool) -> list[list[int]]:
    rows = []
    for i in range(n):
        row = [0] * width
        row[i % width] = 1
        if multi and i % 2:
            row[(i + 1) % width] = 1
        rows.append(row)
    return rows


@pytest.mark.parametrize("multi", [False, True])
def test_list_file_dataset_end_to_end(tmp_path, multi):
    width = 4 if multi else 3
    root = tmp_path / "ds"
    written = write_list_dataset(root, {"train": _labels(8, width, multi), "query": _labels(3, width, multi),
                                        "database": _labels(6, width, multi)})
    data = D.load_hashing_data("listfile", root=root, data_dir=tmp_path / "proj", seed=0, image_size=8,
                               resize_size=10, val_fraction=0.25, batch_size=3, eval_batch_size=4)
    assert data.sizes() == {"train": 6, "validation": 2, "query": 3, "database": 6}
    assert (data.num_classes, data.in_channels, data.image_size, data.num_train) == (width, 3, 8, 6)
    # train + validation partition train.txt
    tr, va = data.train.dataset.entries.tolist(), data.validation.dataset.entries.tolist()
    assert sorted(tr + va) == list(range(8)) and not set(tr) & set(va)
    # evaluation batches: labels and solid colours match the list entries, index = position in the split
    positions = []
    for x, y, index in data.database:
        assert x.shape[1:] == (3, 8, 8) and y.dtype == torch.float32 and index.dtype == torch.long
        for row, i in enumerate(index.tolist()):
            rel, label = written["database"][i]
            assert y[row].tolist() == [float(v) for v in label]
            colour = Image.open(root / rel).getpixel((0, 0))
            for ch in range(3):
                expect = (colour[ch] / 255.0 - D.IMAGENET_MEAN[ch]) / D.IMAGENET_STD[ch]
                assert torch.allclose(x[row, ch], torch.full((8, 8), expect), atol=1e-4)
            positions.append(i)
    assert positions == list(range(6))
    for _, y, index in data.validation:
        for row, i in enumerate(index.tolist()):
            assert y[row].tolist() == [float(v) for v in written["train"][va[i]][1]]
    assert sorted(torch.cat([i for _, _, i in data.train]).tolist()) == list(range(6))
    if multi:
        assert any(sum(label) == 2 for _, label in written["train"])
    # the validation carve-out is saved and re-loaded
    again = D.load_hashing_data("listfile", root=root, data_dir=tmp_path / "proj", seed=0, image_size=8,
                                resize_size=10, val_fraction=0.25)
    assert again.validation.dataset.entries.tolist() == va and again.split_path == data.split_path


def _write_list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        ("a.png 1 0\nb.png\n", 2, "expected an image path followed by 0/1 label values"),
        ("a.png 1 0\n\nb.png 0 2\n", 3, "label value 2 is '2'"),
        ("a.png 1 0\nb.png 0 x\n", 2, "label value 2 is 'x'"),
        ("a.png 1 0\nb.png 0 1\nc.png 0 1 0\n", 3, "3 label values, but line 1 has 2"),
    ],
)
def test_list_file_errors_name_file_and_line(tmp_path, text, line, pattern):
    path = _write_list(tmp_path, text)
    with pytest.raises(ValueError, match=pattern) as info:
        D.parse_list_file(path)
    assert f"{path}:{line}:" in str(info.value)


def test_list_file_missing_image_names_file_and_line(tmp_path):
    root = tmp_path / "ds"
    write_list_dataset(root, {"train": _labels(3, 3, False), "query": _labels(2, 3, False),
                              "database": _labels(3, 3, False)})
    with (root / "database.txt").open("a") as handle:
        handle.write("img/missing.png 0 1 0\n")
    with pytest.raises(FileNotFoundError, match="image file not found") as info:
        D.load_hashing_data("listfile", root=root, data_dir=tmp_path, seed=0, image_size=8, resize_size=10)
    assert f"{root / 'database.txt'}:4:" in str(info.value)
    assert str(root / "img" / "missing.png") in str(info.value)


def test_list_files_must_agree_on_label_width(tmp_path):
    root = tmp_path / "ds"
    write_list_dataset(root, {"train": _labels(3, 3, False), "query": _labels(2, 4, False),
                              "database": _labels(3, 3, False)})
    with pytest.raises(ValueError, match="disagree on the number of label values"):
        D.load_hashing_data("listfile", root=root, data_dir=tmp_path, seed=0, image_size=8, resize_size=10)


def test_list_dataset_not_found_names_options(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.txt.*<data_dir>/coco"):
        D.load_hashing_data("coco", data_dir=tmp_path, seed=0)


def test_holdout_split_is_seeded_partition():
    tr, va = D.holdout_split(10, 0.3, seed=1)
    assert len(va) == 3 and sorted(tr.tolist() + va.tolist()) == list(range(10))
    tr2, va2 = D.holdout_split(10, 0.3, seed=1)
    assert np.array_equal(va, va2)
    with pytest.raises(ValueError, match="val_fraction"):
        D.holdout_split(10, 1.0, seed=0)
