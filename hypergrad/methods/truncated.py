"""Truncated reverse mode: back-propagate through the last `window` training steps only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from hypergrad._types import HParams, Key, PyTree
from hypergrad.methods.base import Method
from hypergrad.methods.reverse import Reverse
from hypergrad.problem import refuse_cv
from hypergrad._checks import is_int_at_least

__all__ = ["Truncated"]


@dataclasses.dataclass(frozen=True)
class Truncated(Method):
    """Reverse mode through the last `window` training steps only (Shaban et al. 2019, "Truncated
    back-propagation for bilevel optimization").

    Training runs all T steps. The state (parameters and optimiser state) entering step T - window
    is treated as a constant (`jax.lax.stop_gradient`), so the estimate is the exact gradient of

        h -> val_loss(train steps T-window, ..., T-1 with h, from the state reached with h held fixed)

    i.e. the partial derivative with respect to the hyperparameters *as used in the last `window`
    steps*. Entries of a per-step schedule before the window get exactly zero. With window >= T
    it is `Reverse` exactly (the same program).

    Cost: one training run (T steps forward) plus a backward pass through `window` steps (one
    Hessian-vector product each, about 2 steps' work), so about T + 2 * window training steps; with
    checkpointing, `window` more forward steps.
    Memory: the residuals of `window` steps (not T); with `checkpoint_every=k`, about window/k + k.
    Bias: short-horizon bias (Wu et al. 2018, "Understanding short-horizon bias in stochastic
    meta-optimization"): the influence of the hyperparameters on the first T - window steps is
    ignored, so, e.g., the learning rate it drives to is typically smaller than the best one for the
    full horizon. Unbiased (exact) only when window >= T.

    Compute accounting (`flops`): the per-step FLOPs of `Reverse` for the `window` differentiated
    steps plus those of a plain training step for the other T - window steps.

    Args:
        window: number of final training steps differentiated through, an int >= 1.
        checkpoint_every: segment length k for checkpointing the window (as `Reverse`), or None.
    """

    window: int
    checkpoint_every: int | None = None

    def __post_init__(self):
        if not is_int_at_least(self.window):
            raise ValueError(
                f"Truncated(window={self.window!r}) must be an int >= 1: the number of final training "
                "steps to differentiate through (window >= num_steps is exact reverse mode)"
            )
        object.__setattr__(self, "window", int(self.window))
        k = self.checkpoint_every
        if k is not None and not is_int_at_least(k):
            raise ValueError(
                f"Truncated(checkpoint_every={k!r}) must be a positive int (try about sqrt(window)) or None"
            )

    def check(self, objective: Any, hparams: HParams) -> None:
        """Refuses a cross-validated problem when the window truncates (its loop reads one training
        set); with window >= num_steps it is `Reverse`, which handles cv."""
        if self.window < objective.num_steps:
            refuse_cv(objective.problem, f"Truncated(window={self.window})",
                      f"use hg.Reverse() (or Truncated(window >= num_steps = {objective.num_steps}))")

    def value_and_grad(self, objective: Any, hparams: HParams, key: Key, data: Mapping[str, PyTree]):
        num_steps = objective.num_steps
        window = min(self.window, num_steps)
        if window == num_steps:  # nothing to truncate: exactly the Reverse program
            return Reverse(self.checkpoint_every).value_and_grad(objective, hparams, key, data)
        head = num_steps - window

        def loss(h):
            # The first T - window steps are run with the hyperparameters held constant, and the
            # state they reach is cut from the graph: reverse mode stores nothing for them, and the
            # gradient ignores their dependence on h (the truncation). Holding h fixed there as
            # well as stopping the state changes no value and keeps the head out of the JVP.
            fixed = jax.lax.stop_gradient(h)
            state, data_key = objective.init_state(fixed, key)
            state = objective.run_steps(state, 0, head, fixed, data_key, data["train"])
            state = jax.lax.stop_gradient(state)
            # The window: steps T - window, ..., T - 1 (the same minibatches, via fold_in(key, t)).
            state = objective.run_steps(state, head, window, h, data_key, data["train"],
                                        checkpoint_every=self.checkpoint_every)
            scores = objective.problem.scores(state.params, data, h)
            return scores["val_loss"], scores

        return jax.value_and_grad(loss, has_aux=True)(hparams)

    def flops(self, objective: Any, hparams: HParams, key: Key, held: HParams | None = None) -> float:
        from hypergrad.search import run_flops_per_step

        window = min(self.window, objective.num_steps)
        fixed, reverse_step = Reverse(self.checkpoint_every).flops_per_step(objective, hparams, key, held)
        _, train_step = run_flops_per_step(objective, {**hparams, **(held or {})}, key)
        return fixed + window * reverse_step + (objective.num_steps - window) * train_step
