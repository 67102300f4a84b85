"""Engine state: hg.clear_caches() empties every cache, and no cache keeps an objective alive."""

import gc
import weakref

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
