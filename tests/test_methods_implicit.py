"""Implicit: the implicit-function-theorem hypergradient at the end of training.

Three layers, in float64 (tests/conftest.py): the closed form of ridge regression (the derivative of
the ridge solution w*(weight_decay)); agreement with exact reverse mode once full-batch training has
converged (ridge and logistic); CG against Neumann. Then refusals (hyperparameters the optimiser
or only the initialisation reads), field validation, the dependency analysis behind them, and use
inside `hg.tune`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.implicit import Implicit, hparams_read_by

CONVERGED_T = 150  # full-batch gradient descent steps: the gradient norm is below 1e-10 by then
CG = Implicit(solver="cg", maxiter=50, tol=1e-13)
NEUMANN = Implicit(solver="neumann", num_terms=300, alpha=0.5)


def constant_sgd(lr):
    """An optimiser whose learning rate is fixed, not a hyperparameter: Implicit cannot see it."""
    return lambda hparams: optax.sgd(lr)


@pytest.fixture(scope="module")
def ridge_objective(ridge_problem):
    # Hessian eigenvalues of X'X/n + weight_decay lie in [0.36, 1.7 + weight_decay]: lr 0.5 converges.
    return hg.Objective(ridge_problem, constant_sgd(0.5), num_steps=CONVERGED_T)


@pytest.fixture(scope="module")
def logistic_objective(logistic_problem):
    return hg.Objective(logistic_problem, constant_sgd(1.0), num_steps=CONVERGED_T)


def num_features(problem):
    return problem.train_data[0].shape[1]


def decay(kind, problem):
    """A scalar weight decay, or one per feature (shape (d,)), large enough for strong convexity."""
    return jnp.asarray(0.1) if kind == "scalar" else jnp.geomspace(0.05, 0.5, num_features(problem))


def relative_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# -- closed form ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["scalar", "per-feature"])
def test_ridge_implicit_equals_the_derivative_of_the_ridge_solution(ridge_problem, ridge_objective, key, kind):
    """d/d weight_decay of val_loss(w*(weight_decay)), with w* = (X'X/n + diag(wd))^-1 X'y/n exactly."""
    hparams = {"weight_decay": decay(kind, ridge_problem)}

    def closed_form(weight_decay):
        w = hg.problems.ridge_solution(ridge_problem, weight_decay)
        return ridge_problem.val_loss({"w": w}, ridge_problem.val_data)

    expected_value, expected = jax.value_and_grad(closed_form)(hparams["weight_decay"])
    value, grads = hg.hypergradient(ridge_objective, hparams, key, method=CG)
    assert grads["weight_decay"].shape == hparams["weight_decay"].shape
    assert grads["weight_decay"].dtype == jnp.float64
    assert np.all(np.abs(np.asarray(expected)) > 1e-4)  # no component passes by being zero
    np.testing.assert_allclose(value, expected_value, rtol=1e-10)
    np.testing.assert_allclose(grads["weight_decay"], expected, rtol=1e-9)  # measured 1.3e-15
    # The value is the objective's own: the same trained parameters, the same validation loss.
    np.testing.assert_allclose(value, ridge_objective(hparams, key), rtol=1e-14)


# -- agreement with reverse mode once converged ----------------------------------------------------
@pytest.mark.parametrize("problem_name", ["ridge", "logistic"])
def test_implicit_matches_reverse_once_training_has_converged(request, key, problem_name):
    """Per-feature weight decay (the scalar case is the closed-form test above)."""
    objective = request.getfixturevalue(f"{problem_name}_objective")
    hparams = {"weight_decay": decay("per-feature", objective.problem)}
    params = objective.train(hparams, key)
    stationarity = optax.tree.norm(jax.grad(objective.problem.train_loss)(params, hparams,
                                                                            objective.problem.train_data))
    assert stationarity < 1e-9  # the premise of the implicit function theorem holds
    value_rev, grads_rev = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    for method in (CG, NEUMANN):
        value, grads = hg.hypergradient(objective, hparams, key, method=method)
        np.testing.assert_allclose(value, value_rev, rtol=1e-12)
        # measured at most 8.7e-16 (CG and Neumann, ridge and logistic): converged, the theorem is exact
        assert relative_error(grads["weight_decay"], grads_rev["weight_decay"]) < 1e-9, method


def test_implicit_is_biased_before_convergence_and_ignores_the_path(ridge_problem, key):
    """After 3 steps w is far from stationary: Reverse and Implicit disagree. Implicit reads only the
    end point, so two learning rates that reach the same fixed point give the same hypergradient."""
    hparams = {"weight_decay": jnp.asarray(0.1)}
    short = hg.Objective(ridge_problem, constant_sgd(0.5), num_steps=3)
    _, rev = hg.hypergradient(short, hparams, key, method=hg.Reverse())
    _, imp = hg.hypergradient(short, hparams, key, method=CG)
    assert relative_error(imp["weight_decay"], rev["weight_decay"]) > 0.1
    slow = hg.Objective(ridge_problem, constant_sgd(0.3), num_steps=2 * CONVERGED_T)
    fast = hg.Objective(ridge_problem, constant_sgd(0.9), num_steps=CONVERGED_T)
    _, grads_slow = hg.hypergradient(slow, hparams, key, method=CG)
    _, grads_fast = hg.hypergradient(fast, hparams, key, method=CG)
    np.testing.assert_allclose(grads_slow["weight_decay"], grads_fast["weight_decay"], rtol=1e-9)  # measured 3.7e-15


# -- the two solvers -------------------------------------------------------------------------------
def test_cg_and_neumann_agree_and_neumann_truncation_is_a_bias(logistic_objective, key):
    hparams = {"weight_decay": decay("per-feature", logistic_objective.problem)}
    _, cg = hg.hypergradient(logistic_objective, hparams, key, method=CG)
    _, neumann = hg.hypergradient(logistic_objective, hparams, key, method=NEUMANN)
    np.testing.assert_allclose(neumann["weight_decay"], cg["weight_decay"], rtol=1e-9)  # measured 8.8e-16
    # Few terms truncate the series visibly; damping biases CG: both are stated biases.
    _, few = hg.hypergradient(logistic_objective, hparams, key,
                              method=Implicit(solver="neumann", num_terms=2, alpha=0.5))
    _, damped = hg.hypergradient(logistic_objective, hparams, key, method=dataclasses.replace(CG, damping=1.0))
    assert relative_error(few["weight_decay"], cg["weight_decay"]) > 1e-2
    assert relative_error(damped["weight_decay"], cg["weight_decay"]) > 1e-2


def test_implicit_works_inside_jit_and_vmap(ridge_objective, key):
    batch = {"weight_decay": jnp.asarray([0.05, 0.1, 0.4])}
    values, grads = jax.jit(jax.vmap(lambda h: hg.hypergradient(ridge_objective, h, key, method=CG)))(batch)
    for i in range(3):
        value_i, grads_i = hg.hypergradient(ridge_objective, {"weight_decay": batch["weight_decay"][i]}, key,
                                            method=CG)
        np.testing.assert_allclose(values[i], value_i, rtol=1e-12)
        np.testing.assert_allclose(grads["weight_decay"][i], grads_i["weight_decay"], rtol=1e-10)  # measured 1.9e-15


# -- refusals --------------------------------------------------------------------------------------
def assert_refused_before_compiling(match, objective, hparams, key, method):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, hparams, key, method=method)
    assert _compile.stats.compilations == before


@pytest.mark.parametrize("name, other", [("lr", "momentum"), ("momentum", "lr")])
def test_hyperparameters_of_the_optimizer_are_refused(ridge_problem, key, name, other):
    """Every hyperparameter the optimiser reads is named at once, in the caller's order, with the
    hold= that fixes them all (it named the first only, so following its advice failed again)."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=5)
    hparams = {"weight_decay": 0.1, "lr": 0.1, "momentum": 0.5}
    hparams = {name: hparams.pop(name), **hparams}
    for method in (CG, NEUMANN):
        assert_refused_before_compiling(
            rf"Implicit differentiates hyperparameters of the training loss only; '{name}' and '{other}' are read "
            rf"by the optimizer; use hg.Reverse\(\) or hg.Forward\(\) for them.*"
            rf"with_fixed\(\{{'{name}': value, '{other}': value\}}\).*'{name}' and '{other}' among hold=",
            objective, {"weight_decay": 0.1, name: hparams[name], other: hparams[other]}, key, method)


def test_a_per_step_schedule_and_a_decay_applied_by_the_optimizer_are_refused(ridge_problem, key):
    schedule = hg.Objective(ridge_problem, lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=5)
    assert_refused_before_compiling(r"'lr' is read by the optimizer", schedule,
                                    {"lr": jnp.full(5, 0.1), "weight_decay": 0.1}, key, CG)
    # optax.adamw-style decay: the fixed point of training is no longer a stationary point of the loss.
    decoupled = hg.Objective(
        ridge_problem, lambda h: optax.chain(optax.add_decayed_weights(h["weight_decay"]), optax.sgd(0.1)),
        num_steps=5)
    assert_refused_before_compiling(r"'weight_decay' is read by the optimizer \(it enters the training loss "
                                    r"too", decoupled, {"weight_decay": 0.1}, key, CG)


def test_tune_refuses_the_learning_rate_before_compiling(ridge_problem, key):
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-3, 1.0)})
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"'lr' is read by the optimizer"):
        hg.tune(objective, space, key, method=CG, steps=2)
    assert _compile.stats.compilations == before


