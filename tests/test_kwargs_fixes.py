"""Keyword arguments that did something other than they said (hunt KWARGS, F6).

F6: `tune`'s `chunk_size` above the population computed, and charged, padding rows no tuner could
ever fill (a lone tuner at chunk_size=4 charged four hypergradients a step); it is now cut to the
population, so the charge, like the trials, does not depend on that memory setting.
"""

import numpy as np
import optax
import pytest

import hypergrad as hg

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.0, 0.9)})


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)


def test_a_chunk_size_above_a_lone_tuner_charges_what_no_chunk_size_does(objective, key):
    """Old: chunk_size=4 charged 4 hypergradients a step for one tuner (4x the runs), same trials."""
    plain = hg.tune(objective, SPACE, key, steps=2)
    chunked = hg.tune(objective, SPACE, key, steps=2, chunk_size=4)
    assert chunked.info["chunk_size"] == 1
    assert chunked.runs == pytest.approx(plain.runs, rel=1e-12)
    np.testing.assert_allclose([t.value for t in chunked.trials], [t.value for t in plain.trials], rtol=1e-10)


def test_a_chunk_size_above_the_population_charges_what_a_chunk_of_the_population_does(objective, key):
    """population=4 at chunk_size=8 ran 8 rows a step (charged 2x chunk_size=4's runs); the
    padding of halving (2 live tuners in a chunk of 4) is still charged, as the docstring says."""
    args = dict(steps=2, population=4, halving=1)
    four = hg.tune(objective, SPACE, key, chunk_size=4, **args)
    eight = hg.tune(objective, SPACE, key, chunk_size=8, **args)
    assert eight.info["chunk_size"] == four.info["chunk_size"] == 4
    assert eight.runs == pytest.approx(four.runs, rel=1e-12)
    assert [t.tuner for t in eight.trials] == [t.tuner for t in four.trials]
    np.testing.assert_allclose([t.value for t in eight.trials], [t.value for t in four.trials], rtol=1e-10)
    # 4, then 2, then 1 live tuners, each step one call of 4 rows: the padding after halving is
    # charged, spread over the live tuners (a step-0 trial 1 row, a step-1 trial 2, the last 4)
    flops = [t.flops for t in four.trials]
    np.testing.assert_allclose(flops, flops[0] * np.asarray([1, 1, 1, 1, 2, 2, 4]), rtol=1e-9)
