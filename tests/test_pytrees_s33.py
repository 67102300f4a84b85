"""Parameter pytrees that Implicit and Reversible once failed on (hunt PYTREES, session 33).

Implicit(solver="cg") on parameters mixing float dtypes (a float32 leaf beside float64 ones) raised a
bare JAX TypeError (its while_loop carry changed dtype; unrolled, jax.jvp's tangent did); complex
leaves now get a ValueError naming the leaf. Reversible refused optax.sgd with momentum when the
parameters held a size-0 leaf (its own probe's max over an empty array, reported as the optimiser's
error), and raised AttributeError on a Python-float leaf.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg


def relative_error(a, b):
    return float(abs(np.asarray(a) - np.asarray(b)) / abs(np.asarray(b)))


def regression(init, predict, decay=True):
    """Full-batch linear regression on 40 examples of 3 features; `predict(params, x)`; a weight
    decay hyperparameter 'wd' on params['w'] in the training loss when `decay`."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    Y = X @ np.array([1.0, -0.5, 2.0]) + 0.5 + 0.1 * rng.normal(size=40)
    Xv = rng.normal(size=(20, 3))
    Yv = Xv @ np.array([1.0, -0.5, 2.0]) + 0.5

    def mse(p, batch):
        return jnp.mean((predict(p, batch[0]) - batch[1]) ** 2)

    def train_loss(p, h, batch):
        return mse(p, batch) + (h["wd"] * jnp.sum(p["w"] ** 2) if decay else 0.0)

    return hg.Problem(init=init, train_loss=train_loss, val_loss=mse, train_data=(X, Y), val_data=(Xv, Yv))


# -- Implicit on mixed float dtypes ---------------------------------------------------------------
def mixed_objective():
    """float64 weights beside a float32 bias; full-batch SGD at rate 0.3 converges in 300 steps."""
    problem = regression(lambda key: {"w": jnp.zeros(3), "b": jnp.zeros((), jnp.float32)},
                         lambda p, x: x @ p["w"] + p["b"])
    return hg.Objective(problem, lambda h: optax.sgd(0.3), num_steps=300)


@pytest.mark.parametrize("unroll", [False, True])
def test_implicit_cg_runs_on_a_float32_leaf_beside_float64_ones_and_agrees(unroll):
    objective, h, key = mixed_objective(), {"wd": jnp.asarray(0.05)}, jax.random.key(0)
    _, cg = hg.hypergradient(objective, h, key, method=hg.Implicit(solver="cg", maxiter=20, tol=1e-12,
                                                                   unroll=unroll))
    _, neumann = hg.hypergradient(objective, h, key, method=hg.Implicit(solver="neumann", num_terms=300, alpha=0.3))
    _, reverse = hg.hypergradient(objective, h, key, method=hg.Reverse())
    assert cg["wd"].dtype == jnp.float64
    assert relative_error(cg["wd"], neumann["wd"]) < 1e-6
    assert relative_error(cg["wd"], reverse["wd"]) < 1e-6


def test_implicit_refuses_a_complex_leaf_naming_it():
    problem = regression(lambda key: {"w": jnp.zeros(3), "c": jnp.asarray(0.1 + 0.2j)},
                         lambda p, x: x @ p["w"] + jnp.real(p["c"]) + 0.5 * jnp.imag(p["c"]) ** 2)
    objective = hg.Objective(problem, lambda h: optax.sgd(0.1), num_steps=5)
    for method in (hg.Implicit(), hg.Implicit(solver="neumann")):
        with pytest.raises(ValueError, match=r"complex.*\['c'\].*complex128.*hg\.Reverse\(\) or hg\.Forward\(\)"):
            hg.hypergradient(objective, {"wd": jnp.asarray(0.05)}, jax.random.key(0), method=method)


# -- Reversible on a size-0 leaf and on a Python-float leaf -----------------------------------------
def reversible_objective(init, predict):
    problem = regression(init, predict, decay=False)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)


def assert_reversible_equals_reverse(objective):
    h, key = {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.5)}, jax.random.key(0)
    value, grads = hg.hypergradient(objective, h, key, method=hg.Reversible())
    expected_value, expected = hg.hypergradient(objective, h, key, method=hg.Reverse())
    assert relative_error(value, expected_value) < 1e-8
    for name in h:
        assert relative_error(grads[name], expected[name]) < 1e-8, name


def test_reversible_accepts_sgd_with_momentum_on_parameters_holding_a_size_0_leaf():
    """The probe took the maximum over the empty leaf and reported that as the optimiser's error."""
    assert_reversible_equals_reverse(reversible_objective(
        lambda key: {"w": jnp.zeros(3), "b": jnp.zeros(()), "unused": jnp.zeros((0,))},  # a layer of width 0
        lambda p, x: x @ p["w"] + p["b"] + jnp.sum(p["unused"])))


def test_an_error_of_reversibles_own_probe_is_not_reported_as_the_optimisers(monkeypatch):
    """Only what the objective's optimiser raises is relabelled as its error; here the probe's
    reference (optax.sgd, patched to fail) raises, beside an optimiser that is SGD with momentum."""
    def optimizer(h):
        return optax.chain(optax.trace(decay=h["momentum"]), optax.scale_by_learning_rate(h["lr"]))

    def broken_sgd(*args, **kwargs):
        raise RuntimeError("the probe's reference failed")

    objective = hg.Objective(regression(lambda key: {"w": jnp.zeros(3), "b": jnp.zeros(())},
                                        lambda p, x: x @ p["w"] + p["b"], decay=False), optimizer, num_steps=4)
    monkeypatch.setattr(optax, "sgd", broken_sgd)
    with pytest.raises(RuntimeError, match="the probe's reference failed"):
        hg.hypergradient(objective, {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.5)}, jax.random.key(0),
                         method=hg.Reversible())


def test_reversible_accepts_a_python_float_leaf():
    """`_Arithmetic.of` read `.dtype` of the concrete init leaves: AttributeError on a Python float."""
    assert_reversible_equals_reverse(reversible_objective(lambda key: {"w": jnp.zeros(3), "b": 0.0},
                                                          lambda p, x: x @ p["w"] + p["b"]))
