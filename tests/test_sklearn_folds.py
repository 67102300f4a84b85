"""hypergrad.sklearn's searches on folds whose labels differ from the data's: a fold training on
one class (which scikit-learn's MLPClassifier fits and its LogisticRegression refuses), and, with
scoring="neg_log_loss", folds whose validation part lacks a class or holds one the fit never saw,
where scikit-learn's scorer fails and the score is error_score. Each against scikit-learn's own
search on the same folds; networks tiny, one program each."""

import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn import model_selection as sk
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression as SklearnLogistic
from sklearn.neural_network import MLPClassifier as SklearnMLP

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite:UserWarning")]


def _minority_last():
    """60 examples, the 3 of class 1 last: KFold(3)'s fold 2 trains on class 0 alone."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 3)), np.r_[np.zeros(57, int), np.ones(3, int)]


def _three_classes():
    """30 examples of 3 classes (10 each, in order) and 3 folds of 20 / 10: fold 0 scored on all
    three classes, fold 1 on classes 0 and 1 only, fold 2 trained on classes 0 and 1 and scored on
    class 2 alone."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)), np.repeat([0, 1, 2], 10)
    index = np.arange(30)
    val = [np.r_[6:10, 16:19, 27:30], np.r_[0:5, 10:15], np.r_[20:30]]
    return x, y, [(np.setdiff1d(index, v), v) for v in val]


