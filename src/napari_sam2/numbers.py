"""Checks of whole numbers given by a user, shared by modules that must not import torch (prompts, files)."""

from __future__ import annotations

import operator

import numpy as np

from .errors import InputError


def whole_number(value, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; bools and non-integers are an InputError."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be an integer, got {value!r}.")
    try:
        number = operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be an integer, got {value!r}.") from None
    if number < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {number}.")
    return int(number)
