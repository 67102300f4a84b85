"""hypergrad.sklearn's searches: GridSearchCV, RandomizedSearchCV and HypergradSearchCV.

The vmapped search against the estimator's own fit, fold by fold (a search's candidate and a fit of
the same parameters with the same key are the same computation); `cv_results_`'s keys, `params`
and masked `param_*` arrays against scikit-learn's own search on the same grid, distributions and
random_state; a Pipeline with per-fold preprocessing; the fallbacks to scikit-learn (with their
warnings); bad arguments refused before anything compiles; HypergradSearchCV lowering the
cross-validated loss from its starting point. Networks are tiny and fits short: every compiled
program costs seconds here.
"""

import json
import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import optax
import pytest
import scipy.stats
from sklearn import model_selection as sk
from sklearn.base import clone as sklearn_clone
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.linear_model import LogisticRegression as SklearnLogistic
from sklearn.linear_model import Ridge as SklearnRidge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import hypergrad as hg
from hypergrad import _compile
from hypergrad.sklearn import (GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier, MLPRegressor,
                               RandomizedSearchCV, Ridge)
from hypergrad.sklearn import _base
from hypergrad.sklearn._search import devices_for_n_jobs, options_of

from _helpers import iris_head

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

BACKEND_COMPILES = []  # every XLA compilation of this process, whoever asked for it
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: BACKEND_COMPILES.append(kw.get("fun_name"))
    if event == "/jax/core/compile/backend_compile_duration" else None)


@pytest.fixture(scope="module")
def iris():
    """60 iris examples (20 per class), raw features (a pipeline standardises them)."""
    return iris_head(20)


def small_mlp(**params):
    return MLPClassifier(hidden_layer_sizes=(4,), max_iter=8, learning_rate_init=0.05, random_state=0, **params)


@pytest.fixture(scope="module")
def pipeline_search(iris):
    """make_pipeline(StandardScaler(), MLPClassifier()) in GridSearchCV over mlpclassifier__alpha
    (and a momentum only sgd reads), scored by log-loss (a continuous score, so agreement is checked
    to rounding), train scores too."""
    grid = {"mlpclassifier__alpha": [1e-4, 3.0], "mlpclassifier__momentum": [0.5, 0.9]}
    search = GridSearchCV(make_pipeline(StandardScaler(), small_mlp()), grid, cv=3, scoring="neg_log_loss",
                          return_train_score=True)
    return search.fit(*iris)


def test_pipeline_candidates_x_folds_equal_fits_one_by_one(iris, pipeline_search):
    x, y = iris
    results = pipeline_search.cv_results_
    folds = list(StratifiedKFold(3).split(x, y))
    for c, params in enumerate(results["params"]):
        for s, (train, val) in enumerate(folds):
            alone = make_pipeline(StandardScaler(), small_mlp()).set_params(**params).fit(x[train], y[train])
            expected = -log_loss(y[val], alone.predict_proba(x[val]), labels=[0, 1, 2])
            np.testing.assert_allclose(results[f"split{s}_test_score"][c], expected, rtol=1e-6)
            expected = -log_loss(y[train], alone.predict_proba(x[train]), labels=[0, 1, 2])
            np.testing.assert_allclose(results[f"split{s}_train_score"][c], expected, rtol=1e-6)
    # the alphas differ enough to rank: a heavy penalty scores worse
    assert len(set(results["rank_test_score"])) > 1
    best = int(np.argmax(results["mean_test_score"]))
    assert pipeline_search.best_index_ == best and pipeline_search.best_params_ == results["params"][best]
    assert pipeline_search.best_score_ == results["mean_test_score"][best]
    # refit through the pipeline's own fit, on all the data
    refit = make_pipeline(StandardScaler(), small_mlp()).set_params(**results["params"][best]).fit(x, y)
    np.testing.assert_allclose(pipeline_search.predict_proba(x), refit.predict_proba(x), rtol=1e-6)
    assert pipeline_search.score(x, y) == pytest.approx(-log_loss(y, refit.predict_proba(x)), rel=1e-6)
    np.testing.assert_array_equal(pipeline_search.classes_, [0, 1, 2])
    assert pipeline_search.refit_time_ > 0 and pipeline_search.n_splits_ == 3
    # the three equal folds stacked: one program scoring the validation folds, one the training folds
    assert [(r["folds"], r["programs"]) for r in pipeline_search.hypergrad_info_] == [(3, 1), (3, 1)]
    assert pipeline_search.multimetric_ is False
    assert np.all(results["mean_fit_time"] > 0) and np.all(results["mean_score_time"] > 0)


def test_cv_results_keys_and_params_equal_scikit_learns(iris, pipeline_search):
    """scikit-learn's own search on the same grid, with its own MLPClassifier: the same keys,
    params and masked param_* arrays (the scores differ: other random numbers)."""
    grid = pipeline_search.param_grid
    theirs = sk.GridSearchCV(make_pipeline(StandardScaler(), SklearnMLP(hidden_layer_sizes=(4,), max_iter=8)), grid,
                             cv=3, scoring="neg_log_loss", return_train_score=True).fit(*iris)
    ours = pipeline_search.cv_results_
    assert set(ours) == set(theirs.cv_results_)
    assert ours["params"] == theirs.cv_results_["params"]
    for name in ("param_mlpclassifier__alpha", "param_mlpclassifier__momentum"):
        np.testing.assert_array_equal(ours[name], theirs.cv_results_[name])
        assert ours[name].dtype == theirs.cv_results_[name].dtype


def test_early_stopping_runs_fold_by_fold_and_equals_the_fits(iris):
    """Early stopping holds each fold's held-out split inside its program, so the folds are not
    stacked (one program each) and every score still equals the estimator's own fit on that fold."""
    x, y = iris
    search = GridSearchCV(small_mlp(early_stopping=True), {"alpha": [1e-4, 1.0]}, cv=2, refit=False).fit(x, y)
    assert [r["folds"] for r in search.hypergrad_info_] == [1, 1]
    for s, (train, val) in enumerate(StratifiedKFold(2).split(x, y)):
        for c, params in enumerate(search.cv_results_["params"]):
            alone = small_mlp(early_stopping=True, **params).fit(x[train], y[train])
            assert search.cv_results_[f"split{s}_test_score"][c] == pytest.approx(alone.score(x[val], y[val]), abs=1e-6)


def test_randomized_candidates_are_scikit_learns():
    """The candidates fit evaluates (its cv_results_["params"]) are ParameterSampler's under the same
    random_state, scipy.stats distributions included; GridSearchCV's are ParameterGrid's."""
    distributions = {"alpha": scipy.stats.loguniform(1e-5, 1e-1), "activation": ["tanh", "relu"],
                     "learning_rate_init": scipy.stats.uniform(0.01, 0.05)}
    ours = RandomizedSearchCV(small_mlp(), distributions, n_iter=5, random_state=7)._candidate_list()
    assert ours == list(sk.ParameterSampler(distributions, 5, random_state=7))
    grid = [{"alpha": [1e-4, 1e-2], "solver": ["adam"]}, {"solver": ["sgd"], "momentum": [0.5, 0.9]}]
    assert GridSearchCV(small_mlp(), grid)._candidate_list() == list(sk.ParameterGrid(grid))


@pytest.mark.parametrize("make,match", [
    (lambda: GridSearchCV(DummyClassifier(random_state=0), {"strategy": ["prior", "uniform"]}, cv=2),
     "DummyClassifier is not a hypergrad.sklearn estimator"),
    (lambda: GridSearchCV(DummyClassifier(random_state=0), {"strategy": ["prior"]}, cv=2, scoring=lambda e, x, y: 0.5),
     "is not a hypergrad.sklearn estimator"),
])
def test_other_estimators_fall_back_to_scikit_learn_with_a_warning(iris, make, match):
    with pytest.warns(UserWarning, match=match):
        search = make().fit(*iris)
    assert isinstance(search, sk.GridSearchCV)
    reference = sk.GridSearchCV(**make().get_params(deep=False)).fit(*iris)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


