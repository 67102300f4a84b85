"""`tune`: gradient descent of the validation loss over the hyperparameters, by one tuner or many.

`tune` descends the validation loss in the unconstrained coordinates z of the space
(`hparams = space.constrain(z)`), so every iterate stays inside its bounds. With `population=N`,
N tuners run together, each outer step one vmapped program (see `hypergrad.outer`, the driver this
module and `hg.hybrid_search` share, for the outer step, non-finite steps, trials and halving).

Starting points: the centre of the space (the default for one tuner), N settings sampled as random
search samples them (the default for a population: with the same key, the first N settings random
search would try), given (batched) hyperparameters, or, with `warmup=M`, the N best of M random-search
trials spent first (explore, then descend). The warm-up's trials come first in the result and count
in its compute.

Non-finite steps: a step whose loss, hypergradient or outer update is not finite (or whose hypergradient
is finite but too large for the outer optimiser: its norm overflows) applies no update and backs the
tuner off halfway to its last good iterate. A tuner with none yet (its start diverged) restarts
instead at a fresh point drawn from the space after each such step, with a warning: until one step
is finite it is random search, one trial per step (`hypergrad.outer`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import accounting
from hypergrad._indexing import check_objective_runs, check_schedules_in_bounds, unread_warned_once
from hypergrad._checks import (check_count, check_key, check_log, check_log_apart, check_progress, is_int_at_least,
                               users_stacklevel)
from hypergrad._compile import refuse_disabled_jit
from hypergrad._processes import checked_together
from hypergrad._types import HParams, Key
from hypergrad.hypergradient import check_differentiable_hparams, check_method, check_objective
from hypergrad.methods.base import Method
from hypergrad.methods.reverse import Reverse
from hypergrad.objective import Objective, as_hparams
from hypergrad.outer import (DEFAULT_OUTER, LIVE, batched_starts, check_outer, chunk_rows, cohort_chunk, drive,
                             make_cohort, outer_identity, outer_step_fn, step_trial, trials_of)
from hypergrad.results import COMPLETE, Result, TrialRecorder, with_setup
from hypergrad.accounting import run_flops
from hypergrad.search import check_space, evaluate_settings
from hypergrad.space import SAMPLE_STREAM, Space
from hypergrad.structure import Structured
from hypergrad.store import StudyWriter, finished_result, fingerprint, fingerprint_format, stored_call, studying

__all__ = ["tune", "tune_step_cost", "hypergradient_flops", "DEFAULT_OUTER", "outer_step_fn", "check_outer",
           "step_trial"]

_INITS = ("sample", "centre")


def _check_tuned_objective(objective: Any) -> None:
    """`check_objective`, naming `hg.hybrid_search` for a `Structured` family, which tune cannot take
    (its structural choices are not descended) and hybrid_search searches (each configuration's
    continuous hyperparameters descended)."""
    if isinstance(objective, Structured):
        raise ValueError("objective must be an hg.Objective, got Structured: tune descends one objective's "
                         "continuous hyperparameters; search a Structured family with hg.hybrid_search(family, "
                         "space, key, budget=...), which descends them for each configuration of its structural "
                         "choices (or with hg.random_search or hg.grid_search)")
    check_objective(objective)


def _check_tune_args(objective: Any, space: Any, method: Any, hold: Any = None) -> tuple[str, ...]:
    """Refuses a bad objective, space, method or `hold=`; returns the held names (`_checked_hold`)."""
    _check_tuned_objective(objective)
    check_space(space)
    check_method(method)
    space.check_differentiable(f"tune(method={method!r})")
    return _checked_hold(hold, space)


def _check_population_args(population: Any, init: Any, warmup: Any, halving: Any,
                           chunk_size: Any) -> tuple[int, int | None, int | None, int | str | None]:
    """Raises `ValueError` for a bad population, warm-up, halving or chunk argument; returns
    (population, warmup, halving, chunk_size) with numpy ints as Python ints, so that the rest of
    the call reads one form: a study's fingerprint describes `np.int64(4)` apart from `4`, and a
    chunk size is passed on as an int."""
    if not is_int_at_least(population):
        raise ValueError(f"population={population!r} must be an int >= 1: the number of tuners run together "
                         "(1 is a lone tuner; try population=16)")
    check_count(population, "population")
    if isinstance(init, str) and init not in _INITS:
        raise ValueError(f"init={init!r} must be 'sample', 'centre', hyperparameters (batched with a leading "
                         "axis of population for several tuners) or None")
    if warmup is not None:
        if not is_int_at_least(warmup, population):
            raise ValueError(f"warmup={warmup!r} random-search trials cannot start population={population} tuners "
                             f"from the {population} best of them; give warmup >= population (e.g. "
                             f"warmup={4 * population}), or warmup=None")
        check_count(warmup, "warmup")
        if init is not None:
            raise ValueError("tune: give init= or warmup=, not both (warmup starts the tuners from the best "
                             "warm-up trials)")
    if halving is not None:
        if not is_int_at_least(halving):
            raise ValueError(f"halving={halving!r} must be an int >= 1: the outer steps between rounds of "
                             "successive halving (each keeps the better half of the tuners), or None")
        if population < 2:
            raise ValueError(f"halving={halving} needs a population of at least 2 tuners (population={population})")
    if chunk_size is not None and not (isinstance(chunk_size, str) and chunk_size == LIVE) \
            and not is_int_at_least(chunk_size):
        raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1 (tuners per vmapped call), "
                         f"{LIVE!r} (sized to the live tuners, a program per halving round) or None")
    if chunk_size is not None and not isinstance(chunk_size, str):
        chunk_size = int(chunk_size)
    return int(population), _optional_int(warmup), _optional_int(halving), chunk_size


def _checked_resample_key(resample_key: Any) -> bool:
    """`resample_key` as a Python bool (np.bool_(True) is described apart from True in a
    fingerprint); a `ValueError` for anything but a bool."""
    if not isinstance(resample_key, (bool, np.bool_)):
        raise ValueError(f"resample_key={resample_key!r} must be True (a fresh training key per outer step) or "
                         "False (every step trains with key)")
    return bool(resample_key)


def _warmup_chunk(warmup: int | None, chunk_size: int | str | None, warmup_chunk_size: Any) -> int | None:
    """The warm-up search's chunk size (None: a search's default): `warmup_chunk_size` when given,
    else `chunk_size` when that is an int; a `ValueError` for a bad `warmup_chunk_size`, or one
    given without `warmup` (it would be read by nothing)."""
    if warmup_chunk_size is None:
        return chunk_size if isinstance(chunk_size, int) else None
    if not is_int_at_least(warmup_chunk_size):
        raise ValueError(f"warmup_chunk_size={warmup_chunk_size!r} must be an int >= 1 (warm-up trials per vmapped "
                         "call) or None")
    if warmup is None:
        raise ValueError(f"warmup_chunk_size={warmup_chunk_size!r} is read only with warmup= (the random-search "
                         "warm-up it chunks); give warmup=, or leave warmup_chunk_size out")
    return check_count(warmup_chunk_size, "warmup_chunk_size")


def _optional_int(value: Any) -> int | None:
    """A checked integer argument as a Python int (None stays None)."""
    return None if value is None else int(value)


def _checked_init(space: Space, given: Any, batched: bool, hold: tuple[str, ...] = ()) -> HParams:
    """Starting hyperparameters `given` by the caller as arrays, checked: names and shapes of the
    space (after a leading tuner axis when `batched`), floating point and strictly inside the
    bounds, where a tuned value's z is finite; a `hold` name within them, bounds included (a grid
    search's pick may sit on one): held values enter the objective as they are and are never mapped
    to z. An integer start is the real number it names (`{"lr": 1}` starts at 1.0, in the default
    float dtype, as `Space.constrain` takes an integer z): every entry of a space `tune` accepts is
    continuous, so it cannot be a `Choice`'s option."""
    init = {name: _as_real(value) for name, value in as_hparams(given, "init").items()}
    check_differentiable_hparams(init, "init")
    space.check(jax.tree.map(lambda a: a[0], init) if batched else init, "init")
    for name, value in init.items():
        dist = space[name]
        if _not_finite(name, value) is not None:
            raise ValueError(_not_finite(name, value))
        if name in hold:
            if not bool(jnp.all((value >= dist.lo) & (value <= dist.hi))):
                raise ValueError(f"init[{name!r}], held (hold=), lies outside the bounds [{dist.lo}, {dist.hi}] of "
                                 "the space; a held value may sit on a bound but not past it: give one within them")
        elif not bool(jnp.all((value > dist.lo) & (value < dist.hi))):
            held = tuple(n for n in space.names  # hold= with it and every other start on a bound, unless that is all
                         if n in hold or n == name or _on_a_bound(given[n], space[n].lo, space[n].hi))
            raise ValueError(_off_bounds(name, given[name], value, dist.lo, dist.hi,
                                         held if len(held) < len(space.names) else None))
    return init