def _quiet_sklearn(search, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(x, y)


def test_an_mlp_fold_training_on_one_class_is_scored_as_scikit_learns():
    """scikit-learn's MLPClassifier fits a fold training on one class and predicts that class
    always: its accuracy is that class's share of the validation part, with no failed fit. Ours
    refused the fold (error_score with a FitFailedWarning)."""
    x, y = _minority_last()
    params = dict(hidden_layer_sizes=(2,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)
        ours = GridSearchCV(MLPClassifier(**params), {"alpha": [1e-4, 1e-2]}, cv=sk.KFold(3), refit=False).fit(x, y)
    theirs = _quiet_sklearn(sk.GridSearchCV(SklearnMLP(**params), {"alpha": [1e-4, 1e-2]}, cv=sk.KFold(3),
                                            refit=False), x, y)
    np.testing.assert_array_equal(ours.cv_results_["split2_test_score"], theirs.cv_results_["split2_test_score"])
    assert np.all(ours.cv_results_["split2_test_score"] == 17 / 20)


def test_log_loss_of_a_validation_part_whose_classes_differ_is_error_score_as_scikit_learns():
    """With scoring="neg_log_loss", scikit-learn's scorer fails on a validation part lacking a class
    of the fit or holding one class ("Scoring failed", the score error_score); ours scored them
    against every class of the data. The other folds keep their numbers, the train scores theirs."""
    x, y, folds = _three_classes()
    error_score = -7.0  # not NaN: the score is error_score, not a NaN from elsewhere
    grid = {"C": [0.5, 2.0]}
    kw = dict(cv=folds, scoring="neg_log_loss", error_score=error_score, return_train_score=True, refit=False)
    with pytest.warns(UserWarning, match="Scoring failed(.|\n)*fold 1: its validation part holds the classes"):
        ours = GridSearchCV(LogisticRegression(), grid, **kw).fit(x, y)
    theirs = _quiet_sklearn(sk.GridSearchCV(SklearnLogistic(tol=1e-10), grid, **kw), x, y)  # converged, as Newton
    # split 2 trains on classes 0 and 1: a binary model, in scikit-learn's search and ours (own_classes)
    for name in ("split0_test_score", "split1_test_score", "split2_test_score", "split0_train_score",
                 "split1_train_score", "split2_train_score"):
        np.testing.assert_allclose(ours.cv_results_[name], theirs.cv_results_[name], rtol=1e-4, err_msg=name)
    assert np.all(ours.cv_results_["split1_test_score"] == -7.0) and np.all(ours.cv_results_["split2_test_score"] == -7.0)
    assert np.all(np.isfinite(ours.cv_results_["split2_train_score"]))


@pytest.mark.parametrize("make", [
    lambda: GridSearchCV(LogisticRegression(), {"C": [0.5, 2.0]}, scoring="neg_log_loss", error_score="raise",
                         cv=_three_classes()[2]),
    lambda: HypergradSearchCV(LogisticRegression(), {"C": (0.5, 2.0, "log")}, scoring="neg_log_loss",
                              error_score="raise", cv=_three_classes()[2], budget=4),
])
def test_an_unscorable_log_loss_fold_raises_before_compiling_with_error_score_raise(make, monkeypatch):
    """error_score="raise": scikit-learn's search raises its scorer's error; ours raises it before
    anything compiles, read from the labels."""
    x, y, _ = _three_classes()
    monkeypatch.setattr("hypergrad.sklearn._search.evaluate_settings", None)  # reaching it would fail otherwise
    monkeypatch.setattr("hypergrad.hybrid_search", None)
    with pytest.raises(ValueError, match="scoring='neg_log_loss' fails on fold 1(.|\n)*error_score='raise'"):
        make().fit(x, y)


def _two_of_three():
    """30 examples of 3 classes (10 each, in order) and 2 folds: fold 0 trains and scores on all
    three; fold 1 trains on classes 0 and 1 alone (every example of class 2 is in its validation
    part, with 3 of each other class)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), np.repeat([0, 1, 2], 10)
    index = np.arange(30)
    val = [np.r_[6:10, 16:20, 26:30], np.r_[0:3, 10:13, 20:30]]
    return x, y, [(np.setdiff1d(index, v), v) for v in val]


def test_a_fold_training_on_two_of_three_classes_fits_those_alone_as_scikit_learns():
    """scikit-learn's LogisticRegression fitted on fold 1's training part (classes 0 and 1) is a
    binary model, and its examples of class 2 are misses; ours fitted a model of the data's three
    classes there (a training accuracy 0.85 where scikit-learn's is 0.8, on the earlier
    _three_classes folds). Every split score, test and train, now equals scikit-learn's search's."""
    x, y, folds = _two_of_three()
    grid = {"C": [0.5, 2.0]}
    for scoring in (None, "neg_log_loss"):
        kw = dict(cv=folds, scoring=scoring, return_train_score=True, refit=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # neg_log_loss: fold 1's validation part is unscorable
            ours = GridSearchCV(LogisticRegression(), grid, **kw).fit(x, y)
        theirs = _quiet_sklearn(sk.GridSearchCV(SklearnLogistic(tol=1e-10), grid, **kw), x, y)
        for name in ("split0_test_score", "split1_test_score", "split0_train_score", "split1_train_score"):
            if scoring is None:
                np.testing.assert_array_equal(ours.cv_results_[name], theirs.cv_results_[name], err_msg=name)
            else:
                np.testing.assert_allclose(ours.cv_results_[name], theirs.cv_results_[name], rtol=1e-4, err_msg=name)


def test_an_mlp_fold_training_on_two_of_three_classes_scores_as_its_own_fit():
    """The MLP's fold 1 (classes 0 and 1 trained on) is fitted as MLPClassifier.fit fits that part
    (one logistic unit, where the search fitted a softmax over three classes), and its test and
    train scores are that fit's."""
    x, y, folds = _two_of_three()
    params = dict(hidden_layer_sizes=(2,), max_iter=5, learning_rate_init=0.05, random_state=0)
    ours = GridSearchCV(MLPClassifier(**params), {"alpha": [1e-4]}, cv=folds, return_train_score=True,
                        refit=False).fit(x, y)
    train, val = folds[1]
    fit = MLPClassifier(**params).fit(x[train], y[train])
    assert fit.coefs_[-1].shape == (2, 1)
    assert ours.cv_results_["split1_test_score"][0] == fit.score(x[val], y[val])
    assert ours.cv_results_["split1_train_score"][0] == fit.score(x[train], y[train])


def test_hypergrad_search_runs_scikit_learns_search_where_a_fold_trains_on_two_of_three_classes(monkeypatch):
    """HypergradSearchCV stacked fold 1 (classes 0 and 1 trained on) with fold 0 in one program of
    three classes, descending a loss scikit-learn's estimator never fits there; a model of two
    classes is another program, so the search is scikit-learn's on the same folds, with a warning
    naming the fold, before anything compiles."""
    x, y, folds = _two_of_three()
    monkeypatch.setattr("hypergrad.hybrid_search", None)  # reaching it would fail
    search = HypergradSearchCV(LogisticRegression(), {"C": (0.5, 2.0, "log")}, cv=folds, n_iter=2, random_state=0,
                               refit=False)
    with pytest.warns(UserWarning, match=r"fold 1's training part holds the classes \[0, 1\] of the data's \[0, 1, 2\]"):
        search.fit(x, y)
    assert not hasattr(search, "hybrid_result_")
    theirs = _quiet_sklearn(sk.RandomizedSearchCV(SklearnLogistic(tol=1e-10), {"C": scipy.stats.loguniform(0.5, 2.0)},
                                                  cv=folds, n_iter=2, random_state=0, refit=False), x, y)
    np.testing.assert_array_equal(search.cv_results_["param_C"], theirs.cv_results_["param_C"])
    for name in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(search.cv_results_[name], theirs.cv_results_[name], err_msg=name)


@pytest.mark.parametrize("make", [
    lambda: (GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3, error_score="raise"),
             sk.GridSearchCV(SklearnLogistic(), {"C": [0.1, 1.0, 10.0]}, cv=3, error_score="raise")),
], ids=["logistic"])
def test_error_score_raise_with_no_failed_fit_searches_as_scikit_learns(make):
    """error_score="raise" where every fit succeeds (hunt COMPOSE F2): ours crashed with "could not
    convert string to float: 'raise'" (the string written through an all-False mask of the scores),
    scikit-learn's searches as with any error_score."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    ours, theirs = make()
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], atol=0.02)
