"""The protocol between hypergrad's scikit-learn estimators and its searches.

Every estimator of `hypergrad.sklearn` is a `HypergradEstimator`: a scikit-learn estimator (its
parameter names, defaults, validation, `get_params`/`set_params`, pickling) whose `fit` is one
compiled hypergrad program, and which can hand a search the *family* of programs behind it, so
that many candidate settings x folds are fitted vmapped instead of one by one.

The three methods a search calls:

- `_family(train, val, *, varying, n_classes=None, classes=None, rows=None) -> (hg.Structured, hg.Space)`: a family
  fitting this estimator on `train = (X, y)` and scoring on `val = (X, y)` (numpy arrays, already
  validated; for classifiers `y` holds class indices 0..k-1 of the classes of the full data). Every
  parameter not in `varying` is taken from `self.get_params()`. The Space has one entry per name in
  `varying`: an `hg.Choice` of the given options for structural parameters (`_structural_params`),
  and for continuous ones (`_continuous_params`) `hg.LogUniform` over the given values' range when
  all are positive, else `hg.Uniform` (a single value gets a range around it; +inf, where the
  parameter allows it, is evaluated but left out of the range); None when `varying`
  is empty (what `fit` uses). The family's
  problem reports `val_loss` (log-loss for classifiers, mean squared error for regressors) and the
  metrics "score" (the estimator's default `score`: accuracy or R^2), for classifiers "accuracy"
  and "log_loss", for regressors "neg_mean_squared_error" and "r2" (read back as `val_<name>`).
  A family whose fits iterate up to `max_iter` and stop by a rule of their own (the MLPs',
  LogisticRegression's) also reports "stopped": 1 when the fit stopped by its rule, 0 when it ran
  all `max_iter` iterations without converging (where its `fit` warns); a search warns once for
  the fits with 0, as scikit-learn's warns for each. Without it, no fit counts as unconverged.
  Structural parameters go through `hg.Structured(build, maskable=...)`, so hypergrad's planner
  masks or groups them by measured cost.
  Change to the first draft of the protocol: the keyword `n_classes` (classifiers only) gives the
  number of classes k when a fold lacks the last class; None takes max(label) + 1 over train and val.
  The keyword `classes` (classifiers only; the searches give it with `n_classes`) holds the full
  data's labels in code order (`classes_`), so that settings keyed by label (LogisticRegression's
  `class_weight` dict) are mapped onto the codes as `fit` maps them; None where none needs it.
- `_settings(space, candidates) -> dict[str, np.ndarray]`: candidates (dicts of scikit-learn
  parameter values, e.g. from `ParameterGrid`) as the settings `hg.search.evaluate_settings`
  takes: option indices for `Choice` entries, values for numeric ones; leading axis = candidate.
- `_encode_y(y) -> (y_encoded, attributes)`: validated targets as `_family` wants them, and what
  `fit` would set from them (`{"classes_": ...}` for classifiers).
- `_fit_key() -> jax key`: the training key `fit` uses (from `random_state`), so a search that
  passes the same key reproduces `fit` exactly.

One more a search calls on every candidate before anything compiles: `_check_supported()`,
which raises the `ValueError` that `fit` raises for a setting scikit-learn offers and this
estimator refuses (`Ridge(positive=True)`, an l1 penalty, `solver="lbfgs"`, `warm_start=True`), so
a search refuses what `fit` refuses instead of computing something else.

`fit` itself goes through the same family (no parameter varying), so a search's candidate and a
refit of the same parameters with the same key are the same computation.

Two more let folds of different sizes (KFold on n examples not divisible by k) share one program:
`_family(..., rows=(train rows, val rows))` pads `train` and `val` with rows of weight 0 up to
those counts (`padded_part`: each part becomes (X, y, weights), 1 for an example, 0 for padding),
and every loss and score of the family is then the weighted mean over the real examples
(`real_mean`; R^2 NaN below two real examples, as unpadded); `rows=None` (the default) pads
nothing. `_paddable(fits, sizes)` says whether that is exact for every fit in `fits` (each a full
parameter dict) on training parts of each of `sizes` examples: the same numbers, to float rounding
(sums over more terms may be ordered otherwise), as the unpadded program's; False here, so an
estimator that does not say so keeps one program per fold size.

One more a search calls to reuse its programs across fits: `_program_key(varying, n_classes)`, a
hashable identity of every program of `_family(train, val, varying=varying, n_classes=...)` except
the data (which the programs read only through their arguments): the estimator's class, every
parameter not in `varying` (exactly: `frozen`) but its `_argument_params`, the options of the
structural ones in `varying`, the names of the continuous ones (their values are arguments),
`n_classes` and JAX's settings that shape a trace (`hypergrad._compile.trace_settings()`: the
float width, `jax_threefry_partitionable`'s random draws, ...); None when a parameter has no such
identity. The search adds the folds' shapes and the
configuration, and objectives of equal keys share their compiled programs (`program_owner`), so a
second fit of the same search, or nested cross-validation over folds of one size, compiles nothing.

One class attribute: `_data_baking_params`, the structural parameters which, when true, make the
family's programs hold data of their own besides the problem's (MLP's `early_stopping` holds the
held-out split of each fold's training part). A search then runs the folds one program each instead
of stacking them (`HypergradEstimator._bakes_data`); every other program must read its data
only through the problem.

Another: `_argument_params`, the parameters no program holds as a constant: they reach the
programs only as arguments (`random_state`, through `_fit_key`) or not at all (`verbose`, an MLP's
`max_fun`, the linear models' `solver`). `_program_key` leaves them out, so searches that differ
only in them (a study repeated over seeds) share their programs, as `fit` does; except while
the programs bake data (`_bakes_data`), which may be drawn from them (the early-stopping split,
from `random_state`): there the key holds every parameter.
"""

