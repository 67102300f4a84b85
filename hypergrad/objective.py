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
"""

from __future__ import annotations

import dataclasses
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
        array = jnp.asarray(key)
    except TypeError as err:
        raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed)") from err
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        if array.shape != ():
            raise ValueError(f"{argname} has shape {array.shape}; pass a single key, not a batch of keys")
        return array
    if array.dtype == jnp.uint32 and array.shape == (2,):
        return array
    raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed), got {array.dtype}{array.shape}")


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
    whatever T.
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
        return self.loss_and_scores(as_hparams(hparams), check_key(key), self.problem.data)[0]

    def train(self, hparams: HParams, key: Key) -> Params:
        """The parameters after `num_steps` training steps."""
        return self.run(as_hparams(hparams), check_key(key), self.problem.data).params

    def evaluate(self, hparams: HParams, key: Key) -> dict[str, Scalar]:
        """`{"val_loss", "test_loss", "val_<metric>", "test_<metric>"}` after training."""
        return self.loss_and_scores(as_hparams(hparams), check_key(key), self.problem.data)[1]

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
        params = self.problem.init(init_key)
        opt_state = self.make_optimizer(hparams).init(params)
        return TrainState(params, opt_state), data_key

    def step(self, state: TrainState, hparams: HParams, batch: PyTree) -> TrainState:
        """One training step: the minibatch gradient and one optimiser update."""
        grads = jax.grad(self.problem.train_loss)(state.params, hparams, batch)
        updates, opt_state = self.make_optimizer(hparams).update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state)

    def run(
        self,
        hparams: HParams,
        key: Key,
        data: Mapping[str, PyTree],
        *,
        checkpoint_every: int | None = None,
    ) -> TrainState:
        """Trains for `num_steps` steps as one `lax.scan` and returns the final state.

        Args:
            checkpoint_every: if set to k, the loop is a scan over segments of k steps, each under
                `jax.checkpoint`; reverse mode then stores one state per segment and the residuals
                of one segment at a time (memory ~ T/k + k steps instead of T) at the price of one
                more forward pass. None stores every step's residuals.
        """
        state, data_key = self.init_state(hparams, key)
        return self.run_steps(state, 0, self.num_steps, hparams, data_key, data["train"],
                              checkpoint_every=checkpoint_every)

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

        Minibatch t is drawn inside step t (n uniforms and a top-k), so memory stays flat in T;
        reverse mode keeps only the batch_size indices of each step, and checkpointing redraws
        them, which costs little beside the step itself.
        """
        unroll = self.unroll
        xs = start + jnp.arange(num_steps)

        def body(state, t):
            indices = self.problem.batch_indices(data_key, t)  # None for full batch
            return self.step(state, hparams, self.problem.gather(train_data, indices)), None

        def scan(state, xs, length):
            return jax.lax.scan(body, state, xs, length=length, unroll=unroll)[0]

        if checkpoint_every is None:
            return scan(state, xs, num_steps)
        k = min(checkpoint_every, num_steps)
        num_segments, remainder = divmod(num_steps, k)
        split = num_segments * k
        head = jax.tree.map(lambda a: a[:split].reshape((num_segments, k) + a.shape[1:]), xs)
        segment = jax.checkpoint(lambda state, seg: (scan(state, seg, k), None))
        state = jax.lax.scan(segment, state, head, length=num_segments, unroll=unroll)[0]
        if remainder:
            tail = jax.tree.map(lambda a: a[split:], xs)
            state = jax.checkpoint(lambda s, x: scan(s, x, remainder))(state, tail)
        return state

    def loss_and_scores(
        self, hparams: HParams, key: Key, data: Mapping[str, PyTree], **run_options
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """(validation loss, all scores) after training; the function methods differentiate."""
        params = self.run(hparams, key, data, **run_options).params
        scores = self.problem.scores(params, data)
        return scores["val_loss"], scores

    def reference(self, num_steps: int) -> Objective:
        """The same objective at horizon `num_steps`, fully unrolled: compute accounting compiles it
        at T=1 and T=2 because XLA's cost analysis counts a loop body once."""
        return dataclasses.replace(self, num_steps=num_steps, unroll=True)
