"""Features combined (hunt COMPOSE F4, F5).

Checks that `random_search(extends=)` of a stored study keeps its `info["space"]`, so that
`to_optuna` exports the declared log scale; and that `hg.compare(by="runs")` warns when the
results' runs (FLOPs per training run) differ, naming each result and its unit, and stays silent
for results of one objective, for `by="seconds"` and for a result of several units.
"""

import dataclasses
import warnings

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import describe_space

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def ridge():
    return hg.problems.ridge(num_examples=40, num_features=3, seed=0)


def _objective(problem):
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_extending_a_stored_study_keeps_its_space_so_to_optuna_exports_the_log_scale(ridge, tmp_path):
    # The extended Result lost info["space"]: to_optuna exported lr as the linear range of the
    # values seen (log=False), and hg.optuna_search refused to continue that study.
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective, key, db = _objective(ridge), jax.random.key(0), tmp_path / "s.db"
    hg.random_search(objective, SPACE, key, num_trials=2, storage=db, study="s")
    loaded = hg.load_study(db, "s")
    assert loaded.info["space"] == describe_space(SPACE)
    more = hg.random_search(objective, SPACE, key, num_trials=3, extends=loaded)
    assert more.info["space"] == loaded.info["space"]
    study = more.to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "more")
    assert study.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)
    # a plain Result (no space recorded) extends into one without it, as a plain call returns
    plain = hg.random_search(objective, SPACE, key, num_trials=3, extends=hg.random_search(
        objective, SPACE, key, num_trials=2))
    assert "space" not in plain.info


def _result(run_flops, units=None):
    """A hand-made random-search Result of two trials of `run_flops` (or of `units`, one per trial)."""
    units = units or (run_flops, run_flops)
    trials = tuple(hg.Trial(number=i, hparams={"lr": np.asarray(0.1 * (i + 1))}, value=1.0 - i,
                            scores={"val_loss": 1.0 - i}, state="complete", flops=u, seconds=0.1, run_flops=u)
                   for i, u in enumerate(units))
    return hg.Result("random", trials, float(np.mean(units)), 0.0)


def _warnings(results, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.compare(results, **kwargs)
    return [str(w.message) for w in caught if "runs of different sizes" in str(w.message)]


def test_compare_by_runs_warns_when_the_results_runs_differ_naming_each_and_the_fix():
    (message,) = _warnings({"plain": _result(100.0), "cv3": _result(250.0)})
    assert "'plain' 100" in message and "'cv3' 250" in message and "2.5x" in message
    assert "by='seconds'" in message and "by='execution'" in message
    assert not _warnings({"a": _result(100.0), "b": _result(100.0 * (1 + 1e-9))})  # one objective: rounding
    assert not _warnings({"plain": _result(100.0), "cv3": _result(250.0)}, by="seconds")  # time is one unit
    assert not _warnings({"grouped": _result(100.0, units=(100.0, 250.0)), "b": _result(250.0)})  # its own units


def test_compare_warns_for_a_cv_search_against_a_plain_one_of_the_same_model(ridge):
    # A 3-fold search and a plain one were lined up at equal "runs" without a word, though a cv run
    # is its 3 fits (hunt COMPOSE F5: 31116 vs 25228 FLOPs per run on a logistic model).
    key = jax.random.key(0)
    plain = hg.random_search(_objective(ridge), SPACE, key, num_trials=2)
    cv = hg.random_search(_objective(dataclasses.replace(ridge, cv=3)), SPACE, key, num_trials=2)
    assert cv.run_flops > plain.run_flops * 1.01
    (message,) = _warnings({"plain": plain, "cv3": cv})
    assert f"'plain' {plain.run_flops:.6g}" in message and f"'cv3' {cv.run_flops:.6g}" in message
    assert not _warnings({"a": plain, "b": hg.random_search(_objective(ridge), SPACE, key, num_trials=3)})
