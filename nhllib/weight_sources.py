"""Where a backbone's weights start: the one vocabulary behind the run parameter ``pretrained`` (torch-free).

- ``False``: a random initialisation (seeded by the run's seed);
- ``True`` or ``"imagenet"``: torchvision's ImageNet weights (:func:`nhllib.training.backbones.build_backbone`);
- ``"pool-<labels>"``: weights pretrained in this project with cross-entropy on the *pretraining pool* (the
  images of the dataset in none of query / train / validation / database) under one of :data:`LABEL_SETS`,
  trained once and cached (:mod:`nhllib.training.pretrain`).

``True`` stays a synonym of ``"imagenet"`` so that the configurations (and run ids) written before the pool
sources existed keep their meaning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IMAGENET", "LABEL_SETS", "POOL_PREFIX", "SOURCES", "check_pretrained", "pool_labels", "weight_source"]

IMAGENET = "imagenet"
#: The pretraining pool's label sets: the dataset's own classes, or a coarse grouping into super-classes
#: (nhllib.data.pretrain_pool.COARSE_GROUPS).
LABEL_SETS = ("in-domain", "coarse")
POOL_PREFIX = "pool-"
SOURCES = (IMAGENET, *(POOL_PREFIX + labels for labels in LABEL_SETS))


def check_pretrained(value: Any) -> bool | str:
    """Return ``value`` if it is ``True``, ``False`` or one of :data:`SOURCES`."""
    if isinstance(value, bool) or (isinstance(value, str) and value in SOURCES):
        return value
    raise ValueError(f"pretrained must be True or False, got {value!r}; or the name of a weight source, one of "
                     f"{list(SOURCES)} (True means {IMAGENET!r})")


def weight_source(pretrained: bool | str) -> str | None:
    """The source named by a ``pretrained`` value: None (random), ``"imagenet"`` or ``"pool-<labels>"``."""
    check_pretrained(pretrained)
    if pretrained is False:
        return None
    return IMAGENET if pretrained is True else pretrained


def pool_labels(pretrained: bool | str) -> str | None:
    """The label set of a pool source (``"pool-coarse"`` -> ``"coarse"``), else None."""
    source = weight_source(pretrained)
    return source[len(POOL_PREFIX):] if source is not None and source.startswith(POOL_PREFIX) else None
