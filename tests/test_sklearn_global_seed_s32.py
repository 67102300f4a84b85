"""An unseeded scikit-learn MLP (random_state=None) draws from numpy's global RandomState as scikit-learn's does:
the same number of draws per fit, whether its program was compiled by this fit or found cached."""

import numpy as np
from sklearn.datasets import load_iris

import hypergrad as hg
from hypergrad.sklearn import MLPClassifier


def _cell(X, y):
    np.random.seed(0)
    fits = [MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, batch_size=30).fit(X, y) for _ in range(2)]
    return [np.concatenate([c.ravel() for c in fit.coefs_]) for fit in fits], np.random.randint(1 << 30)


def test_a_seeded_cell_of_unseeded_fits_repeats_whether_or_not_the_program_is_cached():
    # the first fit of a shape drew one more number from the global state (a seed nothing read) while compiling,
    # so the same cell run again in the process, its program now cached, gave another second model
    X, y = load_iris(return_X_y=True)
    hg.clear_caches()
    (first, second), after = _cell(X, y)
    (again_first, again_second), again_after = _cell(X, y)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert after == again_after