def _not_finite(name: str, value: Any) -> str | None:
    """Why init[`name`] is refused when some entry of `value` is NaN or infinite (before the bounds
    are compared: NaN lies neither inside nor outside them), else None."""
    value = np.asarray(value)
    if np.all(np.isfinite(value)):
        return None
    at = np.unravel_index(np.argmax(~np.isfinite(value)), value.shape)
    where = f"init[{name!r}]" + ("".join(f"[{i}]" for i in at) if value.ndim else "")
    return f"{where}={value[at]} is not a finite number; give a start strictly inside the bounds of the space"


def _as_real(value: jax.Array) -> jax.Array:
    """`value` in the default float dtype when it is an integer array, else as it is."""
    return value.astype(jnp.result_type(float)) if jnp.issubdtype(value.dtype, jnp.integer) else value


def _off_bounds(name: str, given: Any, value: jax.Array, lo: float, hi: float,
                hold: tuple[str, ...] | None = None) -> str:
    """Why init[`name`] is refused: `value` (`given` as `tune` starts from it, in its dtype) lies outside
    or on the bounds (`lo`, `hi`). When `given` is strictly inside and only its rounding to that dtype
    lands on a bound (0.98999999 is 0.99 in float32), the message says so, with both fixes; when it
    sits on a bound as given (a grid point), `_on_bound` says how to start just inside or hold it
    (with `hold`, the names hold= would then give, or None where that would leave none tuned)."""
    exact, held = np.asarray(given, dtype=np.float64), np.asarray(value)
    bounds, dtype = np.asarray([lo, hi], dtype=held.dtype), held.dtype
    on_bound = _on_bound(name, given, lo, hi, hold)
    if on_bound is not None:
        return on_bound
    if not (np.all((exact > lo) & (exact < hi)) and np.any((held <= bounds[0]) | (held >= bounds[1]))):
        return (f"init[{name!r}] lies outside or on the bounds ({lo}, {hi}) of the space; start strictly "
                "inside them")
    at = np.unravel_index(np.argmax((held <= bounds[0]) | (held >= bounds[1])), held.shape)
    where = f"init[{name!r}]" + ("".join(f"[{i}]" for i in at) if held.ndim else "")
    side = "lo" if held[at] <= bounds[0] else "hi"
    wider = (" or enable float64 (jax.config.update('jax_enable_x64', True)) before building the problem and "
             "the space" if dtype == np.float32 and jnp.result_type(float) == np.float32 else "")
    return (f"{where}={np.format_float_positional(exact[at], unique=True)} is inside the bounds ({lo}, {hi}) "
            f"as given, but rounds to {np.format_float_positional(held[at], unique=True)} in {dtype.name}, the "
            f"dtype tune starts from, which is the bound {side}={lo if side == 'lo' else hi}; start further "
            f"inside the bounds{wider}")


