"""Argument checks shared by the validators: predicates (each caller words its own error message)
and `check_count`, the one "positive integer" check with its one message."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether `value` is an integer: a Python or numpy int, not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_int_at_least(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is an integer (a Python or numpy int, not a bool) and >= `minimum`."""
    return is_int(value) and value >= minimum


def check_count(value: Any, argname: str) -> int:
    """`int(value)` for an integer >= 1 (not a bool); else a `ValueError` naming `argname`."""
    if not is_int_at_least(value):
        raise ValueError(f"{argname}={value!r} must be an integer >= 1")
    return int(value)
