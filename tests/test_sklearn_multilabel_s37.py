"""hypergrad.sklearn's MLPClassifier on multilabel targets (a 2-D 0/1 indicator y), as scikit-learn's
MLPClassifier takes them (session 37): one logistic unit per label, `classes_` np.arange(labels),
`predict` the indicator thresholded at probability 0.5, `predict_proba` (n, labels), `score` subset
accuracy, the training loss the binary log-loss summed over labels, early stopping on an unstratified
split scored by subset accuracy; and the searches over it, whose in-program scores are scikit-learn's
scorers' on the same fits. Before, fit refused such a y with "y should be a 1d array"."""

import warnings

import numpy as np
import pytest
import scipy.special
import sklearn.model_selection as sk_selection
import sklearn.neural_network as sk_neural
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import get_scorer
from sklearn.neural_network._base import binary_log_loss  # scikit-learn's own, for its scaling

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, MLPClassifier
from hypergrad.sklearn import _mlp

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 4))
Y = (X[:, :3] > 0).astype(int)  # three labels, each separable by a plane through the origin
EASY = dict(hidden_layer_sizes=(16,), max_iter=150, learning_rate_init=0.02, random_state=0)


def quiet_fit(estimator, x, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y, **kwargs)


def test_multilabel_fit_has_scikit_learns_attributes_and_semantics():
    """Shapes, classes_, out_activation_ and the dtypes of predict and predict_proba exactly as
    scikit-learn's fit on the same data; predict is predict_proba > 0.5 and score subset accuracy;
    both reach high subset accuracy on an easy problem (agreement in distribution: the weights are
    drawn from other random streams)."""
    ours = quiet_fit(MLPClassifier(**EASY), X, Y)
    theirs = quiet_fit(sk_neural.MLPClassifier(**EASY), X, Y)
    for name in ("n_outputs_", "out_activation_", "n_layers_"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 3
    assert ours.classes_.dtype == theirs.classes_.dtype and ours.classes_.tolist() == [0, 1, 2]
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    predicted, proba = ours.predict(X), ours.predict_proba(X)
    assert predicted.shape == proba.shape == theirs.predict(X).shape == (90, 3)
    assert predicted.dtype == theirs.predict(X).dtype and proba.dtype == theirs.predict_proba(X).dtype
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    np.testing.assert_allclose(proba, scipy.special.expit(_mlp.network_outputs(
        [(c.T, b) for c, b in zip(ours.coefs_, ours.intercepts_)], X, ours.activation)), rtol=1e-12)
    np.testing.assert_allclose(ours.predict_log_proba(X), np.log(proba), rtol=1e-12)
    assert ours.score(X, Y) == np.mean(np.all(predicted == Y, axis=1))
    assert ours.score(X, Y) >= 0.9 and theirs.score(X, Y) >= 0.9


def test_multilabel_training_loss_is_the_binary_log_loss_summed_over_labels():
    """loss_curve_ against the closed form on a tiny network in full batch: the mean over examples
    of the binary log-loss summed over the labels (scikit-learn's binary_log_loss) plus
    alpha / (2 n) times the squared weights. The epoch's loss is at the parameters the epoch starts
    from, so the second epoch's is at the parameters a one-epoch fit (same key) ends with."""
    x, y = X[:10], Y[:10]
    params = dict(hidden_layer_sizes=(2,), activation="tanh", solver="sgd", learning_rate_init=0.1, alpha=0.3,
                  random_state=3)
    one = quiet_fit(MLPClassifier(max_iter=1, **params), x, y)
    two = quiet_fit(MLPClassifier(max_iter=2, **params), x, y)
    z = np.tanh(x @ one.coefs_[0] + one.intercepts_[0]) @ one.coefs_[1] + one.intercepts_[1]
    p = 1 / (1 + np.exp(-z))
    per_example = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p), axis=1)
    penalty = 0.3 / (2 * len(x)) * sum(np.sum(c ** 2) for c in one.coefs_)
    assert abs(two.loss_curve_[1] - (np.mean(per_example) + penalty)) < 1e-10
    assert abs(binary_log_loss(y, p) - np.mean(per_example)) < 1e-10


