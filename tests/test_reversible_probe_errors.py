"""An error the user's optimiser raises while `Reversible` probes it is shown, not hidden.

The probe replaced any exception with Reversible's "supports SGD with momentum only" refusal (the
error was only the chained cause), so a bug in the user's optimiser read as an unsupported one.
The message now starts with the optimiser's own error, then the refusal.
"""

import jax.numpy as jnp
import optax
import pytest

import hypergrad as hg
from hypergrad.methods.reversible import Reversible

T = 4
HPARAMS = {"lr": jnp.full(T, 0.1), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(1e-2)}


def _buggy(hparams):
    sgd = optax.sgd(lambda step: hparams["lr"][step], momentum=hparams["momentum"])

    def update(updates, state, params=None):
        raise ValueError("my bug")

    return optax.GradientTransformation(sgd.init, update)


def test_the_optimisers_own_error_is_in_the_message(ridge_problem, key):
    objective = hg.Objective(ridge_problem, _buggy, num_steps=T)
    with pytest.raises(ValueError, match=r"^Reversible: the objective's optimizer raised ValueError: my bug") as info:
        hg.hypergradient(objective, HPARAMS, key, method=Reversible())
    assert "supports SGD with momentum only" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError) and str(info.value.__cause__) == "my bug"
