"""Validation helpers shared by every layer: each raises ``ValueError`` naming the parameter and what it expects.

Torch-free on purpose, so that configurations, vocabularies and the analysis layer can validate without importing
torch. A boolean is never accepted where a number is expected (``True`` is an ``int`` to Python, not to us).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["check_choice", "check_int", "check_positive_int", "check_number", "check_name", "check_optional",
           "check_bool", "validate_code_lengths"]


def check_choice(name: str, value: Any, allowed: Collection) -> Any:
    """Return ``value`` if it is one of ``allowed``."""
    try:
        known = not isinstance(value, bool) and value in allowed
    except TypeError:  # an unhashable value (a list given for a name) is simply not among them
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """Return ``value`` if it is a Python int (not a bool, not a NumPy integer: configurations must stay JSON)
    ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool)."""
    return check_int(name, value, minimum=1)


def check_number(name: str, value: Any, *, positive: bool = False) -> float:
    """Return ``value`` if it is a finite real >= 0 (> 0 with ``positive``), not a bool; the value is kept as given."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    if positive and (not ok or value == 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not ok:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return value


def check_name(name: str, value: Any) -> str:
    """Return ``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_optional(check, name: str, value: Any, **options) -> Any:
    """``None``, or ``check(name, value, **options)``: the form of every "None means the default" parameter."""
    if value is None:
        return None
    try:
        return check(name, value, **options)
    except ValueError as err:
        raise ValueError(f"{err} (or None)") from None


def validate_code_lengths(code_lengths: Sequence[int]) -> tuple[int, ...]:
    """Return ``code_lengths`` as a tuple, or raise ``ValueError`` saying what is wrong with it."""
    if isinstance(code_lengths, (str, bytes)):
        raise ValueError(
            f"code_lengths must be a sequence of ints, got the string {code_lengths!r} "
            "(with papermill pass lists as YAML: -y 'code_lengths: [8, 16]')"
        )
    try:
        lengths = tuple(code_lengths)
    except TypeError:
        raise ValueError(f"code_lengths must be a sequence of ints, got {code_lengths!r}") from None
    if not lengths:
        raise ValueError("code_lengths must hold at least one length, got an empty sequence")
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"code_lengths must be positive ints, got {length!r} in {lengths}")
    for short, long in zip(lengths, lengths[1:]):
        if long <= short:
            raise ValueError(
                f"code_lengths must be strictly increasing (each code is a prefix of the next), "
                f"got {lengths}: {long} follows {short}"
            )
    return lengths
