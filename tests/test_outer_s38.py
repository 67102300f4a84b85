"""The outer step at a hypergradient that is finite but too large for the outer optimiser (session 38,
pop_hunt finding 1). float64 throughout (tests/conftest.py).

At a finite hypergradient whose square overflows, Adam's second moment (polyak_sgd's squared norm) turned
inf and every later update was m / inf = 0: the step counted as good, so the tuner stayed at that point for
the rest of the call, every step a 'complete' trial with grad_norm inf, each charged a hypergradient. Such a
step (a non-finite norm, or an outer-optimiser state the step made non-finite) is now skipped and backed off
like a non-finite hypergradient, with its own warning.
"""

import warnings

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import outer as outer_driver

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e3), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def ridge():
    problem = hg.problems.ridge("synthetic", num_examples=40, num_features=3)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=60)


def test_a_hypergradient_whose_square_overflows_does_not_freeze_the_tuner(ridge):
    # at lr=75.28 the loss is finite (1e243) and so is the hypergradient, but its square is not
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = hg.tune(ridge, SPACE, jax.random.key(0), init={"lr": 75.28, "weight_decay": 0.1}, steps=5,
                    outer=optax.adam(0.2))
    assert r.trials[0].state == "skipped" and np.isfinite(r.trials[0].value)
    assert not np.isfinite(r.trials[0].grad_norm)
    assert len({float(t.hparams["lr"]) for t in r.trials}) > 1  # it moved (was: the same lr at every step)
    assert all(np.isfinite(t.grad_norm) for t in r.trials if t.state == "complete")
    texts = [str(w.message) for w in caught]
    assert any("too large for the outer optimiser" in t for t in texts)
    assert not any("eps_root" in t for t in texts)  # not the NaN-square-root advice, wrong here


def _overflowing_state_outer(lr=0.1):
    """SGD whose state (a finite scalar at init and after the first step) overflows at the second step,
    while its update stays finite."""
    def init(params):
        return {"s": np.float64(0.0)}

    def update(updates, state, params=None):
        return jax.tree.map(lambda g: -lr * g, updates), {"s": state["s"] * 1e300 + 1e300}

    return optax.GradientTransformation(init, update)


def test_a_step_that_makes_the_outer_state_non_finite_is_skipped_and_backs_off(ridge):
    start = {"lr": 0.05, "weight_decay": 0.1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = hg.tune(ridge, SPACE, jax.random.key(0), init=start, steps=3, outer=_overflowing_state_outer())
    assert [t.state for t in r.trials[:3]] == ["complete", "skipped", "skipped"]
    z = [{n: float(v) for n, v in SPACE.unconstrain(t.hparams).items()} for t in r.trials[:3]]
    for name in SPACE.names:  # backed off halfway towards the last good iterate, the first step's
        np.testing.assert_allclose(z[2][name], 0.5 * (z[1][name] + z[0][name]), rtol=1e-12)
    assert any("too large for the outer optimiser" in str(w.message) for w in caught)


def test_reduce_on_plateau_starting_at_an_infinite_best_value_still_steps(ridge):
    # its state starts non-finite (best_value = inf): that is not a state the step made non-finite
    outer = optax.chain(optax.adam(0.1), optax.contrib.reduce_on_plateau(patience=1))
    r = hg.tune(ridge, SPACE, jax.random.key(0), init={"lr": 0.05, "weight_decay": 0.1}, steps=3, outer=outer)
    assert all(t.state == "complete" for t in r.trials)
    assert len({float(t.hparams["lr"]) for t in r.trials}) == len(r.trials)


def test_newly_non_finite_compares_each_element_with_the_old_state():
    old = {"a": np.array([np.inf, 1.0]), "n": np.int32(3)}
    assert not bool(outer_driver.newly_non_finite(old, {"a": np.array([np.inf, 2.0]), "n": np.int32(4)}))
    assert bool(outer_driver.newly_non_finite(old, {"a": np.array([1.0, np.inf]), "n": np.int32(4)}))
    assert bool(outer_driver.newly_non_finite(old, {"a": np.array([np.nan, np.nan]), "n": np.int32(4)})) is True
    assert not bool(outer_driver.newly_non_finite(optax.EmptyState(), optax.EmptyState()))
