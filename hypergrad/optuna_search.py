"""Optuna as an outside baseline: its samplers propose, one vmapped program evaluates.

`optuna_search` runs Optuna's ask-and-tell interface in rounds. Each round asks `batch_size` trials
from an Optuna study (TPE or random sampler, or any sampler instance), evaluates the whole batch
with the same compiled, vmapped program as `random_search` (`hypergrad.search.evaluate_settings`),
and tells the validation losses back. The result is an ordinary `hg.Result`, trials numbered in ask
order with the same compute accounting as `random_search`, so `hg.compare` lines Optuna up with the
library's own strategies at equal compute.

Space mapping (one Optuna parameter per search axis, as the baselines see the space):

    Uniform(lo, hi)                      suggest_float(name, lo, hi)
    LogUniform(lo, hi)                   suggest_float(name, lo, hi, log=True)
    shaped, not independent              one suggestion, broadcast to the shape (a constant schedule)
    shaped, independent=True             one suggestion per element, named "lr[3]" ("w[1,2]")
    Choice, numeric                      suggest_categorical over the numbers; settings hold the number
    Choice, structural                   suggest_categorical over the options' labels
                                         (`hypergrad.results.optuna_choices`: numbers as declared,
                                         any other option by its str, no memory addresses; the
                                         labels `Result.to_optuna` writes); settings hold the
                                         option's index (int32)

Every trial trains with the same `key` (common random numbers), as in `random_search`, so a
trial's value equals `objective(hparams, key)` evaluated alone.

Rounds: each asks `min(batch_size, trials left)` trials from the study, evaluates them together
(`hypergrad.search.evaluate_settings`, in chunks of `chunk_size`), and tells each value back
(diverged trials, with a non-finite validation loss, are told as `TrialState.FAIL`). Every round
runs `min(batch_size, chunk_size, num_trials)` rows: a round with fewer trials (the last one) is
padded with copies of its first trial, so every round runs the same compiled program: one
compilation for any number of rounds, and none for a later call with the same names, shapes and
row count (random and grid search share that program too). A search of fewer trials than a batch
is one round of just its trials (no padding). The padding is never told to Optuna, so the trials
it proposes do not depend on it.

An `hg.Structured` family whose choices are grouped runs one program per configuration instead,
and a round's rows split among them anew every round. Each group runs calls of a fixed chunk,
sized for the round's mean group (its rows over the configurations the grouped choices make), and
what the whole chunks leave in calls of a quarter chunk (`hypergrad.search.group_calls`), the
last call of each padded. So each configuration runs at most two programs (two compilations) for
any number of rounds, and none for a later call with the same names, shapes and row count, while
every round's plan groups the same choices (`hypergrad.structure.plan` decides each round from the
rates measured so far); the padding is under a quarter chunk per group and round.

Cost: `num_trials` training runs, plus the padding of a short last round and, for a family's
groups, of their last calls (counted as compute, as `random_search` counts its padded chunks: a
group's padding rows are charged to that group's rows, and a short round's padding rows' FLOPs,
seconds and runs are shared equally by the round's trials, so the result's totals are what ran,
also for an `hg.Structured` family whose padding runs another configuration than a trial), plus
Optuna's own time, which is host-side and not counted in the trials' seconds or FLOPs. TPE's ask
time grows with the number of finished trials (it refits its Parzen estimators on all of them)
and with the number of search axes (an `independent=True` schedule of T steps is T axes); the
random sampler's does not.

Bias: asking a batch at once loses some sequential information compared with one-at-a-time
TPE: the trials of a round are proposed before any of them has a value (Optuna's constant-liar
heuristic, which a "tpe" sampler turns on, only spreads them apart). This is the known trade-off
of batched Bayesian optimisation; `batch_size=1` recovers sequential TPE at the price of one
(unvmapped) program call per trial. TPE samples at random until 10 trials have finished (its
startup trials), so with `batch_size >= 10` its whole first round is random.

Memory: one chunk of trials at a time, as `random_search` (`min(batch_size, chunk_size,
num_trials)` copies of the parameters, optimiser state and activations), plus the study's trial
records on the host.

Several processes (`jax.distributed`): every process asks its own sampler, and all must propose
the same settings, since they evaluate one program together. Each round's proposals are compared
across the processes before the round runs (one all-gather of a 20-byte digest per round, also a
barrier, whose small gather program JAX compiles on its first call; nothing in a lone process), and
proposals that differ (samplers seeded otherwise, or of other kinds, a `study=` holding other
trials) are a `ValueError` on every process naming `sampler=` and `study=`, before the round that
differs runs (the first round: before any trial's program compiles).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from hypergrad._extras import import_extra
from hypergrad._indexing import unread_warned_once
from hypergrad._checks import (check_count, check_key, check_log, check_log_apart, check_progress, is_int_at_least,
                               shared_outcome, users_stacklevel)
from hypergrad._compile import refuse_disabled_jit
from hypergrad._processes import checked_together
from hypergrad._store_codec import encode_hparams
from hypergrad._types import HParams, Key
from hypergrad.objective import Objective
from hypergrad.structure import Structured
from hypergrad.results import (FAIL, Result, TrialRecorder, check_optuna_names, optuna_choices, optuna_element_names,
                               with_setup)
from hypergrad.search import check_space, check_target, evaluate_settings
from hypergrad.space import SAMPLE_STREAM, Choice, LogUniform, Space, dtype_of
from hypergrad.store import StudyWriter, check_study, fingerprint, studying

__all__ = ["optuna_search"]

_SAMPLERS = ("tpe", "random")
_SEED_STREAM = SAMPLE_STREAM - 1  # fold_in tag of the sampler seed, beside random_search's sampling stream


def _import_optuna() -> Any:
    """optuna (an extra, imported on first use without keeping the caller's frames alive:
    `hypergrad._extras.import_extra`), or `ImportError` naming the extra."""
    return import_extra("optuna", "optuna_search", "optuna")


def _python_number(option: Any) -> int | float:
    return option.item() if isinstance(option, np.generic) else option


def optuna_distributions(space: Space) -> dict[str, Any]:
    """The Optuna distributions of a space's search axes, keyed by Optuna parameter name."""
    optuna = _import_optuna()
    check_optuna_names({name: optuna_element_names(name, dist.shape) if _elementwise(dist) else [name]
                        for name, dist in space.items})
    dists = {}
    for name, dist in space.items:
        if isinstance(dist, Choice):
            numbers = [_python_number(o) for o in dist.options]
            options = optuna_choices(dist.options) if dist.structural else numbers
            dists[name] = optuna.distributions.CategoricalDistribution(options)
            continue
        log = isinstance(dist, LogUniform)
        float_dist = optuna.distributions.FloatDistribution(dist.lo, dist.hi, log=log)
        names = optuna_element_names(name, dist.shape) if _elementwise(dist) else [name]
        dists.update({n: float_dist for n in names})
    return dists


