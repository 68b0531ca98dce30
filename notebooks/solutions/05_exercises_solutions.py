"""Solutions of notebooks/05_exercises.ipynb (for teachers; `use_solutions=True` loads them into the notebook).

Each function is one way to answer its exercise; the checks in nhllib.teaching.exercises accept any function that gives
the same results.
"""

import torch
import torch.nn.functional as F


def hamming_ranking(query, database):
    """Distances (L − q·b)/2 of every database code to the query, and the stable ranking by distance."""
    length = database.shape[1]
    distances = (length - database @ query) / 2
    order = torch.argsort(distances, stable=True)  # equal distances keep their database order
    return distances, order


def average_precision(distances, relevant, ties):
    """AP over the whole ranking; inside a tie group relevant items go first (optimistic), last (pessimistic)
    or stay in database order (index)."""
    within = {"index": lambda i: 0, "optimistic": lambda i: -relevant[i], "pessimistic": lambda i: relevant[i]}[ties]
    order = sorted(range(len(distances)), key=lambda i: (distances[i], within(i), i))
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if relevant[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions) if precisions else 0.0


def prefix_codes(h, code_lengths):
    """The first L columns of the longest continuous codes, binarised with sign(0) = +1, for every length L."""
    return {length: torch.where(h[:, :length] >= 0, 1, -1) for length in code_lengths}


def conflict_factor(g_short, g_long, short_length, num_lengths, beta=1.0):
    """δ on the shorter code's rows, the threshold τ = β‖g_s‖²/(K − 1), and α."""
    gs, gl = g_short[:short_length], g_long[:short_length]
    delta = float((gs * gl).sum())
    tau = beta * float((gs * gs).sum()) / (num_lengths - 1)
    alpha = tau / -delta if delta < 0 and -delta > tau else 1.0
    return delta, tau, alpha


def csq_loss(u, y, centers, lam):
    """CSQ: binary cross-entropy between (tanh u + 1)/2 and the class centre's (c + 1)/2, plus lam times the
    quantisation term mean((|tanh u| − 1)²)."""
    t = torch.tanh(u)
    target = y @ centers  # one-hot labels pick their class's centre
    return F.binary_cross_entropy((t + 1) / 2, (target + 1) / 2) + lam * (t.abs() - 1).pow(2).mean()


# ----------------------------------------------------------------------------- stretch exercises


def expected_average_precision(distances, relevant):
    """The AP averaged over every order inside each tie group, exactly: the j-th relevant item of a group of n
    items holding r relevant ones, after p items with H relevant, sits at the group's i-th place with probability
    C(i−1, j−1)·C(n−i, r−j)/C(n, r), and then contributes (H + j)/(p + i)."""
    from math import comb

    total_relevant = sum(relevant)
    if total_relevant == 0:
        return 0.0
    groups = {}
    for d, r in zip(distances, relevant):
        n, k = groups.get(d, (0, 0))
        groups[d] = (n + 1, k + r)
    before, hits_before, total = 0, 0, 0.0
    for d in sorted(groups):
        n, r = groups[d]
        for j in range(1, r + 1):
            for i in range(j, n - r + j + 1):
                total += comb(i - 1, j - 1) * comb(n - i, r - j) / comb(n, r) * (hits_before + j) / (before + i)
        before, hits_before = before + n, hits_before + r
    return total / total_relevant


def weight_step(alpha):
    """Cap each far pair by its adjacent pair, multiply down each column, normalise to sum K."""
    k = alpha.shape[0]
    capped = alpha.clone()
    for s in range(k):
        for l in range(s + 2, k):
            capped[s, l] = min(alpha[s, l], alpha[s, s + 1])
    weights = torch.ones(k, dtype=alpha.dtype)
    for l in range(k):
        for s in range(l):
            weights[l] = weights[l] * capped[s, l]
    return weights * k / weights.sum()
