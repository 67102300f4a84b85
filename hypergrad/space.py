"""Hyperparameter declarations and their bijections to unconstrained coordinates.

A `Space` names each hyperparameter and its distribution. Continuous ones (`Uniform`,
`LogUniform`) have a smooth bijection between an unconstrained real `z` and the constrained value:

    Uniform(lo, hi):     value = lo + (hi - lo) * sigmoid(z)
    LogUniform(lo, hi):  value = exp(log lo + (log hi - log lo) * sigmoid(z))

so every finite `z` maps strictly inside the bounds, `z = 0` is the centre (the geometric centre
for `LogUniform`), and gradient methods descend in `z`. Random search samples the fraction
`sigmoid(z)` uniformly, which is uniform in the value (`Uniform`) or in its log (`LogUniform`).

Shaped hyperparameters (a per-step learning-rate schedule, a per-feature penalty) carry a `shape`.
Baselines treat them as one value broadcast to the shape (a constant schedule) unless declared
`independent=True`, in which case every element is its own search axis.

`Choice` lists discrete options, numeric (traced values) or structural (options that change the
program, handled by `hg.Structured`). Baselines search it; gradient methods refuse it.

Dtypes: continuous values are in the default float dtype (float32 unless `jax_enable_x64` is on), a
numeric `Choice`'s in its options' promoted dtype (int32 or float32 for Python numbers without x64).
A declaration is checked against the dtype in force *when it is declared*, as the built-in problems
take their dtype when built: a bound or option that dtype cannot hold (it overflows, or a nonzero
number falls below the smallest normal, which XLA flushes to zero), a `hi - lo` that overflows it
or falls below the smallest normal, bounds with no number of it strictly between them (where
`constrain` maps), a `LogUniform` whose log(lo) and log(hi) are equal, or options it cannot tell
apart raise a `ValueError` there, naming the fix. So turn
float64 on before declaring a space that needs it; a space declared under float64 is not checked
again if float64 is turned off before it is sampled. `constrain` and `unconstrain` take a `z` or value in a
float narrower than float32 (bfloat16, float16) in the default float dtype, as they take an integer one, and
return that dtype: the narrow dtype may hold no number strictly between the bounds.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import _caches
from hypergrad._checks import check_count, check_key, is_int, is_number
from hypergrad._types import HParams, Key

__all__ = ["Uniform", "LogUniform", "Choice", "Space"]

SAMPLE_STREAM = 2**31 - 1
"""`fold_in` tag of the searches' sampling key, separating it from the training key they share."""

_MAX_GRID_POINTS = 10_000_000


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        if isinstance(shape, str) or not all(is_int(s) for s in shape):
            raise TypeError(shape)
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ValueError(f"shape={shape!r} must be a tuple of ints, e.g. shape=(200,)") from err
    if any(s < 1 for s in shape):
        raise ValueError(f"shape={shape!r} has a zero or negative axis; every axis must be >= 1")
    return shape


def _bound(value: Any, name: str, lo: Any, hi: Any) -> float:
    """`value` as a float; a `ValueError` naming the distribution's bounds when it is not a real number."""
    try:
        if isinstance(value, (str, bytes, bool)) or np.ndim(value) != 0:
            raise TypeError(value)
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}(lo={lo!r}, hi={hi!r}): the bounds must be real numbers, "
                         "e.g. lo=1e-4, hi=1.0") from err


def _default_float() -> np.dtype:
    """The default float dtype now: float64 when x64 is on, else float32 (the dtype of samples)."""
    return np.dtype(jnp.result_type(float))


def _holds(value: Any, dtype: np.dtype) -> bool:
    """Whether `dtype` holds the real number `value`: within an integer dtype's range; for a float
    dtype, finite if `value` is, and nonzero as a normal number if `value` is (XLA flushes subnormals
    to zero, as `_step_inside` notes)."""
    if np.issubdtype(dtype, np.integer):
        return bool(np.iinfo(dtype).min <= value <= np.iinfo(dtype).max)
    try:
        with np.errstate(over="ignore", under="ignore"):
            held = float(np.asarray(value, dtype))
    except OverflowError:  # an int too large for any float
        return False
    if not math.isfinite(held):
        return isinstance(value, (float, np.floating)) and not math.isfinite(value)  # inf or nan as given
    return value == 0 or abs(held) >= np.finfo(dtype).tiny


