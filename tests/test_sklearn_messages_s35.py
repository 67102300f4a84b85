"""hypergrad.sklearn's searches say what scikit-learn's estimators say about missing or bad data
(session 35).

`search.fit(X)` without y raised an IndexError or "y should be a 1d array, got an array of shape
()" from inside the library; now it raises the estimator's own "requires y to be passed" ValueError
before anything compiles. NaN that a Pipeline step passes through to the estimator gave a bare
"Input contains NaN."; now it is scikit-learn's full message, naming X, the estimator and an imputer.
"""

import numpy as np
import pytest
from sklearn import model_selection as sk
from sklearn.exceptions import FitFailedWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hypergrad.sklearn import (GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier, MLPRegressor,
                               RandomizedSearchCV, Ridge)

from _helpers import iris_head

MLP = dict(hidden_layer_sizes=(4,), max_iter=8, learning_rate_init=0.05, random_state=0)


@pytest.mark.parametrize("make", [
    lambda: GridSearchCV(MLPClassifier(**MLP), {"alpha": [1e-4, 1e-2]}, cv=2),
    lambda: GridSearchCV(MLPRegressor(**MLP), {"alpha": [1e-4, 1e-2]}, cv=2, error_score="raise"),
    lambda: RandomizedSearchCV(LogisticRegression(), {"C": [1.0, 2.0]}, n_iter=2, cv=2),
    lambda: GridSearchCV(Ridge(), {"alpha": [1.0, 2.0]}, cv=2),
    lambda: HypergradSearchCV(Ridge(), {"alpha": (0.1, 10.0, "log")}, cv=2, budget=4),
    lambda: GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(**MLP)), {"mlpclassifier__alpha": [1e-4]}),
])
def test_a_search_fitted_without_y_raises_the_estimators_own_error_before_compiling(make, monkeypatch):
    """search.fit(X): the ValueError the final estimator's own fit(X, None) raises, word for word."""
    x, _ = iris_head(10)
    search = make()
    final = search.estimator.steps[-1][1] if hasattr(search.estimator, "steps") else search.estimator
    with pytest.raises(ValueError) as own:
        final.fit(x, None)
    assert "requires y to be passed, but the target y is None" in str(own.value)
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(ValueError) as raised:
        search.fit(x)
    assert str(raised.value) == str(own.value)


def nan_through_a_scaler():
    """60 iris examples with one NaN, which a StandardScaler in front passes through to the estimator."""
    x, y = iris_head(20)
    x = x.copy()
    x[3, 1] = np.nan
    return x, y


def test_nan_through_a_pipeline_step_is_refused_with_scikit_learns_full_message():
    """NaN reaching the estimator through a Pipeline step gave a bare "Input contains NaN."; now it is
    scikit-learn's own message (check_array with input_name="X" and the estimator), naming X, the
    estimator and an imputer, word for word as scikit-learn's search raises it with
    error_score="raise"."""
    x, y = nan_through_a_scaler()
    with pytest.raises(ValueError) as theirs:
        sk.GridSearchCV(make_pipeline(StandardScaler(), SklearnMLP(**MLP)), {"mlpclassifier__alpha": [1e-4]}, cv=3,
                        error_score="raise").fit(x, y)
    with pytest.raises(ValueError) as ours:
        GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(**MLP)), {"mlpclassifier__alpha": [1e-4]}, cv=3,
                     error_score="raise").fit(x, y)
    assert str(ours.value) == str(theirs.value)
    assert "Input X contains NaN." in str(ours.value) and "MLPClassifier does not accept missing values" in str(
        ours.value) and "imputer" in str(ours.value)


def test_nan_through_a_pipeline_step_with_error_score_nan_fails_those_fits_with_the_full_message():
    """error_score=nan: the folds whose training part holds the NaN are failed fits whose
    FitFailedWarning gives scikit-learn's full message; the refit on all of X then raises it, as
    scikit-learn's search's refit does."""
    x, y = nan_through_a_scaler()
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(**MLP)), {"mlpclassifier__alpha": [1e-4]},
                          cv=3)
    with pytest.warns(FitFailedWarning, match="(?s)Input X contains NaN.*MLPClassifier does not accept missing"):
        with pytest.raises(ValueError, match="(?s)Input X contains NaN.*imputer"):
            search.fit(x, y)
