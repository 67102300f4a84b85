"""Hyperparameters whose size the built-in problems fix: a per-group schedule of `group_sgd`
(groups, T) and `noisy_mlp_classifier`'s example weights (n_train,). JAX clamps an out-of-bounds
index to the last entry, so a wrong size would silently share the last entry (and pile the
hypergradients of the missing entries onto it): each is refused, naming the hyperparameter and the
shape needed, before anything compiles. float64 throughout (tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad._indexing import check_objective_runs

T = 4


@pytest.fixture(scope="module")
def iris():
    return hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=30)


def _group_objective(problem):
    groups = hg.problems.layer_groups(problem.init(jax.random.key(0)))
    return hg.Objective(problem, hg.problems.group_sgd(groups), T), len(groups)


def _refused_before_compiling(objective, hparams, match):
    """hg.hypergradient, hg.random_search and hg.tune all refuse `hparams`, compiling nothing."""
    key = jax.random.key(0)
    space = hg.Space({name: hg.Uniform(0.01, 1.0, shape=np.shape(value)) for name, value in hparams.items()})
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, hparams, key)
    with pytest.raises(ValueError, match=match):
        hg.random_search(objective, space, key, num_trials=2)
    with pytest.raises(ValueError, match=match):
        hg.tune(objective, space, key, steps=2, init=hparams)
    assert _compile.stats.compilations == before


def test_a_per_group_schedule_shorter_than_the_run_is_refused_before_compiling(iris):
    objective, groups = _group_objective(iris)
    _refused_before_compiling(objective, {"lr": jnp.full((groups, T - 1), 0.05)},
                              rf"past its end within num_steps={T}.*shape \({groups}, {T - 1}\).*"
                              rf"hparams\['lr'\] has shape \({groups}, {T - 1}\) and is read along axis 1 once per "
                              rf"step: give it num_steps={T} entries there, shape \({groups}, {T}\)")


def test_a_per_group_schedule_of_the_run_s_length_passes_the_checks(iris):
    objective, groups = _group_objective(iris)
    check_objective_runs(objective, {"lr": jnp.full((groups, T), 0.05)})  # no error


@pytest.mark.parametrize("transposed", [True, False])
def test_a_per_group_schedule_with_the_wrong_rows_names_the_shape_given(iris, transposed):
    objective, groups = _group_objective(iris)
    shape = (T, groups) if transposed else (groups + 1, T)
    hint = r" \(transpose it\)" if transposed else r"(?! \(transpose)"
    _refused_before_compiling(objective, {"lr": jnp.full(shape, 0.05)},
                              rf"hparams\['lr'\] has shape \({shape[0]}, {shape[1]}\); a schedule per group has one "
                              rf"row per parameter group .* shape \({groups}, num_steps\){hint}")


@pytest.fixture(scope="module")
def noisy():
    return hg.problems.noisy_mlp_classifier("iris", 0.2, hidden=(4,), batch_size=30)


@pytest.mark.parametrize("shape_of", [lambda n, n_val: (), lambda n, n_val: (n - 1,), lambda n, n_val: (n + 1,),
                                      lambda n, n_val: (n_val,), lambda n, n_val: (n, 1)],
                         ids=["scalar", "one short", "one over", "validation size", "column"])
def test_example_weights_of_another_length_are_refused_before_compiling(noisy, shape_of):
    n = noisy.num_train
    shape = shape_of(n, len(noisy.val_data[1]))
    objective = hg.Objective(noisy, lambda h: optax.sgd(h["lr"]), T)
    hparams = {"lr": jnp.asarray(0.1), "example_weight": jnp.full(shape, 0.5)}
    given = str(shape).replace("(", r"\(").replace(")", r"\)")
    _refused_before_compiling(objective, hparams, rf"hparams\['example_weight'\] has shape {given}; give one "
                                                  rf"weight per training example, shape \({n},\)")


def test_example_weights_one_per_training_example_pass_the_checks(noisy):
    objective = hg.Objective(noisy, lambda h: optax.sgd(h["lr"]), T)
    check_objective_runs(objective, {"lr": jnp.asarray(0.1), "example_weight": jnp.full((noisy.num_train,), 0.5)})
