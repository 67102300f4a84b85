"""Implicit-function-theorem hypergradients at the end of training.

Training is treated as a black box that returns (approximately) a stationary point of the training
loss; its derivative with respect to the hyperparameters is then obtained from the stationarity
condition alone, by the implicit function theorem, without differentiating through the loop
(Lorraine, Vicol & Duvenaud 2020, "Optimizing millions of hyperparameters by implicit
differentiation"; the `custom_root` idea of JAXopt, Blondel et al. 2021, "Efficient and modular
implicit differentiation").

The mathematics, with L(w, h) the training loss on the full training set and V(w) the validation
loss:

    F(w, h) := d L / d w (w, h) = 0                  # w*(h) is a stationary point of L(., h)
    dF/dw dw*/dh + dF/dh = 0                         # differentiate the identity F(w*(h), h) = 0 in h
    dw*/dh = -[d2L/dw2]^{-1} d2L/dwdh                # solve for dw*/dh (H := d2L/dw2 invertible)
    dV/dh = dV/dw dw*/dh                             # chain rule (V has no direct dependence on h)
          = -(dV/dw) H^{-1} d2L/dwdh
          = -v^T d2L/dwdh,   where H v = dV/dw      # H is symmetric, so v^T = (dV/dw) H^{-1}

so one linear solve with the Hessian (matrix-free: Hessian-vector products only) and one
vector-Jacobian product of dL/dw with respect to h give the whole hypergradient, whatever the
number of hyperparameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from hypergrad._types import HParams, Key, PyTree
from hypergrad._checks import is_int_at_least
from hypergrad._compile import missing_key_message
from hypergrad.loop import Loop, float_leaves, optimizer_update, overridden, with_float_leaves
from hypergrad.methods.base import Method, refusing_derivatives

__all__ = ["Implicit", "hparams_read_by"]

_TRAINING = ("update", "step", "run", "train")
"""The `Loop` methods that train. Implicit runs them as the loop has them but assumes they end at a
stationary point of `Loop.train_loss`, as the plain loop's gradient steps approach one: a loop that
overrides any of them is refused (`_check_plain_training`). Its other pieces (init, draw,
train_loss, optimizer, readout, val_loss) it calls as the loop has them."""

_OPTIMIZER_READS_PARAMS = (
    "Implicit cannot differentiate this objective: its optimizer's update reads the parameters themselves, not "
    "only their gradient (a decoupled weight decay such as optax.adamw or optax.add_decayed_weights, a projection "
    "such as optax.keep_params_nonnegative, a trust ratio as in optax.lars or optax.lamb), so training stops where "
    "the update is 0, not where the training loss's gradient is 0, and Implicit, which assumes that gradient is "
    "0 where training stops, would return the hypergradient of a point training never reaches. Write the decay or penalty in the "
    "training loss instead (Problem(train_loss=...) adding 0.5 * weight_decay * ||w||^2, or the built-in "
    "problem's weight_decay hyperparameter, with optax.adam or optax.sgd in place of optax.adamw), or use "
    "hg.Reverse() or hg.Forward(), which differentiate the optimizer as it runs")
"""Implicit's refusal of an optimiser whose update reads the parameters (`Implicit.check_loop`)."""

_OPTIMIZER_CENTRES_GRADIENT = (
    "Implicit cannot differentiate this objective: its optimizer's update subtracts from the gradient a mean "
    "over some of its axes (optax.centralize, gradient centralisation), so the update is 0, and training stops, "
    "where the gradient is constant along those axes, not where it is 0, and Implicit, which assumes that "
    "gradient is 0 where training stops, would return the hypergradient of a point training never reaches "
    "(it can differ in sign from the true one). Remove optax.centralize from the optimizer to use Implicit, "
    "or use hg.Reverse() or hg.Forward(), which differentiate the optimizer as it runs")
"""Implicit's refusal of an optimiser that centres the gradient (`Implicit.check_loop`)."""

_SOLVERS = ("cg", "neumann")
_SOLVER_FIELDS = {"cg": {"maxiter": 100, "tol": 1e-6}, "neumann": {"num_terms": 100, "alpha": 0.1}}
"""The fields each solver reads, with their defaults; the other solver's stay None."""

_NEUMANN_BLOWUP = 10.0
"""A Neumann series whose last term is longer than this many times its first is taken to diverge
(`_neumann_series`): its result is NaN. Above 1 (a converging series' terms never grow) by a margin
that lets a few terms of a slow divergence through, and far below the growth of a blow-up (the
alpha = 1.5 at lambda_max = 1.9 grows 1.85-fold a term: about 1e26 after 100 terms)."""


# -- which hyperparameters does a function read? ---------------------------------------------------
# Primitives whose sub-jaxpr maps the equation's inputs to its outputs one to one, run once: their
# dependencies can be followed inside. A conditional (cond: the branch index, then the operands every
# branch takes) is followed into each branch, and an output depends on the index and on what any
# branch makes it depend on. Loops (scan, while) feed outputs back into inputs, so for those (and
# anything unknown) every output is taken to depend on every input: an over-approximation, never a miss.
_CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                              "custom_vjp_call", "custom_vjp_call_jaxpr", "checkpoint", "remat"})


def _call_jaxpr(eqn) -> Jaxpr | None:
    if eqn.primitive.name not in _CALL_PRIMITIVES:
        return None
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if isinstance(sub, ClosedJaxpr):
            sub = sub.jaxpr
        if isinstance(sub, Jaxpr) and len(sub.invars) == len(eqn.invars) \
                and len(sub.outvars) == len(eqn.outvars):
            return sub
    return None


_Rule = Callable[[Any, list[int]], "list[int] | None"]
"""A special case of `_propagate` for some equations: given an equation and its inputs' masks, its
outputs' masks, or None for the general rule (each output depends on every input)."""


