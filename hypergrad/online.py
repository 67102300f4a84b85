"""Online hypergradient descent: an optax optimiser that adapts its own learning rate.

Baydin, Cornish, Martinez Rubio, Schmidt & Wood (2018), "Online learning rate adaptation with
hypergradient descent" (ICLR). During a single training run the learning rate alpha takes a
gradient step of its own at every step, using the derivative of the current minibatch loss with
respect to the learning rate of the previous update.

SGD-HD. With u_{t-1} = -alpha_{t-1} g_{t-1} the previous update, theta_{t-1} = theta_{t-2} +
u_{t-1}, so (keeping only the dependence through the last update, the paper's approximation)

    d f(theta_{t-1}) / d alpha = g_t . d u_{t-1} / d alpha = -g_t . g_{t-1},
    alpha_t = alpha_{t-1} - beta * d f / d alpha = alpha_{t-1} + beta * g_t . g_{t-1},
    theta_t = theta_{t-1} - alpha_t g_t,

with g_0 = 0, so the first step uses alpha_0. Successive gradients that agree (the step is too
short) raise alpha; gradients that alternate (the step overshoots) lower it.

SGDN-HD (momentum mu, Nesterov as in the paper):

    v_t = mu v_{t-1} + g_t,       d_t = g_t + mu v_t,       u_t = -alpha_t d_t,
    alpha_t = alpha_{t-1} + beta * g_t . d_{t-1}            (since d u_{t-1} / d alpha = -d_{t-1}),

and with `nesterov=False` the heavy-ball direction d_t = v_t. With mu = 0 both reduce to SGD-HD.
These are also the updates of the authors' reference implementation (whose velocity, like ours,
is the sum of gradients, not of steps).

Everything is a pure `init`/`update` pair: the initial learning rate, the hyper learning rate and
the momentum may be traced hyperparameters, so `sgd_hd` is an inner optimiser like any other:

    objective = hg.Objective(problem, lambda h: sgd_hd(h["lr0"], h["beta"]), num_steps=100)

can be searched by `hg.random_search` and differentiated exactly by `hg.Reverse` and `hg.Forward`
(the adapted learning rate is a smooth function of lr0 and beta), or approximately by the
estimators (`hg.Truncated`, `hg.ES`, `hg.PES`). `hg.Implicit` (it differentiates hyperparameters of the
training loss only, and these are the optimiser's) and `hg.Reversible` (optax.sgd's update only)
refuse it, saying why. The current learning rate is kept in the
state (`state.learning_rate`) so it can be inspected after training.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad._types import PyTree

__all__ = ["sgd_hd", "SGDHDState"]


class SGDHDState(NamedTuple):
    """State of `sgd_hd`.

    Attributes:
        count: number of updates taken.
        learning_rate: alpha_t, the learning rate of the latest update (alpha_0 before any).
        direction: d_{t-1}, the previous update divided by -alpha (zeros before any update); the
            hypergradient of the next step is -g_t . direction.
        velocity: v_{t-1}, the momentum buffer, or None for plain SGD-HD (momentum == 0).
    """

    count: jax.Array
    learning_rate: jax.Array
    direction: PyTree
    velocity: PyTree | None


def _check_concrete(name: str, value: Any, *, upper: float | None = None) -> None:
    """Range checks for concrete values: Python and NumPy numbers, NumPy arrays and concrete
    `jax.Array`s (every element). A traced value cannot be checked: it is the caller's (the
    space's) business."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"sgd_hd({name}={value!r}) must be a number, not a bool")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype == np.bool_:
            raise ValueError(f"sgd_hd({name}={value!r}) must be a number, not a bool")
        if not jnp.issubdtype(array.dtype, jnp.number) or np.iscomplexobj(array):  # jnp knows bfloat16
            raise ValueError(f"sgd_hd({name}={value!r}) must be a real number")
        ok = bool(np.all(array >= 0)) and (upper is None or bool(np.all(array < upper)))
    elif isinstance(value, numbers.Real):
        ok = value >= 0 and (upper is None or value < upper)
    else:
        return  # anything else is left to jnp.asarray, which names what it cannot convert
    if not ok:
        bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
        raise ValueError(f"sgd_hd({name}={value!r}) must be {bound}")


def _check_scalar(name: str, value: Any) -> None:
    """`ValueError` unless an array (concrete or traced: its shape is known either way) or a list
    is one number: a shaped one would silently turn the scalar learning rate into a vector, or fail
    inside the traced training loop with an error that names nothing."""
    if isinstance(value, (jax.Array, jax.core.Tracer, np.ndarray, np.generic)):
        shape = tuple(value.shape)
    elif isinstance(value, (list, tuple)):
        shape = np.shape(value)
    else:
        return  # a number, or what jnp.asarray / the update refuses by itself
    if shape != ():
        raise ValueError(f"sgd_hd: {name} must be a scalar, got shape {shape}; give one number (in an hg.Space, "
                         "declare it without shape=)")