def _elementwise(dist: Any) -> bool:
    """Whether a space entry is one Optuna param per element (an independent shaped float range)."""
    return not isinstance(dist, Choice) and bool(dist.independent and dist.shape)


def settings_from_params(space: Space, rows: list[dict[str, Any]]) -> HParams:
    """Settings (leading trial axis, the dtypes `Space.sample` uses) from Optuna parameter dicts."""
    settings = {}
    for name, dist in space.items:
        dtype = np.dtype(dtype_of(dist))
        if isinstance(dist, Choice):
            if dist.structural:
                labels = optuna_choices(dist.options)
                values = [labels.index(row[name]) for row in rows]
            else:
                values = [row[name] for row in rows]
            settings[name] = np.asarray(values, dtype)
        elif dist.independent and dist.shape:
            names = optuna_element_names(name, dist.shape)
            settings[name] = np.asarray([[row[n] for n in names] for row in rows], dtype).reshape(
                (len(rows), *dist.shape))
        else:
            column = np.asarray([row[name] for row in rows], dtype)
            column = column.reshape((len(rows),) + (1,) * len(dist.shape))
            settings[name] = np.broadcast_to(column, (len(rows), *dist.shape)).copy()
    return settings


def _pad(settings: HParams, size: int) -> HParams:
    """Rows padded with copies of row 0 to `size` rows (so every batch runs the same program)."""
    def pad(a):
        extra = size - a.shape[0]
        return a if extra <= 0 else np.concatenate([a, np.repeat(a[:1], extra, axis=0)], axis=0)
    return {name: pad(a) for name, a in settings.items()}


