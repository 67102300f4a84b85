"""Differentiating a hypergradient: exact for the autodiff methods, refused for those that cut it.

Reversible (int64 fixed-point training), Implicit (training held constant) and Truncated (the steps
before the window held constant) return values and grads with no derivative path, or a partial
one, back to the hyperparameters: jax.grad / jacfwd / jacrev through them gave 0 or wrong signs,
silently. They now raise a ValueError at trace time naming the method and the fix, while jit and
vmap of the plain call are unchanged. Truncated with window >= T is Reverse and stays exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def sgd_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=6)


@pytest.fixture(scope="module")
def converged_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(0.1), num_steps=60)


def sgd_hparams(weight_decay=0.01):
    return {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.5), "weight_decay": jnp.asarray(weight_decay)}


def cases(sgd_objective, converged_objective):
    """(method, objective, hparams) of each method whose hypergradient cannot be differentiated."""
    return [(hg.Reversible(), sgd_objective, sgd_hparams()),
            (hg.Truncated(3), sgd_objective, sgd_hparams()),
            (hg.Implicit(), converged_objective, {"weight_decay": jnp.asarray(0.01)})]


REFUSED = ["Reversible", "Truncated", "Implicit"]


def _case(name, sgd_objective, converged_objective):
    return next(c for c in cases(sgd_objective, converged_objective) if type(c[0]).__name__ == name)


@pytest.mark.parametrize("name", REFUSED)
@pytest.mark.parametrize("transform", ["grad_value", "jacfwd_grads", "jacrev_grads", "grad_under_jit"])
def test_differentiating_a_hypergradient_that_cuts_the_derivative_path_is_refused(
        name, transform, sgd_objective, converged_objective):
    method, objective, hparams = _case(name, sgd_objective, converged_objective)

    def value(h):
        return hg.hypergradient(objective, h, KEY, method=method)[0]

    def grad_wd(h):
        return hg.hypergradient(objective, h, KEY, method=method)[1]["weight_decay"]

    run = {"grad_value": lambda: jax.grad(value)(hparams),
           "jacfwd_grads": lambda: jax.jacfwd(grad_wd)(hparams),
           "jacrev_grads": lambda: jax.jacrev(grad_wd)(hparams),
           "grad_under_jit": lambda: jax.grad(jax.jit(value))(hparams)}[transform]
    with pytest.raises(ValueError, match=rf"{name}\(.*hg\.Reverse\(\) or hg\.Forward\(\)"):
        run()


@pytest.mark.parametrize("name", REFUSED)
def test_vmap_and_jit_of_the_refusing_methods_give_the_plain_calls_numbers(name, sgd_objective, converged_objective):
    method, objective, hparams = _case(name, sgd_objective, converged_objective)
    decays = jnp.asarray([0.003, 0.01, 0.03])
    batch = {k: (decays if k == "weight_decay" else jnp.broadcast_to(v, decays.shape)) for k, v in hparams.items()}
    call = lambda h: hg.hypergradient(objective, h, KEY, method=method)  # noqa: E731
    vmapped = jax.vmap(call)(batch)
    jitted = jax.jit(call)(hparams)
    plain = call(hparams)
    for i, decay in enumerate(np.asarray(decays)):
        one = call({**hparams, "weight_decay": jnp.asarray(decay)})
        np.testing.assert_allclose(vmapped[0][i], one[0], rtol=1e-12, atol=1e-15)
        for k in hparams:
            np.testing.assert_allclose(vmapped[1][k][i], one[1][k], rtol=1e-12, atol=1e-15, err_msg=k)
    np.testing.assert_allclose(jitted[0], plain[0], rtol=1e-12, atol=1e-15)
    for k in hparams:
        np.testing.assert_allclose(jitted[1][k], plain[1][k], rtol=1e-12, atol=1e-15, err_msg=k)
    assert np.isfinite(plain[1]["weight_decay"]) and plain[1]["weight_decay"] != 0


def test_truncated_with_the_whole_horizon_is_reverse_and_stays_differentiable(sgd_objective):
    """window >= T cuts nothing: its hypergradient's Jacobian is the objective's Hessian."""
    hparams = sgd_hparams()
    grads = lambda h: hg.hypergradient(sgd_objective, h, KEY, method=hg.Truncated(6))[1]  # noqa: E731
    jac = jax.jacfwd(grads)(hparams)
    hessian = jax.hessian(sgd_objective)(hparams, KEY)
    for a in hparams:
        for b in hparams:
            np.testing.assert_allclose(jac[a][b], hessian[a][b], rtol=1e-9, atol=1e-12, err_msg=f"{a}, {b}")


def test_es_is_plain_autodiff_of_its_estimate(sgd_objective):
    """ES is differentiable as written (documented): the value's gradient is the objective's exact
    gradient (the value is the unperturbed run), the grads' Jacobian is that of the estimate."""
    hparams = sgd_hparams()
    method = hg.ES(sigma=0.01, num_samples=4)
    value_grad = jax.grad(lambda h: hg.hypergradient(sgd_objective, h, KEY, method=method)[0])(hparams)
    exact = jax.grad(sgd_objective)(hparams, KEY)
    for k in hparams:
        np.testing.assert_allclose(value_grad[k], exact[k], rtol=1e-10, err_msg=k)
    grad_wd = lambda h: hg.hypergradient(sgd_objective, h, KEY, method=method)[1]["weight_decay"]  # noqa: E731
    tangent = {k: jnp.zeros_like(v) if k != "weight_decay" else jnp.ones_like(v) for k, v in hparams.items()}
    jac = jax.jvp(grad_wd, (hparams,), (tangent,))[1]
    e = 1e-5
    fd = (grad_wd({**hparams, "weight_decay": hparams["weight_decay"] + e})
          - grad_wd({**hparams, "weight_decay": hparams["weight_decay"] - e})) / (2 * e)
    np.testing.assert_allclose(jac, fd, rtol=1e-5)
