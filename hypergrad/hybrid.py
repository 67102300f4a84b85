"""The hybrid strategy: discrete choices searched, continuous hyperparameters descended.

For each configuration of the space's `Choice`s (all of them, or a random sample), `hybrid_search`
runs gradient tuning (as `hg.tune`) of the continuous hyperparameters, with the discrete values held
fixed. Configurations that share a program (the same options of every grouped structural choice;
numeric choices and masked structural ones are traced values) are tuned together: one compiled
outer step, vmapped over the configurations, per program (see `hypergrad.structure` for how
masking and grouping are decided).

Budget: every configuration gets the same number of outer steps, `steps`, plus one scoring of
its final iterate, each costing one hypergradient (`hypergradient_flops / run_flops` runs of its
program, about 3 for `Reverse`): `steps` is the most that keeps all configurations' hypergradients
together within `budget` training-run equivalents. The budget is so split evenly over the
configurations' steps, not their runs: where grouped programs differ in cost (a wider network
costs more runs per hypergradient), a costlier configuration spends more of it than
budget / configurations, a cheaper one less; the structure plan prices masking over the mean
share, budget / configurations. A step's padding rows (a chunk split over several devices is padded
to a multiple of them) are charged too, so where the configurations do not divide evenly over the
devices the same budget buys fewer steps on more devices: the result depends on the device count
by more than rounding. A stored study resumed on another device count runs the steps its first call
bought; where this count's padding of the steps left costs more than the budget has left (a study
started on fewer devices), its programs run unpadded instead, so it stays within the budget.
The trials table holds one row per (configuration, outer step), produced step by step across
configurations, so `hg.compare` sees the best value reached within any budget. A configuration
whose start (the centre) or every step so far diverged restarts at a fresh draw from the space
until a step is finite, with a warning, as a tuner of `hg.tune` does (`hypergrad.outer`).

A hyperparameter that no configuration's run reads (declared in the space, wired into nothing) is
warned of once per call (`UserWarning`, at the user's line), before any outer step compiles; one
read by some configurations only is not. Cost: the run traces `run_flops` makes for the budget,
handed over (one more trace per program when its count was cached by another call first), and the
hypergradient traces `hypergradient_flops` makes for it, which each program's outer step evaluates
(`accounting.traced_hypergradient`) instead of tracing the method and the objective's Python again.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import accounting
from hypergrad._batching import DEFAULT_CHUNK
from hypergrad._checks import check_count, check_key, check_log, check_log_apart, check_progress, is_int, is_number
from hypergrad._compile import refuse_disabled_jit
from hypergrad._processes import checked_together
from hypergrad._indexing import check_schedules_in_bounds, unread_names, warn_unread_hparams
from hypergrad._types import Key
from hypergrad.hypergradient import check_method, check_objective
from hypergrad.methods import Method, Reverse
from hypergrad.objective import Objective
from hypergrad.results import Result, TrialRecorder, with_setup
from hypergrad.accounting import hypergradient_flops, run_flops, traced_run
from hypergrad.search import check_space
from hypergrad.space import SAMPLE_STREAM, Choice, Space, dtype_of
from hypergrad.structure import Masked, Rates, Structured, check_family, group_rows, measured_rates, plan
from hypergrad.outer import Cohort, check_outer, drive, make_cohort, outer_identity, rows_computed, starts_program
from hypergrad.store import check_study, finished_result, fingerprint, stored_call, studying

__all__ = ["hybrid_search", "configurations"]


def configurations(space: Space, key: Key, num_configs: int | str) -> dict[str, np.ndarray]:
    """Settings of the space's choices: every combination ("grid") or `num_configs` distinct ones
    drawn uniformly without replacement. Structural choices hold option indices; numeric ones
    their values in the dtype `space.sample` gives them (`dtype_of`: the values trained)."""
    choices = space.choices
    options = [space[name].grid_values(1) for name in choices]
    combos = list(itertools.product(*options))
    if num_configs != "grid":
        num_configs = check_count(num_configs, "configs")
        if num_configs < len(combos):
            picked = jax.random.choice(key, len(combos), (num_configs,), replace=False)
            combos = [combos[i] for i in np.sort(np.asarray(picked))]
    return {name: np.asarray([c[i] for c in combos], dtype_of(space[name])) for i, name in enumerate(choices)}


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
    storage: Any = None,
    study: str | None = None,
) -> Result:
    """Searches the discrete choices of `space` and gradient-tunes its continuous hyperparameters.

    Args:
        objective: an objective, or an `hg.Structured` family for structural choices.
        space: at least one `Choice` and at least one `Uniform`/`LogUniform`.
        key: training key shared by every configuration (common random numbers); configurations
            are sampled from a key folded from it.
        budget: total compute in training-run equivalents: every configuration gets the same number
            of outer steps, the most whose hypergradients all fit within it (module docstring).
        configs: "grid" for every combination of the choices, or a number to sample (every
            combination when there are no more than that; `info["configs"]` says how many ran).
        method: hypergradient method of the inner tuning (default `hg.Reverse()`).
        outer: optax optimiser over the unconstrained continuous coordinates (default Adam 0.05),
            started from the centre of the continuous space.
        log, progress, storage, study: as in `hg.tune` (a stored study resumes from its last
            committed step, with the structure plan it started with: the rates the plan decided
            from and the number of steps the budget bought are stored with each step's checkpoint,
            so neither rates measured anew nor another device count can change them; on a device count
            whose padding the budget left cannot pay for, they run unpadded: `_resumed_chunks`).

    Returns:
        a `Result` with one trial per (configuration, outer step), the discrete options in its
        hparams; `info` holds the configurations, steps per configuration and the structure plan.
    """
    # each program's hypergradient count hands its trace to its outer step; a stored call's planning counts the
    # objective as it is now (`stored_call`), not as an earlier call counted it
    with stored_call(storage, study, objective), accounting.sharing_traces():
        return _hybrid_search(objective, space, key, budget, configs, method, outer, log, progress, storage, study)


def _hybrid_search(objective: Objective | Structured, space: Space, key: Key, budget: float, configs: int | str,
                   method: Method, outer: optax.GradientTransformation | None, log: Any, progress: Any, storage: Any,
                   study: str | None) -> Result:
    """`hybrid_search`, inside its `accounting.sharing_traces()` block."""
    began = time.perf_counter()  # the call's seconds outside its trials are its set-up (`with_setup`)
    with checked_together("hybrid_search", objective=objective, budget=budget, configs=configs, method=method,
                          outer=outer, log=log, storage=storage, study=study):  # objective= by its kind (_FIX)
        continuous = _check_hybrid_args(objective, space, method, budget, configs)
        _check_outputs(log, progress, storage, study)
        key, outer = check_key(key), check_outer(outer, continuous)
        settings = configurations(space, jax.random.fold_in(key, SAMPLE_STREAM), configs)  # eager: no collective
        num = _check_budget(budget, settings)  # (the space, compared only in studying(), may differ)
    check_log(log, storage)  # after: it gathers process 0's verdict on the path
    rates = measured_rates().of_process_0() if isinstance(objective, Structured) else None  # (a broadcast)
    centre = jax.tree.map(lambda a: np.asarray(a)[None], continuous.centre())

    def planned(rates):  # the programs, their prices and the steps the budget buys, as `rates` decide
        groups, structure = _groups(objective, space, settings, key, rates, runs_per_config=budget / num)
        priced = [_priced(config, group_objective, rows, settings, space, method, key, h0)
                  for config, group_objective, rows in groups]
        return priced, structure, _evaluations(priced, budget, num)

    with checked_together("hybrid_search"):  # a 2nd block: after the rates' broadcast and check_log (it compiles)
        rows_z, h0 = starts_program(continuous)(centre)  # one compiled program, not an eager one per operation
        priced, structure, evaluations = planned(rates)  # refused here, before the study or a program exists
    warn_unread_hparams(tuple(sorted(set.intersection(*(set(group.unread) for group in priced)))))
    z0 = jax.tree.map(lambda a: np.asarray(a)[0], rows_z)
    with studying(storage, study, kind="hybrid", space=space, fingerprint=lambda: fingerprint(
            "hybrid", objective, space, key, budget=budget, configs=configs, method=method, outer=outer)) as writer:
        checkpoint = None if writer is None else writer.checkpoint
        if checkpoint is not None:  # resumed: planned as the first call was, with the rates and steps it stored
            checkpoint, rates, (priced, structure, evaluations) = _as_stored(checkpoint, rates, planned, (
                priced, structure, evaluations))
            stored = finished_result(writer, evaluations - 1)
            if stored is not None:  # the same call again, after it finished: its Result, nothing compiled
                return stored
        earlier = [] if checkpoint is None else writer.trials_from(0)  # resumed: the steps stored up to it
        chunks = _resumed_chunks(priced, budget, evaluations, checkpoint, earlier)
        cohorts = [_cohort(group, space, settings, continuous, method, outer, key, z0, chunk)
                   for group, chunk in zip(priced, chunks)]
        sink = None if writer is None else _PlannedSink(writer, _plan_record(rates, evaluations))
        recorder = TrialRecorder(f"hybrid[{method}]", log, progress, total=evaluations * num, sink=sink)
        recorder.trials.extend(earlier)
        stored = len(recorder.trials)
        try:
            drive(cohorts, steps=evaluations - 1, key=key, resample_key=False,
                  recorder=_InSpaceOrder(recorder, space.names), checkpoint=checkpoint)
        finally:
            recorder.close()
        unit = sum(c.unit * len(c.tuners) for c in cohorts) / num
        info = {"method": repr(method), "outer": outer_identity(outer), "configs": num, "steps": evaluations - 1,
                "budget": budget, "programs": len(cohorts), "structure": structure}
        result = _set_up_after(with_setup(Result(f"hybrid[{method}]", tuple(recorder.trials), unit,
                                                 sum(c.compile_seconds for c in cohorts), info), began), stored)
        return result if writer is None else writer.finish(result, space)


def _set_up_after(result: Result, stored: int) -> Result:
    """`result` with its compilation and set-up placed before trial `stored`, the first this call
    ran (`info["setup_seconds_at"]`), when it resumed a study whose `stored` trials an earlier call
    ran: this call compiled and set up after them, so `spent("seconds")` there is their seconds
    alone. A fresh call compiles every program before its first step (no round narrows a cohort:
    `drive` runs without halving), so its set-up stays before trial 0, as `with_setup` charges it."""
    if not stored:
        return result
    placed = [[stored, result.compile_seconds + result.setup_seconds]]
    return dataclasses.replace(result, info={**result.info, "setup_seconds_at": placed})


def _check_budget(budget: int, settings: dict[str, Any]) -> int:
    """The number of configurations `settings` holds; a `ValueError` when `budget` cannot buy two
    hypergradients for each (a hypergradient costs at least one run): before any program of the
    search compiles."""
    num = len(next(iter(settings.values())))
    if budget < 2 * num:
        raise ValueError(f"budget={budget} runs cannot buy two hypergradients for each of {num} configurations "
                         f"(at least {2 * num} runs, about {6 * num} for Reverse); raise it or sample fewer configs")
    return num


def _check_outputs(log: Any, progress: Any, storage: Any, study: Any) -> None:
    """The checks of where the call's trials go: its study, its log (apart from the study; whether
    its directory can be made is `check_log`'s, which gathers process 0's verdict) and progress."""
    check_study(storage, study)
    check_log_apart(log, storage)
    check_progress(progress)


def _check_hybrid_args(objective: Any, space: Any, method: Any, budget: Any, configs: Any) -> Space:
    """Raises `ValueError` on a bad argument (first `jax_disable_jit`, before any check runs op by op);
    returns the space of the continuous hyperparameters."""
    refuse_disabled_jit()
    check_space(space)
    if not isinstance(objective, Structured):
        check_objective(objective)
    check_family(objective, space)
    check_method(method)
    if not space.choices:
        raise ValueError("hybrid_search: the space has no hg.Choice to search; use hg.tune for continuous "
                         "hyperparameters alone")
    if all(isinstance(d, Choice) for _, d in space.items):
        raise ValueError("hybrid_search: the space has no Uniform/LogUniform hyperparameter to descend; "
                         "use hg.grid_search or hg.random_search for choices alone")
    if not is_number(budget) or not 0 < budget < math.inf:
        raise ValueError(f"budget={budget!r} must be a positive, finite number of training-run equivalents")
    if configs != "grid" and not is_int(configs):
        raise ValueError(f"configs={configs!r} must be 'grid' or a positive number of configurations to sample")
    return Space({n: d for n, d in space.items if not isinstance(d, Choice)})


def _groups(objective: Objective | Structured, space: Space, settings: dict[str, np.ndarray], key: Key,
            rates: Rates | None, *, runs_per_config: float) -> tuple[list[tuple[dict, Objective, np.ndarray]], dict]:
    """(config, objective, rows) per program, and the structure plan's record (empty for one
    objective). The plan prices masking's waste over each configuration's share of the budget
    (`runs_per_config` runs: its hypergradients), not over one run as a search trial."""
    if not isinstance(objective, Structured):
        return [({}, objective, np.arange(len(next(iter(settings.values())))))], {}
    decisions = plan(objective, space, settings, key, rates=rates, runs_per_row=runs_per_config)
    groups = [(config, objective.objective(config), rows) for config, rows in group_rows(space, settings, decisions)]
    return groups, {name: d.to_dict() for name, d in decisions.items()}


class _InSpaceOrder:
    """The recorder, given each trial with its hparams in the space's order, as the searches record
    them (a cohort records the tuned values, then the configuration's options): the trials table,
    its log, its study and `to_dataframe`'s columns read as random_search's. What `drive` uses of a
    recorder, passed through."""

    def __init__(self, recorder: TrialRecorder, names: tuple[str, ...]):
        self.recorder, self.names = recorder, names

    def add(self, trial: Any) -> None:
        self.recorder.add(dataclasses.replace(trial, hparams={name: trial.hparams[name] for name in self.names}))

    def report(self, checkpoint: Any = None) -> None:
        self.recorder.report(checkpoint)


class _PlannedSink:
    """The study's writer, storing the plan beside the cohorts' state in each step's checkpoint: its
    rates and its hypergradients per configuration (`evaluations`). Measured rates differ between
    processes (and within one as it runs), and a resumed call planning with new ones can mask what
    the first call grouped, so it plans with these instead (a plan is a function of its rates); and
    it runs the steps the first call planned, which a resumed call whose steps cost otherwise
    (another device count's padding) would plan anew, leaving a table of one plan's trials under
    the other's `info["steps"]` (where that padding costs more than the budget has left, the
    resumed call runs its programs unpadded: `_resumed_chunks`). What `TrialRecorder` uses of a sink,
    passed through."""

    def __init__(self, writer: Any, plan: dict[str, Any]):
        self.writer, self.plan, self.done = writer, plan, writer.done

    def add(self, trial: Any) -> None:
        self.writer.add(trial)

    def commit(self, checkpoint: Any = None) -> None:
        if checkpoint is None:
            self.writer.commit(checkpoint)
            return

        def with_plan() -> dict:
            taken = checkpoint()
            return {**taken, "state": {"cohorts": taken["state"], **self.plan}}

        self.writer.commit(with_plan)


def _plan_record(rates: Rates | None, evaluations: int) -> dict[str, Any]:
    """What a hybrid study's checkpoint stores of its plan (`_PlannedSink`): the hypergradients per
    configuration the budget bought, and the rates the structure plan decided from (none for one
    objective); `_unpack` reads it back."""
    record: dict[str, Any] = {"evaluations": evaluations}
    if rates is not None:
        record["rates"] = rates.to_array()
    return record


def _unpack(checkpoint: dict) -> tuple[Rates | None, int | None, dict]:
    """(the plan's stored rates, or None for one objective or a study stored before they were; its
    stored hypergradients per configuration, or None in a study stored before they were; the
    checkpoint as `drive` reads it)."""
    state = checkpoint["state"]
    if not isinstance(state, Mapping):
        return None, None, checkpoint
    rates = Rates.from_array(state["rates"]) if "rates" in state else None
    evaluations = int(state["evaluations"]) if "evaluations" in state else None
    return rates, evaluations, {**checkpoint, "state": state["cohorts"]}


def _as_stored(checkpoint: dict, rates: Rates | None, planned: Any, plan_now: tuple) -> tuple[dict, Rates | None, tuple]:
    """(the checkpoint as `drive` reads it, the rates the study planned with, `planned(rates)` with
    the stored evaluations): the plan made now when the study stored no rates or the same ones, else
    made again with the stored ones; its evaluations those stored when the study stored them.
    Raises `ValueError` when the stored cohorts are not that plan's programs, or when a study stored
    before its evaluations were has a checkpoint past the last step of the plan made now."""
    stored, evaluations, checkpoint = _unpack(checkpoint)
    if stored is not None and stored != rates:
        rates, plan_now = stored, planned(stored)
    _check_resumable(plan_now[0], checkpoint["state"])
    if evaluations is None:
        evaluations = plan_now[2]
        if checkpoint["step"] > evaluations - 1:
            raise ValueError(f"this hybrid study's checkpoint is at outer step {checkpoint['step']}, past the "
                             f"{evaluations - 1} steps the budget buys now (a study stored before hybrid_search "
                             "kept its number of steps, resumed where the steps cost more); finish it where it "
                             "started, or start a new study (another study= name)")
    return checkpoint, rates, (*plan_now[:2], evaluations)


def _check_resumable(priced: list[_Priced], state: Any) -> None:
    """Raises `ValueError` when the stored cohorts are not this plan's programs (a study stored
    without its rates, resumed where the measured rates decide another plan)."""
    fits = len(state) == len(priced) and all(
        {int(t) for t in np.asarray(saved["tuners"]).reshape(-1)} <= {int(r) for r in group.rows}
        for saved, group in zip(state, priced))
    if not fits:
        raise ValueError(f"this hybrid study's checkpoint holds {len(state)} programs, but the structure plan now "
                         f"makes {len(priced)}: the plan changed with this process's measured rates (a study "
                         "stored before hybrid_search kept its plan's rates); finish it in the process that "
                         "started it, or start a new study (another study= name)")


@dataclasses.dataclass(frozen=True)
class _Priced:
    """One program's configurations (rows of the settings) with their held choices and costs:
    `unit`, a training run's FLOPs, and `step`, one hypergradient's (counted with the held values
    as inputs, by tracing only: nothing compiled)."""

    objective: Objective
    rows: np.ndarray
    fixed: dict[str, jax.Array]
    unit: float
    step: float
    unread: tuple[str, ...]


def _priced(config: dict, objective: Objective, rows: np.ndarray, settings: dict[str, np.ndarray], space: Space,
            method: Method, key: Key, h0: Any) -> _Priced:
    """The costs of one program's configurations, their choices held fixed (`_Priced`)."""
    fixed = {name: jnp.asarray(np.asarray(settings[name])[rows]) for name in space.choices
             if name not in config or isinstance(config[name], Masked)}
    for i in range(len(rows)):  # each configuration: a method may refuse some held values (Reversible)
        method.check(objective.with_fixed(jax.tree.map(lambda a, i=i: a[i], fixed)), h0)
    first_fixed = jax.tree.map(lambda a: a[0], fixed)
    check_schedules_in_bounds(objective, {**h0, **first_fixed})
    with accounting.sharing_traces():  # a run counted now hands its trace to `_unread_names`
        unit = run_flops(objective, {**h0, **first_fixed}, key)
        unread = _unread_names(objective, {**h0, **first_fixed}, key)
    step = hypergradient_flops(objective, method, h0, key, held=first_fixed)
    return _Priced(objective, rows, fixed, unit, step, unread)