def init_scaled_ridge(ridge_problem, val_reads_scale=False):
    """Ridge regression whose initial weights are `init_scale` times a normal draw (the model reads
    hparams): `init_scale` moves where training starts, and with it where unconverged training ends."""
    def mse(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    return hg.Problem(
        init=lambda k, h: {"w": h["init_scale"] * jax.random.normal(k, (num_features(ridge_problem),))},
        train_loss=lambda p, h, b: mse(p, b) + h["weight_decay"] * jnp.sum(p["w"] ** 2),
        val_loss=lambda p, h, b: mse(p, b) * (h["init_scale"] if val_reads_scale else 1.0),
        train_data=ridge_problem.train_data, val_data=ridge_problem.val_data, model_reads_hparams=True)


@pytest.mark.parametrize("val_reads_scale", [False, True])
def test_hyperparameters_read_by_the_initialisation_are_refused(ridge_problem, key, val_reads_scale):
    # Implicit trained init_scale under stop_gradient and returned dV/d init_scale = 0 as if exact,
    # while reverse mode through the 5 unconverged steps finds a nonzero derivative.
    objective = hg.Objective(init_scaled_ridge(ridge_problem, val_reads_scale), constant_sgd(0.1), num_steps=5)
    hparams = {"weight_decay": jnp.asarray(0.1), "init_scale": jnp.asarray(0.5)}
    assert hg.hypergradient(objective, hparams, key, method=hg.Reverse())[1]["init_scale"] != 0
    for method in (CG, NEUMANN):
        assert_refused_before_compiling(
            r"Implicit differentiates hyperparameters of the training loss only; 'init_scale' is read by the "
            r"initialisation \(Problem\(init=...\)\).*use hg.Reverse\(\) or hg.Forward\(\)",
            objective, hparams, key, method)


def test_a_hyperparameter_of_the_loss_that_the_initialisation_also_reads_is_differentiated(ridge_problem, key):
    """Tied to the training loss, it moves the stationarity condition, which Implicit sees; what it
    ignores, the start of training, is the path bias its docstring states. At convergence of a
    convex problem that path does not matter: Implicit equals reverse mode."""
    def mse(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    problem = hg.Problem(
        init=lambda k, h: {"w": h["weight_decay"] * jax.random.normal(k, (num_features(ridge_problem),))},
        train_loss=lambda p, h, b: mse(p, b) + h["weight_decay"] * jnp.sum(p["w"] ** 2),
        val_loss=lambda p, h, b: mse(p, b),
        train_data=ridge_problem.train_data, val_data=ridge_problem.val_data, model_reads_hparams=True)
    objective = hg.Objective(problem, constant_sgd(0.5), num_steps=CONVERGED_T)
    hparams = {"weight_decay": jnp.asarray(0.1)}
    _, implicit = hg.hypergradient(objective, hparams, key, method=CG)
    _, reverse = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    assert relative_error(implicit["weight_decay"], reverse["weight_decay"]) < 1e-8


def test_tune_refuses_an_initialisation_scale_before_compiling(ridge_problem, key):
    objective = hg.Objective(init_scaled_ridge(ridge_problem), constant_sgd(0.1), num_steps=5)
    space = hg.Space({"weight_decay": hg.LogUniform(1e-3, 1.0), "init_scale": hg.LogUniform(1e-2, 1.0)})
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"'init_scale' is read by the initialisation"):
        hg.tune(objective, space, key, method=CG, steps=2)
    assert _compile.stats.compilations == before


def test_a_hyperparameter_read_by_nothing_gets_its_exact_gradient_zero(ridge_objective, key):
    hparams = {"weight_decay": jnp.asarray(0.1), "unused": jnp.ones(3)}
    _, grads = hg.hypergradient(ridge_objective, hparams, key, method=CG)
    np.testing.assert_array_equal(grads["unused"], np.zeros(3))
    assert grads["weight_decay"] != 0


def test_hparams_read_by_follows_data_dependence_through_calls():
    @jax.custom_jvp
    def smooth(x):
        return jnp.log1p(jnp.exp(x))

    smooth.defjvp(lambda primals, tangents: (smooth(primals[0]), jax.nn.sigmoid(primals[0]) * tangents[0]))

    @jax.jit
    def inner(a, b):
        return a * 2.0, jnp.sin(b)

    def fn(h, x):
        first, _ = inner(h["a"] * x, h["b"])  # h["b"] reaches an output of inner that is dropped
        return {"out": smooth(first) + 0.0 * jnp.shape(h["c"])[0], "int": x.shape[0]}

    h = {"a": jnp.ones(()), "b": jnp.ones(()), "c": jnp.ones(4)}
    assert hparams_read_by(fn, h, jnp.ones(3)) == {"a"}
    assert hparams_read_by(lambda h, x: h["b"] * x + h["c"][0], h, jnp.ones(())) == {"b", "c"}


# -- fields ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"solver": "lbfgs"}, r"Implicit\(solver='lbfgs'\) must be 'cg' .* or 'neumann'"),
    ({"maxiter": 0}, r"Implicit\(maxiter=0\) must be an int >= 1"),
    ({"maxiter": 10.0}, r"Implicit\(maxiter=10.0\) must be an int >= 1"),
    ({"tol": -1e-6}, r"Implicit\(tol=-1e-06\) must be a finite number >= 0"),
    ({"num_terms": True}, r"Implicit\(num_terms=True\) must be an int >= 1"),
    ({"alpha": 0.0}, r"Implicit\(alpha=0.0\) must be a finite number > 0; the Neumann series converges"),
    ({"damping": float("nan")}, r"Implicit\(damping=nan\) must be a finite number >= 0"),
    ({"unroll": 1}, r"Implicit\(unroll=1\) must be True or False"),
], ids=["solver", "maxiter", "maxiter-float", "tol", "num_terms", "alpha", "damping", "unroll"])
def test_bad_fields_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Implicit(**kwargs)


