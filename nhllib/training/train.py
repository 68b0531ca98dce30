"""One training loop for single-length and nested hashing models.

``fit`` never looks at a method name: it receives one loss object per code length, a weighting strategy, the
run's :class:`~nhllib.training.config.TrainingConfig` and a distillation weight. Its pieces (``train_step``,
``train_epoch``, ``evaluate_model``) are separate functions so that a distributed driver can reuse them;
``fit`` keeps no global state and writes nothing to disk (the caller does, once, through :mod:`nhllib.store.results`).
:func:`evaluate_untrained` is the other way a run can go: the initialised network evaluated once, nothing trained.

One step, read top to bottom (:func:`train_step`): forward (on every rank's share, gathered when data-parallel),
the per-length objectives O_k = ℓ_k + λ D_k, the weighting's w_k (it gets everything it may need as arguments,
and its state from the previous step), one backward of Σ_k w_k O_k, the optimizer's step.

Protocol choices (docs/reference-defects.md lists the reference's flaws they avoid):
- model selection and early stopping on the **validation** split only (mean mAP over lengths); the query split
  is evaluated at the same moments and reported for the best-validation evaluation and for the last one;
- training-loop wall time (device-synchronised) is kept apart from evaluation time;
- a non-finite objective stops the run with an error naming the epoch, step and code length.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nhllib.core.distill import cascade_distillation
from nhllib.core.evaluate import encode, evaluate_nested
from nhllib.core.losses import per_length_losses
from nhllib.core.model import HashingModel
from nhllib.core.weighting import FIRST_STEP, WeightingResult, WeightingState, WeightingStrategy
from nhllib.training.config import TrainingConfig
from nhllib.training.conflicts import ConflictLog
from nhllib.training.distributed import DataParallel, broadcast_object
from nhllib.training.optimizers import build_optimizer, parameter_groups
from nhllib.utils import amp_active, synchronize

__all__ = ["FitResult", "NonFiniteLossError", "fit", "evaluate_untrained", "train_epoch", "train_step",
           "evaluate_model"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The objective became NaN or infinite."""


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # long rows: epoch, code_length, split, metric, value
    conflicts: ConflictLog | None = None
    best_epoch: int = 0
    best_state: dict | None = None
    val_map_best: dict[int, float] = field(default_factory=dict)
    query_map_best: dict[int, float] = field(default_factory=dict)
    query_map_last: dict[int, float] = field(default_factory=dict)
    epochs_run: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    train_steps: int = 0
    stopped_early: bool = False


def _objectives(model: HashingModel, losses: Sequence[nn.Module], batch, distill_weight: float,
                parallel: DataParallel | None = None):
    """Per-length objectives O_k, plus this rank's codes and the features they came from (for the weighting).

    With ``parallel`` the losses and the distillation see the global batch (every rank's codes, labels and
    indices); the codes and features returned stay this rank's, whose gradients the weighting takes.
    """
    images, labels, index = batch
    codes, features = model(images, return_features=True) if parallel is None else parallel.forward(images)
    seen = codes
    if parallel is not None:
        seen, labels, index = parallel.gather(codes, labels, index)
    per_length = per_length_losses(losses, seen, labels, index)
    if distill_weight > 0 and len(codes) > 1:
        distill = cascade_distillation(seen)
        # O_k = ℓ_k + λ D_k for k < K and O_K = ℓ_K: every length keeps its own loss (the release drops ℓ_K).
        per_length = per_length + distill_weight * torch.cat([distill, distill.new_zeros(1)])
    return per_length, codes, features


def _check_finite(objectives: torch.Tensor, lengths: Sequence[int], epoch: int, step: int) -> None:
    finite = torch.isfinite(objectives)
    if not bool(finite.all()):
        bad = [(lengths[k], float(objectives[k].detach())) for k in range(len(lengths)) if not bool(finite[k])]
        raise NonFiniteLossError(
            f"non-finite objective at epoch {epoch}, step {step}: "
            + ", ".join(f"code length {length} -> {value}" for length, value in bad)
        )


