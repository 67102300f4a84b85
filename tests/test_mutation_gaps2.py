"""More behaviours no other test pinned down, found by mutation testing (session 27): each test here
fails with one small change of the library's code that the rest of the suite let pass.

- relative ES steps by |h|, also for a negative hyperparameter; PES scores a remainder window at
  its own noise; Reversible(info_bits=b) accepts momentum 2^-b, the bound it documents;
- a grid of exactly the most points is allowed; `best_within` counts a trial whose cumulative cost
  equals the budget but for float rounding, as `compare`'s row does; `to_dataframe` keeps the test
  loss in `test_value` only;
- the `compare` verdict's paired standard error uses the sample standard deviation;
- FLOP counts: a `<=` while loop runs one more trip, a convolution's count whichever kernel axis
  holds the output features, a sort n log n per row;
- `tune`'s warm starts break ties to the earlier trial; `Forward(blocks=)` shares the leading axis
  of a hyperparameter that has no step axis.
"""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import cli
from hypergrad.accounting import program_flops
from hypergrad.results import COMPLETE, Result, Trial
from hypergrad.search import evaluate_settings
from _helpers import scaled_ridge, sgd_scalar_momentum

space_module = importlib.import_module("hypergrad.space")
tune_module = importlib.import_module("hypergrad.tune")  # `hypergrad.tune` is also the function


def one_run_trials(values, costs=None):
    """A Result of one-run trials with these validation losses (and costs in runs), each its own lr."""
    costs = costs or [1.0] * len(values)
    trials = tuple(Trial(number=i, hparams={"lr": np.asarray(0.01 * (i + 1))}, value=v, scores={"val_loss": v},
                         state=COMPLETE, flops=f, seconds=0.5, run_flops=1.0)
                   for i, (v, f) in enumerate(zip(values, costs, strict=True)))
    return Result("random", trials, 1.0, 0.0, {})


def test_relative_es_steps_by_the_magnitude_of_a_negative_hyperparameter(ridge_problem, key):
    """Relative ES perturbs each hyperparameter by sigma * |h| * e and divides by |h|, for h < 0
    too (a rule keyed on h > 0 would step negative ones by sigma, silently another step size, and
    still be unbiased, so no statistical test sees it). At hyperparameters all of magnitude 0.5,
    two of them negative, ES(0.2) is ES(0.1, relative=False) on the same noise, sample by sample."""
    objective = hg.Objective(scaled_ridge(ridge_problem), lambda h: optax.sgd(0.1), num_steps=6)
    hparams = {"weight_decay": jnp.asarray(0.5), "init_scale": jnp.asarray(-0.5), "out_scale": jnp.asarray(-0.5)}
    _, relative = hg.hypergradient(objective, hparams, key, method=hg.ES(0.2, 4))
    _, absolute = hg.hypergradient(objective, hparams, key, method=hg.ES(0.1, 4, relative=False))
    for name in hparams:
        np.testing.assert_allclose(relative[name], absolute[name], rtol=1e-10, atol=0)


def test_pes_scores_a_remainder_window_at_its_own_noise(ridge_problem, key):
    """PES scores the validation loss at the last window's noise, also when that window is a
    shorter remainder (scoring it at the previous window's noise is still unbiased, as that noise is
    in the accumulated xi, so only a sample-by-sample check sees it). With a frozen optimiser (lr 0)
    the parameters never move: T = 8 (windows 3, 3, 2) and T = 9 (windows 3, 3, 3) draw the same
    noises e_0, e_1, e_2 and score at h + sigma D e_2 alike: equal estimates."""
    problem = scaled_ridge(ridge_problem)
    hparams = {"weight_decay": jnp.asarray(0.05), "init_scale": jnp.asarray(0.5), "out_scale": jnp.asarray(0.6)}
    estimates = [hg.hypergradient(hg.Objective(problem, lambda h: optax.sgd(0.0), num_steps=steps), hparams, key,
                                  method=hg.PES(0.3, 4, window=3))[1] for steps in (8, 9)]
    for name in hparams:
        assert np.all(np.asarray(estimates[0][name]) != 0)
        np.testing.assert_allclose(estimates[0][name], estimates[1][name], rtol=1e-12, atol=0)


