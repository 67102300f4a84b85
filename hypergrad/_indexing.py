"""Refuses, before anything compiles, an optimiser that indexes a hyperparameter past its end
within the training steps: a per-step schedule shorter than `num_steps` (`hparams["lr"][step]`
with 100 entries and 200 steps). JAX clamps an out-of-bounds index to the last entry, so such a
run would silently train its last steps at the last rate and pile their hypergradient onto it."""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from hypergrad import _caches, _compile
from hypergrad._types import HParams
from hypergrad.loop import float_leaves, optimizer_step

__all__ = ["check_schedules_in_bounds"]

# objective -> the hyperparameter shapes it was checked at
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_caches.register(_checked.clear)


def check_schedules_in_bounds(objective: Any, hparams: HParams) -> None:
    """`ValueError` when `objective`'s optimiser, stepped `num_steps` times, indexes an array
    hyperparameter out of its bounds (JAX's `checkify` index checks); nothing when every
    hyperparameter is a scalar (nothing can be indexed).

    Runs the optimiser alone on zero parameters of the model's shapes and dtypes and gradients of
    one, at `hparams` (concrete values; a traced one is replaced by zeros of its shape and dtype),
    stepping as the training loop steps (`hypergrad.loop.optimizer_step`: every leaf cast back to
    its dtype, integer and boolean leaves held), so it accepts exactly the models training does. Cost,
    once per objective and hyperparameter shapes: one small compilation and `num_steps` optimiser
    updates, no training loss or data."""
    if all(np.ndim(v) == 0 for v in jax.tree.leaves(hparams)):
        return
    shapes = tuple((name, np.shape(v), str(jnp.result_type(v))) for name, v in sorted(hparams.items()))
    try:
        if _checked.get(objective) == shapes:
            return
    except TypeError:  # an objective that cannot be weakly referenced: checked every time
        pass
    concrete = {name: (np.zeros(np.shape(v), jnp.result_type(v)) if isinstance(v, jax.core.Tracer) else v)
                for name, v in hparams.items()}
    with _compile.naming_missing_hparams():
        error = _probe(objective, concrete)
    if error is not None:
        raise ValueError(
            f"the optimiser indexes a hyperparameter past its end within num_steps={objective.num_steps} "
            f"training steps ({error}); JAX would silently use the last entry instead. Give a per-step "
            f"schedule num_steps={objective.num_steps} entries (e.g. hg.LogUniform(..., shape=("
            f"{objective.num_steps},))), or clamp the index yourself (jnp.minimum(step, n - 1)) if that is "
            "what you mean")
    try:
        _checked[objective] = shapes
    except TypeError:
        pass


def _probe(objective: Any, hparams: HParams) -> str | None:
    """checkify's message for the first out-of-bounds index of `num_steps` optimiser updates, or None."""
    loop = objective.loop()
    shapes = jax.eval_shape(loop.init, hparams, jax.random.key(0)).params

    def run(h):  # everything inside one program: no eager operation compiles one of its own
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        opt = loop.optimizer(h)
        ones = [jnp.ones_like(leaf) for leaf in float_leaves(params)]

        def step(carry, _):  # the training loop's step: its dtypes, integer leaves held constant
            return optimizer_step(opt, *carry, ones, jnp.zeros((), jnp.result_type(float))), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=objective.num_steps)[0][0]

    checked = jax.jit(checkify.checkify(run, errors=checkify.index_checks))
    error, _ = checked.lower(hparams).compile(_compile.QUICK_COMPILE)(hparams)  # runs once: compile fast
    message = error.get()
    return None if message is None else message.strip().split("\n")[0]