@pytest.mark.parametrize("kwargs,fit,match", [
    ({"scoring": lambda est, x, y: est.score(x, y)}, {}, "callable or multi-metric scoring runs on the host"),
    ({"scoring": "balanced_accuracy"}, {}, r"scoring='balanced_accuracy' is not computed inside"),
    ({"scoring": ["accuracy", "neg_log_loss"], "refit": "accuracy"}, {}, "multi-metric"),
])
def test_unsupported_options_fall_back_with_the_reason(iris, kwargs, fit, match, monkeypatch):
    """The fallback runs scikit-learn's own fit (patched here to record the call, so no MLP is fitted)."""
    calls = []
    monkeypatch.setattr(sk.GridSearchCV, "fit", lambda self, x, y=None, **p: calls.append(p) or self)
    search = GridSearchCV(small_mlp(), {"alpha": [1e-4]}, cv=2, **kwargs)
    with pytest.warns(UserWarning, match=match):
        search.fit(*iris, **fit)
    assert calls == [fit]


@pytest.mark.parametrize("search", [
    lambda: GridSearchCV(small_mlp(), {"alpha": [1e-4, 1e-2]}, cv=2, n_jobs=0),
    lambda: RandomizedSearchCV(small_mlp(), {"alpha": [1e-4, 1e-2]}, n_iter=2, cv=2, random_state=0, n_jobs=0),
    lambda: HypergradSearchCV(small_mlp(), {"alpha": (1e-4, 1e-2, "log")}, cv=2, random_state=0, n_jobs=0),
])
def test_n_jobs_zero_is_refused_as_scikit_learn_refuses_it(iris, search, monkeypatch):
    """n_jobs=0 was accepted (and searched) where scikit-learn raises joblib's ValueError: the same
    error, type and message, now comes from the hypergrad searches, before anything is fitted."""
    with pytest.raises(Exception) as expected:
        sk.GridSearchCV(SklearnMLP(max_iter=2), {"alpha": [1e-4]}, cv=2, n_jobs=0).fit(*iris)
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(type(expected.value), match=f"^{re.escape(str(expected.value))}$"):
        search().fit(*iris)


@pytest.mark.parametrize("make,error,match", [
    (lambda: GridSearchCV(small_mlp(), {"nonsense": [1]}), ValueError, "Invalid parameter 'nonsense'"),
    (lambda: GridSearchCV(small_mlp(), {"alpha": [-1.0]}), ValueError, "'alpha' parameter of MLPClassifier must be"),
    (lambda: GridSearchCV(small_mlp(), {"activation": ["softsign"]}), ValueError, "'activation' parameter"),
    (lambda: GridSearchCV(small_mlp(), {"alpha": 0.1}), TypeError, "needs to be a list or a numpy array"),
    (lambda: GridSearchCV(small_mlp(), {"alpha": [0.1]}, cv="three"), ValueError, "'cv' parameter"),
    (lambda: RandomizedSearchCV(small_mlp(), {"alpha": [0.1]}, n_iter=0), ValueError, "'n_iter' parameter"),
    (lambda: HypergradSearchCV(small_mlp(), {"alpha": (1e-3, 1e-1, "cubic")}), ValueError, r"\(low, high, 'log'\)"),
    (lambda: HypergradSearchCV(small_mlp(), {"alpha": scipy.stats.norm(0, 1)}), ValueError, "unbounded"),
    (lambda: HypergradSearchCV(small_mlp(), {"alpha": (1e-3, 1e-1)}, budget=-1), ValueError, "'budget' parameter"),
    # settings the estimators' own fit refuses: the search refuses them too, with fit's error
    (lambda: GridSearchCV(Ridge(positive=True), {"alpha": [0.1, 1.0]}, refit=False), ValueError, "positive=False"),
    (lambda: GridSearchCV(LogisticRegression(penalty="l1", solver="saga"), {"C": [0.1, 1.0]}, refit=False),
     ValueError, "use penalty='l2'"),
    (lambda: GridSearchCV(small_mlp(), {"solver": ["lbfgs", "adam"]}, refit=False), ValueError,
     "solver='sgd' or solver='adam'"),
    (lambda: GridSearchCV(small_mlp(warm_start=True), {"alpha": [0.1]}), ValueError, "use warm_start=False"),
    (lambda: GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression()), {"logisticregression__dual": [True]}),
     ValueError, "use dual=False"),
    (lambda: HypergradSearchCV(Ridge(positive=True), {"alpha": (0.1, 10.0, "log")}), ValueError, "positive=False"),
    # a range no configuration's fit reads: its hypergradient is zero, so the descent did nothing, silently
    (lambda: HypergradSearchCV(LogisticRegression(penalty=None), {"C": (0.01, 100.0, "log")}), ValueError,
     "C is descended, but no configuration's fit reads it"),
    (lambda: HypergradSearchCV(small_mlp(solver="adam"), {"momentum": (0.1, 0.9)}), ValueError,
     "momentum is descended, but no configuration's fit reads it"),
    (lambda: HypergradSearchCV(make_pipeline(StandardScaler(), small_mlp()), {"mlpclassifier__solver": ["adam"],
                                                                              "mlpclassifier__momentum": (0.1, 0.9)}),
     ValueError, "mlpclassifier__momentum is descended"),
])
def test_bad_arguments_raise_before_compiling(iris, make, error, match, monkeypatch):
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(error, match=match):
        make().fit(*iris)


def test_a_range_read_by_some_configuration_is_descended(iris):
    # sgd reads momentum, adam does not: searching both, momentum is still descended (for sgd)
    search = HypergradSearchCV(small_mlp(), {"solver": ["sgd", "adam"], "momentum": (0.1, 0.9)}, budget=40, cv=2)
    search.fit(*iris)
    assert set(search.cv_results_["param_solver"]) == {"sgd", "adam"}


@pytest.fixture(scope="module")
def regression():
    """A linear target with noise: 48 examples, 5 features (Ridge's closed form fits it exactly)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 5))
    return x, x @ rng.normal(size=5) + 3.0 + rng.normal(scale=2.0, size=48)


def test_ridge_search_equals_scikit_learns_search(regression):
    """Ridge has one optimum, which both libraries compute: every split score, mean, std, rank and the
    best candidate of the vmapped search equal scikit-learn's own GridSearchCV(Ridge)."""
    grid = {"alpha": [0.01, 3.0, 300.0, 3e4]}
    scoring = "neg_mean_squared_error"
    cv = sk.KFold(4, shuffle=True, random_state=0)
    ours = GridSearchCV(Ridge(), grid, cv=cv, scoring=scoring).fit(*regression)
    theirs = sk.GridSearchCV(SklearnRidge(), grid, cv=cv, scoring=scoring).fit(*regression)
    assert set(ours.cv_results_) == set(theirs.cv_results_) and ours.cv_results_["params"] == theirs.cv_results_["params"]
    for name in ["mean_test_score", "std_test_score", *(f"split{i}_test_score" for i in range(4))]:
        np.testing.assert_allclose(ours.cv_results_[name], theirs.cv_results_[name], rtol=1e-8, err_msg=name)
    np.testing.assert_array_equal(ours.cv_results_["rank_test_score"], theirs.cv_results_["rank_test_score"])
    assert ours.best_params_ == theirs.best_params_ and ours.best_index_ == theirs.best_index_
    np.testing.assert_allclose(ours.predict(regression[0]), theirs.predict(regression[0]), rtol=1e-8)


