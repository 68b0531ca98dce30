"""The optimizer a run trains with, chosen by name in its configuration (``TrainingConfig.optimizer``).

Adam is the default and what every committed result used. The one place an optimizer is built, so a change to
what is optimised (parameter groups, a frozen part) is made here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "build_optimizer"]

#: Name -> optimizer class; each takes ``lr`` and ``weight_decay``. The names are nhllib.vocab.OPTIMIZERS
#: (torch-free, for the configuration's check); a test keeps the two equal.
OPTIMIZERS: Mapping[str, type[torch.optim.Optimizer]] = MappingProxyType({
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
})


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` over every parameter of ``model``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](model.parameters(), lr=lr, weight_decay=weight_decay)
