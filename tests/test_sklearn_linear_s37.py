"""LogisticRegression against scikit-learn 1.9's own (session 37): an l1_ratio beside an explicit
penalty is ignored and the l2 model fitted; liblinear without a penalty, or on other than two
classes, is refused with scikit-learn's error type; searches give the fit warnings of their fold
fits (the penalty FutureWarning) with refit=False too."""

import warnings

import numpy as np
import pytest
import sklearn.linear_model as sk_linear
import sklearn.model_selection as sk_selection
from sklearn.exceptions import ConvergenceWarning

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, RandomizedSearchCV
from hypergrad.sklearn import _linear

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
Y = (X[:, 0] + RNG.normal(size=40) > 0).astype(int)  # overlapping classes: the unpenalised optimum is finite
Y3 = np.digitize(X[:, 1], [-0.5, 0.5])


def fitted(cls, params, y=Y):
    """(the fitted estimator or the exception raised, [(category, message)] of every warning but
    ConvergenceWarning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = cls(**params).fit(X, y)
        except Exception as error:  # noqa: BLE001 - compared with scikit-learn's
            out = error
    return out, [(w.category, str(w.message)) for w in caught if not issubclass(w.category, ConvergenceWarning)]


@pytest.mark.parametrize("params, same_as", [
    ({"penalty": "l2", "l1_ratio": 0.5}, {}),
    ({"penalty": "l2", "l1_ratio": 1.0}, {}),
    ({"penalty": "l2", "l1_ratio": 0.5, "solver": "saga"}, {}),
    ({"penalty": None, "l1_ratio": 0.5}, {"C": np.inf}),
    ({"penalty": None, "l1_ratio": 1.0}, {"C": np.inf}),
    ({"C": np.inf, "l1_ratio": 0.5}, {"C": np.inf}),
], ids=repr)
def test_an_ignored_l1_ratio_fits_the_l2_model_as_scikit_learn(params, same_as):
    """scikit-learn ignores l1_ratio beside an explicit penalty (and under C=np.inf), warns so and
    fits the l2 (or unpenalised) model; ours refused after the same warnings."""
    params = {**params, "tol": 1e-10}
    ours, ours_warned = fitted(LogisticRegression, params)
    theirs, their_warned = fitted(sk_linear.LogisticRegression, {**params, "max_iter": 10000})
    assert isinstance(theirs, sk_linear.LogisticRegression)
    assert isinstance(ours, LogisticRegression), ours
    assert ours_warned == their_warned
    plain = LogisticRegression(**same_as, tol=1e-10).fit(X, Y)  # the l2 (or unpenalised) fit, l1_ratio at its default
    np.testing.assert_array_equal(ours.coef_, plain.coef_)
    np.testing.assert_array_equal(ours.intercept_, plain.intercept_)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("params", [
    {"solver": "liblinear", "penalty": None}, {"solver": "liblinear", "C": np.inf},
    {"solver": "liblinear", "penalty": None, "C": 2.0}, {"solver": "liblinear", "penalty": None, "l1_ratio": 0.5},
], ids=repr)
def test_liblinear_without_penalty_is_refused_as_scikit_learn(params, monkeypatch):
    """scikit-learn's fit raises ValueError (its solver check) for liblinear without a penalty; ours
    fitted. Same type and warnings before it, naming the setting and the fix, before anything compiles."""
    theirs, their_warned = fitted(sk_linear.LogisticRegression, params)
    assert isinstance(theirs, ValueError)

    def no_program(*args, **kwargs):
        raise AssertionError("a program was built")

    monkeypatch.setattr(_linear, "cached_program", no_program)
    ours, ours_warned = fitted(LogisticRegression, params)
    assert isinstance(ours, ValueError), ours
    assert "solver='liblinear'" in str(ours) and "solver='lbfgs'" in str(ours)
    assert ours_warned == their_warned


def test_a_search_refuses_liblinear_without_penalty_before_fitting():
    """A candidate scikit-learn's fit refuses is refused by the search (as the estimator's other refusals)."""
    with pytest.raises(ValueError, match="solver='liblinear'"):
        GridSearchCV(LogisticRegression(C=np.inf), {"solver": ["lbfgs", "liblinear"]}, cv=2).fit(X, Y)


@pytest.mark.parametrize("y, x", [(Y3, X), (np.zeros(40, int), X), (Y, np.vstack([X[:-1], [[2e30, 0.0, 0.0]]]))],
                         ids=["three classes", "one class", "x above 1e30"])
def test_liblinear_refuses_the_data_scikit_learns_refuses(y, x):
    """scikit-learn's liblinear refuses other than two classes, and X above 1e30; ours fitted (or
    gave the lbfgs message for one class). Same type and words."""
    with pytest.raises(ValueError) as theirs:
        sk_linear.LogisticRegression(solver="liblinear").fit(x, y)
    with pytest.raises(ValueError) as ours:
        LogisticRegression(solver="liblinear").fit(x, y)
    assert str(ours.value) == str(theirs.value)


def search_warnings(search):
    """The distinct (category, message) of a search's fit's warnings, but ConvergenceWarning and
    hypergrad's own notes of unread hyperparameters, in first-seen order; and their count."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(X, Y)
    seen = [(w.category, str(w.message)) for w in caught if not issubclass(w.category, ConvergenceWarning)
            and "never reads" not in str(w.message)]
    return list(dict.fromkeys(seen)), len(seen)


@pytest.mark.parametrize("params", [{"penalty": "l2"}, {"penalty": "l2", "l1_ratio": 0.5}, {"n_jobs": 1}, {}],
                         ids=repr)
@pytest.mark.parametrize("kind", ["grid", "randomized"])
def test_a_search_without_refit_warns_as_scikit_learns_fold_fits(params, kind):
    """scikit-learn's search gives its LogisticRegression.fit's warnings (the penalty FutureWarning)
    once per fold fit, refit=False too; ours gave none without a refit. Now the same warnings,
    each once."""
    grid = {"C": [0.1, 1.0]}
    theirs, _ = search_warnings(sk_selection.GridSearchCV(sk_linear.LogisticRegression(**params), grid, cv=2,
                                                          refit=False))
    ours_search = (GridSearchCV(LogisticRegression(**params), grid, cv=2, refit=False) if kind == "grid" else
                   RandomizedSearchCV(LogisticRegression(**params), grid, n_iter=2, cv=2, refit=False, random_state=0))
    ours, count = search_warnings(ours_search)
    assert ours == theirs
    assert count == len(ours)  # each once


def test_hypergrad_search_without_refit_warns_of_the_penalty():
    """HypergradSearchCV(refit=False) over LogisticRegression(penalty='l2') gave no FutureWarning,
    where a scikit-learn search's fold fits give it."""
    search = HypergradSearchCV(LogisticRegression(penalty="l2", max_iter=5), {"C": (0.1, 10.0, "log")}, cv=2,
                               budget=4, refit=False, random_state=0)
    ours, count = search_warnings(search)
    assert ours == [(FutureWarning, _linear.PENALTY_DEPRECATED)] and count == 1
