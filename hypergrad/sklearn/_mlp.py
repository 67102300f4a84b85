"""scikit-learn's `MLPClassifier` and `MLPRegressor`, fitted as one compiled hypergrad program.

The fit is an `hg.Objective`: `max_iter` epochs of `ceil(n / batch_size)` minibatch steps, one
`lax.scan` (hypergrad's `Loop`), with scikit-learn's rules inside one optax transformation
(`sklearn_solver`):

- network: `hidden_layer_sizes` dense layers with `activation`, then softmax (k > 2 classes),
  one logistic unit (2 classes, or a single class: as scikit-learn's, its targets are all 0,
  `predict` gives that class and `predict_proba` two columns), one logistic unit per label
  (multilabel: a 2-D indicator y, as scikit-learn's: `classes_` np.arange(labels), `predict` the
  indicator of the labels whose probability is above 0.5, `predict_proba` (n, labels), `score`
  subset accuracy) or identity (regression); weights and biases Glorot-uniform,
  bound sqrt(6 / (fan_in + fan_out)) (sqrt(2 / ...) for logistic), as scikit-learn draws them;
- loss of a minibatch of m examples: mean log-loss (multilabel: the binary log-loss summed over
  labels, scikit-learn's `binary_log_loss`), or half the mean squared error over examples and
  outputs, + alpha / (2 m) * sum of squared weights (not biases), scikit-learn's `_backprop`;
- minibatches: every epoch a fresh permutation (`shuffle=True`) or the data's order, cut into
  slices of `batch_size` ("auto" = min(200, n)) with a smaller last slice, as `gen_batches`;
  the short slice is padded with rows of weight 0 (so every step has one shape);
- sgd: v <- momentum v - lr g, update v (or momentum v - lr g with Nesterov); learning_rate
  "invscaling" sets lr = learning_rate_init / (t + 1)^power_t after each epoch (t = examples
  seen); "adaptive" divides lr by 5 whenever the epoch loss has not improved by tol for more than
  n_iter_no_change epochs (stopping once lr <= 1e-6); adam: scikit-learn's form,
  lr_t = learning_rate_init sqrt(1 - beta_2^t) / (1 - beta_1^t), update -lr_t m / (sqrt(v) + eps);
- stopping: after each epoch the epoch loss (mean of the minibatch losses weighted by their sizes,
  penalty included: `loss_curve_`) or, with `early_stopping`, the validation score on a held-out
  `validation_fraction` (scikit-learn's `train_test_split`, stratified for classifiers, not for
  multilabel y, which scikit-learn's does not stratify) is compared with the best
  so far; more than n_iter_no_change epochs without an improvement of tol stops the fit. Under
  vmap every fit runs all `max_iter` epochs of steps, but a stopped fit is frozen (its updates
  are zero and its state no longer changes, a `jnp.where`), so its parameters and `n_iter_` are
  exactly those of the fit run alone. With early stopping the best parameters are restored.
  Whether the rule stopped the fit (else it ran out of epochs: `fit`'s ConvergenceWarning) is
  carried in the parameters (`FitParams.stopped`), so a search reads it per fit from its program.

Differences from scikit-learn, on purpose: the random numbers (initialisation, shuffling) come
from JAX keys and the early-stopping split from `train_test_split` seeded by `random_state` (not
scikit-learn's stream, which draws the weights first), so a fit matches scikit-learn in
distribution, not digit for digit; log-losses are computed from logits, and the searches' scored
log loss is clamped as scikit-learn's `log_loss` clips probabilities (`_base.clipped_log_loss`; the
training loss is not). `predict_proba` is float64 in either float width and for float32 input too
(`_base.PROBABILITY_DTYPE`; scikit-learn's keeps float32 input in float32). `solver="lbfgs"` and
`warm_start=True` are refused with a ValueError; there is no `partial_fit` (an AttributeError, as
for any estimator without it: refit with `fit`, or use scikit-learn's own estimator for
incremental fits); a fit whose weights are not finite raises scikit-learn's "Solver produced
non-finite parameter weights" ValueError; `fit` takes `sample_weight`
(scikit-learn's weighting, `_MLP.fit`), but a search's vmapped fits weigh no examples (a search
given `sample_weight` hands it to scikit-learn's search, fit by fit). Arithmetic is in JAX's
default float dtype: float32 unless `jax_enable_x64` is on (scikit-learn keeps float64 input in
float64); `max_fun` (lbfgs only) is accepted and unused.

With `jax_enable_x64` on (float64, as `tests/test_sklearn_estimators.py` runs it), scikit-learn's
`check_estimator` passes for both estimators with nothing expected to fail; scikit-learn itself skips
`check_array_api_input` unless the environment sets SCIPY_ARRAY_API=1 (these estimators take numpy
input only). In JAX's default float32, `check_sample_weight_equivalence_on_dense_data` fails for
both: a fit with integer `sample_weight` and one on the examples repeated that often sum in other
orders, so their coefficients and predictions agree to float32 rounding (about 1e-6 relative), not
to the check's 1e-7.

Cost of a fit: max_iter * ceil(n / batch_size) forward-backward passes, plus the validation score
each epoch with early stopping. Every fit runs all of them (a stopped fit's remaining steps are
computed and discarded), which is what lets many fits share one vmapped program. Memory: the
parameters, two optimiser moment trees and one minibatch. Compilation: one program per
structural configuration and data shape, cached (`hypergrad.sklearn._base.cached_program`); a
small fit (`fit_flops` up to `_base.QUICK_COMPILE_FLOPS`) is compiled with XLA's quick options
(`_base.fit_compiler_options`): its compilation, not its run, is its cost.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse
import scipy.special
import sklearn.base
import sklearn.neural_network
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

import hypergrad as hg
from hypergrad import _caches, _compile
from hypergrad._checks import users_stacklevel
from hypergrad._sampler import epoch_batch_indices
from hypergrad.problems._matmul import matmul, transposed_copy
from hypergrad.sklearn._base import (PROBABILITY_DTYPE, SPARSE_FORMATS, HypergradEstimator, as_option, cached_program,
                                     class_codes, class_probabilities, clipped_log_loss, dense, encode_classes,
                                     fewer_than_two_real, fit_compiler_options, on_device, padded_part, real_mean)

__all__ = ["MLPClassifier", "MLPRegressor", "sklearn_solver", "forward"]

ACTIVATIONS = {"identity": lambda z: z, "logistic": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}
# Each activation's derivative as JAX's own rule computes it, written from the output y (tangent g):
# relu's z > 0 is y > 0; tanh's and logistic's are JAX's expressions in their answer.
DERIVATIVES = {"identity": lambda g, y: g,
               "logistic": lambda g, y: jax.lax.mul(g, jax.lax.mul(y, jax.lax.sub(jnp.ones_like(y), y))),
               "tanh": lambda g, y: jax.lax.mul(jax.lax.add(g, jax.lax.mul(g, y)), jax.lax.sub(jnp.ones_like(y), y)),
               "relu": lambda g, y: jax.lax.select(y > 0, g, jnp.zeros_like(g))}
SOLVERS = ("sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive")
MIN_SGD_LR = 1e-6  # scikit-learn's SGDOptimizer stops (adaptive) once its rate is at most this

STRUCTURAL = frozenset({"hidden_layer_sizes", "activation", "solver", "learning_rate", "batch_size", "max_iter",
                        "shuffle", "nesterovs_momentum", "early_stopping", "validation_fraction", "n_iter_no_change",
                        "tol"})
CONTINUOUS = frozenset({"alpha", "learning_rate_init", "power_t", "momentum", "beta_1", "beta_2", "epsilon"})
MASKABLE = ("hidden_layer_sizes", "activation", "solver", "learning_rate")


# -- the network ------------------------------------------------------------------------------------
def forward(layers: Sequence[tuple[jax.Array, jax.Array]], inputs: jax.Array, activation: Any,
            keeps: Sequence[jax.Array] | None = None) -> jax.Array:
    """Output pre-activations (outputs, batch) of the network on `inputs` (batch, features).
    `layers` holds (kernel (out, in), bias (out,)) pairs (scikit-learn's `coefs_[i].T`,
    `intercepts_[i]`); `activation` maps pre-activations to activations; `keeps` (optional, one
    0/1 vector per hidden layer) zeroes masked hidden units.

    Hidden activations are batch-major (batch, units), so that no step of training copies them
    into the other layout: the first layer is `matmul(inputs, copy(kernel.T))`, whose kernel
    gradient is a plain product with a transposed copy of the inputs (the minibatch; `_matmul`,
    canonical products at every order of differentiation), and the later layers are plain
    products whose kernel gradients contract the batch axis of the activations in place. (The
    feature-major layout of `hypergrad.problems.mlp.affine` copies every hidden layer's
    activations transposed for its kernel gradient, each step: the costliest single operation of
    a wide network with few inputs and outputs, as scikit-learn's studies have.) Cost: the products
    and one transposed copy of the inputs and of the first kernel per step."""
    h = inputs
    for i, (kernel, bias) in enumerate(layers[:-1]):
        product = matmul(h, transposed_copy(kernel)) if i == 0 else h @ kernel.T
        h = activation(product + bias[None, :])
        if keeps is not None:
            h = h * keeps[i]
    kernel, bias = layers[-1]
    out = matmul(h, transposed_copy(kernel)) if len(layers) == 1 else h @ kernel.T
    return (out + bias[None, :]).T


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def selected_activation(options: tuple[str, ...], index: jax.Array, z: jax.Array) -> jax.Array:
    """`ACTIVATIONS[options[index]](z)` for a traced option index (a masked activation).

    Under vmap a traced index selects among every option's output, so every option is computed;
    the derivative is written from the selected output alone (`DERIVATIVES`, JAX's own rules), so
    the backward pass reads the one output array instead of each option's output and the
    pre-activations again: the same numbers, bit for bit, as differentiating the selection, with
    one pass over the hidden activations fewer per step. Differentiable to any order (the rule is
    made of differentiable operations and this function)."""
    return jax.lax.switch(index, [ACTIVATIONS[o] for o in options], z)


@selected_activation.defjvp
def _selected_activation_jvp(options, primals, tangents):
    index, z = primals
    g = tangents[1]
    y = selected_activation(options, index, z)
    return y, jax.lax.switch(index, [DERIVATIVES[o] for o in options], g, y)


def per_example_loss(out: str, z: jax.Array, targets: jax.Array) -> jax.Array:
    """Loss of each example (batch,) from pre-activations z (outputs, batch) and targets (batch,
    outputs): softmax log-loss, binary log-loss of a logistic unit (summed over the units of a
    multilabel problem, one per label: scikit-learn's `binary_log_loss`, whose mean over examples
    it sums over labels), or half the squared error averaged over outputs (scikit-learn's
    LOSS_FUNCTIONS)."""
    if out == "softmax":
        return -jnp.sum(targets.T * jax.nn.log_softmax(z, axis=0), axis=0)
    if out == "logistic":
        return -jnp.sum(targets.T * jax.nn.log_sigmoid(z) + (1 - targets.T) * jax.nn.log_sigmoid(-z), axis=0)
    return 0.5 * jnp.mean(jnp.square(targets.T - z), axis=0)


def hits(out: str, z: jax.Array, targets: jax.Array) -> jax.Array:
    """Whether each example (batch,) is predicted right, from classifier pre-activations z (outputs,
    batch) and targets (batch, outputs) as `padded` makes them: softmax, the most probable class is
    the one-hot target's; logistic, every unit's z > 0 (probability above 0.5, scikit-learn's
    threshold) equals its 0/1 target, so a binary problem's one unit, and all of a multilabel
    problem's at once (scikit-learn's subset accuracy, `accuracy_score` of an indicator y)."""
    if out == "softmax":
        return jnp.argmax(z, axis=0) == jnp.argmax(targets, axis=1)
    return jnp.all((z > 0) == (targets.T > 0.5), axis=0)


def scored_log_loss(task: Task, z: jax.Array, targets: jax.Array) -> jax.Array:
    """Each example's log loss (batch,) as scikit-learn's `neg_log_loss` scorer computes it from
    `predict_proba` (`clipped_log_loss`: each probability clipped as its `log_loss` clips them).
    Softmax or one logistic unit: the true class's -log p. Multilabel (logistic units, one a
    label): scikit-learn's `log_loss` reads `predict_proba`'s (n, labels) as one distribution over
    the labels, so an example loses -log p_j for each label j it has, and nothing for those it lacks
    (not the training loss: see `per_example_loss`); with two labels, the scorer takes `classes_`
    [0, 1] as a binary problem's and reads the second column alone as the positive class's
    probability, so the first label loses -log(1 - p_2) and the second -log p_2."""
    if not task.multilabel:
        return clipped_log_loss(per_example_loss(task.out, z, targets))
    if task.n_outputs == 2:
        z = jnp.stack([-z[1], z[1]])
    return jnp.sum(targets.T * clipped_log_loss(-jax.nn.log_sigmoid(z)), axis=0)


def r2(targets: jax.Array, z: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """scikit-learn's r2_score (uniform average over outputs; a constant target scores 1 when
    predicted exactly, else 0) of predictions z (outputs, batch) against targets (batch, outputs),
    each example's squares times its weight when `weights` (batch,) are given, as its
    `sample_weight`. NaN for fewer than two examples (undefined: scikit-learn's r2_score, whose NaN
    scikit-learn's search keeps for a one-example fold, e.g. LeaveOneOut)."""
    if targets.shape[0] < 2:
        return jnp.full((), jnp.nan, z.dtype)
    w = jnp.ones(targets.shape[0], targets.dtype) if weights is None else weights
    residual = jnp.sum(w[None, :] * jnp.square(targets.T - z), axis=1)
    mean = jnp.sum(w[:, None] * targets, axis=0, keepdims=True) / jnp.sum(w)
    total = jnp.sum(w[:, None] * jnp.square(targets - mean), axis=0)
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.mean(jnp.where(total > 0, 1 - residual / safe, jnp.where(residual == 0, 1.0, 0.0)))


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser ('lowbias32'): every input bit flips each output bit with
    probability close to 1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _unit_grid(words: jax.Array, rows: int, cols: int, dtype: Any) -> jax.Array:
    """Uniform(-1, 1) numbers (rows, cols) on a grid of 2**24 values, entry (i, j) a hash of three
    random 32-bit `words` with i and j alone: a network of width w draws the same first w units as
    one of any larger width, so masked and grouped widths, and a search and a refit, start from the
    same weights (and float32 and float64 from the same numbers). A hash instead of `jax.random`
    per entry, whose threefry rounds take seconds to compile."""
    i = jnp.arange(rows, dtype=jnp.uint32)[:, None]
    j = jnp.arange(cols, dtype=jnp.uint32)[None, :]
    h = _mix(_mix(_mix(i ^ words[0]) ^ (j + words[1])) ^ words[2])
    return (h >> 8).astype(dtype) * (2.0 ** -23) - 1.0


def init_layers(key: jax.Array, widest: Sequence[int], dims: Sequence[Any], keeps: Sequence[Any], factor: Any,
                dtype: Any) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-uniform (kernel (out, in), bias) pairs at the `widest` sizes, bound
    sqrt(factor / (dims[l] + dims[l + 1])) with the true (possibly traced) widths `dims`; units
    outside `keeps` (0/1 vectors per layer, input and output all ones) get zero weights. One
    draw of random words from `key` (layer l's kernel and bias hash their own three)."""
    words = jax.random.bits(key, (len(widest) - 1, 2, 3), jnp.uint32)
    layers = []
    for l in range(len(widest) - 1):
        bound = jnp.sqrt(jnp.asarray(factor, dtype) / jnp.asarray(dims[l] + dims[l + 1], dtype))
        kernel = _unit_grid(words[l, 0], widest[l], widest[l + 1], dtype).T * bound
        bias = _unit_grid(words[l, 1], 1, widest[l + 1], dtype)[0] * bound
        layers.append((kernel * keeps[l + 1][:, None] * keeps[l][None, :], bias * keeps[l + 1]))
    return layers


# -- scikit-learn's minibatches ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class EpochBatches(hg.Problem):
    """An `hg.Problem` whose minibatches are scikit-learn's: epoch e = t // B (B batches an epoch),
    batch j = t mod B holds positions j*b, ..., j*b + b - 1 of the epoch's order (a keyed
    permutation when `shuffle`, else the data's order); positions past the `num_real` examples
    point at the padding row `num_real` (weight 0 in the training data), so the last batch of an
    epoch holds the remainder, as `gen_batches`. Cost: O(b) per step (hypergrad's epoch sampler
    evaluated at single positions)."""

    num_real: int = 1
    shuffle: bool = True

    def batch_indices(self, key: jax.Array, step: jax.Array) -> jax.Array | None:
        if self.batch_size is None:
            return None
        n, b = self.num_real, self.batch_size
        per_epoch = -(-n // b)
        step = jnp.asarray(step)
        epoch, j = step // per_epoch, step % per_epoch
        position = j[..., None] * b + jnp.arange(b)
        real = position < n
        position = jnp.minimum(position, n - 1)
        if self.shuffle:
            stream = (epoch[..., None] * n + position).astype(jnp.uint32)
            position = epoch_batch_indices(key, stream, n, 1)[..., 0]
        return jnp.where(real, position, n).astype(jnp.int32)


# -- scikit-learn's solvers and stopping rule, as one optax transformation ----------------------------
class SolverState(NamedTuple):
    """State of `sklearn_solver`: the solver's, the epoch's and the stopping rule's."""

    step: jax.Array            # minibatch steps taken
    lr: jax.Array              # sgd's current learning rate
    velocity: Any              # sgd
    mu: Any                    # adam's first moment
    nu: Any                    # adam's second moment
    epoch_loss: jax.Array      # sum over this epoch's batches of batch loss x batch examples
    best: jax.Array            # best epoch loss (or best validation score with early stopping)
    no_improvement: jax.Array  # epochs in a row without an improvement of tol
    stopped: jax.Array         # the fit has stopped: everything frozen
    n_iter: jax.Array          # epochs run
    loss_curve: jax.Array      # (max_iter,) epoch losses, 0 after n_iter (read up to n_iter)
    val_scores: jax.Array      # (max_iter,) validation scores with early stopping (0 after n_iter), else 0
    best_params: Any           # parameters at the best validation score (early stopping), else ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """The static shape of a fit: examples, minibatches and the stopping rule's constants."""

    num_real: int
    batch_size: int
    max_iter: int
    tol: float
    n_iter_no_change: float
    nesterov: bool
    early_stopping: bool

    @property
    def batches(self) -> int:
        return -(-self.num_real // self.batch_size)

    def counts(self) -> np.ndarray:
        """Real examples in each batch of an epoch."""
        return np.minimum(self.batch_size, self.num_real - self.batch_size * np.arange(self.batches))


def _sqrt0(v: jax.Array) -> jax.Array:
    """sqrt(v) whose derivative at v = 0 is 0 instead of infinity: a weight whose gradient is
    always zero (a masked unit, a dead relu) keeps v = 0, and reverse mode through sqrt would
    multiply its zero cotangent by infinity (NaN hypergradients)."""
    positive = v > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)


def _solver_update(grads, state: SolverState, is_adam: Any, h: Mapping[str, Any], nesterov: bool):
    """(updates, velocity, mu, nu) of scikit-learn's SGD or Adam; `is_adam` a Python bool (one
    solver computed) or a traced bool (both computed, one selected)."""
    def sgd():
        velocity = jax.tree.map(lambda v, g: h["momentum"] * v - state.lr * g, state.velocity, grads)
        if nesterov:
            return jax.tree.map(lambda v, g: h["momentum"] * v - state.lr * g, velocity, grads), velocity
        return velocity, velocity

    def adam():
        t = (state.step + 1).astype(state.lr.dtype)
        mu = jax.tree.map(lambda m, g: h["beta_1"] * m + (1 - h["beta_1"]) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: h["beta_2"] * v + (1 - h["beta_2"]) * g * g, state.nu, grads)
        lr = h["learning_rate_init"] * jnp.sqrt(1 - h["beta_2"] ** t) / (1 - h["beta_1"] ** t)
        return jax.tree.map(lambda m, v: -lr * m / (_sqrt0(v) + h["epsilon"]), mu, nu), mu, nu

    if is_adam is True:
        updates, mu, nu = adam()
        return updates, state.velocity, mu, nu
    if is_adam is False:
        updates, velocity = sgd()
        return updates, velocity, state.mu, state.nu
    (sgd_updates, velocity), (adam_updates, mu, nu) = sgd(), adam()
    return jax.tree.map(lambda a, s: jnp.where(is_adam, a, s), adam_updates, sgd_updates), velocity, mu, nu


def _end_epoch(state: SolverState, loss, new_params, rule: Rule, h: Mapping[str, Any], kinds: tuple,
               val_score: Any) -> SolverState:
    """The state after an epoch's last batch: loss curve, stopping counts, learning rate (as
    scikit-learn's `_update_no_improvement_count`, `iteration_ends` and `trigger_stopping`)."""
    is_adam, invscaling, adaptive = kinds
    n_iter = state.n_iter + 1
    curve = state.loss_curve.at[state.n_iter].set(loss)
    scores, best_params = state.val_scores, state.best_params
    if rule.early_stopping:
        score = val_score(new_params)
        scores = scores.at[state.n_iter].set(score)
        no_improvement = jnp.where(score < state.best + rule.tol, state.no_improvement + 1, 0)
        better = score > state.best
        best = jnp.where(better, score, state.best)
        best_params = jax.tree.map(lambda new, old: jnp.where(better, new, old), new_params, best_params)
    else:
        no_improvement = jnp.where(loss > state.best - rule.tol, state.no_improvement + 1, 0)
        best = jnp.minimum(state.best, loss)
    is_sgd = jnp.logical_not(is_adam)
    examples = (n_iter * rule.num_real).astype(loss.dtype)
    lr = jnp.where(jnp.logical_and(is_sgd, invscaling),
                   h["learning_rate_init"] / (examples + 1) ** h["power_t"], state.lr)
    trigger = no_improvement.astype(loss.dtype) > rule.n_iter_no_change
    reduce = trigger & is_sgd & adaptive & (lr > MIN_SGD_LR)
    return state._replace(
        lr=jnp.where(reduce, lr / 5, lr), epoch_loss=jnp.zeros_like(loss), best=best,
        no_improvement=jnp.where(reduce, 0, no_improvement), stopped=trigger & ~reduce, n_iter=n_iter,
        loss_curve=curve, val_scores=scores, best_params=best_params)


def sklearn_solver(rule: Rule, h: Mapping[str, Any], kinds: tuple, val_score: Any = None
                   ) -> optax.GradientTransformationExtraArgs:
    """scikit-learn's stochastic solvers and stopping rule (module docstring) as one optax
    transformation reading the minibatch loss as `value=`.

    Args:
        rule: the fit's static shape.
        h: traced numbers: learning_rate_init, power_t, momentum, beta_1, beta_2, epsilon.
        kinds: (is_adam, invscaling, adaptive), Python or traced bools (masked choices).
        val_score: `params -> score` on the early-stopping split (with `rule.early_stopping`).

    Cost per step: the solver's elementwise update (both solvers under a traced `is_adam`), and at
    an epoch's end the bookkeeping (plus the validation score with early stopping).
    """
    counts = jnp.asarray(rule.counts())

    def init(params):
        dtype = jax.tree.leaves(params)[0].dtype
        zeros = jax.tree.map(jnp.zeros_like, params)
        unset = jnp.zeros((rule.max_iter,), dtype)  # not NaN: a fit's outputs trip jax_debug_nans
        best = -jnp.inf if rule.early_stopping else jnp.inf
        return SolverState(jnp.zeros((), jnp.int32), jnp.asarray(h["learning_rate_init"], dtype), zeros, zeros,
                           zeros, jnp.zeros((), dtype), jnp.asarray(best, dtype), jnp.zeros((), jnp.int32),
                           jnp.zeros((), bool), jnp.zeros((), jnp.int32), unset, unset,
                           params if rule.early_stopping else ())

    def update(grads, state, params=None, *, value, **extra):
        del extra
        updates, velocity, mu, nu = _solver_update(grads, state, kinds[0], h, rule.nesterov)
        new_params = optax.apply_updates(params, updates)
        j = state.step % rule.batches
        running = state._replace(step=state.step + 1, velocity=velocity, mu=mu, nu=nu,
                                 epoch_loss=state.epoch_loss + value * counts[j].astype(value.dtype))
        last = j == rule.batches - 1
        if rule.batches == 1:  # every step is an epoch: its loss is the epoch's (n is not needed)
            new = _end_epoch(running, value, new_params, rule, h, kinds, val_score)
        else:
            ended = _end_epoch(running, running.epoch_loss / rule.num_real, new_params, rule, h, kinds, val_score)
            new = jax.tree.map(lambda a, b: jnp.where(last, a, b), ended, running)
        if rule.early_stopping:  # restore the best parameters when the fit ends
            done = last & (new.stopped | (new.n_iter == rule.max_iter))
            updates = jax.tree.map(lambda u, best, p: jnp.where(done, best - p, u), updates, new.best_params, params)
        frozen = state._replace(step=state.step + 1)
        new = jax.tree.map(lambda a, b: jnp.where(state.stopped, a, b), frozen, new)
        return jax.tree.map(lambda u: jnp.where(state.stopped, jnp.zeros_like(u), u), updates), new

    return optax.GradientTransformationExtraArgs(init, update)


class FitParams(NamedTuple):
    """What a fit's loop trains and its readout sees: the network's layers ((kernel (out, in), bias)
    pairs, as `forward` takes them) and `stopped`, 1.0 once scikit-learn's stopping rule has stopped
    the fit (no improvement of tol for more than n_iter_no_change epochs, of the training loss or,
    with early stopping, of the validation score), else 0.0: 0.0 at the end is a fit that ran all
    `max_iter` epochs without converging, for which `fit` warns (`_MLP._adopt`). It is a parameter
    because hypergrad's readout reads only the parameters: the family reports it as the metric
    "stopped", so a search learns it per candidate x fold from the program it runs anyway. No loss
    reads it (its gradient is 0) and `reporting_stop` writes it, so it changes no other number;
    cost: one scalar per fit."""

    layers: list
    stopped: jax.Array


def reporting_stop(solver: optax.GradientTransformationExtraArgs) -> optax.GradientTransformationExtraArgs:
    """`solver` (a `sklearn_solver`) over `FitParams`, whose update also sets `FitParams.stopped` to
    the solver's `SolverState.stopped` (the flag `fit`'s ConvergenceWarning reads): its update is
    the new flag minus the old (exact for 0 and 1), whatever the solver computed for that leaf
    (restoring early stopping's best parameters included); 0 once the fit is frozen (the flag is
    already 1). Cost: a scalar per step."""
    def update(grads, state, params=None, *, value, **extra):
        updates, new = solver.update(grads, state, params, value=value, **extra)
        flag = new.stopped.astype(params.stopped.dtype) - params.stopped
        return updates._replace(stopped=flag), new

    return optax.GradientTransformationExtraArgs(solver.init, update)


# -- the family: one hg.Objective per structural configuration ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Task:
    """What the targets make of the network's output: "softmax", "logistic" or "identity" units.
    Logistic units are one (a binary problem) or one per label (multilabel: an indicator y)."""

    out: str
    n_outputs: int

    @property
    def classifier(self) -> bool:
        return self.out != "identity"

    @property
    def multilabel(self) -> bool:
        return self.out == "logistic" and self.n_outputs > 1


def task_of(classifier: bool, y: np.ndarray, n_classes: int | None = None) -> Task:
    """The output layer for encoded targets: class indices (n,), a multilabel indicator (n, labels)
    (one logistic unit per label, as scikit-learn's; `n_classes`, the number of labels, unread), or
    regression targets (n,) / (n, m)."""
    if not classifier:
        return Task("identity", 1 if y.ndim == 1 else int(y.shape[1]))
    if y.ndim == 2:
        return Task("logistic", int(y.shape[1]))
    k = int(n_classes) if n_classes is not None else int(np.max(y)) + 1
    return Task("softmax", k) if k > 2 else Task("logistic", 1)


def as_sizes(value: Any) -> tuple[int, ...]:
    """hidden_layer_sizes as a tuple of ints (scikit-learn accepts an int or an array-like)."""
    return tuple(int(v) for v in np.atleast_1d(np.asarray(value)).tolist())


def padded(task: Task, x: np.ndarray, y: np.ndarray, dtype: Any, weights: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, targets, weights) with one padding row of weight 0 appended (`EpochBatches`); targets
    one-hot (softmax), 0/1 columns (logistic: one, or a multilabel indicator's) or the values (n,
    outputs); weights 1 each unless given (a fit's `sample_weight`)."""
    n = len(x)
    weights = np.ones(n, dtype) if weights is None else np.asarray(weights, dtype)
    if task.out == "softmax":
        targets = np.eye(task.n_outputs, dtype=dtype)[np.asarray(y, np.int64)]
    else:
        targets = np.asarray(y, dtype).reshape(n, -1)
    x = np.concatenate([np.asarray(x, dtype), np.zeros((1, x.shape[1]), dtype)])
    targets = np.concatenate([targets, np.zeros((1, targets.shape[1]), dtype)])
    return x, targets, np.concatenate([weights, np.zeros(1, dtype)])


def early_stopping_split(task: Task, p: Mapping[str, Any], train: tuple, seed: int) -> tuple[tuple, tuple]:
    """scikit-learn's split for early stopping: `train_test_split(test_size=validation_fraction,
    stratify=y for classifiers, but not multilabel ones, as scikit-learn's)` of `train`, (x, y) or
    (x, y, sample weights); (part trained on, part scored each epoch), each as `train` is (the
    weights split with their examples, as scikit-learn's fit splits them)."""
    parts = train_test_split(*train, random_state=seed, test_size=p["validation_fraction"],
                             stratify=train[1] if task.classifier and not task.multilabel else None)
    if len(parts[1]) < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of your dataset.")
    return tuple(parts[0::2]), tuple(parts[1::2])


def batch_size_of(p: Mapping[str, Any], n: int) -> int:
    """scikit-learn's batch size: "auto" = min(200, n), else clipped to [1, n]. Silent: a fit's
    program is traced once and then cached, so the clip's warning is given where a fit starts
    (`warn_if_clipped`), not here."""
    if p["batch_size"] == "auto":
        return min(200, n)
    return int(np.clip(p["batch_size"], 1, n))


# True on a search's refit-compiling thread (`Refit.start`), whose `_family` would warn at threading's
# line: the refit's warning is given by `Refit.fit`, at the user's line, instead
_refit_thread: contextvars.ContextVar[bool] = contextvars.ContextVar("hypergrad_sklearn_refit_thread", default=False)


def warn_if_clipped(p: Mapping[str, Any], n: int) -> None:
    """scikit-learn's warning for a `batch_size` larger than the `n` examples an epoch trains on
    (`trained_examples`), once per fit as scikit-learn gives it, at the user's line (their `fit`
    or `search.fit`): called where a fit starts (`_run`), where a search's family of fits is made
    (`_family`), whether or not a program is traced, and by a search's compiled refit (`Refit.fit`)."""
    if _refit_thread.get():
        return
    if p["batch_size"] != "auto" and p["batch_size"] > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                      UserWarning, stacklevel=users_stacklevel())


def trained_examples(p: Mapping[str, Any], n: int) -> int:
    """Examples an epoch trains on out of `n`: all, less the early-stopping split
    (`train_test_split`'s ceil(validation_fraction * n))."""
    if not p["early_stopping"]:
        return n
    return n - int(math.ceil(p["validation_fraction"] * n))


def rule_of(p: Mapping[str, Any], n: int) -> Rule:
    return Rule(num_real=n, batch_size=batch_size_of(p, n), max_iter=int(p["max_iter"]), tol=float(p["tol"]),
                n_iter_no_change=float(p["n_iter_no_change"]), nesterov=bool(p["nesterovs_momentum"]),
                early_stopping=bool(p["early_stopping"]))


ZERO_AT_ZERO = frozenset({"identity", "tanh", "relu"})
"""Activations that map 0 to 0: a masked unit's activation is then 0 without multiplying by its keep."""


class Network(NamedTuple):
    """The network of one configuration at given hparams: activation, Glorot factor, sizes."""

    activation: Any
    factor: Any
    widest: tuple[int, ...]
    dims: tuple[Any, ...]
    keeps: tuple[Any, ...] | None   # per hidden layer, when the widths are masked
    output_keeps: tuple[Any, ...] | None = None  # the keeps `forward` must apply (see `network`)


def network(config: Mapping[str, Any], hparams: Mapping[str, Any], n_in: int, n_out: int, dtype: Any) -> Network:
    """The activation and layer sizes of `config` (masked choices read their index from hparams).

    A masked unit (beyond its fit's width) starts with zero weights in and out (`init_layers`),
    and they stay zero: its gradients are products with its zero outgoing weights. Its
    pre-activation is therefore exactly 0, and when every activation option maps 0 to 0
    (`ZERO_AT_ZERO`: not logistic) its activation is 0 too, so `forward` needs no multiplication
    by the keeps (`output_keeps` None): the same numbers, bit for bit, and one pass over the
    hidden activations fewer in each direction."""
    act = config["activation"]
    if isinstance(act, hg.Masked):
        index = hparams["activation"]
        activation = functools.partial(selected_activation, tuple(act.options), index)
        factor = jnp.asarray([2.0 if o == "logistic" else 6.0 for o in act.options], dtype)[index]
    else:
        activation, factor = ACTIVATIONS[act], 2.0 if act == "logistic" else 6.0
    sizes = config["hidden_layer_sizes"]
    if not isinstance(sizes, hg.Masked):
        sizes = as_sizes(sizes)
        widest = (n_in, *sizes, n_out)
        return Network(activation, factor, widest, widest, None)
    options = np.asarray([as_sizes(o) for o in sizes.options])
    widths = jnp.asarray(options)[hparams["hidden_layer_sizes"]]
    widest = (n_in, *(int(w) for w in options.max(axis=0)), n_out)
    keeps = tuple((jnp.arange(widest[l + 1]) < widths[l]).astype(dtype) for l in range(options.shape[1]))
    zero_at_zero = set(act.options if isinstance(act, hg.Masked) else [act]) <= ZERO_AT_ZERO
    return Network(activation, factor, widest, (n_in, *(widths[l] for l in range(options.shape[1])), n_out), keeps,
                   None if zero_at_zero else keeps)


def _kinds(config: Mapping[str, Any], hparams: Mapping[str, Any]) -> tuple:
    """(is_adam, invscaling, adaptive): Python bools, or traced ones for masked choices."""
    def is_option(name, option):
        value = config[name]
        if isinstance(value, hg.Masked):
            return hparams[name] == value.options.index(option) if option in value.options else False
        return value == option

    return is_option("solver", "adam"), is_option("learning_rate", "invscaling"), is_option("learning_rate", "adaptive")


def _dtype() -> Any:
    """float64 when jax_enable_x64 is on, float32 otherwise."""
    return jnp.zeros(()).dtype


def problem_data(task: Task, train: tuple, val: tuple, dtype: Any) -> dict[str, tuple]:
    """The splits as the family's problem holds them: train padded (`padded`; `train` is (x, y) or
    (x, y, sample weights)), val (X, targets), or (X, targets, weights) for a padded part (x, y,
    weights) (`padded_part`: the scores are then its weighted means, `real_mean`)."""
    held = held_out_arrays(task, val, dtype)
    return {"train": padded(task, *train[:2], dtype, *train[2:]), "val": held if len(val) > 2 else held[:2]}


def weighted_score(task: Task, logits: Any) -> Any:
    """`(params, hparams, (X, targets, weights)) -> score`: scikit-learn's `score` with
    `sample_weight` (weighted accuracy, subset accuracy for multilabel, or weighted R^2), the
    early-stopping score of a weighted fit."""
    def score(params, hparams, batch):
        inputs, targets, weights = batch
        z = logits(params, hparams, inputs)
        if not task.classifier:
            return r2(targets, z, weights)
        right = hits(task.out, z, targets).astype(weights.dtype)
        return jnp.sum(weights * right) / jnp.sum(weights)

    return score


def _metrics(task: Task, logits: Any) -> dict[str, Any]:
    """The family's reported metrics on (X, targets) batches, or on padded parts (X, targets,
    weights), whose padding rows they leave out (`real_mean`): accuracy is subset accuracy for
    multilabel targets, and "log_loss" scikit-learn's scorer's (`scored_log_loss`)."""
    def accuracy(params, hparams, batch):
        right = hits(task.out, logits(params, hparams, batch[0]), batch[1])
        return real_mean(right.astype(batch[0].dtype), batch)  # a mean of bools is float32 even under x64

    def log_loss(params, hparams, batch):  # a score: clipped as scikit-learn's log_loss (the training loss is not)
        return real_mean(scored_log_loss(task, logits(params, hparams, batch[0]), batch[1]), batch)

    def neg_mse(params, hparams, batch):
        squares = jnp.square(batch[1].T - logits(params, hparams, batch[0]))
        return -jnp.mean(squares) if len(batch) < 3 else -real_mean(jnp.mean(squares, axis=0), batch)

    def r2_score(params, hparams, batch):
        if len(batch) < 3:
            return r2(batch[1], logits(params, hparams, batch[0]))
        value = r2(batch[1], logits(params, hparams, batch[0]), batch[2])
        return jnp.where(fewer_than_two_real(batch), jnp.nan, value)

    if task.classifier:
        return {"score": accuracy, "accuracy": accuracy, "log_loss": log_loss}
    return {"score": r2_score, "neg_mean_squared_error": neg_mse, "r2": r2_score}


def held_out_arrays(task: Task, split: tuple, dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The early-stopping split (x, y) or (x, y, sample weights) as its score reads it: (X, targets,
    weights), weights 1 each unless given (`padded`, the padding row dropped)."""
    return tuple(a[:-1] for a in padded(task, *split[:2], dtype, *split[2:]))


def build_objective(config: Mapping[str, Any], task: Task, train: tuple, val: tuple,
                    constants: Mapping[str, Any], seed: int, held_out: tuple | None = None) -> hg.Objective:
    """The fit of one structural configuration (every structural parameter an option or
    `hg.Masked`) as an `hg.Objective`; continuous parameters are read from hparams when given
    there, else from `constants`. `train` is (x, y), or (x, y, sample weights) for a weighted fit.

    With early stopping, `held_out` None splits `train` here (`early_stopping_split`, seeded by
    `seed`) and the objective holds the held-out split as constants; else `train` is the part
    trained on and `held_out` the held-out split as `held_out_arrays` gives it, possibly traced
    (`_MLP._run` builds the objective inside its program, so that the split is an argument)."""
    dtype = _dtype()
    if config["early_stopping"] and held_out is None:
        train, es_val = early_stopping_split(task, config, train, seed)
        held_out = held_out_arrays(task, es_val, dtype)
    rule = rule_of(config, len(train[0]))
    n_in = train[0].shape[1]
    data = problem_data(task, train, val, dtype)

    def numbers(hparams):
        return {name: hparams[name] if name in hparams else jnp.asarray(constants[name], dtype) for name in CONTINUOUS}

    def init(key, hparams):
        net = network(config, hparams, n_in, task.n_outputs, dtype)
        hidden = net.keeps or tuple(jnp.ones(w, dtype) for w in net.widest[1:-1])
        keeps = (jnp.ones(n_in, dtype), *hidden, jnp.ones(task.n_outputs, dtype))
        return FitParams(init_layers(key, net.widest, net.dims, keeps, net.factor, dtype), jnp.zeros((), dtype))

    def logits(params, hparams, inputs):
        net = network(config, hparams, n_in, task.n_outputs, dtype)
        return forward(params.layers, inputs, net.activation, net.output_keeps)

    def train_loss(params, hparams, batch):
        inputs, targets, weights = batch
        per = per_example_loss(task.out, logits(params, hparams, inputs), targets)
        penalty = sum(jnp.sum(jnp.square(kernel)) for kernel, _ in params.layers)
        return (jnp.sum(weights * per) + 0.5 * numbers(hparams)["alpha"] * penalty) / jnp.sum(weights)

    metrics = {**_metrics(task, logits), "stopped": lambda params, hparams, batch: params.stopped}

    def val_loss(params, hparams, batch):  # what a descent differentiates: smooth, unclipped (unlike "log_loss")
        if task.classifier:
            return real_mean(per_example_loss(task.out, logits(params, hparams, batch[0]), batch[1]), batch)
        return -metrics["neg_mean_squared_error"](params, hparams, batch)

    def optimizer(hparams):
        score = None
        if config["early_stopping"]:  # scored on (X, targets, weights)
            score = lambda params: weighted_score(task, logits)(params, hparams, held_out)  # noqa: E731
        return reporting_stop(sklearn_solver(rule, numbers(hparams), _kinds(config, hparams), score))

    problem = EpochBatches(init=init, train_loss=train_loss, val_loss=val_loss, train_data=data["train"],
                           val_data=data["val"], batch_size=None if rule.batches == 1 else rule.batch_size,
                           metrics=metrics, name="sklearn-mlp", model_reads_hparams=True, num_real=rule.num_real,
                           shuffle=bool(config["shuffle"]))
    return hg.Objective(problem, optimizer, num_steps=rule.max_iter * rule.batches)


def _maskable(varying: Mapping[str, Sequence[Any]]) -> tuple[str, ...]:
    """The structural choices the family masks when the planner says so: widths only when every
    option has the same number of layers (masking then keeps the widest of each layer)."""
    names = [name for name in MASKABLE if name in varying]
    if "hidden_layer_sizes" in names and len({len(as_sizes(o)) for o in varying["hidden_layer_sizes"]}) > 1:
        names.remove("hidden_layer_sizes")
    return tuple(names)


def _seed(random_state: Any) -> int:
    """An int seed for numpy-side draws (the early-stopping split) from `random_state`."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


# -- the estimators ----------------------------------------------------------------------------------
def check_refused(estimator: Any) -> None:
    """scikit-learn's own check of hidden_layer_sizes, and the options refused here."""
    sizes = estimator.hidden_layer_sizes
    sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
    if np.any(np.array(sizes) <= 0):
        raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
    if estimator.solver == "lbfgs":
        raise ValueError(f"{type(estimator).__name__}(solver='lbfgs') is not available in hypergrad.sklearn; "
                         "use solver='sgd' or solver='adam' (the default), or scikit-learn's own estimator for lbfgs")
    if estimator.warm_start:
        raise ValueError(f"{type(estimator).__name__}(warm_start=True) is not supported: every fit starts from a "
                         "fresh initialisation; use warm_start=False")


class _MLP(HypergradEstimator):
    """Shared fit and forward pass of `MLPClassifier` and `MLPRegressor` (module docstring)."""

    _structural_params = STRUCTURAL
    _continuous_params = CONTINUOUS
    _data_baking_params = frozenset({"early_stopping"})  # its held-out split lives in the program
    # the seed is the training key (an argument) and, with early stopping only, the split's; the rest unread
    _argument_params = frozenset({"random_state", "verbose", "max_fun", "warm_start"})
    _classifier = False

    def _check_supported(self) -> None:
        """`check_refused` (see `HypergradEstimator._check_supported`)."""
        check_refused(self)

    def unused_why(self, params: Mapping[str, Any]) -> dict[str, str]:
        """scikit-learn's "only used when" rules (its MLP's documentation), which this fit keeps
        (`_solver_update`, `_end_epoch`): adam reads neither learning_rate, momentum,
        nesterovs_momentum nor power_t; sgd reads neither beta_1, beta_2 nor epsilon, and power_t only
        with learning_rate="invscaling"; validation_fraction is read only with early_stopping."""
        why = {}
        if params["solver"] == "adam":
            for name in ("learning_rate", "momentum", "nesterovs_momentum", "power_t"):
                why[name] = f"{name} is only used when solver='sgd', and solver='adam' here"
        elif params["solver"] == "sgd":
            for name in ("beta_1", "beta_2", "epsilon"):
                why[name] = f"{name} is only used when solver='adam', and solver='sgd' here"
            if params["learning_rate"] != "invscaling":
                why["power_t"] = (f"power_t is only used when learning_rate='invscaling', and "
                                  f"learning_rate={params['learning_rate']!r} here")
        if not params["early_stopping"]:
            why["validation_fraction"] = ("validation_fraction is only used if early_stopping is True, and it is "
                                          "False here")
        return why

    def _family(self, train, val, *, varying, n_classes=None, classes=None, rows=None):
        """See `hypergrad.sklearn._base`: one `hg.Objective` per structural configuration, the
        choices in `MASKABLE` maskable (widths when every option has the same depth); `classes`
        unused (no setting is keyed by label). `rows` pads train and val with weight-0 rows
        (`padded_part`), exact where `_paddable` says so."""
        del classes
        space = self._space(varying)
        params = self.get_params(deep=False)
        y_all = np.concatenate([np.asarray(train[1]), np.asarray(val[1])])
        task = task_of(self._classifier, y_all, n_classes)
        constants = {name: params[name] for name in CONTINUOUS}
        seed = _seed(params["random_state"])
        warn_if_clipped(params, trained_examples(params, len(train[0])))  # one fit per family (a fold)
        if rows is not None:
            train, val = padded_part(train, rows[0]), padded_part(val, rows[1])

        def build(config):
            merged = {name: params[name] for name in STRUCTURAL} | dict(config)
            return build_objective(merged, task, train, val, constants, seed)

        return hg.Structured(build, maskable=_maskable(varying)), space

    def _paddable(self, fits: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> bool:
        """Whether padded folds are exact for every fit (see `HypergradEstimator._paddable`): each
        is `_bucketable` at each size, one full batch an epoch with no early stopping and no
        invscaling rate, so its program reads its number of examples nowhere but through the
        weights. A minibatch fit is not: the epoch sampler draws from the n examples (n is static
        in it), and padding would change which examples share a minibatch, so folds of other sizes
        keep a program each."""
        return all(_bucketable(fit, n) for fit in fits for n in sizes)

    def _run(self, x: np.ndarray, y: np.ndarray, task: Task, n_classes: int | None,
             weights: np.ndarray | None = None) -> Any:
        """The fitted `LoopState` (parameters and `SolverState`) of this estimator on (x, y), each
        example's loss times its weight when `weights` are given."""
        train = (x, y) if weights is None else (x, y, weights)
        params = self.get_params(deep=False)
        dtype = _dtype()
        hparams = {name: jnp.asarray(params[name], dtype) for name in CONTINUOUS}
        key = self._fit_key()
        options = fit_compiler_options(fit_flops(params, x.shape, task.n_outputs))
        structure = tuple((name, _hashable_param(params[name])) for name in sorted(STRUCTURAL))
        warn_if_clipped(params, trained_examples(params, len(x)))  # once per fit, traced anew or not
        if params["early_stopping"]:
            return self._run_early_stopping(train, x, y, task, hparams, key, options, structure)

        def make():  # the objective `_family` builds for this configuration, without its warning
            config = {name: params[name] for name in STRUCTURAL}
            # seed 0: read only by an early-stopping split, not made here; drawing one from random_state would
            # advance a RandomState (numpy's global one for None) on the fits that compile only
            objective = build_objective(config, task, (x, y), (x, y), {name: params[name] for name in CONTINUOUS}, 0)
            return jax.jit(lambda h, k, d: objective.loop(d).train(h, k), compiler_options=options)

        data = problem_data(task, train, (x, y), dtype)
        if _bucketable(params, len(x)):
            data = bucketed(data)
        shape = (len(data["train"][0]), x.shape[1])
        run = cached_program((type(self).__name__, structure, task, shape, str(dtype), options is None), make)
        return run(hparams, key, on_device(data))

    def _run_early_stopping(self, train: tuple, x: np.ndarray, y: np.ndarray, task: Task, hparams: dict,
                            key: jax.Array, options: dict | None, structure: tuple) -> Any:
        """`_run` with early stopping: the held-out split (scikit-learn's, drawn on the host from
        `random_state`) and the part trained on are both arguments of one program per structure
        and shapes (`cached_program`; the objective is built inside it around the traced split),
        so a refit of the same settings on data of the same shapes compiles nothing."""
        params = self.get_params(deep=False)
        dtype = _dtype()
        part, split = early_stopping_split(task, params, train, _seed(params["random_state"]))
        held_out = held_out_arrays(task, split, dtype)
        data = problem_data(task, part, (x, y), dtype)  # "val" is not read by the fit
        config = {name: params[name] for name in STRUCTURAL}
        constants = {name: params[name] for name in CONTINUOUS}  # unread: every one is in hparams

        def make():
            # the closure's data give the objective its shapes only: the program reads d and held
            def program(h, k, d, held):
                objective = build_objective(config, task, part, (x, y), constants, 0, held_out=held)
                return objective.loop(d).train(h, k)

            return jax.jit(program, compiler_options=options)

        shape = (len(data["train"][0]), x.shape[1], len(held_out[0]))
        run = cached_program((type(self).__name__, "early-stopping", structure, task, shape, str(dtype),
                              options is None), make)
        return run(hparams, key, on_device(data), on_device(held_out))

    def _fit_arrays(self, x: np.ndarray, y: np.ndarray, n_classes: int | None,
                    weights: np.ndarray | None = None) -> _MLP:
        task = task_of(self._classifier, y, n_classes)
        return self._adopt(self._run(x, y, task, n_classes, weights), task, x)

    def _adopt(self, state: Any, task: Task, x: np.ndarray) -> _MLP:
        """Sets the fitted attributes from a fit's final `LoopState`. Its layers may be wider than
        this estimator's (a masked program's, `MaskedRefit`): each is cut to the true sizes, the
        units beyond which are zero in a masked fit. A weight that is not finite (the fit
        diverged) is scikit-learn's `ValueError` ("Solver produced non-finite parameter weights"),
        raised, as scikit-learn's `_fit` raises it, once the attributes are set. (A search's fits
        never come here: it reads their validation loss, and counts a non-finite one as a failed
        fit; its refit does, and raises as scikit-learn's refit does.) A fit that ran out of
        iterations is scikit-learn's `ConvergenceWarning`, pointed at the user's line (the first
        frame outside hypergrad: their `fit`, or their search's `fit` for its refit), where
        scikit-learn's points inside its own module."""
        solver: SolverState = state.opt_state
        layers = (solver.best_params if self.early_stopping else state.params).layers
        dims = (x.shape[1], *as_sizes(self.hidden_layer_sizes), task.n_outputs)
        layers = [(kernel[:dims[l + 1], :dims[l]], bias[:dims[l + 1]]) for l, (kernel, bias) in enumerate(layers)]
        self.coefs_ = [np.asarray(kernel).T.copy() for kernel, _ in layers]
        self.intercepts_ = [np.asarray(bias).copy() for _, bias in layers]
        self.n_iter_ = int(solver.n_iter)
        self.loss_curve_ = [float(v) for v in np.asarray(solver.loss_curve)[:self.n_iter_]]
        self.loss_ = self.loss_curve_[-1]
        self.t_ = self.n_iter_ * _trained_examples(self, x)
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = task.n_outputs
        self.out_activation_ = task.out
        if self.early_stopping:
            self.validation_scores_ = [float(v) for v in np.asarray(solver.val_scores)[:self.n_iter_]]
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_)
        if self.verbose:
            for i, loss in enumerate(self.loss_curve_):
                print("Iteration %d, loss = %.8f" % (i + 1, loss))
        if not bool(solver.stopped):
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't "
                          "converged yet." % self.max_iter, ConvergenceWarning, stacklevel=users_stacklevel())
        if not all(np.isfinite(a).all() for a in self.coefs_ + self.intercepts_):  # as scikit-learn's `_fit`
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large values "
                             "and need to be preprocessed.")
        return self

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _MLP:
        """Fits the network to (X, y) (module docstring); returns self.

        `sample_weight` ((n,), a number for all, or None for 1 each) weighs the examples as
        scikit-learn's fit does: a minibatch's loss is sum(w * loss) / sum(w), its penalty
        alpha / (2 sum(w)) * sum of squared weights; the early-stopping split takes the weights with
        its examples and its score is weighted; the epoch loss (`loss_curve_`) still weighs each
        minibatch by its number of examples. A minibatch whose weights sum to 0 makes the fit NaN
        (scikit-learn raises ZeroDivisionError there)."""
        self._validate_params()
        self._check_supported()
        x, y, n_classes = self._validated(X, y)
        weights = None if sample_weight is None else _check_sample_weight(sample_weight, x, dtype=_dtype())
        return self._fit_arrays(x, y, n_classes, weights)

    def _validated(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int | None]:
        """`fit`'s validation: (X, encoded y, number of classes or None); sets `classes_` (and
        `n_features_in_`, `feature_names_in_`) as scikit-learn's fit does."""
        # multi_output for both, as scikit-learn's MLPs validate: a classifier's 2-D y is a multilabel indicator
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), y_numeric=not self._classifier,
                             multi_output=True, accept_sparse=SPARSE_FORMATS)
        X = dense(X)  # every program fits dense arrays: n x d x itemsize bytes
        y, attributes = self._encode_y(y)
        for name, value in attributes.items():
            setattr(self, name, value)
        return X, y, len(attributes["classes_"]) if self._classifier else None

    def _masked_refit(self, X: Any, y: Any, varying: Mapping[str, Sequence[Any]]) -> MaskedRefit | None:
        """A `MaskedRefit` on (X, y) for whichever candidate wins, `varying` holding each traced
        parameter's values over the candidates (as `_family` takes it), not yet compiled; None
        when one masked program cannot fit them all (a varying structural parameter that is not
        maskable, early stopping)."""
        if self.early_stopping or any(name in STRUCTURAL and name not in _maskable(varying) for name in varying):
            return None
        return MaskedRefit(self, X, y, varying)

    def _output(self, X: Any) -> np.ndarray:
        """Output pre-activations (n, outputs) of the fitted network on X, from coefs_/intercepts_
        (`network_outputs`: no compilation for a new number of rows within a compiled bucket)."""
        check_is_fitted(self)
        X = dense(validate_data(self, X, dtype=(np.float64, np.float32), reset=False, accept_sparse=SPARSE_FORMATS))
        dtype = _dtype()
        layers = [(np.asarray(c.T, dtype), np.asarray(b, dtype)) for c, b in zip(self.coefs_, self.intercepts_)]
        return network_outputs(layers, np.asarray(X, dtype), self.activation)


