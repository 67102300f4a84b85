"""The outer loop: any optax optimiser over unconstrained hyperparameters.

`tune` descends the validation loss in the unconstrained coordinates z of the space
(`hparams = space.constrain(z)`), so every iterate stays inside its bounds. Each outer step is one
compiled program: constrain z, ask the method for the loss and its hypergradient, pull the gradient
back through the bijection (a VJP of `space.constrain`), and apply the outer optimiser's update.

A step whose loss or hypergradient is not finite changes nothing but the position: the update is
skipped and z backs off halfway towards the last iterate whose loss and hypergradient were finite
(the outer optimiser's state is kept). Such steps are recorded ("fail" when the loss diverged,
"skipped" when only the hypergradient did), never chosen as best, and `tune` never returns NaN.

Every outer step is a trial of the result: its value is the validation loss at the step's
hyperparameters (before the update), with test scores from the same trained parameters. After the
last step, the final iterate is evaluated once more. The best trial is the one with the lowest
validation loss, and its test loss is what `compare` reports.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import _compile, accounting
from hypergrad._checks import check_count
from hypergrad._tree import all_finite
from hypergrad._types import HParams, Key
from hypergrad.hypergradient import check_differentiable_hparams, check_method, check_objective
from hypergrad.methods.base import Method
from hypergrad.methods.reverse import Reverse
from hypergrad.objective import Objective, as_hparams, check_key
from hypergrad.results import COMPLETE, FAIL, SKIPPED, Result, Trial, TrialRecorder
from hypergrad.accounting import run_flops
from hypergrad.search import check_space
from hypergrad.space import Space

__all__ = ["tune", "tune_step_cost", "hypergradient_flops", "DEFAULT_OUTER", "outer_step_fn", "check_outer",
           "step_trial"]

DEFAULT_OUTER = optax.adam(0.05)
"""Adam with step 0.05 in unconstrained coordinates (one object, so its program is reused)."""


def outer_step_fn(objective: Objective, space: Space, method: Method, outer: optax.GradientTransformation):
    """The pure outer step: (z, z_good, opt_state, key, data) -> (z, z_good, opt_state, report)."""

    def step(z, z_good, opt_state, key, data):
        hparams, pullback = jax.vjp(space.constrain, z)
        (value, scores), grads = method.value_and_grad(objective, hparams, key, data)
        (grad_z,) = pullback(grads)
        loss_ok = jnp.isfinite(value)
        ok = loss_ok & all_finite(grad_z)
        updates, new_state = outer.update(grad_z, opt_state, z)
        moved = optax.apply_updates(z, updates)
        # Skip a non-finite step: keep the optimiser state, back off halfway to the last good z.
        backed_off = jax.tree.map(lambda a, b: 0.5 * (a + b), z, z_good)
        new_z = jax.tree.map(lambda m, b: jnp.where(ok, m, b), moved, backed_off)
        new_good = jax.tree.map(lambda a, g: jnp.where(ok, a, g), z, z_good)
        opt_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, opt_state)
        report = {"hparams": hparams, "scores": scores, "grad_norm": optax.tree_utils.tree_norm(grad_z),
                  "loss_ok": loss_ok, "ok": ok}
        return new_z, new_good, opt_state, report

    return step


def check_outer(outer: Any) -> optax.GradientTransformation:
    """`outer`, or `DEFAULT_OUTER` for None; a `ValueError` unless it is an optax transformation."""
    outer = DEFAULT_OUTER if outer is None else outer
    if not isinstance(outer, optax.GradientTransformation):
        raise ValueError(f"outer={outer!r} must be an optax.GradientTransformation, e.g. optax.adam(0.05)")
    return outer


def _check_tune_args(objective: Any, space: Any, method: Any) -> None:
    check_objective(objective)
    check_space(space)
    check_method(method)
    space.check_differentiable(f"tune(method={method!r})")


def _initial_z(space: Space, init: HParams | None) -> dict[str, jax.Array]:
    """The unconstrained start (default float dtype) of `init`, checked strictly inside the bounds,
    or of the space's centre."""
    if init is None:
        init = space.centre()
    else:
        init = as_hparams(init, "init")
        space.check(init, "init")
        check_differentiable_hparams(init, "init")
        for name, value in init.items():
            dist = space[name]
            if not bool(jnp.all((value > dist.lo) & (value < dist.hi))):
                raise ValueError(f"init[{name!r}] lies outside or on the bounds ({dist.lo}, {dist.hi}) of the "
                                 "space; start strictly inside them")
    dtype = jnp.zeros(()).dtype
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), space.unconstrain(init))


