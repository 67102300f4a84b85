"""Keyword arguments that did something other than they said (hunt KWARGS, F6, F8, F9).

F6: `tune`'s Cost line said one hypergradient per live tuner and step, while a given `chunk_size`
computes, and charges, the whole chunk every step whatever the population (the price, documented in
the README, of sharing one program across population sizes); the docstring now says so, and these
tests pin the charge it states.
F8: `Result.to_optuna(space=)` wrote an independent shaped hyperparameter only as a user attribute,
while `hg.optuna_search` asks for its elements lr[0], lr[1], ...: a continued search learnt nothing
from the exported trials about it. They are now params by those names.
F9: `hypergrad.sklearn`'s searches took a string `refit` with a single scoring (which
scikit-learn accepts, reading it by its truth) for a multi-metric one, and fell back to scikit-learn fit by fit.
"""

import warnings

import numpy as np
import optax
import pytest
from sklearn import model_selection as sk
from sklearn.linear_model import LogisticRegression as SklearnLogistic

import hypergrad as hg
from hypergrad._store_codec import describe_space
from hypergrad.optuna_search import optuna_distributions, settings_from_params
from hypergrad.results import COMPLETE
from hypergrad.sklearn import GridSearchCV, LogisticRegression
from hypergrad.sklearn._search import unsupported

from _helpers import iris_head

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.0, 0.9)})


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)


def test_a_chunk_size_above_a_lone_tuner_charges_the_whole_chunk_as_documented(objective, key):
    """A fixed chunk is computed whole every step (the program shared across population sizes):
    a lone tuner at chunk_size=4 is charged four rows a step, with the trials of chunk_size=None."""
    plain = hg.tune(objective, SPACE, key, steps=2)
    chunked = hg.tune(objective, SPACE, key, steps=2, chunk_size=4)
    assert chunked.info["chunk_size"] == 4
    assert chunked.runs == pytest.approx(4 * plain.runs, rel=1e-12)
    np.testing.assert_allclose([t.value for t in chunked.trials], [t.value for t in plain.trials], rtol=1e-10)


def test_the_padding_after_halving_is_charged_as_documented(objective, key):
    """population=4, chunk_size=4, halving every step: 4, then 2, then 1 live tuners, each step one
    call of 4 rows, its padding spread over the live tuners (a step-0 trial 1 row, a step-1 trial
    2, the last 4)."""
    four = hg.tune(objective, SPACE, key, chunk_size=4, steps=2, population=4, halving=1)
    flops = [t.flops for t in four.trials]
    np.testing.assert_allclose(flops, flops[0] * np.asarray([1, 1, 1, 1, 2, 2, 4]), rtol=1e-9)


SHAPED = hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(2, 2), independent=True), "momentum": hg.Uniform(0.0, 0.9)})


def _shaped_result(with_info_space):
    """Hand-made trials of SHAPED (nothing compiled)."""
    rows = [{"lr": np.asarray([[0.01, 0.02], [0.2, 0.4]]), "momentum": np.asarray(0.5)},
            {"lr": np.asarray([[0.3, 0.003], [0.05, 0.1]]), "momentum": np.asarray(0.1)}]
    trials = tuple(hg.Trial(number=i, hparams=h, value=float(i), scores={"val_loss": float(i)}, state=COMPLETE,
                            flops=1.0, seconds=0.1, run_flops=1.0) for i, h in enumerate(rows))
    return hg.Result("optuna", trials, 1.0, 0.0, info={"space": describe_space(SHAPED)} if with_info_space else {})


