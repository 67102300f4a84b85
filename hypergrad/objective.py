"""Objective: the unrolled training loop as one pure function of the hyperparameters.

`Objective(problem, optimizer, num_steps)` is the single function every strategy uses:

    objective(hparams, key) = val_loss(train(hparams, key), val_data)

where `train` initialises parameters with `problem.init`, builds the optax optimiser
`optimizer(hparams)` inside the trace (so hyperparameters are traced values, never constants baked
into a program) and runs `num_steps` updates as one `jax.lax.scan`. It is pure: `jax.jit`,
`jax.vmap` and `jax.grad` all apply to it directly.

Randomness: `key` is split once into an initialisation key and a data key; minibatch `t` is the
`t`-th batch of the epoch stream keyed by the data key (a keyed permutation per epoch, each batch
computing its own indices: `Problem.batch_indices`), so any method that replays step `t` sees the
same examples.

Internally every function takes the data splits as an explicit argument (`data`), so compiled
programs receive the arrays as inputs instead of embedding them as constants.

Cross-validation: on a problem with `cv=k`, `run` and `loss_and_scores` `vmap` the training loop
and the scoring over the k folds (all folds share the key: the same initialisation and the same
minibatch indices, each into its own fold's training set). The value is the mean validation loss
over the folds, so every strategy tunes (and differentiates) the k-fold mean; a call costs k fits.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hypergrad import _caches, _compile
from hypergrad._checks import check_checkpoint_every, check_key, is_int_at_least
from hypergrad._indexing import check_direct_call
from hypergrad._types import HParams, Key, Params, PyTree, Scalar
from hypergrad.folds import fold_data, over_folds
from hypergrad.loop import Loop, LoopState
from hypergrad.problem import Problem, as_problem, held_values

__all__ = ["Objective"]


def as_hparams(hparams: Any, argname: str = "hparams") -> HParams:
    """Checks `hparams` is a dict of numbers and converts its values to arrays."""
    if not isinstance(hparams, Mapping):
        raise ValueError(
            f"{argname} must be a dict of name -> value (e.g. {{'lr': 0.1}}), got {type(hparams).__name__}"
        )
    out = {}
    for name, value in hparams.items():
        if not isinstance(name, str):
            raise ValueError(f"{argname}: key {name!r} must be a string")
        if isinstance(value, jax.core.Tracer):
            out[name] = value
            continue
        if isinstance(value, Mapping):
            parts = ", ".join(f"{name}_{part}" for part in list(value)[:3])
            raise ValueError(
                f"{argname}[{name!r}] is a dict; hyperparameters are a flat dict of name -> number or array: "
                f"give each part its own name ({parts}) and read those in the loss or optimizer, or use one "
                "array for a vector of values")
        try:
            array = jnp.asarray(value)
        except (TypeError, ValueError) as err:  # None raises the latter
            raise ValueError(f"{argname}[{name!r}]={value!r} is not numeric; give a number or an array") from err
        if not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool):
            raise ValueError(f"{argname}[{name!r}] has dtype {array.dtype}; give a number or an array")
        # strongly typed, as hypergradient's programs are traced (`_compile.strongly_typed`): a weak
        # 0.1 (a Python float, `space.centre()`) and a numpy 0.1 are then one argument type, not
        # two compilations of every program, and compute the same
        out[name] = jax.lax.convert_element_type(array, array.dtype) if array.weak_type else array
    return out


def _is_optax_constructor(fn: Callable) -> bool:
    """Whether `fn` is one of optax's optimiser constructors (`optax.sgd`, `optax.adamw`, their
    `inject_hyperparams` forms): a function of optax's with a `learning_rate` parameter, which
    would be handed the hparams dict as its learning rate."""
    module = getattr(fn, "__module__", None) or ""
    if module != "optax" and not module.startswith("optax."):
        return False
    try:
        return "learning_rate" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: not a constructor we know
        return False


def _naming_missing(fn: Callable) -> Callable:
    """`fn`, with a `KeyError` raised while tracing it turned into a `ValueError` naming the
    hyperparameter that was not given."""
    def call(*args):
        with _compile.naming_missing_hparams():
            return fn(*args)

    return call


# Objectives whose `_jitted` holds `jax.jit` wrappers (and so their compiled programs), weakly: the
# wrappers live on the objective itself (a collectable cycle through its bound methods, which a weak
# dictionary of wrappers would instead keep alive for ever), and `hg.clear_caches()` drops them here.
_jitting: weakref.WeakSet = weakref.WeakSet()
_jitting_lock = threading.Lock()


@_caches.register
def _clear_jitted() -> None:
    """Drops every live objective's `jax.jit` wrappers: its next direct call traces and compiles anew.
    Each wrapper jits a callable of its own (`Objective._jitted`), so a dropped wrapper still alive
    elsewhere (an exception's traceback holding its frame) cannot hand a new one its old trace, and
    nothing is evicted from JAX's own caches, which every `jax.jit` in the process shares (a
    wrapper's `clear_cache` would empty them)."""
    with _jitting_lock:
        for objective in list(_jitting):
            objective.__dict__.pop("_jit_cache", None)
        _jitting.clear()


@_caches.register_owner
def _drop_jitted(owner: Any) -> None:
    """`hypergrad._caches.forget(owner)`: drops that objective's `jax.jit` wrappers, as `_clear_jitted`."""
    with _jitting_lock:
        if owner in _jitting:  # False for an owner that cannot be weakly referenced
            owner.__dict__.pop("_jit_cache", None)
            _jitting.discard(owner)


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """The validation loss after `num_steps` of an optax optimiser, as a function of hyperparameters.

    Hashed by identity, so compiled programs keyed on it are reused across calls. They are keyed on
    the arguments' types, not on the values the problem's and optimiser's functions read outside
    their arguments (a module-level `SCALE`, a closed-over dict): as `jax.jit` keeps the global it
    traced, a call after editing such a value reuses the program traced before the edit. Build the
    objective again (or call `hg.clear_caches()`) after such an edit. A strategy with `storage=`
    and `study=` does this itself: it runs the objective its study's fingerprint describes (this
    objective's programs, counts and checks are dropped, every other objective's kept, when that
    description changed since its programs were traced, or programs were made of it outside a
    stored call: compiled again then, once).

    Args:
        problem: the `hg.Problem` to train on.
        optimizer: `hparams -> optax.GradientTransformation`, called inside the trace; any optax
            optimiser whose hyperparameters are read from `hparams` (schedules as
            `lambda step: hparams["lr"][step]`) and that tests none of them in Python
            (`optax.warmup_cosine_decay_schedule` tests its peak: scale a unit schedule instead,
            `lambda s: hparams["lr"] * optax.warmup_cosine_decay_schedule(0.0, 1.0, W, T)(s)`; such
            a test is refused at the first trace, naming the hyperparameter). Through a few optax
            optimisers one differentiation mode is NaN (`hg.Reverse`'s and `hg.Forward`'s
            docstrings name them, and the other mode).
        num_steps: number of training steps T >= 1.
        unroll: passed to `lax.scan` (an int >= 0 unrolls that many steps per loop iteration; True
            unrolls fully). It changes neither values nor FLOP counts.

    Raises:
        ValueError: at construction, for a `problem` that is not an `hg.Problem`, an `optimizer`
            that is not callable or is an optax constructor itself (`optax.sgd`, which takes the
            learning rate, not the hparams dict), `num_steps` below 1, or `unroll` neither a bool
            nor an int >= 0.

    Cost: one call is one training run (T forward-backward passes on a minibatch, each after
    drawing the minibatch's indices) plus scoring the trained parameters (validation and test
    losses and metrics): the unit "one run" of every result. Compute accounting
    (`hypergrad.accounting.run_flops`) counts it from the traced program, never compiling it; see
    that module for what is counted. Memory: the parameters, optimiser state and one batch,
    whatever T. With a cross-validated problem (`cv=k`) both are k times that: the k fits run
    vmapped, and accounting counts the k fits as one "run": k times one fit's training and scoring
    FLOPs, except the minibatch indices, which the folds share and which are drawn (and counted)
    once per step.
    """

    problem: Problem
    optimizer: Callable[[HParams], optax.GradientTransformation]
    num_steps: int
    unroll: int | bool = 1

    def __post_init__(self):
        as_problem(self.problem)
        if not callable(self.optimizer):
            raise ValueError("optimizer must be a function hparams -> optax.GradientTransformation")
        if _is_optax_constructor(self.optimizer):
            name = getattr(self.optimizer, "__name__", "sgd")
            raise ValueError(
                f"Objective(optimizer=optax.{name}) is an optax constructor, which takes the learning rate "
                f"itself; pass a function of the hparams dict instead: lambda h: optax.{name}(h['lr'])")
        steps = self.num_steps
        if not is_int_at_least(steps):
            raise ValueError(f"num_steps={steps!r} must be an integer >= 1")
        object.__setattr__(self, "num_steps", int(steps))
        unroll = self.unroll
        if not isinstance(unroll, bool):
            if not is_int_at_least(unroll, 0):
                raise ValueError(f"Objective(unroll={unroll!r}) must be a bool or an int >= 0 (steps unrolled "
                                 "per loop iteration, as lax.scan's unroll; True unrolls fully): e.g. unroll=1")
            object.__setattr__(self, "unroll", int(unroll))

    # -- public, pure -------------------------------------------------------------------------
    def __call__(self, hparams: HParams, key: Key) -> Scalar:
        """The validation loss after training with `hparams`; differentiable in `hparams`. A per-step
        schedule passed (or held with `with_fixed` beside an array hyperparameter) shorter than `num_steps`
        is refused (`_in_bounds`)."""
        return self._jitted("loss_and_scores")(self._in_bounds(hparams), check_key(key), self.problem.data)[0]

    def train(self, hparams: HParams, key: Key) -> Params:
        """The parameters after `num_steps` training steps (with a leading fold axis of length k
        when the problem has `cv=k`)."""
        return self._jitted("run")(self._in_bounds(hparams), check_key(key), self.problem.data).params

    def evaluate(self, hparams: HParams, key: Key) -> dict[str, Scalar]:
        """`{"val_loss", "test_loss", "val_<metric>", "test_<metric>"}` after training (under cv
        also the standard deviations and per-fold scores: see `loss_and_scores`)."""
        return self._jitted("loss_and_scores")(self._in_bounds(hparams), check_key(key), self.problem.data)[1]

    def _in_bounds(self, hparams: HParams) -> HParams:
        """`as_hparams(hparams)`, refused (`ValueError`, `hypergrad._indexing.check_direct_call`) when the
        optimiser indexes a hyperparameter past its end within `num_steps` steps, as every strategy refuses
        it: JAX would clamp the index and train the last steps at the last entry. Not under
        `jax.disable_jit()` (the check compiles a small program; the call then runs op by op, unchecked).
        Cost: once per objective and hyperparameter shapes one trace of the objective and of the
        optimiser's steps (and one small compilation when some hyperparameter is an array); then a look-up
        (tens of microseconds)."""
        hparams = as_hparams(hparams)
        if not jax.config.jax_disable_jit:
            check_direct_call(self, hparams)
        return hparams

    def _jitted(self, name: str) -> Callable:
        """`jax.jit` of one of this objective's methods, made once per objective: a direct call
        compiles the whole program once (eager, init and scoring would run op by op, about 3x
        slower on a small model) and reuses it; inside jit, vmap or grad it is simply traced.
        A hyperparameter the loss or optimiser reads that was not passed is a `ValueError`
        naming it (`hypergrad._compile.naming_missing_hparams`), not a bare `KeyError`.
        `hg.clear_caches()` drops them, with their programs."""
        cache = self.__dict__.get("_jit_cache")
        if cache is None:
            with _jitting_lock:
                cache = self.__dict__.setdefault("_jit_cache", {})
                _jitting.add(self)
        if name not in cache:
            # a fresh callable, not the bound method: JAX keys a trace on the function, and a bound
            # method equals the next wrapper's, so a wrapper held across hg.clear_caches() would
            # hand the new one its old trace; a partial equals only itself
            jitted = jax.jit(functools.partial(getattr(type(self), name), self))
            cache[name] = jitted, _naming_missing(jitted)
        return cache[name][1]

    def __getstate__(self) -> dict[str, Any]:
        """What `copy.copy`, `copy.deepcopy` and pickle carry: the fields, not the `jax.jit` wrappers.
        A copy sharing them ran the original's programs (bound to the original) and, out of
        `hg.clear_caches()`'s reach, kept them after a clear, and kept the original's alive too."""
        return {name: value for name, value in self.__dict__.items() if name != "_jit_cache"}

    # -- the loop methods see, and the training run --------------------------------------------
    def loop(self, data: Mapping[str, PyTree] | None = None) -> Loop:
        """The narrow training loop on one training set, as methods see it (`hypergrad.loop`).

        Args:
            data: `{"train", "val"[, "test"]}` of one training set, e.g. one fold's
                (`hypergrad.folds.over_folds` builds one loop per fold); None: the problem's own
                splits, or its first fold under cross-validation (for shape checks).
        """
        if data is None:
            data = self.problem.data
            if self.problem.num_folds > 1:
                data = fold_data(data, 0)
        return Loop(self.problem, self.optimizer, self.num_steps, self.unroll, data)

    def run(self, hparams: HParams, key: Key, data: Mapping[str, PyTree], *,
            checkpoint_every: int | None = None) -> LoopState:
        """Trains for `num_steps` steps (`Loop.train`) and returns the final state: parameters,
        optimiser state and data key, with a leading fold axis under cv (the k fits vmapped).

        Args:
            checkpoint_every: if set to k, the loop is a scan over segments of k steps, each under
                `jax.checkpoint`; reverse mode then stores one state per segment and the residuals
                of one segment at a time (memory ~ T/k + k steps instead of T) at the price of one
                more forward pass. None stores every step's residuals. Anything but a positive
                int or None is refused (`ValueError`) before anything is traced.
        """
        checkpoint_every = check_checkpoint_every(checkpoint_every, "Objective.run")

        def fit(split):
            return self.loop(split).train(hparams, key, checkpoint_every=checkpoint_every)

        if self.problem.num_folds > 1:
            return jax.vmap(lambda train, val: fit({"train": train, "val": val}))(data["train"], data["val"])
        return fit(data)

    def loss_and_scores(
        self, hparams: HParams, key: Key, data: Mapping[str, PyTree], *, checkpoint_every: int | None = None
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """(validation loss, all scores) after training: what a search evaluates per trial.

        Under cv (k folds) the k fits and their scoring are vmapped and the scores aggregated by
        `hypergrad.folds.over_folds`: `val_loss` the fold mean (the value tuned and
        differentiated), `val_<s>_std` and `val_<s>_fold<i>`, and `test_<s>` the mean over the k
        fold models. `checkpoint_every` is as `run`'s (a positive int or None).
        """
        checkpoint_every = check_checkpoint_every(checkpoint_every, "Objective.loss_and_scores")

        def fit_and_score(split):
            loop = self.loop(split)
            return loop.readout(loop.train(hparams, key, checkpoint_every=checkpoint_every), hparams)

        return over_folds(self.problem, data, fit_and_score)

    def with_fixed(self, fixed: Mapping[str, Any]) -> Objective:
        """This objective with the hyperparameters in `fixed` held at the given (possibly traced)
        values (a numpy array as a device array, `hypergrad.problem.held_values`, so a traced step
        can index it): every function that reads hparams sees `{**hparams, **fixed}`, so a method given
        the remaining hparams differentiates only those. Used to tune continuous hyperparameters
        while a numeric or masked structural choice stays put (`hg.hybrid_search`).

        Cost: a new Objective and Problem (the data are reused; a cross-validated problem
        regathers its folds), so build it inside the traced function, not per call in a loop.
        """
        fixed = held_values(fixed)  # numpy arrays as device arrays: `h["lr"][step]` indexes them when traced
        return dataclasses.replace(self, problem=self.problem.with_fixed(fixed),
                                   optimizer=lambda h: self.optimizer({**h, **fixed}))
