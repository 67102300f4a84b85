"""A hyperparameter of the wrong shape that changes a parameter's shape is refused naming the leaf and the fix;
ES and PES give an exact 0 for a hyperparameter the objective never reads; Implicit's refusal of a
hyperparameter read by the initialisation says what Implicit would miss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._indexing import check_objective_runs, known_unread_names
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


@pytest.mark.parametrize("method", [hg.ES(0.01, 16), hg.PES(0.01, 16, window=2), hg.ES(0.01, 8, antithetic=False)],
                         ids=["ES", "PES", "ES-one-sided"])
def test_es_and_pes_give_an_exact_zero_for_a_hyperparameter_the_objective_never_reads(method):
    # the warning said "their hypergradient is exactly 0" while ES(500) returned 0.0041 and PES -0.0144 for it,
    # so hg.tune random-walked a coordinate the warning called inert
    hg.clear_caches()
    hparams, key = {"lr": jnp.asarray(0.1), "unused": jnp.asarray(1.0)}, jax.random.key(0)
    with pytest.warns(UserWarning, match="never reads hyperparameter"):
        value, grads = hg.hypergradient(SGD, hparams, key, method=method)
    assert float(grads["unused"]) == 0.0
    (raw_value, _), raw = method.differentiate(SGD.loop(), hparams, key)  # the loop alone: the raw estimate
    assert float(raw["unused"]) != 0.0
    assert float(grads["lr"]) == pytest.approx(float(raw["lr"]), rel=1e-12) and float(grads["lr"]) != 0.0
    assert float(value) == pytest.approx(float(raw_value), rel=1e-12)


def test_the_unread_names_are_found_once_per_objective_and_shared_with_its_check():
    hg.clear_caches()
    traces = {"n": 0}

    def counted(p, h, b):
        traces["n"] += 1
        return _mse(p, b)

    objective = hg.Objective(dataclasses.replace(PROBLEM, train_loss=counted), lambda h: optax.sgd(h["lr"]),
                             num_steps=3)
    hparams = {"lr": jnp.asarray(0.1), "unused": jnp.asarray(1.0)}
    assert known_unread_names(objective, hparams) == ("'unused'",)
    first = traces["n"]
    assert first > 0 and known_unread_names(objective, hparams) == ("'unused'",) and traces["n"] == first
    hg.clear_caches()
    with pytest.warns(UserWarning, match="never reads"):
        check_objective_runs(objective, hparams)  # the check's trace is used: none of its own
    checked = traces["n"]
    assert known_unread_names(objective, hparams) == ("'unused'",) and traces["n"] == checked


def _init_scaled(val_reads_s):
    def init(key, h):
        return {"w": h["s"] * jnp.ones(3), "b": jnp.zeros(())}

    def val_loss(p, h, b):
        return _mse(p, b) + (h["s"] if val_reads_s else 0.0)

    problem = hg.Problem(init=init, train_loss=lambda p, h, b: _mse(p, b) + 0.1 * jnp.sum(p["w"] ** 2),
                         val_loss=val_loss, train_data=(X, y), val_data=(Xv, yv), model_reads_hparams=True)
    return hg.Objective(problem, lambda h: optax.sgd(0.1), num_steps=3)


def test_implicit_refusing_an_initialisation_hyperparameter_says_what_it_would_miss():
    # 's' read by init and val_loss, not the training loss: the refusal said Implicit "would return 0 for it",
    # but it would return the validation loss's direct term (1.0; finite differences give 1.0007)
    with pytest.raises(ValueError, match=r"miss 's''s effect through the initialisation and return only the "
                                         r"validation loss's direct term.*hg.Reverse\(\) or hg.Forward\(\)") as err:
        hg.hypergradient(_init_scaled(True), {"s": jnp.asarray(0.5)}, jax.random.key(0), method=hg.Implicit())
    assert "return 0" not in str(err.value)
    with pytest.raises(ValueError, match=r"miss 's''s effect through the initialisation and return 0 for it"):
        hg.hypergradient(_init_scaled(False), {"s": jnp.asarray(0.5)}, jax.random.key(0), method=hg.Implicit())


def test_a_shape_change_no_hyperparameter_explains_blames_the_optimiser_not_a_hyperparameter():
    # with every hyperparameter a scalar the message still said, as fact, that a hyperparameter of another
    # shape was used where a scalar was expected
    with pytest.raises(ValueError, match=r"from \(2,\) to \(4, 2\).*No hyperparameter's shape explains it: "
                                         r"the optimiser's update itself"):
        check_shapes_kept([{"mu": jnp.zeros((4, 2))}], [{"mu": jnp.zeros(2)}], "optimiser-state leaf",
                          {"lr": jnp.asarray(0.1)})


@pytest.mark.parametrize("name", ["hparams_lr", "a]b"])
def test_the_suggested_schedule_indexes_the_hyperparameter_by_its_own_name(name):
    # the example was cut out of the message by string surgery: 'hparams_lr' came out as h['h_lr'] and
    # 'a]b' as h['a][step]
    with pytest.raises(ValueError) as refused:
        check_shapes_kept({"b": jnp.zeros(1)}, {"b": jnp.zeros(())}, "parameter", {name: jnp.zeros(1)})
    assert f"optax.sgd(lambda step: h[{name!r}][step])" in str(refused.value)
