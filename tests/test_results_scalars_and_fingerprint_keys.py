"""A Trial and a Result hold Python numbers whatever scalars a custom outer loop gives them (0-d JAX
arrays, numpy scalars), and hyperparameters as numpy arrays. A fingerprint keeps a mapping's keys
of one `str` apart, and leaves out the Python-written repr of an object whose attributes it
describes (a set printed in the hash seed's order made the same call differ between processes).
Studies stored in format 4 still resume."""

import dataclasses
import json
import sqlite3

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import FINGERPRINT_FORMAT, first_difference, identity
from _helpers import Stop, fingerprint_format, stop_after


# -- Trial and Result: Python numbers ---------------------------------------------------------------
def custom_trial(number, value):
    """A trial as a custom outer loop builds it from what its jitted programs return."""
    return hg.Trial(number=jnp.asarray(number), hparams={"lr": jnp.asarray(0.1 * (number + 1), jnp.float32),
                                                         "schedule": jnp.full((3,), 0.5), "act": "tanh"},
                    value=jnp.asarray(value), scores={"val_loss": jnp.asarray(value), "test_loss": np.float32(2.5)},
                    state="complete", flops=jnp.asarray(100.0), seconds=np.float64(0.25),
                    run_flops=np.int64(100), grad_norm=jnp.asarray(0.5, jnp.float32), tuner=np.int32(1))


def test_a_trial_of_jax_and_numpy_scalars_holds_python_numbers_and_numpy_hparams():
    trial = custom_trial(2, 0.75)
    numbers = {"value": float, "flops": float, "seconds": float, "run_flops": float, "grad_norm": float,
               "number": int, "tuner": int}
    for field, kind in numbers.items():
        assert type(getattr(trial, field)) is kind, field
    assert (trial.number, trial.value, trial.tuner, trial.run_flops) == (2, 0.75, 1, 100.0)
    assert all(type(v) is float for v in trial.scores.values()) and trial.test_value == 2.5
    lr, schedule = trial.hparams["lr"], trial.hparams["schedule"]
    assert type(lr) is np.ndarray and lr.shape == () and lr.dtype == np.float32
    assert type(schedule) is np.ndarray and schedule.shape == (3,)
    assert trial.hparams["act"] == "tanh"  # a structural option as given
    assert dataclasses.replace(trial, value=jnp.asarray(0.5)).value == 0.5  # converted again, as constructed


def test_a_result_of_custom_trials_has_numeric_columns_and_python_best_numbers():
    pd = pytest.importorskip("pandas")
    trials = [custom_trial(i, v) for i, v in enumerate([0.9, 0.25, 0.5])]
    result = hg.Result("custom", trials, jnp.asarray(100.0), np.float32(0.0))
    assert type(result.trials) is tuple and type(result.run_flops) is float and type(result.compile_seconds) is float
    assert type(result.best_value) is float and result.best_trial.number == 1
    frame = result.to_dataframe()
    for column in ("number", "value", "params_lr", "test_value", "runs", "flops", "grad_norm"):
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    assert json.loads(json.dumps(result.to_dict()))["best"]["number"] == 1


@pytest.mark.parametrize("field, given, named", [
    ("value", np.ones(2), r"Trial\(value=.*real number.*shape \(2,\)"),
    ("number", 1.5, r"Trial\(number=1\.5\): give an integer"),
    ("flops", True, r"Trial\(flops=True\): give a real number"),
    ("scores", {"val_loss": "low"}, r"Trial\(scores\['val_loss'\]='low'\): give a real number"),
])
def test_a_trial_refuses_a_number_field_that_is_no_scalar_naming_it(field, given, named):
    fields = dict(number=0, hparams={}, value=1.0, scores={"val_loss": 1.0}, state="complete", flops=1.0,
                  seconds=0.1, run_flops=1.0)
    with pytest.raises(TypeError, match=named):
        hg.Trial(**{**fields, field: given})


def test_a_result_refuses_trials_that_are_not_trials():
    with pytest.raises(TypeError, match=r"Result\(trials=...\): every entry must be an hg.Trial, got dict"):
        hg.Result("custom", [{"value": 1.0}], 1.0, 0.0)


