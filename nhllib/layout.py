"""The layouts of the ``config`` mapping in a run's ``config.json``, and the one reader of all of them.

A base module (torch-free, no nhllib import) because both sides read it: the configuration writes the current
layout (:mod:`nhllib.training.config`) and the results store reads old and new folders (:mod:`nhllib.store.results`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LAYOUT", "flat_config"]

#: Version of the ``config`` mapping in ``config.json``: 1 was one flat mapping of 33 fields (runs written before
#: the configuration had parts); 2 nests the parts (data, model, hashing, training) and says so in ``layout``.
LAYOUT = 2


def flat_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flat form of a stored or given run configuration, whatever its layout (the layout-1 migration).

    Layout 1 is already flat; layout 2 nests the parts, and no top-level field is a mapping, so every mapping
    at the top is a part. Structural only, nothing is validated: readers of old result folders need no torch.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"a run configuration must be a mapping, got {type(values).__name__}")
    layout = values.get("layout", 1)
    if layout not in (1, LAYOUT):
        raise ValueError(f"unknown config layout {layout!r}; this version reads layouts 1 and {LAYOUT}")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key == "layout":
            continue
        if layout == LAYOUT and isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return flat
