"""Checks of the course kit ``notebooks/05_exercises.ipynb``: a student's function against nhllib's own.

Each ``check_*`` function calls the student's function on seeded inputs, compares the result with what nhllib
computes for the same inputs, and returns a :class:`CheckResult`: passed or not, and a message that says what
was tried and, on failure, what was expected and what came back. A check never raises because of the student's
code: an exception inside it (``NotImplementedError`` for an exercise not started) is reported as a failure.
:class:`Grader` runs the checks and keeps a scoreboard for one notebook.

A wrong answer is also compared with what the usual mistakes give for the same inputs (slicing, ranks,
normalisation, reductions, detached losses, ...): when it matches one, the message names the mistake and its
fix (``likely mistake: ...``). The two stretch exercises are checked by :mod:`nhllib.teaching.stretch`.

The exercises (signatures the notebook asks for):

1. ``hamming_ranking(query, database) -> (distances, order)``: Hamming distances of ±1 codes and the ranking,
   ties broken by database position (checked against :class:`nhllib.retrieval.HammingIndex`).
2. ``average_precision(distances, relevant, ties) -> float``: AP of one query over the whole database with
   ``ties`` in ``"index"``, ``"optimistic"``, ``"pessimistic"`` (checked against
   :func:`nhllib.core.evaluate.mean_average_precision`).
3. ``prefix_codes(h, code_lengths) -> {L: codes}``: the ±1 codes of every nested length from the longest
   continuous codes, sign(0) = +1 (checked against :class:`nhllib.core.nested.NestedHashLayer` and the binarisation
   of :mod:`nhllib.core.evaluate`).
4. ``conflict_factor(g_short, g_long, short_length, num_lengths, beta) -> (delta, tau, alpha)``: the conflict
   test of one pair (checked against :func:`nhllib.core.weighting.conflict_weights`).
5. ``csq_loss(u, y, centers, lam) -> tensor``: the CSQ loss of one length (checked against
   :class:`nhllib.core.losses.CSQLoss`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import torch

from nhllib.core.evaluate import mean_average_precision
from nhllib.core.losses import CSQLoss
from nhllib.core.nested import NestedHashLayer
from nhllib.core.weighting import conflict_weights

__all__ = [
    "CheckResult",
    "Grader",
    "check_average_precision",
    "check_conflict_factor",
    "check_csq_loss",
    "check_hamming_ranking",
    "check_prefix_codes",
    "ap_of_order",
    "tie_order",
    "exercise_names",
    "load_solutions",
    "pick",
]

logger = logging.getLogger(__name__)

SOLUTIONS_FILE = "05_exercises_solutions.py"
_SOLUTION_DIRS = ("solutions", "notebooks/solutions")  # from notebooks/ (JupyterLab) or the repository root


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``passed``, the exercise's ``name`` and a human-readable ``message``."""

    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} · {self.name}: {self.message}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        color, mark = ("#1b7f3b", "&#10004; PASS") if self.passed else ("#b00020", "&#10008; FAIL")
        body = self.message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
        return (f'<div style="border-left: 6px solid {color}; padding: 6px 10px; margin: 4px 0">'
                f'<b style="color: {color}">{mark}</b> · <b>{self.name}</b><br>{body}</div>')


def _failure(name: str, exc: BaseException) -> CheckResult:
    if isinstance(exc, NotImplementedError):
        return CheckResult(name, False, "not implemented yet: write the function above, then run this cell again.")
    return CheckResult(name, False, f"your function raised {type(exc).__name__}: {exc}")


def _as_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _mismatch(name: str, message: str, expected, got, prefix: str = "") -> CheckResult:
    """A failed check showing what was expected under what was received."""
    return CheckResult(name, False, f"{message}\nexpected {prefix}{_short(expected)}\ngot      {prefix}{_short(got)}")


def _short(x: object, items: int = 12) -> str:
    flat = np.asarray(x).ravel()
    text = np.array2string(flat[:items], precision=4, separator=", ")
    return text[:-1] + ", ...]" if flat.size > items else text


