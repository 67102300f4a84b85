"""Offline data for the built-in problems: scikit-learn's bundled sets and synthetic data.

Every split is seeded and reproducible: a seeded permutation, 60% train / 20% validation / 20% test
(stratified for classification), features standardised with the training split's statistics.
Nothing downloads at run time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hypergrad._checks import is_int_at_least

__all__ = ["Splits", "load", "raw", "synthetic_regression", "check_synthetic_only", "CLASSIFICATION", "REGRESSION"]

CLASSIFICATION = ("digits", "iris", "wine", "breast_cancer")
REGRESSION = ("diabetes",)


class Splits(NamedTuple):
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _sklearn_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the built-in data set {name!r} comes from scikit-learn; install it with "
            "`pip install 'hypergrad[data]'` (or use a synthetic problem)"
        ) from err
    loader = getattr(datasets, f"load_{name}")
    return loader(return_X_y=True)


def _split_indices(n: int, labels: np.ndarray | None, seed: int, fractions=(0.6, 0.2)) -> tuple:
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_train = int(round(fractions[0] * n))
        n_val = int(round(fractions[1] * n))
        return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    parts = ([], [], [])
    for label in np.unique(labels):  # stratified: each class split in the same proportions
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train:n_train + n_val])
        parts[2].append(members[n_train + n_val:])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features (digits' blank pixels) stay zero
    return [((x - mean) / std) for x in (x_train, *others)]


def make_splits(x: np.ndarray, y: np.ndarray, *, classification: bool, seed: int, dtype) -> Splits:
    train, val, test = _split_indices(len(x), y if classification else None, seed)
    xs = _standardise(x[train], x[val], x[test])
    ys = [y[i] for i in (train, val, test)]
    if classification:
        ys = [t.astype(np.int32) for t in ys]
    else:  # centre targets on the training mean so models need no intercept
        mean = ys[0].mean()
        ys = [(t - mean).astype(dtype) for t in ys]
    xs = [v.astype(dtype) for v in xs]
    return Splits(*zip(xs, ys))


def load(name: str, *, seed: int = 0, dtype=np.float32) -> Splits:
    """A bundled scikit-learn data set, split and standardised.

    Args:
        name: one of "digits", "iris", "wine", "breast_cancer" (classification) or "diabetes".
        seed: seed of the split.
        dtype: floating dtype of the inputs (and regression targets).
    """
    if name not in CLASSIFICATION + REGRESSION:
        raise ValueError(
            f"dataset={name!r} is not built in; choose one of {CLASSIFICATION + REGRESSION} or "
            "build an hg.Problem from your own arrays"
        )
    x, y = _sklearn_dataset(name)
    return make_splits(np.asarray(x, np.float64), np.asarray(y), classification=name in CLASSIFICATION,
                       seed=seed, dtype=dtype)


def raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled classification set's features and labels as scikit-learn ships them: unsplit and
    unstandardised (digits: pixel intensities 0-16, 64 per image, row-major 8 x 8)."""
    if name not in CLASSIFICATION:
        raise ValueError(f"dataset={name!r}: raw data is offered for {CLASSIFICATION}")
    x, y = _sklearn_dataset(name)
    return np.asarray(x, np.float64), np.asarray(y).astype(np.int32)


def synthetic_regression(num_examples: int, num_features: int, *, noise: float, seed: int, dtype) -> Splits:
    """A linear model with Gaussian noise and a decaying spectrum of true weights."""
    _check_synthetic(num_examples, num_features)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, num_features))
    true_w = rng.normal(size=num_features) / np.arange(1, num_features + 1)
    y = x @ true_w + noise * rng.normal(size=num_examples)
    return make_splits(x, y, classification=False, seed=seed, dtype=dtype)


def check_synthetic_only(problem: str, dataset: str, **shape: Any) -> None:
    """Refuses the synthetic data's shape arguments (`shape`, those not None) for a named dataset,
    which has its own: `ridge("diabetes", num_features=3)` silently trained on all 10 features."""
    given = sorted(name for name, value in shape.items() if value is not None)
    if dataset != "synthetic" and given:
        raise ValueError(f"{problem}(dataset={dataset!r}, {', '.join(f'{n}={shape[n]!r}' for n in given)}): "
                         f"{', '.join(sorted(shape))} shape the synthetic data only; drop them for {dataset!r}, "
                         "or use dataset='synthetic'")


MIN_SYNTHETIC_EXAMPLES = 10
"""Fewest synthetic examples: the 60/20/20 split then gives every split at least two."""


def _check_synthetic(num_examples: Any, num_features: Any) -> None:
    if not is_int_at_least(num_examples, MIN_SYNTHETIC_EXAMPLES):
        raise ValueError(f"num_examples={num_examples!r} must be an int >= {MIN_SYNTHETIC_EXAMPLES}: the data are split "
                         "60/20/20 into train, validation and test, and none may be (nearly) empty")
    if not is_int_at_least(num_features, 1):
        raise ValueError(f"num_features={num_features!r} must be an int >= 1")


def synthetic_classification(num_examples: int, num_features: int, num_classes: int, *, seed: int,
                             dtype) -> Splits:
    """Gaussian class clusters with overlapping means (not linearly separable)."""
    _check_synthetic(num_examples, num_features)
    if not is_int_at_least(num_classes, 2):
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 2")
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, num_features))
    y = rng.integers(0, num_classes, size=num_examples)
    x = means[y] + 1.5 * rng.normal(size=(num_examples, num_features))
    return make_splits(x, y, classification=True, seed=seed, dtype=dtype)
