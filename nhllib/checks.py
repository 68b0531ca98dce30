"""Validation helpers shared by every layer: each raises ``ValueError`` naming the parameter and what it expects.

Torch-free on purpose, so that configurations, vocabularies and the analysis layer can validate without importing
torch. A boolean is never accepted where a number is expected (``True`` is an ``int`` to Python, not to us).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["check_choice", "check_int", "check_positive_int", "check_number", "check_name", "check_optional",
           "check_bool", "check_integer", "check_shardable", "parameter_bool", "validate_code_lengths", "BOOL_STRINGS",
           "MAX_CODE_LENGTH", "MAX_PER_CLASS", "MAX_BATCH", "MAX_EPOCHS", "MAX_IMAGE_SIDE",
           "MAX_WORKERS"]

#: The one explicit set of strings read as booleans, and only where parameters arrive as text (papermill's
#: ``-p overwrite false`` passes the string "false": papermill itself converts only ``True`` and ``False``).
#: Compared case-insensitively; anything else (``"no"``, ``0``, ``"1"``) is an error, never a guess.
BOOL_STRINGS = {"true": True, "false": False}

#: The longest code a run may ask for. The paper's longest is 128 bits; 4096 leaves room for experiments while
#: a typo (``10**9``) fails here, naming the field, instead of in the allocator.
MAX_CODE_LENGTH = 4096

#: Upper bounds of the other sizes of a run, for the same reason: far above any real setting, far below a typo.
MAX_PER_CLASS = 10_000_000  # images per class in a split part
MAX_BATCH = 1 << 20  # batch sizes
MAX_EPOCHS = 100_000  # epochs, evaluation and statistics intervals, patience
MAX_IMAGE_SIDE = 8192  # image_size / resize_size in pixels
MAX_WORKERS = 1024  # DataLoader worker processes


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


def parameter_bool(name: str, value: Any) -> bool:
    """A boolean parameter that may arrive as text: ``True``/``False``, or a string of :data:`BOOL_STRINGS`.

    The one place where text becomes a boolean (notebook parameters); configurations themselves take only real
    booleans (:func:`check_bool`).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return BOOL_STRINGS[value.strip().lower()]
    raise ValueError(
        f"{name} must be True or False (or one of the strings {sorted(BOOL_STRINGS)}, any case), got {value!r}; "
        f"with papermill pass -p {name} True or -p {name} False"
    )


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` if it is a Python int (not a bool, not a NumPy integer: configurations must stay JSON)
    ``>= minimum`` (and ``<= maximum`` when given: sizes have sane bounds, so a typo fails here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {value:,}")
    return value


def check_positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), at most ``maximum`` when given."""
    return check_int(name, value, minimum=1, maximum=maximum)


def check_integer(name: str, value: Any, *, minimum: int | None = None, what: str | None = None) -> int:
    """Return ``value`` if it is an integer (a Python or NumPy integer, not a bool) ``>= minimum``.

    The array-facing form of :func:`check_int`: retrieval and evaluation take counts computed with NumPy.
    ``what`` replaces the generated description in the message (to keep a documented wording).
    """
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        kind = what or ("an int" if minimum is None
                        else {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}"))
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


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
        if length > MAX_CODE_LENGTH:
            raise ValueError(f"code_lengths must be at most {MAX_CODE_LENGTH} bits each, got {length:,} in {lengths}")
    for short, long in zip(lengths, lengths[1:]):
        if long <= short:
            raise ValueError(
                f"code_lengths must be strictly increasing (each code is a prefix of the next), "
                f"got {lengths}: {long} follows {short}"
            )
    return lengths


def check_shardable(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    """Every global batch must give each rank at least one sample (else a rank has nothing to forward)."""
    if world_size == 1:
        return
    if batch_size < world_size:
        raise ValueError(f"batch_size ({batch_size}) must be at least the number of ranks ({world_size}): it is "
                         f"the global batch, split across the ranks")
    last = num_samples % batch_size
    if not drop_last and 0 < last < world_size:
        raise ValueError(
            f"the last global batch holds {last} sample(s) for {world_size} ranks (num_samples={num_samples}, "
            f"batch_size={batch_size}); choose a batch_size that leaves 0 or at least {world_size} in it"
        )