def test_hypergrad_search_lowers_the_cv_loss_from_its_start(regression):
    """Ridge's alpha descended from the centre of (1e-3, 1e4) by hypergradients of the 4-fold squared
    error, fit_intercept searched: each configuration's cross-validated loss falls below its start."""
    x, y = regression
    search = HypergradSearchCV(Ridge(), {"fit_intercept": [True, False], "alpha": (1e-3, 1e4, "log")},
                               cv=4, budget=40, scoring="neg_mean_squared_error", outer=optax.adam(0.5))
    search.fit(x, y)
    trials = search.hybrid_result_.trials
    assert {t.tuner for t in trials} == {0, 1}
    for config in (0, 1):
        steps = [t for t in trials if t.tuner == config]
        assert len(steps) > 3 and min(t.value for t in steps[1:]) < steps[0].value - 1e-3 * abs(steps[0].value)
    results = search.cv_results_
    assert len(results["params"]) == len(trials) and set(results["param_fit_intercept"]) == {True, False}
    # a row's mean test score is minus its mean validation squared error over the four folds
    np.testing.assert_allclose(results["mean_test_score"], [-t.value for t in trials], rtol=1e-8)
    alphas = np.asarray(results["param_alpha"], float)
    assert np.all((alphas >= 1e-3) & (alphas <= 1e4)) and len(set(alphas)) > 4
    assert search.best_params_ == results["params"][search.best_index_]
    assert search.best_estimator_.alpha == search.best_params_["alpha"]
    # the picked row's score is scikit-learn's cross-validation of that Ridge on the same folds
    again = sk.cross_val_score(SklearnRidge(**search.best_params_), x, y, cv=4, scoring="neg_mean_squared_error")
    assert search.best_score_ == pytest.approx(np.mean(again), rel=1e-8)


def _same_fit(a, b, rtol=1e-10):
    assert [c.shape for c in a.coefs_] == [c.shape for c in b.coefs_]
    for got, want in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=rtol)


def test_masked_refit_equals_the_estimators_own_fit_for_every_candidate(iris):
    """One masked program (widths, activation, solver and learning_rate masked; alpha an argument)
    refits each candidate as that candidate's own `fit` does, cut to its widths; refused for other
    data, and for candidates one masked program cannot hold."""
    x, y = iris
    grid = {"hidden_layer_sizes": [(3,), (5,)], "activation": ["tanh", "relu"], "solver": ["sgd", "adam"],
            "alpha": [1e-4, 0.5]}
    candidates = list(sk.ParameterGrid(grid))
    refit = small_mlp()._masked_refit(x, y, options_of(candidates))
    for params in (candidates[0], candidates[5], candidates[-1]):
        masked = small_mlp().set_params(**params)
        assert refit.fit(masked, x, y)
        _same_fit(masked, small_mlp().set_params(**params).fit(x, y))
    continuous_only = small_mlp()._masked_refit(x, y, {"alpha": [1e-4, 0.5]})  # nothing masked
    masked = small_mlp(alpha=0.5)
    assert continuous_only.fit(masked, x, y)
    _same_fit(masked, small_mlp(alpha=0.5).fit(x, y))
    assert not refit.fit(small_mlp(), x[:-3], y[:-3])  # other data
    assert not refit.fit(small_mlp().set_params(hidden_layer_sizes=(7,)), x, y)  # a width no candidate had
    assert small_mlp(early_stopping=True)._masked_refit(x, y, options_of(candidates)) is None
    assert small_mlp()._masked_refit(x, y, {"hidden_layer_sizes": [(3,), (3, 3)]}) is None
    assert small_mlp()._masked_refit(x, y, {"max_iter": [3, 5]}) is None


def test_search_refit_is_the_masked_program_and_equals_a_fresh_fit(iris, monkeypatch):
    """The search's `best_estimator_` comes from the masked refit program, compiled while the
    search's own program compiles, and equals a fresh fit of the best parameters."""
    from hypergrad.sklearn._mlp import MaskedRefit

    x, y = iris
    calls = []
    original = MaskedRefit.fit
    monkeypatch.setattr(MaskedRefit, "fit", lambda self, *a: calls.append(original(self, *a)) or calls[-1])
    search = GridSearchCV(small_mlp(), {"activation": ["tanh", "relu"], "alpha": [1e-4, 0.5]}, cv=2).fit(x, y)
    assert calls == [True]
    _same_fit(search.best_estimator_, small_mlp().set_params(**search.best_params_).fit(x, y))


@pytest.mark.parametrize("solver, base, unused_values", [
    ("adam", {}, {"learning_rate": "adaptive", "momentum": 0.3, "nesterovs_momentum": False, "power_t": 0.9}),
    ("sgd", {"learning_rate": "constant"}, {"beta_1": 0.5, "beta_2": 0.8, "epsilon": 1e-3, "power_t": 0.9}),
])
def test_unused_params_are_unread_by_the_fit_and_the_others_are_read(iris, solver, base, unused_values):
    """What a search relies on to fit equivalent candidates once: changing every parameter that
    `unused_params` names leaves the fit bit for bit the same; changing one it does not name
    (sgd's momentum, adam's beta_1) changes it."""
    x, y = iris
    fitted = small_mlp(solver=solver, **base)
    assert set(unused_values) <= fitted.unused_params(fitted.get_params())
    reference = fitted.fit(x, y)
    same = small_mlp(solver=solver, **base, **unused_values).fit(x, y)
    for got, want in zip(same.coefs_ + same.intercepts_, reference.coefs_ + reference.intercepts_):
        np.testing.assert_array_equal(got, want)
    assert same.n_iter_ == reference.n_iter_ and same.loss_curve_ == reference.loss_curve_
    read = {"momentum": 0.3} if solver == "sgd" else {"beta_1": 0.5}
    assert not set(read) & fitted.unused_params(fitted.get_params())
    changed = small_mlp(solver=solver, **base, **read).fit(x, y)
    assert not np.array_equal(changed.coefs_[0], reference.coefs_[0])
    assert "power_t" not in small_mlp(solver="sgd", learning_rate="invscaling").unused_params(
        small_mlp(solver="sgd", learning_rate="invscaling").get_params())


def test_search_fits_equivalent_candidates_once_and_gives_each_the_scores(iris):
    """Candidates differing only in what their fit does not read (adam's learning_rate and
    momentum) are one fit: the program runs the distinct ones, and every candidate's scores equal
    those of a search over the distinct candidates alone; the shared fit's seconds are split."""
    x, y = iris
    grid = {"solver": ["adam"], "learning_rate": ["constant", "adaptive"], "momentum": [0.5, 0.9],
            "alpha": [1e-4, 0.5]}
    search = GridSearchCV(small_mlp(), grid, cv=2, scoring="neg_log_loss").fit(x, y)
    assert search.hypergrad_info_[0]["candidates"] == 2
    distinct = GridSearchCV(small_mlp(), {"solver": ["adam"], "alpha": [1e-4, 0.5]}, cv=2,
                            scoring="neg_log_loss").fit(x, y)
    results = search.cv_results_
    for c, params in enumerate(results["params"]):
        d = [1e-4, 0.5].index(params["alpha"])
        for s in range(2):
            assert results[f"split{s}_test_score"][c] == distinct.cv_results_[f"split{s}_test_score"][d]
    # ties rank alike, and the best is the first of the tied candidates, as scikit-learn picks
    assert search.best_params_["alpha"] == distinct.best_params_["alpha"]
    assert search.best_index_ == min(c for c, p in enumerate(results["params"]) if p["alpha"] == search.best_params_["alpha"])
    assert len(set(results["rank_test_score"][results["param_alpha"] == 0.5])) == 1
    # four candidates per fit: their seconds add up to the fit's
    assert np.all(results["mean_fit_time"] > 0)
    assert len(set(results["mean_fit_time"][results["param_alpha"] == 0.5])) == 1