PREDICT_ROWS = (16, 1024)
"""Row buckets of `network_outputs`: inputs are padded to a power of two between these, and larger
ones are run in slices of the largest."""


def _outputs(layers: Sequence[tuple[jax.Array, jax.Array]], x: jax.Array, activation: str) -> jax.Array:
    return forward(layers, x, ACTIVATIONS[activation]).T


def _new_outputs_program() -> Any:
    # jits a fresh callable, not `_outputs` itself: JAX keys its traces on the function, so a new jit of
    # `_outputs` would find the old one's traces; a partial equals only itself
    return jax.jit(functools.partial(_outputs), static_argnames="activation")


_outputs_program = [_new_outputs_program()]


@_caches.register
def _clear_outputs_program() -> None:
    """Drops `network_outputs`' jit and makes a new one: its programs are freed with it (once no call
    still runs it) and the next prediction traces and compiles anew. Nothing is evicted from JAX's
    own caches, which every `jax.jit` in the process shares (the jit's `clear_cache` would empty
    them)."""
    _outputs_program[0] = _new_outputs_program()


def network_outputs(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray, activation: str) -> np.ndarray:
    """Output pre-activations (n, outputs) of the network `layers` ((kernel (out, in), bias) pairs)
    on x (n, features): `forward` as one jitted program, the rows padded with zeros to a power of two
    in `PREDICT_ROWS` (inputs past the largest bucket in slices of it), so predictions at any number
    of rows compile at most 7 programs per network shape and activation (held by its `jax.jit`, which
    `hg.clear_caches()` drops and re-makes), instead of each of forward's operations once per new
    number of rows (eagerly). Each row's outputs are computed from that row alone (the padding rows are
    discarded); the products may sum in another order than an unpadded or unfused product (XLA
    tiles by shape), so outputs agree with those to rounding. Cost: the forward pass on the padded
    rows (at most 2n + 16); memory: one bucket's activations."""
    n = len(x)
    low, high = PREDICT_ROWS
    rows = min(high, max(low, 1 << max(n - 1, 0).bit_length()))
    program = _outputs_program[0]
    out = []
    for start in range(0, n, rows):
        part = x[start:start + rows]
        padded_rows = np.concatenate([part, np.zeros((rows - len(part), x.shape[1]), x.dtype)])
        # numpy arguments: jnp.asarray of a numpy array of a new shape would compile a staging program
        out.append(np.asarray(program(layers, padded_rows, activation))[:len(part)])
    return np.concatenate(out)


