"""scikit-learn's `LogisticRegression` and `Ridge`, solved inside one compiled hypergrad program.

Both fit by an inner solver that is a pure, differentiable function of the data and of the
penalty (`C`, `alpha`), and both are `hg.Objective`s of ONE training step: the step's loss is the
quadratic 0.5 ||p||^2 - <p, p*(batch, hparams)> (p* the solver's answer on the full training
batch, never differentiated with respect to p), whose gradient at p = 0 is -p*, so one plain
gradient step of rate 1 from zero lands exactly on p*. Hypergradients then flow through the
solver: exact for Ridge's closed form, through the unrolled Newton iterations for
LogisticRegression (hg.Reverse), or by the implicit function theorem (the step's stationarity
p = p*; hg.Implicit).

- `Ridge`: min ||y - X w - b||^2 + alpha ||w||^2 in closed form, (Xc'Xc + alpha I) w = Xc'yc on
  centred data (`fit_intercept`), through `jnp.linalg.solve` (differentiable in alpha). Every
  `solver` value is accepted and means this solve (the closest equivalent of all of them: they
  compute the same minimiser); `positive=True` is refused. Per-target alphas (an array) are solved
  target by target. `n_iter_` is None, as scikit-learn's Ridge sets it for its closed-form
  solvers, so scikit-learn's `check_non_transformer_estimators_n_iter` (which wants n_iter_ >= 1
  from every estimator with a `max_iter`) is the one estimator check expected to fail with
  `jax_enable_x64` on (and, as for every estimator here, scikit-learn skips `check_array_api_input`
  unless SCIPY_ARRAY_API=1). Cost:
  O(n d^2 + d^3) per fit; memory O(nd + d^2) (with an intercept, or `sample_weight`, the fit holds a
  centred or weighted copy of X).
- `LogisticRegression`: multinomial log-loss (k > 2 classes; one logistic unit for 2 classes, as
  scikit-learn) + ||W||^2 / (2 C n) (intercepts not penalised) minimised by Newton's method: up to
  `max_iter` iterations, each a Hessian solve and a backtracking line search over step sizes
  1, 1/2, ..., 2^-9 (Armijo, the ten losses computed at once). With k > 2 classes the steps stay off
  the softmax's flat directions (every class's coefficients of a feature, or every intercept,
  shifted together), so the intercepts sum to 0 as scikit-learn's; where no step size decreases
  the loss enough (badly scaled data in float32) the iterate stays and the next solve is damped
  10x more (Levenberg-Marquardt), 10x less again after each success. Stopping: once the largest absolute
  gradient entry is at most `tol` (scikit-learn's lbfgs criterion on the same scaled loss) the
  iterate is frozen (a `jnp.where`), so a vmapped fit equals the fit alone and `n_iter_` counts the
  Newton steps taken. Every `solver` value is accepted and means this Newton solve (closest
  equivalent: each of scikit-learn's solvers converges to the same minimiser), and refuses what
  scikit-learn's refuses (liblinear without a penalty, or on other than two classes); a penalty
  other than l2 (the one scikit-learn's fit derives from `penalty`, `l1_ratio` and `C`, which
  ignores `l1_ratio` beside an explicit `penalty`: `sklearn_penalty`), `dual=True` and
  `warm_start=True` are refused. `class_weight` (a dict
  or "balanced") weighs each example's loss as scikit-learn does (the family a search uses maps a dict
  through the full data's classes, which the searches give it), and `fit`'s
  `sample_weight` multiplies it, as scikit-learn's. Cost
  per iteration: the Hessian O(n (dk)^2) (one column at a time, `logistic_hessian`) and its solve
  O((dk)^3) (d features + intercept, k classes or 1), so it suits up to a few hundred coefficients;
  all `max_iter` iterations are computed (frozen after convergence). Memory O(n (d + k) + (dk)^2):
  one Hessian column's intermediates, the logits of the line search's ten step sizes and a few
  (dk) x (dk) matrices. A differentiated fit (hg.Reverse through the Newton iterations, as
  HypergradSearchCV's) keeps every column's intermediates, O(n k (dk) + (dk)^2) per iteration.
  `intercept_scaling` (liblinear's), `verbose`, `n_jobs` and `random_state` are accepted and have
  no effect; `n_iter_` (shape (1,)) counts Newton steps, which are far fewer than lbfgs iterations
  for the same tolerance.

Ridge's `copy_X`, `max_iter`, `tol` and `random_state` are accepted and unused (the solve is
direct); its `fit` takes `sample_weight` (weighted least squares, centred on the weighted means).
The families a search vmaps weigh no examples: a search given `sample_weight` hands it to
scikit-learn's search over these fits (`hypergrad.sklearn._search`). Both compute in JAX's default
float dtype (float32 unless `jax_enable_x64` is on; `predict_proba` is float64 either way,
`_base.PROBABILITY_DTYPE`); in float32 scikit-learn's
`check_sample_weight_equivalence_on_dense_data` fails for both, a weighted fit and one on the
examples repeated agreeing to float32 rounding (about 1e-6 relative), not to the check's 1e-7.
Fits on data of nearby shapes share a compiled program (`bucketed`, LogisticRegression; exact).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import sklearn.base
import sklearn.linear_model
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

import hypergrad as hg
from hypergrad._checks import users_stacklevel
from hypergrad.sklearn._base import (SPARSE_FORMATS, HypergradEstimator, cached_program, class_codes,
                                    class_probabilities, clipped_log_loss, dense, encode_classes, fewer_than_two_real,
                                    on_device, padded_part, real_mean)

__all__ = ["LogisticRegression", "Ridge", "ridge_solution", "newton_logistic"]

STEP_SIZES = 2.0 ** -np.arange(10)
"""The line search's candidate Newton step sizes."""
MIN_DAMPING = 1e-12
"""Newton's ridge, relative to the Hessian's largest diagonal entry, while steps succeed."""


