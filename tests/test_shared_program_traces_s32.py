"""An objective that finds its search program compiled for another that shares it (a scikit-learn search's next
fit) traces nothing: the hyperparameters the run never reads are kept with the program."""

import jax
import numpy as np
import optax
import pytest
from scipy.stats import loguniform
from sklearn.datasets import load_iris

import hypergrad as hg
from hypergrad import _compile, accounting
from hypergrad.sklearn import MLPClassifier, RandomizedSearchCV


def test_a_scikit_learn_searchs_second_fit_traces_nothing():
    # each fit builds new objectives sharing one program; the unread-names check looked the names up per objective,
    # missed, and traced (and counted) the run again: most of a refit's time
    X, y = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    search = RandomizedSearchCV(MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, batch_size=30, random_state=0),
                                {"alpha": loguniform(1e-5, 1e-1), "learning_rate_init": loguniform(1e-3, 1e-1)},
                                n_iter=4, cv=3, random_state=0)
    first = search.fit(X[order], y[order]).cv_results_["mean_test_score"]
    counted, compiled = accounting.stats["counts"], _compile.stats.compilations
    second = search.fit(X[order], y[order]).cv_results_["mean_test_score"]
    assert accounting.stats["counts"] == counted and _compile.stats.compilations == compiled
    np.testing.assert_array_equal(first, second)


def test_an_objective_sharing_a_compiled_program_warns_of_its_unread_hyperparameter_without_a_trace():
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    shared = type("Shared", (), {})()
    objectives = [hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3) for _ in range(2)]
    for objective in objectives:
        _compile.share_programs(objective, shared)
    with pytest.warns(UserWarning, match="momentum"):
        hg.random_search(objectives[0], space, jax.random.key(0), num_trials=2)
    counted, compiled = accounting.stats["counts"], _compile.stats.compilations
    with pytest.warns(UserWarning, match="momentum"):
        hg.random_search(objectives[1], space, jax.random.key(0), num_trials=2)
    assert accounting.stats["counts"] == counted and _compile.stats.compilations == compiled
