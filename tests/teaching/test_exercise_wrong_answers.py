"""Wrong answers a class writes, run through the check cells of ``05_exercises.ipynb``: each must FAIL with a hint
naming its mistake, and the solutions must PASS the same cells.

Every wrong answer below is written as a student would write it (not derived from the checks' own catalogue of
mistakes), at least three per exercise, the five core ones and the two stretch ones.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nhllib.teaching import exercises

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "05_exercises.ipynb"


# ----------------------------------------------------------------------------- 1. Hamming ranking

def ranking_counts_agreements(query, database):
    distances = (database.shape[1] + database @ query) / 2
    return distances, torch.argsort(distances, stable=True)


def ranking_without_half(query, database):
    distances = database.shape[1] - database @ query
    return distances, torch.argsort(distances, stable=True)


def ranking_ties_reversed(query, database):
    distances = (database.shape[1] - database @ query) / 2
    return distances, torch.tensor(sorted(range(len(distances)), key=lambda i: (float(distances[i]), -i)))


def ranking_returns_ranks(query, database):
    distances = (database.shape[1] - database @ query) / 2
    return distances, torch.argsort(torch.argsort(distances, stable=True))


def ranking_farthest_first(query, database):
    distances = (database.shape[1] - database @ query) / 2
    return distances, torch.argsort(distances, descending=True, stable=True)


# ----------------------------------------------------------------------------- 2. AP with ties

def _ap(order, relevant, count_before=False, start=1, divide_by=None):
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=start):
        if relevant[i]:
            if not count_before:
                hits += 1
            total += hits / rank
            if count_before:
                hits += 1
    return total / (divide_by if divide_by is not None else max(sum(relevant), 1))


def _order(distances, relevant, ties):
    key = {"index": lambda i: 0, "optimistic": lambda i: -relevant[i], "pessimistic": lambda i: relevant[i]}[ties]
    return sorted(range(len(distances)), key=lambda i: (distances[i], key(i), i))


def ap_ignores_ties(distances, relevant, ties):
    return _ap(sorted(range(len(distances)), key=lambda i: distances[i]), relevant)


def ap_swaps_ties(distances, relevant, ties):
    swapped = {"optimistic": "pessimistic", "pessimistic": "optimistic"}.get(ties, ties)
    return _ap(_order(distances, relevant, swapped), relevant)


def ap_divides_by_database_size(distances, relevant, ties):
    return _ap(_order(distances, relevant, ties), relevant, divide_by=len(distances))


def ap_averages_every_rank(distances, relevant, ties):
    order = _order(distances, relevant, ties)
    return float(np.mean([sum(relevant[j] for j in order[:k]) / k for k in range(1, len(order) + 1)]))


def ap_counts_the_hit_late(distances, relevant, ties):
    return _ap(_order(distances, relevant, ties), relevant, count_before=True)


def ap_ranks_from_zero(distances, relevant, ties):
    return _ap(_order(distances, relevant, ties), relevant, start=0)


# ----------------------------------------------------------------------------- 3. prefix codes

def prefix_with_torch_sign(h, code_lengths):
    return {n: torch.sign(h[:, :n]) for n in code_lengths}


def prefix_zero_is_minus_one(h, code_lengths):
    return {n: torch.where(h[:, :n] > 0, 1, -1) for n in code_lengths}


def prefix_takes_the_last_bits(h, code_lengths):
    return {n: torch.where(h[:, -n:] >= 0, 1, -1) for n in code_lengths}


def prefix_not_binarised(h, code_lengths):
    return {n: h[:, :n] for n in code_lengths}


# ----------------------------------------------------------------------------- 4. the conflict test

def _rule(delta, tau, uncapped=False, divide_by_delta=False):
    if delta < 0 and (uncapped or -delta > tau):
        return delta, tau, tau / delta if divide_by_delta else tau / -delta
    return delta, tau, 1.0


def conflict_without_slicing(g_short, g_long, short_length, num_lengths, beta):
    delta = float((g_short * g_long).sum())
    return _rule(delta, beta * float((g_short ** 2).sum()) / (num_lengths - 1))


def conflict_divides_by_k(g_short, g_long, short_length, num_lengths, beta):
    gs, gl = g_short[:short_length], g_long[:short_length]
    return _rule(float((gs * gl).sum()), beta * float((gs ** 2).sum()) / num_lengths)


def conflict_alpha_above_one(g_short, g_long, short_length, num_lengths, beta):
    gs, gl = g_short[:short_length], g_long[:short_length]
    return _rule(float((gs * gl).sum()), beta * float((gs ** 2).sum()) / (num_lengths - 1), uncapped=True)


def conflict_negative_alpha(g_short, g_long, short_length, num_lengths, beta):
    gs, gl = g_short[:short_length], g_long[:short_length]
    return _rule(float((gs * gl).sum()), beta * float((gs ** 2).sum()) / (num_lengths - 1), divide_by_delta=True)


def conflict_norm_not_squared(g_short, g_long, short_length, num_lengths, beta):
    gs, gl = g_short[:short_length], g_long[:short_length]
    return _rule(float((gs * gl).sum()), beta * float(gs.norm()) / (num_lengths - 1))


# ----------------------------------------------------------------------------- 5. the CSQ loss

def _csq(u, y, centers, lam, reduction="mean", quant_on_u=False):
    t = torch.tanh(u)
    bce = F.binary_cross_entropy((t + 1) / 2, (y @ centers + 1) / 2, reduction=reduction)
    return bce + lam * ((u if quant_on_u else t).abs() - 1).pow(2).mean()


def csq_with_item(u, y, centers, lam):
    return _csq(u, y, centers, lam).item()


def csq_rewrapped(u, y, centers, lam):
    return torch.tensor(_csq(u, y, centers, lam).item())


def csq_detached_tanh(u, y, centers, lam):
    return _csq(u.detach(), y, centers, lam)


def csq_summed(u, y, centers, lam):
    return _csq(u, y, centers, lam, reduction="sum")


def csq_without_quantisation(u, y, centers, lam):
    return _csq(u, y, centers, 0.0)


def csq_with_sigmoid(u, y, centers, lam):
    t = torch.tanh(u)
    return F.binary_cross_entropy(torch.sigmoid(u), (y @ centers + 1) / 2) + lam * (t.abs() - 1).pow(2).mean()


def csq_quantises_u(u, y, centers, lam):
    return _csq(u, y, centers, lam, quant_on_u=True)


# ----------------------------------------------------------------------------- 6. expected AP (stretch)

def expected_ap_midpoint(distances, relevant):
    return (_ap(_order(distances, relevant, "optimistic"), relevant)
            + _ap(_order(distances, relevant, "pessimistic"), relevant)) / 2


def expected_ap_index(distances, relevant):
    return _ap(_order(distances, relevant, "index"), relevant)


def expected_ap_sampled(distances, relevant):
    rng = np.random.default_rng(1)
    values = []
    for _ in range(300):
        noise = rng.random(len(distances))
        values.append(_ap(sorted(range(len(distances)), key=lambda i: (distances[i], noise[i])), relevant))
    return float(np.mean(values))


# ----------------------------------------------------------------------------- 7. the weight step (stretch)

def _weights(alpha, cap="adjacent", total="K", along="column"):
    k = alpha.shape[0]
    a = alpha.clone()
    for s in range(k):
        for l in range(s + 2, k):
            if cap == "adjacent":
                a[s, l] = min(alpha[s, l], alpha[s, s + 1])
            elif cap == "running":
                a[s, l] = min(a[s, l], a[s, l - 1])
    w = torch.ones(k, dtype=alpha.dtype)
    for l in range(k):
        for s in range(l):
            if along == "column":
                w[l] = w[l] * a[s, l]
            else:
                w[s] = w[s] * a[s, l]
    return {"K": w * k / w.sum(), "1": w / w.sum(), "none": w}[total]


def weights_without_cap(alpha):
    return _weights(alpha, cap="none")


def weights_running_minimum(alpha):
    return _weights(alpha, cap="running")


def weights_sum_to_one(alpha):
    return _weights(alpha, total="1")


def weights_not_normalised(alpha):
    return _weights(alpha, total="none")


def weights_along_rows(alpha):
    return _weights(alpha, along="row")


WRONG_ANSWERS = {
    "hamming_ranking": [
        (ranking_counts_agreements, "bits that agree"),
        (ranking_without_half, "twice too large"),
        (ranking_ties_reversed, "stable sort"),
        (ranking_returns_ranks, "each item's rank"),
        (ranking_farthest_first, "from the farthest to the nearest"),
    ],
    "average_precision": [
        (ap_ignores_ties, "gave the database order"),
        (ap_swaps_ties, "swapped"),
        (ap_divides_by_database_size, "not by the database size"),
        (ap_averages_every_rank, "only at the ranks of the relevant items"),
        (ap_counts_the_hit_late, "count the relevant item itself"),
        (ap_ranks_from_zero, "ranks start at 1"),
    ],
    "prefix_codes": [
        (prefix_with_torch_sign, "zeros must become +1"),
        (prefix_zero_is_minus_one, "became −1"),
        (prefix_takes_the_last_bits, "LAST L outputs"),
        (prefix_not_binarised, "not binarised"),
    ],
    "conflict_factor": [
        (conflict_without_slicing, "slice g[:short_length]"),
        (conflict_divides_by_k, "not by K"),
        (conflict_alpha_above_one, "never exceeds 1"),
        (conflict_negative_alpha, "a positive factor"),
        (conflict_norm_not_squared, "SQUARED norm"),
    ],
    "csq_loss": [
        (csq_with_item, "cut from the graph"),
        (csq_rewrapped, "cut from the graph"),
        (csq_detached_tanh, "cut from the graph"),
        (csq_summed, "not summed"),
        (csq_without_quantisation, "quantisation term λ·mean((|t| − 1)²) is missing"),
        (csq_with_sigmoid, "not sigmoid(u)"),
        (csq_quantises_u, "uses the relaxed code t = tanh(u)"),
    ],
    "expected_average_precision": [
        (expected_ap_midpoint, "not the midpoint"),
        (expected_ap_index, "database order inside ties"),
        (expected_ap_sampled, "close but not exact"),
    ],
    "weight_step": [
        (weights_without_cap, "the cap is missing"),
        (weights_running_minimum, "not a running minimum"),
        (weights_sum_to_one, "not to 1"),
        (weights_not_normalised, "not normalised"),
        (weights_along_rows, "down COLUMN l"),
    ],
}


def _cells() -> list[str]:
    return ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def _check_cell(name: str) -> str:
    """The notebook's check cell of the exercise whose function is ``name`` (one expression)."""
    (cell,) = [c for c in _cells() if "check(" in c and c.rstrip().endswith(f", {name})")]
    return cell


