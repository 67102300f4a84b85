"""Engine state: hg.clear_caches() empties every cache, and no cache keeps an objective alive."""

import gc
import weakref

import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from hypergrad import _compile

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def _objective():
    problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)


def test_clear_caches_is_public():
    assert "clear_caches" in hg.__all__ and hg.clear_caches() is None


def test_a_call_after_clear_caches_compiles_again(key):
    objective = _objective()
    hparams = SPACE.centre()
    traces = _compile.stats.traces
    hg.hypergradient(objective, hparams, key)
    hg.random_search(objective, SPACE, key, num_trials=4)
    before = (traces["hypergradient"], traces["search"])
    hg.hypergradient(objective, hparams, key)
    hg.random_search(objective, SPACE, key, num_trials=4)
    assert (traces["hypergradient"], traces["search"]) == before  # cached: nothing traced
    hg.clear_caches()
    hg.hypergradient(objective, hparams, key)
    hg.random_search(objective, SPACE, key, num_trials=4)
    assert (traces["hypergradient"], traces["search"]) == (before[0] + 1, before[1] + 1)


def test_caches_do_not_keep_an_objective_alive(key):
    def use_and_drop():
        objective = _objective()
        hg.hypergradient(objective, SPACE.centre(), key)
        hg.random_search(objective, SPACE, key, num_trials=4)
        hg.tune(objective, SPACE, key, steps=1)
        return weakref.ref(objective), weakref.ref(objective.problem)

    objective, problem = use_and_drop()
    gc.collect()
    assert objective() is None and problem() is None


def test_the_program_cache_is_bounded(key, monkeypatch):
    monkeypatch.setattr(_compile, "MAX_ENTRIES", 2)
    objectives = [_objective() for _ in range(3)]
    for objective in objectives:
        hg.hypergradient(objective, SPACE.centre(), key)
    assert len(_compile._cache) == 2
    traces = _compile.stats.traces["hypergradient"]
    hg.hypergradient(objectives[-1], SPACE.centre(), key)  # the most recent stays
    assert _compile.stats.traces["hypergradient"] == traces
    hg.hypergradient(objectives[0], SPACE.centre(), key)  # the oldest was dropped
    assert _compile.stats.traces["hypergradient"] == traces + 1


def test_a_cached_program_computes_the_same_whichever_kind_of_number_compiled_it(key):
    """One program serves Python floats (weakly typed) and float64 arrays (strongly typed), and it
    is traced at strong types, so its numbers do not depend on which call came first: with float32
    parameters a weak float promotes to float32 and a strong float64 does not, and the cached
    program of a first weak call used to compute a later strong call in float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)

    def mse(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    def objective():
        problem = hg.Problem(init=lambda k: {"w": jnp.zeros(3, jnp.float32)}, val_loss=mse,
                             train_loss=lambda p, h, b: mse(p, b) + h["weight_decay"] * jnp.sum(p["w"] ** 2),
                             train_data=(x, y), val_data=(x, y))
        return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)

    weak = {"lr": 0.0123456789, "weight_decay": 0.0987654321}
    strong = {name: jnp.asarray(value, jnp.float64) for name, value in weak.items()}
    weak_first = objective()
    traces = _compile.stats.traces["hypergradient"]
    weak_value, _ = hg.hypergradient(weak_first, weak, key)
    value, grads = hg.hypergradient(weak_first, strong, key)
    assert _compile.stats.traces["hypergradient"] == traces + 1  # one program for both
    alone_value, alone_grads = hg.hypergradient(objective(), strong, key)
    assert float(value) == float(alone_value) == float(weak_value)
    assert float(grads["lr"]) == float(alone_grads["lr"])
