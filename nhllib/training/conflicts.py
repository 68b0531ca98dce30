"""Per-epoch aggregation of gradient-conflict statistics (kept on the device; one transfer per epoch)."""

from __future__ import annotations

import torch

from nhllib.core.weighting import ConflictStats
from nhllib.store.results import CONFLICT_COLUMNS  # the schema of conflicts.csv, re-exported

__all__ = ["ConflictLog", "CONFLICT_COLUMNS"]



class ConflictLog:
    """Accumulate :class:`ConflictStats` of many steps; ``end_epoch`` turns them into tidy rows."""

    def __init__(self, code_lengths: tuple[int, ...]) -> None:
        self.code_lengths = code_lengths
        self.rows: list[dict] = []
        self.weight_rows: list[dict] = []
        self.last_stats: ConflictStats | None = None  # of the last step that computed them (for inspection)
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, stats: ConflictStats, applied: torch.Tensor) -> None:
        """``applied`` are the weights the step used: the rule's, or ones when only monitoring."""
        self.last_stats = stats
        values = {
            "conflict": stats.conflict.float(),
            "cosine": stats.cosine,
            "dot": stats.dot,
            "alpha": stats.alpha,
            "weights": applied.detach().float(),
            "rule_weights": stats.weights,
        }
        for name, value in values.items():
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self._steps += 1

    def end_epoch(self, epoch: int) -> None:
        if self._steps:
            means = {name: (total / self._steps).cpu() for name, total in self._sums.items()}
            lengths = self.code_lengths
            for s in range(len(lengths)):
                for l in range(s + 1, len(lengths)):
                    self.rows.append({
                        "epoch": epoch, "short_length": lengths[s], "long_length": lengths[l], "steps": self._steps,
                        "conflict_rate": float(means["conflict"][s, l]), "mean_cosine": float(means["cosine"][s, l]),
                        "mean_dot": float(means["dot"][s, l]), "mean_alpha": float(means["alpha"][s, l]),
                    })
            for k, length in enumerate(lengths):
                self.weight_rows.append({"epoch": epoch, "code_length": length, "weight": float(means["weights"][k]),
                                         "rule_weight": float(means["rule_weights"][k])})
        self._reset()