def _on_bound(name: str, given: Any, lo: float, hi: float, hold: tuple[str, ...] | None) -> str | None:
    """Why init[`name`] is refused when `given` lies within the bounds (`lo`, `hi`) and on one of
    them, both as its own dtype holds them (a grid search's points do: float32(0.99) is the bound
    0.99 of float32 values), else None: a tuned start needs a finite z, and a bound's is infinite;
    the message gives the ways on: start just inside, or hold it (`hold`: the names hold= would then
    give; None where that would leave nothing to tune)."""
    if not _on_a_bound(given, lo, hi):
        return None
    value, low, high = _as_held(given, lo, hi)
    on = (value == low) | (value == high)
    at = np.unravel_index(np.argmax(on), value.shape)
    where = f"init[{name!r}]" + ("".join(f"[{i}]" for i in at) if value.ndim else "")
    side = "lo" if value[at] == low else "hi"
    held = (f", or keep {name!r} at the bound untuned with hold={hold!r} (held values may sit on a bound)"
            if hold else "")
    return (f"{where}={lo if side == 'lo' else hi} is the bound {side} of the space ({lo}, {hi}), as a grid "
            "search's points may be (Space.grid includes the bounds); tune descends unconstrained coordinates z, "
            "where a bound lies at infinity, so a tuned start must lie strictly inside. Start just inside, e.g. "
            "init=space.constrain(jax.tree.map(lambda z: jnp.clip(z, -6.0, 6.0), space.unconstrain(start))) with "
            f"start the hyperparameters you gave{held}")


def _on_a_bound(given: Any, lo: float, hi: float) -> bool:
    """Whether `given` lies within [`lo`, `hi`] and on one of them in some entry, bounds and values
    as its own dtype holds them (an integer as float64)."""
    value, low, high = _as_held(given, lo, hi)
    return bool(np.all((value >= low) & (value <= high)) and np.any((value == low) | (value == high)))


def _as_held(given: Any, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`given`, `lo`, `hi`) as numpy arrays in `given`'s own float dtype (float64 for an integer)."""
    value = np.asarray(given)
    value = value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float64)
    return value, np.asarray(lo, dtype=value.dtype), np.asarray(hi, dtype=value.dtype)


def _check_init_names(init: HParams, shapes: dict) -> None:
    """Raises `ValueError` unless `init` has exactly the space's names (worded as `Space.check`), so
    that a name too many or too few is named before any leading size is read."""
    missing, extra = [n for n in shapes if n not in init], [n for n in init if n not in shapes]
    if missing or extra:
        raise ValueError(f"init names {sorted(init)} disagree with the space {sorted(shapes)}: missing {missing}, "
                         f"unexpected {extra}; pass exactly the space's names")


def _batched_init(space: Space, init: Any, population: int, key: Key, hold: tuple[str, ...] = ()) -> HParams:
    """The N starting points: 'centre', 'sample' (random search's first N draws) or given ones (the
    `hold` names checked as held values, `_checked_init`)."""
    if init is None:
        init = "sample" if population > 1 else "centre"
    if isinstance(init, str):
        if init == "centre":
            # numpy: an eager broadcast compiles a small program per leaf shape on a first call
            return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (population, *np.shape(a))), space.centre())
        return space.sample(key, population, stream=SAMPLE_STREAM)
    given, init = init, as_hparams(init, "init")
    shapes = dict((name, dist.shape) for name, dist in space.items)
    _check_init_names(init, shapes)
    sizes = {n: (np.shape(v)[0] if np.ndim(v) == len(shapes[n]) + 1 else None) for n, v in init.items()}
    if population == 1 and all(size is None for size in sizes.values()):
        return jax.tree.map(lambda a: a[None], _checked_init(space, given, batched=False, hold=hold))
    wrong = [f"{n!r} has {'none' if size is None else size}" for n, size in sizes.items() if size != population]
    if wrong:
        raise ValueError(f"init has leading sizes {sizes} but population={population}: give every hyperparameter "
                         f"a leading axis of {population} (one row per tuner; {', '.join(wrong)}), or init='sample'")
    return _checked_init(space, given, batched=True, hold=hold)