def _dtype_fix(dtype: np.dtype, alternative: str) -> str:
    """How to get a value `dtype` cannot hold: float64, where `dtype` is a 32-bit default that x64
    would widen; else `alternative`."""
    if dtype not in (np.dtype(np.float32), np.dtype(np.int32)) or _default_float() == np.float64:
        return alternative
    return f"enable float64 with jax.config.update('jax_enable_x64', True) before declaring the space, or {alternative}"


def _range_of(dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.integer):
        return f"{np.iinfo(dtype).min} to {np.iinfo(dtype).max}"
    return f"0, or magnitudes from {np.finfo(dtype).tiny:.4g} to {np.finfo(dtype).max:.4g}"


def _widened(x: jax.Array) -> jax.Array:
    """`x` in the default float dtype when it is a float narrower than float32 (bfloat16, float16), else as
    it is. The bounds are checked against the default float only: in such a narrow dtype a range may hold no
    number strictly inside it (Uniform(100, 100.5) in bfloat16), so `constrain` would return a bound, or a
    value overflows (float16 stops at 65504), and a value inside would round onto a bound in `unconstrain`.
    float32 and float64 are left as they are, so their results do not change."""
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        return x.astype(_default_float())
    return x


def _step_inside(bound: float, toward: float, dtype: np.dtype) -> np.ndarray:
    """The number of `dtype` next to `bound` in the direction of `toward`, as XLA holds them."""
    inside = np.nextafter(np.asarray(bound, dtype), np.asarray(toward, dtype))
    tiny = np.finfo(dtype).tiny
    if 0 < abs(inside) < tiny:  # XLA flushes subnormals to zero: from 0 step to the smallest normal,
        # from the smallest normal to 0 (a copysign there would step back onto the bound)
        inside = np.asarray(math.copysign(tiny, inside) if bound == 0 else 0.0, dtype)
    return inside


