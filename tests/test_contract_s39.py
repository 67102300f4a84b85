"""Contract hunt, session 39: a short schedule passed to a direct call of the objective or to
tune_step_cost is refused as the strategies refuse it (finding 1; one held with with_fixed beside
scalar hyperparameters alone is a known gap, see check_schedules_in_bounds), an
integer training loss gets the Problem(train_loss=...) message (finding 3), and tune records each
trial's hyperparameters in the space's order, as the searches do (finding 4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

T = 5
SHORT = jnp.asarray([0.05, 0.05, 0.2])  # 3 entries for T=5 steps: JAX would clamp steps 3 and 4
PAST_END = "indexes a hyperparameter past its end within num_steps=5"


def _problem(train_loss=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3))
    y = X @ np.array([1.0, -2.0, 0.5])

    def mse(p, b):
        return jnp.mean((b[0] @ p - b[1]) ** 2)

    return hg.Problem(init=lambda k: jnp.zeros(3),
                      train_loss=train_loss or (lambda p, h, b: mse(p, b) + h["wd"] * jnp.sum(p ** 2)),
                      val_loss=mse, train_data=(X, y), val_data=(X[:8], y[:8]))


def _schedule_objective():
    return hg.Objective(_problem(), lambda h: optax.sgd(lambda s: h["lr"][s]), num_steps=T)


WD = hg.Space({"wd": hg.LogUniform(1e-3, 1e-1)})


def test_a_held_schedule_of_num_steps_entries_runs_and_a_short_passed_one_is_refused_by_the_plain_call():
    objective, key = _schedule_objective(), jax.random.key(0)
    full = jnp.asarray([0.05, 0.05, 0.2, 0.2, 0.2])
    held = objective.with_fixed({"lr": full})
    value, grads = hg.hypergradient(held, {"wd": jnp.asarray(0.01)}, key)
    assert float(value) == pytest.approx(float(objective({"lr": full, "wd": jnp.asarray(0.01)}, key)), rel=1e-12)
    assert np.isfinite(float(grads["wd"]))
    with pytest.raises(ValueError, match=PAST_END):
        objective({"lr": SHORT, "wd": jnp.asarray(0.01)}, key)


def test_a_held_traced_schedule_under_vmap_still_runs():
    objective, key = _schedule_objective(), jax.random.key(0)
    schedules = jnp.stack([jnp.full(T, 0.05), jnp.full(T, 0.1)])
    values = jax.vmap(lambda lr: objective.with_fixed({"lr": lr})({"wd": jnp.asarray(0.01)}, key))(schedules)
    assert np.all(np.isfinite(np.asarray(values)))


def test_tune_step_cost_refuses_a_short_schedule_as_tune_does():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.1, shape=(3,)), "wd": hg.LogUniform(1e-4, 1e-1)})
    with pytest.raises(ValueError, match=PAST_END):
        hg.tune_step_cost(_schedule_objective(), space, jax.random.key(0))


@pytest.mark.parametrize("loss", [lambda p, h, b: jnp.sum((b[0] @ p) * h["wd"] > b[1]),
                                  lambda p, h, b: (b[0] @ p * h["wd"] > b[1]).any()])
def test_an_integer_or_boolean_training_loss_names_the_problem_argument(loss):
    objective = hg.Objective(_problem(loss), lambda h: optax.sgd(0.1), num_steps=T)
    h, key = {"wd": jnp.asarray(0.1)}, jax.random.key(0)
    for run in (lambda: objective(h, key), lambda: hg.hypergradient(objective, h, key)):
        with pytest.raises(ValueError, match=r"Problem\(train_loss=\.\.\.\) returned dtype (int|bool).*floating-point"):
            run()


def test_an_integer_validation_loss_still_scores_in_a_search():
    problem = _problem()
    counted = hg.Problem(init=problem.init, train_loss=problem.train_loss, train_data=problem.data["train"],
                         val_data=problem.data["val"], val_loss=lambda p, b: jnp.sum(b[0] @ p > b[1]))
    objective = hg.Objective(counted, lambda h: optax.sgd(0.1), num_steps=T)
    result = hg.random_search(objective, WD, jax.random.key(0), num_trials=2)
    assert np.isfinite(result.best_value)


@pytest.mark.parametrize("population", [1, 2])
def test_tune_records_hyperparameters_in_the_space_order(population):
    objective = hg.Objective(_problem(lambda p, h, b: jnp.mean((b[0] @ p - b[1]) ** 2)
                                      + (h["wd"] + h["awd"]) * jnp.sum(p ** 2)),
                             lambda h: optax.sgd(h["lr"]), num_steps=T)
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1e-1), "wd": hg.LogUniform(1e-3, 1e-1),
                      "awd": hg.LogUniform(1e-3, 1e-1)})
    result = hg.tune(objective, space, jax.random.key(0), steps=2, population=population,
                     **({"warmup": 2} if population > 1 else {}))
    assert all(list(trial.hparams) == ["lr", "wd", "awd"] for trial in result.trials)
    assert list(result.best_hparams) == ["lr", "wd", "awd"]
    held = hg.tune(objective, space, jax.random.key(0), steps=1, hold=["wd"])
    assert all(list(trial.hparams) == ["lr", "wd", "awd"] for trial in held.trials)