def fit_flops(params: Mapping[str, Any], shape: tuple[int, int], n_outputs: int) -> float:
    """FLOPs of one fit, about: `max_iter` epochs over the n examples, each example's forward and
    backward pass 6 FLOPs per weight (the matrix products; elementwise work and the solver are
    smaller). For choosing how hard to compile (`fit_compiler_options`), not for accounting."""
    n, n_in = shape
    sizes = (n_in, *as_sizes(params["hidden_layer_sizes"]), n_outputs)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 6.0 * float(params["max_iter"]) * n * weights


def _bucketable(params: Mapping[str, Any], n: int) -> bool:
    """Whether a fit's program is independent of its number of examples n: one full batch per
    epoch, no early-stopping split, no invscaling rate (which counts the examples seen)."""
    full = rule_of(params, n).batches == 1
    return full and not params["early_stopping"] and not (params["solver"] == "sgd" and
                                                          params["learning_rate"] == "invscaling")


def bucketed(data: Mapping[str, tuple]) -> dict[str, tuple]:
    """Full-batch training data padded with weight-0 rows to a power of two (at least 16), so fits
    on nearby numbers of examples share one compiled program. Exact: the loss is the weighted mean,
    which weight-0 rows leave unchanged (the validation split, unused by `fit`, becomes the padded
    rows too, for the same shapes)."""
    x, targets, weights = data["train"]
    rows = max(16, 1 << (len(x) - 1).bit_length()) - len(x)
    train = tuple(np.pad(a, ((0, rows),) + ((0, 0),) * (a.ndim - 1)) for a in (x, targets, weights))
    return {"train": train, "val": train[:2]}


