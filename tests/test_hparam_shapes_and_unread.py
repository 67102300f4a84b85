"""A hyperparameter of the wrong shape that changes a parameter's shape is refused naming the leaf and the fix;
ES and PES give an exact 0 for a hyperparameter the objective never reads; Implicit's refusal of a
hyperparameter read by the initialisation says what Implicit would miss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.loop import check_shapes_kept

_rng = np.random.default_rng(0)
X, Xv = _rng.normal(size=(8, 3)), _rng.normal(size=(6, 3))
y, yv = X @ np.array([1.0, -2.0, 0.5]), Xv @ np.array([1.0, -2.0, 0.5])


def _init(key):
    return {"w": 0.1 * jax.random.normal(key, (3,)), "b": jnp.zeros(())}


def _mse(p, batch):
    return jnp.mean((batch[0] @ p["w"] + p["b"] - batch[1]) ** 2)


PROBLEM = hg.Problem(init=_init, train_loss=lambda p, h, b: _mse(p, b), val_loss=lambda p, b: _mse(p, b),
                     train_data=(X, y), val_data=(Xv, yv), batch_size=4)
SGD = hg.Objective(PROBLEM, lambda h: optax.sgd(h["lr"]), num_steps=3)
SHAPE_1 = r"parameter \['b'\] from \(\) to \(1,\).*hparams\['lr'\] of shape \(1,\).*h\['lr'\]\[step\]"

CALLS = {
    "objective": lambda key: SGD({"lr": jnp.full((1,), 0.1)}, key),
    "hypergradient": lambda key: hg.hypergradient(SGD, {"lr": jnp.full((1,), 0.1)}, key),
    "random_search": lambda key: hg.random_search(SGD, hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(1,))}),
                                                  key, num_trials=2),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_rate_of_shape_1_is_refused_naming_the_parameter_the_hyperparameter_and_the_fix(call):
    # the scalar parameter b became b of shape (1,): JAX's scan raised a carry-type TypeError that named
    # neither the hyperparameter nor the fix
    hg.clear_caches()
    with pytest.raises(ValueError, match=SHAPE_1):
        CALLS[call](jax.random.key(0))


def test_a_change_of_rank_is_refused_naming_the_leaf_and_both_shapes():
    weights_only = hg.Problem(init=lambda key: {"w": jnp.zeros(3)}, train_loss=lambda p, h, b: _mse(dict(p, b=0.0), b),
                              val_loss=lambda p, b: _mse(dict(p, b=0.0), b), train_data=(X, y), val_data=(Xv, yv))
    objective = hg.Objective(weights_only, lambda h: optax.sgd(h["lr"]), num_steps=3)
    with pytest.raises(ValueError, match=r"parameter \['w'\] from \(3,\) to \(3, 3\).*hparams\['lr'\] of shape "
                                         r"\(3, 1\)"):
        objective({"lr": jnp.full((3, 1), 0.1)}, jax.random.key(0))


def test_an_optimiser_state_leaf_whose_shape_changes_is_named():
    with pytest.raises(ValueError, match=r"optimiser-state leaf \[0\]\['mu'\] from \(2,\) to \(4, 2\)"):
        check_shapes_kept([{"mu": jnp.zeros((4, 2))}], [{"mu": jnp.zeros(2)}], "optimiser-state leaf",
                          {"b1": jnp.zeros((4, 1))})
    check_shapes_kept({"w": jnp.zeros(2, jnp.float32)}, {"w": jnp.zeros(2)}, "parameter")  # dtypes are not its business
    check_shapes_kept({"w": jnp.zeros(3)}, [jnp.zeros(2)], "parameter")  # another structure: the scan names it


def test_a_per_step_schedule_indexed_by_the_step_still_trains():
    objective = hg.Objective(PROBLEM, lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=3)
    value, grads = hg.hypergradient(objective, {"lr": jnp.full((3,), 0.1)}, jax.random.key(0))
    assert np.isfinite(float(value)) and grads["lr"].shape == (3,)
