"""The global batch order shared by one process and N data-parallel ranks.

:class:`GlobalOrderBatchSampler` is a data concern (which samples form each batch, in which order) that
data-parallel training (:mod:`nhllib.training.distributed`) relies on: the ranks' shares of each global batch,
concatenated in rank order, are the single-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from nhllib.checks import check_positive_int, check_shardable

__all__ = ["GlobalOrderBatchSampler"]


class GlobalOrderBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices: rank ``rank``'s contiguous share of each global batch of ``batch_size``.

    The global order of epoch e is ``randperm(num_samples)`` from a generator seeded with ``seed + e`` (the
    order of :class:`~nhllib.data.loader.InMemoryLoader`), or the identity without shuffling; it is cut into
    batches of ``batch_size`` and each batch into ``world_size`` near-equal contiguous shares, so the ranks'
    shares, concatenated in rank order, are the single-process batch. The epoch advances when iteration
    starts; :meth:`set_epoch` sets it (e.g. when resuming). With ``with_epoch`` each key is ``(epoch, index)``,
    so a dataset can seed a sample's augmentation from them alone, the same on every rank
    (:class:`~nhllib.data.listfile.ListFileDataset`).
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, with_epoch: bool = False) -> None:
        check_positive_int("num_samples", num_samples)
        check_positive_int("batch_size", batch_size)
        check_positive_int("world_size", world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        check_shardable(num_samples, batch_size, world_size, drop_last)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.rank, self.world_size = rank, world_size
        self.with_epoch = bool(with_epoch)
        self.epoch = 0

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + int(epoch)))

    def __iter__(self) -> Iterator[list[int]] | Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        order = self.order(epoch)
        self.epoch += 1
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            share = batch.tensor_split(self.world_size)[self.rank].tolist()
            yield [(epoch, i) for i in share] if self.with_epoch else share

    def for_rank(self, rank: int, world_size: int) -> GlobalOrderBatchSampler:
        """The same global order (seed, epoch, batches), rank ``rank``'s share of ``world_size``."""
        sampler = GlobalOrderBatchSampler(self.num_samples, self.batch_size, shuffle=self.shuffle, seed=self.seed,
                                          drop_last=self.drop_last, rank=rank, world_size=world_size,
                                          with_epoch=self.with_epoch)
        sampler.epoch = self.epoch
        return sampler
