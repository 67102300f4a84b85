"""hypergrad.sklearn's searches on folds of different sizes (KFold on n examples not divisible by k):
where padding is exact (the linear models; an MLP fitted in full batch) every fold runs in one
program, its parts padded with weight-0 rows, and every score equals the one of the per-size
programs (one per fold size, as before); a minibatch MLP keeps its per-size programs.
HypergradSearchCV pads them the same way, so it descends the full folds' loss. Networks tiny,
fits short, every scoring of the program compiled once."""

import warnings

import numpy as np
import pytest
import sklearn.metrics
from sklearn import model_selection as sk
from sklearn.base import clone, is_classifier
from sklearn.linear_model import Ridge as SklearnRidge

import hypergrad as hg
from hypergrad import _compile
from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier, MLPRegressor, Ridge
from hypergrad.sklearn._search import SCORINGS

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(kind, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    if kind == "regressor2":  # two targets
        return x, np.stack([x @ [1.0, -2.0, 0.5], x[:, 0] ** 2], axis=1) + 0.1 * rng.normal(size=(n, 2))
    if kind == "regressor":
        return x, x @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=n)
    if kind == "binary":  # unbalanced, for class_weight="balanced"
        return x, (x[:, 0] + 0.5 * rng.normal(size=n) > 0.6).astype(int)
    return x, np.argmax(x + 0.5 * rng.normal(size=x.shape), axis=1)


# (estimator, grid, data, folds): KFold(3) on 47 examples trains on 31 or 32 and scores 16 or 15;
# Ridge's KFold(5) on 9 scores 2 or 1 (R^2 of a one-example part is NaN, padded or not)
CASES = {
    "MLPClassifier": (MLPClassifier(hidden_layer_sizes=(3,), max_iter=4, learning_rate_init=0.05, random_state=0),
                      {"alpha": [1e-4, 1.0]}, ("classes", 47), sk.KFold(3)),
    "MLPRegressor": (MLPRegressor(hidden_layer_sizes=(3,), max_iter=4, learning_rate_init=0.05, random_state=0),
                     {"alpha": [1e-4, 1.0]}, ("regressor", 47), sk.KFold(3)),
    "LogisticRegression": (LogisticRegression(class_weight="balanced", max_iter=8), {"C": [0.1, 10.0]},
                           ("binary", 47), sk.KFold(3)),
    "Ridge": (Ridge(), {"alpha": [0.1, 10.0]}, ("regressor2", 9), sk.KFold(5)),
}


def _searches(estimator, grid, cv, x, y, train_scores):
    """cv_results_ of a GridSearchCV (train scores too when `train_scores`) per scoring the programs
    compute; the search programs traced for them all (the scorings share the programs)."""
    kind = "classifier" if is_classifier(estimator) else "regressor"
    traces = _compile.stats.traces["search"]
    results, info = {}, None
    for scoring in SCORINGS[kind]:
        search = GridSearchCV(estimator, grid, cv=cv, scoring=scoring, refit=False, return_train_score=train_scores)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-finite test scores (a NaN R^2)
            results[scoring] = search.fit(x, y).cv_results_
        info = info or [r["folds"] for r in search.hypergrad_info_]
    return results, _compile.stats.traces["search"] - traces, info


@pytest.mark.parametrize("name", list(CASES))
def test_folds_of_two_sizes_share_one_program_and_score_as_the_per_size_programs(name, monkeypatch):
    """Folds of two sizes ran in two programs (one per size, each compiled: 20 s apiece for a small
    MLP on a loaded machine), and so did the training scores (Ridge's case scores them too). Now
    one program scores every fold (its parts padded with weight-0 rows), and every score of every
    scoring equals the per-size programs' (`_paddable` off): accuracies exactly, the rest to float
    rounding; the same ranks."""
    estimator, grid, (kind, n), cv = CASES[name]
    x, y = _data(kind, n)
    sizes = {(len(t), len(v)) for t, v in cv.split(x, y)}
    assert len(sizes) == 2
    evaluations = 2 if name == "Ridge" else 1  # validation parts, and training parts for Ridge
    hg.clear_caches()
    padded, programs, folds = _searches(estimator, grid, cv, x, y, name == "Ridge")
    assert programs == evaluations and folds == [cv.get_n_splits()] * evaluations
    monkeypatch.setattr(type(estimator), "_paddable", lambda self, fits, sizes: False)
    per_size, programs, folds = _searches(estimator, grid, cv, x, y, name == "Ridge")
    assert programs == len(folds) == 2 * evaluations
    for scoring, results in padded.items():
        counts = scoring in (None, "accuracy") and kind in ("classes", "binary")
        for key in results:
            if not key.startswith("split"):
                continue
            got, want = results[key], per_size[scoring][key]
            if counts:
                np.testing.assert_array_equal(got, want, err_msg=f"{scoring} {key}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{scoring} {key}")
        np.testing.assert_array_equal(results["rank_test_score"], per_size[scoring]["rank_test_score"])
    if name == "Ridge":  # the one-example validation part: NaN R^2 in both
        assert np.isnan(padded["r2"]["split4_test_score"]).all()
        assert np.isfinite(padded["neg_mean_squared_error"]["split4_test_score"]).all()


