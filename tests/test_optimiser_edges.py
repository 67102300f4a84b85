"""Hypergradient methods through optimisers with unusual state or derivatives: typed PRNG keys in the
optimiser state (optax.noisy_sgd), and optimisers whose derivative one mode gets NaN while the other
mode and finite differences are finite (optax.lbfgs without a line search: Reverse NaN, Forward exact).

All checks run in float64 (tests/conftest.py) on the tiny logistic problem, a few steps.
"""

import re

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


# -- a jnp.where-guarded division: reverse mode NaN, forward mode exact ---------------------------
def lbfgs(hparams):
    return optax.lbfgs(hparams["lr"], linesearch=None)


def fixed_lbfgs(hparams):
    return optax.lbfgs(0.3, linesearch=None)


def test_forward_through_lbfgs_matches_finite_differences(logistic_problem, key):
    """optax.lbfgs without a line search guards 1 / <s, y> with jnp.where: reverse mode is NaN in
    the weight decay (0 * inf in the branch not taken), Forward is exact, as its docstring and the
    skip warning say."""
    objective = hg.Objective(logistic_problem, lbfgs, num_steps=T)
    hparams = {"lr": jnp.float64(0.3), "weight_decay": jnp.float64(1e-2)}
    _, grads = hg.hypergradient(objective, hparams, key, method=hg.Forward())
    fd = central_differences(objective, hparams, key)
    for name in hparams:
        np.testing.assert_allclose(grads[name], fd[name], rtol=1e-6)


def test_tune_skip_warning_through_lbfgs_names_forward(logistic_problem, key):
    """tune through lbfgs with the default Reverse skipped every step with a warning that blamed
    adam's eps_root only; the warning now names the where-guarded division and hg.Forward()."""
    objective = hg.Objective(logistic_problem, fixed_lbfgs, num_steps=T)
    space = hg.Space({"weight_decay": hg.LogUniform(1e-4, 1.0)})
    with pytest.warns(RuntimeWarning) as record:  # also the restart warning: no good iterate yet
        result = hg.tune(objective, space, key, steps=1)
    skipped = [str(w.message) for w in record if "was skipped" in str(w.message)]
    assert skipped and re.search(r"optax\.lbfgs.*method=hg\.Forward\(\)", skipped[0])
    assert "SKIPPED" in list(result.to_dataframe()["state"])
    restarted = [str(w.message) for w in record if "with no good iterate" in str(w.message)]
    # the restart warning told the user to narrow the space, which cannot help a finite loss
    assert restarted and "only the hypergradient was not" in restarted[0], restarted


def test_line_search_refusal_recommends_lbfgs_with_forward(logistic_problem, key):
    """The refusal of optax.lbfgs()'s line search recommended optax.lbfgs(lr, linesearch=None),
    through which the default Reverse is NaN; it now names method=hg.Forward() with it."""
    objective = hg.Objective(logistic_problem, lambda h: optax.lbfgs(h["lr"]), num_steps=T)
    with pytest.raises(ValueError, match=r"optax\.lbfgs\(lr, linesearch=None\).*method=hg\.Forward\(\)"):
        objective({"lr": jnp.float64(0.3)}, key)
