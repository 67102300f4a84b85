"""tune's starts and its record of the chunk (session 38, pop_hunt findings 2-4). float64 (tests/conftest.py).

- The method was checked at the first tuner's start only: a population whose other tuners started where
  `hg.Reversible` refuses (a momentum below 2^-8) computed NaN there, a 'fail' trial with value NaN where the
  objective is finite, and a random restart; after a warm-up, the call refused or recorded such NaN failures
  depending on whether the single best warm-up trial happened to be refused. Every distinct given or sampled
  start is now checked before anything compiles (as hybrid_search checks each configuration), and the tuners
  start from the best warm-up trials the method accepts, with a warning naming those it refused.
- `info["chunk_size"]` was the chunk of the last halving round, not the call's; the argument is now
  `info["chunk_size_given"]`.
- A NaN start was refused as "outside or on the bounds".
"""

import importlib
import json
import re
import warnings

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import outer as outer_driver

tune_module = importlib.import_module("hypergrad.tune")  # hg.tune, the attribute, is the function

FLOOR = 2.0 ** -8  # the least momentum Reversible(info_bits=8) reverses
LOW_MOMENTUM = hg.Space({"lr": hg.LogUniform(1e-2, 2.0), "momentum": hg.Uniform(0.0, 0.008)})  # centre accepted


@pytest.fixture(scope="module")
def momentum_objective():
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)


@pytest.fixture(scope="module")
def ridge():
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)


RIDGE_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_info_chunk_size_is_the_calls_not_the_last_halving_rounds(ridge):
    r = hg.tune(ridge, RIDGE_SPACE, jax.random.key(0), population=2, chunk_size="live", halving=1, steps=1)
    assert r.info["chunk_size"] == outer_driver.chunk_rows(2, None) == 2  # the first step's; was 1, the last round's
    assert r.info["chunk_size_given"] == "live"
    assert json.loads(json.dumps(r.info["chunk_size_given"])) == "live"


@pytest.mark.parametrize("hold", [None, ("lr",)])
def test_a_nan_start_is_not_a_finite_number(ridge, hold):
    init = {"lr": np.asarray([np.nan, 0.02]), "weight_decay": np.asarray([0.01, 0.02])}
    with pytest.raises(ValueError, match=r"init\['lr'\]\[0\]=nan is not a finite number"):
        hg.tune(ridge, RIDGE_SPACE, jax.random.key(0), population=2, init=init, steps=1, hold=hold)
