"""Random and grid search: many settings evaluated by one compiled, vmapped program.

Both baselines evaluate `objective.loss_and_scores` on a batch of settings with `jax.vmap`, in
chunks of `chunk_size` trials. The last chunk is padded (with copies of its first trial) to the same
shape, so all chunks run the same compiled program: one compilation for any number of trials, and
none at all for a later call with new values or keys. Padding is compute spent and is counted.

Every trial trains with the same `key` (common random numbers: the same initialisation and the
same minibatches), so all strategies given one key tune one deterministic function, and a trial's
value equals `objective(hparams, key)` evaluated alone. Settings are drawn from a key derived from
`key` with `fold_in`, independent of the training randomness.

By default (`chunk_size=None`) the trials are split evenly into calls of at most 64, so padding
stays under one trial per call. With several local devices (several GPUs, or CPU devices from
`jax.config.update("jax_num_cpu_devices", n)`), each chunk's trials are sharded across them.

Memory: one chunk of trials at a time: `chunk_size` copies of the parameters, optimiser state and
activations. Diverged trials (non-finite validation loss) are recorded as failed and never best.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import _caches, _compile
from hypergrad._batching import (chunk_for, device_count, first_row, place, shardings, take_rows,
                                 to_host)
from hypergrad._checks import check_count, check_key, check_log, check_log_apart, check_progress, is_int_at_least
from hypergrad._processes import checked_together
from hypergrad._indexing import check_schedules_in_bounds, unread_names, warn_unread_hparams
from hypergrad._store_codec import FINGERPRINT_FORMAT, decode_value, describe_space, encode_value
from hypergrad._types import HParams, Key
from hypergrad.accounting import TracedRun, run_flops, sharing_traces, traced_run
from hypergrad.hypergradient import check_objective
from hypergrad.objective import Objective
from hypergrad.results import COMPLETE, FAIL, Result, Trial, TrialRecorder, with_setup
from hypergrad.space import SAMPLE_STREAM, Space
from hypergrad.store import (NUMERICS, described_objective, extends_difference, fingerprint, newer_hypergrad,
                             numerics_of, objective_digest, studying, uses_minibatches, warn_if_objective_changed)
from hypergrad import structure
from hypergrad.structure import Masked, Structured, check_family, group_rows, plan

__all__ = ["random_search", "grid_search", "evaluate_settings", "run_flops", "use_cpu_cores"]

REMAINDER_SHARE = 4
"""A family's group runs what its whole chunks leave in calls of a chunk / REMAINDER_SHARE rows (`group_calls`)."""
REMAINDERS_FROM = 16
"""The smallest group chunk whose remainders a search runs in those smaller calls (`_group_chunk`)."""


def use_cpu_cores(count: int | None = None) -> int:
    """Splits the CPU into `count` JAX devices (default: one per core), so that searches shard each
    chunk's trials across all cores. Returns the number of devices asked for.

    XLA:CPU runs one device's program mostly on one thread (only large matrix products use more),
    so on one device a search uses about one core; with one device per core each runs its share
    of the trials (on 2 cores the vmapped digits search ran about 1.6x faster:
    benchmarks/RESULTS.md). A population of tuners (`tune(population=N)`) and `hybrid_search`
    shard their tuners the same way; a lone tuner, a lone hypergradient and a lone training run
    run on device 0 as before. Must be called before JAX computes anything: JAX fixes its devices
    when it starts.

    Raises:
        RuntimeError: if JAX has already started (call it first thing, right after the imports).
    """
    count = (os.cpu_count() or 1) if count is None else count
    if not is_int_at_least(count):
        raise ValueError(f"use_cpu_cores(count={count!r}): give a positive number of devices, or None for one per core")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as err:
        raise RuntimeError(f"use_cpu_cores({count}) came after JAX started computing; call it right after "
                           "importing hypergrad, before anything runs") from err
    return count


def check_space(space: Any) -> Space:
    if not isinstance(space, Space):
        raise ValueError(f"space must be an hg.Space, got {type(space).__name__}; build one with "
                         "hg.Space({'lr': hg.LogUniform(1e-3, 1.0), ...})")
    return space



def _check_search_args(chunk_size: Any, log: Any, progress: Any, storage: Any = None) -> None:
    """Raises `ValueError` for a bad chunk size, progress or log path (the study file `storage`
    included; whether its directory can be made is `check_log`'s, after `checked_together`: it
    gathers process 0's verdict), as a search's first checks: before its study is opened or
    anything compiles."""
    if chunk_size is not None:
        check_count(chunk_size, "chunk_size")
    check_log_apart(log, storage)
    check_progress(progress)


def _trials_program(run: TracedRun, chunk: int):
    """Scores of a chunk of trials as one (score, trial) array, rows in `run.score_names` order,
    read back in one transfer (the host fetches each output array separately, about 0.1 ms apiece
    on a CPU, and a cv objective has a dozen scores or more). `run` is the objective's run as
    traced for its FLOP count (`hypergrad.accounting.traced_run`), so the objective's Python is not
    traced again: vmapping its jaxpr gives the program tracing the objective under `vmap` gives.
    Vmapped, or for one trial the plain program with an axis added (a batch of one costs a few
    percent more through vmap)."""
    def scores(h, k, d):
        out = run(h, k, d)[1]
        dtype = jnp.result_type(*out.values())  # one float dtype: every score is read as a float
        return jnp.stack([jnp.asarray(v, dtype) for v in out.values()])

    if chunk == 1:
        return lambda h, k, d: scores(first_row(h), k, d)[:, None]
    # axis_size: a group of a family whose choices are all grouped has no settings left to map
    return jax.vmap(scores, in_axes=(0, None, None), out_axes=1, axis_size=chunk)


