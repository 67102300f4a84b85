"""The outer step's robustness (`hypergrad.outer`, hunt I): what keys its program, what a restart or a
back-off does to the outer optimiser's state, a non-finite outer update, and an optimiser that cannot
step a space's z. float64 throughout (tests/conftest.py).

- An outer optimiser that reads the loss (`value=`) was keyed with the loss traced as the constant
  0.0, so `-c * value * g` folded to 0 for every `c`: two such optimisers shared the first one's
  program, and the second silently ran the first's update.
- Restarts and back-offs kept the optimiser's state; a schedule-free optimiser keeps a copy of the
  iterate there and jumped back beside the point that failed.
- A finite hypergradient with a non-finite update (adam with eps=0 on a zero gradient) was applied,
  and the iterate stayed NaN for good.
- `optax.lookahead` failed with optax's own AttributeError, which does not name `outer=`.
"""

import warnings

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad import outer as outer_driver
from _helpers import Stop, stop_after

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


def test_a_restart_starts_a_schedule_free_outer_optimiser_afresh_at_the_draw(ridge_problem, key):
    """The start (lr=500) diverges; the restart draw trains. Schedule-free keeps the iterate in
    its state, so with the start's state its next step landed beside lr=500 and failed again. Now
    the tuner goes on from the draw exactly as a tuner started there does."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=100)
    outer = optax.contrib.schedule_free_adamw(0.05)
    with pytest.warns(RuntimeWarning, match="started where"):
        restarted = hg.tune(objective, WIDE, key, steps=4, outer=outer, init={"lr": 500.0})
    assert restarted.trials[0].state == "fail"
    assert [t.state for t in restarted.trials[1:]] == ["complete"] * 4
    fresh = hg.tune(objective, WIDE, key, steps=3, outer=outer, init=restarted.trials[1].hparams)
    np.testing.assert_allclose([t.value for t in restarted.trials[1:]], [t.value for t in fresh.trials], rtol=1e-9)
    np.testing.assert_allclose([float(t.hparams["lr"]) for t in restarted.trials[1:]],
                               [float(t.hparams["lr"]) for t in fresh.trials], rtol=1e-9)


def test_after_a_back_off_a_schedule_free_tuner_steps_from_the_backed_off_point(ridge_problem, key):
    """The third step (lr far too large) diverges and the tuner backs off halfway to its last good
    iterate. Schedule-free SGD (constant rate r) steps from a state that holds its iterate y by
    y - r * g * ((1 - b1) + b1 * c) with c <= 1: at most r * |g| at the backed-off point. With the
    state of the failed step it jumped back towards the failure (by about 1 in z, and failed)."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=100)
    rate = 50.0
    result = hg.tune(objective, WIDE, key, steps=5, outer=optax.contrib.schedule_free_sgd(rate, b1=0.9),
                     init={"lr": 0.05})
    states = [t.state for t in result.trials]
    assert states[:4] == ["complete", "complete", "fail", "complete"]
    z = [float(z_of(WIDE, t)["lr"]) for t in result.trials]
    assert z[3] == pytest.approx(0.5 * (z[2] + z[1]), rel=1e-9)  # backed off halfway to the last good iterate
    assert abs(z[4] - z[3]) <= rate * result.trials[3].grad_norm * (1 + 1e-9) + 1e-12
    assert states[4] == "complete"


def test_a_back_off_reinitialises_only_the_state_the_init_derives_from_the_iterate():
    z = {"a": np.array([1.0, -2.0]), "b": np.array(3.0)}
    backed_off = {"a": np.array([0.5, 0.25]), "b": np.array(-1.0)}
    adam = optax.adam(0.1)
    assert not any(outer_driver.iterate_leaves(adam, z))
    state = adam.update(z, adam.init(z), z)[1]  # moments and count moved on from the init
    assert outer_driver.backed_off_state(adam, state, backed_off) is state  # kept whole: nothing traced anew
    free = optax.contrib.schedule_free_sgd(1.0, b1=0.9)
    state = free.update(z, free.init(z), z)[1]
    kept = outer_driver.backed_off_state(free, state, backed_off)
    for name in z:
        np.testing.assert_array_equal(kept.z[name], backed_off[name])  # its copy of the iterate follows z
    assert int(kept.step_count) == int(state.step_count) and float(kept.weight_sum) == float(state.weight_sum)


def test_a_non_finite_outer_update_is_skipped_and_never_kept(ridge_problem, key):
    """One ridge step from w0=0: d loss / d weight_decay is exactly 0, so adam with eps=0 divides
    0 by 0. The iterate used to become NaN for the rest of the call; now the step is skipped
    (named outer=), and no iterate, trial or best setting is NaN."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=1)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hg.tune(objective, space, key, steps=3, outer=optax.adam(0.1, eps=0.0), population=2)
    messages = [str(w.message) for w in caught]
    assert any("outer optimiser's update was not" in m and "outer=" in m for m in messages), messages
    assert {t.state for t in result.trials[:-2]} == {"skipped"}
    for trial in result.trials:
        assert all(np.all(np.isfinite(v)) for v in trial.hparams.values()), trial
        assert np.isfinite(trial.value)
    assert all(np.all(np.isfinite(v)) for v in result.best_hparams.values())


def test_lookahead_is_refused_naming_outer_before_anything_compiles(ridge_objective, key):
    compilations = _compile.stats.compilations
    outer = optax.lookahead(optax.adam(0.05), sync_period=5, slow_step_size=0.5)
    with pytest.raises(ValueError, match=r"outer=: .*LookaheadParams.*optax\.adam\(0\.05\)") as caught:
        hg.tune(ridge_objective, WIDE, key, steps=2, outer=outer)
    assert isinstance(caught.value.__cause__, AttributeError)
    assert _compile.stats.compilations == compilations


def test_a_resumed_study_restarts_a_schedule_free_population_exactly(ridge_problem, key, tmp_path):
    """Restarted tuners' optimiser states are part of the checkpoint: interrupted after three steps,
    the resumed call gives the uninterrupted call's trials bitwise, and each tuner its own."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=100)
    kwargs = dict(steps=5, population=3, outer=optax.contrib.schedule_free_adamw(0.05),
                  init={"lr": np.array([500.0, 500.0, 0.05])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        whole = hg.tune(objective, WIDE, key, **kwargs)
        with pytest.raises(Stop):
            hg.tune(objective, WIDE, key, **kwargs, storage=tmp_path / "s.db", study="t", progress=stop_after(3))
        resumed = hg.tune(objective, WIDE, key, **kwargs, storage=tmp_path / "s.db", study="t")
    assert [t.state for t in whole.trials[:3]] == ["fail", "fail", "complete"]
    assert [(t.number, t.tuner, t.state) for t in resumed.trials] == [(t.number, t.tuner, t.state) for t in whole.trials]
    for a, b in zip(whole.trials, resumed.trials):
        assert a.value == b.value or (np.isnan(a.value) and np.isnan(b.value))
        assert np.array_equal(a.hparams["lr"], b.hparams["lr"])
    for tuner in (0, 1):  # from their first finite draw on they descend, as from a fresh start
        states = [t.state for t in whole.trials if t.tuner == tuner]
        assert "complete" in states and set(states[states.index("complete"):]) == {"complete"}, states
