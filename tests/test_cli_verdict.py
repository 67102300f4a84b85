"""The verdict of `hypergrad compare`: a tie is a tie, a win is a win only beyond the test set's noise.

Built from small synthetic picks and per-example test losses (the noise level), plus one check on a
tiny real problem that the per-example losses the command computes reproduce each pick's test loss.
"""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import cli
from hypergrad.results import Trial

T = 5  # training steps of the real problem: small programs


def _pick(setting: float, test_loss: float, value: float = 0.5) -> Trial:
    """A pick whose hyperparameters are `{"lr": setting}`."""
    return Trial(number=0, hparams={"lr": np.asarray(setting)}, value=value,
                 scores={"val_loss": value, "test_loss": test_loss}, state="complete", flops=1.0, seconds=0.1,
                 run_flops=1.0)


def _losses(table: dict[float, np.ndarray]):
    """`per_example` from a table: setting -> that pick's loss on every test example."""
    return lambda pick: table[float(pick.hparams["lr"])]


def test_the_same_trial_picked_by_two_strategies_is_a_tie_whatever_their_order():
    # the hypergradient's warm-up drew random search's first trial; the recorded numbers differ in their last bits
    same = _pick(0.1, 0.32926962950683)
    other = dataclasses.replace(same, scores={**same.scores, "test_loss": 0.32926962950683 + 1e-16})
    worse = _pick(0.7, 1.8)
    lines = set()
    for picks in ({"hypergradient": same, "random": other, "grid": worse},
                  {"random": other, "hypergradient": same, "grid": worse},
                  {"grid": worse, "random": other, "hypergradient": same}):
        line, outcome = cli._winner_line("p", "equal compute", picks)
        assert "wins" not in line and outcome not in picks  # no strategy is named the winner
        lines.add((line, outcome))
    line, outcome = lines.pop()
    assert not lines  # the same line whichever order the strategies came in
    assert line.startswith("- p, equal compute: **hypergradient** and **random** tie on test (the same trial): ")
    assert line.endswith("then grid (val 0.5, test loss 1.8).") and outcome == "a tie of hypergradient and random"


def test_equal_test_losses_of_different_trials_are_a_tie():
    picks = {"random": _pick(0.2, 0.25), "hypergradient": _pick(0.3, 0.25)}
    line, outcome = cli._winner_line("p", "equal compute", picks, _losses({0.2: np.ones(4), 0.3: np.ones(4)}))
    assert "**hypergradient** and **random** tie on test (equal test losses)" in line and "wins" not in line


def test_a_difference_far_beyond_the_noise_is_a_win():
    rng = np.random.default_rng(0)
    base = rng.exponential(0.5, size=200)
    better = base - 0.2 + rng.normal(0, 0.05, size=200)  # 0.2 lower on every example, give or take 0.05
    picks = {"hypergradient": _pick(0.1, base.mean()), "random": _pick(0.2, better.mean())}
    line, outcome = cli._winner_line("p", "equal compute", picks, _losses({0.1: base, 0.2: better}))
    difference = better - base
    se = difference.std(ddof=1) / np.sqrt(difference.size)
    assert outcome == "random" and line.startswith("- p, equal compute: **random** wins on test: random (")
    assert f"random's test loss is {-difference.mean():.2g} below hypergradient's, more than 2 standard errors " \
           f"({se:.2g}) of the paired per-example difference." in line


def test_a_gap_within_the_noise_is_not_a_win_even_when_it_comes_first():
    rng = np.random.default_rng(1)
    base = rng.exponential(0.5, size=360)
    close = base - 0.01 + rng.normal(0, 0.5, size=360)  # 0.01 lower on average, 0.5 of scatter per example
    picks = {"hypergradient": _pick(0.1, close.mean()), "random": _pick(0.2, base.mean()), "grid": _pick(0.3, 2.0)}
    table = {0.1: close, 0.2: base, 0.3: np.full(360, 2.0)}
    line, outcome = cli._winner_line("p", "equal compute", picks, _losses(table))
    difference = close - base
    se = difference.std(ddof=1) / np.sqrt(difference.size)
    assert abs(difference.mean()) < 2 * se  # the set-up: within noise
    assert "wins" not in line and outcome == "no clear winner (hypergradient lowest)"
    assert line.startswith("- p, equal compute: **hypergradient** has the lowest test loss, within noise of "
                           f"random (difference {difference.mean():.2g}, standard error {se:.2g}; a win needs more "
                           "than 2 standard errors), so no clear winner on test: hypergradient (")
    assert line.index("then random (") < line.index("grid (")  # the other tables' order: by test loss