def _warm_starts(warm: Result, space: Space, population: int, stored: bool = False,
                 refusal: Any = None) -> HParams:
    """The hyperparameters of the N best complete warm-up trials that the method accepts,
    constants broadcast to shapes. `refusal(start)` says why the method refuses a start (None
    where it accepts it; `refusal` None: every start accepted): a refused trial is passed over for
    the next best, with a warning naming it (`_warn_refused`); it stays in the result as the
    random-search trial it is. Raises `ValueError` when fewer than N finished and are accepted (for
    a `stored` study, saying that it keeps this warmup= and its trials, so a larger one needs
    another study name)."""
    ranked = sorted((t for t in warm.trials if t.state == COMPLETE), key=lambda t: (t.value, t.number))
    best, refused = [], []
    for trial in ranked:
        if len(best) == population:
            break
        start = {name: np.broadcast_to(np.asarray(trial.hparams[name]), dist.shape) for name, dist in space.items}
        why = None if refusal is None else refusal(start)
        if why is None:
            best.append((trial, start))
        else:
            refused.append((trial, why))
    if len(best) < population:
        where = (f" under another study= name (this study stores warmup={len(warm.trials)} and its trials, and "
                 "refuses another warmup=)") if stored else ""
        if refused:
            raise ValueError(f"{len(ranked)} of the {len(warm.trials)} warm-up trials finished, and the method refuses "
                             f"the values of {len(refused)} of them (the first: {refused[0][1]}), leaving "
                             f"{len(best)} to start population={population} tuners; the warm-up's trials are "
                             f"{'stored in the study' if stored else 'lost unless logged (log=) or stored (study=)'}. "
                             f"Raise warmup={where}, or narrow the space to values the method accepts")
        raise ValueError(f"only {len(ranked)} of the {len(warm.trials)} warm-up trials finished (the rest diverged); "
                         f"raise warmup={where}, or narrow the space, to start {population} tuners")
    if refused:
        _warn_refused(refused, population)
    return {name: np.stack([start[name] for _, start in best]) for name in space.names}


def _warn_refused(refused: list, population: int) -> None:
    """Warns (RuntimeWarning) that the warm-up trials `refused` ((trial, why) pairs), among the best,
    start no tuner because the method refuses their values, and that the next best do instead."""
    numbers = ", ".join(str(trial.number) for trial, _ in refused)
    warnings.warn(f"tune: the method refuses the values of {len(refused)} of the best warm-up trials (numbers "
                  f"{numbers}; the first: {refused[0][1]}), so the {population} tuners start from the {population} "
                  "best warm-up trials it accepts instead; the refused trials stay in the result as the random-search "
                  "trials they are (their values are the objective's)", RuntimeWarning, stacklevel=users_stacklevel())


def _name(method: Method, population: int) -> str:
    return f"tune[{method}]" if population == 1 else f"tune[{method}, population={population}]"


def hypergradient_flops(objective: Objective, method: Method, hparams: HParams, key: Key,
                        held: HParams | None = None) -> float:
    """FLOPs of one hypergradient of `method` (one outer step), counted by `hypergrad.accounting`;
    `held`: hyperparameters held fixed (`Objective.with_fixed`, as `tune(hold=...)` holds them)."""
    return accounting.hypergradient_flops(objective, method, hparams, key, held=held)


def tune_step_cost(objective: Objective, space: Space, key: Key, method: Method = Reverse(),
                   hold: Sequence[str] | None = None) -> float:
    """Compute of one outer step of `tune` in training-run equivalents (for budgeting); `hold`
    as in `tune` (the step of a tuner holding those names at the space's centre).

    Raises:
        ValueError: for a bad objective, space, key or method (as `tune` checks them), before
            anything is traced; for a per-step schedule (in the space, or held by the objective beside
            an array one) shorter than `num_steps`, as `tune` refuses it (`check_schedules_in_bounds`).
    """
    _check_tuned_objective(objective)
    check_space(space)
    key = check_key(key)
    check_method(method)
    space.check_differentiable("tune_step_cost")
    hold = _checked_hold(hold, space)
    hparams = space.centre()
    tuned, held = _split(hparams, hold)
    _check_method_held(objective, method, tuned, held)
    check_schedules_in_bounds(objective, hparams)  # as `tune`: a schedule shorter than num_steps is refused
    return hypergradient_flops(objective, method, tuned, key, held) / run_flops(objective, hparams, key)