def _times_literal_zero(eqn, masks: list[int]) -> list[int] | None:
    """`_propagate`'s rule for a product with the constant 0 (`mul x 0.0`, optax's default
    weight_decay=0.0 in optax.novograd): its value is 0 whatever x is, so it depends on nothing."""
    if eqn.primitive.name == "mul" and any(isinstance(v, Literal) and np.all(np.asarray(v.val) == 0)
                                           for v in eqn.invars):
        return [0] * len(eqn.outvars)
    return None


def _propagate(jaxpr: Jaxpr, in_masks: list[int], rule: _Rule = _times_literal_zero) -> list[int]:
    """Forward data-dependence analysis: bitmask of the tagged inputs each output depends on.
    `rule` overrides the general rule for the equations it returns masks for (default: a product
    with the constant 0 depends on nothing)."""
    env: dict[Any, int] = dict(zip(jaxpr.invars, in_masks))

    def read(var) -> int:
        return 0 if isinstance(var, Literal) else env.get(var, 0)  # constants depend on nothing

    for eqn in jaxpr.eqns:
        masks = [read(v) for v in eqn.invars]
        sub = _call_jaxpr(eqn)
        if sub is not None:
            outs = _propagate(sub, masks, rule)
        elif eqn.primitive.name == "cond":
            outs = _propagate_cond(eqn, masks, rule)
        else:
            outs = rule(eqn, masks)
            if outs is None:
                outs = [functools.reduce(operator.or_, masks, 0)] * len(eqn.outvars)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _propagate_cond(eqn, masks: list[int], rule: _Rule) -> list[int]:
    """`_propagate` through a `cond`: each output depends on the branch index and on the operands
    that some branch maps to it (a branch of an unexpected form: on every input)."""
    index, operands = masks[0], masks[1:]
    outs = [index] * len(eqn.outvars)
    for branch in eqn.params.get("branches", ()):
        sub = branch.jaxpr if isinstance(branch, ClosedJaxpr) else branch
        if not isinstance(sub, Jaxpr) or len(sub.invars) != len(operands) or len(sub.outvars) != len(outs):
            return [functools.reduce(operator.or_, masks, 0)] * len(eqn.outvars)
        outs = [a | b for a, b in zip(outs, _propagate(sub, operands, rule))]
    return outs


def _abstract(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _optimizer_hparam_refusal(names: list[str], in_loss: set[str], reads_params: bool, centres: bool) -> str:
    """Implicit's refusal of the hyperparameters `names` (every one the optimiser reads, in the
    caller's order, so that its advice is whole the first time), those in `in_loss` read by the
    training loss too. Where the optimiser would be refused anyway once they were fixed in it (its
    update reads the parameters, `reads_params`, or centres the gradient, `centres`), fixing them
    there is not offered alone: the advice names what Implicit needs of the optimiser as well."""
    listed, also_loss = _listed(names), [n for n in names if n in in_loss]
    also = ""
    if also_loss:
        enters = ("it enters" if len(names) == 1 else
                  f"{_listed(also_loss)} {'enters' if len(also_loss) == 1 else 'enter'}")
        also = (f" ({enters} the training loss too, but the optimiser moves the fixed point "
                "of training away from the loss's stationary point)")
    them = "it" if len(names) == 1 else "them"
    if reads_params:
        fix = ("; for Implicit, the optimizer must not read the parameters either, and its update does (a "
               "decoupled weight decay such as optax.adamw or optax.add_decayed_weights, a projection, a trust "
               "ratio): write the decay or penalty in the training loss instead (Problem(train_loss=...) adding "
               "0.5 * weight_decay * ||w||^2, or the built-in problem's weight_decay hyperparameter), with "
               f"optax.adam or optax.sgd in place of optax.adamw and {listed} left out of the optimizer")
    else:  # hparams, or a search's space: the value held inside the optimizer or by with_fixed serves both
        values = ", ".join(f"{n!r}: value" for n in names)
        fix = (f", or leave {them} out of hparams (of the space, in a search) and hold {them} fixed: inside the "
               f"optimizer function, or with objective.with_fixed({{{values}}}), or in hg.tune with {listed} "
               "among hold= (each tuner keeps its starting value)")
        if centres:
            fix += ", and remove optax.centralize from the optimizer, which Implicit cannot differentiate either"
    verb = "is" if len(names) == 1 else "are"
    return (f"Implicit differentiates hyperparameters of the training loss only; {listed} {verb} read by the "
            f"optimizer{also}; use hg.Reverse() or hg.Forward() for {them}{fix}")


def _listed(names: list[str]) -> str:
    """Names quoted in words: "'lr'", "'lr' and 'momentum'", "'a', 'b' and 'c'"."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _init_only_refusal(name: str, loop: Loop, hparams: HParams, params: Any) -> str:
    """Implicit's refusal of hyperparameter `name`, read by the initialisation and not by the training
    loss: what Implicit would miss (its effect through the starting point, which the implicit
    function theorem at the trained optimum does not see) and what it would return instead, the
    validation loss's direct term when `val_loss` reads `name` (one more static trace, on this error
    path only), else 0."""
    direct = name in hparams_read_by(_on_data(loop, lambda h, p, lp: lp.val_loss(p, h)), hparams, params, loop.data)
    returned = ("only the validation loss's direct term (its derivative at the trained parameters held "
                "fixed)" if direct else "0")
    return (f"Implicit differentiates hyperparameters of the training loss only; {name!r} is read by the "
            "initialisation (Problem(init=...)) and not by the training loss: it moves where training ends, "
            "not the stationarity condition, and the implicit function theorem at the trained optimum sees "
            f"only that condition, so Implicit would miss {name!r}'s effect through the initialisation and "
            f"return {returned} for it; use hg.Reverse() or hg.Forward() for it, or leave it out of hparams "
            "(fix it inside init)")


def hparams_read_by(fn: Callable[..., Any], hparams: HParams, *args: Any) -> set[str]:
    """Names of the hyperparameters on which some output of `fn(hparams, *args)` depends.

    Static: `fn` is traced to a jaxpr on abstract values (shapes and dtypes only; nothing runs or
    compiles) and data dependence is followed from each hyperparameter to the outputs. The answer
    may over-approximate through loops and conditionals inside `fn`, never under-approximate; a
    product with the constant 0 (`h * 0.0`) reads nothing, whatever its factor.

    Args:
        fn: a function of `(hparams, *args)` returning any pytree.
        hparams: dict of hyperparameters (values or `jax.ShapeDtypeStruct`s).
        *args: the other arguments (values or `jax.ShapeDtypeStruct`s).
    """
    return _names_read(jax.make_jaxpr(fn)(_abstract(dict(hparams)), *_abstract(args)), hparams)


def _on_data(loop: Loop, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(h, *args, loop)` as a function of `(h, *args, data)`: the loop with `data` for its own, for
    `hparams_read_by(..., loop.data)`. The loop is closed over, never an argument: `jax.make_jaxpr` keys JAX's
    own caches (strong, up to 4096 entries, out of `hg.clear_caches()`'s reach) on its arguments' tree
    structure, whose static fields would be the problem (with its data) and the optimiser function; a
    closure dies with the call. Traced as the loop was: its data leaves are the same inputs, in order."""
    def on_data(h, *rest):
        return fn(h, *rest[:-1], dataclasses.replace(loop, data=rest[-1]))

    return on_data


