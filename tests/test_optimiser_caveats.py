"""Optimisers whose fixed point or derivative the methods could get wrong, each checked against
central finite differences of the objective (float64, tests/conftest.py).

Implicit refuses gradient centralisation (optax.centralize stops where the gradient is constant
along a row, not 0: its implicit-function-theorem answer had the wrong sign) and no longer refuses
optax.novograd's default (a weight decay of 0.0 times the parameters reads nothing). optax.lion's
sign gives every hyperparameter but the learning rate an exact-zero hypergradient, as the
objective's finite differences are: a true zero, documented, not a failure.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.implicit import hparams_read_by

CG = hg.Implicit(solver="cg", maxiter=50, tol=1e-13)
HPARAMS = {"weight_decay": jnp.asarray(0.1)}
COLUMN_WEIGHTS = jnp.array([1.0, 3.0])  # unequal, so that the Hessian does not commute with centring


def central_difference(objective, hparams, key, name, eps=1e-5):
    up, down = dict(hparams), dict(hparams)
    up[name], down[name] = hparams[name] + eps, hparams[name] - eps
    return (float(objective(up, key)) - float(objective(down, key))) / (2 * eps)


@pytest.fixture(scope="module")
def matrix_problem():
    """Two-output least squares with a (4, 2) weight matrix, a weighted squared error per output and
    the ridge penalty 0.5 * weight_decay * ||W||^2 in the training loss."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = x @ rng.normal(size=(4, 2)) + 0.3 * rng.normal(size=(30, 2))
    xv = rng.normal(size=(20, 4))
    yv = xv @ rng.normal(size=(4, 2))

    def train_loss(params, hparams, batch):
        x, y = batch
        fit = 0.5 * jnp.mean(jnp.sum(COLUMN_WEIGHTS * (x @ params["w"] - y) ** 2, -1))
        return fit + 0.5 * hparams["weight_decay"] * jnp.sum(params["w"] ** 2)

    def val_loss(params, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.sum((x @ params["w"] - y) ** 2, -1))

    return hg.Problem(init=lambda key: {"w": jnp.zeros((4, 2))}, train_loss=train_loss, val_loss=val_loss,
                      train_data=(x, y), val_data=(xv, yv))


def centralised(hparams):
    return optax.chain(optax.centralize(), optax.sgd(0.3))


def test_gradient_centralisation_is_refused_by_implicit_before_compiling(matrix_problem, key):
    """The old answer (the implicit-function theorem at the centralised end point, as if its gradient
    were 0) was 0.668 against the objective's finite difference -0.455; Reverse agrees with the latter."""
    objective = hg.Objective(matrix_problem, centralised, num_steps=500)
    match = r"optax\.centralize.*hg\.Reverse\(\) or hg\.Forward\(\)"
    with pytest.raises(ValueError, match=match):  # the eager conversions of the arguments, once per process
        hg.hypergradient(objective, HPARAMS, key, method=CG)
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, HPARAMS, key, method=CG)
    assert _compile.stats.compilations == before
    _, reverse = hg.hypergradient(objective, HPARAMS, key, method=hg.Reverse())
    truth = central_difference(objective, HPARAMS, key, "weight_decay")
    np.testing.assert_allclose(reverse["weight_decay"], truth, rtol=1e-6)
    # Why: at the centralised end point the training loss's gradient is not 0, and the implicit-function
    # answer there, -dV/dw H^-1 d2L/dwdh with the dense 8 x 8 Hessian, has the wrong sign.
    trained = objective.loop().train(HPARAMS, key).params
    flat, unflatten = jax.flatten_util.ravel_pytree(trained)

    def grad_train(w, h):
        return jax.grad(matrix_problem.train_loss)(unflatten(w), h, matrix_problem.train_data)["w"].ravel()

    hessian = jax.jacfwd(grad_train)(flat, HPARAMS)
    mixed = jax.jacfwd(grad_train, argnums=1)(flat, HPARAMS)["weight_decay"]
    dv = jax.grad(lambda w: matrix_problem.val_loss(unflatten(w), matrix_problem.val_data))(flat)
    assert float(jnp.linalg.norm(grad_train(flat, HPARAMS))) > 1e-2  # not a stationary point
    implicit_there = -float(dv @ jnp.linalg.solve(hessian, mixed))
    assert implicit_there * truth < 0  # the wrong sign (0.668 against -0.455)