@pytest.mark.parametrize("kwargs,field,other", [
    ({"solver": "neumann", "maxiter": 5}, "maxiter=5", "cg"),
    ({"solver": "neumann", "tol": 1e-3}, "tol=0.001", "cg"),
    ({"solver": "cg", "num_terms": 20}, "num_terms=20", "neumann"),
    ({"alpha": 0.2}, "alpha=0.2", "neumann"),  # the default solver is CG
])
def test_a_field_the_solver_does_not_read_is_refused(kwargs, field, other):
    """It used to be accepted and silently ignored (Neumann ran its default 100 terms)."""
    before = _compile.stats.compilations
    solver = kwargs.get("solver", "cg")
    with pytest.raises(ValueError, match=rf"Implicit\(solver='{solver}'\) does not read {field}, a field of "
                                         rf"solver='{other}' .*leave it out, or use solver='{other}'"):
        Implicit(**kwargs)
    assert _compile.stats.compilations == before


def test_each_solver_gets_its_defaults_and_leaves_the_others_unset():
    assert (Implicit().maxiter, Implicit().tol, Implicit().num_terms, Implicit().alpha) == (100, 1e-6, None, None)
    neumann = Implicit(solver="neumann")
    assert (neumann.maxiter, neumann.tol, neumann.num_terms, neumann.alpha) == (None, None, 100, 0.1)
    assert Implicit() == Implicit(maxiter=100, tol=1e-6) and hash(Implicit()) == hash(Implicit(maxiter=100))
    assert dataclasses.replace(CG, maxiter=2).maxiter == 2  # replace keeps the unset fields unset


