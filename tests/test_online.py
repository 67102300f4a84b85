"""Online hypergradient descent (`sgd_hd`): the paper's rule, its direction, and use as an inner optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.online import SGDHDState, sgd_hd

# A 2-D quadratic f(x) = 0.5 (x - c)' A (x - c), split over two leaves to exercise pytrees.
A = np.array([[3.0, 0.5], [0.5, 1.0]])
C = np.array([1.0, -2.0])


def quad_grad(x):
    return A @ (x - C)


def as_tree(x):
    return {"a": jnp.asarray(x[:1]), "b": jnp.asarray(x[1])}


def from_tree(tree):
    return np.concatenate([np.ravel(tree["a"]), np.ravel(tree["b"])])


def numpy_sgd_hd(x0, alpha0, beta, mu, steps, nesterov=True):
    """Baydin et al. (2018), SGD-HD (mu = 0) and SGDN-HD, written out as in the paper."""
    x, alpha = np.array(x0, float), alpha0
    v = np.zeros_like(x)
    grad_alpha_u = np.zeros_like(x)        # d u_{t-1} / d alpha, zero before the first step
    alphas, xs = [], []
    for _ in range(steps):
        g = quad_grad(x)
        h = g @ grad_alpha_u               # d f(theta_{t-1}) / d alpha
        alpha = alpha - beta * h
        if mu == 0:
            u = -alpha * g
            grad_alpha_u = -g
        else:
            v = mu * v + g
            d = g + mu * v if nesterov else v
            u = -alpha * d
            grad_alpha_u = -d
        x = x + u
        alphas.append(alpha)
        xs.append(x.copy())
    return np.array(alphas), np.array(xs)


def run_optax(opt, x0, steps):
    params = as_tree(np.asarray(x0, float))
    state = opt.init(params)
    alphas, xs = [], []

    @jax.jit
    def step(params, state):
        x = jnp.concatenate([jnp.ravel(params["a"]), jnp.ravel(params["b"])])
        grads = as_tree(quad_grad(x))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
        alphas.append(float(state.learning_rate))
        xs.append(from_tree(params))
    return np.array(alphas), np.array(xs), state


@pytest.mark.parametrize("mu,nesterov", [(0.0, True), (0.7, True), (0.7, False)],
                         ids=["sgd-hd", "sgdn-hd", "heavy-ball-hd"])
def test_matches_the_papers_rule_written_in_numpy(mu, nesterov):
    x0, alpha0, beta, steps = [0.0, 0.0], 0.05, 0.01, 6
    expected_alphas, expected_xs = numpy_sgd_hd(x0, alpha0, beta, mu, steps, nesterov)
    alphas, xs, state = run_optax(sgd_hd(alpha0, beta, mu, nesterov=nesterov), x0, steps)
    assert isinstance(state, SGDHDState) and int(state.count) == steps
    assert (state.velocity is None) == (mu == 0.0)
    np.testing.assert_allclose(alphas, expected_alphas, rtol=1e-12)
    np.testing.assert_allclose(xs, expected_xs, rtol=1e-12, atol=1e-14)
    assert alphas[0] == alpha0  # g_0 = 0: the first step uses the initial learning rate
    assert len(set(np.round(alphas, 14))) == steps  # and it really adapts


@pytest.mark.parametrize("alpha0,direction", [(0.02, +1), (0.6, -1)], ids=["too-small", "too-large"])
def test_learning_rate_adapts_in_the_right_direction(alpha0, direction):
    """The stable range is alpha < 2 / lambda_max ~ 0.64 and the best is about 2 / (lambda_min +
    lambda_max) ~ 0.5: consecutive gradients agree when the step is short and alternate when it
    overshoots the stiff direction."""
    alphas, _, _ = run_optax(sgd_hd(alpha0, 3e-4), [4.0, 3.0], 8)
    assert alphas[0] == alpha0
    assert np.all(direction * np.diff(alphas) > 0)  # monotone, every step
    assert direction * (alphas[-1] - alpha0) > 0.1 * alpha0


def test_zero_hyper_lr_is_plain_sgd():
    alphas, xs, _ = run_optax(sgd_hd(0.1, 0.0), [4.0, 3.0], 4)
    x = np.array([4.0, 3.0])
    for i in range(4):
        x = x - 0.1 * quad_grad(x)
        np.testing.assert_allclose(xs[i], x, rtol=1e-13)
    np.testing.assert_array_equal(alphas, 0.1)


def test_float32_parameters_keep_their_dtype():
    """A float64 learning rate must not promote float32 parameters (the loop carry keeps its type)."""
    params = {"w": jnp.ones(3, jnp.float32)}
    opt = sgd_hd(jnp.asarray(0.1, jnp.float64), 0.01, 0.5)
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update({"w": jnp.full(3, 0.5, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    assert params["w"].dtype == jnp.float32 and updates["w"].dtype == jnp.float32
    assert state.learning_rate.dtype == jnp.float64 and not state.learning_rate.weak_type


@pytest.mark.parametrize("kwargs,match", [
    ({"learning_rate": -0.1}, r"sgd_hd\(learning_rate=-0.1\) must be >= 0"),
    ({"hyper_lr": -1e-3}, r"sgd_hd\(hyper_lr=-0.001\) must be >= 0"),
    ({"momentum": 1.0}, r"sgd_hd\(momentum=1.0\) must be in \[0, 1\)"),
    ({"nesterov": 1}, r"sgd_hd\(nesterov=1\) must be True or False"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"learning_rate": 0.1, "hyper_lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        sgd_hd(**args)


@pytest.mark.parametrize("kwargs,match", [
    ({"learning_rate": jnp.asarray(-0.1)}, r"sgd_hd\(learning_rate=Array\(-0.1.*\) must be >= 0"),
    ({"learning_rate": np.array(-0.1)}, r"sgd_hd\(learning_rate=array\(-0.1\)\) must be >= 0"),
    ({"hyper_lr": np.float32(-1e-3)}, r"sgd_hd\(hyper_lr=np.float32\(-0.001\)\) must be >= 0"),
    ({"hyper_lr": jnp.asarray(jnp.nan)}, r"sgd_hd\(hyper_lr=Array\(nan.*\) must be >= 0"),
    ({"momentum": jnp.asarray(1.0, jnp.float32)}, r"sgd_hd\(momentum=Array\(1.*\) must be in \[0, 1\)"),
    ({"momentum": np.int64(1)}, r"sgd_hd\(momentum=np.int64\(1\)\) must be in \[0, 1\)"),
    ({"hyper_lr": jnp.asarray(True)}, r"sgd_hd\(hyper_lr=Array\(True.*\) must be a number, not a bool"),
], ids=["jax", "numpy-0d", "numpy-float32", "jax-nan", "jax-momentum", "numpy-int", "jax-bool"])
def test_concrete_arrays_and_numpy_numbers_are_range_checked_too(kwargs, match):
    """Only Python numbers were checked: sgd_hd(jnp.asarray(-0.1), 0.1) was accepted."""
    args = {"learning_rate": 0.1, "hyper_lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        sgd_hd(**args)


def test_traced_arguments_are_left_to_the_caller():
    """A traced value cannot be checked: inside jit a negative one passes through unchanged, and
    concrete arrays in range are accepted."""
    rate = jax.jit(lambda lr: sgd_hd(lr, 1e-3).init({"w": jnp.zeros(2)}).learning_rate)(-0.1)
    assert float(rate) == -0.1
    state = sgd_hd(jnp.asarray(0.1), np.float32(1e-3), jnp.asarray(0.5)).init({"w": jnp.zeros(2)})
    assert float(state.learning_rate) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["learning_rate", "hyper_lr", "momentum"])
@pytest.mark.parametrize("value", [jnp.full(3, 0.01), np.full((2, 2), 0.01), [0.01, 0.02]], ids=["jax", "numpy", "list"])
def test_shaped_scalar_arguments_are_refused_at_construction(name, value):
    """A shaped hyper_lr was accepted: the scalar learning rate silently became a vector."""
    args = {"learning_rate": 0.1, "hyper_lr": 1e-3, "momentum": 0.5, name: value}
    with pytest.raises(ValueError, match=rf"sgd_hd: {name} must be a scalar, got shape \({np.shape(value)[0]},"):
        sgd_hd(**args)


def test_a_schedule_is_refused_at_init():
    with pytest.raises(ValueError, match=r"sgd_hd: learning_rate must be a scalar, got shape \(3,\)"):
        sgd_hd(jnp.ones(3), 1e-3).init({"w": jnp.zeros(2)})


# -- as the inner optimiser of an Objective --------------------------------------------------------
T = 10


def hd_optimizer(h):
    return sgd_hd(h["lr0"], h["beta"], h["momentum"])


@pytest.fixture(scope="module")
def hd_objective(logistic_minibatch_problem):
    return hg.Objective(logistic_minibatch_problem, hd_optimizer, num_steps=T)


HPARAMS = {"lr0": 0.3, "beta": 0.05, "momentum": 0.5, "weight_decay": 0.01}


def test_the_adapted_learning_rate_can_be_inspected_after_training(hd_objective, key):
    hparams = {n: jnp.asarray(v) for n, v in HPARAMS.items()}
    state = jax.jit(lambda h, k: hd_objective.run(h, k, hd_objective.problem.data))(hparams, key)
    assert isinstance(state.opt_state, SGDHDState)
    assert int(state.opt_state.count) == T
    assert float(state.opt_state.learning_rate) != HPARAMS["lr0"]


def test_reverse_hypergradient_matches_finite_differences(hd_objective, key):
    """lr0, beta and momentum enter only the optimiser, weight_decay only the loss; minibatches."""
    hparams = {n: jnp.asarray(v, jnp.float64) for n, v in HPARAMS.items()}
    value, grads = hg.hypergradient(hd_objective, hparams, key)

    def f(h):
        return float(hg.hypergradient(hd_objective, h, key)[0])  # the same compiled program

    eps = 1e-5
    for name in hparams:
        assert np.isfinite(float(grads[name])) and float(grads[name]) != 0
        step = eps * float(hparams[name])  # relative probe
        plus = dict(hparams, **{name: hparams[name] + step})
        minus = dict(hparams, **{name: hparams[name] - step})
        fd = (f(plus) - f(minus)) / (2 * step)
        np.testing.assert_allclose(float(grads[name]), fd, rtol=1e-6, err_msg=name)
    # The hyper learning rate matters: with beta = 0 the value changes.
    assert f(dict(hparams, beta=jnp.asarray(0.0))) != float(value)


def test_random_search_over_the_initial_and_hyper_learning_rates(hd_objective, key):
    space = hg.Space({"lr0": hg.LogUniform(1e-3, 1.0), "beta": hg.LogUniform(1e-4, 1.0),
                      "momentum": hg.Uniform(0.0, 0.9), "weight_decay": hg.LogUniform(1e-4, 1e-1)})
    result = hg.random_search(hd_objective, space, key, num_trials=8, chunk_size=8)
    values = [t.value for t in result.trials]
    assert len(values) == 8 and all(np.isfinite(values))
    assert len(set(values)) == 8
    best = result.best_hparams
    np.testing.assert_allclose(result.best_value,
                               hd_objective({n: jnp.asarray(v) for n, v in best.items()}, key), rtol=1e-10)


def test_a_traced_shaped_hyperparameter_is_refused_naming_it(hd_objective, key):
    """Inside a search the shape of a traced value is known: a shaped `beta` in the space was a
    TypeError from inside the traced loop ('mul got incompatible shapes') naming nothing."""
    space = hg.Space({"lr0": hg.LogUniform(1e-3, 1.0), "beta": hg.LogUniform(1e-4, 1e-1, shape=(3,)),
                      "momentum": hg.Uniform(0.0, 0.9), "weight_decay": hg.LogUniform(1e-4, 1e-1)})
    with pytest.raises(ValueError, match=r"sgd_hd: hyper_lr must be a scalar, got shape \(3,\)"):
        hg.random_search(hd_objective, space, key, num_trials=2)