# -- fingerprints: mapping keys and Python-written reprs -----------------------------------------------
def test_mapping_keys_of_one_str_are_kept_apart():
    """{1: a, "1": b} was described as one entry "1" (the last), so another value under 1 was the
    same call."""
    assert identity({1: 0.5, "1": 2.0}) != identity({1: 0.7, "1": 2.0})
    assert identity({1: 0.5, "1": 2.0}) == identity({"1": 2.0, 1: 0.5})  # sorted: the order given does not enter
    assert identity({"a": 1.0, "b": 2.0}) == identity({"a": 1.0, "b": 2.0}, format=4)  # string keys as before


class Tag:
    """A key object with no attributes: two of them are described alike."""


def test_keys_described_alike_are_both_kept():
    first, second = Tag(), Tag()
    assert identity({first: 1.0, second: 2.0}) != identity({first: 1.0, second: 3.0})


class Losses:
    """An object of the user's class whose repr prints a set, in the set's own order (the hash seed's
    for strings; the insertion order's for colliding ints, as here)."""

    def __init__(self, names):
        self.names = set(names)

    def __repr__(self):
        return f"Losses({self.names})"


def test_a_python_repr_printing_a_set_does_not_enter_the_description():
    # 0 and 8 share a slot of a small set's table: inserted in other orders, equal sets print
    # differently, as equal sets of strings do in two processes with other hash seeds.
    a, b = Losses([0, 8]), Losses([8, 0])
    assert a.names == b.names and repr(a) != repr(b)
    assert identity(a) == identity(b)
    assert identity(a) != identity(Losses([0, 9]))  # the attributes still tell them apart
    space = lambda option: hg.Space({"lr": hg.LogUniform(1e-3, 0.1), "loss": hg.Choice([option, "plain"])})  # noqa: E731
    described = [hg.store.describe_space(space(o), format=FINGERPRINT_FORMAT) for o in (a, b)]
    assert first_difference(described[0], described[1]) is None


def weighted_loss(weights, losses):
    """A train loss closing over a dict with an int key and a str key "1", and an object with a
    Python-written repr."""

    def train_loss(params, hparams, batch):
        x, y = batch
        scale = weights[1] + 0.0 * len(losses.names)
        return scale * jnp.mean((x @ params["w"] - y) ** 2) + hparams["weight_decay"] * jnp.sum(params["w"] ** 2)

    return train_loss


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.1), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def objective_of(ridge_problem, weights):
    problem = dataclasses.replace(ridge_problem, train_loss=weighted_loss(weights, Losses(["mse", "l2"])))
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_a_study_with_another_value_under_an_int_key_is_a_different_call(ridge_problem, key, tmp_path):
    db = tmp_path / "study.db"
    hg.random_search(objective_of(ridge_problem, {1: 1.0, "1": 2.0}), SPACE, key, 2, storage=db, study="r")
    with pytest.raises(ValueError, match=r"study 'r' .* different call: objective\..*int:1 differs"):
        hg.random_search(objective_of(ridge_problem, {1: 3.0, "1": 2.0}), SPACE, key, 2, storage=db, study="r")


def test_a_study_stored_in_format_4_still_resumes(ridge_problem, key, tmp_path):
    """A study stored before format 5 (keys by their str, the user's objects with their repr) is
    compared as it was made, and resumes."""
    db = tmp_path / "study.db"
    objective = objective_of(ridge_problem, {1: 1.0, "1": 2.0})
    with fingerprint_format(4), pytest.raises(Stop):
        hg.random_search(objective, SPACE, key, 6, chunk_size=3, storage=db, study="r", progress=stop_after(1))
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()[0])
    text = json.dumps(stored)  # described otherwise than format 5 would: its repr in, its int key as "1"
    assert stored["format"] == 4 and '"repr": "Losses(' in text and "int:1" not in text
    progress, whole_progress = stop_after(0), stop_after(0)
    resumed = hg.random_search(objective, SPACE, key, 6, chunk_size=3, storage=db, study="r", progress=progress)
    whole = hg.random_search(objective, SPACE, key, 6, chunk_size=3, progress=whole_progress)
    assert len(progress.calls) < len(whole_progress.calls)  # the stored trials were loaded, not run again
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