def test_implicit_is_immutable_and_hashable_by_value():
    assert Implicit(solver="neumann", alpha=0.3) == Implicit(solver="neumann", alpha=0.3)
    assert hash(Implicit()) == hash(Implicit())
    assert Implicit() != Implicit(damping=1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Implicit().maxiter = 3


# -- the outer loop --------------------------------------------------------------------------------
def test_tune_lowers_the_logistic_validation_loss_and_charges_the_solve(logistic_problem, key):
    objective = hg.Objective(logistic_problem, constant_sgd(0.3), num_steps=100)
    space = hg.Space({"weight_decay": hg.LogUniform(1e-3, 3.0)})
    method = Implicit(solver="cg", maxiter=10, tol=1e-10)
    # Too weak a penalty: it overfits (validation loss 1.15; about 0.98 near weight_decay 0.3).
    result = hg.tune(objective, space, key, method=method, outer=optax.adam(0.5), steps=6,
                     init={"weight_decay": 0.01})
    start = result.trials[0]
    assert all(trial.state == "complete" for trial in result.trials)
    assert result.best_trial.number > 0
    assert result.best_value < start.value - 0.08
    assert result.best_hparams["weight_decay"] > 0.01
    # Compute accounting counts every solver product (CG is charged its maxiter bound).
    assert hg.tune_step_cost(objective, space, key, method=method) \
        > hg.tune_step_cost(objective, space, key, method=dataclasses.replace(method, maxiter=2))


def held_leaf_problems(leaf):
    """Linear regression twice: with `leaf` (an integer or boolean scale, which training holds constant)
    among the params, and with the same scale closed over by the losses instead."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    data = dict(train_data=(x[:20], y[:20]), val_data=(x[20:], y[20:]))

    def mse(w, scale, batch):
        return jnp.mean((batch[0] @ (w * scale) - batch[1]) ** 2)

    def penalty(w, h):
        return h["weight_decay"] * jnp.sum(w ** 2)

    held = hg.Problem(init=lambda k: {"w": jnp.zeros(3), "scale": leaf},
                      train_loss=lambda p, h, b: mse(p["w"], p["scale"], b) + penalty(p["w"], h),
                      val_loss=lambda p, b: mse(p["w"], p["scale"], b), **data)
    closed = hg.Problem(init=lambda k: {"w": jnp.zeros(3)},
                        train_loss=lambda p, h, b: mse(p["w"], leaf, b) + penalty(p["w"], h),
                        val_loss=lambda p, b: mse(p["w"], leaf, b), **data)
    return held, closed


@pytest.mark.parametrize("leaf", [jnp.asarray(2, jnp.int32), jnp.asarray([True, False, True])], ids=["int32", "bool"])
def test_integer_and_boolean_parameters_are_held_as_training_holds_them(key, leaf):
    """Training holds an integer or boolean params leaf constant; Implicit solves the stationarity in
    the floating-point leaves, as if the leaf were a constant the losses close over (it refused such
    a leaf before). Equal to that problem's hypergradient, and to exact reverse mode once converged."""
    held, closed = held_leaf_problems(leaf)
    hparams = {"weight_decay": jnp.asarray(0.1)}
    results = {}
    for name, problem in (("held", held), ("closed", closed)):
        objective = hg.Objective(problem, constant_sgd(0.05), num_steps=2000)
        results[name] = {method: hg.hypergradient(objective, hparams, key, method=m)
                         for method, m in (("implicit", CG), ("reverse", hg.Reverse()))}
    (value, grads), (closed_value, closed_grads) = results["held"]["implicit"], results["closed"]["implicit"]
    assert np.isfinite(float(grads["weight_decay"])) and float(grads["weight_decay"]) != 0.0
    np.testing.assert_allclose(value, closed_value, rtol=1e-12)
    np.testing.assert_allclose(grads["weight_decay"], closed_grads["weight_decay"], rtol=1e-12)
    np.testing.assert_allclose(grads["weight_decay"], results["held"]["reverse"][1]["weight_decay"], rtol=1e-6)


def test_an_optimiser_reading_only_a_held_leaf_is_not_refused(key):
    """An optimiser update that reads a parameter's value is refused (training may stop where the
    gradient is not 0), but not one that reads only a held leaf, whose update training drops."""
    held, closed = held_leaf_problems(jnp.asarray(2, jnp.int32))
    decays_scale = optax.masked(optax.add_decayed_weights(0.5), {"w": False, "scale": True})
    objective = hg.Objective(held, lambda h: optax.chain(decays_scale, optax.sgd(0.05)), num_steps=300)
    plain = hg.Objective(held, constant_sgd(0.05), num_steps=300)
    hparams = {"weight_decay": jnp.asarray(0.1)}
    np.testing.assert_allclose(hg.hypergradient(objective, hparams, key, method=CG)[1]["weight_decay"],
                               hg.hypergradient(plain, hparams, key, method=CG)[1]["weight_decay"], rtol=1e-12)
    decays_w = optax.masked(optax.add_decayed_weights(0.5), {"w": True, "scale": False})
    reads_w = hg.Objective(held, lambda h: optax.chain(decays_w, optax.sgd(0.05)), num_steps=300)
    with pytest.raises(ValueError, match="Implicit"):
        hg.hypergradient(reads_w, hparams, key, method=CG)


def test_an_optimiser_that_takes_extra_arguments_is_checked_as_training_calls_it(ridge_problem, key):
    # Implicit's check called opt.update(g, state, params) without value=, so an optimiser that reads
    # it (reduce_on_plateau, which every training step is given) crashed with a TypeError. (Its patience
    # outlasts training, so training converges as plain SGD does and the closed form holds.)
    objective = hg.Objective(
        ridge_problem, lambda h: optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(patience=10**6)),
        num_steps=CONVERGED_T)
    hparams = {"weight_decay": decay("scalar", ridge_problem)}

    def closed_form(weight_decay):
        w = hg.problems.ridge_solution(ridge_problem, weight_decay)
        return ridge_problem.val_loss({"w": w}, ridge_problem.val_data)

    _, grads = hg.hypergradient(objective, hparams, key, method=CG)
    np.testing.assert_allclose(grads["weight_decay"], jax.grad(closed_form)(hparams["weight_decay"]), rtol=1e-9)
