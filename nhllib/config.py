"""The validated, frozen description of one training run, and the study's variants.

A notebook's parameters become a :class:`RunConfig`; everything downstream reads it, nothing mutates it.
Validation happens in ``__post_init__`` so bad parameters fail at once, naming the parameter and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nhllib.evaluate import TIE_MODES
from nhllib.nested import validate_code_lengths
from nhllib.weighting import THRESHOLD_NORMS

__all__ = ["Variant", "VARIANTS", "RunConfig", "TIE_MODES"]

@dataclass(frozen=True)
class Variant:
    """What a study variant switches on. The study compares these per hashing method (DESIGN.md)."""

    description: str
    head: str  # "nested": one NestedHashLayer; "separate": K independent heads (the heads control)
    conflict_weighting: bool  # apply the gradient-conflict weights (else uniform, conflicts still monitored)
    distillation: bool  # add λ·D_k, the long-to-short cascade distillation
    single_length: bool = False  # one model per code length (the baseline)


VARIANTS: dict[str, Variant] = {
    "separate": Variant("one model per code length (the paper's baseline)", "nested", False, False, True),
    "nhl-plain": Variant("nested layer, sum of per-length losses (paper: w/o AD)", "nested", False, False),
    "nhl-weight": Variant("+ gradient-conflict weighting (paper: w/o D)", "nested", True, False),
    "nhl-distill": Variant("+ long-to-short cascade distillation (paper: w/o A)", "nested", False, True),
    "nhl": Variant("conflict weighting + distillation (the full method)", "nested", True, True),
    "heads": Variant("shared backbone, K separate non-nested heads (extra control)", "separate", False, False),
}


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} int, got {value!r}")


def _non_negative_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """One run of the study. Defaults are the CPU ``default`` profile (Fashion-MNIST, small CNN).

    Every field is checked on construction, the method, dataset and backbone names against their registries.
    """

    study: str = "default"
    method: str = "csq"
    variant: str = "nhl"
    code_lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    dataset: str = "fashion-mnist"
    data_dir: str = "data"
    query_per_class: int = 100
    train_per_class: int = 500
    val_per_class: int = 100
    database_per_class: int | None = None  # None: every remaining image
    split_seed: int = 0  # the split is shared by every run of a study, whatever its training seed
    backbone: str = "cnn"
    pretrained: bool = False
    image_size: int | None = None  # None: the dataset's native size
    distill_weight: float = 1.0  # λ; the reference's scripts use 1 (argparse default 0.1)
    beta: float = 1.0
    threshold_norm: str = "own"
    conflict_every: int = 1  # gradient-conflict statistics every n-th step
    loss_hparams: dict = field(default_factory=dict)
    epochs: int = 30
    eval_every: int = 2
    patience: int = 3  # evaluations without a better validation mAP before stopping; 0 disables
    batch_size: int = 64
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-5
    topk: int | None = None  # mAP@topk; None: the whole database
    ties: str = "expected"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    download: bool = False  # let torchvision download Fashion-MNIST / CIFAR-10 into data_dir when missing

    def __post_init__(self) -> None:
        if not isinstance(self.study, str) or not self.study or "/" in self.study or self.study.startswith("."):
            raise ValueError(f"study must be a non-empty folder name without '/', got {self.study!r}")
        _choice("variant", self.variant, VARIANTS)
        object.__setattr__(self, "code_lengths", validate_code_lengths(self.code_lengths))
        if VARIANTS[self.variant].single_length and len(self.code_lengths) != 1:
            raise ValueError(
                f"variant 'separate' trains one model per code length: give a single length in code_lengths, "
                f"got {self.code_lengths} (the study runs one 'separate' run per length)"
            )
        if not VARIANTS[self.variant].single_length and len(self.code_lengths) < 2:
            raise ValueError(f"variant {self.variant!r} needs at least two code_lengths, got {self.code_lengths}")
        for name in ("query_per_class", "train_per_class", "epochs", "eval_every", "batch_size",
                     "eval_batch_size", "conflict_every"):
            _positive_int(name, getattr(self, name))
        for name in ("val_per_class", "patience", "split_seed", "seed"):
            _positive_int(name, getattr(self, name), allow_zero=True)
        if self.database_per_class is not None:
            _positive_int("database_per_class", self.database_per_class)
        if self.topk is not None:
            _positive_int("topk", self.topk)
        if self.image_size is not None:
            _positive_int("image_size", self.image_size)
        for name in ("distill_weight", "weight_decay"):
            _non_negative_float(name, getattr(self, name))
        for name in ("lr", "beta"):
            _non_negative_float(name, getattr(self, name))
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        _choice("threshold_norm", self.threshold_norm, THRESHOLD_NORMS)
        _choice("ties", self.ties, TIE_MODES)
        if not isinstance(self.loss_hparams, dict):
            raise ValueError(f"loss_hparams must be a dict of keyword arguments, got {self.loss_hparams!r}")
        for name in ("method", "dataset", "backbone", "device", "data_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        self._check_registries()
        if self.val_per_class == 0 and self.patience:
            raise ValueError("early stopping selects on validation mAP: val_per_class must be > 0 when patience > 0")

    def _check_registries(self) -> None:
        # Imported here: the registries pull in torchvision, which a config alone should not need at import.
        from nhllib.backbones import BACKBONES
        from nhllib.data import DATASETS
        from nhllib.losses import LOSSES

        _choice("method", self.method, LOSSES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("backbone", self.backbone, BACKBONES)

    # Fields that do not change what is computed, so they do not enter the run id.
    _NOT_IN_RUN_ID = ("study", "device", "data_dir", "download")

    @property
    def run_id(self) -> str:
        """A readable, deterministic folder name: the same config always maps to the same folder."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_RUN_ID}
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        lengths = "-".join(str(n) for n in self.code_lengths)
        return f"{self.method}_{self.variant}_{lengths}_seed{self.seed}_{digest}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["code_lengths"] = list(self.code_lengths)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a dict (e.g. notebook parameters), rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown run parameter(s) {unknown}; valid parameters are {sorted(known)}")
        return cls(**values)