def _names_read(closed: ClosedJaxpr, hparams: HParams) -> set[str]:
    """`hparams_read_by` on a traced `fn(hparams, ...)`: the names on which some output depends."""
    names = list(hparams)
    # make_jaxpr flattens its arguments in order, dicts by sorted key; tag each hyperparameter's
    # leaves with its own bit and leave the other arguments' leaves untagged.
    flat_h, _ = jax.tree_util.tree_flatten_with_path(dict(hparams))
    bits = {name: 1 << i for i, name in enumerate(names)}
    masks = [bits[path[0].key] for path, _ in flat_h]
    masks += [0] * (len(closed.jaxpr.invars) - len(masks))
    seen = functools.reduce(operator.or_, _propagate(closed.jaxpr, masks), 0)
    return {name for name in names if seen & bits[name]}


class _FirstStep(NamedTuple):
    """One trace of the optimiser's first step, `(h, p, g) -> (opt.init(p), opt.update(g, ...))`,
    on abstract values, and how its inputs and outputs split: `hparams`, `params` and gradient
    leaves in; the initial state's leaves, then the update's (updates and new state), out."""
    closed: ClosedJaxpr
    hparams: int
    trained: tuple[bool, ...]  # per parameter leaf: floating point (trained), or held constant
    state: int

    def masks(self, params: int = 0, gradient: int = 0) -> list[int]:
        """Input masks: each trained parameter leaf tagged `params`, its gradient leaf `gradient`
        (a held leaf and its gradient, zeros as training gives it, untagged)."""
        rest = len(self.closed.jaxpr.invars) - self.hparams - 2 * len(self.trained)
        return ([0] * self.hparams + [params if t else 0 for t in self.trained]
                + [gradient if t else 0 for t in self.trained] + [0] * rest)

    def trained_outputs(self, masks: list[int]) -> list[int]:
        """The masks of the update's outputs that training keeps: the trained leaves' updates and
        the new state (a held leaf's update is dropped, `hypergrad.loop.optimizer_step`)."""
        updates = masks[self.state:self.state + len(self.trained)]
        return [m for m, t in zip(updates, self.trained) if t] + masks[self.state + len(self.trained):]


def _first_step(loop: Loop, hparams: HParams, params: PyTree) -> _FirstStep:
    """Traces the optimiser's first step once, for the three analyses `Implicit.check_loop` runs on
    it (which hyperparameters it reads, whether it reads the parameters' values, whether it centres
    the gradient). Static: abstract values, nothing runs or compiles."""
    def first_step(h, p, g):
        opt = loop.optimizer(h)
        state = opt.init(p)
        return state, optimizer_update(opt, g, state, p, jnp.zeros((), jnp.result_type(float)))

    # the gradient as training hands it over: zeros in the trained leaves' dtype for a held leaf
    floats = float_leaves(params)
    zero = jnp.result_type(*floats) if floats else jnp.result_type(float)
    gradient = jax.tree.map(lambda x: x if _is_trained(x) else jax.ShapeDtypeStruct(jnp.shape(x), zero),
                            _abstract(params))
    closed, shapes = jax.make_jaxpr(first_step, return_shape=True)(
        _abstract(dict(hparams)), _abstract(params), gradient)
    return _FirstStep(closed, len(jax.tree.leaves(dict(hparams))),
                      tuple(_is_trained(x) for x in jax.tree.leaves(params)), len(jax.tree.leaves(shapes[0])))


def _is_trained(leaf: Any) -> bool:
    """Whether training changes `leaf`: a floating-point one (integer and boolean leaves are held)."""
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def _train_grad(loop: Loop, params: PyTree, floats: list, hparams: HParams) -> list:
    """dL/dw: the full-batch training loss's gradient in the floating-point leaves `floats` of
    `params` (`float_leaves` order), the other leaves held at their values, as training holds them."""
    return jax.grad(lambda w: loop.train_loss(with_float_leaves(params, w), hparams, None))(floats)