@dataclasses.dataclass(frozen=True)
class _Continuous:
    """Shared behaviour of the bounded continuous distributions."""

    lo: float
    hi: float
    shape: tuple[int, ...] = ()
    independent: bool = False

    def __post_init__(self):
        name = type(self).__name__
        for which in ("lo", "hi"):
            object.__setattr__(self, which, _bound(getattr(self, which), name, self.lo, self.hi))
        object.__setattr__(self, "shape", _check_shape(self.shape))
        if not isinstance(self.independent, (bool, np.bool_)):
            raise ValueError(f"{name}(independent={self.independent!r}) must be True (the baselines search each "
                             "element separately) or False (one value broadcast to the shape)")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"{name}(lo={self.lo}, hi={self.hi}): both bounds must be finite")
        self._check_domain()
        if self.lo >= self.hi:
            raise ValueError(
                f"{name}(lo={self.lo}, hi={self.hi}): lo must be smaller than hi; swap them or widen the range"
            )
        self._check_dtype(_default_float())

    def _check_dtype(self, dtype: np.dtype) -> None:
        """Raises `ValueError` unless `dtype` (that of the values: the default float when the
        distribution is declared) holds both bounds as distinct normal numbers with one strictly
        between them (where `constrain` maps every z), and hi - lo."""
        where = f"{type(self).__name__}(lo={self.lo}, hi={self.hi})"
        for which in ("lo", "hi"):
            if not _holds(getattr(self, which), dtype):
                raise ValueError(
                    f"{where}: {which}={getattr(self, which)} is not a number {dtype.name} holds "
                    f"({_range_of(dtype)}), and the values are {dtype.name}; "
                    + _dtype_fix(dtype, "choose bounds inside that range"))
        with np.errstate(over="ignore"):
            span, lo, hi = (np.asarray(v, dtype) for v in (self.hi - self.lo, self.lo, self.hi))
        if not np.isfinite(span):
            raise ValueError(f"{where}: hi - lo overflows {dtype.name}, the dtype of the values; "
                             + _dtype_fix(dtype, "narrow the range"))
        if lo != hi and abs(span) < np.finfo(dtype).tiny:  # flushed to zero, the fraction of a value is 0/0
            raise ValueError(f"{where}: hi - lo is below the smallest normal {dtype.name} number, which XLA flushes "
                             f"to zero, and the values are {dtype.name}; " + _dtype_fix(dtype, "widen the range"))
        if lo == hi:
            raise ValueError(f"{where}: lo and hi are the same {dtype.name} number, the dtype of the values; "
                             + _dtype_fix(dtype, "widen the range"))
        if not lo < _step_inside(self.lo, self.hi, dtype) <= _step_inside(self.hi, self.lo, dtype) < hi:
            raise ValueError(f"{where}: no {dtype.name} number lies strictly between lo and hi (the values are "
                             f"{dtype.name}), so constrain has nothing to map into; "
                             + _dtype_fix(dtype, "widen the range"))

    def _check_domain(self) -> None:
        """Raises `ValueError` for finite bounds outside the distribution's domain."""

    # The bijection is written through the unit-interval fraction u = sigmoid(z).
    def _from_fraction(self, u):
        raise NotImplementedError

    def _to_fraction(self, value):
        raise NotImplementedError

    def constrain(self, z: jax.Array) -> jax.Array:
        z = _widened(jnp.asarray(z))
        if not jnp.issubdtype(z.dtype, jnp.floating):
            z = z.astype(jnp.zeros(()).dtype)  # an integer z (e.g. 0) is the same real number
        value = self._from_fraction(jax.nn.sigmoid(z))
        # sigmoid rounds to exactly 0 or 1 once |z| passes ~37 (float64) or ~17 (float32), and
        # exp(log lo) can round past lo; clip to the nearest representable values inside (lo, hi)
        # so every finite z maps strictly inside the bounds (the gradient is 1 inside the clip).
        dtype = np.dtype(value.dtype)
        return jnp.clip(value, _step_inside(self.lo, self.hi, dtype), _step_inside(self.hi, self.lo, dtype))

    def _sample(self, u: jax.Array) -> jax.Array:
        """Values at uniform fractions `u` in [0, 1), as random search draws them: clipped to [lo, hi]
        as the dtype holds them, because u = 0 (about once in 2**23 float32 draws) gives exp(log lo),
        which can round below lo, and the largest u below 1 can give a value above hi. Only values
        past a bound move, so draws stay prefix-consistent."""
        value = self._from_fraction(u)
        dtype = np.dtype(value.dtype)
        return jnp.clip(value, np.asarray(self.lo, dtype), np.asarray(self.hi, dtype))

    def unconstrain(self, value: jax.Array) -> jax.Array:
        value = _widened(jnp.asarray(value))
        u = self._to_fraction(value)
        dtype = np.dtype(u.dtype)
        # A bound, as the value's dtype holds it, and anything past it map to -inf or +inf, decided
        # on the value itself: its fraction rounds (float32(0.99) came to 1 - 6e-8 of Uniform(0, 0.99),
        # z = 16.6; 1e30 + 1 ulp in float64 to z = 36.7 of Uniform(-1e30, 1e30)). constrain never
        # returns such a value (it clips one step inside), and tune's starts clip z to a finite one.
        below, above = value <= np.asarray(self.lo, dtype), value >= np.asarray(self.hi, dtype)
        # Inside, the fraction of a value a few ulps from a bound can still round to 0 or 1, or just
        # past them (the log and offset in float32 against float64 bounds), where the logit is NaN:
        # clipped, it is +-inf. On a bound the logit is taken at 0.5 and replaced, so that its
        # derivative there is 0, not the NaN of an infinite derivative masked by `where`.
        u = jnp.where(below | above, 0.5, jnp.clip(u, 0.0, 1.0))
        return jnp.where(above, jnp.inf, jnp.where(below, -jnp.inf, jnp.log(u) - jnp.log1p(-u)))

    @property
    def centre(self) -> jax.Array:
        """`constrain(0)`: the middle of the range (of its log for `LogUniform`), kept strictly inside
        the bounds as `constrain` keeps every value (for bounds a few ulps apart it rounds onto one)."""
        return jnp.broadcast_to(self.constrain(jnp.asarray(0.0)), self.shape)

    def grid_values(self, points: int) -> np.ndarray:
        """`points` values spanning [lo, hi] inclusive, evenly in value (or log value), in order. One
        point is the centre."""
        if points == 1:
            return np.asarray([float(self.constrain(jnp.asarray(0.0)))])
        values = np.array(self._from_fraction(jnp.linspace(0.0, 1.0, points)), dtype=np.float64)
        # exactly the bounds, and the interior clipped to them: exp(log lo + ...) can round past
        # a bound (by about |log hi| ulps, out of order in a range that narrow)
        values = np.clip(values, self.lo, self.hi)
        values[0], values[-1] = self.lo, self.hi
        return values

    @property
    def num_axes(self) -> int:
        return math.prod(self.shape) if self.independent else 1


