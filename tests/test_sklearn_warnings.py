"""The words of hypergrad.sklearn's search warnings: a parameter the estimator ignores is named by
the search's own key (a Pipeline's `<step>__<name>`) with the estimator's reason, and
HypergradSearchCV's ConvergenceWarning counts its cv_results_ rows as what they are."""

import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, MLPClassifier
from hypergrad._indexing import mark_unread_warned, warn_unread_hparams
from hypergrad.sklearn._search import named_already, target_of, warn_ignored

from _helpers import iris_head


@pytest.fixture(scope="module")
def iris():
    """30 iris examples (10 per class)."""
    return iris_head(10)


def tiny_mlp(**params):
    return MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, learning_rate_init=0.05, random_state=0, **params)


def _caught(fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return caught


def _user_warnings(caught):
    return [w for w in caught if w.category is UserWarning]


def _warn_once_here():
    warnings.warn("shown once at this line", UserWarning)


def test_naming_parameters_already_touches_no_warning_filter():
    # named_already marked hypergrad's internal-name warning as given by raising it for every subset of the
    # names under a process-wide simplefilter("ignore"): another thread's warnings were lost meanwhile, and the
    # filters' change reset every module's registry of warnings shown once, so one showed again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _warn_once_here()
        with named_already(frozenset({"momentum", "nesterovs_momentum"})):
            for unread in [("'momentum'",), ("'nesterovs_momentum'",), ("'momentum'", "'nesterovs_momentum'"),
                           ("'alpha'", "'momentum'")]:  # the last names another: warned of as before
                warn_unread_hparams(unread)
        _warn_once_here()
    assert [str(w.message) for w in caught] == ["shown once at this line", caught[-1].message.args[0]]
    assert "never reads hyperparameter(s) 'alpha', 'momentum'" in str(caught[-1].message)
    with pytest.raises(RuntimeError, match="unread_warned_once"):
        mark_unread_warned(["'momentum'"])  # outside a block it would mark nothing


def test_a_pipeline_search_names_an_ignored_parameter_by_its_grid_key_and_why(iris):
    """A Pipeline search over mlpclassifier__momentum with solver='adam' (which scikit-learn
    documents as ignoring momentum) warned "the objective never reads hyperparameter(s)
    'momentum'", an internal name the grid does not hold, with the generic fix "read them in the
    optimizer or the loss" (twice with return_train_score, under "always"). One warning now names
    the grid's key and the estimator's reason, at the user's line."""
    grid = {"mlpclassifier__alpha": [1e-4, 1.0], "mlpclassifier__momentum": [0.5, 0.9]}
    search = GridSearchCV(make_pipeline(StandardScaler(), tiny_mlp()), grid, cv=2, return_train_score=True)
    caught = _user_warnings(_caught(lambda: search.fit(*iris)))
    assert [str(w.message) for w in caught if "never reads" in str(w.message)] == []
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith("GridSearchCV searches mlpclassifier__momentum (momentum is only used when "
                              "solver='sgd', and solver='adam' here), which MLPClassifier ignores")
    assert caught[0].filename == __file__
    # the fits are those of the grid without momentum: candidates differing only in it score alike
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] == scores[1] and scores[2] == scores[3]


def test_hypergrad_search_names_an_ignored_parameter_and_counts_rows_not_candidates(iris):
    """HypergradSearchCV over a listed momentum with solver='adam' said nothing of it (or, with
    the hybrid's own unread check, named 'momentum'); its ConvergenceWarning said "(12 of the 12
    candidates, ...)" of cv_results_ rows that are configurations at each outer step. It now names
    the key and why, and counts rows."""
    ranges = {"mlpclassifier__alpha": (1e-4, 1.0, "log"), "mlpclassifier__momentum": [0.5, 0.9]}
    search = HypergradSearchCV(make_pipeline(StandardScaler(), tiny_mlp()), ranges, n_iter=2, cv=2, budget=12,
                               random_state=0, refit=False)
    caught = _caught(lambda: search.fit(*iris))
    mine = _user_warnings(caught)
    assert len(mine) == 1, [str(w.message) for w in mine]
    assert str(mine[0].message).startswith("HypergradSearchCV searches mlpclassifier__momentum (momentum is only "
                                           "used when solver='sgd', and solver='adam' here)")
    converged = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    rows, folds = search.hypergrad_not_converged_.shape
    assert rows == len(search.cv_results_["params"]) and search.hypergrad_not_converged_.all()
    assert converged == [converged[0]] and converged[0].startswith(
        f"{rows * folds} of the {rows * folds} fits of cv_results_ rows x folds ({rows} of the {rows} rows, each a "
        f"configuration at one outer step of the descent, on {folds} folds each) reached max_iter=3")
    assert "candidate" not in converged[0] and converged[0].endswith("(rows x folds).")


