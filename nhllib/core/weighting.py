"""Per-length loss weights: uniform, static, and the gradient-conflict ("dominance-aware") rule of NHL.

The conflict rule (docs/method.md §2.3), for code lengths L_1 < ... < L_K and g_k = ∂O_k/∂W, the gradient of length
k's objective with respect to the shared hash weight W (shape (L_K, d)):

1. for every pair s < l, compare the gradients on the rows the shorter code owns, W[:L_s]:
   δ_{s,l} = ⟨g_s[:L_s], g_l[:L_s]⟩ (and the cosine, logged only);
2. threshold τ_s = β·n_s²/(K−1), where n_s = ‖g_s[:L_s]‖ (``threshold_norm="own"``, the evident intent) or
   ‖g_1[:L_s]‖ = ‖g_1‖ (``"shortest"``, what the released code computes);
3. α_{s,l} = τ_s/(−δ_{s,l}) when δ_{s,l} < 0 and −δ_{s,l} > τ_s, else 1;
4. cap: α_{s,l} ← min(α_{s,l}, α_{s,s+1}) for l ≥ s+2 (the adjacent pair's factor, not a running minimum);
5. w_1 = 1, w_l = ∏_{s<l} α_{s,l} (a product down each column of the α table);
6. normalise w ← K·w/Σw, so the weights sum to K; they are constants (no gradient flows through them).

Gradients are taken with ``torch.autograd.grad``, never through the backbone and without writing any ``.grad``, so
nothing stale reaches the optimizer step (the released code leaves one). Given the codes and the features that fed
the layer, one backward pass through the losses yields every length's gradient (``∂O_k/∂W[:L_k] = (∂O_k/∂h_k)ᵀ f``);
otherwise each length's gradient with respect to the shared weight is taken on its own (K passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from nhllib.checks import check_positive_int, validate_code_lengths
from nhllib.vocab import THRESHOLD_NORMS

#: ∂O_k/∂h_k per length -> ∂O_k/∂z_k per length (the head's linear outputs z; code centring).
GradMap = Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]]
#: Stacked per-length gradients -> the same averaged over data-parallel ranks.
GradReduce = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "ConflictStats",
    "conflict_weights",
    "ConflictRule",
    "weights_from_alpha",
    "WeightingResult",
    "WeightingState",
    "FIRST_STEP",
    "WeightingStrategy",
    "Uniform",
    "Static",
    "ConflictAware",
    "THRESHOLD_NORMS",
]




@dataclass(frozen=True)
class ConflictStats:
    """Per-pair statistics of one step; every matrix is (K, K) and meaningful above the diagonal (s < l).

    ``dot[s, l]`` and ``cosine[s, l]`` compare g_s and g_l on the first L_s rows; ``conflict[s, l]`` is
    ``dot < 0``; ``alpha[s, l]`` is the capped scale factor; ``raw_weights`` are the products before
    normalisation and ``weights`` the normalised weights (sum K). Tensors are detached and stay on the
    gradients' device, so collecting them costs no host synchronisation.
    """

    code_lengths: tuple[int, ...]
    dot: torch.Tensor
    cosine: torch.Tensor
    conflict: torch.Tensor
    alpha: torch.Tensor
    raw_weights: torch.Tensor
    weights: torch.Tensor

    def pairs(self) -> list[tuple[int, int]]:
        """The (s, l) index pairs with s < l."""
        k = len(self.code_lengths)
        return [(s, l) for s in range(k) for l in range(s + 1, k)]


def conflict_weights(
    grads: Sequence[torch.Tensor] | torch.Tensor,
    code_lengths: Sequence[int],
    beta: float = 1.0,
    threshold_norm: str = "own",
) -> tuple[torch.Tensor, ConflictStats]:
    """Apply the NHL conflict rule to per-length gradients of the shared weight; see the module docstring.

    ``grads`` holds one gradient of the shared weight per length (shape ``(L_K, in_features)``), as a
    sequence or stacked into one ``(K, L_K, in_features)`` tensor. Returns ``(weights, stats)``:
    ``weights`` a detached float tensor of K entries summing to K.
    """
    rule = ConflictRule(code_lengths, beta, threshold_norm)
    return rule(grads)


class ConflictRule:
    """The conflict rule for fixed code lengths, β and threshold norm, its index tables built once.

    ``rule(grads) -> (weights, stats)`` is :func:`conflict_weights`; :class:`ConflictAware` keeps one per
    device so that a training step spends its time on the gradients, not on rebuilding constants.
    """

    def __init__(self, code_lengths: Sequence[int], beta: float = 1.0, threshold_norm: str = "own",
                 device: torch.device | str | None = None) -> None:
        self.code_lengths = validate_code_lengths(code_lengths)
        if threshold_norm not in THRESHOLD_NORMS:
            raise ValueError(f"threshold_norm must be one of {THRESHOLD_NORMS}, got {threshold_norm!r}")
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        self.beta = float(beta)
        self.threshold_norm = threshold_norm
        self.device = torch.device("cpu") if device is None else torch.device(device)
        k = len(self.code_lengths)
        self._last_rows = torch.tensor([n - 1 for n in self.code_lengths], device=self.device)
        self._index = torch.arange(k, device=self.device)
        self._upper, self._beyond_adjacent = _triangles(k, self.device)

    def __call__(self, grads: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, ConflictStats]:
        return self.from_rows(self._stack(grads).transpose(0, 1))

    def from_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, ConflictStats]:
        """The rule on the gradients laid out row-major: ``rows[r, k]`` is row r of g_k, shape (L_K, K, d)."""
        lengths = self.code_lengths
        k = len(lengths)
        if rows.device != self.device:
            return ConflictRule(lengths, self.beta, self.threshold_norm, rows.device).from_rows(rows)
        # All prefix-restricted inner products at once: the per-row Gram matrices of the K gradients, cumulated
        # over rows and read at row L_s - 1, give pref[s, a, b] = <g_a[:L_s], g_b[:L_s]>.
        pref = torch.matmul(rows, rows.mT).cumsum(0)[self._last_rows]
        idx, upper = self._index, self._upper
        dot = pref[idx, idx, :]  # dot[s, l] = <g_s[:L_s], g_l[:L_s]>
        own_sq = dot.diagonal()  # ‖g_s[:L_s]‖²
        long_sq = pref.diagonal(dim1=1, dim2=2)  # long_sq[s, l] = ‖g_l[:L_s]‖²
        reference_sq = own_sq if self.threshold_norm == "own" else pref[:, 0, 0]
        tau = reference_sq * (self.beta / max(k - 1, 1))
        dot = torch.where(upper, dot, 0.0)
        norms = (own_sq[:, None] * long_sq).sqrt()
        tiny = torch.finfo(dot.dtype).tiny
        cosine = torch.where(upper & (norms > 0), dot / norms.clamp_min(tiny), 0.0)
        # α = τ/(−δ) only where the longer objective pulls against the shorter one by more than its share τ.
        conflict = upper & (dot < 0)
        damp = conflict & (-dot > tau[:, None])
        alpha = torch.where(damp, tau[:, None] / (-dot).clamp_min(tiny), 1.0)
        alpha, raw_weights, weights = _weights_from_alpha(alpha, upper, self._beyond_adjacent)
        return weights, ConflictStats(lengths, dot, cosine, conflict, alpha, raw_weights, weights)

    def _stack(self, grads: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        lengths = self.code_lengths
        k = len(lengths)
        if isinstance(grads, torch.Tensor):
            if grads.ndim != 3 or grads.shape[0] != k or grads.shape[1] < lengths[-1]:
                raise ValueError(f"stacked grads must have shape (K={k}, >= {lengths[-1]}, in_features), "
                                 f"got {tuple(grads.shape)}")
            return grads.detach().float()[:, : lengths[-1]]
        if len(grads) != k:
            raise ValueError(f"grads must hold one gradient per code length ({k}), got {len(grads)}")
        for idx, grad in enumerate(grads):
            if grad.ndim != 2 or grad.shape[0] < lengths[-1]:
                raise ValueError(
                    f"grads[{idx}] must be the gradient of the shared weight, shape ({lengths[-1]}, in_features), "
                    f"got {tuple(grad.shape)}"
                )
        return torch.stack([g.detach().float()[: lengths[-1]] for g in grads])


def _triangles(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the pairs s < l and of the non-adjacent pairs s + 2 <= l."""
    ones = torch.ones(k, k, dtype=torch.bool, device=device)
    return torch.triu(ones, diagonal=1), torch.triu(ones, diagonal=2)