@dataclasses.dataclass(frozen=True)
class Uniform(_Continuous):
    """A value uniform in [lo, hi]; unconstrained through `lo + (hi - lo) * sigmoid(z)`.

    Args:
        lo, hi: finite bounds with lo < hi, held by the default float dtype (see the module
            docstring), as is hi - lo.
        shape: shape of the hyperparameter, () for a scalar.
        independent: whether the baselines search each element separately (default: one value
            broadcast to `shape`).
    """

    def _from_fraction(self, u):
        return self.lo + (self.hi - self.lo) * u

    def _to_fraction(self, value):
        return (jnp.asarray(value) - self.lo) / (self.hi - self.lo)


@dataclasses.dataclass(frozen=True)
class LogUniform(_Continuous):
    """A value whose log is uniform in [log lo, log hi]; for rates and penalties.

    Args:
        lo, hi: bounds with 0 < lo < hi, held by the default float dtype as normal numbers (float32:
            1.2e-38 to 3.4e38).
        shape: shape of the hyperparameter, () for a scalar, (T,) for a per-step schedule.
        independent: whether the baselines search each element separately.
    """

    def _check_domain(self) -> None:
        if not self.lo > 0:
            raise ValueError(
                f"LogUniform(lo={self.lo}, hi={self.hi}): lo must be > 0 for a log scale; "
                "use Uniform for ranges that include zero"
            )

    def _check_dtype(self, dtype: np.dtype) -> None:
        super()._check_dtype(dtype)
        if math.log(self.lo) == math.log(self.hi):  # the bijection divides by their difference
            raise ValueError(f"LogUniform(lo={self.lo}, hi={self.hi}): log(lo) and log(hi) are the same float64 "
                             "number, so the log scale has no width; widen the range, or use Uniform")

    def _from_fraction(self, u):
        log_lo, log_hi = math.log(self.lo), math.log(self.hi)
        return jnp.exp(log_lo + (log_hi - log_lo) * u)

    def _to_fraction(self, value):
        log_lo, log_hi = math.log(self.lo), math.log(self.hi)
        return (jnp.log(jnp.asarray(value)) - log_lo) / (log_hi - log_lo)


def _type_signature(option: Any) -> Any:
    """The types in `option`, tuples looked into: what Python's `==` ignores (1 == 1.0 == np.float32(1))
    but the values' dtype, or a structural option's program, depends on."""
    if isinstance(option, tuple):
        return tuple, tuple(_type_signature(o) for o in option)
    return type(option)


