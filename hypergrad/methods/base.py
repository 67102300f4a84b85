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

    def flops_per_step(self, objective: Any, hparams: HParams, key: Key,
                       held: HParams | None = None) -> tuple[float, float]:
        """(FLOPs outside the training loop, FLOPs per training step) of `value_and_grad`.

        Counted by XLA on the method's program with the loop fully unrolled at T=1 and T=2 (see
        `hypergrad.compute`), cached per (objective, method, shapes).

        `held`: hyperparameters held fixed, for the hypergradient of `objective.with_fixed(held)`.
        They enter the counted program as inputs, as they do the batched program of
        `hg.hybrid_search`, so a masked choice is counted with every branch (XLA counts a
        conditional as the sum of its branches, which is what the vmapped program computes).
        Closed over as constants, the index would let XLA drop the branches it does not select,
        so the count would depend on which options the held values pick (by 1-3% on the iris
        study), and each new `with_fixed` objective would miss the cache.
        """
        from hypergrad.compute import cached_flops_per_step

        data = objective.problem.data

        def build(steps):
            method = self.reference_options(steps)
            if held is None:
                return lambda h, k, d: method.value_and_grad(objective.reference(steps), h, k, d)
            return lambda h, f, k, d: method.value_and_grad(objective.with_fixed(f).reference(steps), h, k, d)

        if held is None:
            return cached_flops_per_step(("hypergradient", objective, self), build, (hparams, key, data))
        return cached_flops_per_step(("hypergradient-held", objective, self), build, (hparams, held, key, data))

    def flops(self, objective: Any, hparams: HParams, key: Key, held: HParams | None = None) -> float:
        """FLOPs of one `value_and_grad` at the objective's horizon (affine in T by default); `held`
        as in `flops_per_step`."""
        fixed, per_step = self.flops_per_step(objective, hparams, key, held)
        return fixed + objective.num_steps * per_step

    def reference_options(self, num_steps: int) -> "Method":
        """This method as used in the T=1 and T=2 reference programs of compute accounting."""
        del num_steps
        return self
