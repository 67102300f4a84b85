"""Stratified cv=k with a class of fewer than k members warns, as scikit-learn's StratifiedKFold does (optuna hunt,
session 38, finding 4): some folds then validate on none of the class, silently before."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg


def _problem(labels, k):
    n = len(labels)
    x = np.random.default_rng(0).normal(size=(n, 3))
    y = np.asarray(labels)
    cut = n * 3 // 4
    return hg.Problem(init=lambda key: {"w": jnp.zeros((3,))},
                      train_loss=lambda p, h, b: jnp.sum((b[0] @ p["w"] - b[1]) ** 2),
                      val_loss=lambda p, b: jnp.sum((b[0] @ p["w"] - b[1]) ** 2),
                      train_data=(x[:cut], y[:cut]), val_data=(x[cut:], y[cut:]), cv=k, cv_labels=y)


def test_a_class_smaller_than_k_warns_naming_its_count_and_k():
    labels = [0] * 19 + [1] * 19 + [2] * 2
    with pytest.warns(UserWarning, match=r"least populated class in cv_labels has only 2 members.*less than cv=5"):
        problem = _problem(labels, 5)
    assert problem.num_folds == 5  # a warning, not a refusal: the folds are as documented


def test_every_class_of_at_least_k_members_is_silent():
    labels = [0] * 19 + [1] * 16 + [2] * 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _problem(labels, 5)
