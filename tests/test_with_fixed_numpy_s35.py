"""Objective.with_fixed / Problem.with_fixed holding numpy arrays that a traced value indexes.

A numpy schedule read as `h["lr"][step]` (step traced inside the training scan) or numpy per-example
weights read at a minibatch's indices failed with JAX's TracerArrayConversionError; `held_values`
holds them as device arrays, so they read as a tuned hyperparameter does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from hypergrad.problem import held_values

T = 6


def schedule_objective():
    problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"]), num_steps=T)


def test_numpy_schedule_indexed_by_the_traced_step():
    objective, key = schedule_objective(), jax.random.key(0)
    schedule = np.linspace(0.02, 0.08, T)
    momentum = {"momentum": jnp.asarray(0.5)}
    expected = objective({"lr": jnp.asarray(schedule), **momentum}, key)
    held = objective.with_fixed({"lr": schedule})
    assert float(held(momentum, key)) == float(expected)
    # and its hypergradient with respect to what is left equals the full one's entry
    _, full = hg.hypergradient(objective, {"lr": jnp.asarray(schedule), **momentum}, key)
    _, part = hg.hypergradient(held, momentum, key)
    np.testing.assert_allclose(part["momentum"], full["momentum"], rtol=1e-12)


def test_numpy_example_weights_read_at_minibatch_indices():
    problem = hg.problems.noisy_mlp_classifier("iris", hidden=(4,), batch_size=16)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=4)
    key, weights = jax.random.key(1), np.linspace(0.5, 1.5, len(problem.train_data[0]))
    rest = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(1e-3)}
    expected = objective({"example_weight": jnp.asarray(weights), **rest}, key)
    assert float(objective.with_fixed({"example_weight": weights})(rest, key)) == float(expected)
    assert float(hg.Objective(problem.with_fixed({"example_weight": weights}), lambda h: optax.sgd(h["lr"]),
                              num_steps=4)(rest, key)) == float(expected)


def test_held_values_keeps_scalars_and_traced_values_as_they_are():
    scalar, number = np.int64(3), 2
    held = held_values({"layers": scalar, "n": number, "zero_d": np.asarray(0.5), "v": np.ones(3)})
    assert held["layers"] is scalar and held["n"] is number  # concrete: a structural choice's int()
    assert isinstance(held["zero_d"], np.ndarray)  # nothing indexes a 0-d array
    assert isinstance(held["v"], jax.Array) and held["v"].shape == (3,)
    traced = jax.jit(lambda x: held_values({"x": x})["x"] * 2)(jnp.ones(2))
    np.testing.assert_array_equal(traced, 2 * np.ones(2))