def tune(
    objective: Objective,
    space: Space,
    key: Key,
    *,
    method: Method = Reverse(),
    outer: optax.GradientTransformation | None = None,
    steps: int = 50,
    init: HParams | str | None = None,
    population: int = 1,
    warmup: int | None = None,
    halving: int | None = None,
    chunk_size: int | str | None = None,
    warmup_chunk_size: int | None = None,
    resample_key: bool = False,
    hold: Sequence[str] | None = None,
    log: Any = None,
    progress: Any = False,
    storage: Any = None,
    study: str | None = None,
) -> Result:
    """Gradient-based tuning of the continuous hyperparameters in `space`, by one tuner or a
    population.

    Cost: one hypergradient of `method` (about 3 training runs for `Reverse`) per row of each
    outer step's calls, plus one more per row for scoring the final iterates, plus `warmup`
    training runs. The rows are the live tuners plus the padding of the calls, charged too (spread
    over each call's tuners): with `chunk_size` None, under one row per call and device; with a
    given `chunk_size`, the whole chunk every call whatever the population or the halving (a lone
    tuner at chunk_size=4 costs four hypergradients a step: the price of one program shared across
    population sizes; `hypergrad.outer.rows_computed`).
    One program is compiled per (objective, space, method, chunk of tuners, and what the outer
    optimiser computes) and reused by later calls with new values, keys, starting points or numbers
    of tuners that fill the same chunk, and with an equal outer optimiser made anew: two
    `optax.adam(0.1)` are different objects that share one program, `optax.adam(0.2)` compiles
    its own (its update is traced on each call to tell them apart, milliseconds).

    Args:
        objective: the objective to tune.
        space: the hyperparameters to tune; must hold no `Choice`.
        key: PRNG key for training (initialisation and minibatches), shared by every tuner.
        method: hypergradient strategy, `hg.Reverse()` by default. A random estimate (`hg.ES`,
            `hg.PES`) draws fresh noise at every outer step, the same for every tuner, while the
            training key stays `key` (`hypergrad.outer.step_noise_key`): the first step's estimate
            is `hg.hypergradient(objective, h0, key, method=method)`, and later steps' errors are
            independent of it, so they average out along the descent.
        outer: an optax optimiser over the unconstrained coordinates; default `DEFAULT_OUTER`
            (Adam, 0.05). Each tuner keeps its own optimiser state. One that reads the loss gets
            the step's validation loss as `value=` (`optax.contrib.reduce_on_plateau`,
            `optax.polyak_sgd`); one that asks for the loss as a function (`optax.lbfgs`'s line
            search, `value_fn=`) is refused (`check_outer`). `info["outer"]` describes it
            (`hypergrad.outer.outer_identity`).
        steps: number of outer steps, >= 1.
        init: where the tuners start: None ('centre' for one tuner, 'sample' for a population),
            'centre', 'sample' (drawn as `random_search` draws them: its first N settings), or
            hyperparameters (constrained values with the space's names and shapes, strictly inside
            the bounds, a `hold` name's within them or on one; for a population, with a leading axis
            of `population`). A start whose loss or hypergradient is not finite
            has no good iterate to back off to: after each such step the tuner restarts at a fresh
            point drawn from the space (a key folded from `key`, its id and the step, so the same
            call gives the same trials), until a step is finite; the call warns (RuntimeWarning),
            naming how many tuners started so. Each of these steps is a trial and counts in the
            compute, as every step does.
        population: number of tuners N advanced together, each outer step one vmapped program.
        warmup: spend this many trials (>= population) on random search first and start the N
            tuners from its N best settings; the warm-up's trials open the result. A setting the
            method refuses (`hg.Reversible`: a momentum below 2^-info_bits) starts no tuner: the
            next best does, with a warning naming the trials passed over.
        halving: successive halving: after every `halving` outer steps keep the better half of
            the live tuners (by their latest validation loss); None keeps all.
        chunk_size: tuners per vmapped call (memory bound), the last call padded (padding rows
            computed and charged, above): a fixed chunk lets populations of any size share one
            program, and is also the warm-up search's
            trials per call. None sizes the chunks to the
            population as a search sizes its chunks to its trials, and to the live tuners after
            each halving round (a program per round), except with `halving` on a CPU: there one
            tuner per device (at most `population`), one program for every round, later rounds
            padded to it (`hypergrad.outer.cohort_chunk`).
            "live" sizes them to the live tuners on any platform (on a CPU, for a run long enough
            that wider calls repay a compilation per round).
        warmup_chunk_size: trials per vmapped call of the warm-up search alone (a memory bound, as
            `random_search`'s `chunk_size`), the tuners' chunk left to `chunk_size`; None: the
            warm-up runs in `chunk_size` chunks when that is an int, else as a search given no chunk.
            Read only with `warmup=`. Not part of a study's identity, as chunk sizes are not.
        resample_key: False trains every step with `key` (the same deterministic function that
            the baselines search); True uses `fold_in(key, step)` per step (a stochastic
            hypergradient, less prone to fitting one seed's noise), and each step's trial records
            its value, hypergradient norm and test scores on that step's key: `objective(hparams,
            key)` does not reproduce them, and their minimum is biased low by the keys' noise.
            The warm-up and each live tuner's final iterate are scored with `key` either way
            (`info["final_trials"]`): compare those with a search's trials. The noise of a random
            estimate (ES, PES) is fresh at every step either way: without resampling, only the
            noise moves on; with it, each step's estimate is `hg.hypergradient` on its step's key.
        hold: names of hyperparameters of `space` that each tuner keeps where it starts (its `init`,
            its sample, or its warm-up trial's values) while it descends the others: they enter
            the objective as held values (`Objective.with_fixed`, as `hg.hybrid_search` holds a
            configuration's choices), are not differentiated, and every trial records them. For
            a method that cannot differentiate some of them (`hg.Implicit` and an optimiser's
            learning rate or momentum: `hold=("lr", "momentum")` with a warm-up descends the
            rest from the N best random settings), or to keep what a search found. Bias: each
            tuner descends the others at its held values, not jointly with them. Cost: the
            hypergradient of the others only; the held values travel with the tuners' carry.
            Continuous hyperparameters only: a `Choice` is refused, as in the space (hold it with
            `objective.with_fixed`, or search it with `hg.hybrid_search`). None or (): all tuned.
        log: optional JSON-lines path (its directory created if missing); each trial is appended
            as it is produced (with a study, naming it; a resumed call logs each trial once:
            `hypergrad.results.TrialRecorder`).
        progress: True to print a line per step to stderr, or a callable(str).
        storage, study: a SQLite file (created if missing) and a study name, both or neither: each
            step's trials are committed with the tuners' iterates, outer-optimiser states and step
            counter in one transaction, and the same call again resumes from the last committed
            step (the warm-up's stored chunks are loaded, not re-run; see `hypergrad.store`);
            once the study has finished, the same call returns its stored `Result` (the first
            call's trials, compile and set-up seconds) and compiles none of its programs (the
            checks made before the study opens still trace the run once and, on a process's first
            call, evaluate the space's centre eagerly: a few small XLA programs).
            Every argument is checked before the study is opened, so a refused call stores
            nothing that would refuse the corrected one; only a warm-up too diverged to start
            the tuners is found after, and a larger `warmup` then needs another study name.

    Returns:
        a `Result`: the warm-up's trials, then one trial per tuner and outer step plus each live
        tuner's final iterate (column `tuner` of `to_dataframe()`; their numbers in
        `info["final_trials"]`); `best_*` across them all, or with `resample_key` across the
        trials scored on `key` alone (the warm-up's and the final iterates'; `Result.best_trial`),
        so the pick's value is reproduced by `objective(best_hparams, key)`. Its compile and set-up
        seconds sit on the wall-time axis (`Result.spent("seconds")`) where they were paid: the
        outer step's after the warm-up, before the first step's trials, and the program of a
        halving round that narrows the chunk before that round's trials (`info["setup_seconds_at"]`);
        the rest, the warm-up's included, before the first trial. `info["chunk_size"]` is the tuners
        per call at the first outer step (a halving round sized to the live tuners narrows later
        ones), `info["chunk_size_given"]` the `chunk_size` argument as given (None, "live" or an int):
        pass that to run the same layout again.
    """
    began = time.perf_counter()  # the call's seconds outside its trials are its set-up (`with_setup`)
    # the run traced for the checks is the warm-up search's program, traced once (`_counted_run`);
    # the unread-hyperparameter warning once per call: from the checks, found done or not, not again from the warm-up
    with stored_call(storage, study, objective), accounting.sharing_traces(), unread_warned_once():
        with checked_together("tune", method=method, outer=outer, steps=steps, init=init, population=population,
                              warmup=warmup, halving=halving, chunk_size=chunk_size, warmup_chunk_size=warmup_chunk_size,
                              resample_key=resample_key, hold=_hold_compared(hold), log=log, storage=storage,
                              study=study):  # several processes: a refusal on one stops all
            refuse_disabled_jit()  # first: the checks below would run op by op for seconds before it
            hold = _check_tune_args(objective, space, method, hold)
            steps, key = check_count(steps, "steps"), check_key(key)
            check_progress(progress)
            check_log_apart(log, storage)
            resample_key = _checked_resample_key(resample_key)
            population, warmup, halving, chunk_size = _check_population_args(population, init, warmup, halving,
                                                                             chunk_size)
            warmup_chunk = _warmup_chunk(warmup, chunk_size, warmup_chunk_size)
            outer = check_outer(outer, _tuned_space(space, hold))  # after the above: it traces at the centre
            # every refusal before the study opens: a study stores the call that opened it and refuses another.
            # These trace (the schedule probe compiles a local program; no collective), so they sit in the block:
            # several processes whose calls differ only in what studying() compares (objective, space, key)
            # may refuse here on one process alone
            starts = _checked_starts(objective, space, method, init, population, warmup, key, hold)
            centre = space.centre()  # after the method's refusals, which trace nothing
            check_objective_runs(objective, centre, warn_cached=True,
                                 trace=lambda: _counted_run(objective, centre, key, keep=warmup is not None))
            _check_own_method_output(objective, method, centre if starts is None else _first(starts), key, hold)
        check_log(log, storage)  # after: it gathers process 0's verdict on the path
        with studying(storage, study, kind="tune", space=space, fingerprint=lambda: fingerprint(
                "tune", objective, space, key, method=method, outer=outer, steps=steps,
                init=_init_as_used(init, starts), population=population, warmup=warmup, halving=halving,
                resample_key=resample_key, **_hold_argument(hold))) as writer:
            stored = finished_result(writer, steps)
            if stored is not None:  # the same call again, after it finished: its Result, nothing compiled
                return stored
            result = _tune(objective, space, key, method, outer, steps, starts, population, warmup, halving, chunk_size,
                           warmup_chunk, resample_key, hold, log, progress, writer)
            result = _placed_within_charge(with_setup(result, began))
            return result if writer is None else writer.finish(result, space)


