"""The study's vocabularies: the variants, the tie conventions of mAP, the conflict-threshold norms.

Names only, torch-free: the configuration validates against them and the analysis layer (tables, plots) orders
and labels by them without importing torch. The code that gives each name its meaning imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Variant", "VARIANTS", "REFERENCE_VARIANT", "HEAD_KINDS", "TIE_MODES", "THRESHOLD_NORMS", "TARGET_MODES", "OPTIMIZERS"]

#: How the hash layer is built: "nested" is one NestedHashLayer (codes are prefixes of each other);
#: "multi-head" is K unrelated linear heads on the shared backbone (the ``heads`` control).
HEAD_KINDS = ("nested", "multi-head")

#: How the per-length losses of a nested model share their targets (nhllib.core.losses.build_losses): derived from
#: the longest length's ("nested") or drawn per length ("independent").
TARGET_MODES = ("nested", "independent")

#: The optimizers a run may train with (nhllib.training.optimizers gives each name its class); Adam is the default.
OPTIMIZERS = ("adam", "adamw", "sgd")

#: How mAP counts database items tied at the same Hamming distance (nhllib.core.evaluate).
TIE_MODES = ("expected", "optimistic", "pessimistic", "index")

#: Which gradient norm sets the conflict threshold: the shorter code's own (the paper's intent) or the
#: shortest code's (the released code).
THRESHOLD_NORMS = ("own", "shortest")


@dataclass(frozen=True)
class Variant:
    """What a study variant switches on. The study compares these per hashing method (docs/method.md §2.5)."""

    description: str
    head: str  # one of HEAD_KINDS
    conflict_weighting: bool  # apply the gradient-conflict weights (else uniform, conflicts still monitored)
    distillation: bool  # add λ·D_k, the long-to-short cascade distillation
    single_length: bool = False  # one model per code length (the baseline)
    trains: bool = True  # False: the network as initialised, evaluated once (the reference level)

    @property
    def weighting(self) -> str:
        """The label of its per-length weighting in the result tables: ``conflict`` or ``uniform``."""
        return "conflict" if self.conflict_weighting else "uniform"


#: Variant name -> meaning, in the order tables and figures show them.
VARIANTS: dict[str, Variant] = {
    "separate": Variant("one model per code length (the paper's baseline)", "nested", False, False, True),
    "nhl-plain": Variant("nested layer, sum of per-length losses (paper: w/o AD)", "nested", False, False),
    "nhl-weight": Variant("+ gradient-conflict weighting (paper: w/o D)", "nested", True, False),
    "nhl-distill": Variant("+ long-to-short cascade distillation (paper: w/o A)", "nested", False, True),
    "nhl": Variant("conflict weighting + distillation (the full method)", "nested", True, True),
    "heads": Variant("shared backbone, one non-nested linear head per length (extra control)", "multi-head", False, False),
    "untrained": Variant("the nested network at initialisation, never trained (the reference level)", "nested",
                         False, False, trains=False),
}
#: The variant whose mAP is the reference level of the tables and figures (what training must beat).
REFERENCE_VARIANT = "untrained"