def optuna_search(
    objective: Objective | Structured,
    space: Space,
    key: Key,
    num_trials: int,
    *,
    sampler: Any = "tpe",
    batch_size: int = 16,
    seed: int | None = None,
    chunk_size: int = 64,
    log: Any = None,
    progress: Any = False,
    study: Any = None,
    storage: Any = None,
) -> Result:
    """Optuna's sampler proposes settings in batches; each batch is evaluated by one vmapped program.

    Rounds, padding, cost, bias and memory: see the module docstring.

    Args:
        objective: the objective.
        space: the search space (see the module docstring for how it maps to Optuna).
        key: PRNG key; every trial trains with it (common random numbers), and the sampler's seed is
            derived from a key folded from it unless `seed` is given.
        num_trials: trials to run, >= 1.
        sampler: "tpe" (`optuna.samplers.TPESampler`, constant liar on), "random"
            (`RandomSampler`), or an Optuna sampler instance (`seed` must then be None). Each call
            asks a copy of the instance (`copy.deepcopy`), so the instance stays as given and the same
            call again proposes the same settings; one that cannot be copied (NSGAIISampler holds a lock)
            is used as is, and each call advances its random state.
        batch_size: trials asked per round and evaluated together, >= 1.
        seed: seed of a named sampler, 0 <= seed < 2**32 (default: derived from `key`).
        chunk_size: trials per vmapped call (memory bound), >= 1.
        log: optional JSON-lines path; each trial is appended, numbered in ask order, as soon as its
            round returns.
        progress: True to print a line per round to stderr, or a callable(str).
        study: an existing single-objective, minimising `optuna.Study` to continue (its own sampler
            is used and its earlier trials inform it); `sampler` is then ignored unless it is a
            sampler instance other than the study's, which is an error. Default: a new in-memory study.
            With `storage`, a name instead: the study of hypergrad's store (`hypergrad.store`) that
            keeps every round's trials; the same call again resumes it, replaying the stored rounds
            to a new sampler seeded as before (each re-asked setting must equal the stored one, so
            a sampler instance must be seeded: an unseeded one warns at the start of such a call)
            and evaluating only the rounds not stored; once the study has finished, it returns the
            stored `Result` (the first call's compile and set-up seconds: `hypergrad.store.load_study`).
        storage: a SQLite file (created if missing) for a `study` name, or None.

    Returns:
        a `Result` with strategy "optuna-tpe", "optuna-random" (or "optuna-<SamplerClass>"), trials
        numbered from 0 in ask order; `info` holds the sampler, batch and chunk sizes and the Optuna
        trial number of the first trial.

    Raises:
        ImportError: optuna is not installed.
        ValueError: a bad argument (a space entry named as another's element param, "lr[0]" beside an
            independent "lr", included), before anything is compiled or asked; with several processes,
            samplers proposing different settings, before the round that differs runs.

    An error or Ctrl-C fails (`TrialState.FAIL`) the trials asked and not yet told, and is raised as it was.
    Optuna's GridSampler asks the study to stop once its grid is told, which outside `study.optimize`
    raises (optuna issue 5141): the request is ignored, and a search of more trials than the grid goes on
    with the grid points the sampler proposes again (with its warning).
    """
    began = time.perf_counter()  # the call's seconds outside its trials are its set-up (`with_setup`)
    with checked_together("optuna_search", num_trials=num_trials, sampler=sampler, batch_size=batch_size, seed=seed,
                          chunk_size=chunk_size, log=log, storage=storage, study=study):  # a refusal on one stops all
        refuse_disabled_jit()
        check_target(objective, check_space(space))
        key = check_key(key)
        num_trials, batch_size, chunk_size = (check_count(value, name) for value, name in (
            (num_trials, "num_trials"), (batch_size, "batch_size"), (chunk_size, "chunk_size")))
        check_log_apart(log, storage)
        check_progress(progress)
        optuna = _import_optuna()
        stored = check_study(storage, study) if storage is not None or isinstance(study, str) else False
        _check_sampler(optuna, sampler, seed, None if stored else study)
        sampler = sampler if study is not None and not stored else _own_copy(sampler)
        unseeded = stored and _unseeded(optuna, sampler)
        if unseeded:  # a warning, not a refusal: the call itself runs as it always did
            _warn_unseeded(sampler, study)
        distributions = optuna_distributions(space)
        if study is not None and not stored:
            _check_study_params(optuna, study, distributions)
    check_log(log, storage)  # after: it gathers process 0's verdict on the path
    # the unread-hyperparameter warning once per call, not once per round (each round finds its program)
    with unread_warned_once(), _quiet(optuna), studying(
            storage, study if stored else None, kind="optuna", space=space,
            fingerprint=lambda: fingerprint("optuna", objective, space, key, num_trials=num_trials, sampler=sampler,
                                            batch_size=batch_size, seed=seed)) as writer:
        study = study if study is not None and not stored else _new_study(optuna, sampler, seed, key)
        result = _run(optuna, study, distributions, objective, space, key, num_trials, batch_size, chunk_size,
                      _strategy(optuna, study), log, progress, writer, unseeded)
        result = with_setup(result, began)
        return result if writer is None else writer.finish(result, space)