def _placing(program: Any, recorder: TrialRecorder, placed: list) -> Any:
    """A cohort's `program` (chunk -> its compiled outer step, `make_cohort`) that appends to `placed`,
    on each call, [the number of trials recorded so far, the call's wall seconds]: a halving round
    that narrows the chunk compiles its program (or takes it from the cache) right before that
    round's first trial, where `Result.spent("seconds")` then places it (`info["setup_seconds_at"]`)
    rather than before trial 0. Cost: a clock reading per call."""
    def timed(chunk: int) -> Any:
        began = time.perf_counter()
        out = program(chunk)
        placed.append([len(recorder.trials), time.perf_counter() - began])
        return out

    return timed


def _placed_within_charge(result: Result) -> Result:
    """`result` with the seconds `info["setup_seconds_at"]` places cut, the latest first, to its
    compile and set-up seconds, all it charges outside its trials: a resumed study's stored trials
    ran in an earlier call and count in its `seconds`, so `with_setup` can charge less than the
    set-up this call measured after them; uncut, `spent("seconds")` would start below 0."""
    placed, room = [], result.compile_seconds + result.setup_seconds
    for index, paid in result.info.get("setup_seconds_at", ()):
        placed.append([index, min(paid, room)])
        room -= placed[-1][1]
    return dataclasses.replace(result, info={**result.info, "setup_seconds_at": placed}) if placed else result


def _init_as_used(init: Any, starts: HParams | None) -> Any:
    """What a study's fingerprint holds for `init=`: given hyperparameters as the starts made of
    them (`_batched_init`: arrays in the dtype the tuners start from, with a leading tuner axis), so
    that 0.01, np.float64(0.01) and jnp.asarray(0.01), the same starts and the same trials, resume
    one another's study; 'centre', 'sample' and None as given. In fingerprint format 3 and older,
    `init` as given, as the studies stored then describe it (so they still resume)."""
    if init is None or isinstance(init, str) or fingerprint_format() <= 3:
        return init
    return jax.tree.map(np.asarray, starts)


