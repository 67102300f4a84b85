"""hypergrad's warnings point at the user's line (`users_stacklevel`) and come once per call that
has something to warn of: not twice from one call, and not never from a call that finds its program
(or its count) cached."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "unused": hg.Uniform(0.0, 1.0)})
UNREAD = r"never reads hyperparameter\(s\) 'unused'"


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
