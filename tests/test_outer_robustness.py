"""The outer step's robustness (`hypergrad.outer`, hunt I): what keys its program and an optimiser
that cannot step a space's z. float64 throughout (tests/conftest.py).

- An outer optimiser that reads the loss (`value=`) was keyed with the loss traced as the constant
  0.0, so `-c * value * g` folded to 0 for every `c`: two such optimisers shared the first one's
  program, and the second silently ran the first's update.
- `optax.lookahead` failed with optax's own AttributeError, which does not name `outer=`.
"""

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad import outer as outer_driver

WIDE = hg.Space({"lr": hg.LogUniform(1e-3, 1e3)})


def loss_scaled_sgd(c):
    """A Polyak-like outer step, -c * loss * gradient: it folds its constant with value= in Python."""
    def update(updates, state, params=None, *, value):
        return jax.tree.map(lambda g: -c * value * g, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def z_of(space, trial):
    tuned = {name: trial.hparams[name] for name in space.names}  # a hybrid trial also holds its choices
    return {name: np.asarray(v) for name, v in space.unconstrain(tuned).items()}


def first_moves(space, trials):
    """Per tuner, how far each coordinate moved in its first outer step."""
    tuners = sorted({t.tuner for t in trials})
    moves = {}
    for tuner in tuners:
        ours = [t for t in trials if t.tuner == tuner]
        before, after = z_of(space, ours[0]), z_of(space, ours[1])
        moves[tuner] = {n: float(after[n] - before[n]) for n in space.names}
    return moves


@pytest.fixture(scope="module")
def ridge_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=8)


def test_value_reading_outer_optimisers_differing_in_a_constant_get_their_own_programs(ridge_objective, key):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    z = {name: np.zeros(()) for name in space.names}
    keys = [outer_driver.update_key(loss_scaled_sgd(c), z, optax.EmptyState()) for c in (10.0, 10.0, 1000.0)]
    assert keys[0] == keys[1] and keys[0] != keys[2]  # made apart, equal: one key; another constant: its own
    small = hg.tune(ridge_objective, space, key, steps=1, outer=loss_scaled_sgd(10.0))
    large = hg.tune(ridge_objective, space, key, steps=1, outer=loss_scaled_sgd(1000.0))
    # the same start, loss and gradient: the move is c * loss * gradient, 100 times larger
    for name in space.names:
        assert first_moves(space, large.trials)[0][name] == pytest.approx(
            100 * first_moves(space, small.trials)[0][name], rel=1e-9)
    compilations = _compile.stats.compilations
    again = hg.tune(ridge_objective, space, key, steps=1, outer=loss_scaled_sgd(10.0))
    assert _compile.stats.compilations == compilations  # equal optimisers made apart share their program
    assert [t.value for t in again.trials] == [t.value for t in small.trials]


def test_hybrid_search_keys_a_value_reading_outer_optimiser_by_its_constant(ridge_problem, key):
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"] * h["mult"]), num_steps=8)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "mult": hg.Choice([0.5, 1.0])})
    budget = 2 * 3 * hg.tune_step_cost(objective.with_fixed({"mult": 1.0}), hg.Space({"lr": space["lr"]}), key)
    small = hg.hybrid_search(objective, space, key, budget=budget, outer=loss_scaled_sgd(10.0))
    large = hg.hybrid_search(objective, space, key, budget=budget, outer=loss_scaled_sgd(1000.0))
    lr_space = hg.Space({"lr": space["lr"]})
    small_moves, large_moves = first_moves(lr_space, small.trials), first_moves(lr_space, large.trials)
    assert len(small_moves) == 2
    for tuner, move in small_moves.items():
        assert move["lr"] != 0.0
        assert large_moves[tuner]["lr"] == pytest.approx(100 * move["lr"], rel=1e-9)


def test_lookahead_is_refused_naming_outer_before_anything_compiles(ridge_objective, key):
    compilations = _compile.stats.compilations
    outer = optax.lookahead(optax.adam(0.05), sync_period=5, slow_step_size=0.5)
    with pytest.raises(ValueError, match=r"outer=: .*LookaheadParams.*optax\.adam\(0\.05\)") as caught:
        hg.tune(ridge_objective, WIDE, key, steps=2, outer=outer)
    assert isinstance(caught.value.__cause__, AttributeError)
    assert _compile.stats.compilations == compilations