@contextlib.contextmanager
def _quiet(optuna: Any):
    """Optuna's logging at WARNING within the block (no line per trial), as it was after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _strategy(optuna: Any, study: Any) -> str:
    """"optuna-tpe", "optuna-random" or "optuna-<SamplerClass>"."""
    label = {optuna.samplers.TPESampler: "tpe", optuna.samplers.RandomSampler: "random"}.get(
        type(study.sampler), type(study.sampler).__name__)
    return f"optuna-{label}"


def _check_sampler(optuna: Any, sampler: Any, seed: Any, study: Any) -> None:
    """Raises `ValueError` unless sampler, seed and study make sense together."""
    if isinstance(sampler, str) and sampler not in _SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not known; choose 'tpe', 'random' or pass an optuna "
                         "sampler instance")
    if seed is not None and not (is_int_at_least(seed, 0) and seed < 2**32):
        # numpy's generator (which Optuna's samplers seed) takes 0 <= seed < 2**32; refused here,
        # before a stored study records the seed and would refuse the corrected call
        raise ValueError(f"seed={seed!r} must be None or an integer with 0 <= seed < 2**32")
    if not isinstance(sampler, (str, optuna.samplers.BaseSampler)):
        raise ValueError(f"sampler must be 'tpe', 'random' or an optuna sampler, got "
                         f"{type(sampler).__name__}")
    if seed is not None and not isinstance(sampler, str):
        raise ValueError("seed seeds a named sampler ('tpe' or 'random'); seed your sampler instance "
                         "yourself")
    if study is None:
        return
    if not isinstance(study, optuna.Study):
        raise ValueError(f"study must be an optuna.Study, got {type(study).__name__}")
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise ValueError("study must have one objective with direction='minimize' (validation loss)")
    if not isinstance(sampler, str) and sampler is not study.sampler:
        raise ValueError("study has its own sampler; pass the sampler when creating the study, not both")
    if seed is not None:
        raise ValueError("seed applies to a new study's sampler; seed the study's sampler yourself")


def _clash(optuna: Any, old: Any, new: Any) -> str | None:
    """Why Optuna would refuse to ask `new` for a param its study holds as `old` (its rule: the same
    kind, the same log scale, and a categorical's same choices), or None; ranges may differ."""
    if type(old) is not type(new):
        return f"a {type(old).__name__}, not the {type(new).__name__} this space asks"
    if getattr(old, "log", False) != getattr(new, "log", False):
        return f"log={old.log}, but this space asks log={new.log}"
    if isinstance(old, optuna.distributions.CategoricalDistribution) and old.choices != new.choices:
        return f"choices {list(old.choices)}, but this space asks {list(new.choices)}"
    return None


def _check_study_params(optuna: Any, study: Any, distributions: dict[str, Any]) -> None:
    """`ValueError` naming `study=` and the fix when a trial of the given study holds one of this
    space's params with a distribution Optuna cannot ask again (its first `ask` would fail with
    Optuna's own error, after compiling). Cost: one pass over the study's trials on the host."""
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            reason = _clash(optuna, old, distributions[name]) if name in distributions else None
            if reason is not None:
                raise ValueError(
                    f"study={study.study_name!r} holds param {name!r} as {old} ({reason}), so Optuna cannot "
                    "continue it with this space; export the Result with the space it was searched over, "
                    "result.to_optuna(url, name, space=space) (without one, to_optuna writes the range or set "
                    "of the values seen), or give a new study")


def _own_copy(sampler: Any) -> Any:
    """A call's own copy of a sampler instance (a name as is), so that asking it leaves the user's
    instance, its random state included, as given: the same call again (or a stored study's resume in
    this process) starts where the first did. An instance that cannot be copied (a lock in it, as in
    NSGAIISampler) is used as is. Cost: one deep copy of the sampler, a few objects."""
    if isinstance(sampler, str):
        return sampler
    try:
        return copy.deepcopy(sampler)
    except (TypeError, copy.Error):  # "cannot pickle '_thread.lock' object"
        return sampler


def _unseeded(optuna: Any, sampler: Any) -> bool:
    """Whether `sampler` (an Optuna sampler instance; False for a name, which hypergrad seeds) draws
    from fresh entropy: Optuna's samplers keep their generators in lazy random states (`_rng`,
    `_cma_rng`, ... of type `LazyRandomState`, in the sampler or in a sampler it holds, such as TPE's
    random one) that a seed sets at once and that stay empty (None) until first drawn from
    otherwise. A sampler already used (its state drawn from) or one of another design reads as
    seeded. Cost: a look at the attributes of the sampler and of the samplers it holds."""
    if isinstance(sampler, str):
        return False
    for value in getattr(sampler, "__dict__", {}).values():
        if type(value).__name__ == "LazyRandomState" and getattr(value, "_rng", False) is None:
            return True
        if isinstance(value, optuna.samplers.BaseSampler) and value is not sampler and _unseeded(optuna, value):
            return True
    return False


def _warn_unseeded(sampler: Any, study: str) -> None:
    """The warning of a stored study started with an unseeded sampler instance (`_unseeded`)."""
    name = type(sampler).__name__
    warnings.warn(f"optuna_search(storage=..., study={study!r}): the sampler instance {name} is not seeded, so this "
                  "study could not be resumed, nor this call repeated (its sampler would propose other settings; "
                  f"hg.load_study reads the study); give a seeded sampler ({name}(seed=0), or sampler='tpe' with "
                  "seed= or the key's default) to make it resumable", UserWarning, stacklevel=users_stacklevel())


def _new_study(optuna: Any, sampler: Any, seed: int | None, key: Key) -> Any:
    """A new in-memory minimising study with `sampler`: an instance (the call's copy, `_own_copy`) as is,
    or a named one seeded by `seed`, by default derived from `key`."""
    if isinstance(sampler, str):
        if seed is None:
            seed = int(jax.random.randint(jax.random.fold_in(key, _SEED_STREAM), (), 0, 2**31 - 1))
        if sampler == "tpe":
            # constant_liar explicitly: it is Optuna's default only from 5.0 on (the module docstring's
            # batch bias relies on it); Optuna 3.x and 4.x mark the argument experimental
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(direction="minimize", sampler=sampler)


def _replay(optuna: Any, study: Any, space: Space, asked: list, stored: list, unseeded: bool = False) -> None:
    """Tells a resumed round's stored values to the sampler that re-asked it; `ValueError` unless
    it proposed the stored settings again (a sampler that is not seeded cannot resume: `unseeded`,
    this call's instance is not, so neither was the first call's, whose fingerprint it matched)."""
    settings = settings_from_params(space, [t.params for t in asked])
    for i, (trial, kept) in enumerate(zip(asked, stored)):
        given = space.options_of({name: np.asarray(v[i]) for name, v in settings.items()})
        if encode_hparams(given, space) != encode_hparams(kept.hparams, space):
            raise ValueError(f"cannot resume this optuna_search study: its sampler proposed trial {kept.number} "
                             f"differently from the stored one. {_NOT_REPLAYED[unseeded]}")
        _tell(optuna, study, trial, kept)


_SEEDED_NEW = ("give another study name, with a seeded sampler to make the new study resumable (sampler='tpe' "
               "with seed= or the key's default, or an instance such as TPESampler(seed=0))")
# why a stored round was proposed otherwise, and what works, by whether this call's sampler instance is unseeded
_NOT_REPLAYED = {
    True: "Its sampler instance is not seeded (it draws from fresh entropy at every call), so this study cannot "
          "be resumed by any call: " + _SEEDED_NEW,
    False: "A sampler instance must be seeded as the first call's was (the same seed= in both); if the first "
           "call's was not seeded, this study cannot be resumed: " + _SEEDED_NEW,
}


def _replay_shared(replay: Callable[[], None]) -> None:
    """`replay()` (`_replay`: a resumed study's stored round), a refusal of which is shared with every
    process (`shared_outcome`, then raised): a sampler instance seeded otherwise on one process alone
    (no description compares its seed) would else refuse there while the others go on to the next
    round's collectives, for ever. Every process that replays without a refusal shares its success
    once, at the end of the replay (`shared_outcome(None, ...)`): one all-gather of 2 KiB per resumed
    study with several processes, nothing in a lone process or without stored rounds."""
    try:
        replay()
    except Exception as err:  # any: a process leaving here alone would leave the others waiting
        shared_outcome(err, _RESUMED)
        raise


_RESUMED = "this call (resuming its study)"  # what `shared_outcome`'s message says a refusing process stopped


def _check_proposals_agree(params: list[dict[str, Any]], first: int) -> None:
    """Raises `ValueError` on every process when the processes' samplers proposed different `params`
    (Optuna's parameter dicts of one round, its first trial numbered `first`), before the round runs:
    the processes would feed different settings to the one program they run together (JAX's own
    `AssertionError` from `device_put`, naming neither argument). Cost, with several processes: the
    params digested on the host and one all-gather of 20 bytes, also a barrier (JAX compiles its small
    gather program on the first call, before any trial's program); nothing in a lone process."""
    if jax.process_count() == 1:
        return
    text = json.dumps(params, sort_keys=True, default=repr).encode()  # floats as repr: every bit compared
    sent = np.frombuffer(hashlib.sha1(text).digest(), np.uint8)
    got = np.asarray(multihost_utils.process_allgather(sent), np.uint8).reshape(jax.process_count(), -1)
    differing = [p for p in range(1, len(got)) if not np.array_equal(got[p], got[0])]
    if differing:
        said = ", ".join(f"process {p}'s" for p in differing)
        raise ValueError(
            f"optuna_search: the processes' samplers proposed different settings for trials {first} to "
            f"{first + len(params) - 1} ({said} differ from process 0's), so the processes cannot evaluate them "
            "together: every process asks its own sampler and must get the same proposals. Give the same sampler= "
            "on every process: 'tpe' or 'random' (seeded from the key, or by the same seed=), or an instance of the "
            "same class with the same settings and seed (TPESampler(seed=0) on every process, not "
            "seed=jax.process_index()); a study= must hold the same trials and such a sampler on every process")


def _charged(real: tuple, padding: tuple) -> list:
    """The real trials of a round, each charged its own cost plus an equal share of what the padding
    rows cost (FLOPs, seconds and training runs), so the round's totals are what it executed.

    The padding rows copy the first trial, so in an `hg.Structured` family they may run another
    configuration (another program, another cost) than a given real trial: they are shared out by
    what they cost, not by scaling each trial's own cost (right only when every row costs the same).
    A trial's `run_flops` stays its configuration's run unless padding of another unit is charged to
    it; it is then the mean FLOPs of the runs charged to it, so its `runs` counts them exactly."""
    if not padding:
        return list(real)
    flops = sum(t.flops for t in padding) / len(real)
    seconds = sum(t.seconds for t in padding) / len(real)
    runs = sum(t.runs for t in padding) / len(real)
    charged = []
    for trial in real:
        total = trial.flops + flops
        same_unit = all(t.run_flops == trial.run_flops for t in padding)
        unit = trial.run_flops if same_unit else total / (trial.runs + runs)
        charged.append(dataclasses.replace(trial, flops=total, seconds=trial.seconds + seconds, run_flops=unit))
    return charged


def _ask(optuna: Any, study: Any, distributions: dict[str, Any], pending: list) -> None:
    """Asks `study` for one trial of `distributions` and appends it to `pending` as soon as Optuna
    created it, before its params are suggested (as `study.ask(distributions)` suggests them, in the
    same order, so the same values), so a trial whose suggestion raises (an enqueued value outside a
    Choice, a Ctrl-C in the sampler) is failed with the others by `_fail_untold`, not left RUNNING."""
    asked = study.ask()
    pending.append(asked)
    for name, dist in distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            asked.suggest_categorical(name, dist.choices)
        else:
            asked.suggest_float(name, dist.low, dist.high, log=dist.log)


def _tell(optuna: Any, study: Any, asked: Any, trial: Any) -> None:
    """Tells `asked` the value of `trial` (a hypergrad trial; FAIL if it failed). Optuna's GridSampler
    asks the study to stop once its grid is told (`study.stop()` in its `after_trial`), which outside
    `study.optimize` raises RuntimeError after the trial's state is stored (optuna issue 5141): that
    is no error here: it is ignored once the trial is finished, and the search goes on to its
    `num_trials` (the sampler then proposes grid points again, with its warning); any other exception
    is raised."""
    try:
        if trial.state == FAIL:
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(asked, trial.value)
    except RuntimeError as err:
        if "Study.stop" not in str(err) or not _finished(study, asked):
            raise


def _finished(study: Any, asked: Any) -> bool:
    """Whether the study holds trial `asked` as finished (one pass over the study's trials)."""
    return any(t.number == asked.number and t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _fail_untold(optuna: Any, study: Any, pending: list) -> None:
    """Tells FAIL each trial of `pending` the study still holds RUNNING (a tell interrupted after Optuna
    stored its state is skipped), so an exception or Ctrl-C leaves no RUNNING trial in the user's study.
    Runs while an exception is in flight: a failure here is suppressed, never raised in its place."""
    for asked in pending:
        with contextlib.suppress(Exception):
            study.tell(asked, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def _run(optuna, study, distributions, objective, space, key, num_trials, batch_size, chunk_size, strategy,
         log, progress, writer: StudyWriter | None = None, unseeded: bool = False) -> Result:
    # The rows of the one compiled program: no more than the trials asked, so a search shorter than
    # a batch runs (and is charged) only its trials, as random_search's single chunk is.
    chunk = min(batch_size, chunk_size, num_trials)
    recorder = TrialRecorder(strategy, log, progress, total=num_trials, sink=writer)
    compile_seconds, run_flops, first_number = 0.0, 0.0, None
    pending = []  # asked, not yet told (each added as it is asked): failed on any exception (`_fail_untold`)
    structure = None
    replayed = False  # a resumed study's stored rounds come first: replayed, then their success shared
    try:
        while len(recorder.trials) < num_trials:
            real = min(batch_size, num_trials - len(recorder.trials))
            for _ in range(real):
                _ask(optuna, study, distributions, pending)
            if first_number is None:
                first_number = pending[0].number
            if recorder.resume(range(len(recorder.trials), len(recorder.trials) + real)):  # a stored round
                _replay_shared(lambda: _replay(optuna, study, space, pending, recorder.trials[-real:], unseeded))
                pending.clear()
                run_flops, replayed = recorder.trials[-1].run_flops, True
                continue
            if replayed:  # the first round not stored: every process replayed the stored ones
                shared_outcome(None, _RESUMED)
                replayed = False
            _check_proposals_agree([t.params for t in pending], len(recorder.trials))
            settings = _pad(settings_from_params(space, [t.params for t in pending]), chunk)
            batch = evaluate_settings(objective, settings, key, strategy=strategy, space=space,
                                      chunk_size=chunk, remainders_from=1)
            compile_seconds += batch.compile_seconds
            structure = batch.info.get("structure", structure)  # the plan of the latest round
            run_flops = batch.run_flops
            rows = batch.trials
            for asked, trial in zip(list(pending), _charged(rows[:real], rows[real:])):
                recorder.add(dataclasses.replace(trial, number=len(recorder.trials)))
                _tell(optuna, study, asked, trial)
                pending.remove(asked)
            recorder.report()
        if replayed:  # every round was stored
            shared_outcome(None, _RESUMED)
    finally:
        _fail_untold(optuna, study, pending)
        recorder.close()
    return Result(strategy, tuple(recorder.trials), run_flops, compile_seconds, {
        "sampler": type(study.sampler).__name__, "batch_size": batch_size, "chunk_size": chunk,
        "num_trials": num_trials, "optuna_first_trial": first_number, "study_name": study.study_name,
        **({"structure": structure} if structure else {}),
    })
