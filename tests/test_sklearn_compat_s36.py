"""hypergrad.sklearn's classifiers against scikit-learn's own estimators on the same data (session 36):
`classes_` (dtype and values) and `predict`'s dtype for every kind of label scikit-learn takes, its
errors for the labels it refuses, and LogisticRegression.fit's deprecation and parameter warnings."""

import warnings

import numpy as np
import pytest
import sklearn.linear_model as sk_linear
import sklearn.neural_network as sk_neural
from sklearn.exceptions import ConvergenceWarning

from hypergrad.sklearn import LogisticRegression, MLPClassifier

X = np.random.default_rng(0).normal(size=(12, 3))
CODES = np.arange(12) % 3
WORDS = np.array(["apple", "banana", "cherry"])

LABELS = {
    "int": CODES,
    "int32": CODES.astype(np.int32),
    "str": WORDS[CODES],
    "object str": WORDS.astype(object)[CODES],  # a pandas column of strings gives these
    "object str, two": WORDS.astype(object)[CODES % 2],
    "object str, one": WORDS.astype(object)[np.zeros(12, int)],
    "bool": CODES == 1,
    "list of str": list(WORDS[CODES]),
}
REFUSED = {
    "float": CODES * 0.5,
    "object int": np.array([0, 1, 2], dtype=object)[CODES],
    "mixed": np.array(["a", 1, "c"], dtype=object)[CODES],
}
PAIRS = {
    "MLPClassifier": (lambda: MLPClassifier(hidden_layer_sizes=(2,), max_iter=2, random_state=0),
                      lambda: sk_neural.MLPClassifier(hidden_layer_sizes=(2,), max_iter=2, random_state=0)),
    "LogisticRegression": (lambda: LogisticRegression(max_iter=3), lambda: sk_linear.LogisticRegression(max_iter=3)),
}


def fitted_or_error(make, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            return make().fit(X, y), None
        except (ValueError, TypeError) as err:
            return None, (type(err), str(err))


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("labels", LABELS)
def test_classes_and_predictions_have_scikit_learns_dtype(pair, labels):
    """MLPClassifier's classes_ was np.unique's: an object array for string labels held as objects,
    where scikit-learn's (its LabelBinarizer's) is a numpy string array, and so was predict's."""
    ours, ours_error = fitted_or_error(PAIRS[pair][0], LABELS[labels])
    theirs, their_error = fitted_or_error(PAIRS[pair][1], LABELS[labels])
    assert ours_error == their_error
    if theirs is None:  # one class: scikit-learn's LogisticRegression refuses it, and so does ours
        return
    assert ours.classes_.dtype == theirs.classes_.dtype
    assert ours.classes_.tolist() == theirs.classes_.tolist()
    assert ours.predict(X).dtype == theirs.predict(X).dtype


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("labels", REFUSED)
def test_refused_labels_raise_scikit_learns_error(pair, labels):
    ours = fitted_or_error(PAIRS[pair][0], REFUSED[labels])
    theirs = fitted_or_error(PAIRS[pair][1], REFUSED[labels])
    assert theirs[0] is None and ours[1] == theirs[1]


def fit_warnings(cls, params):
    """Every warning but ConvergenceWarning of cls(**params).fit, as (category, message); and
    whether the fit raised a ValueError (scikit-learn's solver check, or this solve's refusal)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cls(max_iter=3, **params).fit(X, CODES % 2)
            raised = False
        except ValueError:
            raised = True
    return [(w.category, str(w.message)) for w in caught if not issubclass(w.category, ConvergenceWarning)], raised


@pytest.mark.parametrize("params", [
    {}, {"penalty": "l2"}, {"penalty": None}, {"penalty": None, "C": 2.0}, {"penalty": "l2", "C": np.inf},
    {"penalty": "l2", "l1_ratio": None}, {"l1_ratio": None}, {"C": np.inf}, {"n_jobs": 1},
    {"penalty": "l2", "n_jobs": 2}, {"penalty": "l2", "l1_ratio": 0.5}, {"penalty": "l1"},
    {"l1_ratio": 0.5, "solver": "saga"}, {"penalty": "elasticnet", "l1_ratio": 0.5, "solver": "saga"},
], ids=repr)
def test_logistic_fit_warns_as_scikit_learns(params):
    """scikit-learn 1.8's LogisticRegression.fit gives a FutureWarning for any penalty but its
    default (and for l1_ratio=None, n_jobs) and UserWarnings for settings it ignores; ours gave
    none. Same categories, same words, same order (a refused setting warns before it is refused)."""
    ours, ours_raised = fit_warnings(LogisticRegression, params)
    theirs, their_raised = fit_warnings(sk_linear.LogisticRegression, params)
    assert ours == theirs
    if their_raised:  # penalty='l1' under lbfgs: scikit-learn raises after warning, and so does ours
        assert ours_raised
