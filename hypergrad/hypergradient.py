"""`hypergradient`: the validation loss and its gradient with respect to the hyperparameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hypergrad import _compile
from hypergrad._types import HParams, Key, Scalar
from hypergrad.methods.base import Method
from hypergrad.methods.reverse import Reverse
from hypergrad._checks import check_key
from hypergrad._indexing import check_objective_runs, check_schedules_in_bounds
from hypergrad.objective import Objective, as_hparams

__all__ = ["hypergradient", "check_method", "check_differentiable_hparams"]


def check_method(method: Any) -> Method:
    if not isinstance(method, Method):
        raise ValueError(
            f"method={method!r} is not a hypergradient method; pass a strategy object such as "
            "hg.Reverse() or hg.Reverse(checkpoint_every=20)"
        )
    return method


def check_objective(objective: Any) -> Objective:
    if not isinstance(objective, Objective):
        raise ValueError(
            f"objective must be an hg.Objective, got {type(objective).__name__}; build one with "
            "hg.Objective(problem, optimizer, num_steps)"
        )
    return objective


def check_differentiable_hparams(hparams: HParams, argname: str = "hparams") -> None:
    """Gradient methods need floating-point hyperparameters; integers mean a `Choice` slipped in."""
    for name, value in hparams.items():
        if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise ValueError(
                f"{argname}[{name!r}] has dtype {jnp.result_type(value)}: a gradient method cannot "
                "differentiate a discrete hyperparameter (an hg.Choice); pass a float, or search it "
                "with hg.random_search / hg.grid_search"
            )


def hypergradient(
    objective: Objective, hparams: HParams, key: Key, *, method: Method = Reverse()
) -> tuple[Scalar, HParams]:
    """The validation loss and its gradient with respect to `hparams`.

    Called with concrete values, it runs one program compiled once per (objective, method,
    hyperparameter shapes) and reused for new values and keys. Called under a JAX transformation
    (jit, vmap, grad), it is traced inline like any pure function.

    Args:
        objective: the `hg.Objective` to differentiate.
        hparams: dict of floating-point hyperparameter values (constrained: a learning rate of 0.1).
        key: PRNG key for initialisation and minibatches.
        method: a strategy object, `hg.Reverse()` by default. Its docstring states cost, memory and
            bias.

    Returns:
        (value, grads): the validation loss and a dict of gradients shaped like `hparams`.
    """
    check_objective(objective)
    check_method(method)
    hparams = as_hparams(hparams)
    check_differentiable_hparams(hparams)
    key = check_key(key)
    method.check(objective, hparams)
    if not _compile.is_traced(hparams):  # under a transformation the objective may close over tracers
        check_objective_runs(objective, hparams)
    else:  # the schedules still (at zeros of the traced values' shapes), when the optimiser runs on its own
        check_schedules_in_bounds(objective, hparams)
    (value, _), grads = value_scores_and_grad(objective, hparams, key, method)
    return value, grads


def value_scores_and_grad(objective: Objective, hparams: HParams, key: Key, method: Method):
    """((value, scores), grads) from the cached compiled program (or inline when traced)."""
    data = objective.problem.data
    if _compile.is_traced((hparams, key, data)):
        return value_and_grad_fn(objective, method)(hparams, key, data)
    executable, _ = compiled_value_and_grad(objective, method, (hparams, key, data))
    return executable(hparams, key, data)


def value_and_grad_fn(objective: Objective, method: Method):
    """The pure program `(hparams, key, data) -> ((value, scores), grads)` of `method` on
    `objective`: what `hypergradient` compiles and what compute accounting counts."""
    return lambda h, k, d: method.value_and_grad(objective, h, k, d)


def compiled_value_and_grad(objective: Objective, method: Method, args: tuple):
    """(executable, compile seconds) of `method.value_and_grad` on `objective`."""
    return _compile.compiled(("hypergradient", objective, method),
                             lambda: value_and_grad_fn(objective, method), args)