def _unread_names(objective: Objective, hparams: dict, key: Key) -> tuple[str, ...]:
    """The hyperparameters of `hparams` that `objective`'s run never reads (`unread_names`).
    `hybrid_search` warns of those that no program's run reads: a hyperparameter that only some
    configurations read (a momentum of the momentum optimiser alone) is legitimate, and a
    grouped structural choice picks the program, so it is in no program's hyperparameters and
    never named. Cost: the run's trace that `run_flops` made (handed over), or one trace of the
    run when it was counted before; nothing once found for the program and these types (kept with
    the searches', the same trace's)."""
    return unread_names(objective, hparams, lambda: traced_run(objective, hparams, key, objective.problem.data).jaxpr)


def _cohort(group: _Priced, space: Space, settings: dict[str, np.ndarray], continuous: Space, method: Method,
            outer: optax.GradientTransformation, key: Key, z0: Any, chunk: int | None) -> Cohort:
    """One program's configurations as a cohort of tuners (id = configuration row), started at z0
    with their choices held fixed, run in chunks of `chunk` rows (None: sized to them, `chunk_rows`;
    compiles its outer step, or takes it from the cache)."""
    z = jax.tree.map(lambda a: np.broadcast_to(a, (len(group.rows), *a.shape)), z0)

    def options(row: int) -> dict:  # as a search records them: 0-d arrays of the values trained, or options
        return space.options_of({n: np.asarray(np.asarray(settings[n])[row]) for n in space.choices})

    return make_cohort(group.objective, continuous, method, outer, key, z, fixed=group.fixed, tuners=group.rows,
                       chunk_size=chunk, unit=group.unit, flops=group.step, extra=options)


