"""hypergradient: exactness (finite differences, closed form, checkpointing), compile-once, errors.

All checks run in float64 (tests/conftest.py turns it on before any problem is built).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.problems import sgd_momentum_schedule  # noqa: E402
from _helpers import sgd_scalar_momentum, sgd_schedule  # noqa: E402

T = 8  # training steps of the finite-difference problems: short, so every test stays fast


# -- finite differences --------------------------------------------------------------------------
def assert_matches_finite_differences(objective, hparams, key, *, eps=1e-5, rtol=1e-6, directions=3,
                                      elements=3, seed=0, method=hg.Reverse()):
    """Central differences of the value along random directions and single elements.

    Each probe perturbs the hyperparameters relatively, h -> h + s * v with v = h * u (so a
    learning rate of 0.1 and a penalty of 1e-3 are both moved by the same fraction s = eps), and
    compares (f(h + s v) - f(h - s v)) / 2s with <grad, v>. The error is measured against
    sum |grad * v|, the size the inner product would have without cancellation, so a probe whose
    directional derivative happens to be near zero neither fails spuriously nor passes trivially.
    """
    hparams = {name: jnp.asarray(value, jnp.float64) for name, value in hparams.items()}
    value, grads = hg.hypergradient(objective, hparams, key, method=method)
    assert jax.tree.structure(grads) == jax.tree.structure(hparams)
    for name in hparams:
        assert grads[name].shape == hparams[name].shape and grads[name].dtype == jnp.float64

    def f(h):  # the same compiled program: new values do not recompile
        return float(hg.hypergradient(objective, h, key, method=method)[0])

    np.testing.assert_allclose(f(hparams), value, rtol=1e-14)
    rng = np.random.default_rng(seed)
    zeros = {name: np.zeros(np.shape(h)) for name, h in hparams.items()}
    probes = []
    for _ in range(directions):  # every hyperparameter at once
        probes.append(("direction", {name: np.asarray(h) * rng.normal(size=np.shape(h))
                                     for name, h in hparams.items()}))
    for name, h in hparams.items():  # single elements: first, last and a few in between
        size = int(np.size(h))
        chosen = sorted({0, size - 1, *rng.choice(size, size=min(elements, size), replace=False).tolist()})
        for i in chosen:
            v = {n: z.copy() for n, z in zeros.items()}
            v[name].reshape(-1)[i] = np.asarray(h).reshape(-1)[i]
            probes.append((f"{name}[{i}]", v))
    for label, v in probes:
        plus = {n: hparams[n] + eps * v[n] for n in hparams}
        minus = {n: hparams[n] - eps * v[n] for n in hparams}
        fd = (f(plus) - f(minus)) / (2 * eps)
        ad = sum(float(np.sum(np.asarray(grads[n]) * v[n])) for n in hparams)
        scale = sum(float(np.sum(np.abs(np.asarray(grads[n]) * v[n]))) for n in hparams)
        assert scale > 0, f"{label}: the hypergradient is zero along this probe"
        assert abs(fd - ad) <= rtol * scale, f"{label}: finite difference {fd!r} vs reverse {ad!r}"
    return value, grads


CHECKPOINT_T = 10


@pytest.fixture(scope="module")
def checkpoint_case(logistic_problem):
    """Momentum state and a per-step schedule: a wrong step index at a segment boundary shows."""
    objective = hg.Objective(logistic_problem, sgd_momentum_schedule, num_steps=CHECKPOINT_T)
    d = logistic_problem.train_data[0].shape[1]
    hparams = {"lr": jnp.linspace(0.6, 0.1, CHECKPOINT_T), "momentum": jnp.asarray(0.6),
               "weight_decay": jnp.geomspace(1e-3, 1e-1, d)}
    key = jax.random.key(3)
    return objective, hparams, key, hg.hypergradient(objective, hparams, key)


def test_reverse_matches_finite_differences_on_ridge_with_shaped_hparams(ridge_problem, key):
    """A per-step learning-rate schedule (T,) and a per-feature weight decay (d,)."""
    objective = hg.Objective(ridge_problem, sgd_schedule, num_steps=T)
    d = ridge_problem.train_data[0].shape[1]
    hparams = {"lr": jnp.linspace(0.4, 0.1, T), "weight_decay": jnp.geomspace(1e-3, 1e-1, d)}
    assert_matches_finite_differences(objective, hparams, key)


def test_reverse_matches_finite_differences_on_ridge_with_scalar_lr_momentum_and_decay(ridge_problem, key):
    """Scalars only, and optax.sgd with a constant (not scheduled) learning rate."""
    objective = hg.Objective(ridge_problem, sgd_scalar_momentum, num_steps=T)
    assert_matches_finite_differences(objective, {"lr": 0.3, "momentum": 0.7, "weight_decay": 0.02}, key)


def test_reverse_matches_finite_differences_on_logistic_with_schedule_momentum_and_feature_decay(
        checkpoint_case):
    objective, hparams, key, _ = checkpoint_case
    assert_matches_finite_differences(objective, hparams, key)


def test_reverse_matches_finite_differences_on_mlp_minibatches(mlp_minibatch_problem, key):
    """The nonconvex case, on minibatches of 16: a schedule, momentum and a scalar weight decay."""
    objective = hg.Objective(mlp_minibatch_problem, sgd_momentum_schedule, num_steps=T)
    hparams = {"lr": jnp.linspace(0.5, 0.2, T), "momentum": 0.8, "weight_decay": 1e-2}
    assert_matches_finite_differences(objective, hparams, key)


# -- closed form ---------------------------------------------------------------------------------
def test_ridge_hypergradient_and_weights_match_the_closed_form(ridge_problem, key):
    """Full-batch gradient descent on ridge: w_T and d val_loss(w_T) / d (lr schedule, decay) exactly."""
    steps = 12
    objective = hg.Objective(ridge_problem, sgd_schedule, num_steps=steps)
    hparams = {"lr": jnp.linspace(0.3, 0.05, steps), "weight_decay": jnp.asarray(0.03)}

    def closed_form_val_loss(h):
        w = hg.problems.ridge_trained_weights(ridge_problem, h["lr"], h["weight_decay"], steps)
        return ridge_problem.val_loss({"w": w}, ridge_problem.val_data)

    expected_value, expected = jax.jit(jax.value_and_grad(closed_form_val_loss))(hparams)
    value, grads = hg.hypergradient(objective, hparams, key)
    np.testing.assert_allclose(value, expected_value, rtol=1e-11)
    for name in hparams:
        assert np.all(np.abs(np.asarray(expected[name])) > 0)
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-9, atol=1e-13)
    weights = jax.jit(objective.train)(hparams, key)["w"]
    closed = hg.problems.ridge_trained_weights(ridge_problem, hparams["lr"], hparams["weight_decay"], steps)
    np.testing.assert_allclose(weights, closed, rtol=1e-11, atol=1e-14)


def test_ridge_long_training_approaches_the_ridge_solution(ridge_problem, key):
    """With a per-feature decay the closed-form minimiser is w* = (X'X/n + diag(wd))^-1 X'y/n."""
    d = ridge_problem.train_data[0].shape[1]
    weight_decay = jnp.geomspace(1e-2, 1.0, d)
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=300)
    weights = jax.jit(objective.train)({"lr": 0.3, "weight_decay": weight_decay}, key)["w"]
    np.testing.assert_allclose(weights, hg.problems.ridge_solution(ridge_problem, weight_decay), rtol=1e-10)  # 1.5e-15


# -- checkpointing -------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 3, 7, CHECKPOINT_T, 25])
def test_checkpointed_reverse_equals_plain_reverse(checkpoint_case, every):
    """Every step its own segment (1); segments plus a remainder (3, 7 with T=10); one segment (10 = T, 25 > T)."""
    objective, hparams, key, (value, grads) = checkpoint_case
    value_ck, grads_ck = hg.hypergradient(objective, hparams, key, method=hg.Reverse(checkpoint_every=every))
    np.testing.assert_allclose(value_ck, value, rtol=1e-12)
    for name in hparams:
        assert np.any(np.asarray(grads[name]) != 0)
        np.testing.assert_allclose(grads_ck[name], grads[name], rtol=1e-10, atol=1e-15)


# -- compile once --------------------------------------------------------------------------------
def counted_problem(problem):
    """The problem with a train_loss that counts how often JAX traces it."""
    traces = {"count": 0}

    def train_loss(params, hparams, batch):
        traces["count"] += 1  # Python side effect: runs only while tracing
        return problem.train_loss(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), traces


def test_hypergradient_traces_and_compiles_once_for_new_values_and_keys(ridge_problem):
    problem, traces = counted_problem(ridge_problem)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    rng = np.random.default_rng(0)

    def setting(i):  # alternate Python floats, numpy and jax arrays: all the same program
        decay = [0.01 * (i + 1), np.float64(0.01 * (i + 1)), jnp.asarray(0.01 * (i + 1))][i % 3]
        return {"lr": jnp.asarray(rng.uniform(0.05, 0.4, T)), "weight_decay": decay}

    value, grads = hg.hypergradient(objective, setting(0), jax.random.key(0))
    after_first, compilations = traces["count"], _compile.stats.compilations
    assert after_first >= 1
    values = [float(value)]
    for i in range(1, 6):
        value, grads = hg.hypergradient(objective, setting(i), jax.random.key(i))
        values.append(float(value))
        assert np.all(np.isfinite(np.asarray(grads["lr"])))
    assert traces["count"] == after_first
    assert _compile.stats.compilations == compilations
    assert len(set(values)) == 6  # new values really were computed


def test_jitted_objective_traces_once_across_many_values(logistic_problem):
    problem, traces = counted_problem(logistic_problem)
    objective = jax.jit(hg.Objective(problem, sgd_scalar_momentum, num_steps=T))
    values = []
    for i in range(6):
        hparams = {"lr": jnp.asarray(0.1 + 0.1 * i), "momentum": jnp.asarray(0.1 * i),
                   "weight_decay": jnp.asarray(1e-3 * (i + 1))}
        values.append(float(objective(hparams, jax.random.key(i))))
        if i == 0:
            after_first = traces["count"]
    assert after_first >= 1 and traces["count"] == after_first
    assert len(set(values)) == 6


def test_hypergradient_works_inside_jit_and_vmap(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd_schedule, num_steps=T)
    batch = {"lr": jnp.stack([jnp.full(T, 0.1), jnp.linspace(0.3, 0.1, T), jnp.full(T, 0.25)]),
             "weight_decay": jnp.asarray([1e-3, 1e-2, 1e-1])}
    values, grads = jax.jit(jax.vmap(lambda h: hg.hypergradient(objective, h, key)))(batch)
    for i in range(3):
        value_i, grads_i = hg.hypergradient(objective, {n: v[i] for n, v in batch.items()}, key)
        np.testing.assert_allclose(values[i], value_i, rtol=1e-12)
        for name in batch:
            np.testing.assert_allclose(grads[name][i], grads_i[name], rtol=1e-10)


def test_transformed_over_a_value_the_objective_holds(ridge_problem, key):
    """vmap and grad over a value held by `with_fixed`, with concrete hparams: the objective
    closes over a tracer, so the hypergradient is traced inline (the cached compiled program took
    the closure's tracer as one more input: 'compiled for N + 1 inputs but called with N')."""
    def optimizer(h):
        return optax.sgd(lambda step: h["lr"][step] * h["lr_mult"])

    objective = hg.Objective(ridge_problem, optimizer, num_steps=T)
    hparams = {"lr": jnp.full(T, 0.1), "weight_decay": jnp.asarray(1e-2)}

    def grads_at(mult):
        return hg.hypergradient(objective.with_fixed({"lr_mult": mult}), hparams, key)[1]["weight_decay"]

    def reference(mult):  # lr_mult passed as a hyperparameter, not closed over
        return hg.hypergradient(objective, {**hparams, "lr_mult": mult}, key)[1]["weight_decay"]

    mults = jnp.asarray([0.5, 1.5])
    np.testing.assert_allclose(jax.vmap(grads_at)(mults), [reference(m) for m in mults], rtol=1e-12)
    expected = jax.grad(reference)(1.5)
    assert abs(float(expected)) > 0
    np.testing.assert_allclose(jax.grad(grads_at)(1.5), expected, rtol=1e-10)


# -- dtypes ---------------------------------------------------------------------------------------
def float32_objective():
    """Linear regression in float32 (parameters and data), SGD with momentum, minibatches of 8."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x @ rng.normal(size=4) + 0.1 * rng.normal(size=40)).astype(np.float32)

    def mse(params, batch):
        inputs, targets = batch
        return jnp.mean((inputs @ params["w"] + params["b"] - targets) ** 2)

    problem = hg.Problem(
        init=lambda k: {"w": jax.random.normal(k, (4,), jnp.float32), "b": jnp.zeros((), jnp.float32)},
        train_loss=lambda p, h, batch: mse(p, batch) + h["weight_decay"] * jnp.sum(p["w"] ** 2),
        val_loss=mse, train_data=(x[:32], y[:32]), val_data=(x[32:], y[32:]), batch_size=8)
    return hg.Objective(problem, sgd_scalar_momentum, num_steps=T)


H64 = {"lr": jnp.asarray(0.02, jnp.float64), "momentum": jnp.asarray(0.6, jnp.float64),
       "weight_decay": jnp.asarray(0.01, jnp.float64)}  # strongly typed, as space.centre() gives
H32 = {name: value.astype(jnp.float32) for name, value in H64.items()}


def test_float32_params_train_in_float32_under_float64_hparams(key):
    """Momentum's state came back promoted to float64 (a raw lax.scan carry TypeError); the loop
    keeps every carried leaf in its initial dtype, so float64 hyperparameters train a float32 model
    in float32, as float32 ones do."""
    objective = float32_objective()
    state = jax.jit(lambda h: objective.loop().train(h, key))(H64)
    assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(objective(H64, key), objective(H32, key), rtol=1e-5)


@pytest.mark.parametrize("method", [hg.Reverse(), hg.Reverse(store="states"),
                                    hg.Reverse(checkpoint_every=4, store="states"), hg.Forward()], ids=repr)
def test_float32_params_under_float64_hparams_match_float32_hparams(key, method):
    objective = float32_objective()
    value, grads = hg.hypergradient(objective, H64, key, method=method)
    value32, grads32 = hg.hypergradient(objective, H32, key, method=method)
    np.testing.assert_allclose(value, value32, rtol=1e-5)
    for name in H64:
        assert grads[name].dtype == jnp.float64 and abs(float(grads32[name])) > 0
        np.testing.assert_allclose(grads[name], grads32[name], rtol=1e-4, err_msg=name)


def sgd_schedule_momentum(hparams):
    return optax.sgd(lambda step: hparams["lr"][step], momentum=hparams["momentum"], nesterov=True)


def mixed_leaves_objective(schedule):
    """A float32 linear model beside an int32 counter and a bool mask (held constant), SGD with a
    per-step rate of `schedule` entries and traced momentum."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = (x @ rng.normal(size=3)).astype(np.float32)

    def mse(params, batch):
        inputs, targets = batch
        return jnp.mean((inputs @ (params["w"] * params["mask"]) + params["count"] - targets) ** 2)

    problem = hg.Problem(
        init=lambda k: {"w": jnp.zeros(3, jnp.float32), "count": jnp.asarray(0, jnp.int32),
                        "mask": jnp.asarray([True, False, True])},
        train_loss=lambda p, h, batch: mse(p, batch), val_loss=mse,
        train_data=(x[:16], y[:16]), val_data=(x[16:], y[16:]), batch_size=8)
    return hg.Objective(problem, sgd_schedule_momentum, num_steps=T), {
        "lr": jnp.full(schedule, 0.05, jnp.float64), "momentum": jnp.asarray(0.5, jnp.float64)}


def test_the_schedule_check_accepts_every_model_training_accepts(key):
    """The schedule-length check stepped the optimiser without the training loop's dtype handling:
    float32 parameters under float64 hyperparameters (momentum promoted to float64) and integer or
    bool leaves (handed integer gradients) crashed every method with a scan carry TypeError, though
    training them works. It now steps as the loop does: these run, and a short schedule is still
    refused."""
    objective, hparams = mixed_leaves_objective(T)
    value, grads = hg.hypergradient(objective, hparams, key)
    np.testing.assert_allclose(value, objective(hparams, key), rtol=1e-6)
    assert all(np.all(np.isfinite(g)) for g in grads.values()) and float(jnp.abs(grads["lr"]).sum()) > 0
    short, hparams = mixed_leaves_objective(T - 1)
    with pytest.raises(ValueError, match=r"indexes a hyperparameter past its end within num_steps=8"):
        hg.hypergradient(short, hparams, key)


def test_a_short_schedule_is_refused_under_jit_and_vmap_too(key):
    """Under jax.jit or jax.vmap the schedule check was skipped: the last entry of a schedule one
    step short trained two steps and its hypergradient doubled, silently. It runs on zeros of the
    traced values' shapes, unless the optimiser closes over a traced value (not checkable alone)."""
    short, hparams = mixed_leaves_objective(T - 1)
    for transform in (jax.jit, lambda f: lambda h: jax.vmap(f)(jax.tree.map(lambda a: a[None], h))):
        with pytest.raises(ValueError, match=r"indexes a hyperparameter past its end within num_steps=8"):
            transform(lambda h: hg.hypergradient(short, h, key))(hparams)
    objective, hparams = mixed_leaves_objective(T)
    np.testing.assert_allclose(jax.jit(lambda h: hg.hypergradient(objective, h, key)[0])(hparams),
                               objective(hparams, key), rtol=1e-10)

    def momentum_times(m):  # an optimiser closing over a traced value runs unchecked, as it did
        closing = hg.Objective(objective.problem, lambda h: optax.sgd(lambda t: h["lr"][t], momentum=0.5 * m),
                               num_steps=T)
        return hg.hypergradient(closing, {"lr": hparams["lr"]}, key)[0]
    np.testing.assert_allclose(jax.jit(momentum_times)(1.0), momentum_times(1.0), rtol=1e-10)


# -- errors, raised before anything compiles -----------------------------------------------------
@pytest.fixture
def ridge_objective(ridge_problem):
    """A fresh objective whose train_loss counts its traces: a refusal must come before any."""
    problem, traces = counted_problem(ridge_problem)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    yield objective
    assert traces["count"] == 0, "the bad input was only noticed after tracing the training loop"


GOOD = {"lr": jnp.full(T, 0.1), "weight_decay": jnp.asarray(1e-2)}


def assert_refused_before_compiling(match, objective, hparams, key, **kwargs):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, hparams, key, **kwargs)
    assert _compile.stats.compilations == before


def test_integer_hparam_from_a_choice_is_refused(ridge_objective, key):
    space = hg.Space({"weight_decay": hg.Choice([0, 1])})
    chosen = space.sample(key, 1)["weight_decay"][0]
    assert jnp.issubdtype(chosen.dtype, jnp.integer)
    assert_refused_before_compiling(
        r"hparams\['weight_decay'\] has dtype int\d+: a gradient method cannot differentiate a discrete "
        r"hyperparameter \(an hg.Choice\); pass a float, or search it with hg.random_search",
        ridge_objective, {"lr": GOOD["lr"], "weight_decay": chosen}, key)
    assert_refused_before_compiling(r"hparams\['lr'\] has dtype", ridge_objective,
                                    {"lr": jnp.ones(T, jnp.int32), "weight_decay": 0.1}, key)


@pytest.mark.parametrize("method", ["reverse", hg.Reverse, optax.adam(0.1), None],
                         ids=["string", "class", "optax", "none"])
def test_bad_method_object_is_refused(ridge_objective, key, method):
    assert_refused_before_compiling(r"method=.* is not a hypergradient method; pass a strategy object such "
                                    r"as hg.Reverse\(\)", ridge_objective, GOOD, key, method=method)


@pytest.mark.parametrize("bad_key,match", [
    (0, r"key=0 is an int; pass jax.random.key\(0\)"),
    (jnp.zeros(3), r"key must be a PRNG key from jax.random.key\(seed\)"),
    (jax.random.split(jax.random.key(0), 4), r"key has shape \(4,\); pass a single key"),
], ids=["int", "floats", "batch-of-keys"])
def test_bad_key_is_refused(ridge_objective, bad_key, match):
    assert_refused_before_compiling(match, ridge_objective, GOOD, bad_key)


@pytest.mark.parametrize("hparams", [[0.1, 0.01], jnp.ones(2), (("lr", 0.1),), 0.1],
                         ids=["list", "array", "tuple", "float"])
def test_non_dict_hparams_are_refused(ridge_objective, key, hparams):
    assert_refused_before_compiling(r"hparams must be a dict of name -> value", ridge_objective, hparams, key)


def test_non_objective_is_refused(ridge_problem, key):
    assert_refused_before_compiling(r"objective must be an hg.Objective, got Problem; build one with "
                                    r"hg.Objective\(problem, optimizer, num_steps\)", ridge_problem, GOOD, key)


@pytest.mark.parametrize("every", [0, -2, 2.5, True, "10"])
def test_reverse_refuses_a_bad_checkpoint_interval(every):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Reverse\(checkpoint_every=.*\) must be a positive int "
                                         r"\(try about sqrt\(num_steps\)\) or None"):
        hg.Reverse(checkpoint_every=every)
    assert _compile.stats.compilations == before


def test_reverse_is_immutable_and_hashable_by_value():
    assert hg.Reverse(checkpoint_every=4) == hg.Reverse(checkpoint_every=4)
    assert hash(hg.Reverse()) == hash(hg.Reverse())
    with pytest.raises(dataclasses.FrozenInstanceError):
        hg.Reverse().checkpoint_every = 3