def _graders(solutions=None) -> dict:
    """The namespace the check cells run in: the notebook's own set-up cells, parameters given."""
    namespace = {"use_solutions": solutions is not None, "solutions_path": "", "scoreboard_path": ""}
    setup = [c for c in _cells() if "Grader(" in c]
    assert len(setup) == 2, "expected the exercises' grader cell and the stretch grader cell"
    for cell in setup:
        exec(cell, namespace)
    if solutions is not None:
        namespace["grader"].solutions = namespace["stretch"].solutions = solutions
    return namespace


def test_every_exercise_has_at_least_three_wrong_answers():
    from nhllib.teaching.stretch import stretch_names

    assert set(WRONG_ANSWERS) == {*exercises.exercise_names(), *stretch_names()}
    assert all(len(answers) >= 3 for answers in WRONG_ANSWERS.values())


@pytest.mark.parametrize("name, wrong, hint", [(name, fn, hint) for name, answers in WRONG_ANSWERS.items()
                                               for fn, hint in answers],
                         ids=lambda v: v.__name__ if callable(v) else None)
def test_a_wrong_answer_fails_its_check_cell_with_its_hint(name, wrong, hint):
    namespace = _graders()
    namespace[name] = wrong
    result = eval(_check_cell(name), namespace)
    assert not result.passed, f"{wrong.__name__} passes the check of {name}"
    assert "likely mistake:" in result.message and hint in result.message, result.message


@pytest.mark.parametrize("name", list(WRONG_ANSWERS))
def test_the_solutions_pass_the_same_cells(name, solutions):
    namespace = _graders(solutions)
    def blank(*args):  # the notebook's unanswered function; the grader replaces it by the solution of its name
        raise NotImplementedError

    blank.__name__ = name
    namespace[name] = blank
    result = eval(_check_cell(name), namespace)
    assert result.passed, result.message


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions(ROOT / "notebooks" / "solutions" / "05_exercises_solutions.py")