def test_reversible_with_one_bit_reverses_a_momentum_of_exactly_one_half(ridge_problem, key):
    """The documented range of momentum for Reversible(info_bits=b) is [2^-b, 1], bounds included
    ("1 bit suffices for m >= 1/2"): info_bits=1 at momentum 0.5 runs, not refused, and equals
    Reverse."""
    objective = hg.Objective(ridge_problem, sgd_scalar_momentum, num_steps=6)
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.02)}
    value, grads = hg.hypergradient(objective, hparams, key)
    value_rev, grads_rev = hg.hypergradient(objective, hparams, key, method=hg.Reversible(info_bits=1))
    np.testing.assert_allclose(value_rev, value, rtol=1e-9)
    for name in hparams:
        np.testing.assert_allclose(grads_rev[name], grads[name], rtol=1e-6)


def test_a_grid_of_exactly_the_most_points_is_allowed(monkeypatch):
    """The grid limit is inclusive, as its refusal's "(at most N)" says: under a limit of 8 (set
    low so the test builds no real-sized grid), 4 x 2 = 8 points pass and 5 x 2 = 10 are refused."""
    monkeypatch.setattr(space_module, "_MAX_GRID_POINTS", 8)
    space = hg.Space({"a": hg.Uniform(0.0, 1.0), "b": hg.Choice([1, 2])})
    assert len(np.asarray(space.grid(4)["a"])) == 8
    with pytest.raises(ValueError, match="at most 8"):
        space.grid(5)


def test_best_within_a_budget_equal_to_a_rounded_cumulative_cost_counts_that_trial():
    """Trials costing 0.1 and 0.2 runs have spent 0.30000000000000004 (float rounding); a budget of
    0.3 includes the second, better trial, and `compare`'s row at 0.3 agrees (2 trials, best 0.2).
    Without best_within's relative tolerance it picks trial 0 while the row counts 2 trials."""
    result = one_run_trials([0.5, 0.2], costs=[0.1, 0.2])
    assert result.spent("runs")[-1] > 0.3  # the rounding this is about
    assert result.best_within(0.3).number == 1
    row = hg.compare({"r": result}, budgets=[0.3]).rows[0]
    assert row["trials"] == 2 and row["best_value"] == 0.2


def test_to_dataframe_keeps_the_test_loss_in_test_value_not_a_user_attr():
    """Optuna's layout: test_loss is the `test_value` column; only scores other than the
    validation and test losses become `user_attrs_` columns (no duplicate of the test loss)."""
    pytest.importorskip("pandas")
    trial = Trial(number=0, hparams={"lr": np.asarray(0.1)}, value=0.5,
                  scores={"val_loss": 0.5, "test_loss": 0.7, "test_accuracy": 0.9}, state=COMPLETE,
                  flops=1.0, seconds=0.5, run_flops=1.0)
    df = Result("random", (trial,), 1.0, 0.0, {}).to_dataframe()
    assert "user_attrs_test_accuracy" in df.columns and df["test_value"][0] == 0.7
    assert "user_attrs_test_loss" not in df.columns and "user_attrs_val_loss" not in df.columns


def test_the_paired_standard_error_uses_the_sample_standard_deviation():
    """Per-example test-loss differences -0.5 and -2.5 (two test examples): mean -1.5, sample
    standard deviation sqrt(2), standard error 1.0, so -1.5 is within 2 standard errors: no clear
    winner. The population standard deviation (ddof=0) would give 0.707 and a false win; the
    verdict tests' 360 examples hide the difference (0.14%) behind `.2g` formatting."""
    def pick(setting, test_loss):
        return Trial(number=0, hparams={"lr": np.asarray(setting)}, value=0.5,
                     scores={"val_loss": 0.5, "test_loss": test_loss}, state=COMPLETE, flops=1.0, seconds=0.1,
                     run_flops=1.0)

    table = {0.1: np.array([1.0, 1.0]), 0.2: np.array([1.5, 3.5])}
    picks = {"hypergradient": pick(0.1, 1.0), "random": pick(0.2, 2.5)}
    line, outcome = cli._winner_line("p", "equal compute", picks, lambda p: table[float(p.hparams["lr"])])
    assert outcome == "no clear winner (hypergradient lowest)", line
    assert "within noise of random (difference -1.5, standard error 1;" in line, line


