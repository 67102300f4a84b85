"""The groups of a fine-tuning problem and of its optimiser (hypergrad/problems/finetune.py, session 35).

`finetune(groups=...)` and `group_sgd(groups)` were given separately and nothing checked that they
agreed: with the groups given to `finetune` input to output (as documented) and `group_sgd()` left at
its alphabetical default, `freeze=1` froze the classifier instead of the first layer, and `lr[i]` and
`l2sp[i]` named different layers; `finetune_space` always used the alphabetical default. The problem
now records its groups (`problem_groups`), `group_sgd(problem)` and `finetune_space` take them, and
an optimiser whose groups split the problem's parameters otherwise is refused when traced."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from _helpers import TINY_FINETUNE_SHAPES, tiny_finetune  # noqa: E402
from hypergrad._store_codec import identity

ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

_, H, C = TINY_FINETUNE_SHAPES
INPUT_TO_OUTPUT = {"hidden": "hidden", "classifier": "classifier"}  # not the alphabetical order


def _pretrained():
    return tiny_finetune('hidden', 'classifier')[0]


_apply = tiny_finetune('hidden', 'classifier')[1]


def _task():
    return tiny_finetune('hidden', 'classifier')[2]


def _new_classifier(key, p):
    return {**p, "classifier": {"w": 0.3 * jax.random.normal(key, (H, C)), "b": jnp.zeros(C)}}


def _moved(trained, name):
    return not np.array_equal(np.asarray(trained[name]["w"]), _pretrained()[name]["w"])


@pytest.mark.parametrize("head", [None, _new_classifier], ids=["pretrained", "fresh-head"])
def test_optimiser_groups_other_than_the_problems_are_refused_naming_both_orders(head):
    problem = ft.finetune(_pretrained(), _task(), _apply, groups=INPUT_TO_OUTPUT, head=head)
    objective = hg.Objective(problem, ft.group_sgd(), num_steps=3)  # the groups forgotten: alphabetical
    match = (r"group_sgd's groups, in order \['classifier', 'hidden'\].*in order \['hidden', 'classifier'\]"
             r".*hg.problems.group_sgd\(problem\)")
    with pytest.raises(ValueError, match=match):
        objective.with_fixed({"freeze": 1}).train({"lr": jnp.asarray([0.3, 0.3])}, jax.random.key(0))
    with pytest.raises(ValueError, match=match):  # any other split too, given explicitly
        hg.Objective(problem, ft.group_sgd({"classifier": "classifier", "hidden": "hidden"}), 3)(
            {"lr": jnp.asarray([0.3, 0.3])}, jax.random.key(0))


def test_group_sgd_of_the_problem_freezes_its_first_group_and_equals_the_same_groups_given_twice():
    problem = ft.finetune(_pretrained(), _task(), _apply, groups=INPUT_TO_OUTPUT)
    assert ft.problem_groups(problem) == INPUT_TO_OUTPUT and list(ft.problem_groups(problem)) == list(INPUT_TO_OUTPUT)
    hparams, key = {"lr": jnp.asarray([0.3, 0.2]), "l2sp": jnp.asarray([0.1, 0.0])}, jax.random.key(0)
    trained = hg.Objective(problem, ft.group_sgd(problem), 4).with_fixed({"freeze": 1}).train(hparams, key)
    assert not _moved(trained, "hidden") and _moved(trained, "classifier")  # freeze=1: the first group, input side
    by_problem = hg.Objective(problem, ft.group_sgd(problem), 4)
    by_dict = hg.Objective(problem, ft.group_sgd(INPUT_TO_OUTPUT), 4)
    assert float(by_problem(hparams, key)) == float(by_dict(hparams, key))
    assert identity(by_problem) == identity(by_dict)  # the same stored-study fingerprint


def test_finetune_space_counts_the_problems_groups_in_their_order():
    problem = ft.finetune(_pretrained(), _task(), _apply, groups=INPUT_TO_OUTPUT)
    objective, space = hg.problems.finetune_space(problem, 4)
    trained = objective.train({"lr": jnp.asarray([0.0, 0.3]), "l2sp": 0.1, "warmup": 1.0}, jax.random.key(0))
    assert not _moved(trained, "hidden") and _moved(trained, "classifier")  # lr[0] is the first layer's


def test_consistent_groups_and_other_problems_are_left_alone():
    default = ft.finetune(_pretrained(), _task(), _apply)  # default groups on both sides: alphabetical
    hparams, key = {"lr": jnp.asarray([0.3, 0.2])}, jax.random.key(0)
    value = float(hg.Objective(default, ft.group_sgd(), 3)(hparams, key))
    assert value == float(hg.Objective(default, ft.group_sgd(default), 3)(hparams, key))
    renamed = {"c": "classifier", "h": "hidden"}  # the same split in the same order, other names
    assert value == float(hg.Objective(default, ft.group_sgd(renamed), 3)(hparams, key))
    mlp = hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=30)
    assert ft.problem_groups(mlp) is None and ft.problem_groups(default.with_fixed({})) is None
    with pytest.raises(ValueError, match=r"group_sgd\(problem\).*not built by hg.problems.finetune.*layer_groups"):
        ft.group_sgd(mlp)
