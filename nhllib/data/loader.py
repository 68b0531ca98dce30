"""Batching of small image sets held in memory as one uint8 tensor.

Per-image PIL work dominates a torchvision ``DataLoader`` on 28x28 images, so :class:`InMemoryLoader`
gathers a batch with one index operation and converts and normalises the whole batch at once
(:class:`BatchTransform`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nhllib.checks import check_positive_int, check_shardable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BatchTransform:
    """uint8 (B, C, H, W) -> float32: scale to [0, 1], optionally resize and widen to ``channels``, normalise.

    Parameters
    ----------
    mean, std
        Per-channel statistics, one value per output channel (after widening).
    size
        Output side length; resizing is bilinear (``F.interpolate``) on the whole batch. ``None`` keeps the size.
    channels
        Repeat a single-channel batch to this many channels (e.g. 3 for ImageNet-pretrained backbones).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need the same non-zero length, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be None or a positive int, got {self.size}")

    def __call__(self, images: Tensor) -> Tensor:
        x = images.to(torch.float32).div_(255.0)
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(
                    f"cannot widen {x.shape[1]} channels to {self.channels}; only 1 channel can be repeated"
                )
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if x.shape[1] != len(self.mean):
            raise ValueError(f"batch has {x.shape[1]} channels but mean/std have {len(self.mean)} values")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


def channel_stats(images: Tensor, batch: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1], accumulated in float64."""
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class InMemoryLoader:
    """Iterate over ``(x float32 (B,C,H,W), y float32 (B,num_classes), index long (B,))`` batches.

    ``index`` is the position within this loader's images (0..N-1), which memory-bank losses use as a
    training-set index. With ``shuffle=True`` epoch ``e`` uses the permutation drawn by a
    ``torch.Generator`` seeded with ``seed + e``; the epoch counts calls to ``__iter__`` and can be set with
    :meth:`set_epoch` (e.g. when resuming), so the order is reproducible.

    Parameters
    ----------
    images
        uint8 tensor (N, C, H, W).
    labels
        Multi-hot labels (N, num_classes); converted to float32.
    batch_size
        Images per batch.
    shuffle, seed
        Seeded per-epoch shuffling.
    transform
        Callable on a uint8 batch returning float32; default: scale to [0, 1].
    drop_last
        Drop the final incomplete batch.
    device
        Where batches are produced. The whole uint8 tensor is moved there once (small data), so gathering and
        conversion run on the device.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor (N, C, H, W), got {shape}")
        labels = torch.as_tensor(labels)
        if labels.dim() != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be multi-hot (N, num_classes) with N = {images.shape[0]}, got {tuple(labels.shape)}"
            )
        check_positive_int("batch_size", batch_size)
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.labels = labels.to(device=self.device, dtype=torch.float32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.transform = transform
        self.drop_last = drop_last
        self.epoch = 0
        self.shard = (0, 1)  # (rank, world_size): which contiguous share of each batch this loader yields

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``__iter__`` produce epoch ``epoch``'s order."""
        self.epoch = int(epoch)

    def sharded(self, rank: int, world_size: int) -> InMemoryLoader:
        """A view yielding share ``rank`` of ``world_size`` near-equal contiguous shares of every batch.

        The batches, their order and the epoch counter are those of this loader (``batch_size`` stays the
        global batch), so the shares of all ranks, concatenated in rank order, are this loader's batches:
        data-parallel training sees exactly the single-process batches (:mod:`nhllib.training.distributed`).
        """
        check_positive_int("world_size", world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        check_shardable(self.num_samples, self.batch_size, world_size, self.drop_last)
        view = copy.copy(self)  # shares the image and label tensors
        view.shard = (int(rank), int(world_size))
        return view

    def order(self, epoch: int) -> Tensor:
        """The sample order of epoch ``epoch`` (identity without shuffling)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed + int(epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        # The epoch advances when iteration starts (not at the first batch), so a loop that breaks early
        # still moves the next epoch on.
        order = self.order(self.epoch).to(self.device)
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            rank, world_size = self.shard
            if world_size > 1:
                index = index.tensor_split(world_size)[rank]
            images = self.images[index]
            x = self.transform(images) if self.transform is not None else images.to(torch.float32).div_(255.0)
            yield x, self.labels[index], index


def one_hot(labels: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Class ids (N,) -> float32 multi-hot (N, num_classes)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return F.one_hot(labels, num_classes).to(torch.float32)