def check_target(objective: Any, space: Space) -> None:
    """Raises `ValueError` unless `objective` (an objective or a `Structured` family) can evaluate `space`."""
    if not isinstance(objective, Structured):
        check_objective(objective)
    check_family(objective, space)


# search program -> (names of its score rows, FLOPs of one trial, hyperparameters its run never reads),
# found once per program: the FLOP look-up hashes the data's shapes (~0.1 ms), and the names are the
# same for every objective sharing the program (`_compile.share_programs`: a scikit-learn search's
# fits), which would each trace the run again to find them
_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_caches.register(_programs.clear)


def _evaluate_group(
    objective: Objective,
    settings: HParams,
    rows: np.ndarray,
    key: Key,
    chunk: int,
    recorder: TrialRecorder,
    recorded: Any,
    overlap: Callable[[], Any] = lambda: None,
    first_number: int = 0,
    warn_unread: bool = True,
) -> tuple[float, float]:
    """Evaluates `settings` (one objective, trial numbers `first_number + rows`) in calls of `chunk`
    rows, the last (or only) one padded; adds each trial to `recorder` as its chunk returns, with
    hparams `recorded(i)`; calls `overlap()` before its program compiles, or before its first chunk
    when it is compiled already, or at the end when it runs none (`evaluate_settings` makes it act
    once). Warns of a hyperparameter the objective never reads when `warn_unread` (not for one
    configuration of a structured family, which may leave some unread), whether its program is
    traced now or found compiled. Returns (compile s, run FLOPs). The program is made (looked up, or compiled) at the
    first chunk a resumed study does not hold: a study that holds them all costs no compilation,
    and its run FLOPs are its trials'.

    Settings that fill exactly one chunk go to the program as they are (device arrays from a
    sampler are neither sliced nor copied through the host)."""
    one = _first_setting(settings)
    check_schedules_in_bounds(objective, one)
    num = len(rows)
    spread, replicated = shardings(chunk)
    executable, compile_seconds, unit = None, 0.0, float("nan")
    for start in range(0, num, chunk):
        real = min(chunk, num - start)
        if recorder.resume([first_number + int(n) for n in rows[start:start + real]]):
            unit = recorder.trials[-1].run_flops  # what the program counted when it ran them
            continue  # a resumed study holds this chunk: loaded, not re-run
        began = time.perf_counter()
        batch = _on_program_devices(settings if chunk == num else take_rows(settings, start, chunk), spread)
        if executable is None:  # the first chunk to run: its arguments look the program up
            data, key = place((objective.problem.data, key), replicated)
            executable, compile_seconds, names, unit = _search_program(objective, chunk, (batch, key, data),
                                                                       one, overlap, warn_unread)
            overlap()  # if the program was compiled already
            began = time.perf_counter()
        pending = executable(batch, key, data)  # dispatched: the host's bookkeeping overlaps it
        chunk_hparams = [recorded(start + i) for i in range(real)]
        scores = dict(zip(names, np.asarray(to_host(pending))))
        seconds = time.perf_counter() - began
        structure.record_run(unit * chunk, seconds)
        # padding rows are compute spent too: the chunk's cost is spread over its new trials, and so are
        # rows a resumed study held (stored with their first cost) but whose chunk it could not skip
        # (resumed on another device count, whose chunks are cut elsewhere)
        new = sum(not recorder.holds(first_number + int(rows[start + i])) for i in range(real)) or real
        for i in range(real):
            recorder.add(_trial(first_number + int(rows[start + i]), chunk_hparams[i],
                                {n: v[i] for n, v in scores.items()},
                                flops=unit * chunk / new, seconds=seconds / new, run_flops=unit))
        recorder.report()
    overlap()  # if no chunk ran
    return compile_seconds, unit


