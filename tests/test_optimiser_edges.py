"""Hypergradient methods through optimisers with unusual state or derivatives: typed PRNG keys in the
optimiser state (optax.noisy_sgd), and optimisers whose derivative one mode gets NaN while the other
mode and finite differences are finite (optax.lbfgs without a line search: Reverse NaN, Forward exact).

All checks run in float64 (tests/conftest.py) on the tiny logistic problem, a few steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

T = 3  # training steps: a short horizon is enough to reach every step of these optimisers


def central_differences(objective, hparams, key, eps=1e-6):
    """Central differences of `objective` in each scalar hyperparameter, relative step `eps`."""
    out = {}
    for name, value in hparams.items():
        step = eps * value
        up, down = dict(hparams), dict(hparams)
        up[name], down[name] = value + step, value - step
        out[name] = (float(objective(up, key)) - float(objective(down, key))) / (2 * float(step))
    return out


def noisy_sgd(hparams):
    # optax >= 0.2.7 will require a key; a typed one is what puts a key<fry> leaf in the state.
    return optax.noisy_sgd(hparams["lr"], key=jax.random.key(1))


# -- a typed PRNG key in the optimiser state ------------------------------------------------------
def test_reverse_states_store_holds_typed_key_state(logistic_problem, key):
    """store="states" packed the state into one buffer per dtype by the dtype's name and could not
    build a buffer of a key dtype (TypeError: data type 'key<fry>' not understood); with and
    without checkpointing it now equals the default store and finite differences."""
    objective = hg.Objective(logistic_problem, noisy_sgd, num_steps=T)
    hparams = {"lr": jnp.float64(0.3)}
    ref_value, ref_grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    fd = central_differences(objective, hparams, key)
    np.testing.assert_allclose(ref_grads["lr"], fd["lr"], rtol=1e-6)
    for method in (hg.Reverse(store="states"), hg.Reverse(store="states", checkpoint_every=2)):
        value, grads = hg.hypergradient(objective, hparams, key, method=method)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grads["lr"], ref_grads["lr"], rtol=1e-10)