N_JOBS_CHILD = """
import json, warnings
import jax
from sklearn.datasets import load_iris
from hypergrad.sklearn import GridSearchCV, MLPClassifier
x, y = load_iris(return_X_y=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0), {"alpha": [1e-4, 1e-2]},
                          cv=2, n_jobs=2).fit(x, y)
print(json.dumps({"devices": jax.device_count(), "info": search.hypergrad_info_[0]["candidates"]}))
"""


def test_n_jobs_splits_the_cpu_into_devices_before_jax_starts_and_changes_nothing_after():
    """n_jobs=2 in a fresh process: the search runs on 2 JAX CPU devices (as scikit-learn would
    run 2 processes); in this process JAX has started, so n_jobs leaves its devices as they are."""
    proc = subprocess.run([sys.executable, "-c", N_JOBS_CHILD], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"devices": 2, "info": 2}
    before = jax.device_count()
    assert devices_for_n_jobs(None) is None and devices_for_n_jobs(1) is None and devices_for_n_jobs(2) is None
    assert jax.device_count() == before


def overlapping_classes(n=90, k=3, labels=None):
    """n examples of 4 features in k classes whose regions overlap (a noisy linear rule), so that no
    class separates and an unpenalised logistic fit has a finite optimum; labels: the class names."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 4))
    codes = np.argmax(x @ rng.normal(size=(4, k)) + rng.normal(scale=1.5, size=(n, k)), axis=1)
    return x, codes if labels is None else np.asarray(labels)[codes]


@pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning")  # scikit-learn's own, the reference
@pytest.mark.filterwarnings("ignore:Setting penalty=None will ignore:UserWarning")
def test_penalty_none_ignores_a_searched_c_as_scikit_learn_does():
    """penalty=None fits without a penalty whatever C a search gives it (C is then unused, so the
    candidates are one fit), equal to scikit-learn's search; a searched penalty=None does too. Noisy
    classes, so the unpenalised fit has a finite optimum both libraries reach."""
    x, y = overlapping_classes()
    kwargs = {"cv": 3, "scoring": "neg_log_loss", "refit": False}
    ours = GridSearchCV(LogisticRegression(penalty=None), {"C": [0.01, 1.0]}, **kwargs).fit(x, y)
    theirs = sk.GridSearchCV(SklearnLogistic(penalty=None, tol=1e-10), {"C": [0.01, 1.0]}, **kwargs).fit(x, y)
    scores = ours.cv_results_["mean_test_score"]
    assert scores[0] == scores[1] and ours.hypergrad_info_[0]["candidates"] == 1
    np.testing.assert_allclose(scores, theirs.cv_results_["mean_test_score"], rtol=1e-4)
    varied = GridSearchCV(LogisticRegression(), {"penalty": [None, "l2"]}, **kwargs).fit(x, y)
    l2 = GridSearchCV(LogisticRegression(), {"C": [1.0]}, **kwargs).fit(x, y)
    np.testing.assert_allclose(varied.cv_results_["mean_test_score"],
                               [scores[0], l2.cv_results_["mean_test_score"][0]], rtol=1e-10)
    assert abs(scores[0] - l2.cv_results_["mean_test_score"][0]) > 1e-3


def test_sample_weight_runs_the_weighted_fits_or_is_refused_by_name(iris, monkeypatch):
    """sample_weight goes to scikit-learn's search (with a warning), whose fits are the estimator's
    own weighted fit: the scores equal scikit-learn's search of its LogisticRegression, and an MLP
    search's refit is the MLP's own weighted fit (directly and as a Pipeline's step). A fit parameter
    the estimator's fit does not take: a ValueError naming it, before anything is fitted."""
    x, y = overlapping_classes()
    w = np.random.default_rng(2).uniform(0.1, 3.0, len(y))
    kwargs = {"cv": 3, "scoring": "neg_log_loss"}
    with pytest.warns(UserWarning, match=r"fit parameters \['sample_weight'\]"):
        ours = GridSearchCV(LogisticRegression(tol=1e-8), {"C": [0.1, 1.0]}, **kwargs).fit(x, y, sample_weight=w)
    theirs = sk.GridSearchCV(SklearnLogistic(tol=1e-10), {"C": [0.1, 1.0]}, **kwargs).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], rtol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), atol=1e-5)

    w = np.random.default_rng(3).uniform(0.1, 3.0, len(iris[1]))
    with pytest.warns(UserWarning, match=r"fit parameters \['sample_weight'\]"):
        mlp = GridSearchCV(small_mlp(), {"alpha": [1e-4, 1e-1]}, cv=2).fit(*iris, sample_weight=w)
    refit = small_mlp(alpha=mlp.best_params_["alpha"]).fit(*iris, sample_weight=w)
    np.testing.assert_array_equal(mlp.best_estimator_.coefs_[0], refit.coefs_[0])
    assert np.abs(refit.coefs_[0] - small_mlp(alpha=mlp.best_params_["alpha"]).fit(*iris).coefs_[0]).max() > 1e-6
    with pytest.warns(UserWarning, match=r"fit parameters \['mlpclassifier__sample_weight'\]"):
        piped = GridSearchCV(make_pipeline(StandardScaler(), small_mlp()), {"mlpclassifier__alpha": [1e-4]},
                             cv=2).fit(*iris, mlpclassifier__sample_weight=w)
    scaled = StandardScaler().fit_transform(iris[0])
    np.testing.assert_allclose(piped.best_estimator_[-1].coefs_[0],
                               small_mlp().fit(scaled, iris[1], sample_weight=w).coefs_[0], rtol=1e-12)

    monkeypatch.setattr(sk.GridSearchCV, "fit", None)  # reaching the fallback would fail otherwise
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)
    with pytest.raises(ValueError, match="MLPClassifier.fit takes no 'coef_init'"):
        GridSearchCV(small_mlp(), {"alpha": [1e-4]}, cv=2).fit(*iris, coef_init=np.ones(3))
    with pytest.raises(ValueError, match=r"fit\(mlpclassifier__coef_init=...\)"):
        GridSearchCV(make_pipeline(StandardScaler(), small_mlp()), {"mlpclassifier__alpha": [1e-4]}, cv=2).fit(
            *iris, mlpclassifier__coef_init=np.ones(3))
    with pytest.raises(ValueError, match="takes no 'coef_init'"):
        HypergradSearchCV(small_mlp(), {"alpha": (1e-4, 1e-1, "log")}, cv=2).fit(*iris, coef_init=np.ones(3))


def test_hypergrad_search_descends_on_a_single_split():
    """One split (ShuffleSplit(n_splits=1), as scikit-learn's searches take it): the descent runs on
    that fold alone, every row is scored, and the picked row's score is the estimator's own fit on
    the split's training part scored on its validation part."""
    x, y = overlapping_classes()
    cv = sk.ShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
    search = HypergradSearchCV(LogisticRegression(), {"C": (0.01, 100.0, "log")}, budget=8, cv=cv,
                               scoring="neg_log_loss").fit(x, y)
    results = search.cv_results_
    assert search.n_splits_ == 1 and np.all(np.isfinite(results["split0_test_score"]))
    np.testing.assert_allclose(results["mean_test_score"], [-t.value for t in search.hybrid_result_.trials], rtol=1e-8)
    (train, val), = cv.split(x, y)
    alone = LogisticRegression(**search.best_params_).fit(x[train], y[train])
    assert search.best_score_ == pytest.approx(-log_loss(y[val], alone.predict_proba(x[val]), labels=[0, 1, 2]),
                                               rel=1e-6)


