"""The optimizer a run trains with, and what it trains at which learning rate.

The optimizer is chosen by name in the configuration (``TrainingConfig.optimizer``); Adam is the default and what
every committed result used. This is the one place an optimizer is built. What it optimises comes from
``parameter_groups(model, training)``:

- by default every parameter at ``lr`` (``model.parameters()`` itself, so the default optimizer is unchanged);
- ``backbone_lr_mult != 1``: two groups, the backbone at ``lr * backbone_lr_mult`` and the rest (the hash layer)
  at ``lr``: fine-tuning a pretrained backbone gently while the new layer learns at full speed, as the paper
  fine-tunes its ImageNet ResNet-50 at a small learning rate;
- ``freeze_backbone``: the hash layer's parameters only (the backbone is a :class:`FrozenBackbone`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

__all__ = ["OPTIMIZERS", "FrozenBackbone", "build_optimizer", "parameter_groups"]

#: Name -> optimizer class; each takes ``lr`` and ``weight_decay``. The names are nhllib.vocab.OPTIMIZERS
#: (torch-free, for the configuration's check); a test keeps the two equal.
OPTIMIZERS: Mapping[str, type[torch.optim.Optimizer]] = MappingProxyType({
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
})


def build_optimizer(parameters: nn.Module | Iterable, name: str, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``parameters``: a model (every parameter of it) or what
    :func:`parameter_groups` returns."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    return OPTIMIZERS[name](parameters, lr=lr, weight_decay=weight_decay)


class FrozenBackbone(nn.Module):
    """A backbone whose weights never change: no gradients, always in eval mode (batch-norm statistics stay
    those it started with), its forward under ``no_grad`` (no backward through it is needed or paid for)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.out_features = backbone.out_features

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(mode)
        self.backbone.eval()  # a training-mode model must not update the frozen batch-norm statistics
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.backbone(x)


def parameter_groups(model: nn.Module, training) -> list[dict] | object:
    """The optimiser's parameters for ``model`` (a :class:`~nhllib.core.model.HashingModel`) under ``training``
    (a :class:`~nhllib.training.config.TrainingConfig`); see the module docstring."""
    mult = training.backbone_lr_mult
    if training.freeze_backbone:
        if not isinstance(model.backbone, FrozenBackbone):
            raise ValueError("freeze_backbone is set but the model's backbone is not a FrozenBackbone "
                             "(nhllib.training.experiment.build_run wraps it)")
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": training.lr}]
    if mult == 1.0:
        return model.parameters()
    backbone = {id(p) for p in model.backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in backbone]
    return [{"params": list(model.backbone.parameters()), "lr": training.lr * mult, "name": "backbone"},
            {"params": rest, "lr": training.lr, "name": "head"}]
