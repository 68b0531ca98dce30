"""Packing ±1 hash codes into bytes, and the prefix property of packed nested codes.

Bit convention (the same as :func:`numpy.packbits` with its default ``bitorder="big"``):

- a real value ``>= 0`` becomes bit 1 and a value ``< 0`` becomes bit 0, so ``sign(0)`` counts as +1,
  the project's convention (docs/evaluation.md §2);
- bit ``j`` of a code is bit ``7 - j % 8`` of byte ``j // 8``: bit 0 of the code is the most significant
  bit of byte 0.

Because bits fill the bytes in code order, the packed form of a nested code of length ``L`` (a multiple
of 8) is the first ``L // 8`` bytes of the packed longest code. Nested codes are therefore packed once,
at the longest length, and every shorter code is a byte slice (:func:`prefix_bytes`).

The Hamming distance does not depend on the bit order, so these bytes can go straight into faiss
binary indexes (which use their own, least-significant-first order only when they convert floats).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = [
    "as_packed",
    "pack_codes",
    "popcount",
    "prefix_bytes",
    "to_words",
    "unpack_codes",
]


def _to_numpy(codes: Any, name: str) -> np.ndarray:
    """Return ``codes`` as a numpy array; torch tensors are detached and moved to the CPU."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was already imported
    if torch is not None and isinstance(codes, torch.Tensor):
        t = codes.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # numpy has no bfloat16; float32 keeps every sign
        return t.numpy()
    if isinstance(codes, np.ndarray):
        return codes
    if isinstance(codes, (list, tuple)):
        return np.asarray(codes)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(codes).__name__}")


def _check_real_codes(arr: np.ndarray, name: str) -> None:
    """Reject dtypes whose sign carries no ±1 information, and NaN."""
    kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(f"{name} must hold real ±1 values (float or signed int), got bool")
    if kind == "u":
        # all unsigned values are >= 0, so every bit would be 1: almost certainly already-packed bytes
        raise TypeError(
            f"{name} must hold real ±1 values (float or signed int), got {arr.dtype}; "
            "uint8 arrays are treated as packed codes only where a function says so"
        )
    if kind not in "if":
        raise TypeError(f"{name} must hold real ±1 values (float or signed int), got {arr.dtype}")
    if kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; a NaN has no sign and cannot become a bit")


def pack_codes(codes: Any) -> np.ndarray:
    """Pack real-valued codes ``(..., L)`` into bytes ``(..., L // 8)`` (``uint8``).

    ``codes`` is a numpy array or torch tensor of floats or signed integers (typically ±1, but any real
    value works: ``>= 0`` -> bit 1, ``< 0`` -> bit 0). ``L`` must be a multiple of 8. The layout is
    :func:`numpy.packbits` (big-endian within each byte: code bit 0 is the MSB of byte 0).
    """
    arr = _to_numpy(codes, "codes")
    if arr.ndim == 0:
        raise ValueError("codes must have at least one dimension (the code bits), got a scalar")
    _check_real_codes(arr, "codes")
    width = arr.shape[-1]
    if width == 0 or width % 8:
        raise ValueError(f"codes width (last dimension) must be a positive multiple of 8, got {width}")
    return np.packbits(arr >= 0, axis=-1)


def unpack_codes(packed: Any, code_length: int | None = None, dtype: Any = np.int8) -> np.ndarray:
    """Unpack bytes ``(..., B)`` into ±1 codes ``(..., code_length)`` of ``dtype`` (default ``int8``).

    ``code_length`` defaults to ``8 * B``; a shorter multiple of 8 unpacks only that prefix.
    """
    arr = _to_numpy(packed, "packed")
    if arr.dtype != np.uint8:
        raise TypeError(f"packed must be uint8 bytes, got {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("packed must have at least one dimension (the bytes), got a scalar")
    n_bytes = arr.shape[-1]
    if code_length is None:
        code_length = 8 * n_bytes
    _check_bits(code_length, "code_length", max_bits=8 * n_bytes)
    bits = np.unpackbits(arr[..., : code_length // 8], axis=-1)
    out = bits.astype(dtype) * 2 - 1
    return out.astype(dtype, copy=False)


def _check_bits(bits: int, name: str, max_bits: int | None = None) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(bits).__name__}")
    if bits <= 0 or bits % 8:
        raise ValueError(f"{name} must be a positive multiple of 8, got {bits}")
    if max_bits is not None and bits > max_bits:
        raise ValueError(f"{name}={bits} exceeds the available code length {max_bits}")


def prefix_bytes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The packed ``bits``-bit prefix of packed codes: a C-contiguous copy of the first ``bits // 8`` bytes."""
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
        raise TypeError("packed must be a uint8 numpy array")
    _check_bits(bits, "bits", max_bits=8 * packed.shape[-1])
    return np.ascontiguousarray(packed[..., : bits // 8])


def as_packed(codes: Any, code_length: int, name: str = "codes") -> np.ndarray:
    """Return ``codes`` as packed ``(N, code_length // 8)`` ``uint8`` rows.

    Accepts either packed bytes (``uint8``, width ``code_length // 8``) or real ±1 codes (float or
    signed int, width ``code_length``); a single 1-D code is treated as one row. Used by the indexes so
    that both forms are accepted and nothing else is.
    """
    arr = _to_numpy(codes, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, bits) or (N, bytes), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        if arr.shape[1] != code_length // 8:
            raise ValueError(
                f"{name} are packed uint8 with {arr.shape[1]} bytes per row; expected "
                f"{code_length // 8} bytes ({code_length} bits), or real ±1 codes of width {code_length}"
            )
        return np.ascontiguousarray(arr)
    _check_real_codes(arr, name)
    if arr.shape[1] != code_length:
        raise ValueError(
            f"{name} have width {arr.shape[1]}; expected {code_length} (±1 codes) "
            f"or packed uint8 with {code_length // 8} bytes"
        )
    return pack_codes(arr)


# Popcount on uint64 words: numpy >= 2.0 has a ufunc; older numpy gets a byte lookup table.
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)
_BYTE_POPCOUNT.setflags(write=False)


def popcount(words: np.ndarray) -> np.ndarray:
    """Number of set bits of each element of an unsigned integer array (result ``uint8``)."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(words)
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(*words.shape, words.itemsize)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def to_words(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """The first ``bits`` bits of packed rows as ``uint64`` words ``(N, ceil(bits / 64))``.

    Bytes past ``bits`` in the last word are zero, so XOR + popcount over the words gives the
    ``bits``-bit Hamming distance. The word values depend on the machine's byte order; only XOR and
    popcount (order-free) are ever applied to them.
    """
    n_bytes = packed.shape[-1] if bits is None else bits // 8
    n_words = -(-n_bytes // 8)
    buf = np.zeros((packed.shape[0], 8 * n_words), dtype=np.uint8)
    buf[:, :n_bytes] = packed[:, :n_bytes]
    return buf.view(np.uint64)