@pytest.mark.parametrize("labels", [None, ["setosa", "versicolor", "virginica"]])
def test_class_weight_dict_is_mapped_through_the_classes(labels):
    """A class_weight dict on the estimator (keyed by the labels, strings too) weighs each fold's fit
    as the estimator's own fit does: every split score equals that fit's, and differs from the
    unweighted search's."""
    x, y = overlapping_classes(labels=labels)
    names = np.unique(y)
    weights = dict(zip(names.tolist(), [1.0, 4.0, 0.5]))  # Python ints or strs, as users write them
    kwargs = {"cv": 3, "scoring": "neg_log_loss"}
    search = GridSearchCV(LogisticRegression(class_weight=weights), {"C": [0.1, 1.0]}, **kwargs).fit(x, y)
    plain = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, **kwargs).fit(x, y)
    results = search.cv_results_
    for s, (train, val) in enumerate(StratifiedKFold(3).split(x, y)):
        for c, params in enumerate(results["params"]):
            alone = LogisticRegression(class_weight=weights, **params).fit(x[train], y[train])
            expected = -log_loss(y[val], alone.predict_proba(x[val]), labels=names)
            assert results[f"split{s}_test_score"][c] == pytest.approx(expected, rel=1e-8)
    assert np.all(np.abs(results["mean_test_score"] - plain.cv_results_["mean_test_score"]) > 1e-3)
    np.testing.assert_array_equal(search.classes_, names)


def test_infinite_c_is_searched_as_no_penalty():
    """C=np.inf in a grid (scikit-learn's way to ask for no penalty) runs in the vmapped program as
    LogisticRegression(C=np.inf).fit does: equal to penalty=None and to scikit-learn's search."""
    x, y = overlapping_classes()
    kwargs = {"cv": 3, "scoring": "neg_log_loss", "refit": False}
    ours = GridSearchCV(LogisticRegression(), {"C": [1.0, np.inf]}, **kwargs).fit(x, y).cv_results_
    unpenalised = GridSearchCV(LogisticRegression(penalty=None), {"C": [1.0]}, **kwargs).fit(x, y).cv_results_
    theirs = sk.GridSearchCV(SklearnLogistic(tol=1e-10), {"C": [1.0, np.inf]}, **kwargs).fit(x, y).cv_results_
    assert ours["mean_test_score"][1] == pytest.approx(unpenalised["mean_test_score"][0], rel=1e-12)
    np.testing.assert_allclose(ours["mean_test_score"], theirs["mean_test_score"], rtol=1e-4)


# -- programs reused across fits: a second fit, nested cross-validation, other data of one shape -----------
def _continuous_search():
    distributions = {"alpha": scipy.stats.loguniform(1e-5, 1e-1), "learning_rate_init": scipy.stats.loguniform(1e-3, 0.1)}
    return RandomizedSearchCV(small_mlp(), distributions, n_iter=4, cv=3, random_state=0)


def _same_search(a, b):
    """Bit for bit the same search results: every score, the best candidate and its refit."""
    assert a.cv_results_["params"] == b.cv_results_["params"] and a.best_params_ == b.best_params_
    for name in a.cv_results_:
        if "test_score" in name:
            np.testing.assert_array_equal(a.cv_results_[name], b.cv_results_[name], err_msg=name)
    for got, want in zip(a.best_estimator_.coefs_ + a.best_estimator_.intercepts_,
                         b.best_estimator_.coefs_ + b.best_estimator_.intercepts_):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make", [
    _continuous_search,
    # structural choices: one program per configuration the planner makes, and the masked refit
    lambda: GridSearchCV(small_mlp(), {"activation": ["tanh", "relu"], "alpha": [1e-4, 0.5]}, cv=3),
    lambda: HypergradSearchCV(small_mlp(), {"alpha": (1e-5, 1e-1, "log")}, cv=3, budget=8),
], ids=["randomized", "grid-structural", "hypergrad"])
def test_a_second_fit_of_a_search_compiles_nothing(iris, make):
    """A new search object (as scikit-learn's clone makes) fitted again on the same data builds new
    families and objectives; their programs (the search's, the masked refit, the descent's) are
    those of the first fit, found by the estimator's settings and the folds' shapes: nothing is
    compiled, and every score and the refit are bit for bit the first fit's."""
    x, y = iris
    first = make().fit(x, y)
    before = len(BACKEND_COMPILES)
    second = make().fit(x, y)
    assert BACKEND_COMPILES[before:] == []
    _same_search(first, second)


def test_nested_cross_validation_compiles_the_inner_search_once(iris, monkeypatch):
    """cross_val_score of a search over outer folds of one size: the search's program (one for
    the inner folds of both sizes, padded: it was one per size) and its masked refit compile for
    the first outer fold only."""
    x, y = iris
    outer = sk.KFold(3, shuffle=True, random_state=0)
    sizes = {(len(t), len(v)) for train, _ in outer.split(x, y) for t, v in StratifiedKFold(3).split(x[train], y[train])}
    refits = []
    compile_jitted = _compile.compile_jitted
    monkeypatch.setattr(_compile, "compile_jitted", lambda *a: refits.append(a[2]) or compile_jitted(*a))
    hg.clear_caches()
    searches = _compile.stats.traces["search"]
    scores = sk.cross_val_score(_continuous_search(), x, y, cv=outer)
    assert len(sizes) == 2 and _compile.stats.traces["search"] - searches == 1
    assert [tag[0] for tag in refits] == ["sklearn-masked-refit"]
    assert np.all(np.isfinite(scores))


def test_other_data_of_the_same_shapes_reuses_the_programs_and_equals_a_fresh_compilation(iris):
    """A search on other data of the same shapes runs the programs compiled for the first data, and
    its results are bit for bit those of programs compiled for it afresh (after clear_caches)."""
    x, y = iris
    other = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape)
    _continuous_search().fit(x, y)
    before = len(BACKEND_COMPILES)
    reused = _continuous_search().fit(other, y)
    assert BACKEND_COMPILES[before:] == []
    hg.clear_caches()
    before = len(BACKEND_COMPILES)
    fresh = _continuous_search().fit(other, y)
    assert len(BACKEND_COMPILES) > before
    _same_search(reused, fresh)
    assert not np.array_equal(reused.cv_results_["mean_test_score"],
                              _continuous_search().fit(x, y).cv_results_["mean_test_score"])


@pytest.mark.parametrize("change", [{"momentum": 0.5}, {"max_iter": 6}, {"hidden_layer_sizes": (5,)}])
def test_a_setting_baked_into_the_program_gets_its_own(iris, change):
    """A parameter the search does not vary is part of its program (a constant such as sgd's
    momentum, or a structural setting): another value compiles another program, which computes
    that value's fits (equal to the estimators' own)."""
    x, y = iris
    grid = {"alpha": [1e-4, 0.5]}
    GridSearchCV(small_mlp(solver="sgd"), grid, cv=2, refit=False).fit(x, y)
    searches = _compile.stats.traces["search"]
    changed = GridSearchCV(small_mlp(solver="sgd").set_params(**change), grid, cv=2, refit=False).fit(x, y)
    assert _compile.stats.traces["search"] == searches + 1
    for s, (train, val) in enumerate(StratifiedKFold(2).split(x, y)):
        alone = small_mlp(solver="sgd", alpha=0.5).set_params(**change).fit(x[train], y[train])
        assert changed.cv_results_[f"split{s}_test_score"][1] == pytest.approx(alone.score(x[val], y[val]), abs=1e-9)


