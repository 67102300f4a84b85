"""The shared interface of hypergradient methods.

A method is an immutable strategy object passed as `method=` (as optimistix's `adjoint=`). It
computes the validation loss, the scores of the trained parameters and an (exact or estimated)
gradient of the loss with respect to the hyperparameters, as a pure function that can be traced,
jitted and vmapped.

A method is written against the narrow training loop of one training set (`hypergrad.loop.Loop`:
`init`, `step`, `readout`, `num_steps`, plus the structure some methods exploit) and nothing else:
subclasses implement `differentiate(loop, hparams, key)` and, optionally, `check_loop`.
Cross-validation is the wrapper `value_and_grad` puts around every method: one loop per fold,
vmapped, the value and gradient averaged over folds (`hypergrad.folds`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from hypergrad._types import HParams, Key, PyTree, Scalar
from hypergrad.folds import over_folds
from hypergrad.loop import Loop

__all__ = ["Method"]


class Method(abc.ABC):
    """Abstract base of hypergradient strategies. Subclasses are frozen dataclasses (hashable)."""

    @abc.abstractmethod
    def differentiate(self, loop: Loop, hparams: HParams, key: Key
                      ) -> tuple[tuple[Scalar, dict[str, Scalar]], HParams]:
        """((validation loss, scores of the trained parameters), d loss / d hparams) on one
        training set. Pure and traceable."""

    def check_loop(self, loop: Loop, hparams: HParams) -> None:  # noqa: B027 - optional hook
        """Raises `ValueError`, before anything compiles, for a combination it cannot handle
        (`loop` holds concrete data; `hparams` may be traced)."""

    def value_and_grad(
        self, objective: Any, hparams: HParams, key: Key, data: Mapping[str, PyTree]
    ) -> tuple[tuple[Scalar, dict[str, Scalar]], HParams]:
        """((validation loss, scores), d loss / d hparams) of `objective`: `differentiate` on its
        loop, or under cross-validation on each fold's loop, vmapped, with the value and the
        gradient averaged over the folds (the gradient of the fold mean is the mean of the fold
        gradients) and the scores aggregated (`hypergrad.folds`).

        Pure and traceable. `data` holds the problem's splits as explicit arrays (`problem.data`).
        """
        return over_folds(objective.problem, data,
                          lambda split: self.differentiate(objective.loop(split), hparams, key), has_grads=True)

    def check(self, objective: Any, hparams: HParams) -> None:
        """Raises `ValueError`, before anything compiles, for a combination it cannot handle."""
        self.check_loop(objective.loop(), hparams)