def _counted_run(objective: Objective, hparams: HParams, key: Key, keep: bool = False) -> Any:
    """The jaxpr of the run `run_flops` counts at `hparams`, counted now (the unit tune charges
    later): traced once for the count and `check_objective_runs`, not once for each (called within
    `tune`'s `accounting.sharing_traces()` block, which hands the count's trace on). `keep`
    (a warm-up follows): traced at `hparams` as host arrays, the types of the warm-up search's
    first setting, and left held in `tune`'s `sharing_traces()` block, so that search compiles
    this trace instead of tracing the objective again (the count is the same: it ignores weak
    types). Cost: one trace of the objective; with `keep`, its jaxpr held until `tune` returns."""
    if keep:
        hparams = jax.tree.map(np.asarray, hparams)  # strongly typed, as the sampled settings are
    run_flops(objective, hparams, key)
    return accounting.traced_run(objective, hparams, key, objective.problem.data, keep=keep).jaxpr


def _held_values(held: HParams) -> Any:
    """tuner id -> its held hyperparameters (as a trial records hyperparameters: numpy arrays) of the
    batched host arrays `held`, recorded in each of its trials beside the tuned ones (`make_cohort`'s
    `extra`)."""
    return lambda tuner: {name: np.asarray(values[tuner]) for name, values in held.items()}  # 0-d, not a scalar


def _first(starts: HParams) -> HParams:
    """The first tuner's start of batched `starts`."""
    return jax.tree.map(lambda a: np.asarray(a)[0], starts)


def _check_own_method_output(objective: Objective, method: Method, hparams: HParams, key: Key,
                             hold: tuple[str, ...] = ()) -> None:
    """Refuses a method of one's own that returns the wrong structure (`check_method_output`)
    before the study opens, so that a refused call stores nothing: the hypergradient's FLOP count,
    which traces the method's program and which `_tune` makes anyway, made now at `hparams`, the
    first start (the centre before a warm-up, so checked before the warm-up runs), and cached
    for `_tune`. A method whose `differentiate` and `value_and_grad` are hypergrad's own (tested
    to return the right structure) is counted where it was: nothing moves for it, and a finished
    study's replay traces no hypergradient. Cost: nothing more for a fresh call; one trace of the
    method's program for a finished study's replay."""
    if all(getattr(type(method), name).__module__.startswith("hypergrad.")
           for name in ("differentiate", "value_and_grad")):
        return
    tuned, held = _split(hparams, hold)
    hypergradient_flops(objective, method, tuned, key, held)


def _checked_starts(objective: Objective, space: Space, method: Method, init: Any, population: int,
                    warmup: int | None, key: Key, hold: tuple[str, ...]) -> HParams | None:
    """The tuners' starts (None with a warm-up: its best trials, known only once it ran), checked,
    and `method` checked at the first start (at the centre before a warm-up, whose starts
    `_warm_starts` checks once they are known), the `hold` names held there: the refusals that need
    no training run, made before a study is opened. A later given or sampled start the method
    refuses is not refused: its tuner's step there fails and it restarts at fresh draws (a sampled
    population would otherwise be refused for one unlucky row)."""
    if warmup is not None:  # refuse a method that cannot run here before spending the warm-up
        _check_method_held(objective, method, *_split(space.centre(), hold))
        return None
    starts = _batched_init(space, init, population, key, hold)
    _check_method_held(objective, method, *_split(_first(starts), hold))
    return starts


def _checked_hold(hold: Any, space: Space) -> tuple[str, ...]:
    """The names `hold=` holds, in the space's order (one set of names, one call and one study);
    `ValueError` naming `hold=` and the fix for anything else, before anything is traced."""
    if hold is None:
        return ()
    if isinstance(hold, str):
        fix = f"hold=({hold!r},)" if hold in space.names else f"e.g. hold=({space.names[0]!r},)"
        raise ValueError(f"hold={hold!r} is one string: give the names to hold as a tuple of the space's names, {fix}")
    if not isinstance(hold, (tuple, list, set, frozenset)):
        raise ValueError(f"hold={hold!r}: give a tuple of the space's hyperparameter names, e.g. "
                         f"hold=({space.names[0]!r},)")
    names = tuple(hold)
    for name in names:
        if not isinstance(name, str) or name not in space.names:
            raise ValueError(f"hold={names!r}: {name!r} is not a hyperparameter of the space "
                             f"({', '.join(space.names)}); hold names of the space only")
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"hold={names!r} names {', '.join(map(repr, twice))} more than once; name each once")
    if set(names) == set(space.names):
        raise ValueError(f"hold={names!r} holds every hyperparameter of the space, leaving none to tune; leave at "
                         "least one out of hold (to score settings without descending them, use hg.random_search)")
    return tuple(name for name in space.names if name in names)


def _hold_compared(hold: Any) -> Any:
    """`hold=` as the processes of a multi-process call compare it (`checked_together`): names as a
    sorted tuple, so that the same names in any order or container agree and other names do not (a
    set would be described only as "a set"); anything else as given, to be refused alike."""
    if isinstance(hold, (tuple, list, set, frozenset)) and all(isinstance(n, str) for n in hold):
        return tuple(sorted(hold))
    return hold


