"""Multinomial logistic regression on a bundled or synthetic classification set."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hypergrad.problem import Problem
from hypergrad.problems import _data
from hypergrad.problems._losses import accuracy, cross_entropy, default_dtype, l2_penalty

__all__ = ["logistic"]


def _splits(dataset: str, seed: int, dtype: np.dtype, synthetic_shape: tuple[int, int, int]):
    """The train/val/test splits of `dataset`; `synthetic_shape` is (examples, features, classes)."""
    if dataset == "synthetic":
        return _data.synthetic_classification(*synthetic_shape, seed=seed, dtype=dtype)
    if dataset in _data.CLASSIFICATION:
        return _data.load(dataset, seed=seed, dtype=dtype)
    raise ValueError(f"logistic(dataset={dataset!r}): choose 'synthetic' or one of {_data.CLASSIFICATION}")


def logistic(
    dataset: str = "breast_cancer",
    *,
    batch_size: int | None = None,
    seed: int = 0,
    num_examples: int | None = None,
    num_features: int | None = None,
    num_classes: int | None = None,
    cv: int | None = None,
) -> Problem:
    """Softmax regression, parameters `{"w": (d, C), "b": (C,)}` initialised at zero.

    `train_loss` is the mean cross-entropy plus `0.5 * sum(weight_decay * w^2)` when `hparams` has
    a "weight_decay" (a scalar or one value per feature, shape (d,)); the bias is not penalised.
    `val_loss` is the mean cross-entropy; the metric "accuracy" is reported.

    Args:
        dataset: "breast_cancer", "iris", "wine", "digits" or "synthetic".
        batch_size: None for full batch, or a minibatch size.
        seed: seed of the data and its split.
        num_examples, num_features, num_classes: shape of the synthetic data (300, 8 and 3 when not
            given); refused for a named dataset, whose shape is its own.
        cv: None, or k >= 2 for stratified k-fold cross-validation over the train and validation
            splits pooled (the test split stays held out); each fit then costs k times one fit
            (see `hg.Problem`).
    """
    dtype = np.dtype(default_dtype())
    _data.check_synthetic_only("logistic", dataset, num_examples=num_examples, num_features=num_features,
                               num_classes=num_classes)
    splits = _splits(dataset, seed, dtype, (300 if num_examples is None else num_examples,
                                            8 if num_features is None else num_features,
                                            3 if num_classes is None else num_classes))
    d = splits.train[0].shape[1]
    c = int(max(s[1].max() for s in splits)) + 1

    def init(key):
        del key  # the loss is convex: start from zero, deterministically
        return {"w": jnp.zeros((d, c), dtype), "b": jnp.zeros((c,), dtype)}

    def logits(params, x):
        return x @ params["w"] + params["b"]

    def train_loss(params, hparams, batch):
        x, y = batch
        loss = cross_entropy(logits(params, x), y)
        if "weight_decay" in hparams:
            loss = loss + l2_penalty(params["w"], hparams["weight_decay"])
        return loss

    def val_loss(params, batch):
        x, y = batch
        return cross_entropy(logits(params, x), y)

    def acc(params, batch):
        x, y = batch
        return accuracy(logits(params, x), y)

    return Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=splits.train,
                   val_data=splits.val, test_data=splits.test, batch_size=batch_size,
                   metrics={"accuracy": acc}, name=f"logistic-{dataset}" + ("" if cv is None else f"-cv{cv}"),
                   cv=cv, cv_labels=None if cv is None else np.concatenate([splits.train[1], splits.val[1]]),
                   cv_seed=seed)
