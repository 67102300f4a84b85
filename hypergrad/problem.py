"""Problem: the data and the pure loss functions of a learning task.

A problem knows nothing of optimisers or hyperparameter search. It holds

- `init(key) -> params`, any pytree (plain dicts, `flax.nnx.State`, equinox modules);
- `train_loss(params, hparams, batch) -> scalar`, where regularisation hyperparameters enter;
- `val_loss(params, batch) -> scalar`, the quantity hyperparameters are tuned for;
- the train, validation and (optional) test splits, each a pytree with a leading example axis;
- `batch_size` (None = full batch) and optional `metrics`, `fn(params, batch) -> scalar`,
  reported but never optimised.

Minibatch `t` is drawn with `jax.random.fold_in(key, t)`: `batch_size` distinct examples chosen
uniformly without replacement (the top `batch_size` of n uniforms), so every method that replays
step `t` sees the same data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._types import Batch, HParams, Key, Params, PyTree, Scalar

__all__ = ["Problem", "num_examples"]


def num_examples(data: PyTree, argname: str) -> int:
    """Length of the shared leading axis of `data`; `ValueError` if the leaves disagree."""
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"{argname} has no arrays; give a pytree such as (inputs, targets)")
    lengths = []
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(f"{argname} holds a scalar; every leaf needs a leading example axis")
        lengths.append(shape[0])
    if len(set(lengths)) != 1:
        raise ValueError(
            f"{argname}: inputs and targets have different lengths {lengths}; every leaf must have "
            "the same number of examples along axis 0"
        )
    if lengths[0] < 1:
        raise ValueError(f"{argname} is empty; give at least one example")
    return lengths[0]


def _as_device(data: PyTree) -> PyTree:
    return jax.tree.map(jnp.asarray, data)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A learning task: data splits plus pure loss functions. Hashed by identity.

    Args:
        init: `key -> params`.
        train_loss: `(params, hparams, batch) -> scalar`; regularisation hyperparameters enter here.
        val_loss: `(params, batch) -> scalar`; the objective that hyperparameters are tuned for.
        train_data, val_data: pytrees of arrays with a leading example axis.
        test_data: optional held-out split, reported for the chosen setting, never tuned on.
        batch_size: examples per training step; None means the full training set every step.
        metrics: optional `{name: fn(params, batch) -> scalar}`, reported on val and test.
        name: a label for reports.
    """

    init: Callable[[Key], Params]
    train_loss: Callable[[Params, HParams, Batch], Scalar]
    val_loss: Callable[[Params, Batch], Scalar]
    train_data: PyTree
    val_data: PyTree
    test_data: PyTree | None = None
    batch_size: int | None = None
    metrics: Mapping[str, Callable[[Params, Batch], Scalar]] = dataclasses.field(default_factory=dict)
    name: str = "problem"

    def __post_init__(self):
        for argname in ("init", "train_loss", "val_loss"):
            if not callable(getattr(self, argname)):
                raise ValueError(f"Problem({argname}=...) must be a function")
        n_train = num_examples(self.train_data, "train_data")
        num_examples(self.val_data, "val_data")
        if self.test_data is not None:
            num_examples(self.test_data, "test_data")
        if self.batch_size is not None:
            if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)):
                raise ValueError(f"batch_size={self.batch_size!r} must be an int or None (full batch)")
            if self.batch_size < 1:
                raise ValueError(f"batch_size={self.batch_size} must be >= 1, or None for full batch")
            if self.batch_size > n_train:
                raise ValueError(
                    f"batch_size={self.batch_size} is larger than the {n_train} training examples; "
                    f"use batch_size <= {n_train}, or None for full batch"
                )
        metrics = dict(self.metrics or {})
        for name, fn in metrics.items():
            if not callable(fn):
                raise ValueError(f"metrics[{name!r}] must be a function fn(params, batch) -> scalar")
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "train_data", _as_device(self.train_data))
        object.__setattr__(self, "val_data", _as_device(self.val_data))
        if self.test_data is not None:
            object.__setattr__(self, "test_data", _as_device(self.test_data))

    @property
    def num_train(self) -> int:
        return num_examples(self.train_data, "train_data")

    @property
    def data(self) -> dict[str, PyTree]:
        """All splits as one pytree, the explicit data argument of compiled programs."""
        data = {"train": self.train_data, "val": self.val_data}
        if self.test_data is not None:
            data["test"] = self.test_data
        return data

    def batch_indices(self, key: Key, step: jax.Array) -> jax.Array | None:
        """Indices of minibatch `step`: the `batch_size` largest of n uniforms drawn with
        `fold_in(key, step)`, which is a uniformly random subset without replacement.

        `step` may be an array of steps (the result gains its leading axes). Returns None for a
        full-batch problem. Cost: n uniforms and a top-k per step, O(n); a full permutation (a sort)
        cost about twice a training step of the digits MLP on a CPU.
        """
        if self.batch_size is None:
            return None
        n = self.num_train

        def one(t):
            # float32 whatever jax_enable_x64 says, so the minibatches do not depend on it
            scores = jax.random.uniform(jax.random.fold_in(key, t), (n,), dtype=jnp.float32)
            return jax.lax.top_k(scores, self.batch_size)[1]

        step = jnp.asarray(step)
        flat = jax.vmap(one)(step.reshape(-1))
        return flat.reshape(step.shape + (self.batch_size,))

    @staticmethod
    def gather(train_data: PyTree, indices: jax.Array | None) -> Batch:
        """The examples of `train_data` at `indices` (all of it when `indices` is None)."""
        if indices is None:
            return train_data
        return jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), train_data)

    def train_batch(self, train_data: PyTree, key: Key, step: jax.Array) -> Batch:
        """Minibatch `step`, drawn with `fold_in(key, step)` (see `batch_indices`)."""
        return self.gather(train_data, self.batch_indices(key, step))

    def scores(self, params: Params, data: Mapping[str, PyTree]) -> dict[str, Scalar]:
        """Validation and test losses and metrics of trained `params`.

        Returns:
            `{"val_loss", "test_loss", "val_<metric>", "test_<metric>"}` (test entries only when
            the problem has a test split).
        """
        out = {"val_loss": self.val_loss(params, data["val"])}
        for name, fn in self.metrics.items():
            out[f"val_{name}"] = fn(params, data["val"])
        if "test" in data:
            out["test_loss"] = self.val_loss(params, data["test"])
            for name, fn in self.metrics.items():
                out[f"test_{name}"] = fn(params, data["test"])
        return out


def as_problem(problem: Any) -> Problem:
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem must be an hg.Problem, got {type(problem).__name__}; build one with "
            "hg.Problem(init=..., train_loss=..., val_loss=..., train_data=..., val_data=...)"
        )
    return problem
