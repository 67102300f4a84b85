"""Reverse-mode hypergradients through the whole unrolled training loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from hypergrad._types import HParams, Key, PyTree
from hypergrad.methods.base import Method
from hypergrad._checks import is_int_at_least

__all__ = ["Reverse"]


@dataclasses.dataclass(frozen=True)
class Reverse(Method):
    """Exact gradient of the validation loss by reverse mode through all T training steps.

    Maclaurin, Duvenaud & Adams (2015) and Franceschi et al. (2017, "reverse-mode") describe the
    method; here it is `jax.value_and_grad` of the `lax.scan` training loop.

    Cost: one training run forward plus a backward pass holding one Hessian-vector product per step,
    about 3 training runs (more with checkpointing, which recomputes the forward pass once).
    Memory: without checkpointing, the residuals of all T steps (activations of every minibatch,
    parameters and optimiser state): linear in T. With `checkpoint_every=k`, one training state per
    segment plus one segment's residuals: about T/k + k steps, minimised near k = sqrt(T).
    Bias: none; exact up to floating point.

    Args:
        checkpoint_every: segment length k for checkpointing, or None to store every step.
    """

    checkpoint_every: int | None = None

    def __post_init__(self):
        k = self.checkpoint_every
        if k is not None and not is_int_at_least(k):
            raise ValueError(
                f"Reverse(checkpoint_every={k!r}) must be a positive int (try about sqrt(num_steps)) or None"
            )

    def value_and_grad(self, objective: Any, hparams: HParams, key: Key, data: Mapping[str, PyTree]):
        def loss(h):
            return objective.loss_and_scores(h, key, data, checkpoint_every=self.checkpoint_every)

        return jax.value_and_grad(loss, has_aux=True)(hparams)

    def reference_options(self, num_steps: int) -> Method:
        # In the unrolled T=1/T=2 accounting programs, checkpointing every step reproduces the
        # recomputation per step of any k < T (each step is recomputed exactly once).
        return self if self.checkpoint_every is None else Reverse(checkpoint_every=1)
