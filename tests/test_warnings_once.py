"""hypergrad's warnings point at the user's line (`users_stacklevel`) and come once per call that
has something to warn of: not twice from one call, and not never from a call that finds its program
(or its count) cached. An experiment hides only the warnings it expects."""

import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.exceptions import ConvergenceWarning

import hypergrad as hg
import hypergrad.sklearn
from _helpers import import_experiment

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "unused": hg.Uniform(0.0, 1.0)})


def _through_host(problem):
    """`problem` whose validation loss is computed on the host (`jax.pure_callback`): uncounted work."""
    def val_loss(params, batch):
        value = problem.val_loss(params, batch)
        return jax.pure_callback(lambda v: np.asarray(v, dtype=np.float64), jax.ShapeDtypeStruct((), jnp.float64),
                                 value, vmap_method="sequential")
    return hg.Problem(init=problem.init, train_loss=problem.train_loss, val_loss=val_loss,
                      train_data=problem.train_data, val_data=problem.val_data, test_data=problem.test_data,
                      batch_size=None)


def _mine(caught, pattern):
    """The warnings in `caught` whose text holds `pattern`, each checked to point at this file."""
    mine = [w for w in caught if pattern in str(w.message)]
    assert all(w.filename == __file__ for w in mine), [(w.filename, w.lineno) for w in mine]
    return mine


def test_the_uncounted_callback_warning_points_at_the_users_line_from_each_line(ridge_problem, key):
    # it pointed into hypergrad/accounting.py (stacklevel=2), so Python's default filter showed it once per
    # process for each callback, whichever line of the user's asked for the next count
    objective = hg.Objective(_through_host(ridge_problem), lambda h: optax.sgd(h["lr"]), num_steps=2)
    hg.clear_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        hg.run_flops(objective, {"lr": 0.1}, key)
        hg.clear_caches()  # counted again, from another line
        hg.run_flops(objective, {"lr": 0.1}, key)
    assert len(_mine(caught, "through jax.pure_callback")) == 2


@pytest.fixture
def ignores_unused(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=2)  # its own: nothing cached


def test_a_tune_with_a_warmup_names_an_unread_hyperparameter_once(ignores_unused, key):
    # the checks' trace and the warm-up search's program each warned: the same warning twice from one call
    hg.clear_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.tune(ignores_unused, SPACE, key, steps=1, population=2, warmup=4)
    assert len(_mine(caught, "never reads hyperparameter(s) 'unused'")) == 1


def test_a_call_that_finds_its_program_compiled_still_names_an_unread_hyperparameter(ignores_unused, key):
    # the warning came with a trace only: a second call (a notebook cell re-run, another call site) that found
    # the program compiled, or the objective checked, said nothing
    hg.clear_caches()
    calls = [lambda: hg.random_search(ignores_unused, SPACE, key, num_trials=4),
             lambda: hg.random_search(ignores_unused, SPACE, jax.random.key(1), num_trials=4),  # the same program
             lambda: hg.tune(ignores_unused, SPACE, key, steps=1, population=2, warmup=4),
             lambda: hg.tune(ignores_unused, SPACE, key, steps=1, population=2, warmup=4),  # checked, compiled
             lambda: hg.random_search(ignores_unused, SPACE, key, num_trials=4)]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert len(_mine(caught, "never reads hyperparameter(s) 'unused'")) == 1


def test_a_search_of_an_objective_that_reads_every_hyperparameter_warns_of_none(ridge_problem, key):
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["unused"]), num_steps=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*never reads")
        hg.random_search(objective, SPACE, key, num_trials=4)
        hg.tune(objective, SPACE, key, steps=1, population=2, warmup=4)