from __future__ import annotations

import collections
import numbers
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np
import scipy.sparse
import scipy.special
import sklearn.base
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

import hypergrad as hg
from hypergrad import _caches, _compile

__all__ = ["HypergradEstimator", "continuous_distribution", "cached_program", "class_probabilities", "clipped_log_loss",
           "LOG_LOSS_BOUNDS", "PROBABILITY_DTYPE", "class_codes", "encode_classes",
           "fit_compiler_options", "as_option", "frozen", "program_owner", "ProgramOwner", "on_device", "padded_part",
           "real_mean", "fewer_than_two_real"]

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 32
_PROGRAMS_LOCK = threading.RLock()  # around each look-up, insertion and clear; never around make()


@_caches.register
def _clear_programs() -> None:
    with _PROGRAMS_LOCK:
        _PROGRAMS.clear()


def cached_program(key: Hashable, make: Callable[[], Any]) -> Any:
    """A fit program (whatever `make()` builds: a family, its objective and a jitted function)
    kept per `key` (the estimator's class, structural parameters and data shapes) and JAX's settings
    that shape a trace (`hypergrad._compile.trace_settings()`: a fit after flipping
    `jax_enable_x64` or `jax_threefry_partitionable` gets a program of its own), so estimators
    of the same kind fitted on data of the same shapes reuse one compilation (scikit-learn's
    `check_estimator` fits dozens). At most 32 kept, least recently used dropped; emptied by
    `hg.clear_caches()`. A program must be all that its fits compile (`make()` jits a function
    of its own, not a module-level one, whose jit would keep every shape's executable, and the
    arguments go through `on_device`), so the cap bounds the programs a loop of fits on data of many
    shapes keeps, and `hg.clear_caches()` drops them. Neither bounds JAX's own trace cache: tracing
    a program at a new shape or structure adds jaxprs of jax.numpy's functions at that shape (tens
    per fit), which JAX keeps without limit; a long sweep over structures or shapes frees them with
    `jax.clear_caches()` (after which every program compiles again). Memory: a program may hold the
    training data of the fit that built it (its problem's splits, which later fits replace by their
    own arguments), so on large data call `hg.clear_caches()` once done fitting. Thread-safe: a
    program cleared or evicted by another thread is a miss (made again); two threads missing at once
    each make one, and the later replaces the earlier."""
    key = key, _compile.trace_settings()  # a program traced under other JAX settings computes otherwise
    with _PROGRAMS_LOCK:
        if key in _PROGRAMS:
            _PROGRAMS.move_to_end(key)
            return _PROGRAMS[key]
    program = make()
    with _PROGRAMS_LOCK:
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    return program