def _first_setting(settings: HParams) -> HParams:
    """The first trial's setting, read on the host: what the schedule check runs at and the run is
    traced and counted at (its values, shapes and dtypes, as `first_row` gives them). Indexing a
    device array runs eager programs that JAX compiles once per shape and dtype (a slice and a
    squeeze, two per leaf shape on a process's first search); a numpy index compiles nothing. An array split over several processes' devices, which the host
    cannot read whole, is indexed as before. Cost: the settings' bytes to the host (a view on a
    CPU), no compilation."""
    def first(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a[0]
        return np.asarray(a)[0, ...]  # a 0-d array for a scalar, as a device index gives

    return jax.tree.map(first, settings)


def _on_program_devices(batch: HParams, spread: Any) -> HParams:
    """A chunk's settings as device arrays on `spread` (`shardings`), or on the default device when
    there is none (one device, or a chunk no mesh divides). A one-chunk call's sampled settings
    arrive as device arrays and a longer call's rows are cut on the host; the program cache keys on
    the arguments' shardings (`_compile.signature`), so both must arrive placed alike or a trial
    count of exactly one chunk compiles the program a second time. Costs one host-to-device copy
    of the chunk's settings, which passing host arrays to the program makes anyway; values as given."""
    return jax.device_put(batch) if spread is None else place(batch, spread)


def _search_program(objective: Objective, chunk: int, example: tuple, one: HParams,
                    before_compile: Callable[[], Any] | None = None,
                    warn_unread: bool = True) -> tuple[Any, float, tuple[str, ...], float]:
    """(executable, compile seconds, score names, FLOPs of one trial) of the search program for
    `example` = (settings, key, data) arguments; compiled and counted on the first call only
    (`before_compile` called right before XLA compiles it). `warn_unread`: warns of the
    hyperparameters its run never reads, found in its trace and kept with the program, so a call
    that finds the program compiled (another objective sharing it included) warns as the one that
    traced it did, tracing nothing."""
    began = time.perf_counter()
    # the chunk is in the tag: settings with no leaves (every choice grouped) give it no shape
    executable, compile_seconds = _compile.cached(("search", objective, chunk), example), 0.0
    # a program whose names another thread's hg.clear_caches() dropped is a miss: traced again
    found = None if executable is None else _programs.get(executable)
    if found is None:
        # One trial's run, traced once (`hypergrad.accounting`): counted for its FLOPs, and vmapped
        # and compiled as the search program. The planner's count of it hands over its trace.
        with _compile.naming_missing_hparams():
            run = traced_run(objective, one, example[1], example[2])
        unread = unread_names(objective, one, lambda: run.jaxpr)  # kept for a call that finds the program
        if warn_unread:  # before the compilation
            warn_unread_hparams(unread)
        traced_now = time.perf_counter() - began
        executable, compiled_seconds = _compile.compiled(
            ("search", objective, chunk), lambda: _trials_program(run, chunk), example, before_compile, jaxpr=run.jaxpr)
        # with the run's trace, when made here (0.0 for a program found in memory after a clear of its names)
        compile_seconds = time.perf_counter() - began if compiled_seconds > 0 else 0.0
        _programs[executable] = found = (run.score_names, run_flops(objective, one, example[1]), unread)
        if compiled_seconds > 0:
            # What one more program costs, as the planner prices it: its trace (made here, or by the
            # plan's count and handed over), batching, lowering and compilation.
            structure.record_program(time.perf_counter() - began - traced_now + run.seconds)
    elif warn_unread:  # the names its trace found: those of every objective that shares the program
        warn_unread_hparams(found[2])
    names, unit, _ = found
    return executable, compile_seconds, names, unit


def _trial(number: int, hparams: dict, scores: dict, **cost: float) -> Trial:
    """One evaluated trial; failed when its validation loss is not finite."""
    scores = {name: float(v) for name, v in scores.items()}
    value = scores["val_loss"]
    return Trial(number=number, hparams=hparams, value=value, scores=scores,
                 state=COMPLETE if math.isfinite(value) else FAIL, **cost)


def evaluate_settings(
    objective: Objective | Structured,
    settings: HParams,
    key: Key,
    *,
    strategy: str,
    space: Space | None = None,
    chunk_size: int | None = None,
    log: Any = None,
    progress: Any = False,
    info: dict | None = None,
    sink: Any = None,
    overlap: Callable[[], Any] | None = None,
    first_number: int = 0,
    remainders_from: int = REMAINDERS_FROM,
) -> Result:
    """Evaluates a batch of settings (leading axis = trial) with vmapped programs.

    One program for an `Objective`. For an `hg.Structured` family, structural choices (whose
    settings hold option indices) are masked or grouped as `hypergrad.structure.plan` decides: one
    program per group of trials sharing the options of the grouped choices, all trials in one table
    in their original order, with the options themselves in `trial.hparams`. Every group runs calls
    of one chunk, sized for the mean group (trials / configurations of the grouped choices, bounded
    by `chunk_size`), not for the trials a draw put in it: a new key then reuses the programs. What
    a group's whole chunks leave runs in one more chunk, or, where the chunk has `remainders_from`
    rows or more, in calls of a quarter chunk (`group_calls`) when they run fewer rows: at most two
    programs per configuration, and the padding (computed, and charged to the group's trials) under
    a quarter chunk per group (under one chunk per group below `remainders_from`).

    Args:
        objective: the objective, or an `hg.Structured` family (then `space` is required).
        settings: dict of arrays with a leading trial axis.
        key: training key shared by all trials.
        strategy: label of the result.
        space: the space the settings come from (needed for structural choices).
        chunk_size: trials per vmapped call (every call padded to it, so any number of trials from
            chunk_size up reuses one program; fewer run in one call of their number, rounded up to
            a multiple of the devices so it shards); bounds memory at chunk_size training runs at
            once. None: at most `DEFAULT_CHUNK` trials per call, split evenly (`balanced_chunk`) to
            minimise padding.
        log: optional JSON-lines path; each trial is appended as soon as its chunk returns.
        progress: True to print a line per chunk to stderr, or a callable(str).
        info: extra facts to store in the result.
        sink: a study writer (`hypergrad.store`) that commits each chunk's trials and holds those
            of a resumed study (their chunks are skipped), or None. For a family it also keeps the
            rates the structure plan decided from (in the study's checkpoint, with the first chunk
            it commits), and a resumed study plans with them: measured rates differ between
            processes and within one, and a new plan could mask what the first call grouped.
        overlap: called once, right before XLA compiles the first search program (or, when
            every program is compiled already, before the first chunk runs): XLA compiles with the
            GIL released, so work the callback starts on a thread of its own (a search's refit
            program, say) overlaps the compilation on another core.
        first_number: the number of the first setting's trial (the rest follow in order): a
            search continued from an earlier result (`random_search(extends=...)`) numbers on.
        remainders_from: the smallest group chunk whose groups run their remainder in quarter
            chunks (`REMAINDERS_FROM`; `optuna_search` gives 1: its rounds split anew every round).
    """
    key = check_key(key)
    if chunk_size is not None:
        chunk_size = check_count(chunk_size, "chunk_size")
    # A sampled batch arrives on the device; a one-chunk search passes it to its program as it is,
    # and copies it to the host only after dispatching the program (the copy overlaps the run).
    num = len(next(iter(settings.values())))
    one_chunk = chunk_for(num, chunk_size) == num and all(isinstance(v, jax.Array) for v in settings.values())
    host = functools.cache(lambda given=settings: {name: np.asarray(value) for name, value in given.items()})
    info = dict(info or {})
    with sharing_traces():  # the plan's count of a run is the trace its search program compiles
        if isinstance(objective, Structured):
            settings = host()
            stored = None if sink is None else _stored_rates(sink.checkpoint)
            groups, rates = _planned_groups(objective, space, settings, key, info, stored)
            if sink is not None and stored is None:
                sink = _RatesSink(sink, rates)
        else:
            check_objective(objective)
            if space is not None:
                check_family(objective, space)
            groups = [({}, objective, np.arange(num))]
            if not one_chunk:
                settings = host()
        shared, remainder = _group_chunk(groups, space, chunk_size, remainders_from)

        def calls_of(rows):
            return group_calls(len(rows), shared, remainder)

        recorder = TrialRecorder(strategy, log, progress, total=num, sink=sink)
        try:
            compile_seconds, unit = _evaluate_groups(groups, settings, host, space, key, calls_of, recorder,
                                                     _once(overlap), first_number)
        finally:
            recorder.close()
    info.update({"devices": device_count(), "processes": jax.process_count(), "chunk_size": shared,
                 "num_trials": num, "programs": sum(len(calls_of(rows)) for _, _, rows in groups)})
    if remainder < shared:
        info["remainder_chunk_size"] = remainder
    trials = tuple(sorted(recorder.trials, key=lambda t: t.number))
    return Result(strategy, trials, unit, compile_seconds, info)


def _planned_groups(family: Structured, space: Space | None, settings: dict[str, np.ndarray], key: Key,
                    info: dict, stored: structure.Rates | None = None,
                    ) -> tuple[list[tuple[dict, Objective, np.ndarray]], structure.Rates]:
    """((config, objective, trial rows) per program of a family, the rates planned with), as
    `structure.plan` decides from `stored` (a resumed study's rates) or else the rates measured so
    far; the plan and its seconds go into `info`."""
    if space is None:
        raise ValueError("evaluate_settings(space=None): an hg.Structured family needs the space its "
                         "settings come from, to map option indices to options")
    check_family(family, space)
    began = time.perf_counter()
    # timed by each process (and read by each from the file): process 0's decide, so all plan alike
    given = structure.measured_rates() if stored is None else stored
    rates = given.of_process_0()
    decisions = plan(family, space, settings, key, rates=rates)
    info["structure"] = {name: d.to_dict() for name, d in decisions.items()}
    info["plan_seconds"] = time.perf_counter() - began
    groups = [(config, family.objective(config), rows) for config, rows in group_rows(space, settings, decisions)]
    return groups, rates


def _stored_rates(checkpoint: dict | None) -> structure.Rates | None:
    """The plan's rates a search's study stored (`_RatesSink`), or None when it stored none (a new
    study, or one stored before searches kept them)."""
    state = None if checkpoint is None else checkpoint.get("state")
    if not (isinstance(state, Mapping) and "rates" in state):
        return None
    try:
        return structure.Rates.from_array(state["rates"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"this search study's stored plan rates are unreadable ({err}); the file was edited or "
                         "damaged; use another study name") from err


class _RatesSink:
    """The study's writer, storing the plan's rates as the study's checkpoint with the first chunk
    it commits, so that a resumed call plans as the first one did (a plan is a function of its
    rates). Costs nothing more than that chunk's transaction. What `TrialRecorder` uses of a sink,
    passed through."""

    def __init__(self, writer: Any, rates: structure.Rates):
        self.writer, self.done = writer, writer.done
        self.rates: np.ndarray | None = rates.to_array()

    def add(self, trial: Trial) -> None:
        self.writer.add(trial)

    def commit(self, checkpoint: Any = None) -> None:
        rates, self.rates = self.rates, None
        if rates is None:  # stored with the first chunk (a search commits no checkpoint of its own)
            self.writer.commit(checkpoint)
            return
        self.writer.commit(lambda: {"step": 0, "number": 0, "state": {"rates": rates}})


def _once(fn: Callable[[], Any] | None) -> Callable[[], None]:
    """`fn` on the first call, nothing after (nothing at all for None)."""
    pending = [fn] if fn is not None else []
    return lambda: pending.pop()() if pending else None


def _group_chunk(groups: list, space: Space | None, chunk_size: int | None,
                 remainders_from: int = 0) -> tuple[int, int]:
    """(rows per call, rows per remainder call) of every group's programs (`group_calls`). The chunk
    (`chunk_for`) is of the mean group, the trials over the configurations the grouped choices can
    make; never of the trials a draw put in each group: those differ from key to key, and a new chunk
    is a new program, so a new key would compile anew. A larger group runs more calls, and what its
    whole chunks leave (or a smaller group) runs in calls of a quarter chunk, rounded up to the
    devices, where the chunk has `remainders_from` rows or more (below, a remainder is padded to a
    whole chunk: under `remainders_from` rows a group, not worth another program, and a new key then
    compiles nothing); a grid's groups are equal (with no `chunk_size`, whole chunks). The padding
    is computed and charged to the group's trials. One objective, or one configuration:
    `chunk_for(trials, chunk_size)`, and no remainder calls."""
    num = sum(len(rows) for _, _, rows in groups)
    config = groups[0][0]
    configs = math.prod(len(space[name].options) for name, option in config.items() if not isinstance(option, Masked))
    chunk = chunk_for(-(-num // configs), chunk_size)
    if configs == 1 or chunk < remainders_from:
        return chunk, chunk
    return chunk, chunk_for(-(-chunk // REMAINDER_SHARE), chunk)


def group_calls(num: int, chunk: int, part: int) -> list[tuple[int, int, int]]:
    """(first row, end row, rows per call) of the parts of a group of `num` trials, each run in calls
    of its rows per call (the last call padded): the group's whole chunks of `chunk` rows, then what
    they leave in calls of `part` rows, or in one more chunk where those calls would run as many
    rows (or more). So a group runs at most `part - 1` rows of padding past its trials when
    `part < chunk` (under `chunk` rows else), on at most two programs."""
    whole = num // chunk * chunk
    rest = num - whole
    if rest and -(-rest // part) * part < chunk:
        return ([(0, whole, chunk)] if whole else []) + [(whole, num, part)]
    return [(0, num, chunk)]


def _evaluate_groups(groups: list, settings: HParams, host: Any, space: Space | None, key: Key,
                     calls_of: Callable[[np.ndarray], list], recorder: TrialRecorder, overlap: Callable[[], Any],
                     first_number: int = 0) -> tuple[float, float]:
    """Evaluates every group into `recorder`, a group of trials `rows` in the parts `calls_of(rows)`
    gives (`group_calls`); returns (compile seconds, mean FLOPs of a trial's run: groups differ in
    cost)."""
    structural = space.structural if space is not None else ()
    compile_seconds, units = 0.0, []
    for config, group_objective, rows in groups:
        for start, end, chunk in calls_of(rows):
            part = rows[start:end]
            if config:
                used = {name: v[part] for name, v in settings.items()
                        if name not in config or isinstance(config[name], Masked)}
            else:  # one group of every trial in order (device arrays in a one-chunk search)
                used = settings

            def recorded(i, part=part):  # in the space's order, as grid, optuna and hybrid record (a draw is sorted)
                given = host()
                row = {name: np.asarray(given[name][part[i]]) for name in _in_space_order(given, space)}
                return space.options_of(row) if structural else row

            seconds, unit = _evaluate_group(group_objective, used, part, key, chunk, recorder, recorded,
                                            overlap, first_number, warn_unread=not config)
            compile_seconds += seconds
            units.append((unit, len(part)))
    num = sum(n for _, n in units)
    return compile_seconds, sum(u * n for u, n in units) / num


def _in_space_order(settings: Mapping[str, Any], space: Space | None) -> list[str]:
    """The names of `settings` in `space`'s order (any it does not declare after them, in their own)."""
    names = [name for name in (space.names if space is not None else ()) if name in settings]
    return names + [name for name in settings if name not in names]


def random_search(
    objective: Objective | Structured,
    space: Space,
    key: Key,
    num_trials: int,
    *,
    chunk_size: int | None = None,
    log: Any = None,
    progress: Any = False,
    storage: Any = None,
    study: str | None = None,
    extends: Result | None = None,
) -> Result:
    """Random search: `num_trials` settings drawn by `space.sample`, evaluated vmapped in chunks.

    Shaped hyperparameters are one value broadcast to their shape unless declared
    `independent=True`. Cost: `num_trials` training runs plus evaluations, in
    ceil(num_trials / chunk_size) calls of one compiled program.

    Args:
        objective: the objective, or an `hg.Structured` family when the space has structural
            choices (trials are then masked or grouped by configuration; see `hypergrad.structure`).
        space: where to sample.
        key: PRNG key; trials train with it (common random numbers) and sample from a key folded
            from it.
        num_trials: number of settings, >= 1.
        chunk_size: trials per vmapped call (memory bound); None splits the trials evenly into
            calls of at most `DEFAULT_CHUNK` (see `evaluate_settings`).
        log: optional JSON-lines path to append each trial to as it is produced (with a study,
            naming it; a resumed call logs each trial once: `hypergrad.results.TrialRecorder`).
        progress: True to print progress to stderr, or a callable(str).
        storage, study: a SQLite file (created if missing) and a study name, both or neither: every
            chunk's trials are committed as it returns, and the same call again resumes the study
            (stored trials loaded, never re-run; see `hypergrad.store`). A family's resumed study
            is planned with the rates its first call planned with (stored with its first chunk),
            so it masks and groups as that call did.
        extends: an earlier `Result` of this search (same objective, space and key: another
            objective, space or key is a `ValueError`) with at most `num_trials` trials, to
            continue: a key's draws do not depend on how many are drawn, so its trials are this
            search's first ones; they are kept, not re-run, and only the
            rest are drawn and evaluated (numbered on from them). The result is that of one call
            with `num_trials`: the same trials and hyperparameters, and values equal to rounding,
            not bitwise, because the kept trials ran in vmapped calls sized for the earlier count
            and the rest in calls sized for the rest, and XLA rounds a batch of another size in
            other last bits (README, Determinism). Bitwise when both calls are given one
            `chunk_size` no larger than the earlier count nor the trials added (every trial then
            runs in the program one call runs it in). `earlier` may be a saved or stored Result
            (`Result.load`, `hg.load_study`): a structural option it read back as its stored form
            (a function as its repr) is matched with the space's options and returned as the
            space's own; a stored study's `info["space"]` (the declared distributions
            `Result.to_optuna` exports) is kept. For a comparison at equal wall (or execution)
            time: the search given the seconds a slower strategy took (`hypergrad compare`). Not
            with `storage` (a study resumes itself).

    Returns:
        a `Result` whose trials are in sampling order; `info["objective"]` identifies the objective
        (`hypergrad.store.objective_digest`, in the fingerprint format `info["objective_format"]`),
        so that `extends=` can refuse another one.
    """
    began = time.perf_counter()  # the call's seconds outside its trials are its set-up (`with_setup`)
    with checked_together("random_search", num_trials=num_trials, chunk_size=chunk_size, log=log, storage=storage,
                          study=study, extends=extends) as call:  # several processes: a refusal on one stops all
        _compile.refuse_disabled_jit()  # first: the space's draw would run op by op for seconds before it
        check_target(objective, check_space(space))
        num_trials = check_count(num_trials, "num_trials")
        key = check_key(key)
        _check_search_args(chunk_size, log, progress, storage)
        if extends is not None:
            checked = _check_extends(extends, objective, num_trials, stored=storage is not None or study is not None,
                                     space=space)
            settings = space.sample(key, num_trials, stream=SAMPLE_STREAM)  # local: no collective
            kept = _kept_trials(extends, settings, space)  # here: it refuses another key's or space's draws
            # no study compares the calls on this path (studying() does on the other), so the block does
            call.compare(lambda: fingerprint("random", objective, space, key, num_trials=num_trials,
                                             extended_from=len(extends.trials)))
    check_log(log, storage)
    if extends is not None:
        return _extended(extends, kept, objective, space, key, settings, num_trials, checked[0], chunk_size=chunk_size,
                         log=log, progress=progress, began=began, described=checked[1])
    with studying(storage, study, kind="random", space=space,
                  fingerprint=lambda: fingerprint("random", objective, space, key, num_trials=num_trials)) as writer:
        settings = space.sample(key, num_trials, stream=SAMPLE_STREAM)  # the fold inside the draw's program
        digest, described = described_objective(objective)
        result = evaluate_settings(objective, settings, key, strategy="random", space=space, chunk_size=chunk_size,
                                   log=log, progress=progress, sink=writer,
                                   info={"objective": digest,
                                         "objective_format": FINGERPRINT_FORMAT, "numerics": NUMERICS})
        if writer is None:  # a stored call's end warns for its study (`studying`); before the seconds are taken
            warn_if_objective_changed(described, objective, "random_search", _UNEXTENDABLE)
        result = with_setup(result, began)
        return result if writer is None else writer.finish(result, space)


# What a random search's Result whose objective changed during the call cannot do (`warn_if_objective_changed`)
_UNEXTENDABLE = ("random_search(extends=...) would refuse its Result (its info['objective'] digest is of the "
                 "objective as the call began)")


def _check_extends(earlier: Any, objective: Objective | Structured, num_trials: int, *, stored: bool,
                   space: Space | None = None) -> tuple[str, Any]:
    """Raises `ValueError` unless `earlier` can be extended to `num_trials` trials of `objective`
    (`random_search(extends=...)`); returns the objective's digest and description
    (`described_objective`). A refusal for another objective names the first value that differs
    when this process made or read `earlier`'s description (`extends_difference`)."""
    if stored:
        raise ValueError("random_search(extends=..., storage=..., study=...): a stored study holds the num_trials "
                         "it was started with (called again it resumes to that count, and refuses another); to "
                         "extend it, pass extends=hg.load_study(storage, study) without storage= and study=, or "
                         "start a new study with the larger num_trials (its first trials are the same draws)")
    if not isinstance(earlier, Result) or earlier.strategy != "random":
        raise ValueError(f"random_search(extends={type(earlier).__name__}): give the Result of an earlier "
                         "random_search of the same objective, space and key")
    digest, described = described_objective(objective)
    if not _same_objective(earlier.info, objective, digest, space):
        raise ValueError("random_search(extends=...) was given the Result of a search of another objective (its "
                         "data, num_steps, optimizer or the values it reads differ"
                         f"{extends_difference(earlier.info.get('objective'), objective)}): the trials would mix two "
                         "functions; extend a Result of random_search on this objective, or start a new search")
    done = len(earlier.trials)
    if done > num_trials:
        raise ValueError(f"random_search(extends=...) holds {done} trials, more than num_trials={num_trials}: "
                         f"give num_trials >= {done}")
    if not jax.config.jax_threefry_partitionable:
        raise ValueError("random_search(extends=...) needs jax_threefry_partitionable=True (JAX's default), "
                         "under which a key's first draws do not depend on how many are drawn")
    return digest, described


def _same_objective(info: Mapping[str, Any], objective: Objective | Structured, digest: str,
                    space: Space | None = None) -> bool:
    """Whether a Result's `info["objective"]` is the digest of `objective` (whose digest in the
    current format is `digest`), compared in the fingerprint format it was made in
    (`info["objective_format"]`): a Result saved by an older hypergrad still extends, as a study
    stored in an older format still resumes. A digest saved without its format (before formats were
    kept with it: formats 2 to 5) is compared in each of those. A Result made before digests were
    kept has none and passes. Cost: one more description of the objective per older format tried,
    only when the current digest differs.

    Raises:
        ValueError: the Result was made by a newer hypergrad (a later fingerprint format, whose digest
            this one cannot make, or `NUMERICS`), by an older one whose numbers differ (`NUMERICS`), or,
            for an objective that draws minibatches (`uses_minibatches`: a family's objectives of the
            structural choices of `space`), by one that cannot show its minibatch order
            (no "numerics" nor "objective_format" in its info: made before fingerprint format 5 perhaps,
            whose epoch order differed): its trials and the new ones would be two computations'."""
    version = info.get("objective_format")
    numerics = numerics_of(version, info.get("numerics"))
    later = isinstance(version, int) and version > FINGERPRINT_FORMAT
    if later or (numerics or 0) > NUMERICS:
        raise ValueError(newer_hypergrad(
            "random_search(extends=...)'s Result", f"fingerprint format {version}" if later else f"numerics {numerics}",
            f"writes format {FINGERPRINT_FORMAT}, numerics {NUMERICS}",
            "to extend it, or run random_search again without extends="))
    if numerics is None and uses_minibatches(objective, space) or numerics is not None and numerics < NUMERICS:
        why = ("its objective draws minibatches and the Result cannot show their order: hypergrad drew another epoch "
               "order until part-way through fingerprint format 4" if numerics is None else
               f"numerics {numerics} saved, {NUMERICS} now")
        raise ValueError(
            "random_search(extends=...) was given a Result of an older hypergrad whose numbers for this call may "
            f"differ from this version's ({why}), so its trials and the new ones would mix two computations. Run "
            "random_search again without extends= to have this version's trials; the Result stays readable")
    saved = info.get("objective")
    if saved is None or saved == digest:
        return True
    versions = (5, 4, 3, 2) if version is None else (version,) if version in range(2, FINGERPRINT_FORMAT) else ()
    return any(saved == objective_digest(objective, format=v) for v in versions)


def _extended(earlier: Result, kept: tuple[Trial, ...], objective: Objective | Structured, space: Space, key: Key,
              settings: HParams, num_trials: int, digest: str, *, chunk_size: int | None, log: Any, progress: Any,
              began: float, described: Any = None) -> Result:
    """`random_search(..., extends=earlier)`, `earlier` checked (`_check_extends`, which gave the
    objective's `digest` and its description `described`, compared again at the end:
    `warn_if_objective_changed`); `_kept_trials`, which gave its trials `kept` as the first of
    the draws `settings`): `kept`, then the draws after them. The continuation's
    compilation (when its chunk differs) and set-up (this call's other seconds outside its trials,
    from `began`) are paid after `earlier`'s trials, so they are placed before the first new trial
    (`info["setup_seconds_at"]`), not before trial 0. The space's description (`info["space"]`,
    which `Result.to_optuna` reads for the declared distributions) is kept when `earlier` has one (a
    stored study's result), described from `space` (the one whose draws `kept` matched)."""
    done = len(earlier.trials)
    if done == num_trials:
        return earlier if all(a is b for a, b in zip(kept, earlier.trials)) else dataclasses.replace(earlier, trials=kept)
    # cut on the host and put back (slicing device arrays, or jnp.asarray, compiles per count of trials)
    rest = evaluate_settings(objective, {name: jax.device_put(np.asarray(v)[done:]) for name, v in settings.items()},
                             key, strategy="random",
                             space=space, chunk_size=chunk_size, log=log, progress=progress, first_number=done,
                             info={"objective": digest, "objective_format": FINGERPRINT_FORMAT,
                                   "numerics": NUMERICS})
    warn_if_objective_changed(described, objective, "random_search(extends=...)", _UNEXTENDABLE)
    rest = with_setup(rest, began)
    placed = [*earlier.info.get("setup_seconds_at", ()), [done, rest.compile_seconds + rest.setup_seconds]]
    info = dict(rest.info, num_trials=num_trials, extended_from=done, setup_seconds_at=placed,
                setup_seconds=earlier.setup_seconds + rest.setup_seconds)
    if "space" in earlier.info:  # else to_optuna of the whole exports a LogUniform as the values' linear range
        info["space"] = describe_space(space)
    return Result("random", kept + rest.trials, rest.run_flops,
                  earlier.compile_seconds + rest.compile_seconds, info)


def _kept_trials(earlier: Result, settings: HParams, space: Space) -> tuple[Trial, ...]:
    """`earlier`'s trials, when they hold the first rows of `settings` (as trials record them), with
    the space's own options for structural options read back by their stored form; raises
    `ValueError` when they do not. A structural option read back from a saved or stored Result
    (`Result.load`, `hg.load_study`) is its stored form (a function or other object: its repr,
    `encode_value`), so it is compared with the stored forms of the space's options: it matches
    when it names the drawn option and no other."""
    head = {name: np.asarray(v)[:len(earlier.trials)] for name, v in settings.items()}
    kept = []
    for i, trial in enumerate(earlier.trials):
        row = {name: v[i] for name, v in head.items()}
        drawn = space.options_of(row) if space.structural else row
        if drawn.keys() != trial.hparams.keys():
            raise ValueError(_NOT_THE_FIRST_DRAWS)
        restored = {}
        for name, value in drawn.items():
            given = trial.hparams[name]
            if _same_value(given, value):
                continue
            named = _options_named(space[name].options, given) if name in space.structural else []
            if not named or int(row[name]) not in named:
                raise ValueError(_NOT_THE_FIRST_DRAWS)
            if len(named) > 1:
                raise ValueError(
                    f"random_search(extends=...): trial {trial.number}'s {name!r} was read back from a saved or "
                    f"stored Result as {given!r}, the stored form of options {named} of the space alike, so which "
                    "of them it was cannot be told; give those options reprs of their own (functions defined "
                    "with def under distinct names, say), or extend the Result that random_search returned")
            restored[name] = value
        kept.append(dataclasses.replace(trial, hparams={**trial.hparams, **restored}) if restored else trial)
    return tuple(kept)


_NOT_THE_FIRST_DRAWS = ("random_search(extends=...): its trials are not this search's first draws; extend a "
                        "Result of random_search with the same space and key")


def _options_named(options: tuple, given: Any) -> list[int]:
    """Indices of the `options` that `given` is, or is the stored form of (`encode_value` then
    `decode_value`: what a saved or stored Result reads back)."""
    return [j for j, option in enumerate(options)
            if _same_value(given, option) or _same_value(given, decode_value(encode_value(option)))]


def _same_value(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values are equal: arrays element for element, shapes included."""
    if a is b:
        return True
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):  # a ragged option (a tuple of tuples of other lengths)
        return False


def grid_search(
    objective: Objective | Structured,
    space: Space,
    key: Key,
    points_per_axis: int,
    *,
    chunk_size: int | None = None,
    log: Any = None,
    progress: Any = False,
    storage: Any = None,
    study: str | None = None,
) -> Result:
    """Grid search over `space.grid(points_per_axis)` (bounds included), vmapped in chunks.

    Cost: points_per_axis ** (number of axes) training runs; a `Choice` contributes all its options.

    The trials run in the grid's order, the space's first entry slowest (`Space.grid`), so a grid cut by a
    budget (its first trials, as `Result.best_within` and `curve` read them) is one corner of it, not a
    coarser grid, and `hg.compare` lines a grid up only whole (`hypergrad.results.line_up_pick`).

    Args:
        objective, space, key, chunk_size, log, progress, storage, study: as in `random_search`.
        points_per_axis: values per continuous axis, >= 1.
    """
    began = time.perf_counter()  # the call's seconds outside its trials are its set-up (`with_setup`)
    with checked_together("grid_search", points_per_axis=points_per_axis, chunk_size=chunk_size, log=log,
                          storage=storage, study=study):  # several processes: a refusal on one stops all
        _compile.refuse_disabled_jit()
        check_target(objective, check_space(space))
        key = check_key(key)
        _check_search_args(chunk_size, log, progress, storage)
        settings = space.grid(points_per_axis)
    check_log(log, storage)
    with studying(storage, study, kind="grid", space=space, fingerprint=lambda: fingerprint(
            "grid", objective, space, key, points_per_axis=points_per_axis)) as writer:
        result = evaluate_settings(objective, settings, key, strategy="grid", space=space, chunk_size=chunk_size,
                                   log=log, progress=progress, info={"points_per_axis": points_per_axis}, sink=writer)
        result = with_setup(result, began)
        return result if writer is None else writer.finish(result, space)
