"""A hyperparameter declared but never read by the objective: found in the traced program
(`hypergrad._jaxprs.unread_inputs`) and named in a warning by every strategy that traces it."""

import warnings

import jax
import jax.numpy as jnp
import optax
import pytest

import hypergrad as hg
from hypergrad._jaxprs import unread_inputs

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.0, 0.9)})


def _inputs(fn, *args):
    return unread_inputs(jax.make_jaxpr(fn)(*args))


def test_unread_inputs_looks_into_jit_and_loops_and_counts_any_other_use_as_a_read():
    h, xs = {"a": 1.0, "b": 2.0, "c": 3.0}, jnp.ones(3)

    def through_jit_and_scan(h, xs):  # 'a' in a jit given the whole dict, 'b' in a loop, 'c' passed in but ignored
        a = jax.jit(lambda h: h["a"] * 2)(h)
        return jax.lax.scan(lambda c, x: (c + h["b"] * x, None), 0.0, xs)[0] + a
    assert _inputs(through_jit_and_scan, h, xs) == [2]

    def read_by_a_cond_branch(h, xs):  # cond reads what it takes; 'b' is never taken
        return h["a"] + jax.lax.cond(xs[0] > 0, lambda: h["c"], lambda: 1.0)
    assert _inputs(read_by_a_cond_branch, h, xs) == [1]
    assert _inputs(lambda h, xs: h["c"], h, xs) == [0, 1, 3]  # an output counts as read
    assert _inputs(lambda h, xs: h["a"] * 0.0 + h["b"] + h["c"] + xs.sum(), h, xs) == []  # used, even if it adds 0


@pytest.fixture(scope="module")
def ignores_momentum(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=4)


@pytest.fixture(scope="module")
def reads_both(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)


CALLS = {
    "tune": lambda objective, key: hg.tune(objective, SPACE, key, steps=1),
    "population": lambda objective, key: hg.tune(objective, SPACE, key, population=2, steps=1),
    "hypergradient": lambda objective, key: hg.hypergradient(objective, SPACE.centre(), key),
    "random_search": lambda objective, key: hg.random_search(objective, SPACE, key, num_trials=3),
    "grid_search": lambda objective, key: hg.grid_search(objective, SPACE, key, points_per_axis=2),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_strategy_names_a_hyperparameter_the_objective_never_reads(call, ignores_momentum, reads_both):
    # the space declared momentum, the optimizer never read it: random search reported a "best" momentum and
    # tune descended a coordinate whose hypergradient is exactly 0, without a word
    hg.clear_caches()
    key = jax.random.key(0)
    with pytest.warns(UserWarning, match=r"never reads hyperparameter\(s\) 'momentum'") as caught:
        CALLS[call](ignores_momentum, key)
    assert all(w.filename == __file__ for w in caught if "never reads" in str(w.message))  # the user's line
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*never reads")
        CALLS[call](reads_both, key)