def test_program_owners_are_bounded_cleared_and_keyed_exactly(monkeypatch):
    """The owners a search's programs live under: one per key, least recently used dropped beyond
    the bound, none after clear_caches; keys tell apart values a program tells apart."""
    monkeypatch.setattr(_base, "_MAX_OWNERS", 2)
    a = _base.program_owner("a")
    assert _base.program_owner("a") is a
    _base.program_owner("b")
    _base.program_owner("c")
    assert len(_base._OWNERS) == 2 and _base.program_owner("a") is not a
    hg.clear_caches()
    assert len(_base._OWNERS) == 0
    frozen = _base.frozen
    assert frozen(1) != frozen(1.0) != frozen(True) and frozen(0.0) != frozen(-0.0) and frozen([1]) != frozen((1,))
    assert frozen({"a": [1, 2.0]}) == frozen({"a": [1, 2.0]}) and frozen(np.float32(0.1)) != frozen(0.1)
    assert small_mlp()._program_key({"alpha": [1.0]}) == small_mlp(alpha=3.0)._program_key({"alpha": [1e-3, 2.0]})
    assert small_mlp()._program_key({}) != small_mlp(alpha=3.0)._program_key({})
    assert small_mlp()._program_key({"activation": ["relu"]}) != small_mlp()._program_key({"activation": ["tanh"]})


def test_float32_accuracies_are_exact_fractions_and_tie_as_scikit_learns():
    """In float32 (x64 off, JAX's default; this suite runs in float64) the program's accuracy is
    hits / n rounded to float32 (49/50 was 0.97999996), so candidates with equal hit counts got
    different means and ranks. Read back as exact fractions, every split score, the means, ranks and
    the best candidate equal scikit-learn's own search over the same (float32) estimator: iris, C =
    1 and 100 tie at 146/150."""
    x, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 1.0, 100.0]}
    with jax.enable_x64(False):
        ours = GridSearchCV(LogisticRegression(), grid, cv=3).fit(x, y)
        theirs = sk.GridSearchCV(LogisticRegression(), grid, cv=3).fit(x, y)
        assert ours.best_estimator_.coef_.dtype == np.float32
    names = ["mean_test_score", "std_test_score", "rank_test_score", *(f"split{i}_test_score" for i in range(3))]
    for name in names:
        np.testing.assert_array_equal(ours.cv_results_[name], theirs.cv_results_[name], err_msg=name)
    np.testing.assert_array_equal(theirs.cv_results_["rank_test_score"], [3, 1, 1])  # the tie this test is about
    assert ours.best_params_ == theirs.best_params_ and ours.best_score_ == theirs.best_score_


def _diverging_regression():
    """30 examples on which sgd at learning_rate_init 1e12 diverges (non-finite weights) and 1e-3 fits."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 3)), rng.normal(size=30)


def _diverging_mlp():
    return MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0, solver="sgd")


def test_failed_fits_score_error_score_in_test_and_train_as_scikit_learns():
    """A diverged fit is a failed fit, as scikit-learn's search counts the ValueError its fit raises
    ("Solver produced non-finite parameter weights"): test and train scores both error_score, a
    FitFailedWarning, and the same cells as scikit-learn's own search over the same estimator."""
    x, y = _diverging_regression()
    grid = {"learning_rate_init": [1e-3, 1e12]}
    kwargs = dict(cv=3, error_score=-1.0, return_train_score=True, refit=False)
    with pytest.warns(FitFailedWarning, match="3 fits failed out of a total of 6"):
        ours = GridSearchCV(_diverging_mlp(), grid, **kwargs).fit(x, y)
    with pytest.warns(FitFailedWarning):
        theirs = sk.GridSearchCV(_diverging_mlp(), grid, **kwargs).fit(x, y)
    for kind in ("test", "train"):
        scores = np.stack([ours.cv_results_[f"split{s}_{kind}_score"] for s in range(3)])
        expected = np.stack([theirs.cv_results_[f"split{s}_{kind}_score"] for s in range(3)])
        np.testing.assert_array_equal(scores[:, 1], -1.0)
        np.testing.assert_array_equal(scores == -1.0, expected == -1.0)
        np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_every_fit_failed_raises_as_scikit_learns():
    """Every fit diverged: scikit-learn's "All the N fits failed" ValueError, not a NaN model."""
    x, y = _diverging_regression()
    with pytest.raises(ValueError, match="All the 3 fits failed"):
        GridSearchCV(_diverging_mlp(), {"learning_rate_init": [1e12]}, cv=3).fit(x, y)