def on_device(tree: Any, dtype: Any = None) -> Any:
    """`tree`'s arrays as JAX arrays of `dtype` (when given): a numpy array (or number) cast on the
    host and moved by `jax.device_put`, which compiles nothing; a JAX array left as it is (cast on
    the device only when its dtype differs). A fit's arguments go through this, not
    `jnp.asarray`: that runs a numpy array through a small compiled program (JAX's eager `stage`,
    or a dtype conversion), one per shape and dtype, which JAX's own caches keep for the process's
    life, out of reach of `cached_program`'s cap and of `hg.clear_caches()` (a loop of fits over
    data of many lengths held one such program per length, each a few MB). Cost: the transfer."""
    def leaf(a):
        if isinstance(a, jax.Array):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return jax.device_put(np.asarray(a, dtype))

    return jax.tree.map(leaf, tree)


class ProgramOwner:
    """The owner a search's objectives keep their compiled programs under
    (`hypergrad._compile.share_programs`): a small object standing for one `key`, holding no data."""

    __slots__ = ("key", "__weakref__")

    def __init__(self, key: Hashable):
        self.key = key

    def __repr__(self) -> str:
        return f"ProgramOwner({self.key!r})"


_OWNERS: collections.OrderedDict = collections.OrderedDict()
_MAX_OWNERS = 64
_OWNERS_LOCK = threading.RLock()  # around each look-up, insertion and clear


@_caches.register
def _clear_owners() -> None:
    with _OWNERS_LOCK:
        _OWNERS.clear()


def program_owner(key: Hashable) -> ProgramOwner:
    """The one `ProgramOwner` of `key` (a program identity: `HypergradEstimator._program_key`, the
    folds' shapes and the structural configuration), so that the objectives of every fit with that
    key share their compiled programs. At most 64 kept, least recently used dropped (their programs
    then live as long as an objective naming them; the compiled-program cache bounds them too);
    emptied by `hg.clear_caches()`. Memory: the key (parameter values), no data. Thread-safe."""
    with _OWNERS_LOCK:
        if key in _OWNERS:
            _OWNERS.move_to_end(key)
            return _OWNERS[key]
        owner = _OWNERS[key] = ProgramOwner(key)
        while len(_OWNERS) > _MAX_OWNERS:
            _OWNERS.popitem(last=False)
        return owner


def frozen(value: Any) -> Hashable:
    """A hashable identity of a parameter value, equal only for values of one type and one
    exact value (so that a constant baked into a program is the same: -0.0 is not 0.0, 1 is not
    1.0); lists, tuples, arrays and dicts element by element; any other hashable object as itself
    (held: an object hashed by identity is never mistaken for a later one). `TypeError` for an
    unhashable object."""
    if isinstance(value, (float, complex, np.floating, np.complexfloating)):
        return type(value), repr(value)
    if value is None or isinstance(value, (bool, int, str, np.generic)):
        return type(value), value
    if isinstance(value, np.ndarray):
        return np.ndarray, value.dtype.str, value.shape, tuple(frozen(v) for v in value.ravel().tolist())
    if isinstance(value, (list, tuple)):
        return type(value), tuple(frozen(v) for v in value)
    if isinstance(value, Mapping):
        return type(value), tuple(sorted(((frozen(k), frozen(v)) for k, v in value.items()), key=repr))
    hash(value)
    return type(value), value


QUICK_COMPILE_FLOPS = 1e9
"""Fits estimated at no more FLOPs than this are compiled with `QUICK_COMPILE` (see `fit_compiler_options`)."""

QUICK_COMPILE = _compile.QUICK_COMPILE
"""XLA's quick options (`hypergrad._compile.QUICK_COMPILE`)."""


def fit_compiler_options(flops: float) -> dict | None:
    """XLA compiler options for a single fit of about `flops` FLOPs: `QUICK_COMPILE` when the fit is
    small enough (`QUICK_COMPILE_FLOPS`) that its compilation, not its run, is the cost (a small
    network fitted once, such as a search's refit, or scikit-learn's estimator checks), else None
    (XLA's defaults). Cost: below the threshold the slower run costs less than the compilation
    saves (measured in benchmarks/iris_study.md, the refit row). Values equal the default
    compilation's to rounding (the same operations, differently fused). Options are part of the
    persistent compilation cache's key: a program compiled either way is reused only that way."""
    return dict(QUICK_COMPILE) if flops <= QUICK_COMPILE_FLOPS else None


