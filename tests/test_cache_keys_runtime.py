"""In-process program caches after a change at run time: a JAX setting changed with
`jax.config.update` gets programs of its own (`hypergrad._compile.signature` keys
`trace_settings()`), and `hg.clear_caches()` also drops an objective's own `jax.jit` programs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from hypergrad import _compile

from _helpers import linear_data, mse


def _data(dtype):
    return linear_data(dtype, 32)


def _random_objective():
    """Random initialisation and minibatches: every draw depends on jax_threefry_partitionable."""
    X, y = _data(np.float64)
    problem = hg.Problem(init=lambda k: jax.random.normal(k, (4,)), train_loss=lambda p, h, b: mse(p, b),
                         val_loss=mse, train_data=(X, y), val_data=(X, y), batch_size=8)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_trace_settings_name_the_settings_that_change_a_trace():
    settings = dict(zip(_compile.TRACE_SETTINGS, _compile.trace_settings()))
    for name in ("jax_enable_x64", "jax_threefry_partitionable", "jax_default_prng_impl",
                 "jax_numpy_dtype_promotion", "jax_numpy_rank_promotion", "jax_default_matmul_precision"):
        assert settings[name] == getattr(jax.config, name)


def test_hypergradient_after_flipping_threefry_draws_as_objective_does():
    # the second call reused the first setting's program, so its random draws, while objective() followed the new one
    objective, hparams, key = _random_objective(), {"lr": jnp.asarray(0.01)}, jax.random.key(0)
    start = jax.config.jax_threefry_partitionable
    first = float(hg.hypergradient(objective, hparams, key)[0])
    try:
        jax.config.update("jax_threefry_partitionable", not start)
        flipped = float(hg.hypergradient(objective, hparams, key)[0])
        assert flipped == float(objective(hparams, key))
        assert flipped != first
    finally:
        jax.config.update("jax_threefry_partitionable", start)
    assert float(hg.hypergradient(objective, hparams, key)[0]) == first  # each setting's program, cached


def test_random_search_after_flipping_threefry_computes_what_a_fresh_start_does():
    objective, key = _random_objective(), jax.random.key(1)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1)})
    start = jax.config.jax_threefry_partitionable
    before = hg.random_search(objective, space, key, num_trials=2).to_dict()
    try:
        jax.config.update("jax_threefry_partitionable", not start)
        after = hg.random_search(objective, space, key, num_trials=2).to_dict()
        hg.clear_caches()  # as a new process under the new setting
        fresh = hg.random_search(objective, space, key, num_trials=2).to_dict()
    finally:
        jax.config.update("jax_threefry_partitionable", start)

    def values(result):
        return [trial["value"] for trial in result["trials"]]

    assert values(after) == values(fresh)
    assert values(after) != values(before)


def test_hypergradient_after_turning_x64_on_computes_in_float64():
    # float32 hyperparameters key the same argument types with x64 off or on: the float32 program was reused
    hparams, key = {"lr": np.float32(0.01)}, jax.random.key(0)
    try:
        jax.config.update("jax_enable_x64", False)
        X, y = _data(np.float32)
        problem = hg.Problem(init=lambda k: jnp.zeros(4),  # the default float: float32, or float64 under x64
                             train_loss=lambda p, h, b: mse(p, b), val_loss=mse,
                             train_data=(X, y), val_data=(X, y))
        objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
        assert hg.hypergradient(objective, hparams, key)[0].dtype == jnp.float32
        jax.config.update("jax_enable_x64", True)
        value = hg.hypergradient(objective, hparams, key)[0]
        assert value.dtype == jnp.float64
        assert float(value) == float(objective(hparams, key))
    finally:
        jax.config.update("jax_enable_x64", True)  # the suite's setting (conftest)


_SETTING = {"l2": 0.0}


def test_clear_caches_drops_the_objectives_own_programs():
    # objective() kept its jax.jit program (and the l2 it had read) after hg.clear_caches(), while hypergradient
    # traced anew: the two public paths gave different numbers for one objective
    X, y = _data(np.float64)

    def loss(p, b):
        return mse(p, b) + _SETTING["l2"] * jnp.sum(p ** 2)

    problem = hg.Problem(init=lambda k: jnp.ones(4), train_loss=lambda p, h, b: loss(p, b), val_loss=loss,
                         train_data=(X, y), val_data=(X, y))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    hparams, key = {"lr": jnp.asarray(0.01)}, jax.random.key(0)
    try:
        before = float(objective(hparams, key))
        _SETTING["l2"] = 10.0
        hg.clear_caches()
        after = float(objective(hparams, key))
        assert after == float(hg.hypergradient(objective, hparams, key)[0])
        assert after != before
    finally:
        _SETTING["l2"] = 0.0