def test_a_win_must_be_beyond_the_noise_of_every_other_pick_not_only_the_runner_up():
    # paired standard errors are not transitive: the runner-up is a near neighbour of the leader's pick
    # (tiny paired noise, far beyond it), a third pick is a very different model (worse mean, huge paired noise)
    rng = np.random.default_rng(2)
    base = rng.exponential(0.5, size=360)
    near = base + 0.02 + rng.normal(0, 0.01, size=360)
    far = base + 0.03 + rng.normal(0, 0.6, size=360)
    far = far - far.mean() + base.mean() + 0.03  # its mean above the runner-up's
    table = {0.1: base, 0.11: near, 1.0: far}
    picks = {"hypergradient": _pick(0.1, base.mean()), "random": _pick(0.11, near.mean()),
             "grid": _pick(1.0, far.mean())}
    z = {name: (d.mean() / (d.std(ddof=1) / np.sqrt(d.size))) for name, d in (("random", base - near),
                                                                               ("grid", base - far))}
    assert z["random"] < -10 and -2 < z["grid"] < 0  # the set-up
    line, outcome = cli._winner_line("p", "equal compute", picks, _losses(table))
    difference = base - far
    se = difference.std(ddof=1) / np.sqrt(difference.size)
    assert "wins" not in line and outcome == "no clear winner (hypergradient lowest)"
    assert f"**hypergradient** has the lowest test loss, within noise of grid (difference {difference.mean():.2g}, " \
           f"standard error {se:.2g}; a win needs" in line
    assert line.index("then random (") < line.index("grid (val")  # still ranked by test loss
    # with the third pick beyond the noise too, the win is called and says so
    table[1.0] = base + 0.2 + rng.normal(0, 0.05, size=360)
    picks["grid"] = _pick(1.0, table[1.0].mean())
    line, outcome = cli._winner_line("p", "equal compute", picks, _losses(table))
    assert outcome == "hypergradient" and "**hypergradient** wins on test" in line
    assert "below random's" in line and "every other pick's is further beyond the noise." in line
    # a third pick without per-example losses leaves the win unweighed
    line, outcome = cli._winner_line("p", "equal compute", picks,
                                     lambda pick: None if float(pick.hparams["lr"]) == 1.0 else _losses(table)(pick))
    assert "wins" not in line and "its lead over grid not weighed" in line


def test_without_per_example_losses_no_win_is_called_between_picks():
    picks = {"hypergradient": _pick(0.1, 0.2), "random": _pick(0.2, 0.9)}
    line, outcome = cli._winner_line("p", "equal compute", picks)
    assert "wins" not in line and "no per-example test losses" in line and outcome not in picks
    # a strategy alone with a pick (the others had no trial yet) still wins: there is nothing to weigh
    line, outcome = cli._winner_line("p", "equal compute", {"hypergradient": None, "random": _pick(0.2, 0.9)})
    assert outcome == "random" and "**random** wins on test" in line and "no trial yet: hypergradient" in line


def test_equal_time_verdicts_that_are_not_two_clear_winners_are_not_called_a_disagreement():
    lines = cli._compilation_lines("p", {}, "random", "a tie of hypergradient and random")
    assert "disagree" not in lines[-1] and "not between two clear winners" in lines[-1]
    results = {"hypergradient": hg.Result("tune", (), 1.0, 0.0), "random": hg.Result("random", (), 1.0, 0.0)}
    assert "**disagree**" in cli._compilation_lines("p", results, "random", "hypergradient")[-1]
    assert "agree (**a tie of hypergradient and random**)" in cli._compilation_lines(
        "p", results, "a tie of hypergradient and random", "a tie of hypergradient and random")[-1]


@pytest.fixture(scope="module")
def objective():
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=T)


def test_per_example_test_losses_reproduce_each_picks_test_loss(objective):
    key = jax.random.key(0)
    params = objective.train({"lr": 0.3}, key)
    X, y = objective.problem.test_data
    test_loss = float(objective.problem.val_loss(params, (X, y)))  # what the pick's trial recorded
    per_example = cli._test_losses_per_example(objective, key)
    losses = per_example(_pick(0.3, test_loss))
    assert losses.shape == (len(y),)
    np.testing.assert_allclose(losses.mean(), test_loss, rtol=1e-12)
    # each entry is the loss of that example alone
    np.testing.assert_allclose(losses[3], objective.problem.val_loss(params, (X[3:4], y[3:4])), rtol=1e-12)
    # a pick trained otherwise than on this key (its recorded test loss is not reproduced) gets no losses
    assert per_example(_pick(0.3, test_loss + 0.01)) is None
