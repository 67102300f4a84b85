"""Fine-tuning's parameter groups and `freeze` (hypergrad/problems/finetune.py): a group that no
parameter falls into is refused, `freeze` is checked and never differentiated; and hg.Implicit
(hypergrad/methods/implicit.py) with frozen parameters, which training never makes stationary."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

D, H, C = 3, 4, 3
GROUPS = {"body": "body", "head": "head"}


def _pretrained(seed=0):
    rng = np.random.default_rng(seed)
    return {"body": {"w": rng.normal(size=(D, H)), "b": rng.normal(size=(H,)) * 0.1},
            "head": {"w": rng.normal(size=(H, C)) * 0.5, "b": np.zeros(C)}}


def _apply(params, x):
    return jnp.tanh(x @ params["body"]["w"] + params["body"]["b"]) @ params["head"]["w"] + params["head"]["b"]


def _task(seed=0, sizes=(16, 8)):
    rng = np.random.default_rng(seed)
    return tuple((rng.normal(size=(n, D)), rng.integers(0, C, n).astype(np.int32)) for n in sizes)


@pytest.fixture(scope="module")
def objective():
    problem = ft.finetune(_pretrained(), _task(), _apply, groups=GROUPS)
    return hg.Objective(problem, ft.group_sgd(GROUPS), num_steps=3)


@pytest.mark.parametrize("groups, group, prefix", [
    ({"rest": "", "body": "body", "head": "haed"}, "head", "haed"),       # a typo next to a catch-all
    ({"body": ("body", "embeding"), "head": "head"}, "body", "embeding"),  # one prefix of several
    ({"all": "", "body": "body", "head": "head"}, "all", "''"),            # every leaf taken by longer ones
])
def test_a_group_no_parameter_falls_into_is_refused_naming_it_and_the_paths(groups, group, prefix):
    with pytest.raises(ValueError, match=rf"groups\['{group}'\].*{prefix}.*body/b, body/w, head/b, head/w"):
        ft.finetune(_pretrained(), _task(), _apply, groups=groups)
    with pytest.raises(ValueError, match=rf"groups\['{group}'\]"):
        ft.group_labels(_pretrained(), groups)


def test_groups_that_all_hold_parameters_are_accepted():
    labels, names = ft.group_labels(_pretrained(), {"rest": "", "head": "head"})
    assert names == ("rest", "head") and labels["body"]["w"] == 0 and labels["head"]["w"] == 1


@pytest.mark.parametrize("freeze", [3, -1, 0.5, True, np.array([1])])
def test_a_fixed_freeze_outside_zero_to_the_number_of_groups_is_refused(objective, freeze):
    held = objective.with_fixed({"freeze": freeze})
    with pytest.raises(ValueError, match=r"hparams\['freeze'\].*whole number from 0 .* to 2"):
        hg.hypergradient(held, {"lr": jnp.asarray([0.1, 0.2])}, jax.random.key(0))


@pytest.mark.parametrize("freeze", [0, 1, 2, 1.0])
def test_a_fixed_freeze_in_range_freezes_that_many_groups(objective, freeze):
    held = objective.with_fixed({"freeze": freeze})
    _, grads = hg.hypergradient(held, {"lr": jnp.asarray([0.1, 0.2])}, jax.random.key(0))
    trains = np.arange(2) >= int(freeze)
    assert np.all((np.asarray(grads["lr"]) != 0) == trains)  # a frozen group's rate changes nothing


@pytest.mark.parametrize("method", [hg.Reverse(), hg.Forward()], ids=["Reverse", "Forward"])
def test_differentiating_freeze_is_refused_naming_the_search_that_fits(objective, method):
    hparams = {"lr": jnp.asarray([0.1, 0.2]), "freeze": jnp.asarray(1.0)}
    with pytest.raises(ValueError, match=r"hparams\['freeze'\].*no hypergradient.*hybrid_search.*with_fixed"):
        hg.hypergradient(objective, hparams, jax.random.key(0), method=method)


def test_tuning_freeze_declared_uniform_is_refused_not_left_at_its_centre(objective):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(2,)), "freeze": hg.Uniform(0.0, 2.0)})
    with pytest.raises(ValueError, match=r"hparams\['freeze'\].*no hypergradient"):
        hg.tune(objective, space, jax.random.key(0), steps=2)


def _fd(objective, hparams, name, key, eps=1e-5):
    up, down = dict(hparams), dict(hparams)
    up[name], down[name] = hparams[name] + eps, hparams[name] - eps
    return (float(objective(up, key)) - float(objective(down, key))) / (2 * eps)


def _frozen_body_by(how):
    """An optimizer that leaves the body where it starts: `freeze`, a zero group rate, or optax's
    own freezing (multi_transform with set_to_zero)."""
    if how == "freeze":
        return lambda h: ft.group_sgd(GROUPS)({**h, "lr": jnp.asarray([0.3, 0.3]), "freeze": 1, "momentum": 0.5})
    if how == "zero_rate":
        return lambda h: ft.group_sgd(GROUPS)({**h, "lr": jnp.asarray([0.0, 0.3]), "momentum": 0.5})
    labels = {"body": {"w": "frozen", "b": "frozen"}, "head": {"w": "train", "b": "train"}}
    return lambda h: optax.multi_transform({"train": optax.sgd(0.3, momentum=0.5), "frozen": optax.set_to_zero()},
                                           labels)


@pytest.mark.parametrize("how", ["freeze", "zero_rate", "set_to_zero"])
def test_implicit_with_a_frozen_group_equals_reverse_and_finite_differences(how):
    """The body is frozen and never stationary in the training loss; the head converges. Implicit
    solves in the entries training moves (the head) only, so it agrees with Reverse and finite
    differences (before, solving over every parameter, it was 9% and 69% off)."""
    problem = ft.finetune(_pretrained(), _task(sizes=(24, 12)), _apply, groups=GROUPS)
    objective = hg.Objective(problem, _frozen_body_by(how), num_steps=300)
    hparams, key = {"l2sp": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.05)}, jax.random.key(0)
    _, reverse = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    _, implicit = hg.hypergradient(objective, hparams, key, method=hg.Implicit(tol=1e-10))
    for name in hparams:
        fd = _fd(objective, hparams, name, key)
        np.testing.assert_allclose(float(reverse[name]), fd, rtol=1e-5)
        np.testing.assert_allclose(float(implicit[name]), fd, rtol=1e-5)


def test_implicit_holds_a_counter_among_the_pretrained_parameters():
    """A counter in the pretrained parameters (an nnx model's RngCount, integer) is held constant by
    training; Implicit refused the whole problem for it. It now solves in the floating-point leaves:
    the same hypergradient as without the counter, and as finite differences."""
    hparams, key = {"l2sp": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.05)}, jax.random.key(0)
    grads = {}
    for name, pretrained in (("plain", _pretrained()), ("counter", {**_pretrained(), "steps": np.asarray(7, np.int32)})):
        problem = ft.finetune(pretrained, _task(sizes=(24, 12)), _apply, groups=GROUPS)
        objective = hg.Objective(problem, _frozen_body_by("freeze"), num_steps=300)
        grads[name] = hg.hypergradient(objective, hparams, key, method=hg.Implicit(tol=1e-10))[1]
    for name in hparams:
        np.testing.assert_allclose(float(grads["counter"][name]), float(grads["plain"][name]), rtol=1e-12)
        np.testing.assert_allclose(float(grads["counter"][name]), _fd(objective, hparams, name, key), rtol=1e-5)
