"""Problem: the data and the pure loss functions of a learning task.

A problem knows nothing of optimisers or hyperparameter search. It holds

- `init(key) -> params`, any pytree (plain dicts, `flax.nnx.State`, equinox modules); its
  floating-point leaves are trained, integer and boolean leaves held constant (`Loop.update`);
- `train_loss(params, hparams, batch) -> scalar`, where regularisation hyperparameters enter;
- `val_loss(params, batch) -> scalar`, the quantity hyperparameters are tuned for;
- the train, validation and (optional) test splits, each a pytree with a leading example axis;
- `batch_size` (None = full batch) and optional `metrics`, `fn(params, batch) -> scalar`,
  reported but never optimised.

Minibatches are drawn by epochs: each epoch visits every training example exactly once, in a
pseudorandom order keyed by the data key and the epoch, and minibatch `t` is positions t*b, ...,
t*b + b - 1 of the stream of epochs (b = batch_size). A pure function of (key, t) computed index
by index (`hypergrad._sampler`), so every method that replays step `t` sees the same data.

k-fold cross-validation (`cv=k`, as scikit-learn's `cv=`): the train and validation splits are pooled
(train then val, n examples) and cut into k validation folds of m = n // k examples each (a seeded
permutation, or stratified round-robin by `cv_labels`). Fold i validates on its m examples and trains
on all the n - m others, *including* the n mod k examples that belong to no validation fold; every
fold therefore trains on the same number of examples and the k fits can be vmapped. (scikit-learn's
`KFold` instead spreads the remainder over the first n mod k validation folds, so its folds differ
in size by one and every example is validated exactly once; here n mod k examples are never
validated on.) `Problem.data` then holds the folds stacked along a leading axis of length k.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._checks import is_int_at_least, users_stacklevel
from hypergrad._sampler import MAX_PRODUCT, epoch_batch_indices
from hypergrad._types import Batch, HParams, Key, Params, PyTree, Scalar
from hypergrad.folds import RESERVED_SUFFIX

__all__ = ["Problem", "num_examples", "check_values", "check_like_train", "kfold_indices", "explicit_folds",
           "scalar_output"]


def num_examples(data: PyTree, argname: str) -> int:
    """Length of the shared leading axis of `data`; `ValueError` if the leaves disagree."""
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"{argname} has no arrays; give a pytree such as (inputs, targets)")
    lengths = []
    for leaf in leaves:
        try:
            shape = np.shape(leaf)
        except ValueError as err:  # a ragged nested list
            raise ValueError(f"{argname} holds a ragged list; give arrays with one shape each") from err
        if len(shape) == 0:
            raise ValueError(f"{argname} holds a scalar; every leaf needs a leading example axis"
                             + _list_hint(data, argname))
        lengths.append(shape[0])
    if len(set(lengths)) != 1:
        raise ValueError(
            f"{argname}: inputs and targets have different lengths {lengths}; every leaf must have "
            "the same number of examples along axis 0"
        )
    if lengths[0] < 1:
        raise ValueError(f"{argname} is empty; give at least one example")
    return lengths[0]


def _list_hint(data: PyTree, argname: str) -> str:
    """The fix when `data` (named `argname`) holds a Python list of numbers: JAX reads a list as a
    pytree node, so each of its numbers is a scalar leaf of its own. '' when it holds none."""
    for path, node in jax.tree_util.tree_leaves_with_path(data, is_leaf=lambda x: isinstance(x, list)):
        if isinstance(node, list) and any(np.ndim(leaf) == 0 for leaf in jax.tree.leaves(node)):
            return (f": {argname}{jax.tree_util.keystr(path)} is a Python list, whose every number JAX reads as "
                    "a leaf of its own; pass arrays instead, e.g. np.asarray(the list)")
    return ""


def check_values(data: PyTree, argname: str) -> None:
    """Raises `ValueError` unless every leaf of `data` holds numbers (bool, int or float) and no NaN
    or infinity, which would make every trial's loss NaN. Cost: one pass over the data (numpy for
    arrays in host memory, else on the device the array lives on), at construction (and each
    `with_fixed` copy); traced data (a problem built inside a transformation) is not checked."""
    for leaf in jax.tree.leaves(data):
        if isinstance(leaf, jax.core.Tracer):
            continue
        array = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
        if not (jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.bool_)):
            raise ValueError(f"{argname} holds an array of dtype {array.dtype}; give numbers (encode labels "
                             "and text as ints first)")
        if jnp.issubdtype(array.dtype, jnp.inexact):
            if not isinstance(array, jax.Array) or _on_cpu(array):  # numpy: no program to compile
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
            else:
                with jax.ensure_compile_time_eval():  # eagerly, also when a trace builds the problem
                    bad = int((~jnp.isfinite(array)).sum())
            if bad:
                raise ValueError(f"{argname} holds {bad} NaN or infinite values; drop or impute them first "
                                 "(every trial's loss would be NaN)")


def check_like_train(split: PyTree, train_data: PyTree, argname: str) -> None:
    """Raises `ValueError` when `split` (val_data or test_data, named `argname`) has the structure
    of `train_data` but a leaf whose examples differ from train_data's in shape, or in kind of
    number (bool, integer, floating, complex): the model and losses see every split, so such a
    split failed deep in a trace naming neither split (4 features against 3), or silently
    broadcast (targets of shape (n, 1) against predictions of shape (n,)). Precision may differ
    (float32 against float64). A split of another structure is the user's own design and is not
    compared. Cost: shapes and dtypes only, at construction."""
    if split is None or jax.tree.structure(split) != jax.tree.structure(train_data):
        return
    for (path, leaf), train_leaf in zip(jax.tree_util.tree_leaves_with_path(split), jax.tree.leaves(train_data)):
        where = jax.tree_util.keystr(path)
        shape, train_shape = np.shape(leaf)[1:], np.shape(train_leaf)[1:]
        if shape != train_shape:
            raise ValueError(f"{argname}{where} holds examples of shape {shape}, but train_data{where} holds "
                             f"{train_shape}: every split must hold examples of one shape (the model and losses "
                             f"see all of them); give {argname} the same features and target shape as train_data")
        kind, train_kind = _number_kind(leaf), _number_kind(train_leaf)
        if kind != train_kind:
            raise ValueError(f"{argname}{where} holds {kind} values, but train_data{where} holds {train_kind}: "
                             f"every split must hold the same kind of number; convert one of them (e.g. labels "
                             f"as ints in every split: y.astype(int))")


def _number_kind(leaf: Any) -> str:
    """'bool', 'integer', 'floating' or 'complex': the kind of number `leaf` holds."""
    dtype = leaf.dtype if isinstance(leaf, (np.ndarray, jax.Array)) else np.asarray(leaf).dtype
    for kind, base in (("bool", np.bool_), ("integer", np.integer), ("floating", np.floating),
                       ("complex", np.complexfloating)):
        if np.issubdtype(dtype, base):
            return kind
    return str(dtype)


def _on_cpu(array: jax.Array) -> bool:
    """Whether `array` lives in host memory (CPU devices), where numpy reads it without a copy
    to the host and without compiling the small programs `jnp` would (one per shape)."""
    return array.is_fully_addressable and all(d.platform == "cpu" for d in array.devices())


def _to_device(leaf: Any) -> jax.Array:
    """`jnp.asarray(leaf)`: a device array holding a snapshot of the user's `leaf`, taken now.

    A numpy array is copied on the host (in JAX's canonical dtype, as `jnp.asarray` would cast
    it) and the copy moved by `jax.device_put`, which compiles nothing, where `jnp.asarray` runs
    it through a small compiled identity program, one per shape and dtype (about 25 compilations
    or cache loads for a 5-fold search's problems). The copy is what makes it a snapshot: on CPU,
    `device_put` shares memory with a numpy buffer that starts on a 64-byte boundary (and
    `may_alias=False` does not stop it) and copies any other, so without it a Problem followed
    later in-place edits of the user's array, past the construction's NaN check, or did not, by
    the allocator's chance. Memory: one copy of the array, which the Problem holds (on an
    accelerator the host copy is transient, freed once moved). Cost: one host copy per array."""
    if isinstance(leaf, np.ndarray):
        return _put_private(np.array(leaf, dtype=jax.dtypes.canonicalize_dtype(leaf.dtype), copy=True))
    return jnp.asarray(leaf)


def _put_private(array: np.ndarray) -> jax.Array:
    """`array`, a numpy array no one else holds (a private copy, or a gather's result), on the
    default device by `jax.device_put`: it may keep `array`'s memory (on CPU), so `array` must
    not be written to afterwards."""
    return jax.device_put(array)


def _as_device(data: PyTree) -> PyTree:
    return jax.tree.map(_to_device, data)


def kfold_indices(
    n: int, k: int, labels: Any = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Validation and training indices of k folds of equal size over n pooled examples.

    Without labels: a seeded permutation of range(n); fold i validates on its entries
    i*m, ..., (i+1)*m - 1 (m = n // k) and the last n mod k entries are validated on by no fold.
    With labels (stratified): each class's members are shuffled, the classes are concatenated and
    dealt round-robin to the folds (so each fold holds floor or ceil of n_c / k members of class c);
    each of the n mod k folds dealt one example too many gives back one member of the class it
    holds most in excess of its share m * n_c / n (chosen at random), and those are the left-overs.

    Args:
        n: number of pooled examples.
        k: number of folds, 2 <= k <= n.
        labels: optional length-n sequence of class labels (any values `np.unique` can sort).
        seed: seed of the permutation.

    Returns:
        (val, train): int arrays of shapes (k, m) and (k, n - m), each row sorted; `train[i]` is
        every index not in `val[i]`.
    """
    rng = np.random.default_rng(seed)
    m = n // k
    if labels is None:
        order = rng.permutation(n)
        folds = [order[i * m:(i + 1) * m] for i in range(k)]
    else:
        classes, codes = np.unique(np.asarray(labels), return_inverse=True)
        codes = codes.reshape(-1)
        order = np.concatenate([rng.permutation(np.flatnonzero(codes == c)) for c in range(len(classes))])
        folds = [order[i::k] for i in range(k)]  # round-robin: sizes m + 1 (first n mod k) or m
        share = m * np.bincount(codes, minlength=len(classes)) / n  # the class counts a fold should hold
        for i, fold in enumerate(folds):
            if len(fold) > m:
                excess = np.bincount(codes[fold], minlength=len(classes)) - share
                members = np.flatnonzero(codes[fold] == int(np.argmax(excess)))
                folds[i] = np.delete(fold, rng.choice(members))
    val = np.sort(np.stack(folds), axis=1).astype(np.int64)
    in_val = np.zeros((k, n), dtype=bool)
    in_val[np.arange(k)[:, None], val] = True
    train = np.stack([np.flatnonzero(~row) for row in in_val]).astype(np.int64)
    return val, train


def _warn_small_class(labels: np.ndarray, k: int) -> None:
    """The warning scikit-learn's StratifiedKFold gives when the least populated class of `labels`
    has fewer than k members: some folds then validate on none of it (their losses weigh the
    classes otherwise than the others')."""
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() < k:
        warnings.warn(f"Problem(cv={k}, cv_labels=...): the least populated class in cv_labels has only "
                      f"{counts.min()} members, which is less than cv={k} folds, so some folds validate on none of "
                      "it (as scikit-learn's StratifiedKFold warns); use fewer folds, or merge the rare class",
                      UserWarning, stacklevel=users_stacklevel())


def explicit_folds(cv: Any, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """(val, train) index arrays, shapes (k, m) and (k, t), of explicit folds `cv`: a list of k >= 2
    (train indices into train_data, val indices into val_data) pairs; with train_data and val_data
    the same examples, scikit-learn's `list(splitter.split(X, y))`. Every fold must have the same
    sizes (the k fits are vmapped). Raises `ValueError` otherwise."""
    try:
        pairs = [(np.asarray(train), np.asarray(val)) for train, val in cv]
    except (TypeError, ValueError) as err:
        raise ValueError("Problem(cv=[...]) must list (train_indices, val_indices) pairs, e.g. "
                         "list(KFold(5).split(X))") from err
    if len(pairs) < 2:
        raise ValueError(f"Problem(cv=[...]) lists {len(pairs)} fold(s); give at least 2")
    for i, (train, val) in enumerate(pairs):
        for name, idx, n in (("train", train, n_train), ("val", val, n_val)):
            if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"Problem(cv=[...]) fold {i}: {name} indices must be a non-empty 1-D int array")
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"Problem(cv=[...]) fold {i}: {name} indices must lie in [0, {n}), the examples "
                                 f"of {name}_data")
    sizes = {(len(train), len(val)) for train, val in pairs}
    if len(sizes) > 1:
        raise ValueError(f"Problem(cv=[...]) folds have (train, val) sizes {sorted(sizes)}; the folds are "
                         "vmapped, so every fold needs the same sizes (group the folds by size)")
    return (np.stack([val for _, val in pairs]).astype(np.int64),
            np.stack([train for train, _ in pairs]).astype(np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A learning task: data splits plus pure loss functions. Hashed by identity.

    Args:
        init: `key -> params`, any pytree. Its floating-point leaves are trained, each kept in its
            own dtype (float32 parameters train in float32 under float64 hyperparameters); integer
            and boolean leaves are held constant (`hypergrad.loop.Loop.update`), so at least one
            leaf must be floating point (a ValueError when the loop is first traced, else nothing
            would train: `hypergrad.loop.check_something_trains`).
        train_loss: `(params, hparams, batch) -> scalar`; regularisation hyperparameters enter here.
        val_loss: `(params, batch) -> scalar`; the objective that hyperparameters are tuned for.
        train_data, val_data: pytrees of arrays with a leading example axis. Every split is taken
            as it is at construction: a numpy array is copied (memory: one copy of each split,
            held by the problem; on an accelerator the host copy is transient), so an in-place
            edit of it afterwards (`X[:] = ...`, `X /= X.std(0)`) changes nothing the problem
            computes. (A JAX array, immutable, is kept as it is.)
        test_data: optional held-out split, reported for the chosen setting, never tuned on.
            A val_data or test_data of train_data's structure must hold examples of its shapes and
            kinds of number (`check_like_train`, at construction).
        batch_size: examples per training step; None means the full training set every step.
            Minibatches are drawn by epochs: every training example once per epoch, in a
            pseudorandom order keyed by the data key and the epoch; batch t is examples t*b to
            t*b + b - 1 of the endless stream of epochs, a pure function of (data key, t). When b
            does not divide n, no example is dropped: the batch that straddles an epoch's end
            takes what is left of that epoch's order and then the first examples of the next
            (so every example is trained on equally often; that one batch may hold an example
            twice). Under cv every fold draws the same positions (its own examples).
        metrics: optional `{name: fn(params, batch) -> scalar}`, reported on val and test.
        name: a label for reports.
        cv: None (train on train_data, validate on val_data) or k >= 2 for k-fold
            cross-validation over train_data and val_data pooled (see the module docstring), or
            explicit folds: a list of (indices into train_data, indices into val_data) pairs, all
            folds of the same sizes (`explicit_folds`; with train_data = val_data = (X, y),
            scikit-learn's `list(cv.split(X, y))`). Explicit folds need no common structure
            of train_data and val_data: each fold gathers its rows from its own split.
            Training, scoring and their compute are then k times those of one fit of n - m
            examples (m = n // k), vmapped over the folds; `data` holds the folds stacked,
            gathered once at construction (memory: k copies of the n pooled examples).
        cv_labels: optional 1-D labels of the pooled examples (train then val) for stratified folds.
        cv_seed: seed of the fold assignment of cv=k, an int >= 0 (default 0), checked whatever
            `cv` is but read only with cv=k: without cv, or with explicit folds, it changes no
            number (the built-in problems pass their data seed here whatever `cv` is; it is part of
            the objective's identity, so a stored study's call must repeat it).
        model_reads_hparams: True when the model itself reads hyperparameters (a masked
            structural choice: an activation index, a width that masks hidden units and scales
            their initialisation): `init(key, hparams)`, `val_loss(params, hparams, batch)` and
            metrics `fn(params, hparams, batch)` then receive them too.
    """

    init: Callable[[Key], Params]
    train_loss: Callable[[Params, HParams, Batch], Scalar]
    val_loss: Callable[[Params, Batch], Scalar]
    train_data: PyTree
    val_data: PyTree
    test_data: PyTree | None = None
    batch_size: int | None = None
    metrics: Mapping[str, Callable[[Params, Batch], Scalar]] = dataclasses.field(default_factory=dict)
    name: str = "problem"
    cv: int | None = None
    cv_labels: Any = None
    cv_seed: int = 0
    model_reads_hparams: bool = False

    def __post_init__(self):
        for argname in ("init", "train_loss", "val_loss"):
            if not callable(getattr(self, argname)):
                raise ValueError(f"Problem({argname}=...) must be a function")
        n_train, n_val = self._check_splits()
        folds = self._check_cv(n_train, n_val)
        where = "training examples"
        if folds is not None:
            if isinstance(self.cv, (list, tuple)):  # indices into train_data and val_data: nothing pooled
                where = (f"examples each of the {len(folds[0])} explicit folds trains on (validation folds of "
                         f"{folds[0].shape[1]})")
            else:
                where = (f"examples each fold trains on with cv={self.cv} ({n_train + n_val} pooled train + val "
                         f"examples, validation folds of {folds[0].shape[1]})")
            n_train = folds[1].shape[1]
        object.__setattr__(self, "batch_size", self._checked_batch_size(n_train, where))
        metrics = self._checked_metrics()
        object.__setattr__(self, "metrics", metrics)
        # The user's functions in one form, (..., hparams, ...), whatever model_reads_hparams says:
        # no later caller asks which form was given.
        if self.model_reads_hparams:
            object.__setattr__(self, "_init_fn", functools.partial(_with_hparams, self.init, "Problem(init=...)",
                                                                   _INIT_FORMS))
            object.__setattr__(self, "_val_fn", functools.partial(_with_hparams, self.val_loss,
                                                                  "Problem(val_loss=...)", _LOSS_FORMS))
            object.__setattr__(self, "_metric_fns", {
                name: functools.partial(_with_hparams, fn, f"Problem(metrics={{{name!r}: ...}})", _LOSS_FORMS)
                for name, fn in metrics.items()})
        else:
            object.__setattr__(self, "_init_fn", functools.partial(_init_without_hparams, self.init))
            object.__setattr__(self, "_val_fn", functools.partial(_without_hparams, self.val_loss,
                                                                  "Problem(val_loss=...)"))
            object.__setattr__(self, "_metric_fns", {
                name: functools.partial(_without_hparams, fn, f"Problem(metrics={{{name!r}: ...}})")
                for name, fn in metrics.items()})
        object.__setattr__(self, "train_data", _as_device(self.train_data))
        object.__setattr__(self, "val_data", _as_device(self.val_data))
        if self.test_data is not None:
            object.__setattr__(self, "test_data", _as_device(self.test_data))
        folded = None
        if folds is not None:
            # Gathered once here, so every call of `data` returns the same device arrays.
            val_idx, train_idx = folds
            if isinstance(self.cv, (list, tuple)):  # explicit folds index each split itself
                train_from, val_from = self.train_data, self.val_data
            else:
                train_from = val_from = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]),
                                                     self.train_data, self.val_data)
            # a gather copies: the folds are private arrays of the (already snapshotted) data
            folded = {"train": jax.tree.map(lambda a: _put_private(np.asarray(a)[train_idx]), train_from),
                      "val": jax.tree.map(lambda a: _put_private(np.asarray(a)[val_idx]), val_from)}
            if not isinstance(self.cv, (list, tuple)):
                object.__setattr__(self, "cv", int(self.cv))
                object.__setattr__(self, "cv_seed", int(self.cv_seed))
        object.__setattr__(self, "_folds", folds)
        object.__setattr__(self, "_folded", folded)

    def _checked_batch_size(self, n_train: int, where: str) -> int | None:
        """`batch_size` as a Python int (or None), after checking it against the `n_train` examples
        one fit trains on (`where` names them). A numpy integer is converted: strongly typed, it
        promoted the draw's uint32 arithmetic to signed ints (negative indices, NaN losses, a
        cycle walk that never ended)."""
        b = self.batch_size
        if b is None:
            return None
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise ValueError(f"batch_size={b!r} must be an int or None (full batch)")
        b = int(b)
        if b < 1:
            raise ValueError(f"batch_size={b} must be >= 1, or None for full batch")
        if b > n_train:
            raise ValueError(f"batch_size={b} is larger than the {n_train} {where}; "
                             f"use batch_size <= {n_train}, or None for full batch")
        if b * n_train >= MAX_PRODUCT:
            raise ValueError(f"batch_size={b} times the {n_train} {where} must be below "
                             f"2**32 (the minibatch draw counts positions in uint32); use a smaller batch")
        return b

    def _checked_metrics(self) -> dict[str, Callable]:
        if self.metrics is not None and not isinstance(self.metrics, Mapping):
            raise ValueError(f"metrics={self.metrics!r} must be a dict {{name: fn(params, batch) -> scalar}}")
        metrics = dict(self.metrics or {})
        for name, fn in metrics.items():
            check_metric_name(name, others=metrics)
            if not callable(fn):
                raise ValueError(f"metrics[{name!r}] must be a function fn(params, batch) -> scalar")
        return metrics

    def _check_splits(self) -> tuple[int, int]:
        """(train, val) example counts; `ValueError` for a split without a shared leading axis, or
        holding anything but finite numbers."""
        n_train = num_examples(self.train_data, "train_data")
        n_val = num_examples(self.val_data, "val_data")
        if self.test_data is not None:
            num_examples(self.test_data, "test_data")
        for argname in ("train_data", "val_data", "test_data"):
            check_values(getattr(self, argname), argname)
        # cv=k: `_check_cv` checks val (its message names the pooling for another structure or shape)
        pooled = self.cv is not None and not isinstance(self.cv, (list, tuple))
        for argname in ("test_data",) if pooled else ("val_data", "test_data"):
            check_like_train(getattr(self, argname), self.train_data, argname)
        return n_train, n_val

    def _check_cv(self, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Validates the cv arguments; the (val, train) fold indices, or None without cv."""
        cv, labels, n = self.cv, self.cv_labels, n_train + n_val
        if not is_int_at_least(self.cv_seed, 0):
            # numpy's generator, which draws the folds, takes only seeds >= 0; checked without cv too
            raise ValueError(f"Problem(cv_seed={self.cv_seed!r}) must be an int >= 0 (the seed of the folds of cv=k)")
        if cv is None:
            if labels is not None:
                raise ValueError("Problem(cv_labels=...) was given without cv; set cv=k (e.g. cv=5) for "
                                 "stratified k-fold cross-validation, or drop cv_labels")
            return None
        if isinstance(cv, (list, tuple)):
            if labels is not None:
                raise ValueError("Problem(cv_labels=...) only stratifies cv=k; explicit folds are already "
                                 "assigned, so drop cv_labels")
            return explicit_folds(cv, n_train, n_val)
        if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
            raise ValueError(f"Problem(cv={cv!r}) must be an int >= 2 (the number of folds, e.g. cv=5), a list "
                             "of (train, val) index pairs, or None to train on train_data and validate on val_data")
        if cv > n:
            raise ValueError(f"Problem(cv={cv}) needs at least {cv} examples, but train_data and val_data "
                             f"pool {n}; use cv <= {n}")
        if jax.tree.structure(self.train_data) != jax.tree.structure(self.val_data) or any(
                np.shape(a)[1:] != np.shape(b)[1:]
                for a, b in zip(jax.tree.leaves(self.train_data), jax.tree.leaves(self.val_data))):
            raise ValueError(f"Problem(cv={cv}) pools train_data and val_data, so they must have the same "
                             "structure and the same shapes after the example axis")
        check_like_train(self.val_data, self.train_data, "val_data")  # the kinds of number, before pooling
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim != 1 or labels.shape[0] != n:
                raise ValueError(f"Problem(cv_labels=...) has shape {labels.shape}, but train_data and val_data "
                                 f"pool {n} examples; give a 1-D array of {n} labels (the train labels, then "
                                 "the val labels), or None for unstratified folds")
            _warn_small_class(labels, int(cv))
        return kfold_indices(n, int(cv), labels, int(self.cv_seed))

    @property
    def num_folds(self) -> int:
        """k under cross-validation, 1 otherwise."""
        return 1 if self._folds is None else len(self._folds[0])

    @property
    def num_train(self) -> int:
        """Examples one fit trains on: the training split, or n - n // k per fold under cv."""
        if self._folds is not None:
            return int(self._folds[1].shape[1])
        return num_examples(self.train_data, "train_data")

    @property
    def fold_indices(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(val, train) indices, shapes (k, m) and (k, n - m): into the pooled train ++ val examples
        (cv=k), or into val_data and train_data (explicit folds); None without cv."""
        return self._folds

    @property
    def data(self) -> dict[str, PyTree]:
        """All splits as one pytree, the explicit data argument of compiled programs.

        Under cv, "train" and "val" hold the folds stacked: leaves of shape (k, n - m, ...) and
        (k, m, ...); "test" is unchanged.
        """
        if self._folded is not None:
            data = dict(self._folded)
        else:
            data = {"train": self.train_data, "val": self.val_data}
        if self.test_data is not None:
            data["test"] = self.test_data
        return data

    def batch_indices(self, key: Key, step: jax.Array) -> jax.Array | None:
        """Indices (int32) of minibatch `step` in the epoch stream (see the class docstring).

        `step` may be an array of steps (the result gains its leading axes). Returns None for a
        full-batch problem. Cost: O(batch_size) per step (a few integer hashes per index,
        `hypergrad._sampler`); nothing of size n is drawn or stored.
        """
        if self.batch_size is None:
            return None
        return epoch_batch_indices(key, step, self.num_train, self.batch_size)

    @staticmethod
    def gather(train_data: PyTree, indices: jax.Array | None) -> Batch:
        """The examples of `train_data` at `indices` (all of it when `indices` is None)."""
        if indices is None:
            return train_data
        return jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), train_data)

    def train_batch(self, train_data: PyTree, key: Key, step: jax.Array) -> Batch:
        """Minibatch `step` of the epoch stream keyed by `key` (see `batch_indices`)."""
        return self.gather(train_data, self.batch_indices(key, step))

    def initial_params(self, key: Key, hparams: HParams) -> Params:
        """`init(key)`, or `init(key, hparams)` when `model_reads_hparams`."""
        return self._init_fn(key, hparams)

    def training_loss(self, params: Params, hparams: HParams, batch: Batch) -> Scalar:
        """`train_loss` on `batch`; `ValueError` (when traced) unless it returns a floating-point
        scalar (training differentiates it)."""
        return scalar_output(self.train_loss(params, hparams, batch),
                             "Problem(train_loss=...)", floating=True)

    def validation_loss(self, params: Params, hparams: HParams, batch: Batch) -> Scalar:
        """`val_loss` on `batch` (given `hparams` when `model_reads_hparams`); `ValueError` (when
        traced) unless it returns a scalar."""
        return scalar_output(self._val_fn(params, hparams, batch), "Problem(val_loss=...)")

    def scores(self, params: Params, data: Mapping[str, PyTree], hparams: HParams | None = None
               ) -> dict[str, Scalar]:
        """Validation and test losses and metrics of trained `params`.

        Args:
            hparams: the hyperparameters, required when `model_reads_hparams`.

        Returns:
            `{"val_loss", "test_loss", "val_<metric>", "test_<metric>"}` (test entries only when
            the problem has a test split).

        Raises:
            ValueError: `val_loss` or a metric returned anything but a scalar (`scalar_output`).
        """
        if hparams is None and self.model_reads_hparams:
            raise ValueError("Problem(model_reads_hparams=True).scores needs the hparams")
        out = {}
        for split in ("val", "test"):
            if split in data:
                out[f"{split}_loss"] = scalar_output(self._val_fn(params, hparams, data[split]),
                                                       "Problem(val_loss=...)")
                for name, fn in self._metric_fns.items():
                    out[f"{split}_{name}"] = scalar_output(fn(params, hparams, data[split]),
                                                                 f"Problem(metrics={{{name!r}: ...}})")
        return out

    def with_fixed(self, fixed: Mapping[str, Any]) -> Problem:
        """This problem with the hyperparameters in `fixed` held at the given (possibly traced)
        values: every function that reads hparams sees `{**hparams, **fixed}`.

        Cost: a new Problem (the data are reused; a cross-validated problem regathers its folds).
        """
        fixed = held_values(fixed)

        def merged(hparams):
            return {**hparams, **fixed}

        return dataclasses.replace(
            self,
            init=lambda key, h: self._init_fn(key, merged(h)),
            train_loss=lambda params, h, batch: self.train_loss(params, merged(h), batch),
            val_loss=lambda params, h, batch: self._val_fn(params, merged(h), batch),
            metrics={name: functools.partial(_merged_metric, fn, fixed) for name, fn in self._metric_fns.items()},
            model_reads_hparams=True,
        )


def held_values(fixed: Mapping[str, Any]) -> dict[str, Any]:
    """`fixed` as `with_fixed` holds it: a numpy array of one or more dimensions becomes a device
    array, so that a function indexing it with a traced value (`h["lr"][step]`, per-example weights
    at a minibatch's indices) reads it as it reads a tuned hyperparameter, where indexing the numpy
    array with a tracer fails (JAX's TracerArrayConversionError). Every other value is kept as it
    is: Python and numpy scalars stay concrete (a structural choice's `int(h["layers"])`), traced
    values stay traced. Cost: one copy to the device per array, once per `with_fixed`."""
    return {name: jnp.asarray(value) if isinstance(value, np.ndarray) and value.ndim else value
            for name, value in dict(fixed).items()}


def scalar_output(value: Any, what: str, floating: bool = False) -> Any:
    """`value`, a loss or metric the user's function `what` returned; `ValueError` naming the
    function and the shape unless it is a scalar. Read from the (traced) shape, so the error comes
    while the program is traced, before anything compiles: a `(1,)` or per-example `(n,)` value
    would otherwise pass as the objective's value or fail deep in autodiff or a search. A tuple,
    list, dict or None (a loss written for `jax.value_and_grad(..., has_aux=True)` returns
    `(loss, aux)`) is refused the same way, naming what it is, before its shape is read (numpy
    would turn the traced loss inside it into an array and fail with JAX's conversion error).
    `floating`: also refuse a dtype that is not floating point (an integer count, a boolean), for a
    value that is always differentiated (the training loss), where JAX's own error ("grad requires
    real-valued outputs ... use jax.vjp directly") names neither the function nor the fix. A
    validation loss or metric may be an integer (a search or ES scores a count as well)."""
    if not jax.tree_util.all_leaves([value]):  # a container of values (or None), not one array or number
        raise ValueError(f"{what} returned a {type(value).__name__}; it must return a scalar loss alone, not "
                         "(loss, aux): return the loss, e.g. index [0] of the tuple (lambda *args: fn(*args)[0])")
    shape = np.shape(value)
    if shape != ():
        raise ValueError(f"{what} returned shape {shape}; it must return a scalar: average the "
                         "per-example losses (.mean()), or .squeeze() a single value")
    dtype = jnp.result_type(value)
    if floating and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{what} returned dtype {dtype}; it must return a floating-point loss, which training "
                         "differentiates: a count or a sum of comparisons has no gradient (and .astype(float) of "
                         "one trains nothing), so return a differentiable loss, e.g. the mean of per-example losses")
    return value


def _merged_metric(fn, fixed, params, hparams, batch):
    return fn(params, {**hparams, **fixed}, batch)


def _init_without_hparams(init, key, hparams):
    return init(key)


def _without_hparams(fn, what, params, hparams, batch):
    """`fn(params, batch)`, the user's `what` of a problem without `model_reads_hparams`. A
    `TypeError` of calling it so, when its signature asks for (params, hparams, batch), is re-raised
    naming `model_reads_hparams=True`: the bare one ("missing 1 required positional argument")
    says nothing of the flag."""
    try:
        return fn(params, batch)
    except TypeError as err:
        if not _takes(fn, 3, instead_of=2):
            raise
        raise TypeError(
            f"{what} takes (params, hparams, batch), but a Problem calls it as fn(params, batch): if it reads "
            "hyperparameters (a model that does), pass Problem(..., model_reads_hparams=True), which gives "
            "init(key, hparams), val_loss(params, hparams, batch) and every metric fn(params, hparams, batch) "
            "the hparams; otherwise drop its hparams argument (regularisation hyperparameters enter through "
            "train_loss)") from err


_INIT_FORMS = ("(key)", "(key, hparams)")
_LOSS_FORMS = ("(params, batch)", "(params, hparams, batch)")
"""How a Problem calls the user's init, and its val_loss and metrics: (without, with) the hparams."""


def _with_hparams(fn, what, forms, *args):
    """`fn(*args)`, the user's `what` of a problem with `model_reads_hparams`, its arguments the form
    `forms[1]` (hparams second). A `TypeError` of calling it so, when its signature takes the form
    `forms[0]` (no hparams) instead, is re-raised naming the flag and both fixes: the bare one
    ("takes 2 positional arguments but 3 were given") says nothing of it. Cost: a signature read,
    only when the call raised."""
    try:
        return fn(*args)
    except TypeError as err:
        if not _takes(fn, len(args) - 1, instead_of=len(args)):
            raise
        without, given = forms
        raise TypeError(
            f"{what} takes {without}, but Problem(model_reads_hparams=True) calls it as fn{given}: the flag gives "
            "init(key, hparams), val_loss(params, hparams, batch) and every metric fn(params, hparams, batch) the "
            f"hparams. Give it an hparams argument (lambda {given[1:-1]}: fn{without} if it reads none), "
            "or drop model_reads_hparams=True if the model reads no hyperparameters (init(key), "
            "val_loss(params, batch) and metrics fn(params, batch))") from err


def _takes(fn: Callable, count: int, *, instead_of: int) -> bool:
    """Whether `fn`'s signature takes `count` positional arguments and refuses `instead_of`. False
    when it has no signature to read or takes both (`*args`): then nothing is guessed."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an object without a readable signature
        return False
    return _binds(signature, count) and not _binds(signature, instead_of)


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def as_problem(problem: Any) -> Problem:
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem must be an hg.Problem, got {type(problem).__name__}; build one with "
            "hg.Problem(init=..., train_loss=..., val_loss=..., train_data=..., val_data=...)"
        )
    return problem


def check_metric_name(name: Any, others: Any = ()) -> None:
    """`ValueError` unless `name` can be a metric's name beside the metric names `others`: a non-empty
    string, not "loss" (the scores `val_loss`/`test_loss` are the loss's own, and `val_loss` is the
    value every search tunes), and not a score name cross-validation reserves for another score:
    `<score>_std` or `<score>_fold<i>` (`RESERVED_SUFFIX`) where `<score>` is "loss" or another
    metric. Any of these would overwrite another score, or be read as one, silently; a suffix on a
    stem that is no score's ("pred_std") collides with nothing and is accepted."""
    where = f"Problem(metrics={{{name!r}: ...}})"
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a metric's name must be a non-empty string (it becomes the score names "
                         f"val_<name> and test_<name>), got {type(name).__name__} {name!r}; rename it, "
                         f"e.g. {str(name) or 'metric'!r}, keeping the names distinct")
    if name == "loss":
        raise ValueError(f"{where}: the name 'loss' is reserved: the scores val_loss and test_loss are the "
                         "loss's own (val_loss is the value every search tunes), and the metric would "
                         "replace them; rename it, e.g. 'loss_metric'")
    suffix = RESERVED_SUFFIX.search(name)
    stem = name[:suffix.start()] if suffix else None
    if suffix and (stem == "loss" or stem in others):
        raise ValueError(f"{where}: the suffix {suffix.group()!r} is reserved for the score {stem!r}: "
                         "cross-validation reports val_<score>_std (the standard deviation over folds) and "
                         "val_<score>_fold<i> (fold i's score), which Result.cv_results reads; rename it, e.g. "
                         f"{stem + suffix.group().replace('_', '-', 1)!r}")
