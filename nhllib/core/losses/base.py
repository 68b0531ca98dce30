"""The common contract of the hashing losses and the small helpers they share.

Every loss in :mod:`nhllib.core.losses` subclasses :class:`HashLoss`::

    loss = LossClass(code_length, num_classes, num_train, seed=0, **paper_hparams)
    value = loss(u, y, index)   # u (B, L) float, y (B, C) float multi-hot, index (B,) long -> 0-dim

``forward`` validates the inputs and then calls the subclass's ``compute_loss``. Losses with a
memory bank (DBDH, DHN, DSH) subclass :class:`MemoryBankLoss`, which keeps the bank in registered
buffers and writes it only in training mode.

Nested codes in one pass (docs/method.md section 3). For the codes of a nested model, ``codes[k]`` is
the first L_k columns of the longest code, so with the columns cut into chunks [0, L_1), [L_1, L_2), ...
every prefix inner product is a running sum over chunks: ``u[:, :L_k] v[:, :L_k]^T = sum_{j <= k}
u_j v_j^T``. Two helpers let a loss's :meth:`HashLoss.nested_losses` use this:

- :func:`prefix_views` says whether ``codes`` really are such prefixes (views of one tensor in
  memory); anything else, e.g. the separate-heads control, must take the per-length path;
- :func:`prefix_products` returns all K product matrices (one ``(B, N)`` tensor each) for about the
  FLOPs of the longest one, with each ``codes[k]`` receiving the gradient of its own matrix only, so a loss built
  on them keeps the per-length gradients (training's conflict rule reads them code by code).
"""

from __future__ import annotations

import functools
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


def prefix_views(codes: Sequence[Tensor]) -> bool:
    """True when every ``codes[k]`` is ``codes[-1][:, :L_k]`` in memory, widths strictly increasing.

    That is what :class:`~nhllib.core.nested.NestedHashLayer` returns: views of one storage with one data
    pointer and the same strides. Codes that merely hold equal values (copies), or that come from
    separate heads, are not prefixes here: a fused loss would silently tie lengths that are not tied.
    """
    codes = list(codes)
    if len(codes) < 2 or not all(isinstance(u, Tensor) and u.dim() == 2 for u in codes):
        return False
    longest = codes[-1]
    widths = [u.shape[1] for u in codes]
    return (all(a < b for a, b in zip(widths, widths[1:]))
            and all(u.shape[0] == longest.shape[0] and u.dtype == longest.dtype and u.device == longest.device
                    and u.stride() == longest.stride() and u.data_ptr() == longest.data_ptr() for u in codes))


def _chunk_bounds(widths: Sequence[int]) -> list[tuple[int, int]]:
    return list(zip([0, *widths[:-1]], widths))


def cumulative_products(u: Tensor, v: Tensor, widths: Sequence[int]) -> Tensor:
    """``out[k] = u[:, :L_k] @ v[:, :L_k]^T`` for ``L_k = widths[k]``, shape ``(K, B, N)``, no autograd.

    One product per chunk, each added onto the previous length's matrix (``addmm``): the FLOPs of
    ``u[:, :L_K] @ v[:, :L_K]^T`` alone.
    """
    return torch.stack(_running_products(u, v, widths))


def _running_products(u: Tensor, v: Tensor, widths: Sequence[int]) -> list[Tensor]:
    out: list[Tensor] = []
    for start, stop in _chunk_bounds(widths):
        chunk = u[:, start:stop] @ v[:, start:stop].t()
        out.append(chunk if not out else torch.addmm(out[-1], u[:, start:stop], v[:, start:stop].t()))
    return out


class _PrefixProducts(torch.autograd.Function):
    """Forward: the running products on the longest code, one (B, N) tensor per length. Backward:
    ``codes[k]`` gets the gradient of its own product alone: ``g_k v[:, :L_k]`` against a constant
    ``v``, ``(g_k + g_k^T) u_k`` for the Gram matrix (``v`` None)."""

    @staticmethod
    def forward(ctx, other: Tensor | None, *codes: Tensor) -> tuple[Tensor, ...]:
        longest = codes[-1]
        widths = [u.shape[1] for u in codes]
        right = longest if other is None else other.to(longest.dtype)
        ctx.widths = widths
        ctx.gram = other is None
        ctx.save_for_backward(right)
        return tuple(_running_products(longest, right, widths))

    @staticmethod
    def backward(ctx, *grads: Tensor):
        (right,) = ctx.saved_tensors
        out = []
        for k, (width, grad) in enumerate(zip(ctx.widths, grads)):
            g = grad + grad.t() if ctx.gram else grad
            out.append(g @ right[:, :width] if ctx.needs_input_grad[k + 1] else None)
        return (None, *out)


