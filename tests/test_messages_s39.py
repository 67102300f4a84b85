"""Two slips that failed with messages naming neither the hyperparameter the space declares nor the fix
(space hunt s39, finding 4): a typo in a space's name, and a shaped hyperparameter read as a scalar."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import accounting

T = 3


def _sgd(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])


@pytest.fixture
def objective(logistic_problem):
    return hg.Objective(logistic_problem, _sgd, num_steps=T)


def test_a_typo_in_a_space_name_is_named_with_the_name_meant(objective, key):
    """The space declares 'momentm', the optimiser reads h['momentum']: the message said only that
    'momentum' was not given; it now asks whether 'momentm' was meant, from every entry point (the
    searches trace the optimiser first in their schedule check, tune in its counted run)."""
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "momentm": hg.Uniform(0.0, 0.9)})
    meant = r"did you mean to declare 'momentm' as 'momentum'\?"
    for run in (lambda: objective({"lr": 0.1, "momentm": 0.5}, key),
                lambda: hg.random_search(objective, space, key, num_trials=2),
                lambda: hg.grid_search(objective, space, key, points_per_axis=2),
                lambda: hg.tune(objective, space, key, steps=1)):
        with pytest.raises(ValueError, match=meant) as caught:
            run()
        assert "the objective reads hyperparameter 'momentum' that was not given" in str(caught.value)
        assert isinstance(caught.value.__cause__, KeyError)


def test_a_missing_name_with_no_close_declared_name_asks_nothing(objective, key):
    """No name given is close to 'momentum' (nor does the dict a missing key of the user's own was read
    from hold one): the message asks no question."""
    with pytest.raises(ValueError, match="that was not given") as caught:
        objective({"lr": 0.1, "weight_decay": 0.5}, key)
    assert "did you mean" not in str(caught.value)

    def train_loss(params, hparams, batch):
        return jnp.mean((batch["x"] @ params["w"] - batch["label"]) ** 2)

    data = {"x": np.ones((4, 2)), "y": np.ones(4)}
    problem = hg.Problem(init=lambda k: {"w": jnp.zeros(2)}, train_loss=train_loss,
                         val_loss=lambda params, batch: 0.0 * params["w"].sum(), train_data=data, val_data=data)
    with pytest.raises(ValueError, match="a key missing from a dict of your own") as caught:
        hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)({"lr": 0.1}, key)
    assert "did you mean" not in str(caught.value)


SHAPED = hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(7,)), "momentum": hg.Uniform(0.0, 0.9)})


def test_a_shaped_hyperparameter_read_as_a_scalar_is_named_with_its_shape(objective, key):
    """`hg.LogUniform(..., shape=(7,))` passed to `optax.sgd(h['lr'])`: tune failed with JAX's bare
    "mul got incompatible shapes for broadcasting: (7,), ..." naming neither 'lr' nor its shape; the
    counted run (`accounting`'s trace, the first trace tune makes) now names both and the per-step fix,
    with JAX's words kept in the message and its TypeError as the cause. Nothing is compiled."""
    hparams = {"lr": jnp.full(7, 0.1), "momentum": jnp.asarray(0.5)}
    for run in (lambda: accounting.run_flops(objective, hparams, key),
                lambda: hg.tune(objective, SHAPED, key, steps=1)):
        with pytest.raises(TypeError, match=r"non-scalar hyperparameters \('lr' of shape \(7,\)\)") as caught:
            run()
        message = str(caught.value)
        assert "got incompatible shapes for broadcasting" in message  # JAX's own words
        assert "h['lr'][step]" in message and "without shape=" in message
        assert "momentum" not in message.split(":")[0]  # a scalar is not named as shaped
        assert isinstance(caught.value.__cause__, TypeError)


def test_other_type_errors_and_all_scalar_hyperparameters_pass_unchanged(logistic_problem, key):
    """Only JAX's incompatible-shapes TypeError, and only with a non-scalar hyperparameter given, is
    rewritten: another TypeError with a shaped one, or a shape error of the user's own with scalars
    only, reaches the user as it was raised."""
    def mixed_loss(params, hparams, batch):
        return jnp.sum(jnp.ones(3) * jnp.ones(4)) + 0.0 * hparams["lr"]

    def bad_loss(params, hparams, batch):
        raise TypeError("a TypeError of the user's own")

    data = {"x": np.ones((4, 2))}
    for loss, hparams, words in ((mixed_loss, {"lr": 0.1}, "incompatible shapes"),
                                 (bad_loss, {"lr": jnp.full(2, 0.1)}, "a TypeError of the user's own")):
        problem = hg.Problem(init=lambda k: {"w": jnp.zeros(2)}, train_loss=loss,
                             val_loss=lambda params, batch: jnp.sum(params["w"]), train_data=data, val_data=data)
        objective = hg.Objective(problem, lambda h: optax.sgd(jnp.sum(h["lr"])), num_steps=2)
        with pytest.raises(TypeError, match=words) as caught:
            accounting.run_flops(objective, hparams, key)
        assert "non-scalar hyperparameters" not in str(caught.value)