def _optimizer_reads_params(step: _FirstStep) -> bool:
    """Whether the optimiser's first step, its state from `init(params)` included, depends on the
    values of the parameters and not only on their gradient (a decoupled weight decay, a projection,
    a trust ratio): then training can stop where the gradient of the training loss is not 0.

    Static, as `hparams_read_by` (abstract values: nothing runs or compiles; an over-approximation
    through loops inside the optimiser, never a miss). A transformation that reads only the
    parameters' structure (`optax.masked`, `optax.multi_transform` labels) does not count.
    """
    return any(step.trained_outputs(_propagate(step.closed.jaxpr, step.masks(params=1))))


_GRADIENT, _REDUCED = 1, 2
"""`_update_subtracts_a_partial_mean`'s bits: a value depends on the gradient; it went through a
reduction of the gradient over some of its axes (not all: a global norm or a scalar is not one)."""

_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"})


def _partial_reduction_rule(found: list) -> _Rule:
    """`_propagate`'s rule for `_update_subtracts_a_partial_mean`: marks a reduction of the gradient
    over some of its axes (of more than one element) as `_REDUCED`, and records in `found` a sum or
    difference of the gradient itself with such a reduction (g - mean(g, axes), optax.centralize)."""

    def rule(eqn, masks: list[int]) -> list[int] | None:
        name = eqn.primitive.name
        if name in _REDUCTIONS and masks and masks[0] & _GRADIENT:
            shape = eqn.invars[0].aval.shape
            axes = tuple(eqn.params.get("axes", ()))
            if 0 < len(axes) < len(shape) and math.prod(shape[a] for a in axes) > 1:
                return [masks[0] | _REDUCED] * len(eqn.outvars)
        if name in ("add", "sub", "add_any") and any(m & _REDUCED for m in masks) \
                and any(m & (_GRADIENT | _REDUCED) == _GRADIENT for m in masks):
            found.append(eqn)
        return _times_literal_zero(eqn, masks)

    return rule


def _update_subtracts_a_partial_mean(step: _FirstStep) -> bool:
    """Whether the optimiser's first update adds to (a function of) the gradient a reduction of the
    gradient over some of its axes, as `optax.centralize` subtracts each row's mean: such an update
    is 0 where the gradient is constant along those axes, not only where it is 0, so training stops
    where the training loss's gradient is not 0.

    Static, as `hparams_read_by` (abstract values: nothing runs or compiles). It follows calls and
    each branch of a conditional, not the inside of a loop in the optimiser; a reduction of the
    whole of a gradient (a global norm, clipping) or one combined by product or quotient (a
    factored second moment, optax.adafactor) does not count.
    """
    found: list = []
    _propagate(step.closed.jaxpr, step.masks(gradient=_GRADIENT), _partial_reduction_rule(found))
    return bool(found)


# -- linear solvers on pytrees, matrix-free ----------------------------------------------------------
def _widened(tree: PyTree) -> PyTree:
    """`tree` with every float leaf narrower than float32 (bfloat16, float16) cast to float32, the
    least precision the solve runs in: in bfloat16 (8 significant bits) CG's inner products lose
    conjugacy long before tol = 1e-6 and its iterates grow without bound."""
    def widen(x):
        dtype = jnp.result_type(x)
        narrow = jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32
        return x.astype(jnp.float32) if narrow else x

    return jax.tree.map(widen, tree)


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
    return optax.tree_utils.tree_vdot(a, b)


def _axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    # alpha in each leaf's own dtype: CG's alpha and beta come from inner products over every leaf, so
    # they have the widest leaf's dtype (float64 beside a float32 leaf), and alpha * xi would promote a
    # narrower leaf, changing the dtype of the solver's iterates from one iteration to the next. A
    # leaf of alpha's own dtype (all leaves alike) is computed exactly as before.
    return jax.tree.map(lambda xi, yi: jnp.asarray(alpha, jnp.result_type(xi)) * xi + yi, x, y)


def _conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree, *, maxiter: int, tol: float,
                        unroll: bool) -> PyTree:
    """Solves A x = b for symmetric positive definite A by conjugate gradient (Hestenes & Stiefel 1952).

    Stops when ||b - A x|| <= tol ||b|| or after `maxiter` products with A. With `unroll`, runs
    exactly `maxiter` iterations as straight-line code (updates masked once converged). Compute
    accounting reads `k < maxiter` from the loop's condition and charges `maxiter` products.
    """
    x = jax.tree.map(jnp.zeros_like, b)        # x_0 = 0
    r = b                                      # r_0 = b - A x_0 = b: the residual
    p = b                                      # p_0 = r_0: the first direction is steepest descent
    rs = _vdot(r, r)                           # ||r_0||^2
    threshold = (tol ** 2) * _vdot(b, b)       # stop at ||r_k|| <= tol ||b||

    def iteration(state):
        x, r, p, rs, k = state
        active = rs > threshold                # a converged (or b = 0) solve is left unchanged
        ap = matvec(p)                         # A p_k: the one Hessian-vector product per iteration
        pap = _vdot(p, ap)                     # p_k' A p_k > 0 when A is positive definite
        # alpha_k = r_k' r_k / p_k' A p_k minimises the A-norm of the error along p_k
        alpha = jnp.where(active, rs / jnp.where(active, pap, 1.0), 0.0)
        x = _axpy(alpha, p, x)                 # x_{k+1} = x_k + alpha_k p_k
        r = _axpy(-alpha, ap, r)               # r_{k+1} = r_k - alpha_k A p_k  (= b - A x_{k+1})
        rs_next = _vdot(r, r)
        # beta_k = r_{k+1}' r_{k+1} / r_k' r_k makes p_{k+1} A-conjugate to every earlier direction
        beta = jnp.where(active, rs_next / jnp.where(active, rs, 1.0), 0.0)
        p = _axpy(beta, p, r)                  # p_{k+1} = r_{k+1} + beta_k p_k
        return x, r, p, jnp.where(active, rs_next, rs), k + 1

    state = (x, r, p, rs, jnp.asarray(0))
    if unroll:
        for _ in range(maxiter):
            state = iteration(state)
    else:
        state = jax.lax.while_loop(lambda s: (s[4] < maxiter) & (s[3] > threshold), iteration, state)
    return state[0]