def step_trial(number: int, report: dict[str, Any], *, final: bool, flops: float, seconds: float,
               run_flops: float) -> Trial:
    """The trial of one outer step's report (host values of one configuration). The final
    evaluation's update is discarded, so it fails only when its loss does; a step fails when its
    loss is not finite and is skipped when only its hypergradient is not."""
    scores = {name: float(v) for name, v in report["scores"].items()}
    value = scores["val_loss"]
    if final:
        state = COMPLETE if math.isfinite(value) else FAIL
    else:
        state = COMPLETE if report["ok"] else (SKIPPED if report["loss_ok"] else FAIL)
    return Trial(number=number, hparams={k: np.asarray(v) for k, v in report["hparams"].items()}, value=value,
                 scores=scores, state=state, flops=flops, seconds=seconds, run_flops=run_flops,
                 grad_norm=float(report["grad_norm"]))


def _run_outer_loop(executable: Any, carry: tuple, key: Key, data: Any, steps: int, resample_key: bool,
                    recorder: TrialRecorder, flops: float, run_flops: float) -> None:
    """`steps` outer steps from `carry` = (z, z_good, opt_state), then the final iterate scored by
    the same program (its update discarded: one more hypergradient's compute instead of a second
    compilation); each step's trial goes to `recorder` as it returns."""
    for number in range(steps + 1):
        step_key = jax.random.fold_in(key, number) if resample_key else key
        began = time.perf_counter()
        out = jax.block_until_ready(executable(*carry, step_key, data))
        seconds = time.perf_counter() - began
        if number < steps:
            carry = out[:3]
        recorder.add(step_trial(number, jax.device_get(out[3]), final=number == steps, flops=flops,
                                seconds=seconds, run_flops=run_flops))
        recorder.report()


def hypergradient_flops(objective: Objective, method: Method, hparams: HParams, key: Key) -> float:
    """FLOPs of one hypergradient of `method` (one outer step), counted by `hypergrad.accounting`."""
    return accounting.hypergradient_flops(objective, method, hparams, key)


def tune_step_cost(objective: Objective, space: Space, key: Key, method: Method = Reverse()) -> float:
    """Compute of one outer step of `tune` in training-run equivalents (for budgeting)."""
    check_objective(objective)
    check_space(space)
    space.check_differentiable("tune_step_cost")
    hparams = space.centre()
    return hypergradient_flops(objective, method, hparams, key) / run_flops(objective, hparams, key)


def tune(
    objective: Objective,
    space: Space,
    key: Key,
    *,
    method: Method = Reverse(),
    outer: optax.GradientTransformation | None = None,
    steps: int = 50,
    init: HParams | None = None,
    resample_key: bool = False,
    log: Any = None,
    progress: Any = False,
) -> Result:
    """Gradient-based tuning of the continuous hyperparameters in `space`.

    Cost per outer step: one hypergradient of `method` (about 3 training runs for `Reverse`),
    plus one more for scoring the final iterate. One program is compiled per (objective, space,
    method, outer) and reused by later calls with new values, keys or initial points.

    Args:
        objective: the objective to tune.
        space: the hyperparameters to tune; must hold no `Choice`.
        key: PRNG key for training (initialisation and minibatches).
        method: hypergradient strategy, `hg.Reverse()` by default.
        outer: an optax optimiser over the unconstrained coordinates; default `DEFAULT_OUTER`
            (Adam, 0.05).
        steps: number of outer steps, >= 1.
        init: starting hyperparameters (constrained values, names and shapes of the space);
            default the centre of the space.
        resample_key: False trains every step with `key` (the same deterministic function that
            the baselines search); True uses `fold_in(key, step)` per step (a stochastic
            hypergradient, less prone to fitting one seed's noise).
        log: optional JSON-lines path; each step is appended as it is produced.
        progress: True to print a line per step to stderr, or a callable(str).

    Returns:
        a `Result` with one trial per outer step plus the final iterate.
    """
    _check_tune_args(objective, space, method)
    steps, key, outer = check_count(steps, "steps"), check_key(key), check_outer(outer)
    z = _initial_z(space, init)
    method.check(objective, space.constrain(z))
    opt_state = outer.init(z)
    data = objective.problem.data

    executable, compile_seconds = _compile.compiled(
        ("tune", objective, space, method, outer), lambda: outer_step_fn(objective, space, method, outer),
        (z, z, opt_state, key, data))
    hparams0 = space.constrain(z)
    unit = run_flops(objective, hparams0, key)
    step_flops = hypergradient_flops(objective, method, hparams0, key)

    recorder = TrialRecorder(f"tune[{method}]", log, progress, total=steps + 1)
    try:
        _run_outer_loop(executable, (z, z, opt_state), key, data, steps, resample_key, recorder, step_flops, unit)
    finally:
        recorder.close()
    return Result(f"tune[{method}]", tuple(recorder.trials), unit, compile_seconds,
                  {"method": repr(method), "outer": repr(outer), "steps": steps, "resample_key": resample_key})
