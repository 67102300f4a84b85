"""`hypergradient`: the validation loss and its gradient with respect to the hyperparameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import _compile
from hypergrad._types import HParams, Key, Scalar
from hypergrad.methods.base import Method
from hypergrad.methods.reverse import Reverse
from hypergrad._checks import check_key
from hypergrad._indexing import check_objective_runs, check_schedules_in_bounds, unread_warned_once
from hypergrad.objective import Objective, as_hparams

__all__ = ["hypergradient", "check_method", "check_method_output", "check_differentiable_hparams"]


def check_method(method: Any) -> Method:
    """`method`, checked to be an `hg.Method` (`ValueError`) that can be hashed (`TypeError`,
    `_compile.check_hashable`: programs and FLOP counts are keyed on it), before anything is traced
    or compiled. Cost: an isinstance and a hash."""
    if not isinstance(method, Method):
        raise ValueError(
            f"method={method!r} is not a hypergradient method; pass a strategy object such as "
            "hg.Reverse() or hg.Reverse(checkpoint_every=20)"
        )
    _compile.check_hashable(method)
    return method


def check_objective(objective: Any) -> Objective:
    if not isinstance(objective, Objective):
        raise ValueError(
            f"objective must be an hg.Objective, got {type(objective).__name__}; build one with "
            "hg.Objective(problem, optimizer, num_steps)"
        )
    return objective


def check_differentiable_hparams(hparams: HParams, argname: str = "hparams") -> None:
    """Gradient methods need floating-point hyperparameters. An integer is either a `Choice`'s option
    that slipped in or a real value written without a decimal point (`{"lr": 1}`): with no space to
    tell them apart, both are refused and the message names both fixes (`tune`, which knows its
    space is continuous, takes an integer start as its float before calling this)."""
    for name, value in hparams.items():
        if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise ValueError(
                f"{argname}[{name!r}] has dtype {jnp.result_type(value)}: a gradient method cannot "
                "differentiate a discrete hyperparameter (an hg.Choice); pass a float, or search it "
                "with hg.random_search / hg.grid_search (a whole number meant as a real value: give it "
                "as a float, 1.0 rather than 1)"
            )


def hypergradient(
    objective: Objective, hparams: HParams, key: Key, *, method: Method = Reverse()
) -> tuple[Scalar, HParams]:
    """The validation loss and its gradient with respect to `hparams`.

    Called with concrete values, it runs one program compiled once per (objective, method,
    hyperparameter shapes) and reused for new values and keys. Called under a JAX transformation
    (jit, vmap, grad), it is traced inline like any pure function. Under `jax_debug_nans` a NaN
    inside that compiled program is reported as `jit(program)` only (JAX's de-optimised rerun,
    which names the line, exists for `jax.jit` functions, not for programs compiled ahead of time):
    to find the line, call `objective(hparams, key)` (or `jax.grad` of it) with `jax_debug_nans` on.

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
    with unread_warned_once():  # the unread-hyperparameter warning once per call, checked before or not
        (value, _), grads = value_scores_and_grad(objective, hparams, key, method)
    return value, grads


def value_scores_and_grad(objective: Objective, hparams: HParams, key: Key, method: Method):
    """((value, scores), grads) from the cached compiled program (or inline when traced).

    The objective's checks (`check_objective_runs`, which compiles a small probe for array
    hyperparameters) come after the method's program is traced, which checks its output
    (`value_and_grad_fn`), and before that program compiles: a method of one's own returning the
    wrong structure is refused before anything compiles, and an objective's fault still before the
    program's compilation (tracing it raises the same errors as the objective's own trace). Outside
    a transformation it warns of the hyperparameters the objective never reads on every call (the
    names kept with the check, found done or not: no trace added), once within `unread_warned_once()`."""
    data = objective.problem.data
    if _compile.is_traced((hparams, key, data)):
        out = value_and_grad_fn(objective, method)(hparams, key, data)
        _check_objective(objective, hparams)
        return out
    executable, _ = compiled_value_and_grad(objective, method, (hparams, key, data),
                                            before_compile=lambda: _check_objective(objective, hparams))
    _check_objective(objective, hparams)  # a program found in memory: remembered per shapes, so free once made
    return executable(hparams, key, data)


def _check_objective(objective: Objective, hparams: HParams) -> None:
    """`check_objective_runs`; under a transformation, where the objective may close over tracers,
    the schedules only (at zeros of the traced values' shapes), when the optimiser runs on its own."""
    if not _compile.is_traced(hparams):
        check_objective_runs(objective, hparams, warn_cached=True)
    else:
        check_schedules_in_bounds(objective, hparams)


