"""Memory of hypergrad.sklearn's LogisticRegression fit (hunt H24, finding 1): its Newton Hessian
is built one column (one Hessian-vector product) at a time (`logistic_hessian`), not by
`jax.hessian`, which vmapped every column's reverse pass at once and held per-example intermediates
of size (dk) k; the fit's temporaries now grow by a few data rows and logits per example, and its
values are those of `jax.hessian`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad.sklearn._linear as linear

# (classes m, fit_intercept): one logistic unit, and softmax over 3 or 4 classes
LAYOUTS = [(1, True), (1, False), (3, True), (4, False)]


def _data(n, d, m, seed=0):
    """Features, 0/1 or one-hot targets and positive weights, the last 3 rows padding (weight 0 and,
    for a softmax, zero targets, as `bucketed` pads)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    codes = rng.integers(0, max(m, 2), n)
    targets = codes[:, None].astype(float) if m == 1 else np.eye(m)[codes]
    weights = rng.uniform(0.2, 2.0, n)
    targets[-3:], weights[-3:] = 0.0, 0.0
    return jnp.asarray(x), jnp.asarray(targets), jnp.asarray(weights)


@pytest.mark.parametrize("m, fit_intercept", LAYOUTS)
@pytest.mark.parametrize("c", [0.7, np.inf])
def test_logistic_hessian_equals_the_autodiff_hessian_of_the_loss(m, fit_intercept, c):
    d = 5
    x, targets, weights = _data(37, d, m)
    size = d * m + (m if fit_intercept else 0)
    theta = jnp.asarray(np.random.default_rng(1).normal(size=size))
    expected = jax.hessian(lambda q: linear.logistic_loss(q, x, targets, weights, c, fit_intercept))(theta)
    hessian = linear.logistic_hessian(theta, x, targets, weights, jnp.asarray(c), fit_intercept)
    np.testing.assert_allclose(hessian, expected, rtol=1e-12, atol=1e-14 * float(np.max(np.abs(expected))))


def _fit_temp_bytes(n, d, m):
    args = (jnp.zeros((n, d)), jnp.zeros((n, m)), jnp.ones(n), jnp.asarray(1.0))
    fit = jax.jit(lambda x, t, w, c: linear.newton_logistic(x, t, w, c, fit_intercept=True, max_iter=2, tol=1e-4))
    return fit.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_logistic_fit_temporaries_grow_by_rows_and_logits_per_example_not_by_the_hessian():
    d, m, n_small, n_large = 16, 4, 128, 512
    per_example = (_fit_temp_bytes(n_large, d, m) - _fit_temp_bytes(n_small, d, m)) / (n_large - n_small) / 8
    # a few (d+1)-float rows (one Hessian column's intermediates) and the line search's ten k-float
    # logits; jax.hessian's per-example (dk) x k intermediates were about 4x this bound
    bound = 4 * ((d + 1) + 10 * m)
    assert per_example <= bound, f"{per_example:.0f} float64 temporaries per example (bound {bound})"


def test_gradient_through_the_newton_fit_matches_finite_differences():
    m = 3  # softmax, through every Hessian column
    x, targets, weights = _data(40, 3, m, seed=2)
    probe = jnp.asarray(np.random.default_rng(3).normal(size=(3, m)))

    def readout(log_c):
        solution, _, _ = linear.newton_logistic(x, targets, weights, jnp.exp(log_c), fit_intercept=True,
                                                max_iter=12, tol=1e-12)
        return jnp.sum(solution["coef"] * probe) + jnp.sum(solution["intercept"])

    log_c, h = jnp.asarray(np.log(0.5)), 1e-5
    numeric = (readout(log_c + h) - readout(log_c - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(readout)(log_c), numeric, rtol=1e-6)
