"""A Trial and a Result hold Python numbers whatever scalars a custom outer loop gives them (0-d JAX
arrays, numpy scalars), and hyperparameters as numpy arrays."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg


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