def _initial_rate(learning_rate: Any) -> jax.Array:
    """alpha_0 as a strongly typed floating scalar, so the loop carry keeps one dtype whatever the
    inputs' weak types."""
    alpha = jnp.asarray(learning_rate)
    if alpha.ndim != 0:
        raise ValueError(f"sgd_hd: learning_rate must be a scalar, got shape {alpha.shape}")
    if not jnp.issubdtype(alpha.dtype, jnp.floating):
        alpha = alpha.astype(jnp.result_type(float))
    return jnp.asarray(alpha, dtype=alpha.dtype)


def _direction(grads: PyTree, velocity: PyTree, momentum: Any, nesterov: bool) -> tuple[PyTree, PyTree]:
    """(direction, new velocity) of a momentum step: v' = mu v + g; Nesterov's g + mu v', or v'."""
    velocity = jax.tree.map(lambda v, g: momentum * v + g, velocity, grads)
    direction = jax.tree.map(lambda g, v: g + momentum * v, grads, velocity) if nesterov else velocity
    return direction, jax.tree.map(lambda v, g: v.astype(g.dtype), velocity, grads)


def sgd_hd(
    learning_rate: Any,
    hyper_lr: Any,
    momentum: Any = 0.0,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformation:
    """SGD whose learning rate is adapted online by hypergradient descent (SGD-HD / SGDN-HD).

    Cost per step: one inner product over the parameters (the gradient with the previous direction,
    2 FLOPs per parameter) more than SGD; the step's scaling is SGD's own.
    Memory: one parameter-sized buffer (the previous direction), two with momentum.

    Args:
        learning_rate: initial learning rate alpha_0 (a scalar; may be a traced hyperparameter).
        hyper_lr: beta, the learning rate of the learning rate (scalar, may be traced). Its scale
            is that of 1 / |g|^2: beta = 0 gives plain SGD.
        momentum: mu, a scalar; 0 (the default, a Python number) gives SGD-HD and keeps no velocity buffer;
            any other value, or a traced one, gives SGDN-HD.
        nesterov: with momentum, the paper's Nesterov direction g + mu v (default) or the
            heavy-ball direction v.

    Returns:
        an `optax.GradientTransformation` whose state is an `SGDHDState`.

    Raises:
        ValueError: learning_rate, hyper_lr or momentum is not a scalar (traced or not: its shape
            is known); a concrete learning_rate or hyper_lr below 0 or a momentum outside [0, 1)
            (Python or NumPy numbers, NumPy arrays and concrete `jax.Array`s alike; NaN is out of
            range). A traced value's range cannot be checked here: declare it in the `hg.Space`.
    """
    for name, value in (("learning_rate", learning_rate), ("hyper_lr", hyper_lr), ("momentum", momentum)):
        _check_scalar(name, value)
    _check_concrete("learning_rate", learning_rate)
    _check_concrete("hyper_lr", hyper_lr)
    _check_concrete("momentum", momentum, upper=1.0)
    if not isinstance(nesterov, bool):
        raise ValueError(f"sgd_hd(nesterov={nesterov!r}) must be True or False")
    use_momentum = not (isinstance(momentum, numbers.Real) and not isinstance(momentum, bool) and momentum == 0)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return SGDHDState(count=jnp.zeros((), jnp.int32), learning_rate=_initial_rate(learning_rate), direction=zeros,
                          velocity=jax.tree.map(jnp.zeros_like, params) if use_momentum else None)

    def update(updates, state, params=None):
        del params
        grads = updates
        # Hypergradient step: d f(theta_{t-1}) / d alpha = -g_t . d_{t-1}.
        hypergrad = -optax.tree_utils.tree_vdot(grads, state.direction)
        alpha = (state.learning_rate - hyper_lr * hypergrad).astype(state.learning_rate.dtype)
        direction, velocity = _direction(grads, state.velocity, momentum, nesterov) if use_momentum else (grads, None)
        direction = jax.tree.map(lambda d, g: d.astype(g.dtype), direction, grads)
        new_updates = jax.tree.map(lambda d: (-alpha * d).astype(d.dtype), direction)
        return new_updates, SGDHDState(count=state.count + 1, learning_rate=alpha, direction=direction,
                                       velocity=velocity)

    return optax.GradientTransformation(init, update)