def _neumann_series(matvec: Callable[[PyTree], PyTree], b: PyTree, *, num_terms: int, alpha: float,
                    unroll: bool) -> PyTree:
    """x = alpha * sum_{j=0}^{num_terms} (I - alpha A)^j b, the truncated Neumann series of A^{-1} b.

    A^{-1} = alpha (I - (I - alpha A))^{-1} = alpha sum_{j>=0} (I - alpha A)^j, which converges when
    the spectral radius of I - alpha A is below 1, i.e. 0 < alpha * eigenvalue < 2 for every
    eigenvalue of A (A positive definite, alpha < 2 / lambda_max). Truncated after `num_terms`
    products, the error is (I - alpha A)^{num_terms + 1} A^{-1} b (Lorraine et al. 2020, Alg. 3).

    Divergence: when the series converges, I - alpha A (symmetric) has no eigenvalue outside
    (-1, 1), so the terms never grow: ||(I - alpha A)^K b|| <= ||b||. A last term longer than the
    first means an eigenvalue outside (alpha above 2 / lambda_max, or negative curvature) on which
    b has weight; the residual b - A x is the next term, so x then solves A x = b worse than 0
    does. A few terms of a slowly diverging series are still a usable short-horizon estimate (K
    steps of unrolled differentiation from the end point, as Lorraine et al. truncate on purpose
    for a nonconvex network), but a blow-up is not: once the last term is over `_NEUMANN_BLOWUP`
    times the first, the sum grows geometrically towards a huge, finite, meaningless number, and
    x is NaN (every entry) so that callers see a non-finite result. One comparison of two norms.
    """

    def term(carry, _):
        power, total = carry                   # power = (I - alpha A)^j b, total = sum_{i<=j} of them
        power = _axpy(-alpha, matvec(power), power)     # (I - alpha A)^{j+1} b: one product with A
        return (power, jax.tree.map(jnp.add, total, power)), None

    (last, total), _ = jax.lax.scan(term, (b, b), None, length=num_terms, unroll=True if unroll else 1)
    diverging = _vdot(last, last) > _NEUMANN_BLOWUP ** 2 * _vdot(b, b)
    return jax.tree.map(lambda t: jnp.where(diverging, jnp.nan, alpha * t), total)


# -- the method --------------------------------------------------------------------------------------
def _check_int(value: Any, field: str, minimum: int, fix: str) -> None:
    if not is_int_at_least(value, minimum):
        raise ValueError(f"Implicit({field}={value!r}) must be an int >= {minimum}; {fix}")


def _check_float(value: Any, field: str, positive: bool, fix: str) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"Implicit({field}={value!r}) must be a finite number {'> 0' if positive else '>= 0'}; "
                         f"{fix}")