def _dtype() -> Any:
    return jnp.zeros(()).dtype


# -- the solvers --------------------------------------------------------------------------------------
def ridge_solution(x: jax.Array, targets: jax.Array, alpha: jax.Array, fit_intercept: bool,
                   weights: jax.Array | None = None) -> dict[str, jax.Array]:
    """{"coef": (d, m), "intercept": (m,)} minimising sum_i w_i ||y_i - x_i W - b||^2 + alpha ||W||^2
    (w_i = 1 without `weights` (n,)); `alpha` a scalar or one value per target (m,). With an
    intercept the data are centred on their (weighted) means, as scikit-learn's Ridge does.
    Differentiable in alpha, the data and the weights."""
    def mean(a):
        return jnp.mean(a, axis=0) if weights is None else weights @ a / jnp.sum(weights)

    if fit_intercept:
        x_mean, y_mean = mean(x), mean(targets)
        x, targets = x - x_mean[None, :], targets - y_mean[None, :]
    weighted = x if weights is None else x * weights[:, None]
    gram, moment = weighted.T @ x, weighted.T @ targets
    eye = jnp.eye(x.shape[1], dtype=x.dtype)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, x.dtype), (targets.shape[1],))
    coef = jax.vmap(lambda a, b: jnp.linalg.solve(gram + a * eye, b), out_axes=1)(alpha, moment.T)
    intercept = (y_mean - x_mean @ coef) if fit_intercept else jnp.zeros(targets.shape[1], x.dtype)
    return {"coef": coef, "intercept": intercept}


def logistic_loss(theta: jax.Array, x: jax.Array, targets: jax.Array, weights: jax.Array, c: jax.Array,
                  fit_intercept: bool) -> jax.Array:
    """(sum_i w_i loss_i + ||W||^2 / (2 C)) / sum_i w_i at the flat coefficients
    theta = [W (d, m) ravelled, b (m,)] (scikit-learn's scaling of the penalised log-loss)."""
    d, m = x.shape[1], targets.shape[1]
    coef = theta[:d * m].reshape(d, m)
    z = x @ coef + (theta[None, d * m:] if fit_intercept else 0.0)
    if m == 1:
        per = -(targets[:, 0] * jax.nn.log_sigmoid(z[:, 0]) + (1 - targets[:, 0]) * jax.nn.log_sigmoid(-z[:, 0]))
    else:
        per = -jnp.sum(targets * jax.nn.log_softmax(z, axis=1), axis=1)
    return (jnp.sum(weights * per) + jnp.sum(jnp.square(coef)) / (2 * c)) / jnp.sum(weights)


def logistic_hessian(theta: jax.Array, x: jax.Array, targets: jax.Array, weights: jax.Array, c: jax.Array,
                     fit_intercept: bool) -> jax.Array:
    """The Hessian of `logistic_loss` at theta, one column at a time: the (d+1) k Hessian-vector
    products with the basis vectors (forward over reverse, as `jax.hessian`, whose values these are)
    under `lax.map`. `jax.hessian` vmaps the same products over every column at once, holding
    per-example intermediates of all of them, O(n k (dk)) memory; one at a time holds O(n (d + k))
    plus the (dk) x (dk) result. Cost O(n (dk)^2), as the full Hessian; differentiable (a reverse
    pass through it keeps each column's O(nk) intermediates, O(n k (dk)) in all)."""
    def loss(point):
        return logistic_loss(point, x, targets, weights, c, fit_intercept)

    def column(basis):
        return jax.jvp(jax.grad(loss), (theta,), (basis,))[1]

    return jax.lax.map(column, jnp.eye(theta.shape[0], dtype=theta.dtype)).T  # column j: d grad / d theta_j


