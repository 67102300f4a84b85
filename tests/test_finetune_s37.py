"""Fine-tuning problems and their optimiser's groups (hypergrad/problems/finetune.py, session 37).

group_sgd's check that its groups are the problem's identified the problem by the memory identity of
its pretrained arrays and accepted if ANY live finetune problem sharing them had the same groups: an
earlier problem over the same jax weights with the default (alphabetical) groups let a later one with
its own groups through, so lr=[0, 0.3] trained the wrong layer; and a head that copies every array
skipped the check. The training loop now names the problem it trains (`hypergrad.loop.trained_problem`)
and the check compares with that problem (a `with_fixed` copy's original). `finetune_space` and
`group_sgd` of a `with_fixed` copy failed with a TypeError from inside `Problem.with_fixed`;
`finetune(dtype=float64)` with x64 off gave float32 parameters; `problem_groups` was not exported."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.loop import trained_problem
from _helpers import TINY_FINETUNE_SHAPES, tiny_finetune  # noqa: E402

ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

_, H, C = TINY_FINETUNE_SHAPES
INPUT_TO_OUTPUT = {"hidden": "hidden", "classifier": "classifier"}  # not the alphabetical order
REFUSED = r"group_sgd's groups, in order \['classifier', 'hidden'\].*in order \['hidden', 'classifier'\]"
_numpy_weights, _apply, _task = tiny_finetune("hidden", "classifier")
SPACE = hg.Space({"lr": hg.LogUniform(0.01, 0.3, shape=(4,)), "momentum": hg.Uniform(0.0, 0.9),
                  "l2sp": hg.LogUniform(1e-3, 1.0)})


def _jax_weights():
    """The pretrained weights as jax arrays: `finetune` keeps each one as it is (an nnx state's
    arrays), so every problem built from them shares them."""
    return jax.tree.map(jnp.asarray, _numpy_weights)


def _copying_head(key, p):
    """A fresh classifier, and every other leaf a new array (a new model loaded from the pretrained state)."""
    fresh = {**p, "classifier": {"w": 0.3 * jax.random.normal(key, (H, C)), "b": jnp.zeros(C)}}
    return jax.tree.map(lambda x: jnp.array(x, copy=True), fresh)


def _moved(trained, pretrained, name):
    return not np.array_equal(np.asarray(trained[name]["w"]), np.asarray(pretrained[name]["w"]))


def test_another_live_problem_over_the_same_arrays_does_not_let_other_groups_through():
    pretrained, key = _jax_weights(), jax.random.key(0)
    first_attempt = ft.finetune(pretrained, _task, _apply)  # default groups, alphabetical, still alive
    problem = ft.finetune(pretrained, _task, _apply, groups=INPUT_TO_OUTPUT)
    hparams = {"lr": jnp.asarray([0.0, 0.3])}  # meant: train the classifier only
    with pytest.raises(ValueError, match=REFUSED):
        hg.Objective(problem, ft.group_sgd(), 3).train(hparams, key)
    with pytest.raises(ValueError, match=REFUSED):  # a with_fixed copy is checked against its original
        hg.Objective(problem, ft.group_sgd(), 3).with_fixed({"l2sp": 0.1}).train(hparams, key)
    trained = hg.Objective(problem, ft.group_sgd(problem), 3).train(hparams, key)
    assert not _moved(trained, pretrained, "hidden") and _moved(trained, pretrained, "classifier")
    # each problem's own groups still pass while the other is alive
    hg.Objective(first_attempt, ft.group_sgd(), 3).train(hparams, key)


@pytest.mark.parametrize("method", [hg.Reverse(), hg.Implicit()], ids=["reverse", "implicit"])
def test_a_head_that_copies_every_array_is_checked_on_every_path(method):
    problem = ft.finetune(_jax_weights(), _task, _apply, groups=INPUT_TO_OUTPUT, head=_copying_head,
                          new_groups=["classifier"])
    hparams, key = {"lr": jnp.asarray([0.0, 0.3]), "l2sp": jnp.asarray(0.5)}, jax.random.key(0)
    wrong = hg.Objective(problem, ft.group_sgd(), 3)
    with pytest.raises(ValueError, match=REFUSED):
        wrong(hparams, key)
    with pytest.raises(ValueError, match=REFUSED):  # the schedule check and Implicit's first-step analysis too
        hg.hypergradient(wrong.with_fixed({"lr": hparams["lr"]}), {"l2sp": hparams["l2sp"]}, key, method=method)
    right = hg.Objective(problem, ft.group_sgd(problem), 3)
    assert np.isfinite(float(right(hparams, key)))


def test_an_optimiser_built_outside_the_loop_is_refused_when_the_arrays_name_problems_that_disagree():
    pretrained = _jax_weights()
    problem = ft.finetune(pretrained, _task, _apply, groups=INPUT_TO_OUTPUT)
    params = problem.init(jax.random.key(0))
    ft.group_sgd(problem)({}).init(params)  # one problem holds these arrays: its groups pass
    with pytest.raises(ValueError, match=REFUSED):
        ft.group_sgd()({}).init(params)
    other = ft.finetune(pretrained, _task, _apply)  # noqa: F841  (alive: its arrays are params' too)
    with pytest.raises(ValueError, match=r"in order \['hidden', 'classifier'\].*not the groups.*not known here"):
        ft.group_sgd(problem)({}).init(params)  # which of the two is trained cannot be told: refused


def test_every_path_that_builds_the_optimiser_names_the_problem_it_trains():
    problem = ft.finetune(_numpy_weights, _task, _apply, batch_size=10)
    built_for = []

    def optimizer(h):
        built_for.append(trained_problem())
        return optax.sgd(lambda t: h["lr"][t], momentum=h["momentum"])

    objective, key = hg.Objective(problem, optimizer, 4), jax.random.key(0)
    tuned = {"lr": jnp.full(4, 0.1), "momentum": jnp.asarray(0.5), "l2sp": jnp.asarray(0.1)}
    held = objective.with_fixed({"lr": tuned["lr"], "momentum": tuned["momentum"]})
    runs = [(objective, lambda: hg.hypergradient(objective, tuned, key, method=hg.Reverse())),  # + schedule check
            (held, lambda: hg.hypergradient(held, {"l2sp": tuned["l2sp"]}, key, method=hg.Implicit())),
            (objective, lambda: hg.random_search(objective, SPACE, key, num_trials=2))]
    for trained, run in runs:
        built_for.clear()
        run()
        assert built_for and all(p is trained.problem for p in built_for)
    assert trained_problem() is None  # outside a loop


def test_finetune_space_and_group_sgd_of_a_with_fixed_copy_take_the_originals_groups():
    problem = ft.finetune(_numpy_weights, _task, _apply, groups=INPUT_TO_OUTPUT)
    held = problem.with_fixed({"l2sp": 0.1})
    objective, space = hg.problems.finetune_space(held, 4)
    assert space["lr"].shape == (2,)
    assert ft.problem_groups(held, copies=True) == INPUT_TO_OUTPUT
    assert list(ft.problem_groups(held, copies=True)) == list(INPUT_TO_OUTPUT)
    trained = objective.train({"lr": jnp.asarray([0.0, 0.3]), "warmup": 1.0}, jax.random.key(0))
    assert not _moved(trained, _numpy_weights, "hidden") and _moved(trained, _numpy_weights, "classifier")
    hparams, key = {"lr": jnp.asarray([0.1, 0.3])}, jax.random.key(0)
    assert float(hg.Objective(held, ft.group_sgd(held), 3)(hparams, key)) == float(
        hg.Objective(problem, ft.group_sgd(problem), 3).with_fixed({"l2sp": 0.1})(hparams, key))


def test_finetune_space_of_a_with_fixed_copy_of_another_problem_and_group_sgds_advice_work():
    mlp = hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=30)
    held = mlp.with_fixed({"weight_decay": 1e-3})
    objective, space = hg.problems.finetune_space(held, 4)  # one group per layer of its initial parameters
    groups = ft.layer_groups(mlp.init(jax.random.key(0)))
    assert space["lr"].shape == (len(groups),)
    with pytest.raises(ValueError, match=r"not built by hg.problems.finetune") as refused:
        ft.group_sgd(held)
    advice = "hg.problems.layer_groups(problem.initial_params(jax.random.key(0), {}))"
    assert advice in str(refused.value)
    assert eval(advice, {"hg": hg, "jax": jax, "problem": held}) == groups  # the advice runs on the copy


def test_float64_with_x64_off_is_refused_before_anything_is_built():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match=r"finetune\(dtype=float64\).*jax_enable_x64.*"
                                             r"jax.config.update\('jax_enable_x64', True\)"):
            ft.finetune(_numpy_weights, _task, _apply, dtype=jnp.float64)
        ft.finetune(_numpy_weights, _task, _apply, dtype=jnp.float32)  # an enabled dtype is kept
    finally:
        jax.config.update("jax_enable_x64", True)  # the suite's setting (conftest)
    problem = ft.finetune(_numpy_weights, _task, _apply, dtype=jnp.float64)
    assert {leaf.dtype for leaf in jax.tree.leaves(problem.init(jax.random.key(0)))} == {jnp.dtype("float64")}


def test_problem_groups_is_exported_where_the_messages_name_it():
    assert hg.problems.problem_groups is ft.problem_groups and "problem_groups" in hg.problems.__all__
