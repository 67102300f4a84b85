"""The searches refuse a setting the hypergrad estimator refuses (an l1 penalty, positive=True,
solver="lbfgs", ...) with that estimator's named `ValueError`, before any fit, also when they hand
the search to scikit-learn's own (a scoring or fit parameter the vmapped program does not compute, a
parameter HypergradSearchCV does not trace): README, scikit-learn front end. Before, scikit-learn's
search fitted them one by one and recorded NaN scores with a FitFailedWarning, or raised its
generic "All the N fits failed"."""

import functools
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import Ridge as SklearnRidge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier, RandomizedSearchCV
from hypergrad.sklearn import Ridge

L1 = r"LogisticRegression\(penalty='l1'\) is not supported.*use penalty='l2'"
POSITIVE = r"Ridge\(positive=True\) is not supported.*use positive=False"


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X[::3], y[::3]


@pytest.fixture
def fits(monkeypatch):
    """The number of fits the hypergrad estimators ran (none may run before a refusal)."""
    count = {"fits": 0}

    def counting(fit):
        @functools.wraps(fit)  # its signature too: the searches read which fit parameters it takes
        def counted(self, *args, **kwargs):
            count["fits"] += 1
            return fit(self, *args, **kwargs)
        return counted

    for cls in (LogisticRegression, Ridge, MLPClassifier):
        monkeypatch.setattr(cls, "fit", counting(cls.fit))
    return count


def _refused(search, match, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback's own warning, naming why it falls back
        with pytest.raises(ValueError, match=match):
            search.fit(X, y, **params)


def test_grid_search_falling_back_for_its_scoring_refuses_an_l1_penalty(iris, fits):
    search = GridSearchCV(LogisticRegression(), {"penalty": ["l2", "l1"]}, cv=2, scoring="balanced_accuracy")
    _refused(search, L1, *iris)
    assert fits["fits"] == 0


def test_randomized_search_falling_back_for_sample_weight_refuses_positive(iris, fits):
    X, y = iris
    search = RandomizedSearchCV(Ridge(), {"positive": [False, True], "alpha": [0.1, 1.0]}, n_iter=4, cv=2,
                                random_state=0)
    _refused(search, POSITIVE, X, y.astype(float), sample_weight=np.ones(len(y)))
    assert fits["fits"] == 0


def test_a_pipeline_falling_back_refuses_its_final_steps_lbfgs(iris, fits):
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=2)),
                          {"mlpclassifier__solver": ["adam", "lbfgs"]}, cv=2, scoring="balanced_accuracy")
    _refused(search, r"MLPClassifier\(solver='lbfgs'\) is not available", *iris)
    assert fits["fits"] == 0


def test_hypergrad_search_falling_back_for_an_untraced_parameter_refuses_it(iris, fits):
    X, y = iris
    _refused(HypergradSearchCV(LogisticRegression(), {"penalty": ["l2", "l1"], "C": (0.1, 10.0, "log")}, cv=2,
                               budget=4, random_state=0), L1, X, y)
    _refused(HypergradSearchCV(Ridge(), {"positive": [True], "alpha": (0.1, 10.0, "log")}, cv=2, budget=4,
                               random_state=0), POSITIVE, X, y.astype(float))
    assert fits["fits"] == 0


def test_a_fallback_whose_candidates_are_all_supported_still_runs(iris):
    X, y = iris
    with pytest.warns(UserWarning, match="scoring='explained_variance'"):
        search = GridSearchCV(Ridge(), {"positive": [False], "alpha": [0.1, 1.0]}, cv=2,
                              scoring="explained_variance").fit(X, y.astype(float))
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_scikit_learns_own_estimator_keeps_scikit_learns_failed_fits(iris):
    """Not a hypergrad estimator: its bad candidate is a failed fit, as in scikit-learn's search."""
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(FitFailedWarning):
            search = GridSearchCV(SklearnRidge(), {"alpha": [1.0, -1.0]}, cv=2).fit(X, y.astype(float))
    assert np.isfinite(search.cv_results_["mean_test_score"][0])
    assert np.isnan(search.cv_results_["mean_test_score"][1])


FALLBACK = "running scikit-learn's own"


@pytest.mark.parametrize("make,params,match", [
    (lambda: GridSearchCV(LogisticRegression(), {"penalty": ["l2", "l1"]}, cv=2, scoring="balanced_accuracy"), {},
     L1),
    (lambda: RandomizedSearchCV(Ridge(), {"positive": [False, True], "alpha": [0.1, 1.0]}, n_iter=4, cv=2,
                                random_state=0), {"sample_weight": True}, POSITIVE),
    (lambda: HypergradSearchCV(LogisticRegression(), {"penalty": ["l2", "l1"], "C": (0.1, 10.0, "log")}, cv=2,
                               budget=4, random_state=0), {}, L1),
])
def test_a_refused_fallback_raises_without_first_warning_that_it_runs(iris, make, params, match):
    """The refusal comes first: no "running scikit-learn's own ... instead" warning before an error
    (before, the warning said the fallback would run, then the refusal stopped it)."""
    X, y = iris
    search = make()
    if isinstance(search.estimator, Ridge):
        y = y.astype(float)
    fit_params = {"sample_weight": np.ones(len(y))} if params else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=match):
            search.fit(X, y, **fit_params)
    assert [str(w.message) for w in caught if FALLBACK in str(w.message)] == []


@pytest.mark.parametrize("make", [
    lambda: GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=2, scoring="explained_variance"),
    lambda: HypergradSearchCV(Ridge(), {"alpha": (0.1, 10.0, "log")}, cv=2, n_iter=2, random_state=0,
                              scoring="explained_variance"),
])
def test_a_fallback_that_fits_warns_once_at_the_users_line(iris, make):
    """The warning comes when the fallback fits, once, pointed at the line that called fit."""
    X, y = iris
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = make().fit(X, y.astype(float))
    notices = [w for w in caught if FALLBACK in str(w.message)]
    assert len(notices) == 1 and notices[0].filename == __file__, [(w.filename, str(w.message)) for w in notices]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
