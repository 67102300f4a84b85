"""Cross-validation as a wrapper: any function of one training set, vmapped over the folds.

On a problem with `cv=k`, `Problem.data` holds the k folds stacked (train leaves (k, n - m, ...),
val leaves (k, m, ...); test unstacked, shared). `over_folds(problem, data, fn)` calls
`fn(fold_data)` on each fold, vmapped (all folds share the key and hyperparameters: the same
initialisation and minibatch indices, each into its own fold's training set), and aggregates:

- the value: the mean over folds of the validation loss;
- grads, when `fn` returns them: the mean of the per-fold gradients, which is the gradient of the
  fold mean (linearity), so every hypergradient method, exact or estimated, works on a
  cross-validated problem without knowing about folds;
- scores: `val_<s>` the mean, `val_<s>_std` the population standard deviation over folds (as
  scikit-learn's `std_test_score`) and `val_<s>_fold<i>` per fold; `test_<s>` the mean over the k
  fold models (scikit-learn would refit one model on all the data; we report the fold models').

Cost and memory: k times those of `fn` on one fold (vmapped, so one program).

A caller that checks what `fn` returns (`hg.hypergradient` checks a method's output) does it on
each fold's output, before the folds are averaged (`over_folds(..., check=)`): averaging would
first fail on a wrong structure with an error of its own, or make a per-fold value of the wrong
shape look like another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hypergrad._types import PyTree, Scalar

__all__ = ["over_folds", "fold_data", "aggregate_scores", "RESERVED_SUFFIX"]

RESERVED_SUFFIX = re.compile(r"_std$|_fold[0-9]+$")
"""The score-name suffixes `aggregate_scores` writes (`val_<s>_std`, `val_<s>_fold<i>`) and
`Result.cv_results` reads; `hg.Problem` refuses a metric whose name is another score's name
("loss" or another metric's) followed by one of them."""


def fold_data(data: Mapping[str, PyTree], fold: int) -> dict[str, PyTree]:
    """The splits of fold `fold` of stacked cross-validation `data`."""
    out = {"train": jax.tree.map(lambda a: a[fold], data["train"]),
           "val": jax.tree.map(lambda a: a[fold], data["val"])}
    if "test" in data:
        out["test"] = data["test"]
    return out


def over_folds(problem: Any, data: Mapping[str, PyTree], fn: Callable[[dict[str, PyTree]], Any], *,
               has_grads: bool = False, check: Callable[[Any], Any] | None = None) -> Any:
    """`fn(data)` on a problem without folds; under cv, `fn` vmapped over the folds, aggregated.

    Args:
        problem: the `hg.Problem` (its `num_folds` says whether `data` is stacked).
        data: `problem.data` (or the same structure, traced).
        fn: `fold_data -> (value, scores)`, or with `has_grads` `-> ((value, scores), grads)`.
        check: under cv, each fold's output of `fn` goes through it (it returns the output or
            raises) before the folds are averaged: traced inside the vmap, so it sees one fold's
            shapes, as on a problem without folds. Cost: its own, once per trace; nothing in the
            compiled program. Without folds the caller checks `fn`'s output itself.

    Returns:
        what `fn` returns, with value and grads averaged over folds and scores aggregated (module
        docstring).
    """
    if problem.num_folds == 1:
        return fn(data)

    def one(train, val):
        split = {"train": train, "val": val}
        if "test" in data:
            split["test"] = data["test"]  # closed over: unbatched, one test set for all folds
        out = fn(split)
        return out if check is None else check(out)  # one fold's output, before averaging

    out = jax.vmap(one)(data["train"], data["val"])
    if not has_grads:
        return _mean_value_and_scores(out)
    value_scores, grads = out
    return _mean_value_and_scores(value_scores), jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def _mean_value_and_scores(value_scores: tuple[jax.Array, Mapping[str, jax.Array]]):
    value, scores = value_scores
    return jnp.mean(value), aggregate_scores(scores)


def aggregate_scores(per_fold: Mapping[str, jax.Array]) -> dict[str, Scalar]:
    """Scores of k fold models (each entry shape (k,)) as means, standard deviations and per-fold
    values (validation) or means (test)."""
    out = {}
    for name, values in per_fold.items():
        out[name] = jnp.mean(values)
        if name.startswith("val_"):
            # sqrt of the mean square deviation, which is 0 (not NaN) when the folds agree; never
            # differentiated (the value is `val_loss`, the other scores ride along as aux).
            out[f"{name}_std"] = jnp.sqrt(jnp.mean(jnp.square(values - out[name])))
    for name, values in per_fold.items():
        if name.startswith("val_"):
            for i in range(values.shape[0]):
                out[f"{name}_fold{i}"] = values[i]
    return out