def _shift_projector(size: int, m: int) -> np.ndarray:
    """The orthogonal projector onto the directions that shift all m classes' coefficients of one
    feature (or all intercepts) together, in the flat layout [W (d, m) ravelled, b (m,)]: zero for
    one logistic unit (m = 1)."""
    if m == 1:
        return np.zeros((size, size))
    return np.kron(np.eye(size // m), np.full((m, m), 1.0 / m))


def penalty_c(penalty: Any, c: Any) -> Any:
    """The C the solver uses: inf (no penalty) under penalty=None, whatever C says, else C."""
    return np.inf if penalty is None else c


def newton_logistic(x: jax.Array, targets: jax.Array, weights: jax.Array, c: jax.Array, *, fit_intercept: bool,
                    max_iter: int,
                    tol: float) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """({"coef", "intercept"}, Newton steps taken, converged) of the penalised log-loss
    (module docstring), from zero; frozen once the largest gradient entry is <= tol."""
    d, m = x.shape[1], targets.shape[1]
    size = d * m + (m if fit_intercept else 0)
    shift = jnp.asarray(_shift_projector(size, m), x.dtype)

    def loss(theta):
        return logistic_loss(theta, x, targets, weights, c, fit_intercept)

    def step(carry, _):
        theta, taken, done, damping = carry
        value, grad = jax.value_and_grad(loss)(theta)
        # The softmax's logits are unchanged when every class's coefficient of one feature (or every
        # intercept) moves by the same amount. From zero the gradient has no component along these
        # shifts (the penalty's is the class sum of the coefficients, which stays 0), so it is
        # removed exactly as rounding leaves it, and the Hessian, flat or nearly so along them, is
        # lifted there to its own scale: the solve is well conditioned along them in float32, and
        # its step, also kept off the shifts, is the Newton step on the rest.
        grad = grad - shift @ grad
        done = done | (jnp.max(jnp.abs(grad)) <= tol)
        hessian = logistic_hessian(theta, x, targets, weights, c, fit_intercept)  # not jax.hessian: see there
        scale = 1 + jnp.max(jnp.abs(jnp.diag(hessian)))
        lifted = hessian + scale * shift + damping * scale * jnp.eye(size, dtype=x.dtype)
        direction = jnp.linalg.solve(lifted, grad)
        direction = direction - shift @ direction
        sizes = jnp.asarray(STEP_SIZES, x.dtype)
        trials = jax.vmap(lambda t: loss(theta - t * direction))(sizes)
        armijo = trials <= value - 1e-4 * sizes * jnp.dot(grad, direction)  # False where non-finite
        # No step decreases enough (an ill-conditioned Hessian in float32, badly scaled data): stay,
        # and damp the next solve 10x more (Levenberg-Marquardt), towards a short gradient step.
        ok = jnp.any(armijo)
        moved = jnp.where(ok, theta - sizes[jnp.argmax(armijo)] * direction, theta)  # the largest step that does
        damping = jnp.where(done, damping, jnp.where(ok, jnp.maximum(damping / 10, MIN_DAMPING), damping * 10))
        return (jnp.where(done, theta, moved), taken + jnp.where(done, 0, 1), done, damping), None

    start = (jnp.zeros(size, x.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool),
             jnp.asarray(MIN_DAMPING, x.dtype))
    theta, taken, done, _ = jax.lax.scan(step, start, None, length=max_iter)[0]
    converged = done | (jnp.max(jnp.abs(jax.grad(loss)(theta))) <= tol)
    intercept = theta[d * m:] if fit_intercept else jnp.zeros(m, x.dtype)
    return {"coef": theta[:d * m].reshape(d, m), "intercept": intercept}, taken, converged


# -- the family: one step onto the solver's answer -------------------------------------------------------
def jump_objective(solve: Any, scores: Mapping[str, Any], val_loss: Any, train: tuple, val: tuple,
                   shapes: tuple[int, int], name: str, stops: bool = False) -> hg.Objective:
    """An `hg.Objective` of one unit gradient step from zero onto `solve(train batch, hparams)`
    (module docstring); `scores` are metrics `fn(params, hparams, (x, targets))`. With `stops`, the
    answer also holds "stopped" (1.0 when the iterative solve converged within max_iter, 0.0 when
    it ran out, where `fit` warns), which the step copies into the parameters like the rest and
    the metric "stopped" reports (`hypergrad.sklearn._base`): a search reads it from the program it
    runs anyway. It enters no loss, and its derivative is 0."""
    d, m = shapes
    dtype = _dtype()

    def init(key, hparams):
        del key, hparams
        params = {"coef": jnp.zeros((d, m), dtype), "intercept": jnp.zeros(m, dtype)}
        return {**params, "stopped": jnp.zeros((), dtype)} if stops else params

    def train_loss(params, hparams, batch):
        # gradient in params: params - answer (the answer does not depend on params)
        answer = solve(batch, hparams)
        return sum(jnp.sum(0.5 * p * p - p * a) for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(answer)))

    metrics = {**scores, "stopped": lambda params, hparams, batch: params["stopped"]} if stops else dict(scores)
    problem = hg.Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=train, val_data=val,
                         batch_size=None, metrics=metrics, name=name, model_reads_hparams=True)
    return hg.Objective(problem, lambda hparams: optax.sgd(1.0), num_steps=1)


