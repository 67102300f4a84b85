"""Methods, loops and problems of one's own, refused before anything compiles with a message naming
the argument and the fix (wave 1, task X1): Implicit and a customised training step, a method's
output under cross-validation checked per fold, the output check before the schedule probe
compiles, an unhashable static setting named as itself, and a model_reads_hparams problem whose
functions take no hparams. float64 throughout (tests/conftest.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.loop import Loop

KEY = jax.random.key(0)
T = 3
HPARAMS = {"lr": 0.05, "l2": 0.1}

_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None)


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


def _train_loss(params, hparams, batch):
    return _mse(params, batch) + hparams["l2"] * jnp.sum(params["w"] ** 2)


def _problem(**changes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    args = dict(init=lambda key: {"w": jnp.zeros(3)}, train_loss=_train_loss, val_loss=_mse,
                train_data=(X, y), val_data=(X, y))
    args.update(changes)
    return hg.Problem(**args)


def _objective(problem=None, optimizer=lambda h: optax.sgd(0.05)):
    return hg.Objective(_problem() if problem is None else problem, optimizer, num_steps=T)


# -- 4. an unhashable static setting is named as itself --------------------------------------------
def test_an_unhashable_static_setting_is_named_as_itself_not_as_method():
    args = (jnp.zeros(2),)
    with pytest.raises(TypeError) as info:
        _compile.compiled(("probe", object(), 3, [1, 2]), lambda: lambda x: x + 1, args)
    message = str(info.value)
    assert "a static setting of the 'probe' program, [1, 2] (a list), cannot be hashed" in message
    assert "method=" not in message and "hg.Method" not in message
    with pytest.raises(TypeError, match=r"a static setting of the 'probe' program, \[1, 2\] \(a list\)"):
        _compile.cached(("probe", object(), [1, 2]), args)
    with pytest.raises(TypeError, match=r"method=\[1, 2\] cannot be hashed.*hg\.Method subclass"):
        _compile.compiled(("probe", object(), [1, 2]), lambda: lambda x: x + 1, args, static_names=("method",))