class _Warns:
    """A stand-in search (and estimator) whose fit gives the warnings seed_iris expects, and a FutureWarning."""

    def __init__(self, *args, **kwargs):
        pass

    def fit(self, x, y):
        warnings.warn("Stochastic Optimizer: Maximum iterations (10) reached", ConvergenceWarning)
        warnings.warn("The total space of parameters 4 is smaller than n_iter=100. Running 4 iterations. For "
                      "exhaustive searches, use GridSearchCV.", UserWarning)
        warnings.warn("a parameter's default will change", FutureWarning)
        self.cv_results_ = {"params": [{}], "std_test_score": np.zeros(1), "mean_fit_time": np.zeros(1)}
        self.best_params_, self.best_score_, self.best_index_, self.refit_time_ = {}, 1.0, 0, 0.0
        self.n_splits_, self.hypergrad_info_ = 2, []
        return self

    def score(self, x, y):
        return 1.0


def test_seed_iris_hides_the_warnings_it_expects_and_shows_a_deprecation(monkeypatch):
    # both searches ran under warnings.simplefilter("ignore"), which would hide a scikit-learn or hypergrad
    # deprecation as well as the ConvergenceWarnings and "n_iter exceeds the grid" it meant to hide
    seed_iris = import_experiment("seed_iris")
    stand_in = types.ModuleType("seed_iris_stand_in")
    stand_in.MLPClassifier = stand_in.RandomizedSearchCV = _Warns
    monkeypatch.setitem(sys.modules, stand_in.__name__, stand_in)
    monkeypatch.setitem(seed_iris.LIBRARIES, "stand-in", (stand_in.__name__, stand_in.__name__))
    monkeypatch.setattr(hypergrad.sklearn, "HypergradSearchCV", _Warns)
    monkeypatch.setattr(hypergrad.sklearn, "MLPClassifier", _Warns)
    for run in (lambda: seed_iris.study("stand-in", smoke=True), lambda: seed_iris.hybrid(smoke=True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        assert [w.category for w in caught] == [FutureWarning], [str(w.message) for w in caught]


def test_an_optuna_search_names_an_unread_hyperparameter_once_not_once_per_round(ignores_unused, key):
    # each round's evaluate_settings found the program and warned again: 3 warnings from one call of 3 rounds
    pytest.importorskip("optuna")
    hg.clear_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.optuna_search(ignores_unused, SPACE, key, num_trials=12, batch_size=4, sampler="random")
    assert len(_mine(caught, "never reads hyperparameter(s) 'unused'")) == 1


def test_hypergradient_names_an_unread_hyperparameter_from_each_line(ignores_unused, key):
    # it warned on its first check of the objective only: a later call from another line said nothing
    hg.clear_caches()
    hparams = {"lr": 0.1, "unused": 0.5}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        hg.hypergradient(ignores_unused, hparams, key)
        first = len(_mine(caught, "never reads hyperparameter(s) 'unused'"))
        hg.hypergradient(ignores_unused, hparams, key)  # checked and compiled already
    assert first == 1
    assert len(_mine(caught, "never reads hyperparameter(s) 'unused'")) == 2


def test_a_hybrid_search_names_a_hyperparameter_no_configuration_reads(ignores_unused, key):
    # it never warned: a budget spent descending 'unused', whose hypergradient is exactly 0, without a word
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "unused": hg.Uniform(0.0, 1.0), "wd": hg.Choice([0.0, 0.1])})
    hg.clear_caches()
    for _ in range(2):  # the second call finds its counts and names cached
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hg.hybrid_search(ignores_unused, space, key, budget=20)
        assert [str(w.message).split(":")[0] for w in _mine(caught, "never reads")] == [
            "the objective never reads hyperparameter(s) 'unused', 'wd'"]


def test_a_hybrid_search_names_no_hyperparameter_that_some_configuration_reads(ridge_problem, key):
    def build(config):
        optimizer = (lambda h: optax.sgd(h["lr"])) if config["opt"] == "sgd" else (
            lambda h: optax.sgd(h["lr"], momentum=h["beta"]))
        return hg.Objective(ridge_problem, optimizer, num_steps=2)

    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "beta": hg.Uniform(0.0, 0.9),
                      "opt": hg.Choice(["sgd", "momentum"])})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*never reads")
        hg.hybrid_search(hg.Structured(build), space, key, budget=20)
