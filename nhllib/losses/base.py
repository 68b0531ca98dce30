"""The common contract of the hashing losses and the small helpers they share.

Every loss in :mod:`nhllib.losses` subclasses :class:`HashLoss`::

    loss = LossClass(code_length, num_classes, num_train, seed=0, **paper_hparams)
    value = loss(u, y, index)   # u (B, L) float, y (B, C) float multi-hot, index (B,) long -> 0-dim

``forward`` validates the inputs and then calls the subclass's ``compute_loss``. Losses with a
memory bank (DBDH, DHN, DSH) subclass :class:`MemoryBankLoss`, which keeps the bank in registered
buffers and writes it only in training mode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_float(name: str, value: object, *, minimum: float | None = None,
                strictly_positive: bool = False) -> float:
    """Return ``value`` as a float, raising a clear error if it is not a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if strictly_positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def pairwise_similarity(y_a: Tensor, y_b: Tensor) -> Tensor:
    """``s_ij = 1[y_a_i . y_b_j > 0]`` as a float matrix (share at least one label)."""
    return (y_a @ y_b.t() > 0).to(y_a.dtype)


def logistic_pair_nll(theta: Tensor, s: Tensor) -> Tensor:
    """Element-wise pairwise logistic NLL ``log(1 + e^theta) - s * theta``, written stably.

    ``log(1 + e^{-|theta|}) + max(theta, 0) - s * theta`` is the form of DHN/DBDH.
    """
    return torch.log1p(torch.exp(-theta.abs())) + theta.clamp(min=0) - s * theta


def log_one_minus_softmax(z: Tensor) -> Tensor:
    """``log(1 - softmax(z, dim=1))`` computed without forming ``1 - p``.

    ``1 - p_c = sum_{j != c} e^{z_j} / sum_j e^{z_j}``, so the result is
    ``logsumexp_{j != c} z_j - logsumexp_j z_j``. This equals the naive formula wherever that
    one is finite, and stays finite when ``p_c`` rounds to 1. Needs at least two columns.
    Memory is O(B * C^2).
    """
    num_classes = z.shape[1]
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=z.device)
    expanded = z.unsqueeze(1).expand(-1, num_classes, -1)  # [b, c, j] = z[b, j]
    masked = expanded.masked_fill(~off_diagonal, float("-inf"))
    return torch.logsumexp(masked, dim=2) - torch.logsumexp(z, dim=1, keepdim=True)


def _single_label_or_raise(y: Tensor, method: str) -> None:
    """Raise ``ValueError`` unless every row of ``y`` has exactly one positive label."""
    counts = y.sum(dim=1)
    n_multi, n_empty = torch.stack([(counts > 1).sum(), (counts < 1).sum()]).tolist()
    if n_multi:
        raise ValueError(
            f"{method} supports single-label data only, but y has {n_multi} row(s) with more than "
            "one label (multi-label data); use a multi-label-capable loss such as csq or dpn")
    if n_empty:
        raise ValueError(f"{method} needs exactly one label per sample, but y has {n_empty} row(s) "
                         "with no label")


