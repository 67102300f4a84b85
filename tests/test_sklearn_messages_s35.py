"""hypergrad.sklearn's searches say what scikit-learn's estimators say about missing or bad data
(session 35).

`search.fit(X)` without y raised an IndexError or "y should be a 1d array, got an array of shape
()" from inside the library; now it raises the estimator's own "requires y to be passed" ValueError
before anything compiles.
"""

import numpy as np
import pytest
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