def value_and_grad_fn(objective: Objective, method: Method):
    """The pure program `(hparams, key, data) -> ((value, scores), grads)` of `method` on
    `objective`: what `hypergradient` compiles and what compute accounting counts.

    Its output is checked as it is traced (`check_method_output`), so a method returning the wrong
    structure is refused by the first trace (the program's, or the FLOP count's that tune and
    hybrid_search make before compiling their outer step), before anything is compiled from it.
    Under cross-validation each fold's output is checked so before the folds are averaged
    (`Method.value_and_grad`'s `check_fold`), then the average. Cost: a comparison of shapes and
    dtypes per trace (and per fold's trace), nothing in the compiled program."""
    def program(h, k, d):
        out = method.value_and_grad(objective, h, k, d,
                                    check_fold=lambda fold_out: check_method_output(method, h, fold_out, fold=True))
        return check_method_output(method, h, out)

    return program


def check_method_output(method: Method, hparams: HParams, out: Any, fold: bool = False) -> Any:
    """`out`, the output of `method.value_and_grad` at `hparams` (traced or concrete), checked from
    its shapes and dtypes alone: a pair ((value, scores), grads) with value a floating-point
    scalar, scores a dict holding "val_loss" and grads shaped like `hparams` (its names, shapes and
    dtypes), as every caller reads it. Raises `ValueError` naming the method's class, what is wrong
    (expected against got) and the fix; otherwise what a hypergradient, tune or hybrid_search would
    fail on later, deep inside JAX's transformations or as a bare KeyError, or accept silently
    (hg.hypergradient returning extra or missing gradients). `fold`: `out` is one cross-validation
    fold's, before the folds are averaged (the message says so). Cost: Python comparisons of shapes."""
    fault = _output_fault(out, hparams)
    if fault is not None:
        name = type(method).__name__
        where = " on a cross-validation fold (checked before the folds are averaged)" if fold else ""
        raise ValueError(
            f"method={method!r} returned the wrong structure{where}: {fault}. {name}.differentiate(loop, hparams, key) "
            "must return ((value, scores), grads): value the validation loss (a floating-point scalar), scores a "
            "dict holding 'val_loss' (e.g. {'val_loss': value}) and grads a dict with exactly the names of hparams, "
            f"each of its hyperparameter's shape and dtype (as jax.grad gives them). Fix {name}.differentiate so "
            "that it returns that, e.g. jax.value_and_grad(f, has_aux=True)(hparams) for "
            "f = lambda h: loop.readout(loop.train(h, key), h)")
    return out


def _output_fault(out: Any, hparams: HParams) -> str | None:
    """What is wrong with a method's output `out` (module `check_method_output`), or None."""
    if not (_is_pair(out) and _is_pair(out[0])):
        return f"it returned {_described(out)}, not a pair ((value, scores), grads)"
    (value, scores), grads = out
    if np.shape(value) != () or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return f"value is {_described(value)}, expected a floating-point scalar (shape ())"
    if not isinstance(scores, Mapping) or "val_loss" not in scores:
        got = sorted(scores) if isinstance(scores, Mapping) else _described(scores)
        return f"scores is {got}, expected a dict holding 'val_loss' (the validation loss)"
    return _grads_fault(grads, hparams)


def _grads_fault(grads: Any, hparams: HParams) -> str | None:
    """What is wrong with `grads` against `hparams` (names, structure, each leaf's shape and dtype), or None."""
    if isinstance(grads, Mapping):
        missing, extra = sorted(n for n in hparams if n not in grads), sorted(n for n in grads if n not in hparams)
        if missing or extra:
            return (f"grads has the names {sorted(grads)}, expected those of hparams {sorted(hparams)} "
                    f"(missing {missing}, unexpected {extra})")
    if jax.tree.structure(grads) != jax.tree.structure(hparams):
        return f"grads is {_described(grads)}, expected the structure of hparams {_described(hparams)}"
    for (path, grad), value in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(hparams)):
        if np.shape(grad) != np.shape(value) or jnp.result_type(grad) != jnp.result_type(value):
            where = jax.tree_util.keystr(path)
            return (f"grads{where} is {_described(grad)}, expected {_described(value)} (the shape and dtype of "
                    f"hparams{where})")
    return None


def _is_pair(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2


class _Shown(str):
    """A string that reprs as itself: a leaf written into a container's repr without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _described(tree: Any) -> str:
    """`tree` with each array leaf written as its dtype and shape (float32[3]), for messages."""
    def leaf(x: Any) -> str:
        if not hasattr(x, "shape") and not isinstance(x, (int, float, complex, bool)):
            return _Shown(type(x).__name__)
        return _Shown(f"{jnp.result_type(x)}[{','.join(map(str, np.shape(x)))}]")
    return repr(jax.tree.map(leaf, tree, is_leaf=lambda x: not isinstance(x, (tuple, list, dict))))


def compiled_value_and_grad(objective: Objective, method: Method, args: tuple,
                            before_compile: Callable[[], Any] | None = None):
    """(executable, compile seconds) of `method.value_and_grad` on `objective`; `before_compile`
    runs after its trace (`_compile.compiled`), only when the program is compiled now."""
    return _compile.compiled(("hypergradient", objective, method), lambda: value_and_grad_fn(objective, method),
                             args, before_compile, static_names=("method",))
