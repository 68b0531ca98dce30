"""The shared validation helpers: what they accept, and that every refusal names the parameter."""

import math

import pytest

from nhllib.checks import (
    check_bool, check_choice, check_int, check_name, check_number, check_optional, check_positive_int,
    validate_code_lengths,
)


def test_accepted_values_come_back_unchanged():
    assert check_choice("ties", "index", ("expected", "index")) == "index"
    assert check_bool("amp", False) is False
    assert check_int("seed", 0) == 0 and check_positive_int("epochs", 3) == 3
    assert check_number("lr", 1e-3, positive=True) == 1e-3 and check_number("weight_decay", 0) == 0
    assert check_name("method", "csq") == "csq"
    assert check_optional(check_positive_int, "topk", None) is None
    assert validate_code_lengths([8, 16]) == (8, 16)


@pytest.mark.parametrize("call, message", [
    (lambda: check_choice("variant", ["nhl"], {"nhl": 1}), "variant must be one of"),
    (lambda: check_choice("flag", True, (1, 2)), "flag must be one of"),
    (lambda: check_bool("amp", 1), "amp must be True or False"),
    (lambda: check_int("seed", True), "seed must be a non-negative int"),
    (lambda: check_int("seed", -1), "seed must be a non-negative int"),
    (lambda: check_positive_int("epochs", 0), "epochs must be a positive int"),
    (lambda: check_positive_int("epochs", 2.0), "epochs must be a positive int"),
    (lambda: check_int("workers", 1, minimum=2), "workers must be an int >= 2"),
    (lambda: check_number("lr", 0, positive=True), "lr must be positive"),
    (lambda: check_number("beta", math.nan), "beta must be a non-negative number"),
    (lambda: check_number("beta", False), "beta must be a non-negative number"),
    (lambda: check_name("method", ""), "method must be a non-empty string"),
    (lambda: check_optional(check_positive_int, "topk", 0), r"topk must be a positive int, got 0 \(or None\)"),
    (lambda: validate_code_lengths("8,16"), "code_lengths must be a sequence of ints"),
])
def test_refusals_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()