@dataclasses.dataclass(frozen=True)
class Implicit(Method):
    """Implicit-function-theorem hypergradient at the trained parameters.

    Trains for `num_steps` without differentiating through the loop, then assumes the trained
    parameters w are a stationary point of the training loss L(w, h) and returns

        dV/dh = -v' d2L/dwdh,   where (H + damping I) v = dV/dw,  H = d2L/dw2 at w,

    with H v computed matrix-free (`jax.jvp` of `jax.grad`), never a dense Hessian (Lorraine,
    Vicol & Duvenaud 2020, "Optimizing millions of hyperparameters by implicit differentiation";
    JAXopt's `custom_root`, Blondel et al. 2021). L and H are on the FULL training set, not a
    minibatch, also for a minibatch problem, whose training (with a step size decaying to 0)
    approaches a stationary point of the average of its minibatch losses over the epochs. That is
    the full-batch loss only when a minibatch loss is an unbiased estimate of it: the mean over the
    batch's examples (plus terms that do not depend on the batch, such as a penalty). A minibatch
    loss that is a sum over the batch (`reduction="sum"`), or normalised per batch otherwise (a
    weighted loss divided by the batch's sum of weights), trains towards another point, and
    Implicit's result is then silently wrong (a sum: it weighs the penalty n / batch_size times
    too little); write the loss as a per-example mean, or use `hg.Reverse()` or `hg.Forward()`.

    Frozen parameters. An entry that training leaves bitwise where it started (a group frozen by a
    rate of exactly 0: `freeze` or a zero `lr` entry of `hg.problems.group_sgd`, `optax.set_to_zero`
    through `optax.multi_transform`) is held there whatever h is, so its dw/dh is 0 and training is
    stationary in the entries it moves (S) only: H, dV/dw and d2L/dwdh above are their S blocks
    (H_SS v_S = dV/dw_S). S is read from the trained and starting values on every call (a traced
    mask: nothing recompiles). An entry whose gradient is exactly 0 all along (a weight on an input
    that is always 0) stays put too and is held, as training holds it.

    Only hyperparameters of the training loss are differentiable: one that the optimiser reads
    (a learning rate or momentum, which change the path to the fixed point but not the
    stationarity condition; a decay inside `optax.adamw`, which moves the fixed point off it) is
    refused by `check`; so is one that the initialisation reads (`Problem(init=...)` with
    `model_reads_hparams`, e.g. an initialisation scale) and the
    training loss does not, which moves where training starts, and so where unconverged or
    nonconvex training ends, but not the stationarity condition. One that the initialisation and
    the training loss both read gets its loss term only: its effect through the starting point is
    part of the path that Implicit ignores (see Bias). A hyperparameter read only by the
    validation loss gets its exact gradient, the direct term; one read by nothing gets zero.

    Training must stop where the training loss's gradient is 0, so the optimiser's update must be 0
    exactly there: a function of the gradient alone (sgd, momentum, adam, clipping). An optimiser
    whose update (or the state it starts from) reads the parameters themselves is refused with a
    ValueError before anything compiles: a decoupled weight decay (`optax.adamw`,
    `optax.add_decayed_weights`, masked or not) stops where the gradient balances the decay, a
    projection (`optax.keep_params_nonnegative`) on the bound; write the decay as a term of the
    training loss instead (`Problem(train_loss=...)`), or use `hg.Reverse()`/`hg.Forward()`. So is
    one that adds to the gradient a reduction of it over some of its axes (`optax.centralize`,
    which subtracts each row's mean and so stops where the gradient is constant along a row, not
    0). The checks read the optimiser's program (nothing runs); a product with the constant 0 reads
    nothing (`optax.novograd`'s default weight_decay=0.0 passes). They may refuse one whose update
    reads the parameters but still stops at gradient 0 (a trust ratio as in `optax.lars`,
    `optax.lamb` with weight_decay=0), and they cannot see other changes of the gradient that move
    the fixed point without reading the parameters (one inside a loop in the optimiser, a dead
    zone): those are for the user to rule out. An update of constant size whatever the gradient's
    (`optax.lion`'s sign, `optax.novograd` at a constant rate) stops only when its rate decays to
    0: train with a decaying schedule, or the result is that of a point training circles.
    Likewise an objective whose loop is a `hypergrad.loop.Loop` subclass overriding a training step (`update`, `step`, `run`, `train`) is refused, since such a step
    need not end at a stationary point of the training loss (a projection does not). A change that
    keeps the fixed point at gradient 0 can be written through the pieces Implicit honours: the
    optimizer (clipping, a positive rescaling of the gradient), or the loop's `train_loss`, whose
    stationarity Implicit then solves; `hg.Reverse()` and `hg.Forward()` differentiate any loop.

    Cost: one training run, plus `maxiter` (CG, at most) or `num_terms` (Neumann) Hessian-vector
    products on the full training set (each about two gradient evaluations), plus one gradient of
    the validation loss and one mixed vector-Jacobian product, and one comparison per parameter
    (S) and one select per parameter per product. Memory (with `unroll=False`): a few parameter
    vectors (the starting parameters, S, the solver's iterates and one product's activations on
    the training set; the solve's vectors, right-hand side and linearisation point are float32 for
    bfloat16/float16 parameters, twice their bytes); independent of the number of steps and of the
    number of hyperparameters.
    With `unroll=True` it grows by about one parameter vector per CG iteration or Neumann term, O(maxiter) or
    O(num_terms) parameter vectors (see `unroll`).
    Bias: exact only at an exact stationary point (and with damping = 0, CG run to convergence or
    infinitely many Neumann terms); otherwise biased by the distance to stationarity, the truncation
    of the solve and the damping. It ignores the path of optimisation altogether: no dependence on
    the learning rate or the number of steps, so it cannot see short-horizon effects. CG needs a
    positive definite Hessian (for an indefinite or singular one, e.g. a nonconvex network, add
    damping, which biases the result towards a scaled gradient); Neumann needs in addition
    0 < alpha < 2 / lambda_max(H + damping): a series whose terms blow up (its last term over 10
    times its first: alpha too large, or strong negative curvature) returns NaN grads, which `tune`
    skips, instead of a huge finite number; a few terms of a slow divergence pass (a short-horizon
    estimate, biased). A group whose rate is small but not 0 (one tuned
    towards 0) moves a little, so it is in S and taken to be at a stationary point that it is far
    from: the result is biased there, and jumps to the frozen answer at a rate of exactly 0; use
    `hg.Reverse()` or `hg.Forward()` for such a set-up. Low precision: with bfloat16 or float16
    parameters the solve (its vectors, inner products and Hessian-vector products, and the mixed
    product) runs in float32 at the trained parameters cast up exactly, as CG in bfloat16 cannot
    reach tol and diverges; training itself still ends at parameters rounded to their dtype, which
    the result inherits. Parameters of mixed float dtypes (a float32 leaf beside float64 ones) keep
    each leaf's own dtype through the solve. Integer and boolean parameter leaves (counters, masks)
    are held constant, as training holds them: the stationarity solved is in the floating-point
    leaves. Complex parameters are refused with a ValueError before anything compiles (the
    Hessian-vector products are not symmetric there).

    Derivatives of the result: none. Training and the solve are held constant, so autodiff of the
    value and grads would see only the final loss terms' dependence on the hyperparameters (0 for
    the value's gradient); jax.grad, jacfwd, jacrev or jvp through `hg.hypergradient` with this
    method raise a ValueError at trace time instead. Use `hg.Reverse()` or `hg.Forward()` for
    second-order hyper-derivatives; the first derivative of the value is the returned grads (up to
    the bias above). jit and vmap of the call are unaffected.

    Args:
        solver: "cg" (conjugate gradient; fields `maxiter`, `tol`) or "neumann" (truncated Neumann
            series; fields `num_terms`, `alpha`). Setting a field of the other solver is refused
            (it would be silently ignored); a field left at None takes its solver's default, and
            the other solver's fields stay None.
        maxiter: CG's maximum number of iterations (Hessian-vector products); None: 100.
        tol: CG stops when ||(H + damping) v - dV/dw|| <= tol * ||dV/dw||; None: 1e-6.
        num_terms: Neumann's number of Hessian-vector products K; the series is
            alpha * sum_{j=0}^{K} (I - alpha (H + damping))^j dV/dw. None: 100.
        alpha: Neumann's step size; needs 0 < alpha < 2 / lambda_max(H + damping) (NaN grads
            when the series' terms blow up). None: 0.1.
        damping: lambda >= 0 added to the Hessian's diagonal (a bias, traded for conditioning).
        unroll: False runs CG as a loop that stops at `tol`; True runs exactly `maxiter` CG
            iterations (or the `num_terms` Neumann terms) as straight-line code, whose iterates
            XLA keeps side by side: memory O(maxiter) (or O(num_terms)) parameter vectors, against
            a few under False. Compute accounting charges CG its upper bound either way, `maxiter`
            products (it reads the bound from the loop's condition).
    """

    solver: str = "cg"
    maxiter: int | None = None
    tol: float | None = None
    num_terms: int | None = None
    alpha: float | None = None
    damping: float = 0.0
    unroll: bool = False

    def __post_init__(self):
        if self.solver not in _SOLVERS:
            raise ValueError(f"Implicit(solver={self.solver!r}) must be 'cg' (conjugate gradient) or "
                             "'neumann' (truncated Neumann series)")
        if self.maxiter is not None:
            _check_int(self.maxiter, "maxiter", 1, "it bounds CG's Hessian-vector products (try 100)")
        if self.tol is not None:
            _check_float(self.tol, "tol", False, "CG stops at a residual of tol * ||dV/dw|| (try 1e-6)")
        if self.num_terms is not None:
            _check_int(self.num_terms, "num_terms", 1, "it is the number of Neumann terms (try 100)")
        if self.alpha is not None:
            _check_float(self.alpha, "alpha", True,
                         "the Neumann series converges for 0 < alpha < 2 / largest Hessian eigenvalue (try 0.1)")
        # The other solver's fields must be left unset (None); this solver's get their defaults,
        # resolved here so that equal methods compare (and cache) equal.
        other = "neumann" if self.solver == "cg" else "cg"
        for field in _SOLVER_FIELDS[other]:
            if getattr(self, field) is not None:
                raise ValueError(
                    f"Implicit(solver={self.solver!r}) does not read {field}={getattr(self, field)!r}, a "
                    f"field of solver={other!r} ({', '.join(_SOLVER_FIELDS[other])}); leave it out, or use "
                    f"solver={other!r}. The {self.solver!r} solver's fields are "
                    f"{' and '.join(_SOLVER_FIELDS[self.solver])}")
        for field, default in _SOLVER_FIELDS[self.solver].items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, default)
        _check_float(self.damping, "damping", False, "it is added to the Hessian's diagonal (try 0.0 or 1e-3)")
        if not isinstance(self.unroll, (bool, np.bool_)):
            raise ValueError(f"Implicit(unroll={self.unroll!r}) must be True or False")

    # -- refusal -------------------------------------------------------------------------------
    def check_loop(self, loop: Loop, hparams: HParams) -> None:
        """Refuses, statically, hyperparameters that the optimiser reads (e.g. 'lr', 'momentum') and
        those that the initialisation reads but the training loss does not (e.g. an init scale),
        an optimiser whose update reads the parameters (`_optimizer_reads_params`: a decoupled
        weight decay, a projection) or centres the gradient (`_update_subtracts_a_partial_mean`:
        optax.centralize), and a loop whose training step is customised
        (`_check_plain_training`).

        Cost, per call: static traces (abstract values; nothing runs or compiles) of the
        initialisation (twice), the training loss's gradient and the optimiser's first step (once,
        shared by the three analyses of it), and on refusing an initialisation's hyperparameter one
        of the validation loss (to say what Implicit would return); `hg.hypergradient` runs it on
        every call with `Implicit`, and again when the program is traced."""
        _check_plain_training(loop)
        try:
            params = jax.eval_shape(loop.init, hparams, jax.random.key(0)).params
            _check_param_dtypes(params)
            # d L / d w (w, h): the stationarity condition, whose dependence on h Implicit sees.
            in_loss = hparams_read_by(_on_data(loop, lambda h, p, lp: _train_grad(lp, p, float_leaves(p), h)),
                                      hparams, params, loop.data)

            step = _first_step(loop, hparams, params)  # traced once, for three analyses
            in_optimizer = _names_read(step.closed, hparams)
            # The starting point: it moves where training ends (unless it converges to a unique
            # stationary point) but not the stationarity condition, so Implicit would miss that effect.
            in_init = hparams_read_by(_on_data(loop, lambda h, lp: lp.init(h, jax.random.key(0)).params),
                                      hparams, loop.data)
            reads_params = _optimizer_reads_params(step)
            centres = _update_subtracts_a_partial_mean(step)
        except KeyError as err:  # most often a hyperparameter nobody passed
            raise ValueError(missing_key_message(err)) from err
        read = [name for name in hparams if name in in_optimizer]  # all of them, in the caller's order
        if read:
            raise ValueError(_optimizer_hparam_refusal(read, in_loss, reads_params, centres))
        for name in hparams:  # in the caller's order: the first offender is named
            if name in in_init and name not in in_loss:
                raise ValueError(_init_only_refusal(name, loop, hparams, params))
        if reads_params:
            raise ValueError(_OPTIMIZER_READS_PARAMS)
        if centres:
            raise ValueError(_OPTIMIZER_CENTRES_GRADIENT)

    # -- the hypergradient ---------------------------------------------------------------------
    def differentiate(self, loop: Loop, hparams: HParams, key: Key):
        self.check_loop(loop, hparams)  # shapes only: also safe while tracing
        # Training and the solve are held constant below: differentiating the result would miss
        # their dependence on the hyperparameters, so it is refused, not silently 0.
        hparams = refusing_derivatives(hparams, self, "training and the linear solve are held constant "
                                       "(stop_gradient), so the value and grads depend on the "
                                       "hyperparameters only through the final loss terms")
        # L, H and d2L/dwdh are full-batch: the training loss on the whole training set.

        # Train with the hyperparameters held constant: no derivative flows through the scan.
        held = jax.lax.stop_gradient(hparams)
        start = loop.init(held, key)
        state = loop.run(start, held, 0, loop.num_steps)  # = loop.train (the plain loop's, checked)
        state = state._replace(params=jax.lax.stop_gradient(state.params))
        params = state.params
        value, scores = loop.readout(state, hparams)
        # The solve runs in the floating-point leaves only (`float_leaves` order); integer and boolean
        # leaves are held at their values, as training holds them (`hypergrad.loop.Loop.update`).
        trained = float_leaves(params)
        # S, the entries training moved. One it left bitwise unchanged (a group frozen by a rate of
        # 0: `freeze`, a zero `lr` entry, optax.set_to_zero) is held there for every h: w_j = w0_j,
        # so dw_j/dh = 0, and training is stationary in S only: F_S(w*(h), h) = 0 defines w*_S(h).
        moved = jax.tree.map(jnp.not_equal, trained, float_leaves(start.params))

        def on_moved(tree):  # P_S: zero outside S
            return jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros_like(x)), moved, tree)

        def grad_w(w, h):  # F(w, h) = dL/dw (w, h); F(w*(h), h) = 0 defines w*(h)
            return _train_grad(loop, params, w, h)

        # dV/dw at the trained w, restricted to S: the right-hand side of the linear system (dV/dw
        # outside S meets dw/dh = 0); dV/dh at fixed w, the direct term (zero unless the model
        # itself reads hyperparameters).
        # The linearisation point, and so the solve, the products and v, in at least float32: low-
        # precision parameters (bfloat16) are cast up exactly, and the losses are differentiated there.
        point = _widened(trained)
        rhs, direct = jax.grad(lambda w, h: loop.val_loss(with_float_leaves(params, w), h), argnums=(0, 1))(
            point, hparams)
        rhs = on_moved(rhs)

        def hvp(v):  # (H_SS + damping I) v = P_S d/de [dL/dw (w + e v, h)] at e = 0, plus damping v
            # v stays in S (so does every solver iterate: rhs and each product are zero outside S),
            # so P_S H v is the block H_SS of the Hessian applied to v_S.
            hv = on_moved(jax.jvp(lambda w: grad_w(w, hparams), (point,), (v,))[1])
            return _axpy(self.damping, v, hv) if self.damping else hv

        # v = (H + damping I)^{-1} dV/dw (H symmetric, so v' = dV/dw H^{-1}).
        if self.solver == "cg":
            v = _conjugate_gradient(hvp, rhs, maxiter=self.maxiter, tol=self.tol, unroll=self.unroll)
        else:
            v = _neumann_series(hvp, rhs, num_terms=self.num_terms, alpha=self.alpha, unroll=self.unroll)
        v = jax.lax.stop_gradient(v)

        # v' d2L/dwdh = d/dh [v' dL/dw (w, h)]: one vector-Jacobian product of F in h, cotangent v
        # (zero outside S: the rows F_S only, those of the stationarity training reaches).
        _, pullback = jax.vjp(lambda h: grad_w(point, h), hparams)
        (mixed,) = pullback(v)
        # dV/dh = -v' d2L/dwdh + (the direct term dV/dh at fixed w).
        grads = jax.tree.map(lambda m, d: d - m, mixed, direct)
        return (value, scores), grads