def _hold_argument(hold: tuple[str, ...]) -> dict[str, Any]:
    """What a study's fingerprint holds of `hold=`: nothing when no name is held, as in the studies
    stored before `hold=` existed (so those still resume), else the names in the space's order."""
    return {"hold": list(hold)} if hold else {}


def _tuned_space(space: Space, hold: tuple[str, ...]) -> Space:
    """The hyperparameters the tuners descend: `space` without the held ones."""
    return Space({name: dist for name, dist in space.items if name not in hold}) if hold else space


def _split(hparams: HParams, hold: tuple[str, ...], held_as: Any = jnp.asarray) -> tuple[HParams, HParams | None]:
    """(the tuned hyperparameters of `hparams`, the held ones converted by `held_as`, or None without
    `hold`). Device arrays by default, as the tuners hold them (traced): an objective that indexes a
    held schedule with a traced step reads it as it reads a tuned one, where a numpy array would fail;
    `np.asarray` for the cohort's carry, which lives on the host between steps."""
    if not hold:
        return hparams, None
    return ({name: value for name, value in hparams.items() if name not in hold},
            {name: held_as(hparams[name]) for name in hold})


def _check_method_held(objective: Objective, method: Method, tuned: HParams, held: HParams | None) -> None:
    """`method.check` of the objective with the `held` hyperparameters held (`Objective.with_fixed`); a
    refusal then also says that the method sees the tuned names only (`hg.Reversible` looks its
    rate up among them by name, and cannot reverse a held one)."""
    if held is None:
        method.check(objective, tuned)
        return
    try:
        method.check(objective.with_fixed(held), tuned)
    except ValueError as err:
        raise ValueError(f"{err} [under tune's hold={tuple(held)!r}, the method sees only the tuned hyperparameters "
                         f"{sorted(tuned)}: the held ones are fixed values of the objective]") from err


def _refusal(objective: Objective, method: Method, start: HParams, hold: tuple[str, ...]) -> str | None:
    """Why `method` refuses the start `start` (`_check_method_held`, the `hold` names held), or None."""
    try:
        _check_method_held(objective, method, *_split(start, hold))
    except ValueError as err:
        return str(err)
    return None


def _tune(objective: Objective, space: Space, key: Key, method: Method, outer: optax.GradientTransformation,
          steps: int, starts: HParams | None, population: int, warmup: int | None, halving: int | None,
          chunk_size: int | str | None, warmup_chunk: int | None, resample_key: bool, hold: tuple[str, ...],
          log: Any, progress: Any, writer: StudyWriter | None) -> Result:
    """`tune` on checked arguments and starts (None: the warm-up's best, from its search in
    `warmup_chunk` chunks), the `hold` names held at each tuner's start, its trials committed
    through `writer` (and resumed from it)."""
    warm = None
    if starts is None:
        warm = evaluate_settings(objective, space.sample(key, int(warmup), stream=SAMPLE_STREAM), key,
                                 strategy=f"{_name(method, population)} warm-up", space=space, log=log,
                                 progress=progress, sink=writer,
                                 chunk_size=warmup_chunk)
        starts = _warm_starts(warm, space, population, stored=writer is not None,
                              refusal=lambda start: _refusal(objective, method, start, hold))
    set_up = time.perf_counter()  # the outer step's set-up and compilation, after any warm-up, start here
    chunk = cohort_chunk(chunk_size, halving, population)
    tuned_starts, held = _split(starts, hold, np.asarray)  # host arrays: make_cohort keeps them there
    first_chunk = chunk_rows(population, chunk)  # tuners per call at the first step (halving may narrow it)
    z, hparams0 = batched_starts(_tuned_space(space, hold), tuned_starts, first_chunk)
    held0 = None if held is None else {name: jnp.asarray(values[0]) for name, values in held.items()}
    unit = run_flops(objective, {**hparams0, **(held0 or {})}, key)
    flops = hypergradient_flops(objective, method, hparams0, key, held0)
    cohort = make_cohort(objective, _tuned_space(space, hold), method, outer, key, z, fixed=held, chunk_size=chunk,
                         unit=unit, flops=flops, extra=None if held is None else _held_values(held), recorded_in=space)
    name = _name(method, population)
    opened = 0 if warm is None else len(warm.trials)
    recorder = TrialRecorder(name, log, progress, total=opened + trials_of(population, steps, halving), sink=writer)
    recorder.trials.extend([] if warm is None else warm.trials)
    checkpoint = None if writer is None else writer.checkpoint
    if checkpoint is not None:  # resumed: the steps stored up to the checkpoint
        recorder.trials.extend(writer.trials_from(opened))
    placed = [[len(recorder.trials), time.perf_counter() - set_up]] if recorder.trials else []
    cohort.program = _placing(cohort.program, recorder, placed)
    try:
        drive([cohort], steps=steps, key=key, resample_key=resample_key, recorder=recorder, halving=halving,
              number=opened, checkpoint=checkpoint)
    finally:
        recorder.close()
    info = {"method": repr(method), "outer": outer_identity(outer), "steps": steps, "resample_key": resample_key,
            **_hold_argument(hold),
            "population": population, "warmup": warmup, "halving": halving, "chunk_size": first_chunk,
            "chunk_size_given": chunk_size,
            "final_trials": [t.number for t in recorder.trials[len(recorder.trials) - len(cohort.tuners):]],
            **({"setup_seconds_at": placed} if placed else {})}
    seconds = cohort.compile_seconds + (0.0 if warm is None else warm.compile_seconds)
    return Result(name, tuple(recorder.trials), unit, seconds, info)