class HashLoss(nn.Module):
    """Base class of the hashing losses.

    Parameters
    ----------
    code_length
        L, the number of bits of the codes this loss is applied to.
    num_classes
        C, the width of the multi-hot label vectors.
    num_train
        N, the size of the training set; ``index`` values must lie in ``[0, N)``.
    seed
        Seed of any random construction (hash centres, tie-break bits). Global RNGs are untouched.
    """

    #: Short name used in error messages.
    method_name: ClassVar[str] = "HashLoss"
    #: False for losses that only accept one label per sample (MDSH, SHCIR).
    supports_multi_label: ClassVar[bool] = True

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0) -> None:
        super().__init__()
        self.code_length = check_positive_int("code_length", code_length)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.num_train = check_positive_int("num_train", num_train)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current epoch (no-op unless the loss follows a schedule)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")

    def forward(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """Validate the inputs and return the 0-dim loss of the batch."""
        self._check_inputs(u, y, index)
        return self.compute_loss(u, y, index)

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """The method's loss on validated inputs; implemented by each subclass."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"code_length={self.code_length}, num_classes={self.num_classes}, "
                f"num_train={self.num_train}, seed={self.seed}")

    @classmethod
    def nest(cls, losses: Sequence[HashLoss], *, targets: str = "nested") -> None:
        """Tie together the per-length losses of one nested model, once, right after they are built.

        ``losses`` are of this class, shortest length first. ``targets`` is ``"nested"`` (every shorter
        length's targets are prefixes of the longest length's) or ``"independent"`` (each length's targets
        built on their own, as the reference does). The default does nothing; target-based losses and
        memory-bank losses override it.
        """

    @classmethod
    def nested_losses(cls, losses: Sequence[HashLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """The losses of a nested model, ``(K,)``: ``losses[k]`` (of this class) applied to ``codes[k]``.

        Inputs are validated by the caller (:func:`per_length_losses`). This default calls each
        loss; a subclass may override it to compute all lengths in a few larger operations, with
        the same values and the same gradients with respect to every ``codes[k]``.
        """
        return torch.stack([loss.compute_loss(u, y, index) for loss, u in zip(losses, codes)])

    def _check_inputs(self, u: Tensor, y: Tensor, index: Tensor) -> None:
        self._check_code(u)
        self._check_batch(u, y, index)

    def _check_code(self, u: Tensor) -> None:
        if not isinstance(u, Tensor):
            raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
        if u.dim() != 2 or u.shape[1] != self.code_length:
            raise ValueError(f"u must have shape (batch, code_length={self.code_length}), "
                             f"got {tuple(u.shape)}")
        if u.shape[0] == 0:
            raise ValueError("u must hold at least one sample, got an empty batch")
        if not u.is_floating_point():
            raise TypeError(f"u must be a floating-point tensor, got dtype {u.dtype}")
        for name, buffer in self._buffers.items():  # losses have no submodules
            if buffer is not None and buffer.device != u.device:
                raise ValueError(f"buffer {name!r} of {self.method_name} is on {buffer.device} but u is "
                                 f"on {u.device}; move the loss with .to(device)")

    def _check_batch(self, u: Tensor, y: Tensor, index: Tensor) -> None:
        """Labels and indices of a batch whose codes ``u`` passed :meth:`_check_code`."""
        for name, value in (("y", y), ("index", index)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        batch = u.shape[0]
        if tuple(y.shape) != (batch, self.num_classes):
            raise ValueError(f"y must have shape (batch={batch}, num_classes={self.num_classes}), "
                             f"got {tuple(y.shape)}")
        if tuple(index.shape) != (batch,):
            raise ValueError(f"index must have shape (batch={batch},), got {tuple(index.shape)}")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating-point multi-hot tensor, got dtype {y.dtype}")
        if index.dtype not in _INDEX_DTYPES:
            raise TypeError(f"index must be an integer tensor, got dtype {index.dtype}")
        for name, value in (("y", y), ("index", index)):
            if value.device != u.device:
                raise ValueError(f"{name} is on {value.device} but u is on {u.device}")
        # One host sync for all value checks.
        lowest, highest, n_bad_y = torch.stack([
            index.min().long(), index.max().long(), ((y != 0) & (y != 1)).sum()]).tolist()
        if lowest < 0 or highest >= self.num_train:
            raise ValueError(f"index values must lie in [0, num_train={self.num_train}), "
                             f"got min {lowest} and max {highest}")
        if n_bad_y:
            raise ValueError(f"y must be multi-hot (entries 0 or 1), got {n_bad_y} other entries")


def per_length_losses(losses: Sequence[HashLoss], codes: Sequence[Tensor], y: Tensor, index: Tensor) -> Tensor:
    """``torch.stack([loss(u, y, index) for loss, u in zip(losses, codes)])``, the losses of a nested model.

    The batch (``y``, ``index``) is validated once rather than once per length, and when every loss is
    of one class, that class's :meth:`HashLoss.nested_losses` computes them all (CSQ fuses the lengths).
    Modules that are not :class:`HashLoss` are simply called.
    """
    losses, codes = list(losses), list(codes)
    if not losses or len(losses) != len(codes):
        raise ValueError(f"need one code tensor per loss, got {len(codes)} codes for {len(losses)} losses")
    if not all(isinstance(loss, HashLoss) for loss in losses):  # e.g. a user's own loss modules
        return torch.stack([loss(u, y, index) for loss, u in zip(losses, codes)])
    for loss, u in zip(losses, codes):
        loss._check_code(u)
    first = losses[0]
    if any(u.shape[0] != codes[0].shape[0] for u in codes):
        raise ValueError(f"codes must share one batch size, got {[u.shape[0] for u in codes]}")
    for loss in losses:
        if (loss.num_classes, loss.num_train) != (first.num_classes, first.num_train):
            raise ValueError("losses must share num_classes and num_train to be applied to one batch")
    first._check_batch(codes[0], y, index)
    kind = type(first)
    if all(type(loss) is kind for loss in losses):
        return kind.nested_losses(losses, codes, y, index)
    return HashLoss.nested_losses(losses, codes, y, index)


class MemoryBankLoss(HashLoss):
    """A :class:`HashLoss` that compares the batch with a bank of the whole training set.

    The bank is two registered buffers, ``U`` (num_train, L) and ``Y`` (num_train, C), zero at
    start. :meth:`_bank` writes the detached batch codes and labels at ``index`` and returns the
    whole bank, so the loss runs over B x num_train pairs, including rows not yet visited (zero
    codes, no labels), exactly as the reference. Writes only happen in training mode: the
    reference also wrote the *test* codes into training rows during its per-epoch test-loss pass
    (METHOD.md section 6, item 7); calling ``.eval()`` on the loss prevents that.
    """

    U: Tensor
    Y: Tensor

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0) -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        self.register_buffer("U", torch.zeros(num_train, code_length))
        self.register_buffer("Y", torch.zeros(num_train, num_classes))

    def _bank(self, u: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Write the batch into the bank (training mode only); return the bank in u's dtype."""
        if self.training:
            index = index.long()
            # Out-of-place write: a graph built by an earlier call keeps the bank it saw, so a
            # second forward before that graph's backward cannot trip autograd's version check.
            self.U = self.U.index_copy(0, index, u.detach().to(self.U.dtype))
            self.Y = self.Y.index_copy(0, index, y.detach().to(self.Y.dtype))
        return self.U.to(u.dtype), self.Y.to(y.dtype)