def continuous_distribution(name: str, values: Sequence[Any]) -> hg.Uniform | hg.LogUniform:
    """`hg.LogUniform` over the range of `values` when all are positive, else `hg.Uniform`; a
    single value gets a range around it (log: a factor 10 either side; linear: +-1). A value of
    +inf (LogisticRegression's C = inf, no penalty, where scikit-learn's parameter validation
    allows it) is evaluated as given and left out of the range (only inf: the range around 1).
    `ValueError` naming `name` for a value that is not a single number (Ridge's per-target alpha
    array: a search hands such candidates to scikit-learn's own search instead)."""
    if any(np.ndim(v) > 0 for v in values):
        raise ValueError(f"varying[{name!r}] holds a value that is not a single number ({list(values)!r}): a "
                         f"continuous parameter varies as one traced number per candidate; give numbers, or fit "
                         f"such settings one by one (scikit-learn's search)")
    array = np.asarray([float(v) for v in values])
    if array.size == 0 or np.any(np.isnan(array) | (array == -np.inf)):
        raise ValueError(f"varying[{name!r}] must be a non-empty list of numbers (finite, or +inf where the parameter "
                         f"allows it), got {list(values)!r}")
    finite = array[np.isfinite(array)] if np.any(np.isfinite(array)) else np.ones(1)
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0:
        return hg.LogUniform(lo / 10, hi * 10) if lo == hi else hg.LogUniform(lo, hi)
    return hg.Uniform(lo - 1, hi + 1) if lo == hi else hg.Uniform(lo, hi)


PROBABILITY_DTYPE = np.float64
"""The dtype of every classifier's `predict_proba`, whatever JAX's float width and the input's:
scikit-learn's classifiers return float64 for float64 input (what its searches and validation
make of any input but float32), and `log_loss` takes its clipping eps from this dtype, so the
searches' in-program log loss clips with its eps (`clipped_log_loss`) on every input."""

_EPS = np.finfo(PROBABILITY_DTYPE).eps
LOG_LOSS_BOUNDS = (float(-np.log(1 - _EPS)), float(-np.log(_EPS)))
"""Each example's log loss as scikit-learn's `log_loss` bounds it: -log of the probability clipped
to [eps, 1 - eps], eps of `PROBABILITY_DTYPE` (a confident mistake costs at most 36.04)."""


def clipped_log_loss(per_example: jax.Array) -> jax.Array:
    """Examples' log losses (-log of the true class's probability, from logits) clamped to
    `LOG_LOSS_BOUNDS`: scikit-learn's `log_loss` of `predict_proba`, whose probabilities it clips,
    so a search's `neg_log_loss` computed in the program equals its scorer's. For scores only: the
    clamp's derivative is 0 outside the bounds, so no training or descended loss goes through it."""
    return jax.numpy.clip(per_example, *LOG_LOSS_BOUNDS)