def _trained_examples(estimator: Any, x: np.ndarray) -> int:
    """Examples an epoch trains on: all of x, less the early-stopping split."""
    return trained_examples(estimator.get_params(deep=False), len(x))


def _hashable_param(value: Any) -> Any:
    return as_sizes(value) if isinstance(value, (list, tuple, np.ndarray)) else value


class MaskedRefit:
    """One fit program on (X, y) that refits whichever candidate of a search wins.

    The structural parameters the candidates vary are masked (`hg.Masked`, as the search masks
    them: the widest layers, every activation and solver computed and one selected) and every
    continuous parameter is an argument, so the program is known before the best candidate is.
    A search starts its compilation on a thread (`start`) while its own program compiles
    (`evaluate_settings(overlap=...)`: XLA releases the GIL), and the refit then costs one run
    (`fit`). On few cores the overlap is partly paid back: XLA's own compilation uses the cores too
    (`benchmarks/iris_study.md`). The fit is `estimator.fit(X, y)`'s: the same key
    draws the same first units at any width (`_unit_grid`) and a masked unit's weights stay exactly
    zero (`network`), so the two agree to rounding (a sum over zero units may be ordered otherwise).

    Cost: one trace and compilation of a fit at the widest options, with `fit_compiler_options`
    (quick XLA options for a small fit), kept by `cached_program` per structure (the masked
    options) and data shapes, so the refit of a second search of the same kind (the next outer
    fold of nested cross-validation) compiles nothing; a run that computes every masked option for
    the one fit. Memory: the program and one copy of (X, y) on the device.
    """

    def __init__(self, estimator: _MLP, X: Any, y: Any, varying: Mapping[str, Sequence[Any]]):
        self.estimator, self.X, self.y, self.varying = estimator, X, y, varying
        self._program: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts `prepare` on a thread of its own (once), under the caller's float width: JAX's
        `enable_x64` context is per thread, and a program compiled at the global width would be
        called with the caller's arrays (`with jax.enable_x64(False)` around a search). Not a
        daemon: Python waits for it at exit, before JAX's exit handlers. A daemon thread still
        compiling in XLA when the interpreter finalised (a search stopped by Ctrl-C or an exception
        before its refit) was torn down inside XLA's C++ frames and aborted the process ("FATAL:
        exception not rethrown", exit status 134). Cost: an exit during a search's fit waits for
        the refit's compilation to end (seconds)."""
        if self._thread is None:
            x64 = bool(jax.config.jax_enable_x64)

            def prepare():
                _refit_thread.set(True)  # this thread's context only
                with jax.enable_x64(x64):
                    self.prepare()

            self._thread = threading.Thread(target=prepare, name="hypergrad-refit", daemon=False)
            self._thread.start()

    def prepare(self) -> None:
        """Validates the data as `fit` does and compiles the program. Never raises: a program
        that cannot be made leaves the refit to `estimator.fit`, which names the error."""
        try:
            self._program = self._compile()
        except Exception:  # noqa: BLE001 - the plain refit reports it
            self._program = None

    def _compile(self) -> tuple:
        probe = sklearn.base.clone(self.estimator)
        x, y, n_classes = probe._validated(self.X, self.y)
        family, space = probe._family((x, y), (x, y), varying=self.varying, n_classes=n_classes)
        task = task_of(probe._classifier, y, n_classes)
        structural = space.structural if space is not None else ()
        objective = family.objective({name: hg.Masked(name, space[name].options) for name in structural})
        data = on_device(objective.problem.data)
        widest = dict(probe.get_params(deep=False))
        if "hidden_layer_sizes" in self.varying:
            widest["hidden_layer_sizes"] = max(self.varying["hidden_layer_sizes"], key=lambda v: sum(as_sizes(v)))
        options = fit_compiler_options(fit_flops(widest, x.shape, task.n_outputs))
        # values unused, shapes only (a key of the estimator's own would draw from numpy's global state)
        example = sklearn.base.clone(probe).set_params(**{name: space[name].option(0) for name in structural})
        args = (_masked_hparams(example, space), jax.random.key(0), data)

        def make():
            program = jax.jit(lambda h, k, d: objective.loop(d).train(h, k), compiler_options=options)
            return _compile.compile_jitted(program, args, ("sklearn-masked-refit", str(options)))

        # the program reads the data and every continuous parameter as arguments: one per structure and shapes
        params = probe.get_params(deep=False)
        structure = tuple((name, ("masked", tuple(space[name].options)) if name in structural
                           else _hashable_param(params[name])) for name in sorted(STRUCTURAL))
        executable = cached_program(("masked-refit", type(probe).__name__, structure, task, _compile.signature(args),
                                     str(options)), make)
        return executable, x, y, n_classes, task, space, data

    def fit(self, estimator: _MLP, X: Any, y: Any) -> bool:
        """Fits `estimator` (a candidate set on a clone of the estimator this refit was made
        from) to (X, y) with the program, as `estimator.fit(X, y)` would; False, with nothing
        fitted, when there is no program, (X, y) are not its data, or the parameters are not the
        candidates'."""
        self.start()
        self._thread.join()
        if self._program is None:
            return False
        executable, x_seen, y_seen, n_classes_seen, task, space, data = self._program
        estimator._validate_params()
        check_refused(estimator)
        x, y_encoded, n_classes = estimator._validated(X, y)
        if n_classes != n_classes_seen or not (np.array_equal(x, x_seen) and np.array_equal(y_encoded, y_seen)):
            return False
        try:
            hparams = _masked_hparams(estimator, space)
        except ValueError:  # an option no candidate had
            return False
        params = estimator.get_params(deep=False)
        warn_if_clipped(params, trained_examples(params, len(x)))  # the refit's, which its thread did not give
        estimator._adopt(executable(hparams, estimator._fit_key(), data), task, x)
        return True


