"""The shared interface of hypergradient methods.

A method is an immutable strategy object passed as `method=` (as optimistix's `adjoint=`). It
computes the validation loss, the scores of the trained parameters and an (exact or estimated)
gradient of the loss with respect to the hyperparameters, as a pure function that can be traced,
jitted and vmapped.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from hypergrad._types import HParams, Key, PyTree, Scalar

__all__ = ["Method"]


class Method(abc.ABC):
    """Abstract base of hypergradient strategies. Subclasses are frozen dataclasses (hashable)."""

    @abc.abstractmethod
    def value_and_grad(
        self, objective: Any, hparams: HParams, key: Key, data: Mapping[str, PyTree]
    ) -> tuple[tuple[Scalar, dict[str, Scalar]], HParams]:
        """((validation loss, scores of the trained parameters), d loss / d hparams).

        Pure and traceable. `data` holds the problem's splits as explicit arrays.
        """

    def check(self, objective: Any, hparams: HParams) -> None:  # noqa: B027 - optional hook
        """Raises `ValueError`, before anything compiles, for a combination it cannot handle."""

    def reference_options(self, num_steps: int) -> "Method":
        """This method as used in the T=1 and T=2 reference programs of compute accounting."""
        del num_steps
        return self
