"""hypergrad.sklearn's searches when a Pipeline step fails on some candidates or folds (session 35).

scikit-learn's search records an exception raised while a fold's pipeline is fitted as a failed fit
(`error_score`, one `FitFailedWarning` summarising the errors, "All the N fits failed" when every fit
failed, the exception itself with error_score="raise"), and one raised while its validation part is
transformed as an unscored fit ("Scoring failed" `UserWarning`); the other fits are scored. Before,
hypergrad's searches raised the first such exception and lost the whole search. Each case runs
scikit-learn's own search beside ours and compares where the scores are NaN.
"""

import warnings

import numpy as np
import pytest
from sklearn import model_selection as sk
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression as SklearnLogistic
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier

from _helpers import iris_head

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

MLP = dict(hidden_layer_sizes=(4,), max_iter=8, learning_rate_init=0.05, random_state=0)


def split_scores(search, kind="test"):
    """(candidates, folds) of a fitted search's split scores."""
    return np.stack([search.cv_results_[f"split{s}_{kind}_score"] for s in range(search.n_splits_)], axis=1)


def both(make_search, x, y, **fit):
    """(ours, scikit-learn's) fitted, each with the warnings it gave (warnings recorded, always)."""
    out = []
    for lib in ("hypergrad", "sklearn"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search = make_search(lib).fit(x, y, **fit)
        out.append((search, list(caught)))
    return out


def warned(caught, category, text):
    return [w for w in caught if issubclass(w.category, category) and text in str(w.message)]


def rare_category_data():
    """60 examples of two categorical columns; the category "rare" appears once, in KFold(3)'s first
    validation part only, so a OneHotEncoder fitted on that fold's training part meets it unseen."""
    rng = np.random.default_rng(0)
    x = rng.choice(["a", "b", "c"], size=(60, 2)).astype(object)
    x[5, 0] = "rare"
    return x, (x[:, 1] == "a").astype(int)


def test_a_step_failing_on_some_candidates_scores_them_error_score_as_scikit_learns():
    """PCA(n_components=6) on iris's 4 features fails on every fold: those 3 of the 9 fits score
    error_score with scikit-learn's FitFailedWarning (its wording, the error's traceback summarised
    once), the other candidates are scored, and the NaN cells and the best candidate are
    scikit-learn's."""
    x, y = iris_head(20)

    def make(lib):
        final = MLPClassifier(**MLP) if lib == "hypergrad" else SklearnMLP(**MLP)
        search = GridSearchCV if lib == "hypergrad" else sk.GridSearchCV
        return search(make_pipeline(PCA(), final), {"pca__n_components": [2, 3, 6]}, cv=3)

    (ours, caught), (theirs, _) = both(make, x, y)
    np.testing.assert_array_equal(np.isnan(split_scores(ours)), np.isnan(split_scores(theirs)))
    assert np.isnan(split_scores(ours)[2]).all() and np.isfinite(split_scores(ours)[:2]).all()
    assert ours.best_params_["pca__n_components"] != 6
    failures = warned(caught, FitFailedWarning, "3 fits failed out of a total of 9")
    assert len(failures) == 1
    message = str(failures[0].message)
    assert "3 fits failed with the following error:\nTraceback" in message
    assert "n_components=6 must be between 0 and min(n_samples, n_features)=4" in message


def test_a_passthrough_step_leaving_nan_fails_those_candidates_as_scikit_learns():
    """A grid over an imputer and "passthrough" with NaN in X: the passthrough candidates' fits fail
    (the estimator refuses NaN), the imputed ones are scored, as in scikit-learn's search."""
    x, y = iris_head(20)
    x = x.copy()
    x[::10, 1] = np.nan

    def make(lib):
        final = MLPClassifier(**MLP) if lib == "hypergrad" else SklearnMLP(**MLP)
        search = GridSearchCV if lib == "hypergrad" else sk.GridSearchCV
        return search(Pipeline([("imp", SimpleImputer()), ("mlp", final)]),
                      {"imp": [SimpleImputer(), "passthrough"], "mlp__alpha": [1e-4, 1e-2]}, cv=3)

    (ours, caught), (theirs, _) = both(make, x, y)
    np.testing.assert_array_equal(np.isnan(split_scores(ours)), np.isnan(split_scores(theirs)))
    assert np.isnan(split_scores(ours)).sum() == 6
    assert warned(caught, FitFailedWarning, "6 fits failed out of a total of 12")
    assert isinstance(ours.best_params_["imp"], SimpleImputer)


def test_a_validation_part_the_steps_cannot_transform_is_unscored_as_scikit_learns():
    """OneHotEncoder meets a category in one validation part that its training part lacked: that
    fold's fits stand but are unscored (error_score, scikit-learn's "Scoring failed" UserWarning,
    no FitFailedWarning), their training scores are scored, and the other folds are as scikit-learn's."""
    x, y = rare_category_data()

    def make(lib):
        final = MLPClassifier(**MLP) if lib == "hypergrad" else SklearnMLP(**MLP)
        search = GridSearchCV if lib == "hypergrad" else sk.GridSearchCV
        return search(make_pipeline(OneHotEncoder(sparse_output=False), final), {"mlpclassifier__alpha": [1e-4, 1e-2]},
                      cv=sk.KFold(3), return_train_score=True)

    (ours, caught), (theirs, theirs_caught) = both(make, x, y)
    for kind in ("test", "train"):
        np.testing.assert_array_equal(np.isnan(split_scores(ours, kind)), np.isnan(split_scores(theirs, kind)))
    assert np.isnan(split_scores(ours)[:, 0]).all() and np.isfinite(split_scores(ours)[:, 1:]).all()
    assert np.isfinite(split_scores(ours, "train")).all()
    assert warned(caught, UserWarning, "Scoring failed") and warned(theirs_caught, UserWarning, "Scoring failed")
    assert "Found unknown categories ['rare']" in str(warned(caught, UserWarning, "Scoring failed")[0].message)
    assert not warned(caught, FitFailedWarning, "")


def test_error_score_raise_raises_the_steps_own_error():
    """error_score="raise": the step's own exception, as scikit-learn's search raises it."""
    x, y = rare_category_data()
    search = GridSearchCV(make_pipeline(OneHotEncoder(sparse_output=False), MLPClassifier(**MLP)),
                          {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=sk.KFold(3), error_score="raise")
    with pytest.raises(ValueError, match=r"Found unknown categories \['rare'\]"):
        search.fit(x, y)


def test_every_fit_failing_on_the_host_raises_all_fits_failed_as_scikit_learns():
    """Every fit's step failed: scikit-learn's "All the N fits failed" ValueError, with the error."""
    x, y = iris_head(20)
    search = GridSearchCV(make_pipeline(PCA(), MLPClassifier(**MLP)), {"pca__n_components": [6]}, cv=3)
    with pytest.raises(ValueError, match=r"(?s)All the 3 fits failed.*3 fits failed with the following error.*"
                                         r"n_components=6"):
        search.fit(x, y)
    theirs = sk.GridSearchCV(make_pipeline(PCA(), SklearnMLP(**MLP)), {"pca__n_components": [6]}, cv=3)
    with pytest.raises(ValueError, match="All the 3 fits failed"):
        theirs.fit(x, y)


def test_hypergrad_search_leaves_out_a_fold_the_steps_fail_on():
    """HypergradSearchCV: a fold on which the pipeline's steps fail is not descended; its scores are
    error_score with a FitFailedWarning naming it and the error, and the other folds are scored."""
    x, y = rare_category_data()
    search = HypergradSearchCV(make_pipeline(OneHotEncoder(sparse_output=False), LogisticRegression()),
                               {"logisticregression__C": (0.1, 10.0, "log")}, cv=sk.KFold(3), budget=3, refit=False)
    with pytest.warns(FitFailedWarning, match=r"fold 0, on whose validation part the pipeline's steps before "
                                              r"LogisticRegression failed \(ValueError: Found unknown categories"):
        search.fit(x, y)
    scores = split_scores(search)
    assert np.isnan(scores[:, 0]).all() and np.isfinite(scores[:, 1:]).all()
    theirs = sk.RandomizedSearchCV(make_pipeline(OneHotEncoder(sparse_output=False), SklearnLogistic()),
                                   {"logisticregression__C": [1.0]}, n_iter=1, cv=sk.KFold(3), refit=False)
    with pytest.warns(UserWarning, match="Scoring failed"):
        theirs.fit(x, y)
    np.testing.assert_array_equal(np.isnan(split_scores(theirs)[0]), np.isnan(scores[0]))
