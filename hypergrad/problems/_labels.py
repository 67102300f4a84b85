"""Checks of the class labels a user brings to a classification problem (`finetune`, `nnx_problem`).

The losses hand the labels to `optax.softmax_cross_entropy_with_integer_labels`, which gathers the
logits at each label: a label of -1 wraps to the last class (a wrong target, often with a falsely
low loss), one past the last class reads out of bounds (NaN), float labels and labels of shape
(n, 1) fail inside the trace naming neither the labels nor the fix. These checks refuse all four
at construction, before anything compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._checks import is_int
from hypergrad.problem import num_examples

__all__ = ["check_pair", "check_class_labels", "one_example"]


def check_pair(split: Any, where: str, argname: str | None = None) -> None:
    """Raises `ValueError` unless `split` is a pair (inputs, labels) whose leaves share a leading
    example axis; `where` names the split ("train_data", "task: the train split") and `argname`
    (default `where`) the expression that gives it, for a leaf's path ("task[0]": "task[0][1]")."""
    if isinstance(split, (str, bytes)) or not isinstance(split, Sequence) or len(split) != 2:
        raise ValueError(f"{where} must be a pair (inputs, integer labels); got {type(split).__name__}"
                         + (f" of length {len(split)}" if isinstance(split, Sequence) else ""))
    num_examples(split, where if argname is None else argname)


def check_class_labels(labels: Mapping[str, Any], inputs: Any, apply: Callable[[Any, Any], jax.Array],
                       params: Any, class_axis: Any, model: str = "apply(params, inputs)") -> None:
    """Refuses labels that are not class indices of the model's logits, and a `class_axis` that
    does not hold the classes.

    Args:
        labels: `{phrase naming them: labels}` of every split, e.g. {"task: the train labels": y}.
            Traced labels (a problem built inside a transformation) are not checked.
        inputs: one split's inputs (any pytree with a leading example axis): one example's shape.
        apply: `apply(params, inputs) -> logits`, run abstractly (`jax.eval_shape`): nothing runs
            or compiles.
        params: the parameters `apply` takes (concrete or abstract).
        class_axis: the axis of the logits that holds the classes.
        model: how the messages name the model.

    Raises:
        ValueError: naming the labels and the fix, for labels that are not integers, of another
            shape than one example's logits without the class axis ((n, 1) against (n,) included),
            or outside [0, classes); or for a `class_axis` outside the logits' axes.
    """
    one = jax.tree.map(one_example, inputs)
    shape = jax.eval_shape(apply, params, one).shape
    if not (is_int(class_axis) and -len(shape) <= class_axis < len(shape)):
        raise ValueError(f"class_axis={class_axis!r}: {model} gives logits of shape {shape} for one example; give "
                         f"the axis that holds the classes, an int in [-{len(shape)}, {len(shape)})")
    axis = class_axis % len(shape)
    classes, rest = shape[axis], shape[:axis] + shape[axis + 1:]
    for name, y in labels.items():
        if not isinstance(y, jax.core.Tracer):
            _check_split_labels(name, np.asarray(y), classes, rest, shape, class_axis, model)


def one_example(leaf: Any) -> jax.ShapeDtypeStruct:
    """One example of an inputs leaf, abstractly: shape (1, ...) and the dtype the problem will hold
    (a pandas DataFrame is read through numpy, as `hg.Problem` reads it)."""
    array = leaf if isinstance(leaf, (np.ndarray, jax.Array)) else np.asarray(leaf)
    return jax.ShapeDtypeStruct((1,) + np.shape(array)[1:], jnp.result_type(array))


def _check_split_labels(name: str, y: np.ndarray, classes: int, rest: tuple[int, ...], shape: tuple[int, ...],
                        class_axis: int, model: str) -> None:
    """The checks of `check_class_labels` on one split's labels `y`, named `name`."""
    if rest != (1,) + y.shape[1:]:
        if y.ndim >= 2 and y.shape[-1] == 1 and rest == (1,) + y.shape[1:-1]:
            raise ValueError(f"{name} have shape {y.shape}, but one label per example needs shape {y.shape[:-1]}; "
                             "drop the trailing axis of length 1 (y.ravel() or y[:, 0])")
        raise ValueError(f"class_axis={class_axis}: {model} gives logits of shape {shape} for one example, {rest} "
                         f"without axis {class_axis}, but one example's labels have shape {(1,) + y.shape[1:]}; "
                         "set class_axis to the axis of the logits that holds the classes (0 for class-major "
                         "logits (classes, batch), such as hg.problems.MLP's with class_major=True)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} have dtype {y.dtype}; give integer class indices (e.g. y.astype(np.int32))")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{name} run from {y.min()} to {y.max()}, but the logits have {classes} classes along "
                         f"class_axis={class_axis}; give labels in [0, {classes}) (map them first, e.g. "
                         "np.unique(y, return_inverse=True)[1]; a head of another size for another label set), "
                         "or fix class_axis")
