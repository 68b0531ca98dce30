"""Checks of the two stretch exercises of ``notebooks/05_exercises.ipynb`` (for students who finish early).

6. ``expected_average_precision(distances, relevant) -> float``: the AP averaged over every random order inside
   each tie group, computed exactly (checked against :func:`nhllib.core.evaluate.mean_average_precision` with
   ``ties="expected"``).
7. ``weight_step(alpha) -> weights``: steps 4-6 of NHL's conflict rule, from the table of factors α to the
   per-length weights: the cap by the adjacent pair, the product down each column, the normalisation to sum K
   (checked against :func:`nhllib.core.weighting.weights_from_alpha`).

Like the five core checks, a wrong answer that matches a known mistake is named in the message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from nhllib.core.weighting import weights_from_alpha
from nhllib.teaching.exercises import (
    CheckResult, _ap_cases, _as_numpy, _failure, _library_ap, _mismatch, _named_mistake, _same_array, _same_float,
    ap_of_order, tie_order,
)

__all__ = ["check_expected_average_precision", "check_weight_step", "stretch_names"]


def stretch_names() -> Sequence[str]:
    """The function names the stretch exercises ask for, in order."""
    return ("expected_average_precision", "weight_step")


# ----------------------------------------------------------------------------- 6. the expected AP under ties


def _sampled_ap(distances: Sequence[int], relevant: Sequence[int], draws: int = 200, seed: int = 0) -> float:
    """A Monte Carlo estimate of the expected AP (random orders inside tie groups): close, never exact."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        noise = rng.random(len(distances))
        order = sorted(range(len(distances)), key=lambda i: (distances[i], noise[i]))
        values.append(ap_of_order(relevant, order))
    return float(np.mean(values))


def check_expected_average_precision(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(distances (N,), relevant (N,) 0/1) -> float``: the expected AP over random orders within ties."""
    name = "6 · expected AP under ties (stretch)"
    for case, (distances, relevant) in enumerate(_ap_cases(seed)):
        expected = _library_ap(distances, relevant, "expected", seed)
        try:
            got = float(fn(list(distances), list(relevant)))
        except Exception as exc:  # noqa: BLE001 - any error in the student's code is a failed check
            return _failure(name, exc)
        if not np.isclose(got, expected, rtol=0, atol=1e-9):
            optimistic, pessimistic = (ap_of_order(relevant, tie_order(distances, relevant, t))
                                       for t in ("optimistic", "pessimistic"))
            hint = _named_mistake(got, {
                "the expected AP is not the midpoint of the optimistic and pessimistic AP: precision is not linear "
                "in the rank, so average the precision of each relevant item over its possible places in its tie "
                "group.": lambda: (optimistic + pessimistic) / 2,
                "you kept the database order inside ties (ties='index'); the expected AP averages over every order.":
                    lambda: ap_of_order(relevant, tie_order(distances, relevant, "index")),
                "you put the relevant items first inside ties (optimistic); average over every order instead.":
                    lambda: optimistic,
            }, _same_float)
            if not hint and abs(got - expected) < 0.02:
                hint = ("\nlikely mistake: close but not exact, as a sampled average over random orders would be; "
                        "compute the expectation exactly: the j-th relevant item of a tie group of n items with r "
                        "relevant sits at its i-th place with probability C(i−1, j−1)·C(n−i, r−j)/C(n, r).")
            return CheckResult(name, False, f"case {case + 1}: expected AP {expected:.9f}, got {got:.9f}.\n"
                               f"distances {distances}\nrelevant  {relevant}{hint}")
    return CheckResult(name, True, f"the expected AP agrees with nhllib.core.evaluate.mean_average_precision "
                       f"(ties='expected') to 1e-9 for {len(_ap_cases(seed))} rankings.")


# ----------------------------------------------------------------------------- 7. the weight step


def _alpha_cases(seed: int) -> list[torch.Tensor]:
    """(K, K) tables of factors α ∈ (0, 1] above the diagonal (1 = no conflict), K = 3, 4, 5, with a far pair
    damped less than its adjacent pair so that the cap matters."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for k in (3, 4, 5, 4):
        alpha = torch.ones(k, k, dtype=torch.float64)
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
        values = 0.2 + 0.8 * torch.rand(k, k, generator=generator, dtype=torch.float64)
        keep = torch.rand(k, k, generator=generator) < 0.3  # some pairs without a conflict
        alpha = torch.where(upper & ~keep, values, alpha)
        alpha[0, 1], alpha[0, 2] = 0.3, 0.9  # α_{1,3} > α_{1,2}: the cap lowers it to 0.3
        cases.append(alpha)
    return cases


def _weight_mistakes(alpha: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    k = alpha.shape[0]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)

    def weights(capped: torch.Tensor, total: float | None = k, axis: int = 0) -> torch.Tensor:
        raw = torch.where(upper, capped, torch.ones_like(capped)).prod(dim=axis)
        return raw if total is None else raw * (total / raw.sum())

    capped = weights_from_alpha(alpha)[0]
    running = alpha.clone()
    for s in range(k):
        for l in range(s + 2, k):
            running[s, l] = min(float(running[s, l]), float(running[s, l - 1]))
    return {
        "the cap is missing: α_{s,l} ← min(α_{s,l}, α_{s,s+1}) for l ≥ s + 2 before the products.":
            lambda: weights(alpha),
        "the cap uses the adjacent pair's factor α_{s,s+1}, not a running minimum along the row.":
            lambda: weights(running),
        "normalisation: the weights sum to K (the number of lengths), not to 1.": lambda: weights(capped, 1.0),
        "the weights are not normalised: scale them by K / Σw so that they sum to K.":
            lambda: weights(capped, None),
        "w_l is the product down COLUMN l (over the shorter lengths s < l), not along row l.":
            lambda: weights(capped, k, axis=1),
    }


def check_weight_step(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(alpha (K, K) uncapped factors above the diagonal) -> weights (K,)``, summing to K."""
    name = "7 · the capped, normalised weight step (stretch)"
    for case, alpha in enumerate(_alpha_cases(seed)):
        expected = weights_from_alpha(alpha)[2]
        try:
            got = _as_numpy(fn(alpha.clone())).astype(float)
        except Exception as exc:  # noqa: BLE001
            return _failure(name, exc)
        if got.shape != expected.shape or not np.allclose(got, expected.numpy(), rtol=1e-6, atol=1e-9):
            hint = _named_mistake(got, _weight_mistakes(alpha), _same_array)
            return _mismatch(name, f"case {case + 1} (K = {alpha.shape[0]}): wrong weights.\nα table:\n"
                             f"{np.array2string(alpha.numpy(), precision=3)}{hint}", expected.numpy(), got)
    return CheckResult(name, True, f"the weights agree with nhllib.core.weighting.weights_from_alpha for "
                       f"{len(_alpha_cases(seed))} α tables (K = 3 to 5), cap and normalisation included.")
