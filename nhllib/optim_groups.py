"""What the optimiser trains and at which learning rate: fine-tuning and frozen backbones.

``parameter_groups(model, training)`` is what :func:`nhllib.train.fit` hands to the optimiser:

- by default every parameter at ``lr`` (``model.parameters()`` itself, so the default optimiser is unchanged);
- ``backbone_lr_mult != 1``: two groups, the backbone at ``lr * backbone_lr_mult`` and the rest (the hash layer)
  at ``lr``: fine-tuning a pretrained backbone gently while the new layer learns at full speed, as the paper
  fine-tunes its ImageNet ResNet-50 at a small learning rate;
- ``freeze_backbone``: the hash layer's parameters only (the backbone is a :class:`FrozenBackbone`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrozenBackbone", "parameter_groups"]


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
    """The optimiser's parameters for ``model`` (a :class:`~nhllib.model.HashingModel`) under ``training``
    (a :class:`~nhllib.config.TrainingConfig`); see the module docstring."""
    mult = training.backbone_lr_mult
    if training.freeze_backbone:
        if not isinstance(model.backbone, FrozenBackbone):
            raise ValueError("freeze_backbone is set but the model's backbone is not a FrozenBackbone "
                             "(nhllib.experiment.build_run wraps it)")
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": training.lr}]
    if mult == 1.0:
        return model.parameters()
    backbone = {id(p) for p in model.backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in backbone]
    return [{"params": list(model.backbone.parameters()), "lr": training.lr * mult, "name": "backbone"},
            {"params": rest, "lr": training.lr, "name": "head"}]
