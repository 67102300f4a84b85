"""Objective: the unrolled training loop as one pure function of the hyperparameters.

`Objective(problem, optimizer, num_steps)` is the single function every strategy uses:

    objective(hparams, key) = val_loss(train(hparams, key), val_data)

where `train` initialises parameters with `problem.init`, builds the optax optimiser
`optimizer(hparams)` inside the trace (so hyperparameters are traced values, never constants baked
into a program) and runs `num_steps` updates as one `jax.lax.scan`. It is pure: `jax.jit`,
`jax.vmap` and `jax.grad` all apply to it directly.

Randomness: `key` is split once into an initialisation key and a data key; minibatch `t` is drawn
with `fold_in(data_key, t)` (see `Problem.train_batch`), so any method that replays step `t` sees the
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
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hypergrad._types import HParams, Key, Params, PyTree, Scalar
from hypergrad.problem import Problem, as_problem
from hypergrad._checks import is_int_at_least

__all__ = ["Objective", "TrainState"]


class TrainState(NamedTuple):
    """The carry of the training loop."""

    params: Params
    opt_state: optax.OptState


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
        try:
            array = jnp.asarray(value)
        except TypeError as err:
            raise ValueError(f"{argname}[{name!r}]={value!r} is not numeric; give a number or an array") from err
        if not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool):
            raise ValueError(f"{argname}[{name!r}] has dtype {array.dtype}; give a number or an array")
        out[name] = array
    return out


def check_key(key: Any, argname: str = "key") -> jax.Array:
    """Accepts a typed or raw uint32 PRNG key; `ValueError` otherwise."""
    if isinstance(key, jax.core.Tracer):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        raise ValueError(f"{argname}={key} is an int; pass jax.random.key({key})")
    try:
        array = key if isinstance(key, jax.Array) else jnp.asarray(key)  # asarray costs ~0.3 ms a call
    except TypeError as err:
        raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed)") from err
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        if array.shape != ():
            raise ValueError(f"{argname} has shape {array.shape}; pass a single key, not a batch of keys")
        return array
    if array.dtype == jnp.uint32 and array.shape == (2,):
        return array
    raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed), got {array.dtype}{array.shape}")


DRAW_BLOCK = 32
"""Training steps whose minibatch indices are drawn at once (`Objective.run_steps`, and
`Reverse`'s up-front draw of all T)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """The validation loss after `num_steps` of an optax optimiser, as a function of hyperparameters.

    Hashed by identity, so compiled programs keyed on it are reused across calls.

    Args:
        problem: the `hg.Problem` to train on.
        optimizer: `hparams -> optax.GradientTransformation`, called inside the trace; any optax
            optimiser whose hyperparameters are read from `hparams` (schedules as
            `lambda step: hparams["lr"][step]`).
        num_steps: number of training steps T >= 1.
        unroll: passed to `lax.scan` (an int unrolls that many steps per loop iteration; True
            unrolls fully, which compute accounting uses on its T=1 and T=2 reference programs).

    Cost: one call is one training run (T forward-backward passes on a minibatch) plus one
    evaluation on the validation set. Memory: the parameters, optimiser state and one batch,
    whatever T. With a cross-validated problem (`cv=k`) both are k times that: the k fits run
    vmapped, and compute accounting (`hg.search.run_flops`, and every method's `flops`) counts the
    k fits as one "run": k times one fit's training and scoring FLOPs, except the minibatch
    indices, which the folds share and which are drawn (and counted) once per step.
    """

    problem: Problem
    optimizer: Callable[[HParams], optax.GradientTransformation]
    num_steps: int
    unroll: int | bool = 1

    def __post_init__(self):
        as_problem(self.problem)
        if not callable(self.optimizer):
            raise ValueError("optimizer must be a function hparams -> optax.GradientTransformation")
        steps = self.num_steps
        if not is_int_at_least(steps):
            raise ValueError(f"num_steps={steps!r} must be an integer >= 1")
        object.__setattr__(self, "num_steps", int(steps))

    # -- public, pure -------------------------------------------------------------------------
    def __call__(self, hparams: HParams, key: Key) -> Scalar:
        """The validation loss after training with `hparams`; differentiable in `hparams`."""
        return self._jitted("loss_and_scores")(as_hparams(hparams), check_key(key), self.problem.data)[0]

    def train(self, hparams: HParams, key: Key) -> Params:
        """The parameters after `num_steps` training steps (with a leading fold axis of length k
        when the problem has `cv=k`)."""
        return self._jitted("run")(as_hparams(hparams), check_key(key), self.problem.data).params

    def evaluate(self, hparams: HParams, key: Key) -> dict[str, Scalar]:
        """`{"val_loss", "test_loss", "val_<metric>", "test_<metric>"}` after training (under cv
        also the standard deviations and per-fold scores: see `loss_and_scores`)."""
        return self._jitted("loss_and_scores")(as_hparams(hparams), check_key(key), self.problem.data)[1]

    def _jitted(self, name: str) -> Callable:
        """`jax.jit` of one of this objective's methods, made once per objective: a direct call
        compiles the whole program once (eager, init and scoring would run op by op, about 3x
        slower on a small model) and reuses it; inside jit, vmap or grad it is simply traced."""
        cache = self.__dict__.setdefault("_jit_cache", {})
        if name not in cache:
            cache[name] = jax.jit(getattr(self, name))
        return cache[name]

    # -- building blocks, with explicit data ----------------------------------------------------
    def make_optimizer(self, hparams: HParams) -> optax.GradientTransformation:
        opt = self.optimizer(hparams)
        if not isinstance(opt, optax.GradientTransformation):
            raise ValueError(
                f"optimizer(hparams) returned {type(opt).__name__}; it must return an "
                "optax.GradientTransformation such as optax.sgd(...)"
            )
        return opt

    def init_state(self, hparams: HParams, key: Key) -> tuple[TrainState, Key]:
        """Initial parameters and optimiser state, and the data key for minibatches."""
        init_key, data_key = jax.random.split(key)
        params = self.problem.initial_params(init_key, hparams)
        opt_state = self.make_optimizer(hparams).init(params)
        return TrainState(params, opt_state), data_key

    def step(self, state: TrainState, hparams: HParams, batch: PyTree) -> TrainState:
        """One training step: the minibatch gradient and one optimiser update.

        Optimisers that take extra arguments (`optax.GradientTransformationExtraArgs`, which every
        `optax.chain` is) receive the minibatch training loss as `value=`.
        """
        loss, grads = jax.value_and_grad(self.problem.train_loss)(state.params, hparams, batch)
        opt = self.make_optimizer(hparams)
        if isinstance(opt, optax.GradientTransformationExtraArgs):
            # Plateau rules (optax.contrib.reduce_on_plateau, scikit-learn's "adaptive") read the loss.
            updates, opt_state = opt.update(grads, state.opt_state, state.params, value=loss)
        else:
            updates, opt_state = opt.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state)

    def loop_step(self, state: TrainState, hparams: HParams, data_key: Key, train_data: PyTree,
                  t: jax.Array) -> TrainState:
        """Iteration `t` of the training loop on one training set: minibatch `t`, drawn with
        `fold_in(data_key, t)`, then one `step`."""
        indices = self.problem.batch_indices(data_key, t)  # None for full batch
        return self.step(state, hparams, self.problem.gather(train_data, indices))

    def run(
        self,
        hparams: HParams,
        key: Key,
        data: Mapping[str, PyTree],
        *,
        checkpoint_every: int | None = None,
        loop: Callable | None = None,
    ) -> TrainState:
        """Trains for `num_steps` steps as one `lax.scan` and returns the final state.

        Under cv (`problem.num_folds > 1`), `data["train"]` holds the folds stacked and the k fits
        are vmapped: the returned state has a leading fold axis. `init_state` and `run_steps` are
        the building blocks of one fit on one training set.

        Args:
            checkpoint_every: if set to k, the loop is a scan over segments of k steps, each under
                `jax.checkpoint`; reverse mode then stores one state per segment and the residuals
                of one segment at a time (memory ~ T/k + k steps instead of T) at the price of one
                more forward pass. None stores every step's residuals.
            loop: the function that runs the steps, called as `run_steps` is but with the objective
                first: `loop(objective, state, 0, num_steps, hparams, data_key, train_data,
                checkpoint_every=...)`; it must return what `run_steps` would. None is
                `self.run_steps`. A method that differentiates the loop its own way passes its loop
                here (`hg.Reverse`'s stores "dots" and "states"), keeping everything around it
                (initialisation, folds, scoring) this objective's own.
        """
        def fit(train_data):
            state, data_key = self.init_state(hparams, key)
            run_steps = self.run_steps if loop is None else functools.partial(loop, self)
            return run_steps(state, 0, self.num_steps, hparams, data_key, train_data,
                             checkpoint_every=checkpoint_every)

        if self.problem.num_folds > 1:
            # The key and hyperparameters are shared (unbatched): one initialisation and one set of
            # minibatch indices, gathered from each fold's own training set.
            return jax.vmap(fit)(data["train"])
        return fit(data["train"])

    def run_steps(
        self,
        state: TrainState,
        start: int,
        num_steps: int,
        hparams: HParams,
        data_key: Key,
        train_data: PyTree,
        *,
        checkpoint_every: int | None = None,
    ) -> TrainState:
        """Steps `start, ..., start + num_steps - 1` of training, from `state`.

        Minibatches are drawn in blocks of `DRAW_BLOCK` steps: a scan over blocks draws each
        block's indices at once (`batch_indices` of `DRAW_BLOCK` step numbers, the same indices as
        step by step), then scans its steps. Drawing a block at once costs far less than drawing
        step by step (n uniforms and a top-k are small operations, and on a CPU their per-step
        overhead was about 13% of a vmapped digits-MLP step at 32 trials per device), and memory
        stays flat in T: one block's n x `DRAW_BLOCK` uniforms live at a time. Reverse mode keeps
        each step's batch_size indices; checkpointing redraws them.
        """
        unroll = self.unroll
        xs = start + jnp.arange(num_steps)
        problem = self.problem

        def body(state, t):
            return self.loop_step(state, hparams, data_key, train_data, t), None

        def steps_of(state, indices):
            def take(state, idx):
                return self.step(state, hparams, problem.gather(train_data, idx)), None
            return jax.lax.scan(take, state, indices, unroll=unroll)[0]

        def scan(state, xs, length):
            blocks, remainder = divmod(length, DRAW_BLOCK)
            if problem.batch_size is None or blocks == 0:  # nothing to draw, or fewer steps than a block
                return jax.lax.scan(body, state, xs, length=length, unroll=unroll)[0]

            def block(state, ts):
                return steps_of(state, problem.batch_indices(data_key, ts)), None

            head = xs[:blocks * DRAW_BLOCK].reshape(blocks, DRAW_BLOCK)
            state = jax.lax.scan(block, state, head, unroll=unroll)[0]
            if remainder:
                state = steps_of(state, problem.batch_indices(data_key, xs[blocks * DRAW_BLOCK:]))
            return state

        return in_segments(scan, state, xs, num_steps, checkpoint_every, unroll)

    def loss_and_scores(
        self, hparams: HParams, key: Key, data: Mapping[str, PyTree], **run_options
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """(validation loss, all scores) after training; the function methods differentiate.

        Under cv (k folds) the k fits and their scoring are vmapped and the scores are

        - `val_loss`: the mean over folds of the validation loss (the value, differentiated by
          gradient methods: its gradient is the mean of the per-fold hypergradients);
        - `val_loss_std`, and for each metric `val_<m>` (mean) and `val_<m>_std` (population
          standard deviation over folds, as scikit-learn's `std_test_score`);
        - per fold, `val_loss_fold<i>` and `val_<m>_fold<i>`;
        - `test_loss`, `test_<m>`: the mean over the k fold models' test scores (scikit-learn
          would refit one model on all the data instead; we report the fold models' mean).
        """
        problem = self.problem
        params = self.run(hparams, key, data, **run_options).params
        if problem.num_folds == 1:
            scores = problem.scores(params, data, hparams)
            return scores["val_loss"], scores

        def fold_scores(fold_params, val):
            split = {"val": val}
            if "test" in data:
                split["test"] = data["test"]  # closed over: unbatched, one test set for all folds
            return problem.scores(fold_params, split, hparams)

        per_fold = jax.vmap(fold_scores)(params, data["val"])
        scores = _aggregate_folds(per_fold)
        return scores["val_loss"], scores

    def with_fixed(self, fixed: Mapping[str, Any]) -> Objective:
        """This objective with the hyperparameters in `fixed` held at the given (possibly traced)
        values: every function that reads hparams sees `{**hparams, **fixed}`, so a method given
        the remaining hparams differentiates only those. Used to tune continuous hyperparameters
        while a numeric or masked structural choice stays put (`hg.hybrid_search`).

        Cost: a new Objective and Problem (the data are reused; a cross-validated problem
        regathers its folds), so build it inside the traced function, not per call in a loop.
        """
        fixed = dict(fixed)
        base = self.problem

        def merged(hparams):
            return {**hparams, **fixed}

        changes = {"train_loss": lambda params, h, batch: base.train_loss(params, merged(h), batch)}
        if base.model_reads_hparams:
            changes["init"] = lambda key, h: base.init(key, merged(h))
            changes["val_loss"] = lambda params, h, batch: base.val_loss(params, merged(h), batch)
            changes["metrics"] = {name: functools.partial(_merged_metric, fn, fixed)
                                  for name, fn in base.metrics.items()}
        problem = dataclasses.replace(base, **changes)
        return dataclasses.replace(self, problem=problem, optimizer=lambda h: self.optimizer(merged(h)))

    def reference(self, num_steps: int) -> Objective:
        """The same objective at horizon `num_steps`, fully unrolled: compute accounting compiles it
        at T=1 and T=2 because XLA's cost analysis counts a loop body once."""
        return dataclasses.replace(self, num_steps=num_steps, unroll=True)


def _aggregate_folds(per_fold: Mapping[str, jax.Array]) -> dict[str, Scalar]:
    """Scores of k fold models (each entry shape (k,)) as means, standard deviations and per-fold
    values (validation) or means (test); see `Objective.loss_and_scores`."""
    out = {}
    for name, values in per_fold.items():
        out[name] = jnp.mean(values)
        if name.startswith("val_"):
            # sqrt of the mean square deviation, which is 0 (not NaN) when the folds agree; never
            # differentiated (the value is `val_loss`, the other scores ride along as aux).
            out[f"{name}_std"] = jnp.sqrt(jnp.mean(jnp.square(values - out[name])))
    for name, values in per_fold.items():
        if name.startswith("val_"):
            for i in range(values.shape[0]):
                out[f"{name}_fold{i}"] = values[i]
    return out


def _merged_metric(fn, fixed, params, hparams, batch):
    return fn(params, {**hparams, **fixed}, batch)


def in_segments(run: Callable, state: Any, xs: PyTree, num_steps: int, checkpoint_every: int | None,
                unroll: int | bool = 1) -> Any:
    """`run(state, xs, num_steps)`, or with `checkpoint_every=k` the same steps as a scan over
    segments of k, each under `jax.checkpoint` (plus a checkpointed remainder): autodiff of the
    outer scan stores each segment's input state, and the backward pass reruns a segment (storing
    what `run` keeps for its k steps) before differentiating it.

    Args:
        run: `(state, xs_of_steps, length) -> state`, the loop over `length` steps.
        xs: per-step inputs with a leading axis of `num_steps` (step numbers, minibatch indices).
    """
    if checkpoint_every is None:
        return run(state, xs, num_steps)
    k = min(checkpoint_every, num_steps)
    num_segments, remainder = divmod(num_steps, k)
    split = num_segments * k
    head = jax.tree.map(lambda a: a[:split].reshape((num_segments, k) + a.shape[1:]), xs)
    segment = jax.checkpoint(lambda s, seg: (run(s, seg, k), None))
    state = jax.lax.scan(segment, state, head, length=num_segments, unroll=unroll)[0]
    if remainder:
        tail = jax.tree.map(lambda a: a[split:], xs)
        state = jax.checkpoint(lambda s, x: run(s, x, remainder))(state, tail)
    return state
