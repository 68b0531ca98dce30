"""The evaluation of a run's selected checkpoint: mAP under every tie convention, P@K, PR, radius-2 precision.

Training evaluates only what early stopping needs; this runs once per run, on the best-validation weights, and
encodes the query and database splits once for all code lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nhllib.core.evaluate import (
    encode,
    evaluate_nested,
    precision_at_k,
    precision_recall_curve,
    precision_within_radius,
)

__all__ = ["FinalEvaluation", "final_evaluation", "TIE_METRICS", "P_AT_K"]

TIE_METRICS = {"map_expected": "expected", "map_optimistic": "optimistic", "map_pessimistic": "pessimistic",
               "map_index": "index"}
P_AT_K = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class FinalEvaluation:
    scalars: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> code length -> value
    curves: list[dict] = field(default_factory=list)  # rows: code_length, curve, x, precision, recall
    codes: dict[str, tuple[dict[int, torch.Tensor], torch.Tensor]] = field(default_factory=dict)  # split -> codes


def final_evaluation(model, data, device: torch.device, topk: int | None = None) -> FinalEvaluation:
    query_codes, query_labels = encode(model, data.query, device)
    db_codes, db_labels = encode(model, data.database, device)
    out = FinalEvaluation(codes={"query": (query_codes, query_labels), "database": (db_codes, db_labels)})
    for name, ties in TIE_METRICS.items():
        out.scalars[name] = evaluate_nested(query_codes, query_labels, db_codes, db_labels, topk=topk, ties=ties)
    ks = [k for k in P_AT_K if k <= len(db_labels)]
    out.scalars["precision_r2"] = {}
    out.scalars["p_at_100"] = {}
    for length in query_codes:
        args = (query_codes[length], query_labels, db_codes[length], db_labels)
        out.scalars["precision_r2"][length] = float(precision_within_radius(*args, radius=2))
        p_at = precision_at_k(*args, ks=ks)
        for k, value in zip(ks, p_at):
            out.curves.append({"code_length": length, "curve": "p_at_k", "x": k, "precision": float(value),
                               "recall": float("nan")})
        if 100 in ks:
            out.scalars["p_at_100"][length] = float(p_at[ks.index(100)])
        curve = precision_recall_curve(*args)
        for radius, p, r in zip(curve["radius"], curve["precision"], curve["recall"]):
            out.curves.append({"code_length": length, "curve": "pr", "x": int(radius), "precision": float(p),
                               "recall": float(r)})
    if not out.scalars["p_at_100"]:
        del out.scalars["p_at_100"]
    return out