def prefix_products(codes: Sequence[Tensor], other: Tensor | None = None) -> tuple[Tensor, ...]:
    """All K prefix products of nested codes, one ``(B, N)`` tensor per length, in about one
    longest-length product.

    ``out[k] = codes[k] @ other[:, :L_k]^T`` against a constant ``other`` (N, >= L_K), e.g. a memory
    bank, which gets no gradient; with ``other=None`` the Gram matrices ``codes[k] @ codes[k]^T``.
    The caller guarantees that ``codes`` hold prefix values (:func:`prefix_views`, or an elementwise
    function of such views like a clamp): the values are read from ``codes[-1]`` only, while the
    gradient of ``out[k]`` flows to ``codes[k]`` only, exactly as the per-length products would send it.
    Values equal the per-length products up to the rounding of the summation order.

    Separate tensors rather than one (K, B, N) stack: a loss whose elementwise work is large (bank
    pairs, triplets) should run it length by length on (B, N) matrices that stay in cache; measured on
    CPU, the stacked form was slower than the per-length path. Small in-batch losses may stack them.
    """
    codes = list(codes)
    if other is not None:
        other = other.detach()
    return _PrefixProducts.apply(other, *codes)


def stack_hparam(losses: Sequence[HashLoss], name: str, like: Tensor, dims: int = 2) -> Tensor | float:
    """The hyper-parameter ``name`` of every loss: one float if they agree, else ``(K, 1, ..)`` with
    ``dims`` trailing singleton dimensions (broadcasts against ``(K, B, N)`` for ``dims=2``, ``(K,)`` for 0)."""
    values = tuple(float(getattr(loss, name)) for loss in losses)
    if len(set(values)) == 1:
        return values[0]
    return _hparam_tensor(values, like.dtype, like.device, dims)


@functools.lru_cache(maxsize=64)
def _hparam_tensor(values: tuple[float, ...], dtype: torch.dtype, device: torch.device, dims: int) -> Tensor:
    # Built once per (values, dtype, device): a fresh tensor every step would be a host-to-device copy, and
    # from pageable memory a synchronisation, on a GPU. Read only; never written in place.
    return torch.tensor(values, dtype=dtype, device=device).reshape(-1, *([1] * dims))


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


PAIR_MODES = ("bank", "batch")


