"""Ten deep-hashing losses of the NHL reference code, behind one contract and one registry.

``LOSSES`` maps a method name to its class; :func:`build_loss` is the only place a method string
becomes code. Every loss is built as ``LossClass(code_length, num_classes, num_train, *, seed=0,
**paper_hparams)`` and called as ``loss(u, y, index)`` with the continuous codes ``u`` (B, L), the
float multi-hot labels ``y`` (B, C) and the training-set indices ``index`` (B,); it returns a
0-dim tensor. Hyper-parameter names and reference defaults:

======  ==============================  =====================================================
name    hyper-parameters (default)      notes
======  ==============================  =====================================================
csq     lam=1e-4                        Hadamard centres
dbdh    alpha=0.1, p=2, pairs="bank"    memory bank; pairs="batch": pairs i < j of the batch
dch     gamma=20, lam=0.1               in-batch
dhn     alpha=0.1, pairs="bank"         memory bank; pairs="batch": pairs i < j of the batch
dpn     m=1, p=0.5                      random targets
dsh     m=2L (None), alpha=0.1,         memory bank; pairs="batch": pairs i < j of the batch
        pairs="bank"                    (the DSH paper)
dtsh    alpha=5, lam=1                  in-batch triplets
lcdsh   lam=3                           in-batch
mdsh    lam=1e-4                        single-label only; as released (no pair loss)
shcir   lam=1e-4, m=0                   single-label only
======  ==============================  =====================================================

One loss object serves one code length; a nested model builds one per length and computes them
with :func:`per_length_losses` (the batch validated once; for nested codes the methods built on inner
products or targets compute all lengths in one pass, see :mod:`nhllib.core.losses.base`).
"""

from __future__ import annotations

import inspect
from types import MappingProxyType
from collections.abc import Sequence
from typing import Any, Mapping

from nhllib.vocab import TARGET_MODES

from .base import HashLoss, MemoryBankLoss, per_length_losses
from .csq import CSQLoss
from .dbdh import DBDHLoss
from .dch import DCHLoss
from .dhn import DHNLoss
from .dpn import DPNLoss
from .dsh import DSHLoss
from .dtsh import DTSHLoss
from .lcdsh import LCDSHLoss
from .mdsh import MDSHLoss
from .nested_targets import target_distances
from .shcir import SHCIRLoss

LOSSES: Mapping[str, type[HashLoss]] = MappingProxyType({
    "csq": CSQLoss,
    "dbdh": DBDHLoss,
    "dch": DCHLoss,
    "dhn": DHNLoss,
    "dpn": DPNLoss,
    "dsh": DSHLoss,
    "dtsh": DTSHLoss,
    "lcdsh": LCDSHLoss,
    "mdsh": MDSHLoss,
    "shcir": SHCIRLoss,
})


def loss_hparams(name: str) -> dict[str, Any]:
    """The keyword hyper-parameters of loss ``name`` with their defaults (``seed`` included)."""
    cls = resolve_loss(name)
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_loss(name: str, code_length: int, num_classes: int, num_train: int,
               **hparams: Any) -> HashLoss:
    """Build the loss registered as ``name`` for one code length.

    Raises ``KeyError`` (listing the valid names) for an unknown ``name`` and ``TypeError``
    (listing the valid hyper-parameters) for an unknown keyword.
    """
    cls = resolve_loss(name)
    valid = loss_hparams(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) for loss {name!r}: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(valid))}")
    return cls(code_length, num_classes, num_train, **hparams)


def build_losses(name: str, code_lengths: Sequence[int], num_classes: int, num_train: int, *,
                 nested: bool, targets: str = "nested", seed: int = 0, **hparams: Any) -> list[HashLoss]:
    """One loss per code length (shortest first) for one model.

    ``nested`` says whether the codes are prefixes of one another (a :class:`~nhllib.core.nested.NestedHashLayer`
    with several lengths); then the losses are tied together by :meth:`HashLoss.nest` with ``targets``
    (``"nested"`` or ``"independent"``). Length ``k`` is built with seed ``seed + k``.
    """
    if targets not in TARGET_MODES:
        raise ValueError(f"targets must be one of {TARGET_MODES}, got {targets!r}")
    losses = [build_loss(name, length, num_classes, num_train, seed=seed + k, **hparams)
              for k, length in enumerate(code_lengths)]
    if nested and len(losses) > 1:
        type(losses[0]).nest(losses, targets=targets)
    return losses


def compare_targets(name: str, code_lengths: Sequence[int], num_classes: int, *, seed: int = 0,
                    **hparams: Any) -> list[dict[str, int]]:
    """:func:`~nhllib.core.losses.nested_targets.target_distances` of loss ``name`` built for a nested model with
    ``targets="nested"`` and with ``targets="independent"`` (as :func:`build_losses` builds them, seed ``seed``)."""
    built = {mode: build_losses(name, code_lengths, num_classes, 1, nested=True, targets=mode, seed=seed, **hparams)
             for mode in TARGET_MODES}
    buffer = getattr(type(built["nested"][0]), "target_buffer", None)
    if buffer is None:
        raise ValueError(f"loss {name!r} has no per-length targets")
    return target_distances(*[[getattr(loss, buffer) for loss in built[mode]] for mode in TARGET_MODES])


def resolve_loss(name: str) -> type[HashLoss]:
    """The loss class named ``name``: a key of :data:`LOSSES`, or a user's own class as ``"module:ClassName"``.

    A user's loss needs no change to this package: write a :class:`HashLoss` subclass in an importable module
    (``docs/custom-loss.md``) and use ``method="mymodule:MyLoss"`` in a config, a notebook or a study grid. The
    import path is the registration, so every process (papermill kernels, torchrun ranks, cluster jobs) finds
    the class the same way and nothing global is mutated. Raises ``KeyError`` naming the valid names for an unknown
    name, and ``ValueError`` for an import path that does not lead to a HashLoss subclass.
    """
    if isinstance(name, str) and name in LOSSES:
        return LOSSES[name]
    if isinstance(name, str) and ":" in name:
        import importlib

        module_name, _, attribute = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"method {name!r}: cannot import {attribute!r} from module {module_name!r} ({err}); "
                             "is the module on PYTHONPATH?") from None
        if not (isinstance(cls, type) and issubclass(cls, HashLoss)):
            raise ValueError(f"method {name!r} must name a subclass of nhllib.core.losses.HashLoss, got {cls!r}")
        return cls
    raise KeyError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}, "
                   "or a loss class of your own as 'module:ClassName'")



__all__ = [
    "LOSSES", "TARGET_MODES", "resolve_loss", "build_loss", "build_losses", "compare_targets", "loss_hparams", "per_length_losses", "HashLoss", "MemoryBankLoss",
    "CSQLoss", "DBDHLoss", "DCHLoss", "DHNLoss", "DPNLoss", "DSHLoss", "DTSHLoss", "LCDSHLoss",
    "MDSHLoss", "SHCIRLoss",
]