def _r2(targets: jax.Array, z: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """scikit-learn's r2_score (uniform average over outputs) of predictions z (n, m): NaN for fewer
    than two examples (undefined; scikit-learn's search keeps such a fold's NaN, e.g. LeaveOneOut).
    `weights` (n,): a padded part's (`padded_part`), whose weight-0 rows are left out."""
    if targets.shape[0] < 2:
        return jnp.full((), jnp.nan, z.dtype)
    if weights is None:
        residual = jnp.sum(jnp.square(targets - z), axis=0)
        total = jnp.sum(jnp.square(targets - jnp.mean(targets, axis=0, keepdims=True)), axis=0)
    else:
        w = weights[:, None]
        residual = jnp.sum(w * jnp.square(targets - z), axis=0)
        mean = jnp.sum(w * targets, axis=0, keepdims=True) / jnp.sum(weights)
        total = jnp.sum(w * jnp.square(targets - mean), axis=0)
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.mean(jnp.where(total > 0, 1 - residual / safe, jnp.where(residual == 0, 1.0, 0.0)))


def _decision(params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ params["coef"] + params["intercept"][None, :]


def regression_scores() -> dict[str, Any]:
    """The regressors' scores on (X, targets) batches, or on padded parts (X, targets, weights),
    whose padding rows they leave out (`real_mean`)."""
    def neg_mse(params, hparams, batch):
        squares = jnp.square(batch[1] - _decision(params, batch[0]))
        return -jnp.mean(squares) if len(batch) < 3 else -real_mean(jnp.mean(squares, axis=1), batch)

    def r2(params, hparams, batch):
        if len(batch) < 3:
            return _r2(batch[1], _decision(params, batch[0]))
        return jnp.where(fewer_than_two_real(batch), jnp.nan, _r2(batch[1], _decision(params, batch[0]), batch[2]))

    return {"score": r2, "neg_mean_squared_error": neg_mse, "r2": r2}


def classification_scores() -> dict[str, Any]:
    """The classifiers' scores and validation loss on (X, targets) batches, or on padded parts
    (X, targets, weights), whose padding rows they leave out (`real_mean`)."""
    def codes(targets):
        return targets[:, 0].astype(jnp.int32) if targets.shape[1] == 1 else jnp.argmax(targets, axis=1)

    def predicted(z):
        return (z[:, 0] > 0).astype(jnp.int32) if z.shape[1] == 1 else jnp.argmax(z, axis=1)

    def accuracy(params, hparams, batch):
        hits = predicted(_decision(params, batch[0])) == codes(batch[1])
        return real_mean(hits.astype(batch[0].dtype), batch)  # a mean of bools is float32 even under x64

    def per_example(params, batch):
        z, t = _decision(params, batch[0]), batch[1]
        if t.shape[1] == 1:
            return -(t[:, 0] * jax.nn.log_sigmoid(z[:, 0]) + (1 - t[:, 0]) * jax.nn.log_sigmoid(-z[:, 0]))
        return -jnp.sum(t * jax.nn.log_softmax(z, axis=1), axis=1)

    def log_loss(params, hparams, batch):  # the score: clipped as scikit-learn's log_loss
        return real_mean(clipped_log_loss(per_example(params, batch)), batch)

    def val_loss(params, hparams, batch):  # what a descent differentiates: smooth, unclipped
        return real_mean(per_example(params, batch), batch)

    return {"score": accuracy, "accuracy": accuracy, "log_loss": log_loss, "val_loss": val_loss}


def class_targets(codes: np.ndarray, k: int, dtype: Any) -> np.ndarray:
    """A 0/1 column for 2 classes, one-hot columns for more."""
    codes = np.asarray(codes, np.int64)
    return codes.astype(dtype)[:, None] if k == 2 else np.eye(k, dtype=dtype)[codes]


def balanced_weights(class_weight: Any, codes: np.ndarray, n_classes: int, dtype: Any,
                     classes: np.ndarray | None = None) -> np.ndarray:
    """Per-example weights of encoded labels for the family: ones (None), scikit-learn's
    "balanced" n / (k * count of the example's class), or a dict's weights keyed by the labels
    `classes` (the full data's, in code order), through scikit-learn's `compute_class_weight` as
    `fit` maps it (its errors included); a dict without `classes` is a ValueError."""
    if class_weight is None:
        return np.ones(len(codes), dtype)
    if isinstance(class_weight, str):  # "balanced", the one string scikit-learn's validation lets through
        counts = np.bincount(codes, minlength=n_classes)
        return (len(codes) / (n_classes * np.maximum(counts, 1)))[codes].astype(dtype)
    if classes is None:
        raise ValueError(f"class_weight={class_weight!r} is keyed by class labels, which encoded labels do not name; "
                         "give _family the classes (classes=estimator.classes_)")
    classes = np.asarray(classes)
    return compute_class_weight(class_weight, classes=classes, y=classes[codes])[codes].astype(dtype)


def _bucket(size: int, least: int) -> int:
    """The power of two at or above `size` (at least `least`)."""
    return max(least, 1 << max(size - 1, 0).bit_length())


def bucketed(x: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The data padded to powers of two: rows of weight 0 and features of zeros, so fits of nearby
    shapes share one compiled program. Exact: a weight-0 row adds nothing to the loss, its gradient
    or Hessian, and a zero feature's coefficient has zero gradient and a decoupled Hessian entry
    (the penalty's), so its Newton steps are exactly zero and it stays at 0 (dropped after)."""
    n, d = x.shape
    rows, cols = _bucket(n, 16) - n, _bucket(d, 4) - d
    return (np.pad(x, ((0, rows), (0, cols))), np.pad(targets, ((0, rows), (0, 0))), np.pad(weights, (0, rows)))


def padded_splits(splits: list[tuple], rows: tuple[int, int]) -> list[tuple]:
    """The family's (train, val) splits, (x, targets) or (x, targets, weights), padded with
    weight-0 rows to `rows` (`padded_part`): each (x, targets, weights), a training split's own
    weights (class weights, computed on its examples) kept for its examples. Exact: a weight-0
    row adds nothing to the weighted loss, its gradient or Hessian (`bucketed`), nor to Ridge's
    weighted solve or a weighted score."""
    out = []
    for split, count in zip(splits, rows):
        x, targets, weights = padded_part(split[:2], count)
        if len(split) > 2:
            weights = np.concatenate([np.asarray(split[2], weights.dtype), weights[len(split[0]):]])
        out.append((x, targets, weights))
    return out


# -- the estimators ----------------------------------------------------------------------------------
class _Linear(HypergradEstimator):
    """Shared family of `Ridge` and `LogisticRegression`: a one-step `jump_objective`."""

    _classifier = False

    def _targets(self, y: np.ndarray, n_classes: int | None) -> np.ndarray:
        dtype = _dtype()
        if self._classifier:
            k = int(n_classes) if n_classes is not None else int(np.max(y)) + 1
            return class_targets(y, k, dtype)
        return np.asarray(y, dtype).reshape(len(y), -1)

    def _family(self, train, val, *, varying, n_classes=None, classes=None, rows=None):
        """See `hypergrad.sklearn._base`: one `jump_objective` per structural configuration;
        `classes` maps a `class_weight` dict (`balanced_weights`); `rows` pads both parts with
        weight-0 rows (`padded_splits`)."""
        space = self._space(varying)
        params = self.get_params(deep=False)
        if n_classes is None and self._classifier:
            n_classes = int(max(np.max(train[1]), np.max(val[1]))) + 1
        dtype = _dtype()
        splits = [(np.asarray(x, dtype), self._targets(np.asarray(y), n_classes)) for x, y in (train, val)]
        if self._classifier:  # the training split carries each example's weight
            weights = balanced_weights(self.class_weight, np.asarray(train[1]), n_classes, dtype, classes)
            splits[0] = (*splits[0], weights)
        if rows is not None:
            splits = padded_splits(splits, rows)
        scores = classification_scores() if self._classifier else regression_scores()
        val_loss = scores.pop("val_loss") if self._classifier else (
            lambda p, h, b: -scores["neg_mean_squared_error"](p, h, b))
        continuous = {name: params[name] for name in self._continuous_params}

        def build(config):
            merged = params | dict(config)
            solve = self._solver(merged, continuous)
            return jump_objective(solve, scores, val_loss, splits[0], splits[1],
                                  (splits[0][0].shape[1], splits[0][1].shape[1]), type(self).__name__,
                                  stops=self._classifier)

        return hg.Structured(build), space

    def _paddable(self, fits, sizes):
        """True: a weight-0 row changes neither solve nor score (`padded_splits`), whatever the
        settings (see `HypergradEstimator._paddable`)."""
        del fits, sizes
        return True

    def _output(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = dense(validate_data(self, X, dtype=(np.float64, np.float32), reset=False, accept_sparse=SPARSE_FORMATS))
        return X @ np.atleast_2d(self.coef_).T + self.intercept_


class Ridge(sklearn.base.MultiOutputMixin, sklearn.base.RegressorMixin, _Linear):
    """scikit-learn's `Ridge` (same parameters and meanings), solved in closed form through
    `jnp.linalg.solve` (see `hypergrad.sklearn._linear`). Sparse X (CSR/CSC) is taken, as
    scikit-learn's, and densified on the host (`dense`: memory n x d x the float's itemsize)."""

    _parameter_constraints: dict = dict(sklearn.linear_model.Ridge._parameter_constraints)
    _structural_params = frozenset({"fit_intercept"})
    _continuous_params = frozenset({"alpha"})
    _argument_params = frozenset({"copy_X", "max_iter", "tol", "solver", "random_state"})  # read by no program

    def __init__(self, alpha=1.0, *, fit_intercept=True, copy_X=True, max_iter=None, tol=1e-4, solver="auto",
                 positive=False, random_state=None):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.positive = positive
        self.random_state = random_state

    @staticmethod
    def _solver(params: Mapping[str, Any], continuous: Mapping[str, Any]) -> Any:
        def solve(batch, hparams):  # (x, targets), or a padded part (x, targets, weights)
            x, targets, weights = (*batch, None)[:3]
            alpha = hparams["alpha"] if "alpha" in hparams else jnp.asarray(continuous["alpha"], x.dtype)
            return ridge_solution(x, targets, alpha, bool(params["fit_intercept"]), weights)
        return solve

    def _encode_y(self, y):
        return np.asarray(y, _dtype()), {}

    def _check_supported(self) -> None:
        """`positive=True` is refused (see `HypergradEstimator._check_supported`)."""
        if self.positive:
            raise ValueError("Ridge(positive=True) is not supported by hypergrad.sklearn (the closed form has no "
                             "sign constraint); use positive=False, or scikit-learn's Ridge")

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Ridge:
        """The closed-form ridge solution on (X, y), each example's squared error weighted by
        `sample_weight` ((n,), a number for all, or None for 1 each) as scikit-learn's Ridge weighs
        it; returns self."""
        self._validate_params()
        self._check_supported()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True,
                             accept_sparse=SPARSE_FORMATS)
        X = dense(X)  # the closed form solves dense arrays: n x d x itemsize bytes
        dtype = _dtype()
        weights = None if sample_weight is None else on_device(_check_sample_weight(sample_weight, X, dtype=dtype))
        targets = np.asarray(y, dtype).reshape(len(y), -1)
        alpha = np.asarray(self.alpha, dtype)
        if alpha.ndim > 0 and alpha.shape != (targets.shape[1],):
            raise ValueError(f"Number of targets and number of penalties do not correspond: {targets.shape[1]} != "
                             f"{alpha.size}")
        fit_intercept = bool(self.fit_intercept)

        def make():
            # a function of its own, dropped with the program: the jit of the module-level ridge_solution
            # would keep one executable per data shape in JAX's cache of that function, for ever
            return jax.jit(lambda x, t, a, w: ridge_solution(x, t, a, fit_intercept, w))

        run = cached_program(("Ridge", fit_intercept, X.shape, targets.shape, alpha.shape, str(dtype)), make)
        solution = run(on_device(X, dtype), on_device(targets), on_device(alpha), weights)
        coef, intercept = np.asarray(solution["coef"]).T, np.asarray(solution["intercept"])
        # scikit-learn's shapes: one target's coefficients (y of shape (n,) or (n, 1)) raveled; the
        # intercept a float for y (n,), an array (m,) for y (n, m), and 0.0 without fit_intercept
        self.coef_ = coef[0] if targets.shape[1] == 1 else coef
        self.intercept_ = (0.0 if not self.fit_intercept else float(intercept[0]) if y.ndim == 1 else intercept)
        self.n_iter_ = None
        return self

    def predict(self, X: Any) -> np.ndarray:
        out = self._output(X)
        return out[:, 0] if np.ndim(self.coef_) == 1 else out


def sklearn_penalty(estimator: Any) -> Any:
    """The penalty scikit-learn 1.8's `LogisticRegression.fit` derives and fits: `penalty` itself
    unless it is "deprecated" (its default); then "l2" for `l1_ratio` 0 or None, "l1" for 1,
    "elasticnet" between, and None (no penalty) for `C=np.inf`. An `l1_ratio` beside an explicit
    `penalty` is ignored there (with a `UserWarning`): `penalty="l2", l1_ratio=0.5` fits the l2 model."""
    if estimator.penalty != "deprecated":
        return estimator.penalty
    if estimator.C == np.inf:
        return None
    l1_ratio = estimator.l1_ratio
    return "l2" if l1_ratio == 0 or l1_ratio is None else "l1" if l1_ratio == 1 else "elasticnet"


def check_logistic_refused(estimator: Any) -> None:
    """The options of scikit-learn's LogisticRegression that this Newton solve does not offer, and
    the one l2 setting scikit-learn's own fit refuses: liblinear without a penalty (its solver
    check's `ValueError`). Judged on the penalty scikit-learn fits (`sklearn_penalty`)."""
    name = type(estimator).__name__
    penalty = sklearn_penalty(estimator)
    if estimator.solver == "liblinear" and penalty is None:
        given = "penalty=None" if estimator.penalty is None else f"C={estimator.C!r}"
        raise ValueError(f"{name}(solver='liblinear', {given}) is not supported: scikit-learn's LogisticRegression "
                         "refuses it too (C=np.inf as well as penalty=None is not supported for the liblinear "
                         "solver); use another solver (solver='lbfgs'), or a finite C with the l2 penalty")
    if estimator.penalty not in ("deprecated", "l2", None):
        raise ValueError(f"{name}(penalty={estimator.penalty!r}) is not supported: hypergrad.sklearn solves the l2 "
                         "penalty only; use penalty='l2' (l1_ratio=0), or scikit-learn's LogisticRegression")
    if penalty not in ("l2", None):
        raise ValueError(f"{name}(l1_ratio={estimator.l1_ratio!r}) is not supported: only the l2 penalty "
                         "(l1_ratio=0) is solved; use l1_ratio=0, or scikit-learn's LogisticRegression")
    if estimator.dual:
        raise ValueError(f"{name}(dual=True) is not supported: the primal is solved by Newton's method; use dual=False")
    if estimator.warm_start:
        raise ValueError(f"{name}(warm_start=True) is not supported: every fit starts from zero; use warm_start=False")


LIBLINEAR_MULTICLASS = ("The 'liblinear' solver does not support multiclass classification (n_classes >= 3). Either "
                        "use another solver or wrap the estimator in a OneVsRestClassifier to keep applying a "
                        "one-versus-rest scheme.")
"""scikit-learn 1.9's LogisticRegression.fit's ValueError for solver='liblinear' on anything but 2 classes."""


def check_liblinear_data(solver: str, X: np.ndarray, classes: np.ndarray) -> None:
    """scikit-learn's `ValueError`s, in its order and words, for `solver="liblinear"` on data it
    refuses: classes other than two (one included: its message then still says multiclass), and X
    holding a value above 1e30 (where liblinear would freeze). This Newton solve could fit them, but
    it fits what scikit-learn's estimator fits, and that estimator fits none of them."""
    if solver != "liblinear":
        return
    if len(classes) != 2:
        raise ValueError(LIBLINEAR_MULTICLASS)
    if X.size and np.max(X) > 1e30:
        raise ValueError("Using the 'liblinear' solver while X contains a maximum value > 1e30 results in a frozen "
                         "fit. Please choose another solver or rescale the input X.")


PENALTY_DEPRECATED = ("'penalty' was deprecated in version 1.8 and will be removed in 1.10. To avoid this warning, "
                      "leave 'penalty' set to its default value and use 'l1_ratio' or 'C' instead. Use l1_ratio=0 "
                      "instead of penalty='l2', l1_ratio=1 instead of penalty='l1', l1_ratio set to a float between 0 "
                      "and 1 instead of penalty='elasticnet', and C=np.inf instead of penalty=None.")
"""scikit-learn 1.8's LogisticRegression.fit's FutureWarning for any `penalty` but its default, word for word."""


def sklearn_solver_refuses(solver: str, penalty: Any, dual: bool) -> bool:
    """Whether scikit-learn 1.8's LogisticRegression.fit raises in its solver check (`_check_solver`)
    for this solver, the penalty its fit derives and `dual`: its later warnings are then not given."""
    return ((solver not in ("liblinear", "saga") and penalty not in ("l2", None)) or (solver != "liblinear" and dual)
            or (penalty == "elasticnet" and solver != "saga") or (solver == "liblinear" and penalty is None))


def warn_as_sklearn_logistic(estimator: Any) -> None:
    """The warnings scikit-learn 1.8's `LogisticRegression.fit` gives for these parameters, in its
    order, categories and words (its fit, `sklearn/linear_model/_logistic.py`): a `FutureWarning` for
    any `penalty` but "deprecated" (the parameter is deprecated, whatever its value, even one this
    solve refuses next), and for `l1_ratio=None` under the default penalty or for an `n_jobs`; a
    `UserWarning` for an `l1_ratio` in (0, 1) without the elastic net, for a `penalty` that
    contradicts `l1_ratio`, and for a `C` other than 1 under `penalty=None`. After the parameters are
    validated, before anything is refused; the warnings after scikit-learn's solver check are given
    only where that check passes (`sklearn_solver_refuses`), as there."""
    for message, category in logistic_fit_warnings(estimator):
        warnings.warn(message, category, stacklevel=users_stacklevel())


def logistic_fit_warnings(estimator: Any) -> list[tuple[str, type[Warning]]]:
    """(message, category) of each warning `warn_as_sklearn_logistic` gives for `estimator`'s
    parameters, in order (a search gives those of its fold fits from these: `hypergrad.sklearn._search`)."""
    out: list[tuple[str, type[Warning]]] = []
    penalty, l1_ratio = sklearn_penalty(estimator), estimator.l1_ratio
    if estimator.penalty != "deprecated":
        out.append((PENALTY_DEPRECATED, FutureWarning))
    elif l1_ratio is None:
        out.append(("'l1_ratio=None' was deprecated in version 1.8 and will trigger an error in 1.10. Use "
                    "0<=l1_ratio<=1 instead.", FutureWarning))
    if sklearn_solver_refuses(estimator.solver, penalty, estimator.dual):
        return out
    if penalty != "elasticnet" and l1_ratio is not None and 0 < l1_ratio < 1:
        out.append((f"l1_ratio parameter is only used when penalty is 'elasticnet'. Got (penalty={penalty})",
                    UserWarning))
    if (estimator.penalty == "l2" and l1_ratio != 0) or (estimator.penalty == "l1" and l1_ratio != 1):
        out.append((f"Inconsistent values: penalty={estimator.penalty} with l1_ratio={l1_ratio}. penalty is "
                    "deprecated. Please use l1_ratio only.", UserWarning))
    if estimator.penalty is None and estimator.C != 1.0:
        out.append(("Setting penalty=None will ignore the C and l1_ratio parameters", UserWarning))
    if estimator.n_jobs is not None:
        out.append((f"'n_jobs' has no effect since 1.8 and will be removed in 1.10. You provided "
                    f"'n_jobs={estimator.n_jobs}', please leave it unspecified.", FutureWarning))
    return out


class LogisticRegression(sklearn.base.ClassifierMixin, _Linear):
    """scikit-learn's `LogisticRegression` with the l2 penalty (same parameters and meanings),
    solved by Newton's method under jit; every `solver` value means this solve (see
    `hypergrad.sklearn._linear`). `penalty=None` means no penalty (C = infinity). Sparse X
    (CSR/CSC) is taken, as scikit-learn's, and densified on the host (`dense`: memory n x d x the
    float's itemsize)."""

    _parameter_constraints: dict = dict(sklearn.linear_model.LogisticRegression._parameter_constraints)
    _structural_params = frozenset({"fit_intercept", "max_iter", "tol"})
    _continuous_params = frozenset({"C"})
    # read by no program (every solver means the Newton solve; warm_start=True is refused before)
    _argument_params = frozenset({"solver", "intercept_scaling", "random_state", "verbose", "warm_start", "n_jobs"})
    _classifier = True

    def __init__(self, penalty="deprecated", *, C=1.0, l1_ratio=0.0, dual=False, tol=1e-4, fit_intercept=True,
                 intercept_scaling=1, class_weight=None, random_state=None, solver="lbfgs", max_iter=100, verbose=0,
                 warm_start=False, n_jobs=None):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.dual = dual
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.class_weight = class_weight
        self.random_state = random_state
        self.solver = solver
        self.max_iter = max_iter
        self.verbose = verbose
        self.warm_start = warm_start
        self.n_jobs = n_jobs

    def unused_why(self, params: Mapping[str, Any]) -> dict[str, str]:
        """`C` with `penalty=None`: no penalty, so C is not read (scikit-learn ignores it too, and its
        `fit` warns so: its words are the reason)."""
        if params["penalty"] is None:
            return {"C": "Setting penalty=None will ignore the C and l1_ratio parameters (scikit-learn's "
                         "LogisticRegression's warning)"}
        return {}

    def _solver(self, params: Mapping[str, Any], continuous: Mapping[str, Any]) -> Any:
        def solve(batch, hparams):
            x, targets, weights = batch
            # no penalty whatever C is, a searched (traced) C included
            c = jnp.asarray(penalty_c(params["penalty"], hparams["C"] if "C" in hparams else continuous["C"]), x.dtype)
            solution, _, converged = newton_logistic(x, targets, weights, c,
                                                     fit_intercept=bool(params["fit_intercept"]),
                                                     max_iter=int(params["max_iter"]), tol=float(params["tol"]))
            return {**solution, "stopped": converged.astype(x.dtype)}  # `fit` warns where it is 0
        return solve

    def _encode_y(self, y):
        """Class indices 0..k-1 of `classes_` (sorted); a ValueError for fewer than 2 classes."""
        return encode_classes(y, "This solver")

    def _check_supported(self) -> None:
        """`check_logistic_refused` (see `HypergradEstimator._check_supported`)."""
        check_logistic_refused(self)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Newton's method on the penalised log-loss of (X, y), each example's loss weighted by
        `sample_weight` ((n,), a number for all, or None for 1 each) times its class's
        `class_weight`, as scikit-learn weighs them; returns self."""
        self._validate_params()
        warn_as_sklearn_logistic(self)
        self._check_supported()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), accept_sparse=SPARSE_FORMATS)
        X = dense(X)  # Newton's method solves dense arrays: n x d x itemsize bytes
        # liblinear's refusals first, as scikit-learn's (one class included), then fewer than 2 classes
        codes, attributes = encode_classes(y, "This solver", least=1 if self.solver == "liblinear" else 2)
        check_liblinear_data(self.solver, X, attributes["classes_"])
        self.classes_ = attributes["classes_"]
        dtype = _dtype()
        targets = class_targets(codes, len(self.classes_), dtype)
        weights = _check_sample_weight(sample_weight, X, dtype=dtype)
        if self.class_weight is not None:  # "balanced" counts each class's sample weights, as scikit-learn
            weights = weights * compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=(
                None if sample_weight is None else weights))[codes].astype(dtype)
        static = (bool(self.fit_intercept), int(self.max_iter), float(self.tol))

        def make():
            return jax.jit(lambda x, t, w, c: newton_logistic(x, t, w, c, fit_intercept=static[0],
                                                               max_iter=static[1], tol=static[2]))

        x, targets, weights = bucketed(np.asarray(X, dtype), targets, weights)
        run = cached_program(("LogisticRegression", static, x.shape, targets.shape, str(dtype)), make)
        solution, taken, converged = run(*on_device((x, targets, weights)),
                                         on_device(penalty_c(self.penalty, self.C), dtype))
        self.coef_ = np.asarray(solution["coef"]).T[:, :X.shape[1]].copy()
        self.intercept_ = np.asarray(solution["intercept"]).copy()
        self.n_iter_ = np.asarray([int(taken)], dtype=np.int32)
        if not bool(converged):
            warnings.warn(f"Newton's method failed to converge after {self.max_iter} iteration(s) (largest gradient "
                          f"entry above tol={self.tol}); increase max_iter or scale the data", ConvergenceWarning,
                          stacklevel=users_stacklevel())
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        out = self._output(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        return class_probabilities(self._output(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        codes = class_codes(self._output(X))  # checks that the estimator is fitted first
        return self.classes_[codes]
