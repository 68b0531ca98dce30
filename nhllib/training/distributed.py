"""Exact data-parallel training across processes: N ranks with B/N images each train like one process with B.

The contract (tested on CPU with gloo in ``tests/training/test_distributed.py``): the parameters, loss weights and
memory banks after any number of steps equal those of a single process whose batch is the union of the ranks'
batches, to float tolerance. What it takes:

- **Global batches.** :class:`GlobalOrderBatchSampler` and :meth:`InMemoryLoader.sharded
  <nhllib.data.loader.InMemoryLoader.sharded>` cut every global batch of the single-process order into N
  contiguous shares, rank r taking share r, so gathering the shares in rank order rebuilds the global batch.
- **Losses on the global batch.** :func:`all_gather_batch` gathers codes (with their gradients), labels and
  indices; every rank then computes the *same* loss on the whole batch (pairs, triplets, Gram matrices,
  memory-bank writes), so banks stay identical on every rank.
- **One gradient convention.** Every rank back-propagates the gradient of ``Σ_ranks loss`` restricted to its
  own samples: the backward of :func:`all_gather_with_grad` and :func:`all_reduce_with_grad` sums the ranks'
  incoming gradients. ``DistributedDataParallel`` then *averages* the ranks' parameter gradients, which gives
  exactly the gradient of the (identical) loss. Per-length gradients computed by one rank for the conflict rule
  follow the same convention, so their rank average (:func:`average_`) is the single-process gradient.
- **Batch statistics.** :func:`convert_sync_batchnorm` turns BatchNorm layers into ``SyncBatchNorm`` on CUDA
  and into :class:`GlobalBatchNorm` elsewhere (``SyncBatchNorm`` runs on GPUs only).

Processes are started by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``); :func:`process_group` reads them. Nothing here keeps module-level state:
the process group is torch's, and :class:`DistContext` is passed explicitly.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nhllib.checks import check_positive_int, check_shardable  # noqa: F401 (re-exported)
from nhllib.data.sampler import GlobalOrderBatchSampler

__all__ = [
    "DistContext",
    "launched_by_torchrun",
    "process_group",
    "all_gather_with_grad",
    "all_reduce_with_grad",
    "all_gather_batch",
    "average_",
    "broadcast_object",
    "barrier",
    "GlobalOrderBatchSampler",
    "shard_loader",
    "GlobalBatchNorm",
    "convert_sync_batchnorm",
]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device.

    ``world_size == 1`` is the ordinary single-process run; then every collective helper is the identity.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        check_positive_int("world_size", self.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size={self.world_size}), got {self.rank}")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs progress and writes the run folder."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables describe this process."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


@contextmanager
def process_group(device: str | torch.device = "auto", backend: str | None = None,
                  timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Join the process group described by torchrun's variables for the ``with`` block, then leave it.

    ``device`` ``"auto"`` picks ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU; ``backend`` defaults to
    NCCL on CUDA and gloo otherwise. Without torchrun's variables (or with ``WORLD_SIZE=1``) no group is made and
    a single-process context is yielded, so one entry point serves both.
    """
    if not launched_by_torchrun() or _env_int("WORLD_SIZE") == 1:
        from nhllib.utils import resolve_device

        yield DistContext(device=resolve_device(str(device)))
        return
    rank, world_size, local_rank = (_env_int(name) for name in _TORCHRUN_VARS)
    if str(device) == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed process group is already initialised in this process")
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # binds NCCL to this GPU at once (no guessing in the first collective)
    dist.init_process_group(**kwargs)
    try:
        yield DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    finally:
        dist.destroy_process_group()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# ---------------------------------------------------------------- collectives with gradients


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's rows in rank order; backward: the summed gradient of this rank's rows."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        largest = max(sizes)
        # all_gather needs equal shapes: pad every share to the largest, then drop the padding.
        padded = x.new_zeros((largest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Every rank computed its own loss from the gathered tensor; d(Σ_ranks loss)/d(own rows) is the sum
        # of the ranks' gradients at those rows.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


class _AllReduce(torch.autograd.Function):
    """Sum over ranks; backward: the sum of the ranks' gradients (each rank's loss used the sum)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather_sizes(n: int, device: torch.device | str) -> tuple[int, ...]:
    """Every rank's row count, in rank order (one small collective)."""
    world = _world()
    if world == 1:
        return (int(n),)
    local = torch.tensor([int(n)], device=device)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return tuple(int(p.item()) for p in parts)


def all_gather_with_grad(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Rows of ``x`` from every rank, concatenated in rank order; gradients flow back to each rank's rows.

    ``sizes`` are the ranks' row counts when known (else they are gathered first). The backward follows the
    module's convention: rank r receives the sum over ranks of the gradient at its rows. Without a process
    group, ``x`` is returned as it is.
    """
    world = _world()
    if world == 1:
        return x
    sizes = tuple(sizes) if sizes is not None else gather_sizes(x.shape[0], x.device)
    if len(sizes) != world:
        raise ValueError(f"sizes must hold one row count per rank ({world}), got {sizes}")
    rank = dist.get_rank()
    if sizes[rank] != x.shape[0]:
        raise ValueError(f"sizes[{rank}] = {sizes[rank]} but this rank holds {x.shape[0]} rows")
    return _AllGather.apply(x, sizes, rank)


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """The sum of ``x`` over ranks, differentiable (the backward sums the ranks' gradients)."""
    if _world() == 1:
        return x
    return _AllReduce.apply(x)


def all_gather_batch(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Gather several tensors sharing their first dimension (codes, labels, indices) into the global batch.

    The row counts are exchanged once for all of them; tensors that require grad keep a gradient path.
    """
    if _world() == 1 or not tensors:
        return tuple(tensors)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"tensors must share their first dimension, got {[tuple(t.shape) for t in tensors]}")
    sizes = gather_sizes(n, tensors[0].device)
    return tuple(all_gather_with_grad(t, sizes) for t in tensors)


def average_(tensor: Tensor) -> Tensor:
    """Replace ``tensor`` in place by its mean over ranks and return it (identity without a group)."""
    world = _world()
    if world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` holds it, on every rank (pickled; for small Python objects)."""
    if _world() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if _world() > 1:
        dist.barrier()


def shard_loader(loader: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s view of a training loader: its share of every global batch, in the global order.

    An :class:`~nhllib.data.loader.InMemoryLoader` keeps its single-process order exactly. A torch
    ``DataLoader`` already on a :class:`GlobalOrderBatchSampler` (the list-file training loaders) keeps its
    sampler's order and keys, sharded; any other ``DataLoader`` is rebuilt on one with the generator seed it
    was given, its order then following the sampler (``seed + epoch``), for any number of ranks.
    """
    from nhllib.data.loader import InMemoryLoader

    if world_size == 1 and not isinstance(loader, torch.utils.data.DataLoader):
        return loader
    if isinstance(loader, InMemoryLoader):
        return loader.sharded(rank, world_size)
    if isinstance(loader, torch.utils.data.DataLoader):
        if isinstance(loader.batch_sampler, GlobalOrderBatchSampler):
            sampler = loader.batch_sampler.for_rank(rank, world_size)
        else:
            shuffle = isinstance(loader.sampler, torch.utils.data.RandomSampler)
            seed = int(loader.generator.initial_seed()) if loader.generator is not None else 0
            sampler = GlobalOrderBatchSampler(
                len(loader.dataset), loader.batch_size, shuffle=shuffle, seed=seed, drop_last=loader.drop_last,
                rank=rank, world_size=world_size,
            )
        prefetch = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
        return torch.utils.data.DataLoader(
            loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers,
            pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers, **prefetch,
        )
    raise TypeError(f"cannot shard a {type(loader).__name__}; expected an InMemoryLoader or a torch DataLoader")


# ---------------------------------------------------------------- batch normalisation over the global batch


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover every rank's batch (``SyncBatchNorm`` for any device).

    Mean and variance are computed in two passes over the global batch (sum, then sum of squared deviations),
    as one process computes them; gradients flow through both reductions. Evaluation and single-process use
    are ordinary batch norm. Used on CPU/gloo, where ``torch.nn.SyncBatchNorm`` is not available.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce_with_grad(x.new_tensor(float(x.numel() // x.shape[1]))).detach()
        mean = all_reduce_with_grad(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_with_grad(centred.square().sum(dims)) / count
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers normalised over the global batch: ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm`
    elsewhere (parameters and running statistics carried over)."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global_bn(module)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _to_global_bn(child))
    return module



# ---------------------------------------------------------------- the training step's hooks


class DataParallel:
    """What one training step does differently on several ranks; ``None`` in its place is one process.

    ``forward`` runs the model through ``DistributedDataParallel`` (which averages the parameter gradients in
    the backward); ``gather`` turns the rank's codes, labels and indices into the global batch that the losses
    and the distillation see; ``reduce_gradients`` averages per-length gradients over ranks before the conflict
    rule. Build it after :func:`convert_sync_batchnorm` and after moving ``model`` to ``ctx.device``.
    """

    def __init__(self, model: nn.Module, ctx: DistContext) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if not ctx.enabled or not dist.is_initialized():
            raise ValueError("DataParallel needs an initialised process group with world_size > 1 "
                             "(use nhllib.training.distributed.process_group under torchrun)")
        self.ctx = ctx
        # Buffers (batch-norm statistics) stay equal without broadcasting: they are computed on the global batch.
        options = inspect.signature(DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
        self.module = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None, **no_sync,
        )

    def forward(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """``(codes, features)`` of this rank's images."""
        return self.module(images, return_features=True)

    def gather(self, codes: Sequence[Tensor], labels: Tensor, index: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """The global batch: every rank's codes (with gradients), labels and indices, in rank order."""
        widths = [c.shape[1] for c in codes]
        # One collective for all K codes: concatenated along the code axis, split back after the gather.
        joined, labels, index = all_gather_batch(torch.cat(list(codes), dim=1), labels, index)
        return list(joined.split(widths, dim=1)), labels, index

    def reduce_gradients(self, grads: Tensor) -> Tensor:
        """Per-length gradients of the shared weight, averaged over ranks (in place)."""
        return average_(grads)
