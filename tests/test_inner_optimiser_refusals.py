"""Inner optimisers (`Objective(optimizer=...)`) that cannot take a traced hyperparameter, or need
more than a training step gives them, are refused with the library's words (hunt O2, findings 1, 2).

- Tuning the peak of `optax.warmup_cosine_decay_schedule` (also `sgdr_schedule`,
  `exponential_decay(decay_rate=h)`, the same inside `inject_hyperparams`) failed with JAX's bare
  TracerBoolConversionError: optax tests the value in Python. Now a ValueError names the
  hyperparameter, the optax function and the workaround (scale a unit schedule), which matches
  finite differences.
- `optax.lookahead`, `optax.contrib.sophia` and `optax.contrib.dpsgd` as the inner optimiser failed
  with optax's raw errors, while `tune(outer=)` rewords the same failures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile

T = 6
HPARAMS = {"lr": 0.05, "weight_decay": 0.01}


def warmup_cosine(h):
    return optax.sgd(optax.schedules.warmup_cosine_decay_schedule(0.0, h["lr"], 2, T))


def sgdr(h):
    return optax.sgd(optax.schedules.sgdr_schedule([dict(init_value=0.0, peak_value=h["lr"], warmup_steps=1,
                                                         decay_steps=3)] * 2))


def exponential_rate(h):
    return optax.sgd(optax.schedules.exponential_decay(0.05, 1, h["lr"]))


def injected_warmup_cosine(h):
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax.schedules.warmup_cosine_decay_schedule(0.0, h["lr"], 2, T))


@pytest.mark.parametrize("optimizer, called", [(warmup_cosine, "warmup_cosine_decay_schedule"),
                                               (sgdr, "sgdr_schedule"),
                                               (exponential_rate, "exponential_decay"),
                                               (injected_warmup_cosine, "warmup_cosine_decay_schedule")])
def test_a_schedule_that_tests_its_hyperparameter_in_python_is_refused_naming_it(ridge_problem, key, optimizer,
                                                                                  called):
    objective = hg.Objective(ridge_problem, optimizer, num_steps=T)
    compilations = _compile.stats.compilations
    for run in (lambda: objective(HPARAMS, key), lambda: hg.hypergradient(objective, HPARAMS, key)):
        with pytest.raises(ValueError, match=rf"Objective\(optimizer=\.\.\.\): optax's {called} tests "
                                             r"hparams\['lr'\] in Python \('.*==.*'.*cannot be a hyperparameter.*"
                                             r"h\['lr'\] \* optax\.schedules\.warmup_cosine_decay_schedule"
                                             r"\(0\.0, 1\.0, W, T\)\(s\)") as caught:
            run()
        assert isinstance(caught.value.__cause__, jax.errors.TracerBoolConversionError)
    assert _compile.stats.compilations == compilations  # refused at the trace, before compiling


def test_a_schedule_built_at_update_time_is_refused_the_same_way(ridge_problem, key):
    """The same schedule built inside the learning-rate function, so optax builds it during the
    training step, not with the optimiser: it got JAX's bare TracerBoolConversionError, pointing at
    hypergrad's scan (hunt RV)."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(
        lambda s: optax.schedules.warmup_cosine_decay_schedule(0.0, h["lr"], 2, T)(s)), num_steps=T)
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Objective\(optimizer=\.\.\.\): optax's warmup_cosine_decay_schedule "
                                         r"tests .* in Python .*cannot be a hyperparameter") as caught:
        hg.hypergradient(objective, HPARAMS, key)
    assert isinstance(caught.value.__cause__, jax.errors.TracerBoolConversionError)
    assert _compile.stats.compilations == compilations  # refused at the trace, before compiling


def test_the_unit_schedule_workaround_matches_finite_differences(ridge_problem, key):
    """The refusal's advice: the tuned peak times a unit warm-up/cosine schedule is differentiable."""
    unit = optax.schedules.warmup_cosine_decay_schedule(0.0, 1.0, 2, T)
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(lambda s: h["lr"] * unit(s)), num_steps=T)
    _, grads = hg.hypergradient(objective, HPARAMS, key)
    eps = 1e-6
    up, down = (float(objective({**HPARAMS, "lr": HPARAMS["lr"] + d}, key)) for d in (eps, -eps))
    np.testing.assert_allclose(float(grads["lr"]), (up - down) / (2 * eps), rtol=1e-6)
    assert abs(float(grads["lr"])) > 1e-3  # the peak moves the loss: the check can fail


def test_a_python_branch_in_the_users_own_function_keeps_jax_words(ridge_problem, key):
    """Only a test inside optax is reworded: the user's own `if` is JAX's error at the user's line."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(0.1 if h["lr"] > 0 else 0.2), num_steps=T)
    with pytest.raises(jax.errors.TracerBoolConversionError):
        objective(HPARAMS, key)


@pytest.mark.parametrize("optimizer, cause, says", [
    (lambda h: optax.lookahead(optax.sgd(h["lr"]), 3, 0.5), AttributeError,
     r"'fast'.*LookaheadParams.*plain pytree.*optimiser it wraps alone"),
    (lambda h: optax.contrib.sophia(h["lr"]), ValueError, r"obj_fn=.*sophia.*optax\.adam\(lr\)"),
    (lambda h: optax.contrib.dpsgd(h["lr"], 1.0, 0.1, 0), ValueError,
     r"per-example gradients.*dpsgd.*clip_by_global_norm"),
], ids=["lookahead", "sophia", "dpsgd"])
@pytest.mark.filterwarnings("ignore:.*seed.*deprecated:DeprecationWarning")  # dpsgd's seed, as optax documents
def test_an_optimiser_a_training_step_cannot_drive_is_refused_naming_the_argument(logistic_problem, key, optimizer,
                                                                                  cause, says):
    """Softmax regression's params {W: (4, 3), b: (3,)}: no common leading axis for dpsgd to clip along."""
    objective = hg.Objective(logistic_problem, optimizer, num_steps=T)
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Objective\(optimizer=\.\.\.\): this optimiser's update failed in a "
                                         rf"training step .*{says}") as caught:
        objective(HPARAMS, key)
    assert type(caught.value.__cause__) is cause
    assert _compile.stats.compilations == compilations


def failing_update(error):
    def update(updates, state, params=None):
        raise error
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@pytest.mark.parametrize("error", [ValueError("grads need a batch dimension"), ValueError("obj_fn missing"),
                                   AttributeError("'dict' object has no attribute 'fast'")])
def test_other_errors_of_an_update_are_left_as_raised(ridge_problem, key, error):
    """Only optax's own errors (and an attribute read off the params pytree itself) are reworded."""
    objective = hg.Objective(ridge_problem, lambda h: failing_update(error), num_steps=T)
    with pytest.raises(type(error)) as caught:
        objective(HPARAMS, key)
    assert caught.value is error


def test_reading_an_attribute_off_the_params_is_reworded_for_any_optimiser(ridge_problem, key):
    """The lookahead rule is structural: an update reading an attribute the params pytree lacks."""
    def update(updates, state, params=None):
        return jax.tree.map(jnp.zeros_like, params.slow), state
    objective = hg.Objective(ridge_problem, lambda h: optax.GradientTransformation(
        lambda params: optax.EmptyState(), update), num_steps=T)
    with pytest.raises(ValueError, match=r"Objective\(optimizer=\.\.\.\).*attribute 'slow'"):
        objective(HPARAMS, key)
