"""Truncated reverse mode: back-propagate through the last `window` training steps only."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hypergrad._types import HParams, Key
from hypergrad._checks import check_checkpoint_every, is_int_at_least
from hypergrad.loop import Loop
from hypergrad.methods.base import Method, refusing_derivatives
from hypergrad.methods.reverse import Reverse

__all__ = ["Truncated"]


@dataclasses.dataclass(frozen=True)
class Truncated(Method):
    """Reverse mode through the last `window` training steps only (Shaban et al. 2019, "Truncated
    back-propagation for bilevel optimization").

    Training runs all T steps. The state (parameters and optimiser state) entering step T - window
    is treated as a constant (`jax.lax.stop_gradient`), so the estimate is the exact gradient of

        h -> val_loss(train steps T-window, ..., T-1 with h, from the state reached with h held fixed)

    i.e. the partial derivative with respect to the hyperparameters *as used in the last `window`
    steps*. The optimiser state's entries that still hold the value `init` computed from the
    hyperparameters (the learning rate `optax.inject_hyperparams` keeps there, which each step
    reads) are the hyperparameters as the window uses them: they depend on h again (their values
    unchanged), so such a hyperparameter gets the same estimate as when the optimiser reads h
    directly. Entries of a per-step schedule before the window get exactly zero, and so, when
    window < T, does a hyperparameter whose whole effect enters before the window: one only `init`
    reads (an initialisation scale), or one the optimiser reads only through a state entry that
    training changes every step (`hg.online.sgd_hd`'s initial rate): `hg.tune` with this method never moves
    it (`hg.Reverse` or a window of T does). With window >= T
    it is `Reverse` exactly: the program of `Reverse(checkpoint_every, store="residuals")`, plain
    autodiff of the whole loop as the window is differentiated below T (Reverse's default store
    gives the same gradient, but would make the cost jump at window = T).

    Cost: one training run (T steps forward) plus a backward pass through `window` steps (one
    Hessian-vector product each, about 2 steps' work), so about T + 2 * window training steps; with
    checkpointing, `window` more forward steps.
    Memory: the residuals of `window` steps (not T); with `checkpoint_every=k`, about window/k + k.
    A step's residuals are every intermediate value of its forward and gradient computation, several
    times the training state that `Reverse()` stores per step (it recomputes the rest), so for a
    horizon of only a few windows `Reverse()` can take less memory; `checkpoint_every` shrinks
    Truncated's (`benchmarks/methods_vs_horizon.py` measures both against T).
    Bias: truncation bias (Shaban et al. 2019, "Truncated back-propagation for bilevel
    optimization"): the objective is the full horizon's, but the influence of the hyperparameters on
    the first T - window steps is ignored, so, e.g., the learning rate it drives to is typically
    smaller than the best one for the full horizon (the direction of Wu et al. 2018's short-horizon
    bias, which comes from optimising a short horizon's objective instead). Unbiased (exact) only
    when window >= T.

    Derivatives of the result: with window < T, none. The head is held constant, so autodiff of the
    value and grads would miss its dependence on the hyperparameters (silently wrong); jax.grad,
    jacfwd, jacrev or jvp through `hg.hypergradient` with this method raise a ValueError at trace
    time instead. Use `hg.Reverse()` or `hg.Forward()` for second-order hyper-derivatives. With
    window >= T it is `Reverse`, plain autodiff, and differentiates exactly. jit and vmap of the call
    are unaffected.

    Compute accounting (`hypergrad.accounting`, which counts this program): a training run plus the
    window's share of reverse mode's backward pass, about run + (window / T) * (R - run) with R the
    count of `Reverse(store="residuals")` (the window is differentiated as plain autodiff of the
    loop). The count is affine in the window below T and R itself from window = T on, on the
    formula's line where the steps' work dominates (the iris MLP). On a tiny model the loop over
    the steps before the window adds a fixed few percent of a run: on a 5-feature ridge at T = 8,
    Truncated(7) counts 1.82 runs where the formula gives 1.78, and Truncated(8) is R = 1.89.

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
        check_checkpoint_every(self.checkpoint_every, "Truncated", steps="window")  # kept as given (identity)

    def differentiate(self, loop: Loop, hparams: HParams, key: Key):
        num_steps = loop.num_steps
        window = min(self.window, num_steps)
        if window == num_steps:
            # Nothing to truncate: plain autodiff of the whole loop, the window below with nothing
            # before it, which is Reverse's "residuals" store (Reverse's default, "steps" or "dots",
            # would give the same gradient at another cost and memory, a jump at window = T).
            return Reverse(self.checkpoint_every, store="residuals").differentiate(loop, hparams, key)
        head = num_steps - window
        # The head is held constant below: differentiating the result would miss its dependence on
        # the hyperparameters, so it is refused, not silently wrong (window >= T above stays exact).
        hparams = refusing_derivatives(hparams, self, f"the {head} training steps before the window "
                                       "are held constant (stop_gradient)")

        def loss(h):
            # The first T - window steps are run with the hyperparameters held constant, and the
            # state they reach is cut from the graph: reverse mode stores nothing for them, and the
            # gradient ignores their dependence on h (the truncation). Holding h fixed there as
            # well as stopping the state changes no value and keeps the head out of the JVP.
            fixed = jax.lax.stop_gradient(h)
            state = loop.run(loop.init(fixed, key), fixed, 0, head)
            state = jax.lax.stop_gradient(state)
            state = state._replace(opt_state=_reading_hparams_again(loop, state, h))
            # The window: steps T - window, ..., T - 1. Their minibatches are those of the full
            # run: batch t is a pure function of the data key and t (drawn by epochs), whatever
            # the steps before it.
            state = loop.run(state, h, head, window, checkpoint_every=self.checkpoint_every)
            return loop.readout(state, h)

        return jax.value_and_grad(loss, has_aux=True)(hparams)


def _reading_hparams_again(loop: Loop, state, hparams: HParams):
    """The optimiser state entering the window, its values unchanged, where every entry that still
    holds the value `opt.init` computes from the hyperparameters depends on them again: e.g. the
    learning rate `optax.inject_hyperparams` keeps in its state, which each step of the window reads
    from there. Without this the cut state hides such a hyperparameter from the window, and its
    hypergradient would be exactly zero. An entry training has changed since `init` stays cut."""
    fresh = loop.optimizer(hparams).init(state.params)
    if jax.tree.structure(fresh) != jax.tree.structure(state.opt_state):
        return state.opt_state

    def entry(cut, init):
        if not (jnp.issubdtype(jnp.result_type(cut), jnp.inexact) and jnp.shape(cut) == jnp.shape(init)):
            return cut
        init = jnp.asarray(init, jnp.result_type(cut))
        # the value stays `cut` exactly; its derivative is init's where the two are equal
        return jnp.where(cut == jax.lax.stop_gradient(init), cut + (init - jax.lax.stop_gradient(init)), cut)

    return jax.tree.map(entry, state.opt_state, fresh)