def weights_from_alpha(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 4-6 of the rule: cap, product down each column, normalisation to sum K.

    ``alpha`` is the (K, K) table of uncapped factors (read above the diagonal). Returns the capped table,
    the raw products and the normalised weights.
    """
    k = alpha.shape[0]
    if alpha.shape != (k, k):
        raise ValueError(f"alpha must be a square (K, K) table, got {tuple(alpha.shape)}")
    return _weights_from_alpha(alpha, *_triangles(k, alpha.device))


def _weights_from_alpha(alpha: torch.Tensor, upper: torch.Tensor,
                        beyond_adjacent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = alpha.shape[0]
    adjacent = torch.cat([alpha.diagonal(offset=1), alpha.new_ones(1)])  # α_{s,s+1} per row s
    capped = torch.where(beyond_adjacent, torch.minimum(alpha, adjacent[:, None]), alpha)
    # w_l = Π_{s<l} α_{s,l}: the product down column l of the strict upper triangle.
    raw_weights = torch.where(upper, capped, 1.0).prod(dim=0)
    weights = raw_weights * (k / raw_weights.sum())
    return capped, raw_weights, weights


@dataclass(frozen=True)
class WeightingState:
    """What a weighting strategy carries from one step to the next; the training loop holds it, not the strategy.

    ``step``: how many steps the strategy has weighted so far. ``weights``: the last weights the conflict rule
    computed and applied (held on the steps in between when it runs every few steps), else None.
    """

    step: int = 0
    weights: torch.Tensor | None = None

    def advanced(self, weights: torch.Tensor | None = None) -> WeightingState:
        """The state after this step: one step more, ``weights`` held (or the held ones kept)."""
        return WeightingState(self.step + 1, self.weights if weights is None else weights)


#: The state before the first step of a run.
FIRST_STEP = WeightingState()


@dataclass(frozen=True)
class WeightingResult:
    """What a weighting strategy returns for one step.

    ``weights``: detached (K,) weights of the per-length objectives. ``stats``: the conflict statistics when
    they were computed this step, else None. ``code_grads``: ∂O_k/∂h_k per length when the strategy had to take
    them anyway (the conflict rule's one-pass gradients), else None; they let the step start its backward at
    the codes instead of going through the losses a second time. ``state``: what the next step passes back in.
    """

    weights: torch.Tensor
    stats: ConflictStats | None = None
    code_grads: tuple[torch.Tensor, ...] | None = None
    state: WeightingState = FIRST_STEP

    def backward_inputs(self, objectives: torch.Tensor, codes: Sequence[torch.Tensor],
                        scale: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(tensors, grad_tensors)`` for ``torch.autograd.backward``: the gradient of Σ_k w_k O_k.

        ``scale`` multiplies the seed gradient by a loss scale (mixed precision); the scaled backward always goes
        through the objectives, where the scale protects the half-precision gradients of the losses.
        """
        if scale is None and self.code_grads is not None:
            # ∂(Σ w_k O_k)/∂h_k = w_k ∂O_k/∂h_k (same gradients, one traversal of the losses fewer).
            return list(codes), [w * g for w, g in zip(self.weights, self.code_grads)]
        return [objectives], [self.weights if scale is None else scale(self.weights)]


class WeightingStrategy:
    """Interface used by training: ``strategy(objectives, shared_weight, codes, features, *, linear_grads,
    reduce_gradients, state) -> WeightingResult``.

    ``objectives`` are the K per-length objectives of the current step (0-dim tensors stacked, still attached to
    the graph); ``shared_weight`` is the nested layer's weight, or None when the head has none (``heads``);
    ``codes`` and ``features`` are the step's codes and the features they came from, for strategies that
    take per-length gradients. ``linear_grads`` maps ∂O_k/∂h_k to the gradients of the head's linear outputs
    (None when the codes are those outputs: no centring); ``reduce_gradients`` averages stacked per-length
    gradients over data-parallel ranks (None in one process); ``state`` is the previous step's
    ``result.state`` (:data:`FIRST_STEP` at the start of a run). A strategy keeps nothing between calls: what
    one step leaves for the next travels in the result's ``state``. ``monitors_conflicts`` says whether the
    results carry conflict statistics.
    """

    monitors_conflicts = False

    def __call__(self, objectives: torch.Tensor, shared_weight: torch.nn.Parameter | None,
                 codes: Sequence[torch.Tensor] | None = None, features: torch.Tensor | None = None, *,
                 linear_grads: GradMap | None = None, reduce_gradients: GradReduce | None = None,
                 state: WeightingState = FIRST_STEP) -> WeightingResult:
        raise NotImplementedError


class Uniform(WeightingStrategy):
    """All weights 1: the plain sum of the per-length objectives (the paper's "w/o A")."""

    def __call__(self, objectives: torch.Tensor, shared_weight: torch.nn.Parameter | None,
                 codes: Sequence[torch.Tensor] | None = None, features: torch.Tensor | None = None, *,
                 linear_grads: GradMap | None = None, reduce_gradients: GradReduce | None = None,
                 state: WeightingState = FIRST_STEP) -> WeightingResult:
        return WeightingResult(torch.ones(objectives.shape[0], device=objectives.device), state=state.advanced())


class Static(WeightingStrategy):
    """Fixed weights given by the user, e.g. the reference snapshot's heuristic (2.0, 1.5, 1.0); used as given."""

    def __init__(self, weights: Sequence[float]) -> None:
        values = torch.as_tensor(list(weights), dtype=torch.float32)
        if values.ndim != 1 or values.numel() == 0 or not torch.isfinite(values).all() or (values <= 0).any():
            raise ValueError(f"Static weights must be a non-empty sequence of positive finite floats, got {weights!r}")
        self.weights = values

    def __call__(self, objectives: torch.Tensor, shared_weight: torch.nn.Parameter | None,
                 codes: Sequence[torch.Tensor] | None = None, features: torch.Tensor | None = None, *,
                 linear_grads: GradMap | None = None, reduce_gradients: GradReduce | None = None,
                 state: WeightingState = FIRST_STEP) -> WeightingResult:
        if objectives.shape[0] != self.weights.numel():
            raise ValueError(
                f"Static has {self.weights.numel()} weights but the model has {objectives.shape[0]} code lengths"
            )
        return WeightingResult(self.weights.to(objectives.device), state=state.advanced())


class ConflictAware(WeightingStrategy):
    """The NHL gradient-conflict weighting, or a monitor of conflicts that applies uniform weights.

    Parameters
    ----------
    code_lengths:
        The nested lengths, shortest first.
    beta, threshold_norm:
        See :func:`conflict_weights`.
    apply:
        True: return the conflict weights (the paper's "A"). False: monitor only; compute and expose the
        statistics but return ones, so conflicts can be measured in runs that do not reweight.
    every:
        Compute the statistics every ``every``-th step (counted by ``state.step``); in between, reuse the last
        weights (``apply=True``, held in ``state.weights``) or ones, and return no statistics.

    The call's ``reduce_gradients`` is applied to the stacked per-length gradients before the rule; data-parallel
    training passes the average over ranks (:meth:`nhllib.training.distributed.DataParallel.reduce_gradients`) so that
    every rank applies the weights one process would.
    """

    monitors_conflicts = True

    def __init__(
        self,
        code_lengths: Sequence[int],
        beta: float = 1.0,
        threshold_norm: str = "own",
        apply: bool = True,
        every: int = 1,
    ) -> None:
        self._rule = ConflictRule(code_lengths, beta, threshold_norm)  # validates all three
        check_positive_int("every", every)
        self.code_lengths = self._rule.code_lengths
        self.beta = self._rule.beta
        self.threshold_norm = threshold_norm
        self.apply = apply
        self.every = every

    def __call__(self, objectives: torch.Tensor, shared_weight: torch.nn.Parameter | None,
                 codes: Sequence[torch.Tensor] | None = None, features: torch.Tensor | None = None, *,
                 linear_grads: GradMap | None = None, reduce_gradients: GradReduce | None = None,
                 state: WeightingState = FIRST_STEP) -> WeightingResult:
        if shared_weight is None:
            raise ValueError("ConflictAware needs the nested layer's shared weight; this head has none (heads variant?)")
        k = objectives.shape[0]
        if k != len(self.code_lengths):
            raise ValueError(f"ConflictAware was built for {len(self.code_lengths)} lengths, got {k} objectives")
        ones = torch.ones(k, device=objectives.device)
        if state.step % self.every or k == 1:
            held = state.weights if self.apply and state.weights is not None else ones
            return WeightingResult(held, state=state.advanced())
        rule = self._rule if self._rule.device == objectives.device else ConflictRule(
            self.code_lengths, self.beta, self.threshold_norm, objectives.device)
        code_grads = None
        if codes is not None and features is not None:
            code_grads, rows = self._grads_from_codes(objectives, shared_weight, codes, features, linear_grads)
            if reduce_gradients is not None:
                rows = reduce_gradients(rows)
            weights, stats = rule.from_rows(rows)
        else:
            grads = [
                torch.autograd.grad(objectives[i], shared_weight, retain_graph=True, allow_unused=True)[0]
                for i in range(k)
            ]
            grads = torch.stack([torch.zeros_like(shared_weight) if g is None else g for g in grads])
            if reduce_gradients is not None:
                grads = reduce_gradients(grads)
            weights, stats = rule(grads)
        if not self.apply:
            return WeightingResult(ones, stats, code_grads, state.advanced())
        return WeightingResult(weights, stats, code_grads, state.advanced(weights))

    @staticmethod
    def _grads_from_codes(objectives: torch.Tensor, shared_weight: torch.nn.Parameter,
                          codes: Sequence[torch.Tensor], features: torch.Tensor,
                          linear_grads: GradMap | None = None):
        """Per-length ∂O_k/∂W from ONE backward pass through the losses, not K.

        Each objective O_k depends on the k-th code only (its loss, and its distillation term whose teacher is
        detached), so the gradient of Σ_k O_k with respect to the K code tensors gives every ∂O_k/∂h_k at once;
        since h_k = f W[:L_k]ᵀ + b[:L_k], ∂O_k/∂W[:L_k] = (∂O_k/∂h_k)ᵀ f and its other rows are zero.
        ``linear_grads`` maps ∂O_k/∂h_k to ∂O_k/∂z_k when the codes are not the linear outputs z themselves (code
        centring); the returned code gradients stay those of the codes, where the step's backward starts.
        """
        code_grads = torch.autograd.grad(objectives.sum(), list(codes), retain_graph=True, allow_unused=True)
        code_grads = [torch.zeros_like(code) if grad is None else grad for code, grad in zip(codes, code_grads)]
        # (L_K, K, B): each ∂O_k/∂h_k transposed, zero rows from L_k on; times the features gives all K
        # gradients of W row-major, (L_K, K, d), in one product (the layout ConflictRule.from_rows takes).
        row_grads = code_grads if linear_grads is None else linear_grads([g.detach() for g in code_grads])
        transposed = pad_sequence([grad.detach().float().T for grad in row_grads])
        if transposed.shape[0] < shared_weight.shape[0]:
            transposed = torch.nn.functional.pad(transposed, (0, 0, 0, 0, 0, shared_weight.shape[0] - transposed.shape[0]))
        return tuple(code_grads), transposed @ features.detach().float()