@dataclasses.dataclass(frozen=True, eq=False)
class Choice:
    """One of a finite list of options; searched by the baselines, never differentiated.

    Two kinds:

    - numeric (every option a number, the default for those): the objective receives the chosen
      number as a traced array, so one compiled program serves every option (`alpha` in
      {1e-4, 1e-3}, a width used only as a mask);
    - structural (any option not a number, such as "relu", (100,) or "adam"; or
      `structural=True`): the option changes the program. The search hands it to an
      `hg.Structured` objective family, which either builds one program per option (grouping)
      or receives the option's index as a traced integer and selects inside one program
      (masking); see `hypergrad.structure`. Settings and grids hold the option *index* (int32);
      trial tables hold the option itself.

    Args:
        options: a non-empty sequence of distinct hashable options; numeric ones distinct numbers
            of the values' dtype, which must hold them (see the module docstring).
        structural: force numeric options to be structural (None: structural unless every option
            is a number).

    Two choices are equal when their options are equal *and of the same types* (`Choice([1, 2])`
    and `Choice([1.0, 2.0])` differ: their values are integers and floats), so programs cached on
    a `Space` never serve a space whose values have another dtype.
    """

    options: tuple[Any, ...]
    structural: bool

    def __init__(self, options: Sequence[Any], structural: bool | None = None):
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
            raise ValueError(f"Choice(options={options!r}): give a list of options, e.g. ['tanh', 'relu']")
        options = tuple(tuple(o) if isinstance(o, list) else o for o in options)
        if len(options) == 0:
            raise ValueError("Choice(options=[]): give at least one option")
        for option in options:
            try:
                hash(option)
            except TypeError as err:
                raise ValueError(f"Choice: option {option!r} is not hashable; use a tuple, string or number") from err
        if len(set(options)) != len(options):
            raise ValueError(f"Choice(options={list(options)!r}) repeats an option; list each once")
        if any(is_number(o) and o != o for o in options):  # NaN equals nothing: never found again
            raise ValueError(f"Choice(options={list(options)!r}): NaN is not an option (it equals no value, so "
                             "a trial holding it could not be matched back to it); drop it")
        if structural is not None and not isinstance(structural, (bool, np.bool_)):
            raise ValueError(f"Choice(structural={structural!r}) must be True (options that change the program), "
                             "False (numbers traced into one program) or None (decided by the options)")
        numeric = all(is_number(o) for o in options)
        if structural is None:
            structural = not numeric
        elif not structural and not numeric:
            raise ValueError(
                f"Choice(options={list(options)!r}, structural=False): only numbers can be traced; "
                "drop structural=False for options that change the program"
            )
        if not structural:
            _check_option_dtype(options)
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "structural", bool(structural))

    def _identity(self) -> tuple:
        return self.options, tuple(_type_signature(o) for o in self.options), self.structural

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Choice):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    shape = ()  # a Choice is always a scalar
    independent = False
    num_axes = 1

    def option(self, index: int) -> Any:
        """The option at `index` (structural settings hold indices)."""
        return self.options[int(index)]

    def index(self, option: Any) -> int:
        """The index of `option`; `ValueError` naming the options when it is not one of them."""
        option = tuple(option) if isinstance(option, list) else option
        for i, candidate in enumerate(self.options):
            if candidate == option:
                return i
        raise ValueError(f"{option!r} is not one of the options {list(self.options)}")

    @property
    def centre(self) -> jax.Array:
        if self.structural:
            return jnp.asarray(0, jnp.int32)
        return jnp.asarray(self.options[0], _options_dtype(self.options))  # the dtype samples have

    def grid_values(self, points: int) -> np.ndarray:
        del points  # a Choice always contributes all its options
        if self.structural:
            return np.arange(len(self.options), dtype=np.int32)
        return np.asarray(self.options)


def _options_dtype(options: Sequence[Any]) -> np.dtype:
    """The dtype of a numeric choice's values: the options' promoted type, as `jnp.asarray(options)`
    gives it (int32 or float32 for Python numbers unless x64 is on), without its overflow error."""
    return np.dtype(jnp.result_type(*options))


def _check_option_dtype(options: tuple[Any, ...]) -> None:
    """Raises `ValueError` unless the values' dtype (taken when the choice is declared) holds every
    numeric option, keeping them distinct."""
    dtype = _options_dtype(options)
    for option in options:
        if not _holds(option, dtype):
            raise ValueError(
                f"Choice(options={list(options)!r}): option {option!r} is not a number {dtype.name} holds "
                f"({_range_of(dtype)}), and the values are {dtype.name}; " + _dtype_fix(
                    dtype, "give options inside that range (or structural=True, to hand the program the options "
                    "themselves)"))
    with np.errstate(over="ignore", under="ignore"):
        held = np.asarray(options, dtype).tolist()
    first: dict[Any, Any] = {}
    for option, value in zip(options, held):
        if value in first:
            raise ValueError(f"Choice(options={list(options)!r}): options {first[value]!r} and {option!r} are the "
                             f"same {dtype.name} number, and the values are {dtype.name}; "
                             + _dtype_fix(dtype, "drop one of them"))
        first[value] = option


Distribution = Uniform | LogUniform | Choice