def padded_part(part: tuple, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold's part (X, y) padded with rows of zeros to `rows` examples, and its row weights:
    (X, y, weights), weights 1 for each of its examples and 0 for the padding, in JAX's default
    float dtype. Families given it (`_family(rows=...)`) weigh every loss and score by them, so
    the padding changes no number and folds of different sizes share one program. Cost: one copy
    of the part (rows x features)."""
    x, y = (np.asarray(a) for a in part[:2])
    n = len(x)
    if rows < n:
        raise ValueError(f"rows={rows} is fewer than the part's {n} examples; pad to at least {n}")

    def pad(a):
        return np.concatenate([a, np.zeros((rows - n, *a.shape[1:]), a.dtype)])

    weights = np.concatenate([np.ones(n), np.zeros(rows - n)]).astype(jax.numpy.zeros(()).dtype)
    return pad(x), pad(y), weights


def real_mean(values: jax.Array, batch: tuple) -> jax.Array:
    """The mean of per-example `values` (batch,) over a scored batch's examples: all of them for
    (X, y), the weighted mean for a padded part (X, y, weights) (`padded_part`), a padding row's
    value (whatever it is, even inf or NaN) left out. Cost: one pass over `values`."""
    if len(batch) < 3:
        return jax.numpy.mean(values)
    weights = batch[2]
    return jax.numpy.sum(jax.numpy.where(weights > 0, weights * values, 0)) / jax.numpy.sum(weights)


def fewer_than_two_real(batch: tuple) -> Any:
    """Whether a scored batch holds fewer than two examples (R^2 is then NaN, as scikit-learn's
    r2_score): a Python bool from its shape for (X, y), a traced one from its weights for a padded
    part (X, y, weights) (`padded_part`), whose padding rows are not examples."""
    if len(batch) < 3:
        return batch[0].shape[0] < 2
    return jax.numpy.sum(batch[2] > 0) < 2


def class_probabilities(z: np.ndarray) -> np.ndarray:
    """Class probabilities (n, k) in `PROBABILITY_DTYPE` from a classifier's output scores (of any
    float width, widened first): one column is a binary problem's logit (logistic, each class's
    probability its own sigmoid, so a small one is not lost to 1 - p), several are a softmax's
    logits (shifted by their maximum for stability)."""
    z = np.asarray(z, PROBABILITY_DTYPE)
    if z.shape[1] == 1:
        return scipy.special.expit(np.stack([-z[:, 0], z[:, 0]], axis=1))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_codes(z: np.ndarray) -> np.ndarray:
    """The most probable class index of each row of output scores (see `class_probabilities`)."""
    return (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else np.argmax(z, axis=1)


def encode_classes(y: Any, who: str, least: int = 2) -> tuple[np.ndarray, dict]:
    """Class indices 0..k-1 of `classes_` (sorted) and {"classes_": classes}, as a classifier's fit
    sets them; a ValueError naming `who` (the solver or estimator) for fewer than `least` classes
    (2 for scikit-learn's LogisticRegression; 1 for its MLPClassifier, which fits a single class)."""
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < least:
        raise ValueError(f"{who} needs samples of at least 2 classes in the data, but the data contains only one "
                         f"class: {classes[0]!r}")
    return codes.astype(np.int32), {"classes_": classes}


SPARSE_FORMATS = ("csr", "csc")
"""The sparse formats `validate_data(accept_sparse=...)` takes (others are converted to the first), as
scikit-learn's MLPs and linear models take them; `dense` makes them arrays."""


def dense(X: Any) -> Any:
    """X validated with `accept_sparse=SPARSE_FORMATS`, as a numpy array: a sparse matrix or array
    densified (`toarray()`, in its validated dtype), anything else as it is. Every program here fits
    dense arrays, so sparse input (a OneHotEncoder's default output) is accepted, as scikit-learn's
    estimators accept it, at the cost of the dense copy: n x d x itemsize bytes of host memory (and
    of device memory for the fit)."""
    return X.toarray(order="C") if scipy.sparse.issparse(X) else X  # C order, as validated dense X


class HypergradEstimator(sklearn.base.BaseEstimator):
    """A scikit-learn estimator whose fit is a hypergrad program (see the module docstring).

    Subclasses set `_structural_params` (parameters that change the compiled program),
    `_continuous_params` (traced numbers, vmapped across candidates and differentiable),
    `_data_baking_params` (when true, the programs hold data of their own: see the module
    docstring), `_argument_params` (read by no program as a constant: left out of `_program_key`
    unless the programs bake data) and implement `_family` and `_encode_y` (and `_paddable`
    where padded folds are exact); every other constructor parameter is fixed per program.
    """

    _structural_params: ClassVar[frozenset[str]] = frozenset()
    _continuous_params: ClassVar[frozenset[str]] = frozenset()
    _data_baking_params: ClassVar[frozenset[str]] = frozenset()
    _argument_params: ClassVar[frozenset[str]] = frozenset()

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags, saying sparse X is taken (densified where fitted: `dense`), as
        scikit-learn's own MLPs and linear models say it."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _family(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
                varying: Mapping[str, Sequence[Any]], n_classes: int | None = None,
                classes: np.ndarray | None = None, rows: tuple[int, int] | None = None
                ) -> tuple[hg.Structured, hg.Space]:
        raise NotImplementedError

    def _encode_y(self, y: Any) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _check_supported(self) -> None:
        """Raises `fit`'s `ValueError` (naming the setting and the fix) for a setting this estimator
        refuses; nothing here, subclasses check theirs. Called by `fit` after scikit-learn's own
        parameter validation, and by the searches on every candidate before compiling."""

    def unused_params(self, params: Mapping[str, Any]) -> frozenset[str]:
        """The parameters that a fit with `params` (every parameter of the estimator) does not
        read (`unused_why`'s names). Candidates of a search that differ only in these fit the same
        model, so the search fits one of them and gives the others its scores."""
        return frozenset(self.unused_why(params))

    def unused_why(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Each parameter a fit with `params` (every parameter of the estimator) does not read,
        with why: the rule scikit-learn's estimator documents ("only used when ..."), naming the
        setting of `params` that makes it unused, for a search's warning that it searches one.
        None here; subclasses name theirs. Cost: a few comparisons."""
        del params
        return {}

    def _paddable(self, fits: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> bool:
        """Whether `_family(..., rows=...)` (parts padded with weight-0 rows) computes, for every
        fit in `fits` (each every parameter of the estimator) on training parts of each of `sizes`
        examples, the numbers of the unpadded program, to float rounding (module docstring). False
        here: a subclass whose losses and scores read weights says when."""
        del fits, sizes
        return False

    def _space(self, varying: Mapping[str, Sequence[Any]]) -> hg.Space | None:
        """The Space of `varying` (module docstring), None when nothing varies (`fit`); `ValueError`
        for a parameter that cannot vary."""
        entries = {}
        for name, values in varying.items():
            if name in self._structural_params:
                entries[name] = hg.Choice([as_option(v) for v in values], structural=True)
            elif name in self._continuous_params:
                entries[name] = continuous_distribution(name, values)
            else:
                raise ValueError(
                    f"{type(self).__name__} parameter {name!r} cannot vary within one compiled search: it "
                    f"is fixed per program; vary one of {sorted(self._structural_params | self._continuous_params)}")
        return hg.Space(entries) if entries else None

    def _program_key(self, varying: Mapping[str, Sequence[Any]], n_classes: int | None = None) -> Hashable | None:
        """The identity of `_family(..., varying=varying, n_classes=n_classes)`'s programs, data
        aside (module docstring); None when a parameter value has none (`frozen`)."""
        params = self.get_params(deep=False)
        # parameters no program holds (a seed is an argument) identify none, unless data is baked from them
        unread = frozenset() if self._bakes_data(varying) else self._argument_params
        try:
            fixed = tuple((name, frozen(params[name])) for name in sorted(params)
                          if name not in varying and name not in unread)
            varied = tuple((name, frozen([as_option(v) for v in varying[name]]) if name in self._structural_params
                            else "traced") for name in sorted(varying))
        except TypeError:
            return None
        return type(self), fixed, varied, n_classes, _compile.trace_settings()

    def _bakes_data(self, varying: Mapping[str, Sequence[Any]]) -> bool:
        """Whether the programs hold data of their own besides the problem's (a
        `_data_baking_params` flag true at this estimator's value or any of `varying`'s): then
        folds cannot share a program and run one by one."""
        params = self.get_params(deep=False)
        return any(bool(v) for name in self._data_baking_params
                   for v in (params.get(name, False), *varying.get(name, [])))

    def _settings(self, space: hg.Space, candidates: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Candidates as `evaluate_settings` settings: option indices of `Choice` entries, values
        of numeric ones (float64 when x64 is on, else float32), leading axis = candidate."""
        dtype = jax.numpy.zeros(()).dtype
        out = {}
        for name in space.names:
            dist = space[name]
            if isinstance(dist, hg.Choice):
                out[name] = np.asarray([dist.index(as_option(c[name])) for c in candidates], np.int32)
            else:
                out[name] = np.asarray([float(c[name]) for c in candidates], dtype)
        return out

    def _fit_key(self) -> jax.Array:
        """The training key of `fit`: `jax.random.key(random_state)` for an int, else a seed drawn
        from the `RandomState` (None: numpy's global one, so unseeded fits differ)."""
        state = self.get_params(deep=False).get("random_state")
        if isinstance(state, numbers.Integral) and not isinstance(state, bool):
            return jax.random.key(int(state))
        return jax.random.key(int(check_random_state(state).randint(np.iinfo(np.int32).max)))


def as_option(value: Any) -> Any:
    """Options as `hg.Choice` holds them: lists and arrays as tuples."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    return tuple(value) if isinstance(value, list) else value