@pytest.mark.parametrize("optimizer", [
    lambda h: optax.sgd(0.3),
    lambda h: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.3)),
    lambda h: optax.chain(optax.clip_by_block_rms(1.0), optax.sgd(0.3)),
    lambda h: optax.adafactor(0.1, min_dim_size_to_factor=2, multiply_by_parameter_scale=False),
], ids=["sgd", "global_norm", "block_rms", "factored_adafactor"])
def test_reductions_that_do_not_move_the_fixed_point_are_accepted(matrix_problem, optimizer):
    """A reduction of the whole gradient (a norm) or one that rescales it (a factored second moment)
    keeps the update 0 only at gradient 0."""
    CG.check(hg.Objective(matrix_problem, optimizer, num_steps=5), HPARAMS)  # nothing raised


def test_centralize_of_vectors_is_the_identity_and_is_accepted(ridge_problem):
    """optax.centralize leaves a one-dimensional gradient as it is (ridge's weights are a vector)."""
    CG.check(hg.Objective(ridge_problem, centralised, num_steps=5), HPARAMS)


def test_a_product_with_the_constant_zero_reads_nothing():
    assert hparams_read_by(lambda h: h["a"] * 0.0 + h["b"], {"a": 1.0, "b": 2.0}) == {"b"}
    assert hparams_read_by(lambda h: h["a"] * 1.0 + h["b"], {"a": 1.0, "b": 2.0}) == {"a", "b"}


def test_novograd_by_default_is_accepted_and_matches_finite_differences(ridge_problem, key):
    """optax.novograd adds weight_decay * params with weight_decay=0.0, which the check read as a
    decay. Its normalised steps stop at gradient 0 once the rate decays (at a constant rate they circle)."""
    num_steps = 1000
    objective = hg.Objective(ridge_problem, lambda h: optax.novograd(optax.cosine_decay_schedule(0.1, num_steps)),
                             num_steps=num_steps)
    _, grads = hg.hypergradient(objective, HPARAMS, key, method=CG)
    truth = central_difference(objective, HPARAMS, key, "weight_decay")
    np.testing.assert_allclose(grads["weight_decay"], truth, rtol=1e-4)  # measured 7e-6
    with pytest.raises(ValueError, match="reads the parameters themselves"):  # a decay that is not 0 still is
        CG.check(hg.Objective(ridge_problem, lambda h: optax.novograd(0.1, weight_decay=0.01), num_steps=5), HPARAMS)


def test_lion_gives_its_momenta_and_the_loss_an_exact_zero_hypergradient(ridge_problem, key):
    """The update is lr * sign(b1 m + (1 - b1) g), m tracking g at rate b2: b1, b2 and the loss's
    weight_decay change it only where an entry changes sign, so the objective is piecewise constant in
    them (its finite differences are 0 too): a true zero, which the README's list of optimiser caveats
    states."""
    hparams = {"lr": jnp.asarray(0.01), "b1": jnp.asarray(0.9), "b2": jnp.asarray(0.99),
               "weight_decay": jnp.asarray(0.1)}
    objective = hg.Objective(ridge_problem, lambda h: optax.lion(h["lr"], b1=h["b1"], b2=h["b2"]), num_steps=30)
    for method in (hg.Reverse(), hg.Forward()):
        _, grads = hg.hypergradient(objective, hparams, key, method=method)
        assert all(float(grads[name]) == 0.0 for name in ("b1", "b2", "weight_decay"))
        np.testing.assert_allclose(grads["lr"], central_difference(objective, hparams, key, "lr"), rtol=1e-6)
    assert central_difference(objective, hparams, key, "b1") == 0.0


def test_implicit_check_traces_the_optimisers_first_step_once(ridge_problem):
    # check_loop traced the optimiser's first step once per analysis of it (the hyperparameters it reads,
    # whether its update reads the parameters, whether it centres the gradient): 5 optimiser builds per
    # check, on every hg.hypergradient call with Implicit. Now 3: the initialisation's shapes, the first
    # step (shared by the three analyses) and the hyperparameters the initialisation reads
    calls = []

    def counted(hparams):
        calls.append(1)
        return optax.adam(0.1)

    objective = hg.Objective(ridge_problem, counted, num_steps=5)
    for checks in (1, 2):  # the same on a second call: nothing of it is cached
        CG.check(objective, HPARAMS)
        assert len(calls) == 3 * checks
