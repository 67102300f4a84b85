"""Structural and discrete choices (struct hunt, session 38): an objective that changes a value it reads
during the call (a build counter) is warned of at once, naming the value; `extends=` refusing such a
Result names it too; a Choice read as a per-step schedule is refused naming the hyperparameter; and
random_search records hyperparameters in the space's order, as the other searches do."""

import warnings

import jax
import optax
import optuna
import pytest

import hypergrad as hg

COUNTER = [0]


def _build(config):
    COUNTER[0] += 1  # the pattern of a family that counts its builds: the value its description reads changes
    return hg.Objective(hg.problems.ridge(num_examples=16, num_features=3, seed=0),
                        lambda h: optax.sgd(h["lr"] * config["k"]), num_steps=2)


def _space():
    return hg.Space({"k": hg.Choice([1.0, 2.0], structural=True), "lr": hg.LogUniform(1e-3, 0.1)})


def _changed(caught):
    """The messages of the objective-changed warnings, each checked to point at this file (the user's
    line): the stored call's pointed at contextlib.py, the study's context manager's exit."""
    changed = [w for w in caught if "the objective changed during this call" in str(w.message)]
    assert all(w.filename == __file__ for w in changed), [(w.filename, w.lineno) for w in changed]
    return [str(w.message) for w in changed]


def test_a_build_counter_is_warned_of_at_once_and_extends_names_the_value(tmp_path):
    family, key = hg.Structured(_build), jax.random.key(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hg.random_search(family, _space(), key, num_trials=2)
    (message,) = _changed(caught)
    assert "objective.build.globals.COUNTER[0] was" in message and "extends=" in message
    with pytest.raises(ValueError, match=r"objective\.build\.globals\.COUNTER\[0\] differs"):
        hg.random_search(family, _space(), key, num_trials=3, extends=result)

    db = str(tmp_path / "s.db")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.random_search(family, _space(), key, num_trials=2, storage=db, study="s")
    (message,) = _changed(caught)
    before = COUNTER[0]
    assert f"study 's' in {db}" in message and "objective.build.globals.COUNTER[0] was" in message
    assert "resume" in message and f"is {before} at its end" in message
    with pytest.raises(ValueError, match=r"COUNTER\[0\] differs"):  # what the warning announced
        hg.random_search(family, _space(), key, num_trials=2, storage=db, study="s")


def test_an_objective_that_changes_nothing_is_not_warned_of(tmp_path):
    objective = hg.Objective(hg.problems.ridge(num_examples=16, num_features=3, seed=0),
                             lambda h: optax.sgd(h["lr"]), num_steps=2)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.1)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hg.random_search(objective, space, jax.random.key(0), num_trials=2)
        hg.random_search(objective, space, jax.random.key(0), num_trials=3, extends=result)
        hg.random_search(objective, space, jax.random.key(0), num_trials=2, storage=str(tmp_path / "s.db"),
                         study="s")
        # an Optuna sampler's random generator moves during every call (it is an argument, not the
        # objective): the stored call warned that its "arguments.sampler.fields._rng" had changed
        sampler = optuna.samplers.TPESampler(seed=0)
        hg.optuna_search(objective, space, jax.random.key(0), 4, sampler=sampler, storage=str(tmp_path / "o.db"),
                         study="o")
    assert _changed(caught) == []


def test_a_choice_read_as_a_per_step_schedule_is_refused_naming_it():
    objective = hg.Objective(hg.problems.ridge(num_examples=16, num_features=3, seed=0),
                             lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=3)
    with pytest.raises(ValueError, match=r"hparams\['lr'\] is a scalar.*hg\.Choice is always a scalar") as err:
        hg.random_search(objective, hg.Space({"lr": hg.Choice([0.1, 0.01])}), jax.random.key(0), num_trials=2)
    assert "shape=(num_steps,)" in str(err.value) and isinstance(err.value.__cause__, IndexError)


def test_random_search_records_hyperparameters_in_the_space_order():
    objective = hg.Objective(hg.problems.ridge(num_examples=16, num_features=3, seed=0),
                             lambda h: optax.sgd(h["lr"], momentum=h["m"]), num_steps=2)
    space = hg.Space({"m": hg.Uniform(0.0, 0.9), "lr": hg.LogUniform(1e-3, 0.1)})
    result = hg.random_search(objective, space, jax.random.key(0), num_trials=2)
    assert [list(t.hparams) for t in result.trials] == [["m", "lr"], ["m", "lr"]]
    assert result.to_dataframe().columns.tolist()[2:4] == ["params_m", "params_lr"]
