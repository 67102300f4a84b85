"""A Problem holds its data as they were at construction, whatever the user's numpy buffers'
alignment (hypergrad/problem.py `_to_device`). On CPU `jax.device_put` shares memory with a numpy
buffer that starts on a 64-byte boundary and copies any other, so a Problem built on an aligned
array followed later in-place edits (`X[:] = np.nan` made its objective NaN, past the NaN check)
while the same data 16 bytes off, or a cv=k problem's gathered folds, did not. Each test builds its
arrays at both offsets, so it does not depend on the allocator."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.problem import check_values
from hypergrad.problems import finetune

N, D = 24, 3


def _placed(values: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `values` in a buffer that starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(values.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    array = raw[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
    array[...] = values
    assert array.ctypes.data % 64 == offset
    return array


def _split(seed: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    return _placed(x, offset), _placed(x @ np.arange(1.0, D + 1) + 0.1 * rng.normal(size=N), offset)


def _mse(params, batch):
    x, y = batch
    return jnp.mean((x @ params - y) ** 2)


def _problem(train, val, **options) -> hg.Problem:
    return hg.Problem(init=lambda key: jnp.zeros(D), train_loss=lambda p, h, b: _mse(p, b), val_loss=_mse,
                      train_data=train, val_data=val, **options)


def _value(problem: hg.Problem) -> float:
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    return float(objective({"lr": 0.05}, jax.random.key(0)))


@pytest.mark.parametrize("offset", [0, 16])
@pytest.mark.parametrize("edited,options", [("train", {}), ("val", {}), ("train", {"cv": 3})],
                         ids=["train_data", "val_data", "cv=3"])
def test_an_in_place_edit_after_construction_does_not_reach_the_objective(edited, options, offset):
    splits = {"train": _split(0, offset), "val": _split(1, offset)}
    problem = _problem(splits["train"], splits["val"], **options)
    before = _value(problem)
    for leaf in splits[edited]:
        leaf[...] = np.nan
    after = _value(problem)
    assert np.isfinite(before) and after == before


@pytest.mark.parametrize("offset", [0, 16])
def test_the_data_the_nan_check_passed_are_the_data_the_problem_holds(offset):
    train, val = _split(0, offset), _split(1, offset)
    nan_x = train[0].copy()
    nan_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="train_data holds 1 NaN"):
        _problem((_placed(nan_x, offset), train[1]), val)
    problem = _problem(train, val, test_data=_split(2, offset))
    given = jax.tree.map(np.copy, problem.data)
    for leaf in (*train, *val):
        leaf[...] = np.nan
    check_values(problem.data, "problem.data")  # still the finite data the construction checked
    jax.tree.map(np.testing.assert_array_equal, problem.data, given)


@pytest.mark.parametrize("offset", [0, 16])
def test_the_snapshot_keeps_jax_canonical_dtypes(offset):
    x = _placed(np.arange(2.0 * N).reshape(N, 2), offset)
    labels = _placed(np.arange(N, dtype=np.int32), offset)
    wide = _placed(np.arange(N, dtype=np.int64), offset)
    with jax.enable_x64(False):
        narrow = _problem((x, labels), (x, wide))
    assert [a.dtype for a in jax.tree.leaves(narrow.data)] == [np.float32, np.int32, np.float32, np.int32]
    problem = _problem((x, labels), (x, wide))
    assert [a.dtype for a in jax.tree.leaves(problem.data)] == [np.float64, np.int32, np.float64, np.int64]


@pytest.mark.parametrize("offset", [0, 16])
def test_finetune_keeps_the_pretrained_parameters_and_task_as_given(offset):
    rng = np.random.default_rng(0)
    pretrained = {"w": _placed(rng.normal(size=(D, 2)), offset), "b": _placed(np.zeros(2), offset)}
    x = rng.normal(size=(N, D))
    task = [(_placed(x, offset), _placed((x[:, 0] > 0).astype(np.int32), offset)) for _ in range(2)]
    problem = finetune(pretrained, task, lambda p, inputs: inputs @ p["w"] + p["b"])
    given = jax.tree.map(np.copy, (problem.init(jax.random.key(0)), problem.data))
    for leaf in jax.tree.leaves((pretrained, task)):
        leaf[...] = 0
    jax.tree.map(np.testing.assert_array_equal, (problem.init(jax.random.key(0)), problem.data), given)
