"""Extending hypergrad from its public API: a Problem of one's own functions, a Method subclass, a
custom training loop. What is wrong there is refused with a message naming the argument and the fix,
before anything compiles (the findings of hunt E).

All checks run in float64 (tests/conftest.py turns it on before any problem is built).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile

KEY = jax.random.key(0)


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


def _problem(**changes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([2.0, -1.0, 3.0])
    args = dict(init=lambda key: {"w": jnp.zeros(3)},
                train_loss=lambda params, hparams, batch: _mse(params, batch) + hparams["l2"] * jnp.sum(params["w"] ** 2),
                val_loss=_mse, train_data=(X, y), val_data=(X, y))
    args.update(changes)
    return hg.Problem(**args)


def _objective(problem=None, num_steps=4):
    problem = _problem() if problem is None else problem
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=num_steps)


HPARAMS = {"lr": 0.05, "momentum": 0.9, "l2": 0.01}


def _exact(loop, hparams, key):
    return jax.value_and_grad(lambda h: loop.readout(loop.train(h, key), h), has_aux=True)(hparams)


# -- a Method subclass that cannot be hashed (finding 4) -------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Scaled(hg.Method):
    """Frozen, as the Method docstring asks, but a field may be given an unhashable value."""
    scale: object = 1.0

    def differentiate(self, loop, hparams, key):
        return _exact(loop, hparams, key)


@dataclasses.dataclass
class _Mutable(hg.Method):
    """A dataclass that is not frozen: eq without hash."""

    def differentiate(self, loop, hparams, key):
        return _exact(loop, hparams, key)


@pytest.mark.parametrize("method", [_Scaled(np.ones(2)), _Scaled([1.0, 2.0]), _Mutable()],
                         ids=["array field", "list field", "not frozen"])
@pytest.mark.parametrize("call", ["hypergradient", "hypergradient_flops"])
def test_an_unhashable_method_is_refused_naming_method_and_the_fix_before_anything_compiles(method, call):
    objective = _objective()
    before = _compile.stats.compilations
    with pytest.raises(TypeError, match=r"method=.*cannot be hashed.*frozen dataclass.*tuple"):
        if call == "hypergradient":
            hg.hypergradient(objective, HPARAMS, KEY, method=method)
        else:
            hg.hypergradient_flops(objective, method, HPARAMS, KEY)
    assert _compile.stats.compilations == before


def test_a_hashable_frozen_method_subclass_still_runs_and_compiles_once_for_equal_instances():
    objective = _objective()
    value, grads = hg.hypergradient(objective, HPARAMS, KEY, method=_Scaled((1.0, 2.0)))
    before = _compile.stats.compilations
    again = hg.hypergradient(objective, HPARAMS, KEY, method=_Scaled((1.0, 2.0)))
    assert _compile.stats.compilations == before
    np.testing.assert_allclose(again[0], value)
    reference = hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reverse())
    np.testing.assert_allclose(value, reference[0], rtol=1e-12)
    for name in HPARAMS:
        np.testing.assert_allclose(grads[name], reference[1][name], rtol=1e-10)
