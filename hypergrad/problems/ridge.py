"""Ridge regression, whose trained weights and their hyperparameter derivatives have closed forms.

Model: y ~ X w on centred data (no intercept), parameters `{"w": (d,)}` initialised at zero.

    train_loss(w) = 0.5 * mean((X w - y)^2) + 0.5 * sum(weight_decay * w^2)
    val_loss(w)   = 0.5 * mean((X_val w - y_val)^2)

`weight_decay` is a scalar or a per-feature vector of shape (d,); without it the penalty is zero.

Closed forms (full batch): the gradient is A w - c with A = X'X/n + diag(weight_decay) and
c = X'y/n, so gradient descent with step sizes eta_t from w_0 = 0 gives

    w_T = w* - prod_t (I - eta_t A) w*,        w* = A^{-1} c,

and with a scalar penalty, A = Q diag(mu0 + lambda) Q' shares the eigenvectors Q of X'X/n, so
prod_t (I - eta_t A) = Q diag(prod_t (1 - eta_t mu_i)) Q'. Both are smooth in (eta, lambda), so
`jax.grad` of these expressions is the exact hypergradient that unrolled methods must reproduce.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._checks import is_number
from hypergrad.problem import Problem
from hypergrad.problems import _data
from hypergrad.problems._losses import default_dtype, l2_penalty

__all__ = ["ridge", "ridge_trained_weights", "ridge_solution"]


def _mse(w, batch):
    x, y = batch
    return 0.5 * jnp.mean(jnp.square(x @ w - y))


def ridge(
    dataset: str = "synthetic",
    *,
    num_examples: int | None = None,
    num_features: int | None = None,
    noise: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> Problem:
    """A ridge regression problem.

    Args:
        dataset: "synthetic" (a seeded linear model with Gaussian noise) or "diabetes".
        num_examples, num_features, noise: shape and noise (a standard deviation >= 0) of the
            synthetic data: 200, 10 and 0.5 when not given; refused for a named dataset, whose
            shape is its own.
        batch_size: None (full batch, where the closed forms hold) or a minibatch size.
        seed: seed of the data and its split.
    """
    dtype = np.dtype(default_dtype())
    _data.check_synthetic_only("ridge", dataset, num_examples=num_examples, num_features=num_features,
                               noise=noise)
    if dataset == "synthetic":
        noise = 0.5 if noise is None else noise
        if not (is_number(noise) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"ridge(noise={noise!r}): give the noise's standard deviation, a finite number >= 0")
        splits = _data.synthetic_regression(200 if num_examples is None else num_examples,
                                            10 if num_features is None else num_features, noise=noise, seed=seed,
                                            dtype=dtype)
    elif dataset in _data.REGRESSION:
        splits = _data.load(dataset, seed=seed, dtype=dtype)
    else:
        raise ValueError(f"ridge(dataset={dataset!r}): choose 'synthetic' or one of {_data.REGRESSION}")
    d = splits.train[0].shape[1]

    def init(key):
        del key  # zero initialisation: the closed forms start from w_0 = 0
        return {"w": jnp.zeros((d,), dtype)}

    def train_loss(params, hparams, batch):
        loss = _mse(params["w"], batch)
        if "weight_decay" in hparams:
            loss = loss + l2_penalty(params["w"], hparams["weight_decay"])
        return loss

    def val_loss(params, batch):
        return _mse(params["w"], batch)

    return Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=splits.train,
                   val_data=splits.val, test_data=splits.test, batch_size=batch_size, name=f"ridge-{dataset}")


def _moments(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    # On the host, in numpy: the data are constants of the problem, and staying out of the trace
    # lets the closed forms (whose eigendecomposition needs concrete values) run under jax.jit.
    x, y = (np.asarray(a) for a in problem.train_data)
    n = x.shape[0]
    return x.T @ x / n, x.T @ y / n


def ridge_solution(problem: Problem, weight_decay: Any) -> jax.Array:
    """The minimiser w* = (X'X/n + diag(weight_decay))^{-1} X'y/n of the training loss."""
    gram, c = _moments(problem)
    weight_decay = jnp.broadcast_to(jnp.asarray(weight_decay, gram.dtype), c.shape)
    return jnp.linalg.solve(gram + jnp.diag(weight_decay), c)


def ridge_trained_weights(problem: Problem, learning_rates: Any, weight_decay: Any, num_steps: int) -> jax.Array:
    """Weights after `num_steps` of full-batch gradient descent from zero, in closed form.

    Args:
        problem: a problem built by `ridge(batch_size=None)`.
        learning_rates: a scalar (constant step) or a schedule of shape (num_steps,) or longer
            (its first `num_steps` entries are used; a shorter one is refused).
        weight_decay: a scalar penalty (the eigenvector trick needs it scalar).
        num_steps: T.

    Returns:
        w_T = w* - Q diag(prod_t (1 - eta_t mu_i)) Q' w*, differentiable in both hyperparameters.
    """
    if problem.batch_size is not None:
        raise ValueError("ridge_trained_weights needs a full-batch problem: build it with batch_size=None")
    if jnp.ndim(weight_decay) != 0:
        raise ValueError("ridge_trained_weights: weight_decay must be a scalar; use ridge_solution for a vector")
    if jnp.ndim(learning_rates) > 1 or (jnp.ndim(learning_rates) == 1 and jnp.shape(learning_rates)[0] < num_steps):
        # slicing [:num_steps] silently took fewer steps than asked for
        raise ValueError(f"ridge_trained_weights: learning_rates has shape {jnp.shape(learning_rates)}; give a scalar "
                         f"or a schedule of at least num_steps={num_steps} entries")
    gram, c = _moments(problem)
    # The spectrum of the data Gram matrix is a constant of the problem: no derivative flows
    # through the eigendecomposition, only through mu = mu0 + lambda.
    mu0, q = np.linalg.eigh(np.asarray(gram, np.float64))
    mu0 = jnp.asarray(mu0, gram.dtype)
    q = jnp.asarray(q, gram.dtype)
    mu = mu0 + weight_decay
    w_star_eig = (q.T @ c) / mu                         # w* in the eigenbasis
    eta = jnp.broadcast_to(jnp.asarray(learning_rates, gram.dtype), (num_steps,)) \
        if jnp.ndim(learning_rates) == 0 else jnp.asarray(learning_rates)[:num_steps]
    decay = jnp.prod(1.0 - eta[:, None] * mu[None, :], axis=0)  # prod_t (1 - eta_t mu_i)
    return q @ (w_star_eig * (1.0 - decay))