def _evaluations(groups: list[_Priced], budget: float, num: int) -> int:
    """Hypergradients per configuration that `budget` buys (>= 2: one step and the final scoring).
    A step of a program's configurations costs its padded rows (`rows_computed`: a chunk split
    over several devices is padded to a multiple of them, and the padding is charged to the trials)."""
    cost = _runs_per_step(groups, [None] * len(groups))
    evaluations = math.floor(budget / cost + 1e-9)
    if evaluations < 2:
        raise ValueError(
            f"budget={budget} runs buys {evaluations} hypergradient(s) per configuration ({num} configurations "
            f"at {cost / num:.2f} runs each); give at least {math.ceil(2 * cost * 10) / 10:.1f} runs or fewer configs")
    return evaluations


def _runs_per_step(groups: list[_Priced], chunks: list[int | None]) -> float:
    """Training-run equivalents one outer step (or the final scoring) of every configuration costs,
    each program run in chunks of the rows given (None: sized to its configurations, `chunk_rows`),
    its padding rows included (`rows_computed`)."""
    return sum(g.step / g.unit * rows_computed(len(g.rows), chunk) for g, chunk in zip(groups, chunks))


def _resumed_chunks(groups: list[_Priced], budget: float, evaluations: int, checkpoint: dict | None,
                    earlier: list[Any]) -> list[int | None]:
    """Each program's chunk (`_cohort`): None, sized to its configurations as a fresh call's, unless
    a resumed call's hypergradients left (its stored `evaluations`, less those up to the checkpoint)
    at the padding of this device count cost more than the budget its `earlier` trials left (a
    study started on fewer devices, or on a count that divides the configurations); then chunks
    that divide each program's configurations (`_unpadded_chunk`): no padding row, the least any
    device count charges, so the first call's plan, paid for at its padding, still fits."""
    sized = [None] * len(groups)
    if checkpoint is None:
        return sized
    left = evaluations - 1 - checkpoint["step"]
    spent = sum(t.runs for t in earlier)
    if left <= 0 or math.floor((budget - spent) / _runs_per_step(groups, sized) + 1e-9) >= left:
        return sized
    return [_unpadded_chunk(len(g.rows)) for g in groups]


def _unpadded_chunk(rows: int) -> int:
    """The most rows, at most `DEFAULT_CHUNK`, of a chunk that divides `rows` (every call full:
    3 configurations in one call, over the one device of 2 that divides them; 67 in calls of one)."""
    return max(d for d in range(1, min(rows, DEFAULT_CHUNK) + 1) if rows % d == 0)
