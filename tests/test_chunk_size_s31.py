"""`hypergrad compare --chunk-size` bounds the trials per vmapped call of every search the command
runs, tune's random warm-up included (it ran at the library's default 64 whatever --chunk-size
said), and the planner charges the warm-up the rows it then computes; `tune(warmup_chunk_size=)`
is how it reaches the warm-up without touching the tuners' chunk."""

import argparse
import sys

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import cli

SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
PLAN = {"tune_steps": 1, "population": 2, "warmup": 10, "halving": None, "random_trials": 4,
        "grid_points_per_axis": 2}


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def _warmup_chunks(monkeypatch):
    """The chunk of every warm-up search tune runs, as it ran (`Result.info["chunk_size"]`)."""
    tune_module, seen = sys.modules["hypergrad.tune"], []
    evaluate = tune_module.evaluate_settings

    def spied(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        seen.append(result.info["chunk_size"])
        return result
    monkeypatch.setattr(tune_module, "evaluate_settings", spied)
    return seen


def test_compare_chunk_size_bounds_tunes_warmup_and_its_charge(objective, monkeypatch):
    # --chunk-size 4: random and grid ran 4 trials per call, tune's 10 warm-up trials one call of 10
    seen = _warmup_chunks(monkeypatch)
    devices = jax.local_device_count()
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=4), objective, SPACE,
                                  jax.random.key(0), hg.Reverse(), PLAN, None, None)
    assert seen and max(seen) <= max(4, devices), seen
    assert seen == [cli._chunk(PLAN["warmup"], 4, devices)]
    warm = results["hypergradient"].trials[:PLAN["warmup"]]
    # what the planner charges the warm-up is what it computed, padding included (12 rows, not 10)
    assert sum(t.runs for t in warm) == pytest.approx(cli._rows_run(PLAN["warmup"], 4, devices))


def test_compare_default_chunk_size_leaves_tune_as_it_was(objective, monkeypatch):
    # the default --chunk-size (64, the library's DEFAULT_CHUNK) runs the warm-up as tune given no chunk does
    seen = _warmup_chunks(monkeypatch)
    key = jax.random.key(0)
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=64), objective, SPACE, key,
                                  hg.Reverse(), PLAN, None, None)
    hg.clear_caches()  # as the command does before tune: FLOPs are counted from the same programs
    plain = hg.tune(objective, SPACE, key, method=hg.Reverse(), outer=optax.adam(0.05), steps=1, population=2,
                    warmup=10, halving=None)
    assert seen[0] == seen[1]
    ours = results["hypergradient"]
    assert [t.value for t in ours.trials] == [t.value for t in plain.trials]
    for a, b in zip(ours.trials, plain.trials):
        for name in a.hparams:
            np.testing.assert_array_equal(np.asarray(a.hparams[name]), np.asarray(b.hparams[name]))
    assert [t.flops for t in ours.trials] == [t.flops for t in plain.trials]


def test_compare_plan_charges_the_warmup_in_chunk_size_chunks(monkeypatch):
    captured = {}

    def plan(budget, step_runs, trial_runs, axes, rows, warmup_rows):
        captured["rows"], captured["warmup_rows"] = rows, warmup_rows
        return None
    monkeypatch.setattr(cli, "_budget_plan", plan)
    args = argparse.Namespace(budget=300.0, steps=2, seed=0, checkpoint_every=None, chunk_size=4)
    with pytest.raises(SystemExit):
        cli._planned(args, "breast-cancer-logistic")
    devices = jax.local_device_count()
    for n in (10, 75):
        assert captured["warmup_rows"](n) == captured["rows"](n) == cli._rows_run(n, 4, devices)


def test_tune_warmup_chunk_size(objective, monkeypatch):
    seen = _warmup_chunks(monkeypatch)
    key = jax.random.key(0)
    bounded = hg.tune(objective, SPACE, key, steps=1, population=2, warmup=10, warmup_chunk_size=4)
    assert seen == [4]
    assert bounded.info["chunk_size"] == hg.tune(objective, SPACE, key, steps=1, population=2,
                                                 warmup=10).info["chunk_size"]  # the tuners' chunk unchanged
    # the warm-up's values do not depend on its chunk beyond XLA's last bits
    plain = hg.tune(objective, SPACE, key, steps=1, population=2, warmup=10)
    np.testing.assert_allclose([t.value for t in bounded.trials[:10]], [t.value for t in plain.trials[:10]],
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    ({"warmup": 10, "warmup_chunk_size": 0}, "warmup_chunk_size=0 must be an int >= 1"),
    ({"warmup": 10, "warmup_chunk_size": 2.5}, "warmup_chunk_size=2.5 must be an int >= 1"),
    ({"warmup": 10, "warmup_chunk_size": True}, "warmup_chunk_size=True must be an int >= 1"),
    ({"warmup_chunk_size": 4}, "warmup_chunk_size=4 is read only with warmup="),
])
def test_tune_refuses_a_bad_warmup_chunk_size(objective, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        hg.tune(objective, SPACE, jax.random.key(0), steps=1, population=2, **kwargs)
