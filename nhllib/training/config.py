"""The validated, frozen description of one training run, composed of the parts each layer reads.

A notebook's parameters become a :class:`RunConfig` through :meth:`RunConfig.from_dict`; everything downstream
reads it, nothing mutates it, and each layer receives its part unchanged: the data layer :class:`DataConfig`, the
model builder :class:`ModelConfig`, the losses and weighting :class:`HashingConfig`, the training loop
:class:`TrainingConfig`. A new run parameter is one field in one part (and one line in ``01_train``'s parameters).

Parameters are named flat (``epochs``, ``dataset``, ...): field names are unique across the parts, so the flat
form (notebook parameters, profile files, the ``config.json`` of runs written before the parts existed) maps onto
the parts without a table. Validation happens on construction so bad parameters fail at once, naming the
parameter and what is allowed; the checks themselves are :mod:`nhllib.checks` and the names :mod:`nhllib.vocab`
(both torch-free), so a new kind of check is written once there. The analysis layer reads stored configurations
through :func:`nhllib.layout.flat_config` and never needs this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from nhllib.checks import (
    MAX_EPOCHS, check_bool, check_choice, check_int, check_name, check_number, check_optional, check_positive_int,
    validate_code_lengths,
)
from nhllib.data.config import DataConfig
from nhllib.layout import LAYOUT, flat_config
from nhllib.weight_sources import check_pretrained
from nhllib.vocab import OPTIMIZERS, THRESHOLD_NORMS, TIE_MODES, VARIANTS, Variant

__all__ = [
    "RunConfig", "DataConfig", "ModelConfig", "HashingConfig", "TrainingConfig", "RunPlan", "LAYOUT",
    "flat_config", "Variant", "VARIANTS", "TIE_MODES",
]

@dataclass(frozen=True)
class ModelConfig:
    """The network: backbone and the hash layer's code lengths (the variant decides the layer's kind)."""

    backbone: str = "cnn"
    # Where the backbone's weights start (nhllib.training.pretrain.WEIGHT_SOURCES): False (random), True or "imagenet"
    # (torchvision's), "pool-in-domain" / "pool-coarse" (pretrained here on the pretraining pool, cached).
    pretrained: bool | str = False
    code_lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    center_codes: bool = False  # BatchNorm1d(affine=False) on the hash outputs (code centring)
    pretrain_recipe: str = "default"  # pool weights: the recipe they were trained with (nhllib.training.pretrain.RECIPES)
    pretrain_seed: int = 0  # pool weights: the seed they were trained with

    def __post_init__(self) -> None:
        check_name("backbone", self.backbone)
        check_pretrained(self.pretrained)
        check_bool("center_codes", self.center_codes)
        check_name("pretrain_recipe", self.pretrain_recipe)
        check_int("pretrain_seed", self.pretrain_seed)
        object.__setattr__(self, "code_lengths", validate_code_lengths(self.code_lengths))


@dataclass(frozen=True)
class HashingConfig:
    """The hashing method, the study variant and the hyper-parameters of the loss, weighting and distillation."""

    method: str = "csq"
    variant: str = "nhl"
    distill_weight: float = 1.0  # λ; the reference's scripts use 1 (argparse default 0.1)
    beta: float = 1.0
    threshold_norm: str = "own"
    conflict_every: int = 1  # gradient-conflict statistics every n-th step
    loss_hparams: dict = field(default_factory=dict)
    targets: str = "nested"  # how the per-length losses share their targets (nhllib.core.losses.TARGET_MODES)

    def __post_init__(self) -> None:
        check_name("method", self.method)
        check_choice("variant", self.variant, VARIANTS)
        check_number("distill_weight", self.distill_weight)
        check_number("beta", self.beta, positive=True)
        check_choice("threshold_norm", self.threshold_norm, THRESHOLD_NORMS)
        check_positive_int("conflict_every", self.conflict_every, maximum=MAX_EPOCHS)
        if not isinstance(self.loss_hparams, dict):
            raise ValueError(f"loss_hparams must be a dict of keyword arguments, got {self.loss_hparams!r}")
        check_name("targets", self.targets)


@dataclass(frozen=True)
class TrainingConfig:
    """The optimisation and the evaluation schedule; what :func:`nhllib.training.train.fit` reads."""

    epochs: int = 30
    eval_every: int = 2
    patience: int = 3  # evaluations without a better validation mAP before stopping; 0 disables
    optimizer: str = "adam"  # nhllib.vocab.OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 1e-5
    amp: bool = False
    topk: int | None = None  # mAP@topk; None: the whole database
    ties: str = "expected"
    backbone_lr_mult: float = 1.0  # the backbone's learning rate is lr * this (fine-tuning); the head's is lr
    freeze_backbone: bool = False  # only the hash layer trains; the backbone's weights stay as they started

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs, maximum=MAX_EPOCHS)
        check_positive_int("eval_every", self.eval_every, maximum=MAX_EPOCHS)
        check_int("patience", self.patience, maximum=MAX_EPOCHS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("lr", self.lr, positive=True)
        check_number("weight_decay", self.weight_decay)
        check_bool("amp", self.amp)
        check_optional(check_positive_int, "topk", self.topk)
        check_choice("ties", self.ties, TIE_MODES)
        check_number("backbone_lr_mult", self.backbone_lr_mult, positive=True)
        check_bool("freeze_backbone", self.freeze_backbone)


@dataclass(frozen=True)
class RunPlan:
    """What a variant means for one run, decoded once: the build and the result tables read it from here."""

    head: str  # nhllib.vocab.HEAD_KINDS
    apply_conflict_weights: bool  # else uniform weights (conflicts are still monitored where they exist)
    distill_weight: float  # the λ in effect: 0 when the variant has no distillation
    weighting: str  # "conflict" | "uniform", the label of the result tables
    trains: bool = True  # False: evaluate the initialised network only (the untrained reference)


_PARTS = {"data": DataConfig, "model": ModelConfig, "hashing": HashingConfig, "training": TrainingConfig}
#: Seeds are at most 2**32 - 1: NumPy's legacy seeding and the data loader's worker seeds take no more.
MAX_SEED = 2**32 - 1
_TOP = ("study", "seed", "device")

# Fields that do not change what is computed, so they do not enter the run id.
_NOT_IN_RUN_ID = ("study", "device", "data_dir", "download")
# The fields of layout 1, frozen: they always enter the run id. Every field added since enters it only when set
# away from its default, so earlier runs keep their folder names and a new field needs no entry here.
_LAYOUT_1_FIELDS = frozenset({
    "study", "method", "variant", "code_lengths", "dataset", "data_dir", "query_per_class", "train_per_class",
    "val_per_class", "database_per_class", "split_seed", "backbone", "pretrained", "image_size", "distill_weight",
    "beta", "threshold_norm", "conflict_every", "loss_hparams", "epochs", "eval_every", "patience", "batch_size",
    "eval_batch_size", "lr", "weight_decay", "topk", "ties", "seed", "device", "amp", "download",
})


@dataclass(frozen=True)
class RunConfig:
    """One run of the study. Defaults are the CPU ``default`` profile (Fashion-MNIST, small CNN)."""

    study: str = "default"
    seed: int = 0  # training seed: initialisation, batch order, centres
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hashing: HashingConfig = field(default_factory=HashingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.study, str) or not self.study or "/" in self.study or self.study.startswith("."):
            raise ValueError(f"study must be a non-empty folder name without '/', got {self.study!r}")
        check_int("seed", self.seed, maximum=MAX_SEED)
        check_name("device", self.device)
        for name, kind in _PARTS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        lengths, variant = self.model.code_lengths, self.hashing.variant
        if VARIANTS[variant].single_length and len(lengths) != 1:
            raise ValueError(
                f"variant 'separate' trains one model per code length: give a single length in code_lengths, "
                f"got {lengths} (the study runs one 'separate' run per length)"
            )
        if not VARIANTS[variant].single_length and len(lengths) < 2:
            raise ValueError(f"variant {variant!r} needs at least two code_lengths, got {lengths}")
        if self.model.center_codes and self.data.batch_size < 2:
            raise ValueError(f"center_codes=True centres each batch (BatchNorm1d), which needs batch_size >= 2, got "
                             f"batch_size={self.data.batch_size}: raise batch_size or set center_codes to false")
        if self.data.val_per_class == 0 and self.training.patience:
            raise ValueError("early stopping selects on validation mAP: val_per_class must be > 0 when patience > 0")
        self._check_registries()

    def _check_registries(self) -> None:
        # Imported here: the registries pull in torch and torchvision, which a config alone should not need.
        from nhllib.training.backbones import BACKBONES
        from nhllib.data import DATASETS
        from nhllib.core.losses import LOSSES, TARGET_MODES, resolve_loss

        try:  # a registered name, or a user's own loss class as "module:ClassName"
            resolve_loss(self.hashing.method)
        except KeyError:
            raise ValueError(f"method must be one of {sorted(LOSSES)} or a loss class of your own as "
                             f"'module:ClassName', got {self.hashing.method!r}") from None
        check_choice("targets", self.hashing.targets, TARGET_MODES)
        check_choice("dataset", self.data.dataset, DATASETS)
        check_choice("backbone", self.model.backbone, BACKBONES)
        from nhllib.training.pretrain import RECIPES

        check_choice("pretrain_recipe", self.model.pretrain_recipe, RECIPES)

    @property
    def plan(self) -> RunPlan:
        variant = VARIANTS[self.hashing.variant]
        return RunPlan(
            head=variant.head, apply_conflict_weights=variant.conflict_weighting,
            distill_weight=self.hashing.distill_weight if variant.distillation else 0.0,
            weighting=variant.weighting, trains=variant.trains,
        )

    @property
    def label(self) -> str:
        """A short human label: method, variant, lengths, seed, and λ where it is not the default."""
        h = self.hashing
        label = f"{h.method} {h.variant} {'/'.join(map(str, self.model.code_lengths))} seed={self.seed}"
        if VARIANTS[h.variant].distillation and h.distill_weight != HashingConfig.distill_weight:
            label += f" λ={h.distill_weight}"
        return label

    @property
    def run_id(self) -> str:
        """A readable, deterministic folder name: the same config always maps to the same folder."""
        identity = {k: v for k, v in self.flat().items()
                    if k not in _NOT_IN_RUN_ID and (k in _LAYOUT_1_FIELDS or v != _DEFAULTS[k])}
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        lengths = "-".join(str(n) for n in self.model.code_lengths)
        method = re.sub(r"[^A-Za-z0-9-]", "-", self.hashing.method)  # "module:Class" makes a plain folder name
        return f"{method}_{self.hashing.variant}_{lengths}_seed{self.seed}_{digest}"

    def flat(self) -> dict[str, Any]:
        """Every parameter by its flat name (the form of notebook parameters and profile files)."""
        out = {name: getattr(self, name) for name in _TOP}
        for part in _PARTS:
            out.update(asdict(getattr(self, part)))
        out["code_lengths"] = list(self.model.code_lengths)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``config`` of ``config.json``: the parts as nested mappings, tagged with :data:`LAYOUT`."""
        out: dict[str, Any] = {"layout": LAYOUT, **{name: getattr(self, name) for name in _TOP}}
        for part in _PARTS:
            out[part] = asdict(getattr(self, part))
        out["model"]["code_lengths"] = list(self.model.code_lengths)
        return out

    def updated(self, **changes: Any) -> "RunConfig":
        """A copy with some parameters changed, by their flat names (validated like a new config)."""
        return RunConfig.from_dict({**self.flat(), **changes})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default value of every part's field, by flat name (not the top-level study, seed, device)."""
        return dict(_DEFAULTS)

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The flat parameter names, in declaration order."""
        return (*_TOP, *(f.name for kind in _PARTS.values() for f in fields(kind)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from flat parameters (notebook parameters, a profile, a layout-1 ``config.json``) or from
        :meth:`to_dict`'s nested layout; unknown keys are rejected by name."""
        flat = flat_config(values)
        known = set(cls.parameter_names())
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"unknown run parameter(s) {unknown}; valid parameters are {sorted(known)}")
        parts = {name: kind(**{f.name: flat[f.name] for f in fields(kind) if f.name in flat})
                 for name, kind in _PARTS.items()}
        return cls(**{name: flat[name] for name in _TOP if name in flat}, **parts)


_DEFAULTS = {f.name: (f.default if f.default_factory is MISSING else f.default_factory())
             for kind in _PARTS.values() for f in fields(kind)}