def test_one_example_folds_score_nan_r2_and_are_not_failed_fits(regression):
    """R^2 of a one-example fold (LeaveOneOut) is undefined: NaN, as scikit-learn's r2_score, and the
    fit is not a failed one (no FitFailedWarning, no "all fits failed"): cv_results_ equal
    scikit-learn's own search."""
    x, y = regression[0][:8], regression[1][:8]
    grid = {"alpha": [0.1, 100.0]}
    with pytest.warns(UserWarning, match="test scores are non-finite") as record:  # scikit-learn's _format_results
        ours = GridSearchCV(Ridge(), grid, cv=sk.LeaveOneOut()).fit(x, y)
    assert not [w for w in record if issubclass(w.category, FitFailedWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's UndefinedMetricWarning, and its non-finite scores warning
        theirs = sk.GridSearchCV(SklearnRidge(), grid, cv=sk.LeaveOneOut()).fit(x, y)
    for name in ("split0_test_score", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(ours.cv_results_[name], theirs.cv_results_[name], err_msg=name)
    assert np.isnan(ours.cv_results_["mean_test_score"]).all() and ours.best_index_ == theirs.best_index_
    # the squared error of one example is defined: scored as scikit-learn's
    scored = GridSearchCV(Ridge(), grid, cv=sk.LeaveOneOut(), scoring="neg_mean_squared_error").fit(x, y)
    assert np.isfinite(scored.cv_results_["mean_test_score"]).all()


def test_per_target_alpha_arrays_fall_back_to_scikit_learns_search():
    """Ridge's per-target alpha (an array, which Ridge.fit takes) is not one traced number: the grid
    runs in scikit-learn's own search, with a warning, as its results show; the family names it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = x @ rng.normal(size=(3, 2))
    grid = {"alpha": [np.array([0.1, 10.0]), np.array([10.0, 0.1])]}
    with pytest.warns(UserWarning, match="alpha=array.*not a single number"):
        ours = GridSearchCV(Ridge(), grid, cv=3).fit(x, y)
    theirs = sk.GridSearchCV(Ridge(), grid, cv=3).fit(x, y)
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    with pytest.raises(ValueError, match=r"varying\['alpha'\].*not a single number"):
        Ridge()._family((x, y), (x, y), varying={"alpha": grid["alpha"]})


def _convergence_warnings(fit):
    """(fit's result, the messages of the ConvergenceWarnings raised while it ran, each one shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit()
    return result, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_fits_that_reach_max_iter_warn_once_with_the_count_scikit_learns_search_warns(iris):
    """scikit-learn's search warns once per candidate x fold fit that ran all max_iter epochs
    without its stopping rule stopping it; the vmapped search (which warned only for its refit) gives
    one ConvergenceWarning counting as many, and `hypergrad_not_converged_` marks which, read from
    the search's own program (a second search at other rates compiles nothing). A rate too small to
    change the loss stops every fit after n_iter_no_change + 2 = 3 epochs in both libraries; a
    usable one still improves at max_iter=5; a search whose fits all stop is silent."""
    x, y = iris
    params = dict(hidden_layer_sizes=(4,), max_iter=5, n_iter_no_change=1, random_state=0)
    grid = {"learning_rate_init": [1e-9, 0.05]}
    _, expected = _convergence_warnings(
        lambda: sk.GridSearchCV(SklearnMLP(**params), grid, cv=3, refit=False).fit(x, y))
    assert len(expected) == 3
    search, messages = _convergence_warnings(lambda: GridSearchCV(MLPClassifier(**params), grid, cv=3,
                                                                  refit=False).fit(x, y))
    assert len(messages) == 1 and messages[0].startswith(f"{len(expected)} of the 6 candidate x fold fits (1 of "
                                                         "the 2 candidates, on 3 folds each) reached max_iter=5")
    assert "Increase max_iter" in messages[0]
    np.testing.assert_array_equal(search.hypergrad_not_converged_, [[False] * 3, [True] * 3])
    before = len(BACKEND_COMPILES)
    quiet, messages = _convergence_warnings(lambda: GridSearchCV(MLPClassifier(**params), {
        "learning_rate_init": [1e-9, 1e-8]}, cv=3, refit=False).fit(x, y))
    assert BACKEND_COMPILES[before:] == []
    assert messages == [] and not quiet.hypergrad_not_converged_.any()
    _, expected = _convergence_warnings(lambda: sk.GridSearchCV(SklearnMLP(**params), {
        "learning_rate_init": [1e-9, 1e-8]}, cv=3, refit=False).fit(x, y))
    assert expected == []


@pytest.mark.parametrize("max_iter", [1, 100])
def test_logistic_search_warns_for_the_fits_whose_own_fit_warns(iris, max_iter):
    """LogisticRegression's Newton solve warns in `fit` when it ends at max_iter above tol; its
    search counts exactly the candidate x fold fits whose own fit warns (one Newton step converges
    none of them; a hundred converge all, and the search is silent)."""
    x, y = iris
    grid = {"C": [0.1, 10.0]}
    folds = list(StratifiedKFold(3).split(x, y))
    expected = np.asarray([[len(_convergence_warnings(lambda: LogisticRegression(max_iter=max_iter, C=c).fit(
        x[train], y[train]))[1]) == 1 for train, _ in folds] for c in grid["C"]])
    assert expected.all() if max_iter == 1 else not expected.any()
    search, messages = _convergence_warnings(lambda: GridSearchCV(LogisticRegression(max_iter=max_iter), grid, cv=3,
                                                                  refit=False).fit(x, y))
    np.testing.assert_array_equal(search.hypergrad_not_converged_, expected)
    assert len(messages) == int(expected.any())
    assert not messages or messages[0].startswith(f"{expected.sum()} of the 6 candidate x fold fits")


def test_masked_refit_compiles_at_the_callers_float_width(iris):
    """The masked refit compiles on a thread of its own; JAX's `enable_x64` context is per thread,
    so under `with jax.enable_x64(False)` in a float64 process it compiled for float64 and the
    refit raised "Argument types differ" when called with the caller's float32 arguments. It now
    compiles at the caller's width and the refit is float32, as the estimator's own fit."""
    x, y = iris
    with jax.enable_x64(False):
        search = GridSearchCV(small_mlp(), {"activation": ["tanh", "relu"]}, cv=2).fit(x, y)
        alone = small_mlp(**search.best_params_).fit(x, y)
    assert search.best_estimator_.coefs_[0].dtype == alone.coefs_[0].dtype == np.float32
    np.testing.assert_allclose(search.best_estimator_.coefs_[0], alone.coefs_[0], rtol=1e-5, atol=1e-6)


def _flipped_example():
    """Two 1-D clusters and one label flipped deep inside class 0 (x = -25): a fit that trusts the
    clusters gives that example a probability far below machine epsilon."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 0.5, 30), rng.normal(3, 0.5, 30)])[:, None]
    x[5] = -25.0
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    y[5] = 1
    return x, y


@pytest.mark.parametrize("estimator, grid, x64", [
    (LogisticRegression(), {"C": [1.0, 1e4]}, True),
    (MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, learning_rate_init=0.05, random_state=0),
     {"alpha": [1e-4, 10.0]}, False),
], ids=["logistic-float64", "mlp-float32"])
def test_neg_log_loss_clips_probabilities_as_scikit_learns_scorer(estimator, grid, x64):
    """scikit-learn's `neg_log_loss` clips probabilities to [eps, 1 - eps] (eps of predict_proba's
    dtype, float64 in either float width), so a confidently misclassified held-out example costs at
    most -log(eps) = 36.04.
    The in-program log loss was unclipped (that fold scored -4.87 where scikit-learn's -1.80), and
    the vmapped search picked another candidate than scikit-learn's own search over the same
    estimator (and than hypergrad's own fallback path). Every split score and the pick now agree."""
    x, y = _flipped_example()
    cv = sk.KFold(3, shuffle=True, random_state=0)
    with jax.enable_x64(x64):
        ours = GridSearchCV(estimator, grid, scoring="neg_log_loss", cv=cv).fit(x, y)
        theirs = sk.GridSearchCV(estimator, grid, scoring="neg_log_loss", cv=cv).fit(x, y)
    for s in range(3):
        np.testing.assert_allclose(ours.cv_results_[f"split{s}_test_score"], theirs.cv_results_[f"split{s}_test_score"],
                                   rtol=1e-9 if x64 else 1e-5, err_msg=f"split{s}")
    assert ours.best_params_ == theirs.best_params_


@pytest.mark.parametrize("estimator, grid, change", [
    (small_mlp(), {"alpha": [1e-4, 0.5]}, {"random_state": 1}),
    (small_mlp(), {"alpha": [1e-4, 0.5]}, {"verbose": True, "max_fun": 20000}),
    (LogisticRegression(), {"C": [0.1, 10.0]}, {"random_state": 1, "solver": "newton-cg", "verbose": 1}),
], ids=["mlp-seed", "mlp-unread", "logistic-unread"])
def test_parameters_no_program_reads_share_the_programs(iris, estimator, grid, change):
    """A search whose estimator differs only in `random_state` (an argument of the programs: the
    training key) or in parameters no program reads compiled its whole program again (the key held
    every parameter), where `fit` compiled nothing: a study repeated over seeds paid every compile.
    It now reuses the programs, and its results are those of programs compiled for it afresh."""
    x, y = iris
    def search(estimator):  # log-loss: a continuous score, which another seed's fits change
        return GridSearchCV(estimator, grid, cv=2, refit=False, scoring="neg_log_loss").fit(x, y)

    first = search(estimator)
    before = len(BACKEND_COMPILES)
    changed = search(sklearn_clone(estimator).set_params(**change))
    assert BACKEND_COMPILES[before:] == []
    hg.clear_caches()
    fresh = search(sklearn_clone(estimator).set_params(**change))
    for name in changed.cv_results_:
        if "test_score" in name:
            np.testing.assert_array_equal(changed.cv_results_[name], fresh.cv_results_[name], err_msg=name)
    if "random_state" in change and isinstance(estimator, MLPClassifier):  # the seed is read: other fits
        assert not np.array_equal(first.cv_results_["split0_test_score"], changed.cv_results_["split0_test_score"])



def test_the_seed_keys_a_program_only_where_it_draws_baked_data():
    """`random_state` (and parameters no program reads) are left out of a program's key, except
    while early stopping bakes the held-out split, drawn with the seed, into the program."""
    assert small_mlp()._program_key({}) == small_mlp(verbose=True).set_params(random_state=3)._program_key({})
    assert LogisticRegression()._program_key({}) == LogisticRegression(random_state=3, solver="saga")._program_key({})
    assert small_mlp()._program_key({}) != small_mlp().set_params(max_iter=9)._program_key({})
    baking = small_mlp(early_stopping=True)
    assert baking._program_key({}) != sklearn_clone(baking).set_params(random_state=3)._program_key({})
    varying = {"early_stopping": [False, True]}
    assert small_mlp()._program_key(varying) != small_mlp().set_params(random_state=3)._program_key(varying)


@pytest.mark.parametrize("cv,groups", [(sk.TimeSeriesSplit(3), None),
                                       (sk.GroupKFold(3), np.repeat([0, 1, 2], [6, 6, 36]))])
def test_hypergrad_search_on_folds_of_unequal_sizes_runs_scikit_learns_search_where_padding_is_not_exact(
        regression, cv, groups, monkeypatch):
    """Folds whose train or val sizes differ by more than one example (TimeSeriesSplit's growing
    windows, GroupKFold's unequal groups) cannot be cut to one size without changing the fits, nor
    padded where padding is not exact (an MLP fitted in minibatches; Ridge made so here, as Ridge
    itself is padded: test_sklearn_fold_sizes): scikit-learn's own search runs them, with a warning
    naming why, and every split score is the fit on that fold's full training part, scored on its
    full validation part."""
    x, y = regression
    monkeypatch.setattr(Ridge, "_paddable", lambda self, fits, sizes: False)
    with pytest.warns(UserWarning, match="differ by more than one example"):
        search = HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3, "log")}, cv=cv, n_iter=3, random_state=0,
                                   scoring="neg_mean_squared_error").fit(x, y, groups=groups)
    assert not hasattr(search, "hybrid_result_")
    for row, params in enumerate(search.cv_results_["params"]):
        expected = sk.cross_val_score(SklearnRidge(**params), x, y, cv=cv, groups=groups,
                                      scoring="neg_mean_squared_error")
        scores = [search.cv_results_[f"split{s}_test_score"][row] for s in range(3)]
        np.testing.assert_allclose(scores, expected, rtol=1e-8)


def test_hypergrad_search_descends_folds_that_differ_by_one_example_in_full(regression):
    """KFold(5) on 48 examples (val parts of 10 and 9): the folds are padded with weight-0 rows to
    the largest train and val sizes (exact for Ridge) and descended in one program, without a
    fallback; each split score is the fit on the fold's full training part scored on its full
    validation part, as scikit-learn's (they were cut to the smallest sizes before)."""
    x, y = regression
    cv = sk.KFold(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        search = HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3, "log")}, cv=cv, budget=6,
                                   scoring="neg_mean_squared_error").fit(x, y)
    folds = list(cv.split(x))
    assert len({len(v) for _, v in folds}) == 2
    row = search.best_index_
    for s, (train, val) in enumerate(folds):
        alone = SklearnRidge(**search.best_params_).fit(x[train], y[train])
        expected = -np.mean((alone.predict(x[val]) - y[val]) ** 2)
        assert search.cv_results_[f"split{s}_test_score"][row] == pytest.approx(expected, rel=1e-8)


