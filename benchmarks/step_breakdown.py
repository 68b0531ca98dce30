"""Where one training step's time goes: the per-step cost breakdown of ``bench_speedup``.

Each part of :func:`nhllib.training.train.train_step` is timed on its own, on one fixed batch, against deep copies of
the run (its model, losses, banks and weighting are left as they were):

- ``backbone``: the model's forward and backward (backbone and hash head) from fixed code gradients;
- ``losses``: every length's loss forward and backward on detached codes, as the step computes them (a nested
  model's lengths together, fused where the loss fuses them); ``loss_per_length``: each length's loss alone;
- ``distillation``: the cascade distillation's forward and backward (runs with λ > 0 only);
- ``conflict_rule``: the weighting's work beyond the one backward through the losses it takes anyway (the
  per-length gradients of the shared weight and the rule); 0 for a model that monitors nothing;
- ``optimizer``: the optimizer step;
- ``step``: the whole :func:`~nhllib.training.train.train_step`, and ``other`` = step − the parts above (the glue:
  finiteness check, zeroing gradients, the code-gradient bookkeeping).

The parts are timed in rounds, one of each per round, so machine noise hits them alike; the median over the
rounds is reported (and the minimum, the least disturbed value).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch

from nhllib.core.distill import cascade_distillation
from nhllib.core.losses import per_length_losses
from nhllib.training.train import train_step
from nhllib.utils import synchronize

PARTS = ("backbone", "losses", "distillation", "conflict_rule", "optimizer", "step")


def step_breakdown(run, batch, optimizer_factory: Callable, rounds: int = 15, warmup: int = 3) -> dict:
    """Seconds per part of one training step of ``run`` (a :class:`~nhllib.training.experiment.BuiltRun`) on ``batch``.

    Returns ``{"median": {part: s}, "min": {part: s}, "loss_per_length": {length: s}, "rounds": n}``;
    ``median`` and ``min`` also hold ``other``.
    """
    model = copy.deepcopy(run.model).train()
    losses = copy.deepcopy(run.losses)  # one deepcopy call: a shared bank stays shared among the copies
    for loss in losses:
        loss.train()
    weighting = copy.deepcopy(run.weighting)
    device = run.device
    batch = tuple(t.to(device) for t in batch)
    images, labels, index = batch
    lengths = model.code_lengths
    distill_weight = run.plan.distill_weight
    optimizer = optimizer_factory(model.parameters())

    with torch.no_grad():
        codes0, features0 = model(images, return_features=True)
    code_grads = [torch.randn_like(c) for c in codes0]
    nested = len(codes0) > 1 and all(c.data_ptr() == codes0[-1].data_ptr() for c in codes0)

    def leaf_codes() -> list[torch.Tensor]:
        # Detached codes laid out as the model lays them out (prefix views of one tensor when nested).
        if nested:
            longest = codes0[-1].detach().clone().requires_grad_(True)
            return [longest[:, :n] for n in lengths]
        return [c.detach().clone().requires_grad_(True) for c in codes0]

    def backbone() -> None:
        codes = model(images)
        torch.autograd.backward(list(codes), code_grads)

    def all_losses() -> None:
        per_length_losses(losses, leaf_codes(), labels, index).sum().backward()

    def one_loss(k: int) -> Callable[[], None]:
        def run_one() -> None:
            u = codes0[k].detach().clone().requires_grad_(True)
            per_length_losses([losses[k]], [u], labels, index).sum().backward()
        return run_one

    def distillation() -> None:
        if distill_weight > 0 and len(lengths) > 1:
            cascade_distillation(leaf_codes()).sum().backward()

    # The conflict rule on a fixed graph: the weighting's call minus the one gradient through the losses it
    # takes (the step then starts its backward at the codes, so that gradient is not paid twice).
    features = features0.detach().clone().requires_grad_(True)
    rule_codes = leaf_codes()
    objectives = per_length_losses(losses, rule_codes, labels, index)
    if distill_weight > 0 and len(lengths) > 1:
        objectives = objectives + distill_weight * torch.cat([cascade_distillation(rule_codes),
                                                              objectives.new_zeros(1)])
    shared_weight = model.shared_weight
    linear_grads = model.linear_code_grads(features)
    extra = {} if linear_grads is None else {"linear_grads": linear_grads}

    def weighting_call() -> None:
        weighting(objectives, shared_weight, codes=rule_codes, features=features, **extra)

    def loss_gradient() -> None:
        torch.autograd.grad(objectives.sum(), rule_codes, retain_graph=True, allow_unused=True)

    def optimizer_step() -> None:
        optimizer.step()

    def whole_step() -> None:
        train_step(model, losses, batch, optimizer, weighting, distill_weight)

    whole_step()  # gradients exist for the optimizer's timing
    timed = {"backbone": backbone, "losses": all_losses, "distillation": distillation,
             "weighting": weighting_call, "loss_gradient": loss_gradient, "optimizer": optimizer_step,
             "step": whole_step, **{f"loss_{n}": one_loss(k) for k, n in enumerate(lengths)}}
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for round_ in range(warmup + rounds):
        for name, fn in timed.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - start)
    monitors = getattr(weighting, "monitors_conflicts", False) and len(lengths) > 1
    # Paired within each round (the two calls ran back to back), so that noise between rounds cancels.
    rule_extra = [a - b for a, b in zip(samples["weighting"], samples["loss_gradient"])]
    out: dict = {"rounds": rounds}
    for stat, reduce in (("median", statistics.median), ("min", min)):
        values = {name: reduce(series) for name, series in samples.items()}
        parts = {"backbone": values["backbone"], "losses": values["losses"],
                 "distillation": values["distillation"] if distill_weight > 0 and len(lengths) > 1 else 0.0,
                 "conflict_rule": max(reduce(rule_extra), 0.0) if monitors else 0.0,
                 "optimizer": values["optimizer"], "step": values["step"]}
        parts["other"] = parts["step"] - sum(parts[p] for p in PARTS[:-1])
        out[stat] = parts
        if stat == "median":
            out["loss_per_length"] = {str(n): values[f"loss_{n}"] for n in lengths}
    return out


def ceilings(breakdowns: dict[str, dict], nested: str = "nhl", plain: str = "nhl-plain") -> dict:
    """The speed-ups the nested model's own breakdown (medians) implies.

    The models' breakdowns are timed one model after another, so the load may change between them; these figures
    use the nested model's rounds alone. A single-length model of length k is estimated as the nested model's
    backbone + optimizer (``core``: the same network, its head differs by one small matrix) + length k's loss
    timed alone, so the K separate models cost ``Σ_k (core + loss_k)``:

    - ``nested_step_shares``: each part's share of the nested step's parts (``other``, the glue, against the
      same sum); ``loss_share_by_length``: each length's loss, timed alone, against that sum;
    - ``backbone_share``: core / the nested step's parts;
    - ``ceiling_free_losses``: Σ_k (core + loss_k) / core, if the nested step's losses, distillation and
      conflict rule cost nothing (above K: the separate models still pay their losses);
    - ``ceiling_forced_losses``: Σ_k (core + loss_k) / (core + Σ_k loss_k), if the nested step paid each
      length's loss as a single-length model does and nothing more, the work a loss that cannot share its
      elementwise terms between lengths forces;
    - ``predicted``: Σ_k (core + loss_k) / the nested step's parts (its losses as fused, the distillation and
      the conflict rule included);
    - ``nhl_overhead_predicted``: the nested step's parts over the plain nested step's, − 1.
    """
    med = breakdowns[nested]["median"]
    alone = breakdowns[nested]["loss_per_length"]
    loss_side = ("losses", "distillation", "conflict_rule")
    parts_total = sum(med[part] for part in ("backbone", *loss_side, "optimizer"))
    plain_med = breakdowns[plain]["median"]
    plain_total = sum(plain_med[part] for part in ("backbone", *loss_side, "optimizer"))
    core = med["backbone"] + med["optimizer"]
    separate = sum(core + value for value in alone.values())
    return {"nested_step_shares": {part: value / parts_total for part, value in med.items() if part != "step"},
            "loss_share_by_length": {length: value / parts_total for length, value in alone.items()},
            "backbone_share": core / parts_total,
            "ceiling_free_losses": separate / core,
            "ceiling_forced_losses": separate / (core + sum(alone.values())),
            "predicted": separate / parts_total,
            "nhl_overhead_predicted": parts_total / plain_total - 1}
