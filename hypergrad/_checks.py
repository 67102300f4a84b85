"""Argument predicates shared by the validators (each caller words its own error message)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int_at_least(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is an integer (a Python or numpy int, not a bool) and >= `minimum`."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum
