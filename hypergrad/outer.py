"""The outer-loop driver: populations of gradient tuners advanced together.

Every gradient strategy runs here: `hg.tune` (one tuner, or a population of N started from samples,
the centre, given points or the best trials of a random-search warm-up) and `hg.hybrid_search` (a
population over discrete configurations). A tuner descends the validation loss in the unconstrained
coordinates z of a space with an optax optimiser; its outer step (`outer_step_fn`) constrains z, asks
the method for the loss and its hypergradient, pulls the gradient back through the bijection and
applies the update.

A *cohort* is the tuners that share one compiled program: `outer_step_fn` vmapped over their z, last
good z, outer-optimiser state and held values (a hybrid configuration's choices), with the key and
data shared, and for a method that draws noise (ES, PES) the step's noise key, fresh at every step
while the training key stays fixed (`step_noise_key`). The step is traced once per cohort and its
jaxpr batched for each chunk size (`replayed_step_fn`), so the smaller programs of halving do not
trace and differentiate it again.

Each outer step runs a cohort in padded chunks of tuners, each chunk sharded across the
local devices exactly as a search chunk is (`hypergrad._batching.shardings`: fewer tuners than
devices, or a chunk the devices do not divide, over the most devices that divide it): one
compilation for any number of steps. With a given `chunk_size` the chunk never changes, so any
number of tuners shares one program (padding the last call): unlike a search, which cuts a chunk
larger than its trials to them, a population smaller than `chunk_size` computes, and is charged,
the whole chunk at every step (2 tuners at chunk_size=16: 16 hypergradients a step), the price of
sharing the program. Without one, the chunk is sized to the live tuners (`chunk_rows`), as a
search sizes its chunk to its trials, and when successive halving shrinks them the cohort moves to
a smaller chunk (one more compilation per halving round, instead of computing padding rows every
step), except on a CPU, where a halving cohort runs one tuner per device from the start
(`cohort_chunk`). The starting points and the optimiser's initial states are computed by chunks
too, so their small programs are also one per chunk, not one per number of tuners.

A program is keyed by the objective, space and method it was made for, the chunk, and what the
outer optimiser computes, not which object it is (`update_key`: a digest of its update's jaxpr):
optax builds every transformation from fresh closures, so two `optax.adam(0.1)` are never equal,
yet they compute the same step and share one program, while `optax.adam(0.2)` (another constant
in the jaxpr) gets its own. Each call traces the optimiser's update and init alone (milliseconds);
the step itself is traced only when its program is not in memory, and then, with the persistent
cache on, looked up in the program store by its jaxpr (`hypergrad._program_store`), so a later
process loads it without lowering it.

Per tuner, as for a lone tuner: a step whose loss, hypergradient or outer update (the new iterate:
a finite gradient may still give 0/0 in the optimiser) is not finite is not taken: the update is
skipped and z backs off halfway towards the tuner's last good iterate, the last one whose step was
finite throughout, so no iterate is ever NaN. So is a step whose hypergradient is finite but its
norm is not (its square overflows the dtype: Adam's second moment and polyak_sgd's squared norm
would be inf, and every later update 0, the tuner frozen), or whose outer-optimiser state turns
non-finite where it was finite (`newly_non_finite`). Such steps are recorded ("fail" when the loss
diverged, "skipped" when only the hypergradient, its norm or the update did) and never stop the other
tuners. A "fail" step is never chosen as best; a "skipped" one can be (`Result.best_trial`): its
loss is a finite validation loss of the parameters trained at its hyperparameters.

The optimiser state after a step not taken follows one rule, for a back-off and a restart alike:
what the optimiser's init computes from the iterate is made anew at the point the tuner moved to
(`outer.init` there), and the rest is kept (`backed_off_state`). Moments, counters, a plateau's
record and a schedule's position (Adam, SGD, reduce_on_plateau) are statistics of the gradients
seen so far, still true after the move, so such an optimiser keeps its whole state and its
program is as before; a copy of the iterate (`optax.contrib.schedule_free_*` keeps its base
iterate and computes the next step from it) would be the point the tuner left, and the step after
the move would land back beside the failure. Cost: the init's copies, in the program.

A tuner with no good iterate yet (every step so far, its start's included, was not finite) has
nothing to back off to: after each such step it restarts instead at a fresh point drawn from the
space as random search draws (`restart_draws`: a key folded from the call's key, the tuner's id and
the step, so the same call, or a resumed one, draws the same points), with its optimiser state
`outer.init` at that point: exact, as no update was ever applied to it (it is the rule above,
where everything not derived from the iterate still holds its initial value); both are in the
stored checkpoint, so a resumed call goes on exactly. Until its first finite step such a tuner is
random search, one trial per step, and from there it descends as any other: the failed start only
says where not to be, and any fixed target (the start, the centre, which is where `init="centre"`
and every configuration of `hg.hybrid_search` start) may diverge too and hold the tuner there, as a
move part-way would keep it near the failure. This runs on the host, after the step's program, and
only for such tuners: the others (and every tuner once it has a good iterate) step exactly as the
program computes, so their trials do not change. `drive` warns once per call, naming how many
tuners started with no finite step and how many then found one. Each step is a trial like any
other, charged as one: a tuner that never finds a finite point spends its steps as random search
would, and its trials are all "fail" (or "skipped", where only its hypergradient or update was not
finite).

Every tuner step is a trial: its value is the validation loss at the step's hyperparameters (before
the update), with test scores of the same trained parameters; after the last step each live tuner's
final iterate is scored once more by the same program (its update discarded), trained with the
call's key even when the steps resample theirs (`drive`), so that it is a value of the one
deterministic function the baselines search. Trials are numbered in the order they are produced,
step by step across tuners, and carry their tuner's id.

Successive halving (`halving=k`): after every k outer steps the better half of the live tuners
(ceil(n/2), ranked by the validation loss at their latest step, a diverged one last, ties to the lower
id) go on and the rest stop, so compute flows to the promising ones.

Cost: one hypergradient per row of each call (`chunk_rows`): the live tuners plus the padding of
each step's last chunk (spread over the chunk's real tuners, as in a search). Memory: one chunk of
hypergradients at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jcore

from hypergrad import _caches, _compile, _program_store
from hypergrad._batching import chunk_for, device_count, first_row, place, shardings, take_rows, to_host
from hypergrad._checks import users_stacklevel
from hypergrad._store_codec import TooLarge, identity
from hypergrad._tree import all_finite
from hypergrad._types import Key, PyTree
from hypergrad.accounting import traced_hypergradient
from hypergrad.loop import optimizer_update
from hypergrad.methods.base import Method, perturbation_key
from hypergrad.objective import Objective
from hypergrad.results import COMPLETE, FAIL, SKIPPED, Trial, TrialRecorder
from hypergrad.space import Space

__all__ = ["DEFAULT_OUTER", "check_outer", "outer_step_fn", "step_trial", "finite_z", "starts_program", "Cohort",
           "make_cohort", "drive", "chunk_rows", "rows_computed", "cohort_state", "restore_cohorts", "update_key",
           "initial_states", "batched_starts", "outer_identity", "trials_of", "RESTART_STREAM", "restart_draws",
           "step_noise_key"]

SKIPPED_WHY = (
    "an outer step's validation loss was finite but its hypergradient was not, so the step was skipped (its "
    "trial's state is 'skipped'). A usual cause: an optimiser that divides by the square root of a second moment "
    "(adam, rmsprop, adagrad) for a parameter whose gradient is exactly 0 (a masked unit, a dead relu, an unused "
    "embedding row), where the square root's derivative is infinite; optax's eps_root is the fix for meta-gradients "
    "through Adam: optax.adam(lr, eps_root=1e-16), but not with float16 parameters: optax keeps Adam's second "
    "moment in the parameters' dtype (mu_dtype sets the first moment's only), where 1e-16 rounds to 0 and any "
    "eps_root small enough to leave Adam's steps as they are leaves the square root's derivative past float16's "
    "largest number (65504): give the parameters bfloat16 (float32's range) or float32. With "
    "hg.Implicit(solver='neumann'), a Neumann series that diverges "
    "(alpha above 2 / the training Hessian's largest eigenvalue) is NaN: lower alpha. An optimiser whose jnp.where "
    "guards a division or square root (optax.lbfgs, optax.radam) is NaN in reverse mode alone (the branch not taken "
    "has an infinite derivative, and 0 * inf is NaN): use method=hg.Forward(), exact there. Conversely hg.Forward() "
    "is NaN through an optimiser that takes the square root or norm of a state that is exactly 0 at the first step "
    "(optax.contrib.dadapt_adamw, adopt, dog): use method=hg.Reverse(). Otherwise the inner training is near "
    "divergence at this point.")
"""Why `step_trial` warns (once per place in the code, as Python's warnings do) at a skipped step."""

UPDATE_SKIPPED_WHY = (
    "an outer step's validation loss and hypergradient were finite but the outer optimiser's update was not, so "
    "the step was skipped (its trial's state is 'skipped') and the iterate backed off: the optimiser given as outer= "
    "gave a NaN or infinite step (a 0/0 or an overflow: optax.adam(lr, eps=0.0) on a hyperparameter whose "
    "hypergradient is exactly 0, optax.contrib.schedule_free_sgd(b1=0.0)); give outer= an optimiser whose update "
    "stays finite, e.g. optax.adam(0.05).")
"""What `step_trial` warns at a step skipped for its outer update alone."""

OVERFLOW_SKIPPED_WHY = (
    "an outer step's validation loss and hypergradient were finite but the hypergradient was too large for the outer "
    "optimiser: its norm (its square) overflows the dtype, which turns a second moment or a squared norm in the "
    "optimiser's state infinite (optax.adam's, optax.polyak_sgd's) and every later update 0, a tuner frozen where it "
    "stands. The step was skipped (its trial's state is 'skipped') and the iterate backed off halfway towards the "
    "last good one, the optimiser's state kept finite. The inner training is near divergence at this point: lower "
    "the outer learning rate, narrow the space (e.g. a smaller upper bound of the learning rate), or use float64 "
    "(jax.config.update('jax_enable_x64', True)), where the square overflows much later.")
"""What `step_trial` warns at a step skipped because its hypergradient's norm, or the outer
optimiser's state it gave, was not finite while the hypergradient was."""

DEFAULT_OUTER = optax.adam(0.05)
"""Adam with step 0.05 in unconstrained coordinates."""
DEFAULT_OUTER_NAME = "optax.adam(0.05)"
"""How error messages name `DEFAULT_OUTER`."""


def check_outer(outer: Any, space: Space | None = None) -> optax.GradientTransformation:
    """`outer`, or `DEFAULT_OUTER` for None; a `ValueError` unless it is an optax transformation
    and, given the `space` it descends, one whose update takes no more than the outer step gives it:
    the gradient, state and iterate, and (`optax.GradientTransformationExtraArgs`) the loss as
    `value=` (`optax.contrib.reduce_on_plateau`, `optax.polyak_sgd`). A line search asking for
    the loss as a function (`value_fn=`: `optax.lbfgs`, `optax.scale_by_zoom_linesearch`) is
    refused: the loss is a training run, not a function the optimiser may call. Cost: one trace of
    the update and init on the space's shapes (`jax.eval_shape`: nothing computed or compiled)."""
    given = outer is not None
    outer = DEFAULT_OUTER if outer is None else outer
    if not isinstance(outer, optax.GradientTransformation):
        raise ValueError(f"outer={outer!r} must be an optax.GradientTransformation, e.g. optax.adam(0.05)")
    if space is not None:
        _check_update_arguments(outer, space, given)
    return outer


def _check_update_arguments(outer: optax.GradientTransformation, space: Space, given: bool = True) -> None:
    """Raises `ValueError` naming `outer=`, chained from what the optimiser raised, when its init
    and update cannot be traced on the space's z: when the update asks for keyword arguments
    beyond `value` (Python's own TypeError for a missing keyword-only argument; `optimizer_update`
    words it for an inner optimiser, a ValueError caused by that TypeError, so it is reworded here
    to name `outer=` and what the outer step gives), or when it fails on z itself (any other
    exception: `optax.lookahead` reads its params as `LookaheadParams` of fast and slow copies and
    raises AttributeError on a plain dict). A failure that is not the user's `outer=` (`given`
    False: the default failed) or a dtype-promotion error (JAX's strict promotion setting refusing
    the optimiser's own arithmetic, e.g. optax.adam's bias correction) is `outer_setting_error`'s."""
    z = jax.eval_shape(space.unconstrain, space.centre())
    value = jax.ShapeDtypeStruct((), jax.dtypes.canonicalize_dtype(jnp.float64))
    try:
        jax.eval_shape(lambda z, v: optimizer_update(outer, z, outer.init(z), z, v), z, value)
    except Exception as err:  # whatever the optimiser's own code raises on z: reworded below, chained
        if not given or (isinstance(err, jax.dtypes.TypePromotionError) and strict_promotion()):
            raise outer_setting_error(err, given) from err
        missing = err if isinstance(err, TypeError) else err.__cause__
        if isinstance(missing, TypeError) and "required keyword-only argument" in str(missing):
            raise ValueError(f"outer=: this optimiser's update needs arguments that tune cannot give ({missing}); "
                             "the outer step gives it the gradient, state and iterate, and the validation loss as "
                             "value= (enough for optax.contrib.reduce_on_plateau and optax.polyak_sgd), never "
                             "value_fn= (optax.lbfgs's line search evaluates the loss as a function): use e.g. "
                             "optax.adam(0.05), or optax.lbfgs(linesearch=None) with a fixed learning rate") from err
        raise ValueError(f"outer=: this optimiser's init or update failed on the outer step's iterate "
                         f"({type(err).__name__}: {err}); its params are the space's unconstrained coordinates z, "
                         "a plain dict of arrays, one per hyperparameter (never a wrapper such as optax.lookahead's "
                         "LookaheadParams), and its update gets the gradient in z, its state, z and value=: use an "
                         "optimiser over plain pytrees, e.g. optax.adam(0.05)") from err


def outer_setting_error(err: Exception, given: bool) -> ValueError:
    """The error for an outer optimiser whose init or update failed for a reason other than what
    the user passed as `outer=`: tune's default (`given` False), or any optimiser under JAX's
    strict dtype promotion (`jax_numpy_dtype_promotion="strict"`, which refuses e.g. optax.adam's
    Python-float ** int32 bias correction). It names which optimiser failed, the real cause, and
    the setting when it is strict; it never recommends the default that failed."""
    which = "outer=" if given else f"tune's default outer optimiser (outer=None: {DEFAULT_OUTER_NAME})"
    text = f"{which} failed on the outer step's iterate ({type(err).__name__}: {err})"
    if strict_promotion():
        return ValueError(f"{text}: JAX's jax_numpy_dtype_promotion='strict' is on, and this optimiser's own "
                          "arithmetic mixes dtypes (e.g. optax.adam's bias correction raises a Python float to an int32 "
                          "step count); pass outer= an optimiser that runs under strict promotion, e.g. "
                          "optax.sgd(0.05), or call tune inside `with jax.numpy_dtype_promotion('standard'):`")
    return ValueError(f"{text}; no argument of this call caused it: pass outer= another optimiser, e.g. "
                      "optax.sgd(0.05)")


def strict_promotion() -> bool:
    """Whether JAX's `jax_numpy_dtype_promotion` setting is "strict" (no implicit promotion)."""
    return str(jax.config.jax_numpy_dtype_promotion) == "strict"


def outer_identity(outer: optax.GradientTransformation) -> Any:
    """What a result records of its outer optimiser (`info["outer"]`): the JSON description a stored
    study's fingerprint holds of it (`hypergrad._store_codec.identity`: the functions optax built it
    from, by name and a digest of their code, and the settings they close over, e.g. Adam's
    -0.05), the same for two optimisers made apart with equal settings and free of memory
    addresses; only the type's name for one too large to describe. Cost: linear in the closures."""
    try:
        return identity(outer)
    except TooLarge:
        return {"type": type(outer).__qualname__}


def outer_step_fn(objective: Objective, space: Space, method: Method, outer: optax.GradientTransformation,
                  fixed: PyTree | None = None):
    """The pure outer step of one tuner: (z, z_good, opt_state, key, data, noise_key=None) -> (z,
    z_good, opt_state, report). `noise_key` is the step's noise key for a method with
    `random_estimate` (`step_noise_key`), None for any other. `fixed`: the tuner's held values
    (`Objective.with_fixed`, possibly traced), or None. Traced inside an
    `accounting.sharing_traces()` block (tune's, hybrid_search's) after the hypergradient's FLOP
    count at the same argument types, the step evaluates that count's jaxpr
    (`accounting.traced_hypergradient`: the same equations) instead of tracing the method and the
    objective's Python again (`step_hypergradient`)."""

    def step(z, z_good, opt_state, key, data, noise_key=None):
        hparams, pullback = jax.vjp(space.constrain, z)
        (value, scores), grads = step_hypergradient(objective, method, fixed, (hparams, key, data), noise_key)
        (grad_z,) = pullback(grads)
        loss_ok, grad_ok = jnp.isfinite(value), all_finite(grad_z)
        grad_norm = optax.tree_utils.tree_norm(grad_z)
        # as the training loop gives its optimiser the loss: an ExtraArgs one (every chain) gets value=
        updates, new_state = optimizer_update(outer, grad_z, opt_state, z, value)
        moved = optax.apply_updates(z, updates)
        # a finite gradient whose square overflows (its norm is inf) turns adam's second moment inf, every later
        # update 0: a frozen tuner; never keep that state (`newly_non_finite`), nor a non-finite z (0/0 in adam(eps=0))
        norm_ok = jnp.isfinite(grad_norm) & ~newly_non_finite(opt_state, new_state)
        ok = loss_ok & grad_ok & norm_ok & all_finite(moved)
        # Skip a non-finite step: back off halfway to the last good z, with the optimiser state kept
        # but for what its init derives from the iterate, re-initialised there (`backed_off_state`).
        backed_off = jax.tree.map(lambda a, b: 0.5 * (a + b), z, z_good)
        new_z = jax.tree.map(lambda m, b: jnp.where(ok, m, b), moved, backed_off)
        new_good = jax.tree.map(lambda a, g: jnp.where(ok, a, g), z, z_good)
        kept = backed_off_state(outer, opt_state, backed_off)
        opt_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, kept)
        report = {"hparams": hparams, "scores": scores, "grad_norm": grad_norm, "loss_ok": loss_ok,
                  "grad_ok": grad_ok, "norm_ok": norm_ok, "ok": ok}
        return new_z, new_good, opt_state, report

    return step


def newly_non_finite(old: PyTree, new: PyTree) -> jax.Array:
    """A boolean scalar: whether some element of a floating leaf of the optimiser state `new` is not
    finite where the same element of `old` was. An element that was not finite already may stay so
    (`optax.contrib.reduce_on_plateau` starts its best value at inf): only a state the step made
    non-finite is refused."""
    pairs = [(o, n) for o, n in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
             if jnp.issubdtype(jnp.result_type(n), jnp.inexact)]
    return jnp.any(jnp.asarray([jnp.any(~jnp.isfinite(n) & jnp.isfinite(o)) for o, n in pairs] or [False]))


def iterate_leaves(outer: optax.GradientTransformation, z: PyTree) -> tuple[bool, ...]:
    """Per leaf of `outer.init(z)`, whether the init computes it from the iterate `z`: a copy of
    it (the averaged and base iterates of `optax.contrib.schedule_free_*`) or anything derived
    from it, read off the init's jaxpr by following which values depend on its inputs (an
    operation with a sub-program counts whole). Moments (`optax.adam`'s zeros of z's shape),
    counters and constants do not. Cost: one trace of the init alone, on `z`'s shapes."""
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), z)
    jaxpr = jax.make_jaxpr(outer.init)(shapes).jaxpr
    derived = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jcore.Literal) and v in derived for v in eqn.invars):
            derived.update(eqn.outvars)
    return tuple(not isinstance(v, jcore.Literal) and v in derived for v in jaxpr.outvars)


def backed_off_state(outer: optax.GradientTransformation, opt_state: PyTree, z: PyTree) -> PyTree:
    """The optimiser state a tuner moved to `z` by no update of its own (a back-off) goes on with:
    `opt_state` where its init does not read the iterate (moments, counters, a plateau's record,
    learnt from the gradients so far and still true of them), `outer.init(z)` where it does
    (`iterate_leaves`). An optimiser keeping a copy of the iterate then steps from `z`: a
    schedule-free one computes its next iterate from its state alone and would jump back beside
    the point that failed. An optimiser whose state holds no iterate (adam, sgd, reduce_on_plateau)
    keeps its state whole, and its step's program is unchanged. Cost: the init's copies, nothing
    for such an optimiser."""
    derived = iterate_leaves(outer, z)
    if not any(derived):
        return opt_state
    leaves, tree = jax.tree.flatten(opt_state)
    fresh = jax.tree.leaves(outer.init(z))
    return jax.tree.unflatten(tree, [f if d else o for d, f, o in zip(derived, fresh, leaves, strict=True)])


def step_hypergradient(objective: Objective, method: Method, fixed: PyTree | None, args: tuple,
                       noise_key: Key | None) -> Any:
    """((value, scores), grads) of `method` on `objective` (held at `fixed` when given) at `args` =
    (hparams, key, data), with the step's `noise_key` for a method that draws noise: the trace its
    FLOP count made in the current `sharing_traces()` block, when one is held (tune's count has no
    held values, hybrid_search's holds its configuration's, possibly none; `hg.ES` and `hg.PES`
    were counted with their noise key an input), evaluated; else the method traced now."""
    replay = None if fixed else traced_hypergradient(objective, method, *args, noise_key=noise_key)
    if replay is None and fixed is not None:
        replay = traced_hypergradient(objective, method, *args, held=fixed, noise_key=noise_key)
    if replay is not None:
        return replay(*args)
    inner = objective.with_fixed(fixed) if fixed else objective
    if noise_key is None:
        return method.value_and_grad(inner, *args)
    return method.value_and_grad(inner, *args, noise_key=noise_key)


def tuner_step_fn(objective: Objective, space: Space, method: Method, outer: optax.GradientTransformation):
    """The outer step of one tuner with its held values: (z, z_good, opt_state, fixed, key, data,
    noise_key=None) -> (z, z_good, opt_state, report). `fixed` holds the tuner's held
    hyperparameters (`Objective.with_fixed`), or is empty; `noise_key` as in `outer_step_fn`."""

    def one(z, z_good, opt_state, fixed, key, data, noise_key=None):
        return outer_step_fn(objective, space, method, outer, fixed)(z, z_good, opt_state, key, data, noise_key)

    return one


def traced(fn: Callable, args: tuple) -> tuple[Any, Any]:
    """(the ClosedJaxpr of `fn` at `args`, the tree of its outputs)."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    return closed, jax.tree.structure(out_shape)


def flat_replay(closed: Any) -> Callable:
    """The ClosedJaxpr `closed` of one tuner's step batched by `jax.vmap` over the tuners (z, z_good,
    opt_state and held values; key, data and a noise key, when given, shared), taking its arguments
    as a tree and returning its outputs as a flat list: a function of the jaxpr alone (what the
    program store keys), the caller unflattening with the tree `traced` gave."""

    def replay(*args):
        return jcore.jaxpr_as_fun(closed)(*jax.tree.leaves(args))

    def batched(*args):
        return jax.vmap(replay, in_axes=(0, 0, 0, 0) + (None,) * (len(args) - 4))(*args)

    return batched


def replayed_step_fn(one: Callable, example: tuple) -> Callable:
    """`jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))` (a None more for a noise key) made from one
    trace: `one` is traced at `example` (one tuner's arguments) to a jaxpr, and the returned
    function batches that jaxpr. Each population size (halving makes one program per size) then
    batches the same jaxpr instead of running the objective's Python and differentiating it again:
    the same operations, so the same numbers. Cost: one trace of `one` (with its hypergradient), then a batching pass per size.
    Memory: the jaxpr and its constants."""
    closed, out_tree = traced(one, example)
    batched = flat_replay(closed)
    return lambda *args: jax.tree.unflatten(out_tree, batched(*args))


def update_key(outer: optax.GradientTransformation, z: PyTree, opt_state: PyTree) -> str:
    """What `outer.update` computes for one tuner's gradient, state and iterate of the types of
    (`z`, `opt_state`, `z`), as a key: `hypergrad._program_store.digest` of its jaxpr (every
    operation and literal, the bytes of its constants) with its output tree. Equal for two
    optimisers made apart with equal settings (two `optax.adam(0.1)`, never equal as Python
    objects), different for another learning rate or schedule. The outer step's program is then
    keyed by it with the objective, space and method: their step traces to one jaxpr. The loss
    given as `value=` is an input of the trace, as it is of the step, so an optimiser that reads it
    is keyed by what it computes from it (`-c * value * g` by its `c`: a Python constant folded
    with a constant 0.0 would give every `c` one key, and the first program to all); one that
    ignores it traces to the same jaxpr with an unused input. Cost: one trace of the update alone
    (milliseconds)."""
    value = np.zeros((), jax.dtypes.canonicalize_dtype(jnp.float64))  # a host array, as z is
    args = (z, opt_state, z, value)
    closed, out_tree = traced(lambda g, s, p, v: optimizer_update(outer, g, s, p, v), args)
    return _program_store.digest(closed, ("outer update", str(out_tree)), args)


def finite_z(space: Space, hparams: PyTree) -> dict[str, jax.Array]:
    """Unconstrained coordinates (default float dtype) of `hparams`, clipped where a value sits on a
    bound (a sampled or warm-up start may): sigmoid rounds to the bound itself past about
    -log(eps), so nothing is lost."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    limit = -float(np.log(np.finfo(dtype).eps)) - 1.0
    return jax.tree.map(lambda a: jnp.clip(jnp.asarray(a, dtype), -limit, limit), space.unconstrain(hparams))


@functools.lru_cache(maxsize=64)
def starts_program(space: Space) -> Callable:
    """batched starts -> (their `finite_z`, the first row's constrained hyperparameters), as one
    jitted program (compiled once per space and shapes), where eager operations compile a small
    program each (about 20 per call in a fresh process). Rounds as one fused program, which may
    differ from the eager operations in the last bit."""

    def starts(hparams):
        z = finite_z(space, hparams)
        return z, space.constrain(jax.tree.map(lambda a: a[0], z))

    return jax.jit(starts)


_caches.register(starts_program.cache_clear)


def _concatenated(pieces: list) -> PyTree:
    return pieces[0] if len(pieces) == 1 else jax.tree.map(lambda *a: np.concatenate(a), *pieces)


def batched_starts(space: Space, starts: PyTree, chunk: int) -> tuple[PyTree, PyTree]:
    """(`finite_z` of the batched `starts` as numpy arrays, the first row's constrained
    hyperparameters), by `starts_program` run on `chunk` rows per call (the last padded): one
    program per chunk, shared by populations of any size that run on that chunk."""
    starts = jax.tree.map(np.asarray, starts)
    num, program = jax.tree.leaves(starts)[0].shape[0], starts_program(space)
    pieces, first = [], None
    for start in range(0, num, chunk):
        z, hparams = program(take_rows(starts, start, chunk))
        first = hparams if start == 0 else first
        pieces.append(jax.tree.map(lambda a, real=min(chunk, num - start): np.asarray(a)[:real], z))
    return _concatenated(pieces), first


RESTART_STREAM = 2**31 - 2
"""`fold_in` tag of the key a tuner with no good iterate draws its restart from (`restart_draws`),
apart from the searches' sampling stream (`hypergrad.space.SAMPLE_STREAM`) and the training key.
The same number as `hypergrad.methods.base.PERTURBATION_STREAM` and optuna_search's seed stream
(`SAMPLE_STREAM - 1`): kept, since restarts and stored studies' numbers depend on it, and no two
of their keys coincide (they are folded from different parents)."""


def restart_draws(space: Space, key: Key, tuners: Sequence[int], step: int) -> PyTree:
    """The restarts at outer step `step` of `tuners`, which have no good iterate yet: for each,
    one setting drawn as random search draws (`Space.sample`, uniform in the unconstrained fractions)
    from `key` folded with the tuner's id, then `step`, then `RESTART_STREAM`, as its unconstrained
    coordinates (`finite_z`), numpy with a leading axis of len(tuners). A function of the call's key,
    the tuner and the step alone: the same call, or a resumed one, draws the same points, and no two
    tuners or steps share one. Cost: a draw and a `starts_program` call per tuner (small programs,
    compiled once per space), run only for such tuners."""
    program, rows = starts_program(space), []
    for tuner in tuners:
        tuner_key = jax.random.fold_in(jax.random.fold_in(key, int(tuner)), int(step))
        z, _ = program(space.sample(tuner_key, 1, stream=RESTART_STREAM))
        rows.append(jax.tree.map(np.asarray, z))
    return _concatenated(rows)


NO_GOOD_START = (
    "{count} of {total} tuners ({ids}) started where the loss or its hypergradient was not finite (or the outer "
    "optimiser's update), with no good iterate to back off to; after each such step they restarted at a fresh "
    "point drawn from the space (a key folded from the call's key, the tuner's id and the step) instead of staying "
    "where they failed, and {found} of them then reached a finite loss. Their failed steps are trials and count "
    "in the compute. Where the loss itself was not finite: narrow the space, start inside the part of it that trains "
    "(init=), or start from the best trials of a random-search warm-up (tune's warmup=). Where the loss was finite and "
    "only the hypergradient was not (the steps were 'skipped', and the skipped-step warning says so), the space is "
    "not the cause: the method or the optimiser is, and that warning names the fix.")
"""What `drive` warns, once per call, when tuners started with no finite step (`restart_draws`)."""


def step_trial(number: int, report: dict[str, Any], *, final: bool, flops: float, seconds: float,
               run_flops: float, tuner: int | None = None) -> Trial:
    """The trial of one outer step's report (host values of one tuner). The final evaluation's
    update is discarded, so it fails only when its loss does; a step fails when its loss is not
    finite and is skipped when only its hypergradient, its norm (or the outer optimiser's state
    that its square overflowed), or the outer optimiser's update, is not (warning `SKIPPED_WHY`,
    `OVERFLOW_SKIPPED_WHY` or `UPDATE_SKIPPED_WHY`)."""
    scores = {name: float(v) for name, v in report["scores"].items()}
    value = scores["val_loss"]
    if final:
        state = COMPLETE if math.isfinite(value) else FAIL
    else:
        state = COMPLETE if report["ok"] else (SKIPPED if report["loss_ok"] else FAIL)
    if state == SKIPPED:
        why = (SKIPPED_WHY if not report["grad_ok"] else OVERFLOW_SKIPPED_WHY if not report.get("norm_ok", True)
               else UPDATE_SKIPPED_WHY)
        warnings.warn(why, RuntimeWarning, stacklevel=users_stacklevel())
    return Trial(number=number, hparams={k: np.asarray(v) for k, v in report["hparams"].items()}, value=value,
                 scores=scores, state=state, flops=flops, seconds=seconds, run_flops=run_flops,
                 grad_norm=float(report["grad_norm"]), tuner=tuner)


def chunk_rows(live: int, chunk_size: int | None) -> int:
    """Tuners per call for `live` tuners: `chunk_size` when given, however few the tuners (the
    padding rows computed and charged: the fixed chunk is what lets any number of tuners share one
    program); else as a search chunks its trials (balanced, a multiple of the devices to shard
    evenly), except that fewer tuners than devices run unpadded, one per device
    (`_batching.shardings` splits them over as many devices as there are tuners)."""
    if chunk_size is not None:
        return chunk_size
    return live if live < device_count() else chunk_for(live, None)


LIVE = "live"
"""`chunk_size` that sizes a cohort's calls to its live tuners on every platform (`cohort_chunk`)."""


def cohort_chunk(chunk_size: int | str | None, halving: int | None, population: int | None = None) -> int | None:
    """The fixed chunk a cohort of `population` tuners runs on, or None to size it to its live
    tuners (`chunk_rows`).

    None for `chunk_size=LIVE`; `chunk_size` when it is a number; with successive halving on a
    CPU, one tuner per device (of every process: `_batching.device_count`), at most `population`
    when given (fewer tuners than devices run over as many devices as divide them, unpadded, as
    without halving), so every round runs on one program and the rounds differ only in their
    number of calls. There a program takes seconds to compile (one per halving round when sized
    to the live tuners) while a wider vmap of tuners saves a fraction of a hypergradient's time,
    so one program is cheaper unless the run is long; on an accelerator, where the width is what
    makes it fast, the chunk follows the live tuners. Cost and bias: the rounds after the first
    pad their live tuners to the chunk, computed and charged, so on many devices halving saves
    less compute than it does on one. A function of the platform, device count and population
    only, never of timings, so the same call computes the same trials."""
    if isinstance(chunk_size, str) and chunk_size == LIVE:
        return None
    if chunk_size is not None or not halving or jax.default_backend() != "cpu":
        return chunk_size
    return device_count() if population is None else min(device_count(), population)


def trials_of(population: int, steps: int, halving: int | None) -> int:
    """Trials `drive` records for `population` tuners: one per live tuner and step, `steps` steps
    and the final scoring, the live tuners halved (ceil(n/2) go on) after every `halving` steps
    while more than one is live."""
    live, total = population, 0
    for step in range(steps + 1):
        total += live
        if halving and step < steps and (step + 1) % halving == 0 and live > 1:
            live = -(-live // 2)
    return total


def rows_computed(live: int, chunk_size: int | None) -> int:
    """Rows one outer step of `live` tuners computes (padding included): what it costs."""
    chunk = chunk_rows(live, chunk_size)
    return -(-live // chunk) * chunk


@dataclasses.dataclass
class Cohort:
    """Tuners sharing one compiled outer step (mutable bookkeeping of the driver).

    Attributes:
        program: chunk -> (the compiled step for `chunk` tuners (`step_program`; cached), its compile
            seconds, its shardings and the data placed for it).
        chunk_size: the chunk given by the caller, or None to size it to the live tuners.
        executable: the compiled program for `chunk` tuners.
        chunk: tuners per call now.
        data: the objective's data, placed for the program.
        spread, replicated: the row-axis and replicated shardings of a chunk (None on one device).
        tuners: ids of the live tuners, in order.
        carry: (z, z_good, opt_state) with a leading axis of len(tuners), numpy arrays on the host.
        fixed: held values with a leading axis of len(tuners) (empty dict when none), numpy.
        flops: FLOPs of one tuner's outer step; unit: FLOPs of one training run.
        extra: tuner id -> hyperparameters recorded beside the tuned ones (a configuration's
            options), or None.
        latest: tuner id -> validation loss at its latest step (what halving ranks).
        out_tree: the tree of (z, z_good, opt_state, report) the program returns flat.
        restart: (tuner ids, step) -> restarts of tuners with no good iterate (`restart_draws`) and
            the optimiser's initial states there.
        good: per live tuner, whether it has a good iterate (a step with a finite loss,
            hypergradient and update); z_good means nothing where it is False.
        without_good: tuner id -> whether it has since reached a finite loss, for each tuner that
            restarted with no good iterate during this call (what `drive` warns about).
        noisy: whether the method draws noise (`Method.random_estimate`): the program then takes
            the step's noise key (`step_noise_key`) after the data.
        recorded_in: the space whose order each trial records its hyperparameters in
            (`Space.in_order`: tune's whole space, held names included), or None: as the program
            returns them (sorted by name), then `extra`'s.
    """

    program: Callable[[int], tuple[Any, float, Any, Any, PyTree]]
    chunk_size: int | None
    executable: Any
    chunk: int
    data: PyTree
    spread: Any
    replicated: Any
    tuners: np.ndarray
    carry: tuple
    fixed: PyTree
    flops: float
    unit: float
    extra: Callable[[int], dict] | None = None
    latest: dict = dataclasses.field(default_factory=dict)
    compile_seconds: float = 0.0
    out_tree: Any = None
    restart: Callable[[np.ndarray, int], tuple[PyTree, PyTree]] | None = None
    good: np.ndarray | None = None
    without_good: dict = dataclasses.field(default_factory=dict)
    noisy: bool = False
    recorded_in: Space | None = None

    def keep(self, ids: set[int]) -> None:
        """Only the tuners in `ids` go on (on a smaller chunk, when it is sized to them)."""
        rows = np.asarray([i for i, t in enumerate(self.tuners) if int(t) in ids], dtype=np.int64)
        self.tuners = self.tuners[rows]
        self.carry = jax.tree.map(lambda a: a[rows], self.carry)
        self.fixed = jax.tree.map(lambda a: a[rows], self.fixed)
        self.good = self.good[rows]
        chunk = chunk_rows(len(rows), self.chunk_size)
        if len(rows) and chunk != self.chunk:
            self.executable, seconds, self.spread, self.replicated, self.data = self.program(chunk)
            self.chunk, self.compile_seconds = chunk, self.compile_seconds + seconds


_INIT_PROGRAMS = 64
"""Most initial-state programs held (`initial_states`), the least recently used dropped first."""

_init_programs: collections.OrderedDict = collections.OrderedDict()  # key of the init's jaxpr -> jitted program
_init_programs_lock = threading.RLock()  # around each look-up, insertion and clear (none compiles)


@_caches.register
def _clear_init_programs() -> None:
    with _init_programs_lock:
        _init_programs.clear()


def initial_states(outer: optax.GradientTransformation, z: PyTree, chunk: int) -> PyTree:
    """`jax.vmap(outer.init)(z)` of the batched iterates `z` (numpy, leading axis: tuners), as numpy
    arrays, `chunk` rows per call (the last padded). The init is traced at a chunk and its program
    jitted once per digest of that jaxpr (as `update_key`): equal optimisers made apart share it,
    and populations of any size on one chunk too. One small program where eager operations compile
    one each (a broadcast per state leaf). Cost: a trace of the init alone (milliseconds)."""
    num = jax.tree.leaves(z)[0].shape[0]
    example = take_rows(z, 0, chunk)
    closed, out_tree = traced(jax.vmap(outer.init), (example,))
    name = _program_store.digest(closed, ("outer init", str(out_tree)), example)
    with _init_programs_lock:  # jax.jit compiles nothing here: its first call does, outside the lock
        program = _init_programs.get(name)
        if program is None:
            def init(rows):
                return jcore.jaxpr_as_fun(closed)(*jax.tree.leaves(rows))

            program = _init_programs[name] = jax.jit(init)
            while len(_init_programs) > _INIT_PROGRAMS:
                _init_programs.popitem(last=False)
        _init_programs.move_to_end(name)
    pieces = [[np.asarray(a)[:min(chunk, num - start)] for a in program(take_rows(z, start, chunk))]
              for start in range(0, num, chunk)]
    return jax.tree.unflatten(out_tree, _concatenated(pieces))


_out_trees: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # step program -> its outputs' tree
_caches.register(_out_trees.clear)


def step_program(tag: tuple, trace: Callable[[], tuple[Any, Any]], example: tuple) -> tuple[Any, float, Any]:
    """(the compiled outer step for `example`'s chunk, its compile seconds (0.0 from the cache), the
    tree of its flat outputs). `tag` keys it in memory; `trace()` gives (the step's ClosedJaxpr for
    one tuner, its output tree), called only when the program is not in memory: then it is batched
    (`flat_replay`) and compiled, or loaded from the program store by that jaxpr."""
    executable = _compile.cached(tag, example)
    out_tree = None if executable is None else _out_trees.get(executable)
    if out_tree is not None:  # (a program whose tree another thread's clear_caches dropped is traced again)
        return executable, 0.0, out_tree
    closed, out_tree = trace()
    executable, seconds = _compile.compiled(tag, lambda: flat_replay(closed), example, jaxpr=closed)
    _out_trees[executable] = out_tree
    return executable, seconds, out_tree


def make_cohort(objective: Objective, space: Space, method: Method, outer: optax.GradientTransformation,
                key: Key, z: PyTree, *, fixed: PyTree | None = None, tuners: Sequence[int] | None = None,
                chunk_size: int | None = None, flops: float, unit: float,
                extra: Callable[[int], dict] | None = None, recorded_in: Space | None = None) -> Cohort:
    """A cohort starting at the batched iterates `z` (leading axis: tuners), its program compiled
    (or taken from the cache) for its chunk of tuners (`chunk_rows`), keyed by what `outer` computes
    (`update_key`), not by the object.

    Between steps the tuners' iterates, optimiser states and held values live on the host as numpy
    arrays: halving's selections, a chunk's rows and their concatenation are then numpy operations,
    where on device arrays each is a small program JAX compiles once per shape (seconds in all, in
    a fresh process). Cost: the carry's bytes to the devices and back once per step."""
    z = jax.tree.map(np.asarray, z)
    num = jax.tree.leaves(z)[0].shape[0]
    fixed = {} if fixed is None else jax.tree.map(np.asarray, fixed)
    tuners = np.arange(num) if tuners is None else np.asarray(tuners)
    data = objective.problem.data
    chunk = chunk_rows(num, chunk_size)
    carry = (z, z, initial_states(outer, z, chunk))
    first = first_row((*carry, fixed))
    tag = ("tune", objective, space, method, update_key(outer, first[0], first[2]))
    # a noise key (its value unread here) only for a method that draws noise: other programs are unchanged
    noise = (perturbation_key(key),) if method.random_estimate else ()
    # the step traced once, when the first program this cohort compiles needs it
    trace = functools.cache(lambda: traced(tuner_step_fn(objective, space, method, outer), (*first, key, data, *noise)))

    def program_and_tree(chunk: int) -> tuple[Any, float, Any, Any, PyTree, Any]:
        spread, replicated = shardings(chunk)
        placed_data, placed_key, placed_noise = place((data, key, noise), replicated)
        example = (*place(take_rows((*carry, fixed), 0, chunk), spread), placed_key, placed_data, *placed_noise)
        executable, seconds, out_tree = step_program(tag, trace, example)
        return executable, seconds, spread, replicated, placed_data, out_tree

    def program(chunk: int) -> tuple[Any, float, Any, Any, PyTree]:
        return program_and_tree(chunk)[:5]

    executable, seconds, spread, replicated, placed_data, out_tree = program_and_tree(chunk)
    return Cohort(program, chunk_size, executable, chunk, placed_data, spread, replicated, tuners, carry, fixed,
                  flops, unit, extra, compile_seconds=seconds, out_tree=out_tree,
                  restart=functools.partial(_restarts, space, key, outer, chunk), good=np.zeros(num, dtype=bool),
                  noisy=method.random_estimate, recorded_in=recorded_in)


def _step(cohort: Cohort, step_key: Key, noise_key: Callable[[], Key], final: bool, number: int,
          recorder: TrialRecorder, step: int) -> int:
    """Outer step `step` of every live tuner of `cohort`, chunk by chunk; their trials go to
    `recorder` as each chunk returns. `noise_key()` gives the step's noise key, asked for only by a
    cohort whose method draws noise. Returns the next trial number."""
    num, chunk = len(cohort.tuners), cohort.chunk
    step_key = place(step_key, cohort.replicated)
    noise = (place(noise_key(), cohort.replicated),) if cohort.noisy else ()
    pieces, oks = [], []
    for start in range(0, num, chunk):
        real = min(chunk, num - start)
        rows = take_rows((*cohort.carry, cohort.fixed), start, chunk)  # numpy: views, padded when short
        args = (*place(tuple(rows), cohort.spread), step_key, cohort.data, *noise)
        began = time.perf_counter()
        out = jax.tree.unflatten(cohort.out_tree, to_host(jax.block_until_ready(cohort.executable(*args))))
        seconds = time.perf_counter() - began
        pieces.append(jax.tree.map(lambda a: np.asarray(a)[:real], out[:3]))
        report = jax.device_get(out[3])
        oks.append(np.asarray(report["ok"], dtype=bool).reshape(-1)[:real])
        for i in range(real):
            tuner = int(cohort.tuners[start + i])
            trial = step_trial(number, jax.tree.map(lambda a: a[i], report), final=final, tuner=tuner,
                               flops=cohort.flops * chunk / real, seconds=seconds / real, run_flops=cohort.unit)
            if cohort.extra is not None:
                trial = dataclasses.replace(trial, hparams={**trial.hparams, **cohort.extra(tuner)})
            if cohort.recorded_in is not None:  # the space's order, as the searches record (values unchanged)
                trial = dataclasses.replace(trial, hparams=cohort.recorded_in.in_order(trial.hparams))
            cohort.latest[tuner] = trial.value if trial.state != FAIL else math.inf
            if tuner in cohort.without_good and trial.state != FAIL:
                cohort.without_good[tuner] = True
            recorder.add(trial)
            number += 1
    if not final:
        ok = np.concatenate(oks)
        cohort.carry = _restarted_without_good(cohort, _concatenated(pieces), ok, step)
        cohort.good = cohort.good | ok
    return number


def _restarts(space: Space, key: Key, outer: optax.GradientTransformation, chunk: int, tuners: Sequence[int],
              step: int) -> tuple[PyTree, PyTree]:
    """(the `restart_draws` points of `tuners` at `step`, `outer.init` at each), numpy, a leading
    axis of len(tuners); the init run by `initial_states` on the cohort's first chunk (its program
    compiled already)."""
    z = restart_draws(space, key, tuners, step)
    return z, initial_states(outer, z, chunk)


def _restarted_without_good(cohort: Cohort, carry: tuple, ok: np.ndarray, step: int) -> tuple:
    """`carry`, the step's (z, z_good, opt_state), with the z of each tuner that has no good iterate
    and whose step was not finite (the program backed it off towards its start, where it failed)
    set instead to its `restart_draws` point, a restart, and its optimiser state to `outer.init`
    there: exact, as no update was ever applied to it, and what an optimiser keeping a copy of the
    iterate (schedule-free) needs, else its next step would land beside the start that failed. Its
    z_good stays as the program kept it (meaningless until a step is finite). Every other row is the
    program's, unchanged."""
    rows = np.flatnonzero(~cohort.good & ~ok)
    if not len(rows):
        return carry
    for tuner in cohort.tuners[rows]:
        cohort.without_good.setdefault(int(tuner), False)
    targets, states = cohort.restart(cohort.tuners[rows], step)

    def restarted(new: np.ndarray, target: np.ndarray) -> np.ndarray:
        new = np.array(new)
        new[rows] = np.asarray(target).astype(new.dtype)
        return new

    z, z_good, opt_state = carry
    return jax.tree.map(restarted, z, targets), z_good, jax.tree.map(restarted, opt_state, states)


def halve(cohorts: Sequence[Cohort]) -> None:
    """Successive halving across cohorts: the better ceil(n/2) of the n live tuners go on, ranked
    by their latest validation loss (a non-finite one last; ties to the lower id)."""
    live = [(c.latest[int(t)], int(t)) for c in cohorts for t in c.tuners]
    keep = {t for _, t in sorted(live, key=lambda vt: (vt[0] if math.isfinite(vt[0]) else math.inf, vt[1]))
            [:-(-len(live) // 2)]}
    for c in cohorts:
        c.keep(keep)


def drive(cohorts: Sequence[Cohort], *, steps: int, key: Key, resample_key: bool, recorder: TrialRecorder,
          halving: int | None = None, number: int = 0, checkpoint: dict | None = None) -> None:
    """`steps` outer steps of every cohort, then each live tuner's final iterate scored; step by
    step across cohorts, halving every `halving` steps. Trials are numbered from `number`.

    With `resample_key` the training key of step s < `steps` is `fold_in(key, s)` (a fresh key per
    step, the same for every tuner), else `key` itself (the deterministic function the baselines
    search). The final scoring (step `steps`) always trains with `key`: its trials are values of
    that function, reproduced by `objective(hparams, key)` and comparable with a search's, where a
    step's trial under `resample_key` is a value on its own key (the minimum over those is biased
    low by the keys' noise; `Result.best_trial` picks among the trials on `key` alone). It costs what
    a step costs either way.
    After each step (and its halving) the recorder commits the step's trials with the cohorts'
    state (`cohort_state`); a stored `checkpoint` ({"step", "number", "state"}) restores that state
    and goes on from the next step, as if never interrupted. Tuners with no good iterate restart at
    `restart_draws` after a non-finite step, and the call then warns once (`NO_GOOD_START`).
    A method whose estimate is random (`Method.random_estimate`: ES, PES) draws its noise at step s
    from `step_noise_key(key, s, resample_key)`, fresh at every step, the same for every tuner.
    """
    start = 0
    if checkpoint is not None:
        restore_cohorts(cohorts, checkpoint["state"])
        start, number = checkpoint["step"] + 1, checkpoint["number"]
    for step in range(start, steps + 1):
        final = step == steps
        step_key = jax.random.fold_in(key, step) if resample_key and not final else key
        noise_key = functools.cache(lambda s=step: step_noise_key(key, s, resample_key))
        for cohort in cohorts:
            if len(cohort.tuners):
                number = _step(cohort, step_key, noise_key, final, number, recorder, step)
        if halving and not final and (step + 1) % halving == 0 and sum(len(c.tuners) for c in cohorts) > 1:
            halve(cohorts)
        recorder.report(checkpoint=lambda s=step, n=number: {"step": s, "number": n, "state": cohort_state(cohorts)})
    _warn_without_good(cohorts)


def step_noise_key(key: Key, step: int, resample_key: bool) -> Key:
    """The key a method with `random_estimate` (ES, PES) draws its noise from at outer step `step`
    of a call with training key `key`: a different one at every step, so the steps' estimates are
    independent and their errors average out along the descent (with one key for all steps, every
    estimate of ES with n samples would lie in the span of the same n directions).

    Without `resample_key` the training key stays `key` (one deterministic objective) and the noise
    moves on alone: `perturbation_key(key)` at step 0, what `hg.hypergradient(objective, h, key)`
    draws (a tune's first step is that hypergradient), and `fold_in(perturbation_key(key), step)`
    after. With `resample_key` step s trains with `fold_in(key, s)`, and its noise is that key's
    `perturbation_key`, as `hg.hypergradient` on the step's key draws it. A function of the key and
    the step alone: a resumed call draws the same noise. Cost: a `fold_in` or two on the host."""
    if resample_key:
        return perturbation_key(jax.random.fold_in(key, step))
    noise = perturbation_key(key)
    return noise if step == 0 else jax.random.fold_in(noise, step)


def _warn_without_good(cohorts: Sequence[Cohort]) -> None:
    """Warns once (`NO_GOOD_START`) when tuners of `cohorts` restarted with no good iterate."""
    without = {tuner: found for cohort in cohorts for tuner, found in cohort.without_good.items()}
    if without:
        total = sum(len(c.latest) for c in cohorts)  # the tuners that stepped in this call, halved ones included
        warnings.warn(NO_GOOD_START.format(count=len(without), total=total,
                                           ids=", ".join(str(t) for t in sorted(without)),
                                           found=sum(without.values())), RuntimeWarning, stacklevel=users_stacklevel())


def cohort_state(cohorts: Sequence[Cohort]) -> list[dict[str, Any]]:
    """What resuming needs of each cohort, on the host: the live tuner ids, the leaves of
    (z, last good z, outer-optimiser state), with the tree structure as text (checked on restore),
    and whether each live tuner has a good iterate ("good"). Keys are stateless (a function of the
    step, as are the restarts), so nothing else is needed."""
    out = []
    for cohort in cohorts:
        leaves, treedef = jax.tree.flatten(cohort.carry)
        out.append({"tuners": np.asarray(cohort.tuners, dtype=np.int64), "tree": str(treedef),
                    "carry": [np.asarray(leaf) for leaf in leaves], "good": np.asarray(cohort.good, dtype=bool)})
    return out


def restore_cohorts(cohorts: Sequence[Cohort], state: Sequence[dict[str, Any]]) -> None:
    """Puts `cohort_state`'s record back: the live tuners kept (as halving left them) and their
    iterates, optimiser states and good-iterate flags set. A record stored before the flags were
    (`_good_of_old_record`) has them inferred. Raises `ValueError` when the record does not fit the
    cohorts."""
    if len(state) != len(cohorts):
        raise ValueError(f"a checkpoint of {len(state)} cohorts cannot resume {len(cohorts)}; the study's "
                         "checkpoint was edited or damaged")
    for cohort, saved in zip(cohorts, state):
        tuners = [int(t) for t in np.asarray(saved["tuners"]).reshape(-1)]
        if not set(tuners) <= {int(t) for t in cohort.tuners}:
            raise ValueError(f"a checkpoint names tuners {tuners} outside the cohort's {cohort.tuners.tolist()}")
        if tuners != [int(t) for t in cohort.tuners]:
            cohort.keep(set(tuners))
        leaves, treedef = jax.tree.flatten(cohort.carry)
        saved_leaves = [np.asarray(a) for a in saved["carry"]]
        if (str(treedef) != saved["tree"] or len(leaves) != len(saved_leaves)
                or any(np.shape(a) != np.shape(b) or np.asarray(a).dtype != b.dtype
                       for a, b in zip(leaves, saved_leaves))):
            raise ValueError("a checkpoint's iterates or outer-optimiser state do not fit this call's (another "
                             "outer optimiser or space?); the study's checkpoint was edited or damaged")
        cohort.carry = jax.tree.unflatten(treedef, saved_leaves)
        good = saved.get("good")
        cohort.good = _good_of_old_record(cohort.carry) if good is None else np.asarray(good, dtype=bool).reshape(-1)
        if cohort.good.shape != (len(cohort.tuners),):
            raise ValueError(f"a checkpoint's good-iterate flags {cohort.good.tolist()} do not fit its "
                             f"{len(cohort.tuners)} live tuners; the study's checkpoint was edited or damaged")


def _good_of_old_record(carry: tuple) -> np.ndarray:
    """Per tuner, whether it has a good iterate, for a checkpoint stored before the flag was: one
    whose z equals its z_good bitwise has none. Before, a tuner whose steps all failed was left at
    its start, which was also its z_good; a tuner with a good iterate has a z apart from it unless
    its last step's update was exactly zero (then this reads it as having none, and only its next
    non-finite step, which the old rule left where it was, restarts it at a draw instead)."""
    z, z_good, _ = carry
    same = [np.all((np.asarray(a) == np.asarray(b)).reshape(np.shape(a)[0], math.prod(np.shape(a)[1:])), axis=1)
            for a, b in zip(jax.tree.leaves(z), jax.tree.leaves(z_good))]
    return ~np.logical_and.reduce(same)