def test_a_logistic_search_over_c_without_a_penalty_gives_scikit_learns_reason(iris):
    """C under penalty=None: scikit-learn's own fit warns "Setting penalty=None will ignore the C
    and l1_ratio parameters"; the search names the key with those words."""
    search = GridSearchCV(LogisticRegression(penalty=None, max_iter=50), {"C": [0.1, 10.0]}, cv=2, refit=False)
    caught = _user_warnings(_caught(lambda: search.fit(*iris)))
    named = [str(w.message) for w in caught if "searches C" in str(w.message)]
    assert len(named) == 1 and "Setting penalty=None will ignore the C and l1_ratio parameters" in named[0]
    assert [str(w.message) for w in caught if "never reads" in str(w.message)] == []


def test_a_parameter_read_by_some_candidates_is_not_warned_of():
    """momentum searched with solver in ('sgd', 'adam'): the sgd candidates read it, so nothing is
    ignored; every name the estimator ignores in each candidate is named, with each reason."""
    target = target_of(make_pipeline(StandardScaler(), tiny_mlp()))
    search = GridSearchCV(target.final, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_ignored(search, target, [{"solver": s, "momentum": m} for s in ("sgd", "adam")
                                             for m in (0.5, 0.9)]) == frozenset()
    with pytest.warns(UserWarning, match=r"searches mlpclassifier__power_t \(power_t is only used when "
                                         r"learning_rate='invscaling', and learning_rate='constant' here; power_t "
                                         r"is only used when solver='sgd', and solver='adam' here\)"):
        found = warn_ignored(search, target, [{"solver": s, "power_t": p} for s in ("sgd", "adam")
                                              for p in (0.25, 0.5)])
    assert found == frozenset({"power_t"})
    # a list of grids: the adam grid alone sets momentum, and ignores it (the sgd grid's default is read)
    with pytest.warns(UserWarning, match=r"searches mlpclassifier__momentum \(momentum is only used when solver='sgd'"):
        found = warn_ignored(search, target, [{"solver": "adam", "momentum": 0.5}, {"solver": "adam", "momentum": 0.9},
                                              {"solver": "sgd", "alpha": 0.1}])
    assert found == frozenset({"momentum"})


def _convergence(caught):
    return [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_a_search_and_its_refit_warn_of_convergence_at_the_users_line(iris):
    """hunt_docs F2: a search whose fits run out of max_iter gave its counting ConvergenceWarning
    at the user's line and then the refit's, from fit, at hypergrad/sklearn/_mlp.py, so Python's
    default filter showed one of them inside hypergrad. scikit-learn's GridSearchCV warns once
    per fit, the refit's included (4 + 1 for 2 candidates x 2 folds, under "always"): here the
    count and the refit's own, both at the user's `search.fit` line; without refit, the count
    alone. A plain fit's warning is at the user's line too."""
    search = GridSearchCV(tiny_mlp(), {"alpha": [1e-4, 1e-2]}, cv=2)
    caught = _convergence(_caught(lambda: search.fit(*iris)))
    assert [(w.filename, "candidate x fold fits" in str(w.message)) for w in caught] == [
        (__file__, True), (__file__, False)], [(w.filename, str(w.message)) for w in caught]
    assert str(caught[1].message).startswith("Stochastic Optimizer: Maximum iterations (3) reached")
    unrefit = GridSearchCV(tiny_mlp(), {"alpha": [1e-4, 1e-2]}, cv=2, refit=False)
    assert [w.filename for w in _convergence(_caught(lambda: unrefit.fit(*iris)))] == [__file__]
    assert [w.filename for w in _convergence(_caught(lambda: tiny_mlp().fit(*iris)))] == [__file__]


def test_logistic_convergence_and_the_batch_size_clip_warn_at_the_users_line(iris):
    """LogisticRegression's ConvergenceWarning and the MLPs' batch_size-clipping warning had no
    stacklevel, so Python's default filter showed them at hypergrad/sklearn/_linear.py and _mlp.py
    (and a search's refit's clip warning, given on its compiling thread, at threading.py): now at
    the user's `fit` or `search.fit` line, as many as scikit-learn gives (one per fit, the refit's
    included)."""
    logistic = LogisticRegression(max_iter=1)
    assert [w.filename for w in _convergence(_caught(lambda: logistic.fit(*iris)))] == [__file__]
    search = GridSearchCV(LogisticRegression(max_iter=1), {"C": [0.1, 1.0]}, cv=2)
    caught = _convergence(_caught(lambda: search.fit(*iris)))
    assert [(w.filename, "candidate x fold fits" in str(w.message)) for w in caught] == [
        (__file__, True), (__file__, False)], [(w.filename, str(w.message)) for w in caught]
    assert str(caught[1].message).startswith("Newton's method failed to converge after 1 iteration(s)")

    def clipped(fit):
        return [w.filename for w in _user_warnings(_caught(fit)) if "`batch_size`" in str(w.message)]

    assert clipped(lambda: tiny_mlp(batch_size=100).fit(*iris)) == [__file__]
    search = GridSearchCV(tiny_mlp(batch_size=100), {"alpha": [1e-4, 1e-2]}, cv=2)
    assert clipped(lambda: search.fit(*iris)) == [__file__] * 3  # one per fold's family of fits, one refit
