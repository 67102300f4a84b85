"""Sparse X (scipy.sparse CSR/CSC) in hypergrad.sklearn's estimators and searches (session 35).

scikit-learn's MLPClassifier, MLPRegressor, LogisticRegression and Ridge take CSR/CSC input (a
OneHotEncoder's default output, a TfidfVectorizer's); hypergrad's refused it with a TypeError, so a
pipeline that worked with scikit-learn's broke on "change one import". Now sparse X is densified on
the host where the estimator fits (or predicts), so every fit, prediction and search on it equals
the same on the dense array.
"""

import numpy as np
import pytest
import scipy.sparse
from sklearn import model_selection as sk
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils import get_tags

from hypergrad.sklearn import (GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier, MLPRegressor,
                               RandomizedSearchCV, Ridge)

from _helpers import iris_head

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

MLP = dict(hidden_layer_sizes=(4,), max_iter=8, learning_rate_init=0.05, random_state=0)


def sparse_iris():
    """60 iris examples with half their entries zeroed (a sparse-looking X), and the labels."""
    x, y = iris_head(20)
    x = x.copy()
    x[np.arange(x.size).reshape(x.shape) % 2 == 0] = 0.0
    return x, y


@pytest.mark.parametrize("make", [lambda: Ridge(alpha=0.5), lambda: LogisticRegression(C=2.0),
                                  lambda: MLPClassifier(**MLP), lambda: MLPRegressor(**MLP)])
@pytest.mark.parametrize("form", [scipy.sparse.csr_matrix, scipy.sparse.csc_array])
def test_estimators_fit_and_predict_sparse_x_as_its_dense_array(make, form):
    """A fit on CSR/CSC X equals the fit on X.toarray(): the same weights and predictions, sparse
    or dense at predict time; the estimators say they take sparse input (scikit-learn's tag)."""
    x, y = sparse_iris()
    dense, sparse = make().fit(x, y), make().fit(form(x), y)
    for name in ("coef_", "coefs_", "intercept_", "intercepts_"):
        if hasattr(dense, name):
            ours, theirs = getattr(dense, name), getattr(sparse, name)
            for a, b in zip(*((v if isinstance(v, list) else [v]) for v in (ours, theirs))):  # MLPs: one per layer
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sparse.predict(form(x)), dense.predict(x))
    assert get_tags(make()).input_tags.sparse


def test_a_pipeline_with_a_sparse_one_hot_encoder_searches_as_the_dense_one():
    """GridSearchCV over Pipeline(OneHotEncoder() -> MLPClassifier): the encoder's default (CSR)
    output is searched, and every score equals the search with sparse_output=False."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(60, 3)).astype(str)
    y = (x[:, 0] == "1").astype(int)
    results = []
    for sparse_output in (True, False):
        search = GridSearchCV(make_pipeline(OneHotEncoder(sparse_output=sparse_output), MLPClassifier(**MLP)),
                              {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
        results.append(search.fit(x, y))
    for s in range(3):
        np.testing.assert_array_equal(results[0].cv_results_[f"split{s}_test_score"],
                                      results[1].cv_results_[f"split{s}_test_score"])
    np.testing.assert_array_equal(results[0].predict(x), results[1].predict(x))


@pytest.mark.parametrize("make", [
    lambda: RandomizedSearchCV(Ridge(), {"alpha": [0.1, 1.0, 10.0]}, n_iter=3, cv=3, random_state=0),
    lambda: HypergradSearchCV(Ridge(), {"alpha": (0.1, 10.0, "log")}, cv=3, budget=4),
])
def test_searches_take_sparse_x_as_its_dense_array(make):
    """The searches on CSR X give the cv_results_ and best estimator of the search on the dense X."""
    x, y = sparse_iris()
    y = y.astype(float)
    sparse, dense = make().fit(scipy.sparse.csr_matrix(x), y), make().fit(x, y)
    for s in range(3):
        np.testing.assert_array_equal(sparse.cv_results_[f"split{s}_test_score"],
                                      dense.cv_results_[f"split{s}_test_score"])
    np.testing.assert_array_equal(sparse.best_estimator_.coef_, dense.best_estimator_.coef_)