def test_a_while_loop_up_to_and_including_its_bound_counts_one_more_trip():
    """`i <= 9` from 0 runs 10 trips (as `i < 10`), one more than `i < 9`: the body's 8 x 8 product
    is counted 10 times. The other while-loop counts only use `<`."""
    x = jnp.ones((8, 8))

    def loop(bound, le):
        cond = (lambda s: s[1] <= bound) if le else (lambda s: s[1] < bound)
        return lambda v: jax.lax.while_loop(cond, lambda s: (s[0] @ x, s[1] + 1), (v, jnp.asarray(0)))[0]

    le9 = program_flops(loop(9, True), x)
    assert le9 == program_flops(loop(10, False), x) and le9 > program_flops(loop(9, False), x)


@pytest.mark.parametrize("layout", ["OIHW", "HWIO"])
def test_a_convolution_counts_two_flops_per_output_and_kernel_input_element(layout):
    """16 output features from 3 input channels through a 3 x 5 kernel over an 8 x 8 image
    ('SAME'): 16 * 8 * 8 outputs, each 3 * 3 * 5 multiply-adds, whichever kernel axis holds the
    output features (flax's HWIO puts them last, plain `lax.conv`'s OIHW first)."""
    image = jnp.ones((1, 3, 8, 8))
    kernel = jnp.ones((16, 3, 3, 5)) if layout == "OIHW" else jnp.ones((3, 5, 3, 16))

    def conv(a, k):
        return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME", dimension_numbers=("NCHW", layout, "NCHW"))

    assert program_flops(conv, image, kernel) == 2 * 16 * 8 * 8 * 3 * 3 * 5


def test_a_sort_counts_n_log_n_per_row():
    """Sorting 4 rows of 16 along the last axis: 16 * log2(16) per row, 4 * 16 * 4 = 256 FLOPs."""
    assert program_flops(lambda v: jnp.sort(v, axis=-1), jnp.ones((4, 16))) == 4 * 16 * 4


def test_warm_starts_break_ties_to_the_earlier_trial(ridge_problem, key, monkeypatch):
    """tune's warm-up losses are made 0.3, 0.2, 0.2, 0.5: two tuners start from trials 1 and 2, in
    that order (the first of the tied best first, as `best_trial` picks it), whatever the order
    of ties in a sort. (The warm-up runs as usual; only its recorded losses are replaced.)"""
    def tied_warm_up(*args, **kwargs):
        result = evaluate_settings(*args, **kwargs)
        trials = tuple(dataclasses.replace(t, value=v, scores={**t.scores, "val_loss": v})
                       for t, v in zip(result.trials, [0.3, 0.2, 0.2, 0.5], strict=True))
        return Result(result.strategy, trials, result.run_flops, result.compile_seconds, result.info)

    monkeypatch.setattr(tune_module, "evaluate_settings", tied_warm_up)
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    result = hg.tune(objective, hg.Space({"lr": hg.LogUniform(1e-3, 0.5)}), key, population=2, warmup=4, steps=1)
    warm, started = result.trials[:4], result.trials[4:6]
    assert [t.value for t in warm] == [0.3, 0.2, 0.2, 0.5]  # the patched warm-up's trials lead the result
    lrs = [float(t.hparams["lr"]) for t in warm]
    assert min(abs(a - b) for a in lrs for b in lrs if a != b) > 1e-3 * max(lrs)  # four distinct settings
    for tuner, trial in zip(started, warm[1:3], strict=True):  # through the log transform and back: rounding
        np.testing.assert_allclose(tuner.hparams["lr"], trial.hparams["lr"], rtol=1e-12)


def test_forward_shares_a_shaped_hyperparameter_without_a_step_axis_along_its_leading_axis(ridge_problem):
    """A (4, 3) hyperparameter at T = 8 has no axis of length T: blocks=2 splits its leading axis,
    2 x 3 = 6 directions (splitting the last axis would give 4 x 2 = 8), as the refusal says."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(jnp.mean(h["w"])), num_steps=8)
    hparams = {"w": jnp.full((4, 3), 0.1)}
    hg.Forward(blocks=2, max_directions=6).check(objective, hparams)
    with pytest.raises(ValueError, match=r"Forward needs 6 JVPs \(one per hyperparameter direction; w: 6 \(2 blocks "
                                         r"along axis 0 of shape \(4, 3\)\)\), more than max_directions=5"):
        hg.Forward(blocks=2, max_directions=5).check(objective, hparams)