def _minority_last():
    """60 examples, the 3 of class 1 last: KFold(3)'s fold 2 trains on class 0 alone."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 3)), np.r_[np.zeros(57, int), np.ones(3, int)]


@pytest.mark.parametrize("make", [
    lambda **kw: GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=sk.KFold(3), **kw),
    lambda **kw: HypergradSearchCV(LogisticRegression(), {"C": (0.1, 10.0, "log")}, cv=sk.KFold(3), budget=8, **kw),
])
@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite:UserWarning")
def test_a_fold_training_on_one_class_is_a_failed_fit_as_scikit_learns(make):
    """A fold whose training part holds a single class is a fit the estimator's own fit refuses
    ("needs samples of at least 2 classes"): as scikit-learn's search, its score is error_score with
    a FitFailedWarning naming it, the other folds are scored, and error_score="raise" raises the
    fit's error before anything compiles."""
    x, y = _minority_last()
    with pytest.warns(FitFailedWarning, match="training part holds one class"):
        search = make(error_score=-7.0).fit(x, y)
    results = search.cv_results_
    assert np.all(results["split2_test_score"] == -7.0)
    assert np.all(np.isfinite(results["split0_test_score"])) and np.all(results["split0_test_score"] != -7.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        make(error_score="raise").fit(x, y)


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite:UserWarning")
def test_the_one_class_fold_matches_scikit_learns_search():
    """The fold training on one class: the same split and mean scores (NaN there) as scikit-learn's
    own search over its LogisticRegression."""
    x, y = _minority_last()
    with pytest.warns(FitFailedWarning):
        ours = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=sk.KFold(3)).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sk.GridSearchCV(SklearnLogistic(), {"C": [0.1, 1.0]}, cv=sk.KFold(3)).fit(x, y)
    for name in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
        np.testing.assert_array_equal(ours.cv_results_[name], theirs.cv_results_[name], err_msg=name)


@pytest.mark.parametrize("make,where,match", [
    (lambda: GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=3), "y", "Input y contains NaN"),
    (lambda: HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3, "log")}, cv=3, budget=4), "y", "Input y contains NaN"),
    (lambda: GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=3), "X", "Input X contains NaN"),
    (lambda: HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3, "log")}, cv=3, budget=4), "X", "Input X contains NaN"),
    (lambda: GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3), "X", "Input X contains NaN"),
])
def test_nan_in_the_data_is_refused_naming_x_or_y_before_compiling(make, where, match, monkeypatch):
    """NaN in a regressor's y, or in X, is refused up front with scikit-learn's message naming y or X,
    as the estimator's own fit refuses it, not with the message of an internal argument."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = x @ [1.0, 2.0, 3.0]
    if isinstance(make().estimator, LogisticRegression):
        y = (y > 0).astype(int)
    (y if where == "y" else x)[5] = np.nan
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(ValueError, match=match):
        make().fit(x, y)


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite:UserWarning")
def test_hypergrad_search_descends_only_the_folds_a_fit_accepts():
    """The fold training on one class, refused as a failed fit, was still descended on: its fit (one
    scikit-learn's search never makes) entered the mean loss the hypergradients follow. Now the
    descent is exactly the one on the other folds alone, and that fold's scores are error_score."""
    x, y = _minority_last()
    folds = list(sk.KFold(3).split(x))
    with pytest.warns(FitFailedWarning, match="fold 2, whose training part holds one class"):
        ours = HypergradSearchCV(LogisticRegression(), {"C": (0.1, 10.0, "log")}, cv=folds, budget=6, refit=False,
                                 error_score=-7.0).fit(x, y)
    alone = HypergradSearchCV(LogisticRegression(), {"C": (0.1, 10.0, "log")}, cv=folds[:2], budget=6,
                              refit=False).fit(x, y)
    assert [t.value for t in ours.hybrid_result_.trials] == [t.value for t in alone.hybrid_result_.trials]
    for s in (0, 1):
        np.testing.assert_array_equal(ours.cv_results_[f"split{s}_test_score"], alone.cv_results_[f"split{s}_test_score"])
    assert np.all(ours.cv_results_["split2_test_score"] == -7.0)


@pytest.mark.parametrize("make", [
    lambda: GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=sk.KFold(2)),
    lambda: HypergradSearchCV(LogisticRegression(), {"C": (0.1, 10.0, "log")}, cv=sk.KFold(2), budget=4),
])
def test_every_fold_training_on_one_class_fails_before_compiling(make, monkeypatch):
    """Every fold's training part holds one class: scikit-learn's "All the N fits failed", naming the
    folds, raised before anything compiles (it came after fitting every candidate x fold)."""
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(ValueError, match=r"All the \d+ fits failed(.|\n)*fold 1, whose training part holds one class"):
        make().fit(x, y)