class MemoryBankLoss(HashLoss):
    """A :class:`HashLoss` on pairs of codes: the batch against a bank of the whole training set
    (``pairs="bank"``, the reference) or the batch against itself (``pairs="batch"``).

    The bank is two registered buffers, ``U`` (num_train, L) and ``Y`` (num_train, C), zero at
    start. :meth:`_bank` writes the detached batch codes and labels at ``index`` and returns the
    whole bank, so the loss runs over B x num_train pairs, including rows not yet visited (zero
    codes, no labels), exactly as the reference. Writes only happen in training mode: the
    reference also wrote the *test* codes into training rows during its per-epoch test-loss pass
    (docs/method.md section 6, item 7); calling ``.eval()`` on the loss prevents that.

    With ``pairs="batch"`` there is no bank (``U`` and ``Y`` are None): the pairs are the B(B-1)/2
    unordered pairs i < j of the batch, as in the DSH paper's online pair generation, and the pair
    term is their mean (0 for a batch of one sample).

    A subclass defines the pair term elementwise, :meth:`_pair_terms`, and the per-code term,
    :meth:`_code_term`; the loss is ``mean(pair terms) + code term``. Against a bank the mean is taken by
    :meth:`_bank_pair_mean`, which DHN, DBDH and DSH give a hand-written backward (:mod:`.pair_means`). That split is what lets
    :meth:`nested_losses` compute every length of a nested model at once: all K inner-product
    matrices from :func:`prefix_products`, the label similarity once, and, after :meth:`nest`, one
    bank at the longest length whose first L_k columns are length k's bank (the bank of prefix
    codes is the prefix of the longest code's bank at every step).
    """

    U: Tensor | None
    Y: Tensor | None
    #: Whether :meth:`_pair_terms` needs the squared distances (DSH) or only inner products.
    needs_distances: ClassVar[bool] = False
    #: Names of the attributes :meth:`_pair_terms` reads as keyword arguments.
    pair_hparams: ClassVar[tuple[str, ...]] = ()

    def __init__(self, code_length: int, num_classes: int, num_train: int, *, seed: int = 0,
                 pairs: str = "bank") -> None:
        super().__init__(code_length, num_classes, num_train, seed=seed)
        if pairs not in PAIR_MODES:
            raise ValueError(f"pairs must be one of {PAIR_MODES}, got {pairs!r}")
        self.pairs = pairs
        # The loss that holds the bank: itself, or after nest() the longest length's loss. Kept out of
        # the module tree (a plain attribute), so it is neither a submodule nor in this loss's state_dict.
        self.__dict__["_bank_owner"] = None
        with_bank = pairs == "bank"
        self.register_buffer("U", torch.zeros(num_train, code_length) if with_bank else None)
        self.register_buffer("Y", torch.zeros(num_train, num_classes) if with_bank else None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pairs={self.pairs!r}"

    # ---------------------------------------------------------------- what a subclass defines

    def _transform(self, u: Tensor) -> Tensor:
        """The codes the pairs are built on (DBDH clamps them); elementwise, so prefixes stay prefixes."""
        return u

    def _pair_terms(self, inner: Tensor, distance: Tensor | None, similar: Tensor, **hparams) -> Tensor:
        """Elementwise pair losses from the inner products, squared distances and 0/1 similarity."""
        raise NotImplementedError

    def _code_term(self, u: Tensor) -> Tensor:
        """The weighted per-code term (quantisation, balance) of the transformed codes, 0-dim."""
        raise NotImplementedError

    def _bank_pair_mean(self, inner: Tensor, code_squares: Tensor | None, bank_squares: Tensor | None,
                        similar: Tensor, **hparams) -> Tensor:
        """The mean of :meth:`_pair_terms` over the batch × bank block, 0-dim.

        ``code_squares`` (B, 1) and ``bank_squares`` (N,) are the squared norms (None unless
        :attr:`needs_distances`). This default builds the distances and the terms under autograd; a subclass
        may return the same mean with a hand-written backward (:mod:`nhllib.core.losses.pair_means`).
        """
        distance = None
        if self.needs_distances:
            distance = (code_squares + bank_squares.unsqueeze(0) - 2 * inner).clamp(min=0)
        return self._pair_terms(inner, distance, similar, **hparams).mean()

    # ---------------------------------------------------------------- one length

    def compute_loss(self, u: Tensor, y: Tensor, index: Tensor) -> Tensor:
        u = self._transform(u)
        hparams = {name: getattr(self, name) for name in self.pair_hparams}
        if self.pairs == "bank":
            bank_u, bank_y = self._bank(u, y, index)
            code_squares = bank_squares = None
            if self.needs_distances:
                code_squares, bank_squares = u.pow(2).sum(dim=1, keepdim=True), bank_u.pow(2).sum(dim=1)
            similar = pairwise_similarity(y, bank_y).to(u.dtype)
            pair = self._bank_pair_mean(u @ bank_u.t(), code_squares, bank_squares, similar, **hparams)
            return pair + self._code_term(u)
        rows, cols = _upper_pairs(u.shape[0], u.device)
        inner = u @ u.t()
        distance = None
        if self.needs_distances:
            squares = u.pow(2).sum(dim=1)
            distance = (squares[rows] + squares[cols] - 2 * inner[rows, cols]).clamp(min=0)
        similar = pairwise_similarity(y, y).to(u.dtype)[rows, cols]
        terms = self._pair_terms(inner[rows, cols], distance, similar, **hparams)
        return _mean_or_zero(terms, dim=0) + self._code_term(u)

    # ---------------------------------------------------------------- the bank

    @property
    def bank_owner(self) -> MemoryBankLoss:
        """The loss whose ``U`` and ``Y`` hold this loss's bank (itself unless :meth:`nest` shared one)."""
        owner = self.__dict__["_bank_owner"]
        return self if owner is None else owner

    def _bank(self, u: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Write the batch into the bank (training mode only); return the bank in u's dtype.

        A shorter length of a nested model writes its codes into the first L columns of the shared
        bank; the longest length then writes whole rows, which start with the same values.
        """
        owner, width = self.bank_owner, self.code_length
        if self.training:
            index = index.long()
            rows = u.detach().to(owner.U.dtype)
            if owner is not self:
                rows = torch.cat([rows, owner.U[index, width:]], dim=1)
            # Out-of-place write: a graph built by an earlier call keeps the bank it saw, so a
            # second forward before that graph's backward cannot trip autograd's version check.
            owner.U = owner.U.index_copy(0, index, rows)
            owner.Y = owner.Y.index_copy(0, index, y.detach().to(owner.Y.dtype))
        return owner.U[:, :width].to(u.dtype), owner.Y.to(y.dtype)

    def _check_code(self, u: Tensor) -> None:
        super()._check_code(u)
        owner = self.bank_owner
        if owner is not self and owner.U is not None and owner.U.device != u.device:
            raise ValueError(f"the shared bank of {self.method_name} (held by the {owner.code_length}-bit loss) is "
                             f"on {owner.U.device} but u is on {u.device}; move every loss with .to(device)")

    @classmethod
    def nest(cls, losses: Sequence[HashLoss], *, targets: str = "nested") -> None:
        """One bank for all lengths: the longest length's loss keeps ``U`` (num_train, L_K) and ``Y``,
        the shorter ones drop theirs (their ``U``, ``Y`` become None) and read its first L_k columns.

        ``targets`` does not apply to a bank. Nothing to share with ``pairs="batch"``.
        """
        losses = list(losses)
        owner = losses[-1]
        widths = [loss.code_length for loss in losses]
        if any(a >= b for a, b in zip(widths, widths[1:])):
            raise ValueError(f"losses must be ordered by strictly increasing code_length, got {widths}")
        for loss in losses:
            if not isinstance(loss, MemoryBankLoss) or loss.pairs != owner.pairs:
                raise ValueError(f"nest needs memory-bank losses with one pairs mode, got {loss!r}")
            if (loss.num_train, loss.num_classes) != (owner.num_train, owner.num_classes):
                raise ValueError("losses must share num_classes and num_train to share a bank")
        if owner.pairs != "bank":
            return
        for loss in losses[:-1]:
            loss.__dict__["_bank_owner"] = owner
            loss.U = None
            loss.Y = None

    # ---------------------------------------------------------------- all lengths at once

    @classmethod
    def nested_losses(cls, losses: Sequence[HashLoss], codes: Sequence[Tensor], y: Tensor,
                      index: Tensor) -> Tensor:
        """All lengths in one pass when ``codes`` are :func:`prefix_views` and, with a bank, the losses
        share one (:meth:`nest`); else the per-length path. The bank is written once, with the longest
        code, when the longest length's loss is in training mode.
        """
        losses, codes = list(losses), list(codes)
        owner = losses[-1]
        modes = {loss.pairs for loss in losses}
        shared = all(loss.bank_owner is owner for loss in losses)
        if len(modes) != 1 or not prefix_views(codes) or (owner.pairs == "bank" and not shared):
            return super().nested_losses(losses, codes, y, index)
        codes = [loss._transform(u) for loss, u in zip(losses, codes)]
        longest = codes[-1]
        widths = [u.shape[1] for u in codes]
        pair = []
        if owner.pairs == "bank":
            bank_u, bank_y = owner._bank(longest, y, index)
            similar = pairwise_similarity(y, bank_y).to(longest.dtype)
            inner = prefix_products(codes, bank_u)
            bank_norms = None
            if cls.needs_distances:
                # |U_k|^2 as running sums of the bank's chunk norms; |u_k|^2 from each code (its own gradient).
                bank_squares = bank_u.pow(2)
                bank_norms = torch.stack([bank_squares[:, a:b].sum(dim=1)
                                          for a, b in _chunk_bounds(widths)]).cumsum(0)
            # The elementwise work length by length: (B, N) matrices stay in cache, a (K, B, N) stack does not.
            for k, (loss, u) in enumerate(zip(losses, codes)):
                code_squares = None if bank_norms is None else u.pow(2).sum(dim=1, keepdim=True)
                hparams = {name: getattr(loss, name) for name in cls.pair_hparams}
                pair.append(loss._bank_pair_mean(inner[k], code_squares, None if bank_norms is None else bank_norms[k],
                                                 similar, **hparams))
        else:
            rows, cols = _upper_pairs(longest.shape[0], longest.device)
            similar = pairwise_similarity(y, y).to(longest.dtype)[rows, cols]
            for loss, u, gram in zip(losses, codes, prefix_products(codes)):
                distance = None
                if cls.needs_distances:
                    squares = u.pow(2).sum(dim=1)
                    distance = (squares[rows] + squares[cols] - 2 * gram[rows, cols]).clamp(min=0)
                hparams = {name: getattr(loss, name) for name in cls.pair_hparams}
                pair.append(_mean_or_zero(loss._pair_terms(gram[rows, cols], distance, similar, **hparams), dim=0))
        return torch.stack(pair) + torch.stack([loss._code_term(u) for loss, u in zip(losses, codes)])


def _upper_pairs(batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column indices of the pairs i < j of a batch."""
    rows, cols = torch.triu_indices(batch, batch, offset=1, device=device)
    return rows, cols


def _mean_or_zero(terms: Tensor, dim: int) -> Tensor:
    """Mean over ``dim``; 0 (still attached to the graph) when there is nothing to average."""
    if terms.shape[dim] == 0:
        return terms.sum(dim=dim)
    return terms.mean(dim=dim)