def train_step(
    model: HashingModel,
    losses: Sequence[nn.Module],
    batch,
    optimizer: torch.optim.Optimizer,
    weighting: WeightingStrategy,
    distill_weight: float,
    where: tuple[int, int] = (0, 0),
    scaler: torch.amp.GradScaler | None = None,
    parallel: DataParallel | None = None,
    state: WeightingState = FIRST_STEP,
) -> tuple[torch.Tensor, WeightingResult]:
    """One optimisation step on ``batch`` (already on the device); returns the detached per-length objectives
    and the weighting's result, whose ``state`` the next step takes as ``state``. ``where`` is (epoch, step),
    named by the error if an objective is not finite.

    The one backward path: the weighting's result says where the backward starts (at the objectives, or at the
    codes when it already holds ∂O_k/∂h_k) and the step runs it, whatever the strategy. With ``parallel``
    (data-parallel training, :mod:`nhllib.training.distributed`) the losses see the global batch, the per-length
    gradients the weighting compares and the backward's parameter gradients are averaged over ranks; ``batch``
    is this rank's share.
    """
    device_type = batch[0].device.type
    with torch.autocast(device_type=device_type, enabled=scaler is not None):
        objectives, codes, features = _objectives(model, losses, batch, distill_weight, parallel)
    objectives = objectives.float()
    _check_finite(objectives, model.code_lengths, *where)
    outcome = weighting(objectives, model.shared_weight, codes, features,
                        linear_grads=model.linear_code_grads(features),
                        reduce_gradients=None if parallel is None else parallel.reduce_gradients,
                        state=state)
    optimizer.zero_grad(set_to_none=True)
    tensors, grads = outcome.backward_inputs(objectives, codes, None if scaler is None else scaler.scale)
    torch.autograd.backward(tensors, grads)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return objectives.detach(), outcome


def train_epoch(
    model: HashingModel,
    losses: Sequence[nn.Module],
    loader,
    optimizer: torch.optim.Optimizer,
    weighting: WeightingStrategy,
    epoch: int,
    device: torch.device,
    *,
    distill_weight: float = 0.0,
    conflict_log: ConflictLog | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = False,
    parallel: DataParallel | None = None,
    state: WeightingState = FIRST_STEP,
) -> tuple[dict[str, float], WeightingState]:
    """One pass over ``loader``; returns the mean per-length objectives and the step count, and the weighting's
    state after the last step (what the next epoch starts from)."""
    model.train()
    for loss in losses:
        loss.train()
    lengths = model.code_lengths
    totals = torch.zeros(len(lengths), device=device)
    steps = 0
    iterator = loader
    if progress:
        from tqdm import tqdm  # the plain text bar: works in a terminal and a notebook alike, no ipywidgets needed

        iterator = tqdm(loader, desc=f"epoch {epoch}", leave=False, unit="batch")
    for step, batch in enumerate(iterator):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        objectives, outcome = train_step(model, losses, batch, optimizer, weighting, distill_weight,
                                         (epoch, step), scaler, parallel, state)
        state = outcome.state
        if conflict_log is not None and outcome.stats is not None:
            conflict_log.add(outcome.stats, outcome.weights)
        totals += objectives
        steps += 1
    if steps == 0:
        raise ValueError("the training loader yielded no batch; check the split sizes and batch_size")
    means = (totals / steps).cpu()
    return {"steps": steps, **{f"objective_{length}": float(means[k]) for k, length in enumerate(lengths)}}, state


def evaluate_model(model: HashingModel, data, device: torch.device, topk: int | None, ties: str,
                   splits: Sequence[str] = ("validation", "query")) -> dict[str, dict[int, float]]:
    """mAP per code length of each query split against the database; the database is encoded once."""
    db_codes, db_labels = encode(model, data.database, device)
    out = {}
    for split in splits:
        loader = getattr(data, split)
        if loader is None:
            continue
        codes, labels = encode(model, loader, device)
        out[split] = evaluate_nested(codes, labels, db_codes, db_labels, topk=topk, ties=ties)
    return out