@dataclasses.dataclass(frozen=True)
class Space:
    """A named set of hyperparameters and their distributions.

    Immutable and hashable by value, so jitted programs keyed on it are reused.

    The order of the entries is part of the space: each entry draws from the key folded with its
    position (`sample`: random search, a population's sampled starts and warm-up, restarts), and
    `grid` enumerates the entries in that order. The same distributions under the same names in
    another order, with the same key, give other draws, and the same grid points in another trial
    order. A stored study resumed with its entries in another order is refused (a `ValueError`
    naming the stored order).

    Args:
        distributions: mapping from name to `Uniform`, `LogUniform` or `Choice`, in the order that
            fixes the draws and the grid's order.
    """

    items: tuple[tuple[str, Distribution], ...]

    def __init__(self, distributions: Mapping[str, Distribution]):
        if not isinstance(distributions, Mapping) or not distributions:
            raise ValueError("Space(distributions): give a non-empty dict of name -> distribution")
        items = []
        for name, dist in distributions.items():
            if not isinstance(name, str):
                raise ValueError(f"Space: hyperparameter name {name!r} must be a string")
            if not isinstance(dist, (Uniform, LogUniform, Choice)):
                raise ValueError(
                    f"Space: {name!r} is {dist!r}; use hg.Uniform, hg.LogUniform or hg.Choice"
                )
            items.append((name, dist))
        object.__setattr__(self, "items", tuple(items))

    # -- views ----------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.items)

    def __getitem__(self, name: str) -> Distribution:
        return dict(self.items)[name]

    def in_order(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """`settings` (name -> value) with this space's names first, in the space's order, then any
        it does not declare, in their own: the order every strategy records a trial's hyperparameters
        in (a jitted program returns a dict sorted by name). Only the keys' order changes. Cost: a dict."""
        names = [name for name in self.names if name in settings]
        return {**{name: settings[name] for name in names},
                **{name: value for name, value in settings.items() if name not in names}}

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def choices(self) -> tuple[str, ...]:
        """Names of the `Choice` hyperparameters (which gradient methods cannot differentiate)."""
        return tuple(name for name, dist in self.items if isinstance(dist, Choice))

    @property
    def structural(self) -> tuple[str, ...]:
        """Names of the structural `Choice`s (options that change the program)."""
        return tuple(name for name, dist in self.items if isinstance(dist, Choice) and dist.structural)

    def options_of(self, settings: Mapping[str, Any], row: int | None = None) -> dict[str, Any]:
        """Settings with every structural index replaced by its option (one row, or a scalar setting)."""
        out = dict(settings)
        for name in self.structural:
            index = settings[name] if row is None else settings[name][row]
            out[name] = self[name].option(int(np.asarray(index)))
        return out

    @property
    def num_scalars(self) -> int:
        """Number of scalar hyperparameters a gradient method must differentiate."""
        return sum(math.prod(dist.shape) for _, dist in self.items)

    # -- validation -----------------------------------------------------------------------------
    def check(self, hparams: Mapping[str, Any], argname: str = "hparams") -> None:
        """Raises `ValueError` unless `hparams` has exactly this space's names and shapes."""
        check_hparams(hparams, {name: dist.shape for name, dist in self.items}, argname)

    def check_differentiable(self, what: str) -> None:
        """Raises `ValueError` if the space holds a `Choice`, naming `what` refuses it."""
        if self.choices:
            raise ValueError(
                f"{what} differentiates hyperparameters, but {list(self.choices)} are hg.Choice; "
                "search them with hg.random_search/hg.grid_search, or descend the rest for each of their options with "
                "hg.hybrid_search (or hold them with objective.with_fixed); declare one Uniform/LogUniform only if the "
                "objective reads it as a real number (a step such as a number of frozen layers has no gradient)"
            )

    # -- bijections -----------------------------------------------------------------------------
    def constrain(self, z: Mapping[str, jax.Array]) -> HParams:
        """Maps unconstrained coordinates to hyperparameter values inside their bounds.

        `z` holds the space's names, each with the declared shape, or with leading batch axes before
        it (a population of settings): the map is elementwise. `ValueError` otherwise."""
        self.check_differentiable("Space.constrain")
        self._check_values(z, "Space.constrain(z)")
        return {name: dist.constrain(jnp.asarray(z[name])) for name, dist in self.items}

    def unconstrain(self, hparams: Mapping[str, Any]) -> dict[str, jax.Array]:
        """The inverse of `constrain`, in the values' dtype.

        A value on a bound as its dtype holds it (in float32, float32(0.99) for hi=0.99), or past a
        bound, maps to -inf or +inf: `constrain` never returns one (it keeps one step inside), and a
        value's fraction of the range rounds, so its logit alone would be finite for some ranges. A
        value a few ulps inside a bound may map to +-inf too, where its fraction rounds to 0 or 1.
        Leading batch axes are allowed, as in `constrain`."""
        self.check_differentiable("Space.unconstrain")
        self._check_values(hparams, "Space.unconstrain(hparams)")
        return {name: dist.unconstrain(jnp.asarray(hparams[name])) for name, dist in self.items}

    def _check_values(self, given: Mapping[str, Any], what: str) -> None:
        """Raises `ValueError` unless `given` has exactly this space's names, each shaped as declared
        after any leading batch axes."""
        if not isinstance(given, Mapping):
            raise ValueError(f"{what} must be a dict of name -> array, got {type(given).__name__}")
        missing = [name for name in self.names if name not in given]
        if missing:
            raise ValueError(f"{what} lacks {missing}: give a value for every hyperparameter of the space "
                             f"{list(self.names)}")
        extra = [name for name in given if name not in self.names]
        if extra:
            raise ValueError(f"{what} has {extra}, which the space {list(self.names)} does not declare; "
                             "pass exactly the space's names")
        for name, dist in self.items:
            shape = tuple(np.shape(given[name]))
            if len(shape) < len(dist.shape) or shape[len(shape) - len(dist.shape):] != dist.shape:
                raise ValueError(f"{what}[{name!r}] has shape {shape}, but the space declares {dist.shape}; "
                                 f"give an array of shape {dist.shape} (leading batch axes allowed)")

    def centre(self) -> HParams:
        """The centre of every range (geometric for LogUniform; the first option of a Choice)."""
        return {name: dist.centre for name, dist in self.items}

    # -- baselines ------------------------------------------------------------------------------
    def sample(self, key: Key, n: int, *, stream: int | None = None) -> HParams:
        """`n` settings drawn uniformly in the unconstrained fractions (log-uniform for LogUniform).

        `stream`: if given, draw from `jax.random.fold_in(key, stream)` instead of `key` (the same
        numbers; folded inside the one compiled draw, which saves a dispatch).

        A key's first n settings do not depend on how many are drawn (under JAX's default
        `jax_threefry_partitionable`): the compiled draw makes the next power of two (at least
        `SAMPLE_BUCKET`) and keeps the first n, so any n up to it reuses one program; at most
        twice the draws, which cost little beside training.

        Returns:
            dict of arrays with a leading axis of length `n`. A shaped hyperparameter that is not
            `independent` gets one value per setting, broadcast along its shape.
        """
        n, key = check_count(n, "n"), check_key(key)
        if stream is not None and not (is_int(stream) and 0 <= stream < 2**32):  # fold_in takes a uint32
            raise ValueError(f"Space.sample(stream={stream!r}): give an int in [0, 2**32) to fold into the key, "
                             "or None")
        stream = None if stream is None else int(stream)
        if not jax.config.jax_threefry_partitionable:  # a key's first draws depend on how many are drawn
            return _sample_program(self, n, stream)(key)
        # One compiled draw (not a dispatch per hyperparameter) per power of two, not per n: the
        # first n of a key's draws do not depend on how many are drawn, so n is cut from the
        # bucket's draws, on the host (a cut on the device compiles a slice per n).
        size = max(SAMPLE_BUCKET, 1 << (n - 1).bit_length())
        draws = _sample_program(self, size, stream)(key)
        return {name: jax.device_put(np.asarray(v)[:n]) for name, v in draws.items()}  # (jnp.asarray compiles)

    def _check_grid_size(self, points: int) -> None:
        """Raises `ValueError` if the grid with `points` per axis would pass `_MAX_GRID_POINTS`,
        counted from the options and axes alone (its log, so an independent shape of a million
        elements costs a sum, not a million-digit product)."""
        sizes = [(len(dist.options) if isinstance(dist, Choice) else points, dist.num_axes) for _, dist in self.items]
        log10_total = sum(axes * math.log10(size) for size, axes in sizes)
        if log10_total <= math.log10(_MAX_GRID_POINTS) + 1:  # exact near the limit
            total = math.prod(size**axes for size, axes in sizes)
            if total <= _MAX_GRID_POINTS:
                return
            count = str(total)
        else:
            count = f"about 1e+{math.floor(log10_total)}"
        raise ValueError(
            f"grid(points_per_axis={points}) would have {count} points over {sum(a for _, a in sizes)} axes "
            f"(at most {_MAX_GRID_POINTS}); lower points_per_axis, or use random_search for independent shaped "
            "hyperparameters"
        )

    def _draw(self, key: Key, n: int) -> HParams:
        out = {}
        for i, (name, dist) in enumerate(self.items):
            k = jax.random.fold_in(key, i)
            if isinstance(dist, Choice):
                index = jax.random.randint(k, (n,), 0, len(dist.options), dtype=jnp.int32)
                out[name] = index if dist.structural else jnp.asarray(dist.options)[index]
                continue
            draw_shape = (n, *dist.shape) if dist.independent else (n,) + (1,) * len(dist.shape)
            u = jax.random.uniform(k, draw_shape)
            out[name] = jnp.broadcast_to(dist._sample(u), (n, *dist.shape))
        return out

    def grid(self, points_per_axis: int) -> HParams:
        """The Cartesian grid with `points_per_axis` values per axis, bounds included.

        A `Choice` contributes all its options; an `independent` shaped hyperparameter contributes
        one axis per element (so its grid grows as points ** size).

        Returns:
            dict of arrays with a leading axis of length (number of grid points).
        """
        points = check_count(points_per_axis, "points_per_axis")
        self._check_grid_size(points)  # before any axis is built: their cost grows with points
        axes: list[tuple[str, int | None, np.ndarray]] = []  # (name, element or None, values)
        for name, dist in self.items:
            values = dist.grid_values(points)
            if dist.independent:
                axes.extend((name, e, values) for e in range(math.prod(dist.shape)))
            else:
                axes.append((name, None, values))
        total = math.prod(len(v) for _, _, v in axes)
        # each column in its final dtype: an int64 option above 2**53 would round through float64
        columns = {name: np.empty((total, *dist.shape), dtype=dtype_of(dist)) for name, dist in self.items}
        for row, combo in enumerate(itertools.product(*(v for _, _, v in axes))):
            for (name, element, _), value in zip(axes, combo):
                if element is None:
                    columns[name][row] = value
                else:  # through a view of the whole column (a scalar's row would be a copy)
                    columns[name].reshape(total, -1)[row, element] = value
        return {name: jnp.asarray(col, dtype=dtype_of(self[name])) for name, col in columns.items()}


SAMPLE_BUCKET = 16
"""The fewest settings `Space.sample` draws in one compiled program (it draws a power of two)."""


@functools.lru_cache(maxsize=128)
def _sample_program(space: Space, n: int, stream: int | None):
    return jax.jit(lambda key: space._draw(key if stream is None else jax.random.fold_in(key, stream), n))


_caches.register(_sample_program.cache_clear)


def dtype_of(dist: Distribution):
    """The dtype of a distribution's values in settings: int32 option indices for a structural
    choice, the options' dtype for a numeric one, else the default float."""
    if isinstance(dist, Choice) and dist.structural:
        return jnp.int32
    if isinstance(dist, Choice):
        return _options_dtype(dist.options)
    return _default_float()  # the default float (float64 when x64 is on)


def check_hparams(hparams: Any, shapes: Mapping[str, tuple[int, ...]], argname: str = "hparams") -> None:
    """Raises `ValueError` unless `hparams` is a dict with exactly these names and shapes."""
    if not isinstance(hparams, Mapping):
        raise ValueError(f"{argname} must be a dict of name -> array, got {type(hparams).__name__}")
    missing = [n for n in shapes if n not in hparams]
    extra = [n for n in hparams if n not in shapes]
    if missing or extra:
        raise ValueError(
            f"{argname} names {sorted(hparams)} disagree with the space {sorted(shapes)}: "
            f"missing {missing}, unexpected {extra}; pass exactly the space's names"
        )
    for name, shape in shapes.items():
        got = tuple(np.shape(hparams[name]))
        if got != tuple(shape):
            raise ValueError(
                f"{argname}[{name!r}] has shape {got}, but the space declares {tuple(shape)}; "
                f"give an array of shape {tuple(shape)}"
            )