def _random_codes(generator: torch.Generator, rows: int, length: int) -> torch.Tensor:
    return torch.randint(0, 2, (rows, length), generator=generator).float() * 2 - 1


# ----------------------------------------------------------------------------- naming the mistake


def _named_mistake(got, mistakes: dict[str, Callable[[], object]], close: Callable[[object, object], bool]) -> str:
    """The hint of the first known mistake whose result equals ``got`` (the student's), else "".

    ``mistakes`` maps a hint (what the mistake is, and the fix) to what a function making that mistake returns
    for the same inputs: a wrong answer that matches one of them is named, not only shown as numbers.
    """
    for hint, wrong in mistakes.items():
        try:
            if close(got, wrong()):
                return "\nlikely mistake: " + hint
        except Exception:  # noqa: BLE001 - a mistake that cannot even be computed here is not this one
            continue
    return ""


def _same_array(a, b) -> bool:
    a, b = _as_numpy(a).astype(float), _as_numpy(b).astype(float)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-9)


def _same_float(a, b) -> bool:
    return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9))


# ----------------------------------------------------------------------------- 1. Hamming ranking


def check_hamming_ranking(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(query (L,), database (N, L)) -> (distances (N,), order (N,))`` on random ±1 codes with many ties."""
    from nhllib.retrieval import HammingIndex

    name = "1 · Hamming ranking"
    generator = torch.Generator().manual_seed(seed)
    for case, (length, size) in enumerate(((8, 40), (16, 60), (32, 25))):
        database = _random_codes(generator, size, length)
        query = _random_codes(generator, 1, length)[0]
        index = HammingIndex(length)
        index.add(database)
        expected_d, expected_ids = index.search(query[None], k=size)
        expected_distances = ((length - database @ query) / 2).numpy()
        expected_order = expected_ids[0]
        try:
            got = fn(query.clone(), database.clone())
            distances, order = got
            distances, order = _as_numpy(distances).astype(float), _as_numpy(order).astype(np.int64)
        except Exception as exc:  # noqa: BLE001 - any error in the student's code is a failed check
            return _failure(name, exc)
        where = f"case {case + 1}: {length}-bit codes, {size} database items"
        dot = (database @ query).numpy()
        if distances.shape != (size,) or not np.array_equal(distances, expected_distances):
            hint = _named_mistake(distances, {
                "you counted the bits that agree, (L + q·b)/2; the distance counts those that differ, (L − q·b)/2.":
                    lambda: (length + dot) / 2,
                "the distances are twice too large: (L − q·b) counts each differing bit twice, divide by 2.":
                    lambda: length - dot,
                "you returned the inner product q·b (a similarity); the distance is (L − q·b)/2.": lambda: dot,
            }, _same_array)
            return _mismatch(name, f"{where}: the distances are wrong.{hint}", expected_distances, distances)
        if order.shape != (size,) or not np.array_equal(order, expected_order):
            by_distance = np.array_equal(np.sort(order), np.arange(size)) and \
                bool(np.all(np.diff(expected_distances[order]) >= 0))
            hint = _named_mistake(order, {
                "you returned each item's rank (its place in the ranking); `order` lists the database positions, "
                "nearest first (the argsort, not the argsort of the argsort).": lambda: np.argsort(expected_order),
            }, lambda a, b: np.array_equal(a, b))
            is_permutation = np.array_equal(np.sort(order), np.arange(size))
            if not hint and is_permutation and np.all(np.diff(expected_distances[order]) <= 0):
                hint = "\nlikely mistake: the ranking goes from the farthest to the nearest: sort by increasing distance."
            elif not hint and by_distance:
                hint = ("\nlikely mistake: items at equal distance are not in database order; use a stable sort "
                        "(torch.argsort(distances, stable=True)).")
            elif not hint and not np.array_equal(np.sort(order), np.arange(size)):
                hint = "\nthe order must hold every database position once."
            return _mismatch(name, f"{where}: the ranking is wrong. Sort by distance, and break ties by "
                             f"database position (a stable sort).{hint}", expected_order, order)
    return CheckResult(name, True, "distances and stable ranking agree with nhllib.retrieval.HammingIndex on "
                       "3 databases (8, 16 and 32 bits).")


# ----------------------------------------------------------------------------- 2. AP with ties


def ap_of_order(relevant: Sequence[int], order: Sequence[int]) -> float:
    """AP of one ranking (``order`` lists item positions, best first): the mean over the relevant items of the
    precision at their rank; 0 without relevant items. The plain definition, used to name mistakes."""
    hits, total = 0, 0.0
    for rank, item in enumerate(order, start=1):
        if relevant[item]:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def tie_order(distances: Sequence[int], relevant: Sequence[int], ties: str) -> list[int]:
    """Item positions by distance, ordered inside each tie group by the rule ``ties`` (index, optimistic,
    pessimistic)."""
    within = {"index": lambda i: 0, "optimistic": lambda i: -relevant[i], "pessimistic": lambda i: relevant[i]}[ties]
    return sorted(range(len(distances)), key=lambda i: (distances[i], within(i), i))


def _ap_mistakes(distances: list[int], relevant: list[int], ties: str) -> dict[str, Callable[[], float]]:
    order = tie_order(distances, relevant, ties)
    other = {"optimistic": "pessimistic", "pessimistic": "optimistic"}.get(ties)
    precisions = [sum(relevant[j] for j in order[:k]) / k for k in range(1, len(order) + 1)]
    hits_at = [sum(relevant[j] for j in order[:k]) for k in range(1, len(order) + 1)]
    mistakes = {}
    if ties != "index":
        mistakes[f"ties={ties!r} gave the database order: inside a tie group the {ties} rule puts the relevant "
                 f"items {'first' if ties == 'optimistic' else 'last'}."] = \
            lambda: ap_of_order(relevant, tie_order(distances, relevant, "index"))
    if other:
        mistakes["optimistic and pessimistic are swapped: optimistic puts the relevant items of a tie first."] = \
            lambda: ap_of_order(relevant, tie_order(distances, relevant, other))
    mistakes.update({
        "normalisation: divide the sum of precisions by the number of relevant items, not by the database size.":
            lambda: ap_of_order(relevant, order) * sum(relevant) / len(order),
        "you averaged the precision at every rank; AP averages it only at the ranks of the relevant items.":
            lambda: float(np.mean(precisions)),
        "count the relevant item itself: the precision at its rank is (relevant items up to and including it) "
        "/ rank; you counted only those before it.":
            lambda: float(np.mean([(h - 1) / k for k, h in enumerate(hits_at, start=1)
                                   if relevant[order[k - 1]]])),
        "you sorted the items by decreasing distance; the ranking starts at the nearest item.":
            lambda: ap_of_order(relevant, list(reversed(tie_order(distances, relevant, {"optimistic": "pessimistic",
                                                                                         "pessimistic": "optimistic"}
                                                                  .get(ties, ties))))),
    })
    return mistakes


def check_average_precision(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(distances (N,), relevant (N,) 0/1, ties) -> float`` for the three tie rules, whole database."""
    name = "2 · average precision with ties"
    for case, (distances, relevant) in enumerate(_ap_cases(seed)):
        for ties in ("index", "optimistic", "pessimistic"):
            expected = _library_ap(distances, relevant, ties, seed)
            try:
                got = float(fn(list(distances), list(relevant), ties))
            except ZeroDivisionError as exc:
                return CheckResult(name, False, f"case {case + 1}, ties={ties!r}: your function raised "
                                   f"ZeroDivisionError: {exc}\nlikely mistake: ranks start at 1 (enumerate(order, "
                                   f"start=1)); the precision at rank k is hits / k.")
            except Exception as exc:  # noqa: BLE001
                return _failure(name, exc)
            if not np.isclose(got, expected, atol=1e-6):
                hint = _named_mistake(got, _ap_mistakes(list(distances), list(relevant), ties), _same_float)
                return CheckResult(name, False, f"case {case + 1}, ties={ties!r}: expected AP {expected:.6f}, got "
                                   f"{got:.6f}.\ndistances {distances}\nrelevant  {relevant}{hint}")
    return CheckResult(name, True, f"AP agrees with nhllib.core.evaluate.mean_average_precision for "
                       f"{len(_ap_cases(seed))} rankings under the index, optimistic and pessimistic tie rules.")


def _ap_cases(seed: int) -> list[tuple[list[int], list[int]]]:
    """A hand-made ranking with large tie groups, then three random ones (at least one relevant item each)."""
    rng = np.random.default_rng(seed)
    cases = [([0, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3], [1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1])]
    for _ in range(3):
        size = int(rng.integers(10, 30))
        distances = rng.integers(0, 5, size).tolist()
        relevant = (rng.random(size) < 0.35).astype(int).tolist()
        relevant[int(rng.integers(size))] = 1
        cases.append((distances, relevant))
    return cases


def _library_ap(distances: Sequence[int], relevant: Sequence[int], ties: str, seed: int = 0) -> float:
    """nhllib's AP of one query whose database items lie at ``distances`` (codes built at those distances)."""
    from nhllib.teaching.tour import codes_at_distances

    query = torch.tensor([1.0, -1, 1, 1, -1, 1, -1, -1])
    db = codes_at_distances(query, list(distances), seed=seed)
    db_labels = torch.nn.functional.one_hot(1 - torch.tensor(list(relevant)), 2).float()
    return mean_average_precision(query[None], torch.tensor([[1.0, 0.0]]), db, db_labels, ties=ties)


# ----------------------------------------------------------------------------- 3. prefix codes


def check_prefix_codes(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(h (B, L_K) continuous codes, code_lengths) -> {L: (B, L) ±1 codes}`` with sign(0) = +1."""
    name = "3 · nested prefix codes"
    for case, lengths in enumerate(((8, 16, 32), (4, 12, 20, 64))):
        with torch.random.fork_rng(devices=[]):  # the layer's initialisation must not move the caller's RNG
            torch.manual_seed(seed + case)
            layer = NestedHashLayer(in_features=10, code_lengths=lengths)
        features = torch.randn(6, 10, generator=torch.Generator().manual_seed(seed + case))
        with torch.no_grad():
            outputs = layer(features)
            longest = outputs[-1].clone()
            longest[0, :4] = 0.0  # exact zeros: sign(0) must be +1
            outputs = [longest[:, :length] for length in lengths]
        expected = {length: torch.where(u >= 0, 1, -1) for length, u in zip(lengths, outputs)}
        try:
            got = fn(longest.clone(), list(lengths))
        except Exception as exc:  # noqa: BLE001
            return _failure(name, exc)
        if not isinstance(got, dict) or sorted(got) != sorted(lengths):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            return CheckResult(name, False, f"case {case + 1}: return a dict with one entry per code length "
                               f"{list(lengths)}, got {keys}.")
        for length in lengths:
            codes = _as_numpy(got[length])
            if codes.shape != (6, length) or not np.array_equal(codes, expected[length].numpy()):
                hint = _named_mistake(codes, {
                    "zeros must become +1 (torch.sign gives 0, a third value): use torch.where(h >= 0, 1, -1).":
                        lambda: torch.sign(longest[:, :length]),
                    "sign(0) = +1: an output of exactly 0 became −1 (use >= 0, not > 0).":
                        lambda: torch.where(longest[:, :length] > 0, 1, -1),
                    "you took the LAST L outputs; the code of length L is the first L outputs (a prefix).":
                        lambda: torch.where(longest[:, -length:] >= 0, 1, -1),
                    "the codes are not binarised: return ±1 values, not the continuous outputs.":
                        lambda: longest[:, :length],
                }, _same_array)
                return _mismatch(name, f"case {case + 1}, {length} bits: wrong codes.{hint}",
                                 expected[length][0].numpy(), codes[0] if codes.ndim == 2 else codes, "row 0 ")
    return CheckResult(name, True, "the codes of every length match nhllib.core.nested.NestedHashLayer, binarised with "
                       "sign(0) = +1, for 2 layers.")


# ----------------------------------------------------------------------------- 4. the conflict test


def _conflict_mistakes(g_short, g_long, short_length, num_lengths, beta) -> dict[str, Callable[[], tuple]]:
    gs, gl = g_short[:short_length], g_long[:short_length]
    delta, own = float((gs * gl).sum()), float(gs.pow(2).sum())

    def rule(d, t, cap=True, sign=-1.0):
        damp = d < 0 and (-d > t or not cap)
        return d, t, (t / (sign * d) if damp else 1.0)

    full_delta, full_own = float((g_short * g_long).sum()), float(g_short.pow(2).sum())
    return {
        "δ and τ must use only the first L_s rows (the rows both codes share): slice g[:short_length] first.":
            lambda: rule(full_delta, beta * full_own / (num_lengths - 1)),
        "τ divides by K − 1 (the number of OTHER lengths), not by K.":
            lambda: rule(delta, beta * own / num_lengths),
        "τ uses the shorter code's own gradient, ‖g_s[:L_s]‖², not the longer one's.":
            lambda: rule(delta, beta * float(gl.pow(2).sum()) / (num_lengths - 1)),
        "τ uses the SQUARED norm ‖g_s[:L_s]‖², not the norm.":
            lambda: rule(delta, beta * own ** 0.5 / (num_lengths - 1)),
        "α = 1 unless the conflict is larger than τ (−δ > τ): the rule only damps, α never exceeds 1.":
            lambda: rule(delta, beta * own / (num_lengths - 1), cap=False),
        "α = τ/(−δ), a positive factor: you divided by δ, which is negative in a conflict.":
            lambda: rule(delta, beta * own / (num_lengths - 1), sign=1.0),
    }


def check_conflict_factor(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(g_short (L_K, d), g_long (L_K, d), short_length, num_lengths, beta) -> (delta, tau, alpha)``.

    Half of the cases give ``g_short`` non-zero rows beyond ``short_length``: an answer that does not cut the
    gradients to the first L_s rows fails there (with zeros there, it would pass by luck)."""
    name = "4 · the conflict test"
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for num_lengths, short_length, longest, beta in ((4, 8, 32, 1.0), (5, 16, 64, 1.0), (3, 4, 16, 0.5),
                                                     (2, 8, 16, 2.0)):
        for tail in (False, True):
            g_short = torch.zeros(longest, 6, dtype=torch.float64)
            g_short[:short_length] = torch.randn(short_length, 6, generator=generator, dtype=torch.float64)
            if tail:  # rows the shorter code does not own: the rule must not look at them
                g_short[short_length:] = torch.randn(longest - short_length, 6, generator=generator,
                                                     dtype=torch.float64)
            for scale in (0.2, 3.0, -0.1, -3.0):  # aligned, strongly aligned, weak and strong conflicts
                noise = torch.randn(longest, 6, generator=generator, dtype=torch.float64)
                cases.append((g_short, scale * g_short + 0.3 * noise, short_length, num_lengths, beta))
    for case, (g_short, g_long, short_length, num_lengths, beta) in enumerate(cases):
        lengths = (short_length, *range(short_length + 1, short_length + num_lengths))  # only L_s matters
        grads = torch.zeros(num_lengths, lengths[-1], g_short.shape[1], dtype=torch.float64)
        grads[0, :short_length] = g_short[:short_length]
        grads[1, :short_length] = g_long[:short_length]
        _, stats = conflict_weights(grads, lengths, beta=beta)
        expected = (float(stats.dot[0, 1]), beta * float(g_short[:short_length].pow(2).sum()) / (num_lengths - 1),
                    float(stats.alpha[0, 1]))
        try:
            got = tuple(float(v) for v in fn(g_short.clone(), g_long.clone(), short_length, num_lengths, beta))
        except Exception as exc:  # noqa: BLE001
            return _failure(name, exc)
        if len(got) != 3 or not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
            hint = _named_mistake(got, _conflict_mistakes(g_short, g_long, short_length, num_lengths, beta),
                                  lambda a, b: len(a) == 3 and np.allclose(a, b, rtol=1e-6, atol=1e-9))
            return CheckResult(name, False, f"case {case + 1} (L_s = {short_length}, K = {num_lengths}, β = {beta}): "
                               f"expected (δ, τ, α) = ({expected[0]:.4f}, {expected[1]:.4f}, {expected[2]:.4f}), got "
                               f"{tuple(round(v, 4) for v in got)}. δ and τ use only the first L_s rows; "
                               f"α = τ/(−δ) when δ < 0 and −δ > τ, else 1.{hint}")
    damped = sum(1 for g_s, g_l, s, k, b in cases if float((g_s[:s] * g_l[:s]).sum()) < 0)
    return CheckResult(name, True, f"δ, τ and α agree with nhllib.core.weighting.conflict_weights on {len(cases)} "
                       f"pairs ({damped} of them in conflict).")


# ----------------------------------------------------------------------------- 5. a loss

_DETACHED = ("the loss was cut from the graph (.item(), float(), .detach(), .numpy() or a Python number "
             "somewhere): keep torch operations on u to the end, so that the gradient reaches u.")


def _csq_mistakes(u, y, centers, lam) -> dict[str, Callable[[], torch.Tensor]]:
    import torch.nn.functional as F

    t, target = torch.tanh(u), (y @ centers + 1) / 2
    quant = (t.abs() - 1).pow(2).mean()
    return {
        "reduction: the BCE is averaged over every bit of every sample (reduction='mean'), not summed.":
            lambda: F.binary_cross_entropy((t + 1) / 2, target, reduction="sum") + lam * quant,
        "reduction: the BCE is averaged over the bits too, not only over the samples (sum over bits, then mean).":
            lambda: F.binary_cross_entropy((t + 1) / 2, target, reduction="none").sum(1).mean() + lam * quant,
        "the quantisation term λ·mean((|t| − 1)²) is missing.":
            lambda: F.binary_cross_entropy((t + 1) / 2, target),
        "the quantisation term uses the relaxed code t = tanh(u), not u: mean((|tanh u| − 1)²).":
            lambda: F.binary_cross_entropy((t + 1) / 2, target) + lam * (u.abs() - 1).pow(2).mean(),
        "the relaxation is (tanh(u) + 1)/2, not sigmoid(u) (which equals (tanh(u/2) + 1)/2).":
            lambda: F.binary_cross_entropy(torch.sigmoid(u), target) + lam * quant,
    }


def check_csq_loss(fn: Callable, seed: int = 0) -> CheckResult:
    """``fn(u (B, L), y (B, C) one-hot, centers (C, L) ±1, lam) -> 0-dim tensor``, value and gradient."""
    name = "5 · the CSQ loss"
    generator = torch.Generator().manual_seed(seed)
    for case, (length, classes, lam) in enumerate(((16, 10, 1e-4), (8, 4, 0.5), (32, 10, 0.0))):
        reference = CSQLoss(length, classes, num_train=8, seed=seed, lam=lam)
        u = torch.randn(8, length, generator=generator, dtype=torch.float64) * 2
        y = torch.nn.functional.one_hot(torch.randint(classes, (8,), generator=generator), classes).double()
        u_ref = u.clone().requires_grad_(True)
        expected = reference(u_ref, y, torch.arange(8))
        expected.backward()
        u_student = u.clone().requires_grad_(True)
        centers = reference.centers.clone().double()
        where = f"case {case + 1} (L = {length}, C = {classes}, lam = {lam})"
        try:
            got = fn(u_student, y.clone(), centers.clone(), lam)
        except Exception as exc:  # noqa: BLE001
            if "between 0 and 1" in str(exc):
                return CheckResult(name, False, f"{where}: your function raised {type(exc).__name__}: {exc}\n"
                                   "likely mistake: BCE compares probabilities: map the ±1 centre to (c + 1)/2 "
                                   "and the relaxed code to (tanh(u) + 1)/2.")
            return _failure(name, exc)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            detached = isinstance(got, (float, int, np.floating, np.ndarray))
            return CheckResult(name, False, f"{where}: return a one-element torch tensor (the mean "
                               f"loss), got {type(got).__name__}"
                               f"{' of shape ' + str(tuple(got.shape)) if isinstance(got, torch.Tensor) else ''}."
                               + ("\nlikely mistake: " + _DETACHED if detached else ""))
        if not np.isclose(float(got.detach()), float(expected.detach()), rtol=1e-6, atol=1e-8):
            with torch.no_grad():
                hint = _named_mistake(got.detach(), _csq_mistakes(u, y, centers, lam), _same_float)
            return CheckResult(name, False, f"{where}: expected {float(expected.detach()):.6f}, got "
                               f"{float(got.detach()):.6f}.{hint}")
        if not got.requires_grad:
            return CheckResult(name, False, f"{where}: the value is right but the loss has no gradient.\n"
                               f"likely mistake: {_DETACHED}")
        try:
            got.reshape(()).backward()
        except Exception as exc:  # noqa: BLE001
            return _failure(name, exc)
        if u_student.grad is None or not torch.allclose(u_student.grad, u_ref.grad, rtol=1e-5, atol=1e-9):
            return CheckResult(name, False, f"{where}: the value is right but the gradient with respect to u "
                               f"is not.\nlikely mistake: part of the loss was detached (.detach(), .item() or "
                               f"numpy inside): use torch operations on u throughout.")
    return CheckResult(name, True, "value and gradient agree with nhllib.core.losses.CSQLoss for 3 settings.")


# ----------------------------------------------------------------------------- notebook helpers


def load_solutions(path: str | Path | None = None) -> ModuleType:
    """Import the solutions file; by default ``solutions/05_exercises_solutions.py`` under the working
    directory (JupyterLab runs a notebook in ``notebooks/``) or ``notebooks/solutions/...`` (the repository
    root, as papermill and the tests run it)."""
    candidates = [Path(path)] if path is not None else [Path(d) / SOLUTIONS_FILE for d in _SOLUTION_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("exercise_solutions", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            logger.info("solutions loaded from %s", candidate)
            return module
    raise FileNotFoundError(f"no solutions file; looked for {', '.join(str(c) for c in candidates)} "
                            f"(working directory: {Path.cwd()})")


def pick(fn: Callable, solutions: ModuleType | None) -> Callable:
    """``fn`` itself, or the function of the same name in ``solutions`` when solutions are loaded."""
    if solutions is None:
        return fn
    try:
        return getattr(solutions, fn.__name__)
    except AttributeError:
        raise AttributeError(f"the solutions file has no function {fn.__name__!r}") from None


class Grader:
    """Runs the checks of one notebook and keeps their results for :meth:`scoreboard`.

    ``solutions`` (a module from :func:`load_solutions`, or None) replaces each student function by the
    solution of the same name, so the same notebook shows the expected results.
    """

    def __init__(self, solutions: ModuleType | None = None) -> None:
        self.solutions = solutions
        self.results: dict[str, CheckResult] = {}

    def check(self, check: Callable[[Callable], CheckResult], fn: Callable) -> CheckResult:
        result = check(pick(fn, self.solutions))
        self.results[result.name] = result
        return result

    def scoreboard(self) -> pd.DataFrame:
        """One row per exercise checked so far: ``result`` (PASS / FAIL) and the message's first line."""
        return pd.DataFrame([{"exercise": r.name, "result": "PASS" if r.passed else "FAIL",
                              "message": r.message.splitlines()[0]} for r in self.results.values()]
                            ).set_index("exercise") if self.results else pd.DataFrame(
                                columns=["result", "message"])

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results.values())

    def save_scoreboard(self, path: str | Path) -> Path:
        """Write every result as JSON (read by :func:`nhllib.study.scoreboard.judge_scoreboard`)."""
        from nhllib.store.results import atomic_write_text

        board = {"answers": "solutions" if self.solutions is not None else "notebook",
                 "expected": list(exercise_names()),
                 "results": [{"exercise": r.name, "passed": r.passed, "message": r.message}
                             for r in self.results.values()]}
        path = Path(path)
        atomic_write_text(path, json.dumps(board, indent=2, ensure_ascii=False) + "\n")
        return path


def exercise_names() -> Sequence[str]:
    """The function names the exercises ask for, in order."""
    return ("hamming_ranking", "average_precision", "prefix_codes", "conflict_factor", "csq_loss")