@pytest.mark.parametrize("with_info_space", [False, True])
def test_to_optuna_writes_an_independent_shaped_hyperparameter_by_optuna_searchs_element_names(tmp_path,
                                                                                             with_info_space):
    """Old: only 'momentum' was a param; lr went to the user attribute hparam_lr alone."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = _shaped_result(with_info_space)
    study = result.to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "s", space=None if with_info_space else SHAPED)
    asked = optuna_distributions(SHAPED)  # what optuna_search asks for, by name
    assert sorted(asked) == ["lr[0,0]", "lr[0,1]", "lr[1,0]", "lr[1,1]", "momentum"]
    for trial in study.trials:
        assert trial.distributions == asked  # so a continued optuna_search's sampler reads these trials
        assert trial.user_attrs["hparam_lr"] == np.asarray(result.trials[trial.number].hparams["lr"]).tolist()
    back = settings_from_params(SHAPED, [t.params for t in study.trials])  # as optuna_search reads params
    np.testing.assert_array_equal(back["lr"], np.stack([t.hparams["lr"] for t in result.trials]))
    assert set(optuna.search_space.intersection_search_space(study.get_trials())) == set(asked)


def test_a_shaped_hyperparameter_that_is_not_independent_stays_one_param(tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(3,))})
    trials = (hg.Trial(number=0, hparams={"lr": np.full(3, 0.1)}, value=1.0, scores={}, state=COMPLETE, flops=1.0,
                       seconds=0.1, run_flops=1.0),)
    study = hg.Result("random", trials, 1.0, 0.0).to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "s", space=space)
    assert study.trials[0].params == {"lr": pytest.approx(0.1)}


@pytest.fixture(scope="module")
def iris():
    return iris_head(20)


def test_a_refit_naming_the_single_scoring_keeps_the_vmapped_search(iris, monkeypatch):
    """Old: UserWarning "names a metric of a multi-metric scoring" and scikit-learn's own fit."""
    assert unsupported(GridSearchCV(LogisticRegression(), {"C": [1.0]}, scoring="accuracy", refit="accuracy"),
                       {}) is None
    assert unsupported(GridSearchCV(LogisticRegression(), {"C": [1.0]}, refit="score"), {}) is None

    def no_fallback(*args, **kwargs):
        raise AssertionError("fell back to scikit-learn's own search")

    monkeypatch.setattr(sk.GridSearchCV, "fit", no_fallback)
    grid = {"C": [0.1, 10.0]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        named = GridSearchCV(LogisticRegression(max_iter=50), grid, cv=2, scoring="accuracy", refit="accuracy")
        named.fit(*iris)
    assert not [w for w in caught if "scikit-learn's own" in str(w.message)]
    plain = GridSearchCV(LogisticRegression(max_iter=50), grid, cv=2, scoring="accuracy").fit(*iris)
    assert named.best_index_ == plain.best_index_ and named.best_score_ == plain.best_score_
    np.testing.assert_array_equal(named.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(named.predict(iris[0]), plain.predict(iris[0]))


@pytest.mark.parametrize("kwargs", [{"scoring": "accuracy", "refit": "neg_log_loss"},
                                    {"scoring": None, "refit": "accuracy"}, {"scoring": "accuracy", "refit": ""}])
def test_any_refit_string_with_a_single_scoring_is_read_by_its_truth_as_scikit_learn_does(iris, kwargs, monkeypatch):
    """scikit-learn reads a string refit with a single scoring only by its truth: a non-empty one
    refits the best candidate, "" refits nothing (review R5: ours fell back, and said "" refits)."""
    grid = {"C": [0.1, 10.0]}
    theirs = sk.GridSearchCV(SklearnLogistic(max_iter=50), grid, cv=2, **kwargs).fit(*iris)

    def no_fallback(*args, **kw):
        raise AssertionError("fell back to scikit-learn's own search")

    monkeypatch.setattr(sk.GridSearchCV, "fit", no_fallback)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ours = GridSearchCV(LogisticRegression(max_iter=50), grid, cv=2, **kwargs).fit(*iris)
    assert hasattr(ours, "best_estimator_") == hasattr(theirs, "best_estimator_") == bool(kwargs["refit"])
    assert ours.best_index_ == theirs.best_index_