def test_multilabel_early_stopping_scores_subset_accuracy_on_an_unstratified_split(monkeypatch):
    """The held-out split is not stratified (scikit-learn's does not stratify multilabel y) and each
    epoch's validation score is subset accuracy: the best one is the restored model's score on it."""
    stratify = []
    split = _mlp.train_test_split

    def spy(*arrays, **kwargs):
        stratify.append(kwargs.get("stratify"))
        return split(*arrays, **kwargs)

    monkeypatch.setattr(_mlp, "train_test_split", spy)
    model = quiet_fit(MLPClassifier(early_stopping=True, validation_fraction=0.2, **EASY), X, Y)
    assert stratify == [None]
    _, x_val, _, y_val = split(X, Y, random_state=0, test_size=0.2)
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert abs(model.score(x_val, y_val) - model.best_validation_score_) < 1e-12
    assert all(abs(s * len(x_val) - round(s * len(x_val))) < 1e-9 for s in model.validation_scores_)


def test_a_nonbinary_2d_y_is_refused_with_scikit_learns_error_and_nonzero_indicators_are_ones():
    """A 2-D y that is not an indicator (multiclass-multioutput) gets scikit-learn's own error;
    an indicator of 0 and 2 is 0 and 1 (scikit-learn's `.astype(bool)`), predicted as 0/1; the
    estimator says it takes multilabel y, as scikit-learn's says."""
    bad = np.stack([np.arange(90) % 3, np.arange(90) % 2], axis=1)
    errors = []
    for make in (MLPClassifier, sk_neural.MLPClassifier):
        with pytest.raises(ValueError) as raised:
            make(hidden_layer_sizes=(2,), max_iter=2).fit(X, bad)
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "Multioutput target data is not supported" in errors[0]
    twos = quiet_fit(MLPClassifier(**EASY), X, 2 * Y)
    ones = quiet_fit(MLPClassifier(**EASY), X, Y)
    np.testing.assert_array_equal(twos.coefs_[0], ones.coefs_[0])
    assert twos.classes_.tolist() == [0, 1, 2] and set(np.unique(twos.predict(X))) <= {0, 1}
    assert MLPClassifier().__sklearn_tags__().classifier_tags.multi_label


def search_scores_against_scikit_learns_scorers(labels, scoring):
    """A GridSearchCV over a multilabel y: its folds are KFold's (check_cv's for a multilabel y), and
    each split score equals scikit-learn's scorer applied to our estimator fitted on that fold."""
    y = Y[:, :labels]
    params = dict(hidden_layer_sizes=(6,), max_iter=20, learning_rate_init=0.05, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(MLPClassifier(**params), {"alpha": [1e-4, 1e-1]}, cv=3, scoring=scoring).fit(X, y)
        scorer = get_scorer(scoring) if scoring else None
        for row, alpha in enumerate([1e-4, 1e-1]):
            want = sk_selection.cross_val_score(MLPClassifier(alpha=alpha, **params), X, y, cv=3, scoring=scorer)
            got = [search.cv_results_[f"split{i}_test_score"][row] for i in range(3)]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert search.best_estimator_.classes_.tolist() == list(range(labels))
    assert search.predict(X).shape == y.shape


@pytest.mark.parametrize("scoring", [None, "neg_log_loss"])
def test_a_search_over_two_labels_scores_as_scikit_learns_scorers(scoring):
    """Two labels: classes_ [0, 1] reads as binary to scikit-learn's neg_log_loss scorer, which takes
    predict_proba's second column as the positive class's probability; the program scores that."""
    search_scores_against_scikit_learns_scorers(2, scoring)


@pytest.mark.parametrize("scoring", [None, "neg_log_loss"])
def test_a_search_over_three_labels_scores_as_scikit_learns_scorers(scoring):
    search_scores_against_scikit_learns_scorers(3, scoring)


def test_hypergrad_search_descends_a_multilabel_y():
    """HypergradSearchCV descends on a multilabel y (its default scoring, subset accuracy) instead of
    handing it to scikit-learn's search."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback to scikit-learn's search warns
        warnings.simplefilter("ignore", ConvergenceWarning)  # (a UserWarning: this filter comes later, so first)
        search = HypergradSearchCV(MLPClassifier(hidden_layer_sizes=(6,), max_iter=20, random_state=0),
                                   {"alpha": (1e-5, 1e-1, "log")}, cv=3, budget=8).fit(X, Y)
    assert hasattr(search, "hybrid_result_")
    assert 0 <= search.best_score_ <= 1 and search.predict(X).shape == Y.shape