def _masked_hparams(estimator: _MLP, space: hg.Space | None) -> dict[str, jax.Array]:
    """A masked program's arguments for `estimator`'s parameters: every continuous one, and the
    option index of each structural choice of `space`; `ValueError` for an option not in it."""
    params = estimator.get_params(deep=False)
    out = {name: jnp.asarray(params[name], _dtype()) for name in CONTINUOUS}
    for name in (space.structural if space is not None else ()):
        out[name] = jnp.asarray(space[name].index(as_option(params[name])), jnp.int32)
    return out


class MLPClassifier(sklearn.base.ClassifierMixin, _MLP):
    """scikit-learn's `MLPClassifier` (same parameters, defaults and meanings), fitted as one
    compiled hypergrad program; see `hypergrad.sklearn._mlp` for the fit and the few differences.
    Sparse X (CSR/CSC) is taken, as scikit-learn's, and densified on the host before the fit and
    predictions (`dense`: memory n x d x the float's itemsize)."""

    _parameter_constraints: dict = dict(sklearn.neural_network.MLPClassifier._parameter_constraints)
    _classifier = True

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    def _encode_y(self, y):
        """Class indices 0..k-1 of `classes_` (sorted), or for a multilabel indicator y (n, labels)
        that indicator (0/1 int32, dense: nonzero is 1) with `classes_` = np.arange(labels), as
        scikit-learn's MLPClassifier encodes y (its `LabelBinarizer`; a single column is made 1-D
        with its warning).
        A single class is fitted, as scikit-learn's MLPClassifier fits it (its LogisticRegression
        refuses it). `classes_` is its `LabelBinarizer`'s (`unique_labels`), which differs from
        `np.unique`'s for string labels held as objects (a pandas column's): a numpy string array
        ('<U5'), not an object one, so `predict` gives that dtype too; labels it refuses (a 2-D y
        that is not an indicator: "Multioutput target data is not supported") are refused with its
        error."""
        if not scipy.sparse.issparse(y) and np.ndim(y) == 2 and np.shape(y)[1] == 1:
            y = column_or_1d(y, warn=True)
        binarizer = LabelBinarizer().fit(y)
        if binarizer.y_type_ == "multilabel-indicator":
            indicator = binarizer.transform(y)
            indicator = indicator.toarray() if scipy.sparse.issparse(indicator) else indicator
            # nonzero is 1, as scikit-learn's `.astype(bool)` makes an indicator of other values (0/2, 0/-1)
            return np.asarray(indicator).astype(bool).astype(np.int32), {"classes_": binarizer.classes_}
        y = column_or_1d(y, warn=True)
        codes, _ = encode_classes(y, type(self).__name__, least=1)
        return codes, {"classes_": binarizer.classes_}

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags, saying multilabel y is taken, as scikit-learn's MLPClassifier says."""
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _multilabel(self) -> bool:
        return self.out_activation_ == "logistic" and self.n_outputs_ > 1

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, k), columns in the order of `classes_`; for a multilabel fit each
        label's own probability (n, labels), its logistic unit's, as scikit-learn's."""
        z = self._output(X)  # checks that the estimator is fitted first
        return scipy.special.expit(np.asarray(z, PROBABILITY_DTYPE)) if self._multilabel() else class_probabilities(z)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each example; a fit on a single class predicts it always (as
        scikit-learn's, whatever its logistic unit gives). A multilabel fit predicts the indicator
        (n, labels) of the labels whose probability is above 0.5 (int, as scikit-learn's)."""
        z = self._output(X)  # checks that the estimator is fitted first
        if self._multilabel():
            return (z > 0).astype(int)
        codes = class_codes(z)
        return self.classes_[codes if len(self.classes_) > 1 else np.zeros_like(codes)]


class MLPRegressor(sklearn.base.RegressorMixin, _MLP):
    """scikit-learn's `MLPRegressor` (same parameters, defaults and meanings; `loss="squared_error"`
    only), fitted as one compiled hypergrad program; see `hypergrad.sklearn._mlp`. Sparse X
    (CSR/CSC) is taken, as scikit-learn's, and densified on the host before the fit and predictions
    (`dense`: memory n x d x the float's itemsize)."""

    _parameter_constraints: dict = {**sklearn.neural_network.MLPRegressor._parameter_constraints,
                                    "loss": [StrOptions({"squared_error"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    def _encode_y(self, y):
        """Targets as floats, (n,) or (n, outputs) (a single column made 1-D with a warning)."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return y.astype(_dtype()), {}

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n,), or (n, outputs) for multi-output targets."""
        z = self._output(X)
        return z[:, 0] if self.n_outputs_ == 1 else z