@pytest.mark.parametrize("params,paddable", [
    ({}, True),
    ({"batch_size": 10}, False),  # minibatches: the epoch sampler draws from the n examples
    ({"solver": "sgd", "learning_rate": "invscaling"}, False),  # its rate counts the examples seen
    ({"solver": "adam", "learning_rate": "invscaling"}, True),  # adam reads no learning_rate schedule
    ({"batch_size": 31}, False),  # full batch on 31 examples, two minibatches on 32
])
def test_an_mlp_pads_folds_only_where_its_program_ignores_their_size(params, paddable):
    """An MLP's folds are padded only for fits whose program reads the number of examples nowhere
    but through the weights; the others keep one program per fold size."""
    estimator = MLPClassifier(**params)
    assert estimator._paddable([estimator.get_params()], [31, 32]) is paddable


@pytest.mark.parametrize("name", ["Ridge", "LogisticRegression"])
def test_hypergrad_search_descends_the_loss_of_the_full_folds(name):
    """HypergradSearchCV cut every fold to the smallest fold's size (KFold(5) on 103 examples: the
    82/83 training and 21/20 validation parts all cut to 82 and 20), so a larger fold's fit, the
    loss descended and the scores were those of other data than scikit-learn's folds. Now the folds
    are padded with weight-0 rows: every trial's loss (the one descended) is the mean over the folds
    of the loss of a fit on the fold's full training part, scored on its full validation part, and
    each split score is that fit's (accuracy as an exact fraction of the fold's examples)."""
    classifier = name == "LogisticRegression"
    x, y = _data("binary" if classifier else "regressor", 103)
    cv = sk.KFold(5)
    folds = list(cv.split(x))
    assert len({(len(t), len(v)) for t, v in folds}) == 2
    estimator, param = (LogisticRegression(max_iter=8), "C") if classifier else (Ridge(), "alpha")
    search = HypergradSearchCV(estimator, {param: (0.1, 10.0, "log")}, cv=cv, budget=4, refit=False,
                               scoring="accuracy" if classifier else "neg_mean_squared_error").fit(x, y)
    for row, trial in enumerate(search.hybrid_result_.trials):
        losses = []
        for s, (train, val) in enumerate(folds):
            fit = clone(estimator).set_params(**{param: float(trial.hparams[param])}).fit(x[train], y[train])
            if classifier:
                losses.append(sklearn.metrics.log_loss(y[val], fit.predict_proba(x[val]), labels=[0, 1]))
                expected = sklearn.metrics.accuracy_score(y[val], fit.predict(x[val]))
                assert search.cv_results_[f"split{s}_test_score"][row] == expected
            else:
                losses.append(np.mean((fit.predict(x[val]) - y[val]) ** 2))
                expected = -losses[-1]
                assert search.cv_results_[f"split{s}_test_score"][row] == pytest.approx(expected, rel=1e-9)
        assert trial.value == pytest.approx(np.mean(losses), rel=1e-9)


@pytest.mark.parametrize("cv,groups", [(sk.TimeSeriesSplit(3), None),
                                       (sk.GroupKFold(3), np.repeat([0, 1, 2], [6, 6, 36]))])
def test_hypergrad_search_descends_folds_of_any_sizes_where_padding_is_exact(cv, groups):
    """Folds whose sizes differ by more than one example (TimeSeriesSplit's 12/24/36 training
    examples, GroupKFold's 12/42/42 training and 36/6/6 validation examples) ran in scikit-learn's search (a fallback
    warning, no descent) though padding them is exact for Ridge. Now they are padded and
    descended in one program: each trial's loss is the mean of the exact per-fold fits' losses,
    each split score that fit's."""
    x, y = _data("regressor", 48)
    folds = list(cv.split(x, y, groups))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        search = HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3, "log")}, cv=cv, budget=4, refit=False,
                                   scoring="neg_mean_squared_error").fit(x, y, groups=groups)
    for row, trial in enumerate(search.hybrid_result_.trials):
        losses = []
        for s, (train, val) in enumerate(folds):
            fit = SklearnRidge(alpha=float(trial.hparams["alpha"])).fit(x[train], y[train])
            losses.append(np.mean((fit.predict(x[val]) - y[val]) ** 2))
            assert search.cv_results_[f"split{s}_test_score"][row] == pytest.approx(-losses[-1], rel=1e-8)
        assert trial.value == pytest.approx(np.mean(losses), rel=1e-8)
