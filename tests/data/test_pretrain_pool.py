"""The pretraining pool: disjoint from every part of the split, by image index; its two label sets."""

import numpy as np
import pytest

from nhllib.data import DataConfig, load_fashion_mnist
from nhllib.data.pretrain_pool import COARSE_GROUPS, pool_indices, pretraining_pool
from nhllib.data.split import SPLIT_NAMES, SplitSpec, load_or_make_split, make_split

SMALL = dict(query_per_class=5, train_per_class=20, val_per_class=5, database_per_class=30)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def _split(config):
    pool = load_fashion_mnist(data_dir=config.data_dir)
    split, _ = load_or_make_split(config.dataset, pool.labels, config.split, config.split_seed, config.data_dir)
    return pool, split


@pytest.mark.parametrize("split_seed", [0, 3])
def test_the_pool_is_disjoint_from_query_train_validation_and_database(data_dir, split_seed):
    config = DataConfig(data_dir=data_dir, split_seed=split_seed, **SMALL)
    pool, split = _split(config)
    found = pretraining_pool(config, "in-domain")
    for part in SPLIT_NAMES:
        assert not set(found.indices.tolist()) & set(getattr(split, part).tolist()), part
    # and it is everything else: the split and the pool cover the dataset exactly once
    used = np.concatenate([getattr(split, part) for part in SPLIT_NAMES])
    assert len(found.indices) + len(used) == len(pool.labels)
    assert np.array_equal(np.sort(np.concatenate([found.indices, used])), np.arange(len(pool.labels)))
    # the images and labels are those of the indices
    assert np.array_equal(found.labels, pool.labels[found.indices])
    assert found.images.equal(pool.images[found.indices])


def test_the_brute_force_complement_agrees_with_a_made_split():
    labels = np.repeat(np.arange(4), 12)
    split = make_split(labels, SplitSpec(2, 3, 1, 4), seed=1)
    got = pool_indices(len(labels), split, labels)
    used = {int(i) for part in SPLIT_NAMES for i in getattr(split, part)}
    assert got.tolist() == [i for i in range(len(labels)) if i not in used]
    capped = pool_indices(len(labels), split, labels, max_per_class=1, seed=0)
    assert np.bincount(labels[capped]).tolist() == [1, 1, 1, 1] and set(capped) <= set(got)


def test_the_coarse_label_set_groups_every_class_once(data_dir):
    groups = COARSE_GROUPS["fashion-mnist"]
    members = sorted(c for group in groups.values() for c in group)
    assert members == list(range(10))
    config = DataConfig(data_dir=data_dir, **SMALL)
    fine = pretraining_pool(config, "in-domain", max_per_class=10)
    coarse = pretraining_pool(config, "coarse", max_per_class=10)
    assert np.array_equal(fine.indices, coarse.indices)
    assert coarse.class_names == tuple(groups) and coarse.num_classes == 4 and fine.num_classes == 10
    for group, (name, classes) in enumerate(groups.items()):
        assert set(coarse.labels[np.isin(fine.labels, classes)]) == {group}, name


def test_bad_label_sets_and_full_splits_are_refused(data_dir):
    with pytest.raises(ValueError, match="label_set must be one of"):
        pretraining_pool(DataConfig(data_dir=data_dir, **SMALL), "fine")
    with pytest.raises(ValueError, match="pretraining pool is empty"):
        pretraining_pool(DataConfig(data_dir=data_dir, query_per_class=5, train_per_class=20, val_per_class=5), "coarse")
    with pytest.raises(ValueError, match="has no pretraining pool"):
        pretraining_pool(DataConfig(dataset="imagenet100", data_dir=data_dir), "in-domain")
