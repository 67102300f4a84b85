"""The hybrid strategy: discrete choices searched, continuous hyperparameters descended.

For each configuration of the space's `Choice`s (all of them, or a random sample), `hybrid_search`
runs gradient tuning (as `hg.tune`) of the continuous hyperparameters, with the discrete values held
fixed. Configurations that share a program (the same options of every grouped structural choice;
numeric choices and masked structural ones are traced values) are tuned together: one compiled
outer step, vmapped over the configurations, per program (see `hypergrad.structure` for how
masking and grouping are decided).

Budget: `budget` training-run equivalents are split evenly over the configurations; each gets
`steps` outer steps plus one scoring of its final iterate, each costing one hypergradient
(`hypergradient_flops / run_flops` runs, about 3 for `Reverse`). The trials table holds one row per
(configuration, outer step), produced step by step across configurations, so `hg.compare` sees
the best value reached within any budget.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import _compile
from hypergrad._checks import check_count
from hypergrad._types import Key
from hypergrad.hypergradient import check_method, check_objective
from hypergrad.methods import Method, Reverse
from hypergrad.objective import Objective, check_key
from hypergrad.results import COMPLETE, FAIL, SKIPPED, Result, Trial, TrialRecorder
from hypergrad.accounting import hypergradient_flops, run_flops
from hypergrad.search import check_space
from hypergrad.space import SAMPLE_STREAM, Choice, Space
from hypergrad.structure import Masked, Structured, check_family, group_rows, measured_rates, plan
from hypergrad.tune import DEFAULT_OUTER, outer_step_fn

__all__ = ["hybrid_search", "configurations"]


def configurations(space: Space, key: Key, num_configs: int | str) -> dict[str, np.ndarray]:
    """Settings of the space's choices: every combination ("grid") or `num_configs` distinct ones
    drawn uniformly without replacement. Structural choices hold option indices."""
    choices = space.choices
    options = [space[name].grid_values(1) for name in choices]
    combos = list(itertools.product(*options))
    if num_configs != "grid":
        num_configs = check_count(num_configs, "configs")
        if num_configs < len(combos):
            picked = jax.random.choice(key, len(combos), (num_configs,), replace=False)
            combos = [combos[i] for i in np.sort(np.asarray(picked))]
    return {name: np.asarray([c[i] for c in combos]) for i, name in enumerate(choices)}


def hybrid_search(
    objective: Objective | Structured,
    space: Space,
    key: Key,
    *,
    budget: float,
    configs: int | str = "grid",
    method: Method = Reverse(),
    outer: optax.GradientTransformation | None = None,
    log: Any = None,
    progress: Any = False,
) -> Result:
    """Searches the discrete choices of `space` and gradient-tunes its continuous hyperparameters.

    Args:
        objective: an objective, or an `hg.Structured` family for structural choices.
        space: at least one `Choice` and at least one `Uniform`/`LogUniform`.
        key: training key shared by every configuration (common random numbers); configurations
            are sampled from a key folded from it.
        budget: total compute in training-run equivalents, split evenly over the configurations.
        configs: "grid" for every combination of the choices, or a number to sample.
        method: hypergradient method of the inner tuning (default `hg.Reverse()`).
        outer: optax optimiser over the unconstrained continuous coordinates (default Adam 0.05),
            started from the centre of the continuous space.
        log, progress: as in `hg.tune`.

    Returns:
        a `Result` with one trial per (configuration, outer step), the discrete options in its
        hparams; `info` holds the configurations, steps per configuration and the structure plan.
    """
    check_space(space)
    family = objective if isinstance(objective, Structured) else None
    if family is None:
        check_objective(objective)
    check_family(objective, space)
    check_method(method)
    key = check_key(key)
    continuous = Space({n: d for n, d in space.items if not isinstance(d, Choice)}) if any(
        not isinstance(d, Choice) for _, d in space.items) else None
    if not space.choices:
        raise ValueError("hybrid_search: the space has no hg.Choice to search; use hg.tune for continuous "
                         "hyperparameters alone")
    if continuous is None:
        raise ValueError("hybrid_search: the space has no Uniform/LogUniform hyperparameter to descend; "
                         "use hg.grid_search or hg.random_search for choices alone")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget={budget!r} must be a positive number of training-run equivalents")
    if configs != "grid" and not isinstance(configs, (int, np.integer)) or isinstance(configs, bool):
        raise ValueError(f"configs={configs!r} must be 'grid' or a positive number of configurations to sample")
    outer = DEFAULT_OUTER if outer is None else outer
    if not isinstance(outer, optax.GradientTransformation):
        raise ValueError(f"outer={outer!r} must be an optax.GradientTransformation, e.g. optax.adam(0.05)")

    settings = configurations(space, jax.random.fold_in(key, SAMPLE_STREAM), configs)
    num = len(next(iter(settings.values())))
    if budget < 2 * num:  # a hypergradient costs at least one run: refuse before compiling anything
        raise ValueError(f"budget={budget} runs cannot buy two hypergradients for each of {num} configurations "
                         f"(at least {2 * num} runs, about {6 * num} for Reverse); raise it or sample fewer configs")
    if family is not None:
        decisions = plan(family, space, settings, key, rates=measured_rates())
        groups = [(config, family.objective(config), rows) for config, rows in group_rows(space, settings, decisions)]
        structure = {name: d.to_dict() for name, d in decisions.items()}
    else:
        groups, structure = [({}, objective, np.arange(num))], {}

    dtype = jnp.zeros(()).dtype
    z0 = jax.tree.map(lambda a: jnp.asarray(a, dtype), continuous.unconstrain(continuous.centre()))
    programs = []
    for config, group_objective, rows in groups:
        fixed = {name: jnp.asarray(np.asarray(settings[name])[rows]) for name in space.choices
                 if name not in config or isinstance(config[name], Masked)}
        first_fixed = jax.tree.map(lambda a: a[0], fixed)
        method.check(group_objective.with_fixed(first_fixed), continuous.constrain(z0))
        z = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(rows), *a.shape)), z0)
        opt_state = jax.vmap(outer.init)(z)
        args = (z, z, opt_state, fixed, key, group_objective.problem.data)
        executable, seconds = _compile.compiled(
            ("hybrid", group_objective, continuous, method, outer),
            lambda o=group_objective: _batched_step(o, continuous, method, outer), args)
        hparams0 = {**continuous.constrain(z0), **first_fixed}
        unit = run_flops(group_objective, hparams0, key)
        step = hypergradient_flops(group_objective, method, continuous.constrain(z0), key, held=first_fixed)
        programs.append({"config": config, "rows": rows, "executable": executable, "args": list(args),
                         "compile_seconds": seconds, "unit": unit, "step_flops": step})

    cost = sum(p["step_flops"] / p["unit"] * len(p["rows"]) for p in programs)  # runs per step, all configs
    evaluations = math.floor(budget / cost + 1e-9)
    if evaluations < 2:
        raise ValueError(
            f"budget={budget} runs buys {evaluations} hypergradient(s) per configuration ({num} configurations "
            f"at {cost / num:.2f} runs each); give at least {2 * cost:.1f} runs or fewer configs")
    steps = evaluations - 1

    recorder = TrialRecorder(f"hybrid[{method}]", log, progress, total=evaluations * num)
    number = 0
    try:
        for step_index in range(evaluations):
            for program in programs:
                began = time.perf_counter()
                z, z_good, opt_state, fixed, k, data = program["args"]
                out = jax.block_until_ready(program["executable"](z, z_good, opt_state, fixed, k, data))
                seconds = (time.perf_counter() - began) / len(program["rows"])
                if step_index < steps:  # the last evaluation scores the final iterate; its update is dropped
                    program["args"][:3] = out[:3]
                report = jax.device_get(out[3])
                for i, row in enumerate(program["rows"]):
                    scores = {name: float(v[i]) for name, v in report["scores"].items()}
                    value = scores["val_loss"]
                    if step_index == steps:
                        state = COMPLETE if math.isfinite(value) else FAIL
                    else:
                        state = COMPLETE if report["ok"][i] else (SKIPPED if report["loss_ok"][i] else FAIL)
                    hparams = {n: np.asarray(v[i]) for n, v in report["hparams"].items()}
                    hparams.update(space.options_of({n: np.asarray(settings[n])[row] for n in space.choices}))
                    recorder.add(Trial(number=number, hparams=hparams, value=value, scores=scores, state=state,
                                       flops=program["step_flops"], seconds=seconds, run_flops=program["unit"],
                                       grad_norm=float(report["grad_norm"][i])))
                    number += 1
                recorder.report()
    finally:
        recorder.close()
    unit = sum(p["unit"] * len(p["rows"]) for p in programs) / num
    info = {"method": repr(method), "outer": repr(outer), "configs": num, "steps": steps, "budget": budget,
            "programs": len(programs), "structure": structure}
    return Result(f"hybrid[{method}]", tuple(recorder.trials), unit,
                  sum(p["compile_seconds"] for p in programs), info)


def _batched_step(objective: Objective, continuous: Space, method: Method, outer: optax.GradientTransformation):
    """The outer step of `hg.tune`, vmapped over configurations (their z, state and fixed values)."""

    def one(z, z_good, opt_state, fixed, key, data):
        inner = objective.with_fixed(fixed)
        return outer_step_fn(inner, continuous, method, outer)(z, z_good, opt_state, key, data)

    return jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))