def fit(
    model: HashingModel,
    losses: Sequence[nn.Module],
    data,
    training: TrainingConfig,
    weighting: WeightingStrategy,
    device: torch.device,
    *,
    distill_weight: float = 0.0,
    progress: bool = True,
    parallel: DataParallel | None = None,
) -> FitResult:
    """Train ``model`` with one loss per code length; early-stop on validation mAP; see the module docstring.

    ``data`` provides ``train``, ``validation`` (may be None), ``query`` and ``database`` loaders yielding
    ``(images, multi-hot labels, index)``. ``distill_weight`` is the λ in effect (0: no distillation); the
    optimizer is ``training.optimizer`` (:mod:`nhllib.training.optimizers`). Returns the history, timings, conflict log
    and the best state.
    With ``parallel`` (data-parallel training, :mod:`nhllib.training.distributed`), ``data.train`` yields this rank's share
    of each global batch, and rank 0 evaluates and shares the scores, so every rank selects and stops alike.
    """
    if len(losses) != len(model.code_lengths):
        raise ValueError(f"need one loss per code length {model.code_lengths}, got {len(losses)} losses")
    model.to(device)
    for loss in losses:
        loss.to(device)
    optimizer = build_optimizer(parameter_groups(model, training), training.optimizer, training.lr,
                                training.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp_active(training.amp, device) else None
    result = FitResult(conflicts=ConflictLog(model.code_lengths) if weighting.monitors_conflicts else None)
    selection_split = "validation" if data.validation is not None else None
    best_score, evaluations_without_gain = -float("inf"), 0
    state = FIRST_STEP
    for epoch in range(1, training.epochs + 1):
        for loss in losses:
            loss.set_epoch(epoch)
        synchronize(device)
        start = time.perf_counter()
        epoch_log, state = train_epoch(model, losses, data.train, optimizer, weighting, epoch, device,
                                       distill_weight=distill_weight, conflict_log=result.conflicts, scaler=scaler,
                                       progress=progress, parallel=parallel, state=state)
        synchronize(device)
        epoch_time = time.perf_counter() - start
        result.train_time_s += epoch_time
        result.train_steps += epoch_log["steps"]
        result.epochs_run = epoch
        result.history.append(_row(epoch, None, "train", "train_time_s", epoch_time))
        for length in model.code_lengths:
            result.history.append(_row(epoch, length, "train", "objective", epoch_log[f"objective_{length}"]))
        if result.conflicts is not None:
            result.conflicts.end_epoch(epoch)
            for row in result.conflicts.weight_rows[-len(model.code_lengths):]:
                result.history.append(_row(epoch, row["code_length"], "train", "weight", row["weight"]))
                result.history.append(_row(epoch, row["code_length"], "train", "rule_weight", row["rule_weight"]))

        if epoch % training.eval_every and epoch != training.epochs:
            continue
        scores, eval_time = _evaluate(model, data, device, training, result, epoch, parallel)
        # Never select on the query split: without a validation split the last evaluation is taken.
        score = _mean(scores[selection_split]) if selection_split else float(epoch)
        logger.info("epoch %d: selection score %.4f (%.1fs train, %.1fs eval)", epoch, score, epoch_time, eval_time)
        if score > best_score:
            best_score, evaluations_without_gain = score, 0
            result.best_epoch = epoch
            result.val_map_best = scores.get("validation", {})
            result.query_map_best = scores["query"]
            result.best_state = copy.deepcopy(model.state_dict())
        else:
            evaluations_without_gain += 1
            if training.patience and evaluations_without_gain >= training.patience:
                result.stopped_early = True
                logger.info("early stop at epoch %d (best epoch %d)", epoch, result.best_epoch)
                break
    return result


def evaluate_untrained(model: HashingModel, data, training: TrainingConfig, device: torch.device, *,
                       parallel: DataParallel | None = None) -> FitResult:
    """Evaluate the initialised network once, as epoch 0, and train nothing: the reference level that a trained
    model's mAP is read against (the ``untrained`` variant). The result has the shape :func:`fit` returns."""
    model.to(device)
    result = FitResult()
    scores, _ = _evaluate(model, data, device, training, result, epoch=0, parallel=parallel)
    result.val_map_best, result.query_map_best = scores.get("validation", {}), scores["query"]
    result.best_state = copy.deepcopy(model.state_dict())
    return result


def _evaluate(model: HashingModel, data, device: torch.device, training: TrainingConfig, result: FitResult,
              epoch: int, parallel: DataParallel | None = None) -> tuple[dict[str, dict[int, float]], float]:
    """Evaluate every split, log the time and each mAP in the history, keep the query mAP as the last one;
    returns the scores and the evaluation time."""
    start = time.perf_counter()
    main = parallel is None or parallel.ctx.is_main
    scores = evaluate_model(model, data, device, training.topk, training.ties) if main else None
    if parallel is not None:
        scores = broadcast_object(scores)  # rank 0's scores: every rank selects and stops alike
    eval_time = time.perf_counter() - start
    result.eval_time_s += eval_time
    result.history.append(_row(epoch, None, "eval", "eval_time_s", eval_time))
    for split, per_length in scores.items():
        for length, value in per_length.items():
            result.history.append(_row(epoch, length, split, "map", value))
    result.query_map_last = scores["query"]
    return scores, eval_time


def _mean(values: dict[int, float]) -> float:
    return sum(values.values()) / len(values)


def _row(epoch: int, code_length: int | None, split: str, metric: str, value: float) -> dict:
    return {"epoch": epoch, "code_length": code_length, "split": split, "metric": metric, "value": value}