def _check_param_dtypes(params: PyTree) -> None:
    """A ValueError for a parameter leaf the solve cannot handle, before anything compiles: a complex
    one. For a complex leaf z = x + iy, jax.grad of the real training loss is dL/dx - i dL/dy, so the
    product that `hvp` takes is the real Hessian with the rows of y negated, which is not symmetric,
    and CG and the Neumann series would solve another system than H v = dV/dw. (Integer and boolean
    leaves are held constant, as training holds them: the solve runs in the floating-point ones.)"""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            where = f"the parameter at {jax.tree_util.keystr(path)!r}" if path else "the parameter"
            raise ValueError(
                f"Implicit cannot differentiate complex parameters: {where} (Problem(init=...)) has dtype "
                f"{leaf.dtype}, and the Hessian-vector products its solve runs on are not symmetric there (JAX's "
                "gradient in a complex parameter is the conjugate of the real one), so its solve would answer "
                "another system than the Hessian's; use hg.Reverse() or hg.Forward(), which differentiate "
                "training with complex parameters, or hold the real and imaginary parts as two float leaves")


def _check_plain_training(loop: Loop) -> None:
    """`ValueError` unless `loop` trains as `hypergrad.loop.Loop` does: Implicit assumes training
    ends at a stationary point of `loop.train_loss` on the full training set, which the plain loop's
    gradient steps approach; a subclass that changes a step (a projection, alternating updates)
    may end elsewhere, where Implicit's hypergradient would be that of a fixed point training never
    reaches, silently wrong. Reads the loop's type only: nothing is traced."""
    changed = overridden(loop, _TRAINING)
    if changed:
        raise ValueError(
            f"Implicit cannot vouch for the objective's custom training loop: {type(loop).__name__} overrides "
            f"{', '.join('Loop.' + name for name in changed)}, and Implicit assumes that training ends at a "
            "stationary point of Loop.train_loss on the full training set (its gradient in the parameters is 0), "
            "as the plain loop's gradient steps approach one; a custom step need not (a projection or a constraint "
            "ends where that gradient is not 0), and Implicit would return the hypergradient of a point training "
            "never reaches. A custom step whose end is such a stationary point is honoured when written through the "
            "pieces Implicit calls as the loop has them: keep Loop's step and change the gradient in the optimizer "
            "in a way that still stops only where it is 0 (clipping, a positive rescaling; an optimizer whose update "
            "reads the parameters, a decay or a projection, is refused too), or the loss in Loop.train_loss (or "
            "Problem(train_loss=...)), whose stationarity Implicit then solves. Otherwise use hg.Reverse() or "
            "hg.Forward(), which differentiate the loop as it runs")
