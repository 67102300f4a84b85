"""A search refitted on a path that falls back to scikit-learn's own search (session 35).

`hypergrad_info_`, `hypergrad_not_converged_` (and HypergradSearchCV's `hybrid_result_`) describe a
vmapped fit; after a later fit that fell back to scikit-learn's search they still described the
earlier fit (3 candidates against cv_results_'s 2), though the docstring says neither is set then.
"""

import numpy as np
import pytest

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, Ridge

from _helpers import iris_head

HYPERGRAD_ATTRIBUTES = ("hypergrad_info_", "hypergrad_not_converged_", "hybrid_result_")


def test_a_fallback_fit_leaves_no_attribute_of_the_previous_vmapped_fit():
    x, y = iris_head(10)
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3)
    search.fit(x, y)
    assert search.hypergrad_not_converged_.shape == (3, 3)
    search.set_params(param_grid={"C": [5.0, 50.0]})
    with pytest.warns(UserWarning, match="running scikit-learn's own GridSearchCV"):
        search.fit(x, y, sample_weight=np.ones(len(y)))  # fit parameters fall back
    assert len(search.cv_results_["params"]) == 2
    assert not any(hasattr(search, name) for name in HYPERGRAD_ATTRIBUTES)


def test_a_hypergrad_search_falling_back_leaves_no_attribute_of_its_previous_descent():
    x, y = iris_head(10)
    search = HypergradSearchCV(Ridge(), {"alpha": (0.1, 10.0, "log")}, cv=3, budget=4, n_iter=2, random_state=0)
    search.fit(x, y.astype(float))
    assert all(hasattr(search, name) for name in HYPERGRAD_ATTRIBUTES)
    search.set_params(return_train_score=True)
    with pytest.warns(UserWarning, match="return_train_score=True"):
        search.fit(x, y.astype(float))
    assert "mean_train_score" in search.cv_results_
    assert not any(hasattr(search, name) for name in HYPERGRAD_ATTRIBUTES)
