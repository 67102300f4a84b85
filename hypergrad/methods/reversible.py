"""Reversible learning: exact reversal of SGD with momentum in fixed-point arithmetic.

Maclaurin, Duvenaud & Adams (2015), "Gradient-based hyperparameter optimization through reversible
learning" (ICML), Algorithms 2 and 3. Training runs forward storing no parameters; the reverse pass
then reconstructs every step's parameters and velocity *exactly* from the final ones, and
accumulates the hypergradient with one vector-Jacobian product per step on the way back.

The update is optax's `optax.sgd(lr, momentum=m)` (not the paper's `gamma v - (1 - gamma) g`):

    g_t     = grad train_loss(w_t, hparams, batch_t)
    v_{t+1} = m v_t + g_t
    w_{t+1} = w_t - lr_t v_{t+1}                         (v_0 = 0)

Exact arithmetic. Parameters and velocity are int64 numbers in units of 2^-radix_bits (default
2^-40, so |w|, |v| < 2^21 and a resolution of ~1e-12). Additions and subtractions are exact; the
gradient and the step `lr_t v_{t+1}` are rounded to the grid *before* they are added, and the
reverse pass recomputes the very same rounded quantities from the very same integers, so it can
subtract them again. The only information-destroying operation is `m v`: the momentum is the
rational n / 2^30 (n = round(m 2^30)) and `floor(v n / 2^30)` maps several integers to one. Those
integers form a run (a "fiber") of at most ceil(2^30 / n) consecutive values; the forward pass
records which member of the fiber v was (its index, `j_t`) and the reverse pass rebuilds
`v = ceil(q 2^30 / n) + j_t` from `q = v_{t+1} - G_t`. This is the paper's information buffer.

Information buffer, honestly. The paper's Algorithm 3 pushes the lost digits into an
arbitrary-precision integer per parameter (arithmetic coding), which costs log2(1/m) bits per
parameter per step on average (0.15 bits at m = 0.9). JAX needs static shapes, so here each step
stores its fiber indices in a fixed width of `info_bits` bits per parameter (packed into uint8):
exact whenever ceil(1/m) <= 2^info_bits, i.e. m >= 2^-info_bits. `info_bits=1` suffices for any
m >= 1/2 (1 bit per parameter per step, 32x less than float32 parameters); the default 8 covers
m >= 1/256. A momentum below 2^-info_bits (or above 1) cannot be reversed exactly: `check` refuses
such a concrete value, and a traced one (a row of a vmapped call, a tuner of `tune` stepping or
sampled there) gives a NaN value and hypergradient, as a diverging run does, so `tune` counts the
step as failed and backs off (the arithmetic itself runs with the momentum clipped into range).

Cost: one forward training run (one gradient per step) plus a reverse pass that recomputes each
step's gradient and takes one VJP of it (a Hessian-vector product), plus O(parameters) integer
work per step, plus one update of the objective's own optimiser per step (the check below).
The FLOP count (`hypergrad.accounting`, which counts integer operations like any other) is 3.9
training-run equivalents on the digits MLP (50 hidden units, batches of 100, T = 200) and 4.7 on
the iris MLP (50 hidden units, batches of 16, T = 20), against Reverse's 3.1 on both: the
recomputed gradient is shared with the VJP, the int64 fixed-point arithmetic is not; the
optimiser check is 0.03 and 0.13 of those runs (no change in measured time).
In time it costs more still than Reverse (int64 arithmetic is slower per operation than float;
`benchmarks/methods_vs_horizon.py` measures both against training at T = 100 to 10000).
Memory: the parameters and velocity (as int64), the adjoints, and the information buffer of
T x parameters x info_bits bits (8 by default; 1 bit suffices for m >= 1/2), instead of the
training state that `Reverse()` stores for every step (parameters and velocity: 2 x 32 bits per
parameter in float32, 2 x 64 in float64), so the stored trajectory is about 64 / info_bits
(128 / info_bits) times smaller than Reverse's, before the adjoints and the int64 state
(`benchmarks/methods_vs_horizon.py` measures both: XLA's temporary memory against T). The buffer
does grow with T; it is a few bits per parameter per step, the paper's trade-off. Minibatch t is
drawn inside step t (the objective's `batch_indices(data_key, t)`), so nothing else grows with T.
Bias: none beyond fixed-point precision: the trajectory is the float trajectory with every
gradient and step rounded to 2^-radix_bits and the momentum rounded to a multiple of 2^-30;
in float64 the hypergradient agrees with `hg.Reverse()` to about 1e-8 relative (tests assert 1e-6).
The returned value is the validation loss of the fixed-point trained parameters (equal to
`objective(hparams, key)` to the same precision). If a value leaves the int64 range (diverging
training) the value and hypergradient are NaN.

The optimiser that trains. The reversal is of optax.sgd with momentum, whatever optimiser the
objective names, so two checks make sure they are the same. `check` (before anything compiles)
runs the objective's optimiser beside optax.sgd on made-up gradients of every size the fixed
point holds and refuses with a ValueError an optimiser that differs (adam, nesterov, decoupled
weight decay, a step-decay schedule, a clip or global-norm clip at any threshold in range). A
probe cannot see everything (behaviour on the real gradients' structure, hyperparameters that
are traced, an optimiser closing over a traced choice), so the forward pass also runs the
objective's own optimiser on the real gradients and parameters of the fixed-point run and
compares its update with the fixed-point step at every step, elementwise, within the rounding
the two may honestly differ by (`_Witness`): where they differ the value and hypergradient are
NaN, as for a diverging run, and `ReversibleRun.matched` is False. So the value returned is
always the training run's own, or NaN.

Exactness rests on the gradient being bitwise reproducible: the reverse pass evaluates the same
function on the same integers (converted to floats) as the forward pass did. XLA is
deterministic for a given program; `Reversible.run` returns the true and the reconstructed initial
parameters so that this can be verified (they are equal, bit for bit, in the tests), and where
they differ (or the reconstructed initial velocity is not 0) the value and hypergradient are NaN.

Requires 64-bit integers (`jax.config.update("jax_enable_x64", True)`); the problem itself may
still use float32 parameters. Parameters narrower than float32 (bfloat16, float16) are refused
with a ValueError before anything compiles: their training rounds every step to that dtype, which
the fixed point (2^-radix_bits) does not, so the run reversed would not be the objective's; use
`hg.Reverse()` for them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import threading
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import _caches, _compile
from hypergrad._checks import is_int
from hypergrad._types import HParams, Key, PyTree
from hypergrad.methods.base import Method, refusing_derivatives
from hypergrad.loop import Loop, LoopState, overridden

_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""optimiser function -> {(method, T): jitted probe}: `Reversible.check`'s programs, compiled once. A probe reaches
its optimiser function through a weak reference and holds no problem or data (`_jitted_probe`), so an entry dies
with its function, and the objective's data with the objective; at most `_MAX_PROBES` functions are held (the
oldest dropped first), `_MAX_PROBES_EACH` (method, T) pairs each."""
_MAX_PROBES = 64
_MAX_PROBES_EACH = 16
_PROBES_LOCK = threading.Lock()
_caches.register(_PROBES.clear)
_CHECKING: contextvars.ContextVar[Any] = contextvars.ContextVar("hypergrad_reversible_checking", default=None)
"""The objective `Reversible.check` is checking, told of each probe made for it (`_compile.note_trace`)."""


@_caches.register_owner
def _drop_probes(owner: Any) -> None:
    """`hypergrad._caches.forget(objective)`: drops the probes of the objective's optimiser function, traced
    with the values it read then (a module-level flag adding a transformation): the next `check` probes the
    optimiser as it is now. A `hg.Structured` family's built objectives are forgotten one by one, so theirs go too."""
    try:
        _PROBES.pop(getattr(owner, "optimizer", None), None)
    except TypeError:  # not weakly referenceable: never a key
        pass

__all__ = ["Reversible", "ReversibleRun"]


class _WeakOptimizer:
    """An optimiser function called through a weak reference (`Reversible._jitted_probe`'s probe): it keeps
    neither the function nor what the function closes over (`with_fixed`'s objective) alive."""

    def __init__(self, fn: Any):
        self._ref = weakref.ref(fn)

    def __call__(self, hparams: HParams) -> optax.GradientTransformation:
        fn = self._ref()
        if fn is None:  # never met: the probe is traced only while its loop, which holds fn, is alive
            raise RuntimeError("Reversible: the probed optimiser function was garbage collected")
        return fn(hparams)


class _OptimizerRaised(Exception):
    """An exception the objective's optimiser raised while `Reversible._probe` ran it (its `__cause__`), told
    apart from one of the probe's own, which is not the optimiser's to answer for."""


def _as_the_optimizers(fn):
    """`fn` (the objective's optimiser function, or its `init` or `update`), its exceptions raised as
    `_OptimizerRaised`."""
    def call(*args):
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - any error of the user's optimiser, shown by `_probe`
            raise _OptimizerRaised() from err

    return call

MOMENTUM_BITS = 30
"""The momentum is the rational n / 2^MOMENTUM_BITS; products v * n never leave int64 (see `_mul`)."""

_LIMIT = 2**60  # |rounded gradient or step| < 2^60, |w|, |v| < 2^61: every sum stays inside int64

_REPLACED = ("step", "update", "run", "train", "readout", "val_loss")
"""The `Loop` methods whose work `Reversible` does itself (its fixed-point SGD is the training step; the
value is `readout`'s, its gradient `val_loss`'s): a loop that overrides any of them is refused
(`_check_standard_step`). Its other pieces (init, draw, train_loss, optimizer) it calls as the loop has them."""


# -- exact integer arithmetic --------------------------------------------------------------------
def _ceil_times_denominator(q: jax.Array, n: jax.Array) -> jax.Array:
    """ceil(q * 2^B / n) in int64 without overflow (q = qh n + ql, 0 <= ql < n)."""
    qh = jnp.floor_divide(q, n)
    ql = q - qh * n
    return qh * (1 << MOMENTUM_BITS) + jnp.floor_divide(ql * (1 << MOMENTUM_BITS) + n - 1, n)


def _mul(v: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(floor(v n / 2^B), fiber index j) for int64 v and 1 <= n <= 2^B.

    The integers with the same q = floor(v n / 2^B) are ceil(q 2^B / n), ceil(q 2^B / n) + 1, ...
    (at most ceil(2^B / n) of them); j = v - ceil(q 2^B / n) says which one v was, so
    `_unmul(q, j, n) == v` exactly. Splitting v = vh 2^B + vl keeps every product below 2^61.
    """
    vh = jnp.right_shift(v, MOMENTUM_BITS)  # arithmetic shift: floor(v / 2^B) for negatives too
    vl = jnp.bitwise_and(v, (1 << MOMENTUM_BITS) - 1)
    q = vh * n + jnp.right_shift(vl * n, MOMENTUM_BITS)
    return q, v - _ceil_times_denominator(q, n)


def _unmul(q: jax.Array, j: jax.Array, n: jax.Array) -> jax.Array:
    """The inverse of `_mul`: the v with floor(v n / 2^B) = q and fiber index j."""
    return _ceil_times_denominator(q, n) + j


def _pack(j: jax.Array, bits: int) -> jax.Array:
    """Fiber indices (each < 2^bits) packed 8 // bits to a uint8, flattened."""
    per = 8 // bits
    flat = j.reshape(-1).astype(jnp.uint8)
    flat = jnp.pad(flat, (0, (-flat.size) % per)).reshape(-1, per)
    shifts = jnp.arange(per, dtype=jnp.uint8) * bits
    return jnp.sum(jnp.left_shift(flat, shifts), axis=1, dtype=jnp.uint8)  # disjoint bits: sum == or


def _unpack(packed: jax.Array, bits: int, shape: tuple[int, ...]) -> jax.Array:
    per = 8 // bits
    shifts = jnp.arange(per, dtype=jnp.uint8) * bits
    flat = jnp.bitwise_and(jnp.right_shift(packed[:, None], shifts), (1 << bits) - 1).reshape(-1)
    return flat[: math.prod(shape)].reshape(shape).astype(jnp.int64)


def _to_fixed(x: jax.Array, scale: float) -> tuple[jax.Array, jax.Array]:
    """round(x * scale) as int64, and whether it stayed inside the safe range."""
    y = jnp.round(x.astype(jnp.float64) * scale)
    ok = jnp.all(jnp.isfinite(y) & (jnp.abs(y) < _LIMIT))
    return jnp.clip(jnp.where(jnp.isfinite(y), y, 0.0), -_LIMIT, _LIMIT).astype(jnp.int64), ok


def _to_float(x: jax.Array, scale: float, dtype) -> jax.Array:
    return (x.astype(jnp.float64) / scale).astype(dtype)


def _tree_all(flags) -> jax.Array:
    return jnp.all(jnp.stack([jnp.asarray(f) for f in jax.tree.leaves(flags)]))


def _tree_vdot(a, b) -> jax.Array:
    return optax.tree_utils.tree_vdot(*(optax.tree_utils.tree_cast(t, jnp.float64) for t in (a, b)))


def _isolated(fn):
    """fn with optimisation barriers around its inputs and outputs, so that XLA does not fuse the
    gradient with the integer code around it differently in the forward and the reverse pass
    (bitwise-identical gradients are what makes the reversal exact)."""
    def wrapped(*args):
        return jax.lax.optimization_barrier(fn(*jax.lax.optimization_barrier(args)))
    return wrapped


def _is_int(value: Any) -> bool:
    return is_int(value)


class ReversibleRun(NamedTuple):
    """What `Reversible.run` computes. Parameters are int64 in units of 2^-radix_bits.

    `matched` (a bool array) says whether the objective's own optimiser, run beside the
    fixed-point SGD on the same gradients, made the same update at every step; where it did not,
    the value, scores and grads are NaN (the run reversed is not the one that trains)."""

    value: jax.Array
    scores: dict[str, jax.Array]
    grads: HParams
    initial: PyTree
    reconstructed: PyTree
    velocity0: PyTree
    matched: jax.Array


@dataclasses.dataclass(frozen=True)
class Reversible(Method):
    """Exact hypergradient of SGD with momentum by reversing training in fixed-point arithmetic.

    Maclaurin, Duvenaud & Adams (2015), "Gradient-based hyperparameter optimization through
    reversible learning", Algorithms 2 (reverse pass) and 3 (exact multiplication by a ratio with
    an information buffer). See the module docstring for the arithmetic.

    The objective's optimiser must be `optax.sgd(lr, momentum=m)` with the learning rate read
    from `hparams[lr]` (a scalar, or a per-step schedule `lambda step: hparams[lr][step]`) and the
    momentum from `hparams[momentum]` (a scalar); `check` verifies this numerically, refusing with
    a ValueError: all T updates of the optimiser on pseudorandom gradients, and the first 16 on
    gradients of every magnitude the fixed point represents (so a clip at any threshold in range
    is refused), equal optax.sgd's, at the given hyperparameters and at a second point where every
    float hyperparameter is moved (traced hyperparameters, in a vmapped or jitted call, are
    replaced by stand-in values of their shapes first); an error the optimiser raises while probed
    is the ValueError's cause, and its message starts with it. What such a probe cannot see, the
    forward pass catches: it runs the objective's own optimiser on the real gradients beside the
    fixed-point SGD, and where an update differs the value and hypergradient are NaN (see the
    module docstring). Every other hyperparameter must act through `problem.train_loss` (e.g. a
    weight decay) or the model. The training step is the plain loop's: an objective whose loop is a
    `hypergrad.loop.Loop` subclass overriding its step or readout (`update`, `step`, `run`,
    `train`, `readout`, `val_loss`) is refused with a ValueError before anything compiles, since
    the fixed-point SGD would silently replace it; `hg.Reverse()` differentiates such a loop.

    Cost: one forward training run, then a reverse pass that recomputes each step's gradient and
    takes one vector-Jacobian product of it, plus the int64 fixed-point arithmetic and one update
    of the objective's optimiser per step (3.9 runs on the digits MLP by the FLOP count, always at
    least 2; measured time 9-14 training runs on 2 CPU cores). `check` compiles one small program
    of T + 128 elementwise updates of both optimisers per probe point.
    Memory: parameters, velocity (int64) and adjoints, plus an information buffer of
    T x parameters x `info_bits` bits (the bits the momentum decay destroys), not
    T x parameters x 32 bits of stored parameters and activations as in `Reverse`. The paper's
    arbitrary-precision buffer needs only log2(1/m) bits per parameter per step on average; a
    static-shape JAX array stores a fixed width instead (1 bit is exact for m >= 1/2).
    Bias: none beyond fixed-point precision (gradients and steps rounded to 2^-radix_bits, the
    momentum to a multiple of 2^-30): in float64 it equals `Reverse` to ~1e-8 relative.
    Requires `jax_enable_x64` (int64 arithmetic) and parameters of float32 or wider (a bfloat16
    or float16 leaf is refused with a ValueError: use `hg.Reverse()`).

    Derivatives of the result: none. Training runs in integers, so the value and grads carry no
    derivative back to the hyperparameters; jax.grad, jacfwd, jacrev or jvp through
    `hg.hypergradient` with this method (second-order hyper-derivatives) raise a ValueError at
    trace time rather than return 0. Use `hg.Reverse()` or `hg.Forward()` for those; the first
    derivative of the value is the returned grads. jit and vmap of the call are unaffected.

    Args:
        lr: name of the learning-rate hyperparameter (scalar, or a schedule of length >= T).
        momentum: name of the momentum hyperparameter (scalar, in [2^-info_bits, 1]).
        radix_bits: parameters and velocity are integers in units of 2^-radix_bits; their
            magnitudes must stay below 2^(61 - radix_bits) (2^21 for the default 40).
        info_bits: bits stored per parameter per step for the momentum decay, 1, 2, 4 or 8;
            exact for momentum >= 2^-info_bits.
    """

    lr: str = "lr"
    momentum: str = "momentum"
    radix_bits: int = 40
    info_bits: int = 8

    def __post_init__(self):
        for field in ("lr", "momentum"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ValueError(f"Reversible({field}={getattr(self, field)!r}) must be the name of a "
                                 f"hyperparameter, e.g. Reversible({field}={field!r})")
        if self.lr == self.momentum:
            raise ValueError(f"Reversible(lr={self.lr!r}, momentum={self.momentum!r}): the learning rate "
                             "and the momentum must be different hyperparameters")
        if not _is_int(self.radix_bits) or not 8 <= self.radix_bits <= 56:
            raise ValueError(f"Reversible(radix_bits={self.radix_bits!r}) must be an int in [8, 56] "
                             "(parameters are integers in units of 2^-radix_bits; 40 is a good default)")
        if not _is_int(self.info_bits) or self.info_bits not in (1, 2, 4, 8):
            raise ValueError(f"Reversible(info_bits={self.info_bits!r}) must be 1, 2, 4 or 8 (exact "
                             "reversal needs momentum >= 2^-info_bits; 1 suffices for momentum >= 0.5)")

    # -- validation -----------------------------------------------------------------------------
    def check(self, objective: Any, hparams: HParams) -> None:
        """`Method.check`, each probe it makes noted as made for `objective` (`_compile.note_trace`):
        it is traced with the values the optimiser reads now, so a stored call learns of it as of a
        compiled program (`hypergrad.store`) and forgets the objective, its probes with it, when
        those values were edited since."""
        token = _CHECKING.set(objective)
        try:
            super().check(objective, hparams)
        finally:
            _CHECKING.reset(token)

    def check_loop(self, loop: Loop, hparams: HParams) -> None:
        _check_standard_step(loop)
        if not jax.config.jax_enable_x64:
            raise ValueError("Reversible needs 64-bit integers for its exact fixed-point arithmetic; call "
                             "jax.config.update('jax_enable_x64', True) before building the problem")
        for role, name in (("lr", self.lr), ("momentum", self.momentum)):
            if name not in hparams:
                plain = ("; Reversible reverses SGD with momentum only: for plain SGD (no momentum "
                         "hyperparameter) use hg.Reverse()") if role == "momentum" else ""
                raise ValueError(f"Reversible({role}={name!r}): hparams has no {name!r} (it has "
                                 f"{sorted(hparams)}); name the hyperparameter that drives optax.sgd's {role}{plain}")
        lr_shape = np.shape(hparams[self.lr])
        T = loop.num_steps
        if not (lr_shape == () or (len(lr_shape) == 1 and lr_shape[0] >= T)):
            raise ValueError(f"Reversible: hparams[{self.lr!r}] has shape {lr_shape}; give a scalar or a "
                             f"per-step schedule of shape ({T},)")
        if np.shape(hparams[self.momentum]) != ():
            raise ValueError(f"Reversible: hparams[{self.momentum!r}] has shape "
                             f"{np.shape(hparams[self.momentum])}; the momentum must be a scalar")
        params = jax.eval_shape(loop.init, hparams, jax.random.key(0)).params
        _check_param_dtypes(params)
        traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(hparams))
        if not traced:
            m = float(hparams[self.momentum])
            if not 2.0 ** -self.info_bits <= m <= 1.0:
                raise ValueError(self._momentum_refusal(m))
        with jax.ensure_compile_time_eval():  # numbers, even inside an outer jit's or vmap's trace
            given = self._stand_in(hparams, T) if traced else hparams
            self._probe(loop, (given, self._moved(given)), params, T)

    def _momentum_refusal(self, m: float) -> str:
        """Why the momentum `m` cannot be reversed exactly, with the fix that works for it: a larger
        `info_bits` where one reaches down to `m` (2^-8 at most), hg.Reverse() for a momentum below
        2^-8, a momentum of at most 1 above it."""
        floor = 2.0 ** -self.info_bits
        said = (f"Reversible(info_bits={self.info_bits}) reverses momentum in [2^-{self.info_bits} = {floor:g}, 1] "
                f"exactly, got {self.momentum}={m!r}")
        enough = [bits for bits in (1, 2, 4, 8) if 2.0 ** -bits <= m < floor]
        if enough:
            return f"{said}; raise info_bits to {enough[0]} (or more), or use hg.Reverse() for (almost) no momentum"
        if m < floor:  # below 2^-8 as well
            least = f"{floor:g}" + (f" (or {2.0 ** -8:g} with info_bits=8)" if self.info_bits < 8 else "")
            return (f"{said}; no info_bits reverses a momentum below 2^-8 = {2.0 ** -8:g} (one can raise info_bits "
                    f"to 8 at most), so give a momentum of at least {least}, or use hg.Reverse() for (almost) no "
                    "momentum")
        over = "the momentum must be at most 1: " if m > 1 else ""
        return f"{said}; {over}give a momentum in [{floor:g}, 1]"

    def _stand_in(self, hparams: HParams, T: int) -> HParams:
        """Concrete hyperparameters of `hparams`' shapes and dtypes, for probing an optimiser whose
        hyperparameters are traced (a vmapped or jitted call): per-step rates in [0.01, 0.1], the
        momentum 0.9, every other float 0.5, integers 0 (the first option of a held choice: a
        traced choice of optimiser is probed at that option only)."""
        rng = np.random.default_rng(1)
        out = {}
        for name, value in hparams.items():
            shape, dtype = np.shape(value), jnp.result_type(value)
            if name == self.lr:
                out[name] = jnp.asarray(rng.uniform(0.01, 0.1, shape), dtype)
            elif name == self.momentum:
                out[name] = jnp.asarray(0.9, dtype)
            elif jnp.issubdtype(dtype, jnp.inexact):
                out[name] = jnp.full(shape, 0.5, dtype)
            else:
                out[name] = jnp.zeros(shape, dtype)
        return out

    def _moved(self, hparams: HParams) -> HParams:
        """A second probe point: every float hyperparameter moved (the rate scaled by a per-step
        factor, the momentum halfway to 1, the others scaled and shifted), integers kept, so an
        optimiser that equals SGD only at the given values (a `scale(h["mult"])` at mult = 1) or
        reads another hyperparameter is caught."""
        out = {}
        for name, value in hparams.items():
            value = jnp.asarray(value)
            if not jnp.issubdtype(value.dtype, jnp.inexact):
                out[name] = value
            elif name == self.lr:
                out[name] = value * jnp.linspace(0.6, 0.9, value.size).reshape(value.shape).astype(value.dtype)
            elif name == self.momentum:
                out[name] = (value + 1) / 2
            else:
                out[name] = value * 1.3 + 0.1
        return out

    def _probe(self, loop: Loop, points: tuple[HParams, ...], shapes: PyTree, T: int) -> None:
        """The user's optimiser against optax.sgd at each of the hyperparameter `points`, from
        random parameters, on pseudorandom gradients: all T updates on gradients of size 0.1 to 10
        (an optimiser that differs at any step, such as a step-decay schedule on top of the rate,
        is refused), and the first min(T, 16) updates at every magnitude the fixed point
        represents, one row per factor 2^8 from 2^-radix_bits to 2^(56 - radix_bits) (2^-40 to
        2^16 at the default radix, each element 0.1 to 10 times that; fixed-point gradients must
        stay below 2^(60 - radix_bits)): a clip, a global-norm or block clip or a dead zone with
        its threshold anywhere in that range is refused.

        What a probe cannot catch: behaviour that depends on the real gradients' structure rather
        than their size, on the loss value, on a magnitude after step 16 only (or where the rates
        of the first 16 steps are all 0), or on hyperparameter values it is not given (traced
        ones, replaced by stand-ins). The forward pass checks every step's update against the
        optimiser's own on the real gradients (`_Witness`) and reports NaN for those.

        Cost: one program (no random-number generator in it) of T + 8 min(T, 16) elementwise
        updates of both optimisers per point, compiled once per optimiser function, method, T and
        shapes (traced inline under a transformation)."""
        rng = np.random.default_rng(0)
        # Element i of step t's gradient is magnitude * size_i * cos(rate_i t + phase_i).
        draws = tuple(jax.tree.map(lambda s, f=f: np.asarray(f(s.shape), np.float64), shapes)
                      for f in (lambda n: rng.normal(size=n), lambda n: 10.0 ** rng.uniform(-1, 1, n),
                                lambda n: rng.uniform(0.5, 3.0, n), lambda n: rng.uniform(0, 6.3, n)))
        stacked = jax.tree.map(lambda *v: jnp.stack([jnp.asarray(x) for x in v]), *points)
        try:
            if _compile.is_traced(stacked):  # the optimiser may close over traced values: inline
                worst = self._probe_program(loop.optimizer, T)(stacked, *draws)
            else:  # jitted once per optimiser, method and T: later checks reuse its compilation
                worst = self._jitted_probe(loop, T)(stacked, *draws)
        except _OptimizerRaised as raised:  # a bug of the user's or "not the SGD we can reverse"
            err = raised.__cause__
            raise ValueError(f"Reversible: the objective's optimizer raised {type(err).__name__}: {err}\n(while "
                             "Reversible probed its updates against optax.sgd's). If that is a bug in your "
                             "optimizer, fix it; otherwise: " + self._refusal()) from err
        if isinstance(worst, jax.core.Tracer):
            return  # the optimiser closes over traced values (a vmapped held choice): the forward pass checks
        if not float(worst) <= 1e-6:
            raise ValueError(self._refusal())

    def _jitted_probe(self, loop: Loop, T: int):
        """`jax.jit` of `_probe_program`, held per optimiser function (weakly) and (method, T).

        The held probe calls `loop.optimizer` on a copy of the loop without its problem and data, whose
        optimiser function is a weak reference to `loop.optimizer_fn` (`_WeakOptimizer`): a probe that held
        the function (the table's key) or the loop would keep its entry, the problem, the data and (through
        `with_fixed`'s optimiser) the objective alive for good. The probe is traced only while `loop` is
        alive (here, and on a retrace from this method), so the reference is never dead when called."""
        with _PROBES_LOCK:  # the oldest entries go first; two threads evicting at once must not meet
            try:
                table = _PROBES.get(loop.optimizer_fn)
            except TypeError:  # an optimiser function that cannot be weakly referenced: not held
                table, optimizer = {}, loop.optimizer
            else:
                optimizer = dataclasses.replace(loop, problem=None, data={},
                                                optimizer_fn=_WeakOptimizer(loop.optimizer_fn)).optimizer
                if table is None:
                    for old in list(_PROBES)[:max(0, len(_PROBES) - _MAX_PROBES + 1)]:
                        _PROBES.pop(old, None)
                    table = _PROBES.setdefault(loop.optimizer_fn, {})
            probe = table.get((self, T))
            if probe is None:
                for old in list(table)[:max(0, len(table) - _MAX_PROBES_EACH + 1)]:
                    table.pop(old, None)
                probe = table[(self, T)] = jax.jit(self._probe_program(optimizer, T))
                _compile.note_trace(_CHECKING.get())  # traced at its first call, just after
        return probe

    def _probe_program(self, optimizer, T: int):
        """The pure probe of `_probe`: (stacked points, params, size, rate, phase) -> the worst
        relative difference between `optimizer`'s updates and optax.sgd's over all points."""
        magnitudes = 2.0 ** np.arange(-self.radix_bits, 57 - self.radix_bits, 8)

        def mismatch(ours, reference, magnitude, steps, params, size, rate, phase):
            def step(carry, t):
                (p, a), (q, b) = carry
                g = jax.tree.map(lambda s, w, c: magnitude * s * jnp.cos(w * t + c), size, rate, phase)
                u, a = _as_the_optimizers(ours.update)(g, a, p)
                r, b = reference.update(g, b, q)
                # Leaves of size 0 (a layer of width 0) hold nothing to compare, and have no maximum.
                worst = jnp.max(jnp.stack([jnp.zeros(())] + [jnp.max(jnp.abs(x - y) / (jnp.abs(y) + 1e-300))
                                                           for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(r))
                                                           if jnp.size(y)]))
                return ((optax.apply_updates(p, u), a), (optax.apply_updates(q, r), b)), worst

            start = ((params, _as_the_optimizers(ours.init)(params)), (params, reference.init(params)))
            return jnp.max(jax.lax.scan(step, start, jnp.arange(steps, dtype=jnp.float64))[1])

        def probe(stacked, *draws):
            def at(h):
                lr = jnp.asarray(h[self.lr])
                reference = optax.sgd((lambda step: lr[step]) if lr.ndim else lr, momentum=h[self.momentum])
                ours = _as_the_optimizers(optimizer)(h)
                sizes = jax.vmap(lambda m: mismatch(ours, reference, m, min(T, 16), *draws))(
                    jnp.asarray(magnitudes))
                return jnp.maximum(mismatch(ours, reference, 1.0, T, *draws), jnp.max(sizes))

            return jnp.max(jax.lax.map(at, stacked))

        return probe

    def _refusal(self) -> str:
        return (f"Reversible supports SGD with momentum only: the objective's optimizer must update like "
                f"optax.sgd(hparams[{self.lr!r}] (or lambda step: hparams[{self.lr!r}][step]), "
                f"momentum=hparams[{self.momentum!r}]) at every step and for every value of the "
                "hyperparameters, and a probe of yours (its T updates at the given values and at moved ones, on "
                "gradients of every size the fixed point holds) differs from it. Put weight decay in train_loss, "
                "drop gradient clipping, or use hg.Reverse() for other optimisers")

    # -- the method -----------------------------------------------------------------------------
    def differentiate(self, loop: Loop, hparams: HParams, key: Key):
        out = self.reverse(loop, hparams, key)
        return (out.value, out.scores), out.grads

    def run(self, objective: Any, hparams: HParams, key: Key,
            data: Mapping[str, PyTree] | None = None) -> ReversibleRun:
        """The forward and reverse passes on `objective`'s training set (one fold's `data` under
        cross-validation), with the reconstruction exposed (pure, traceable).

        Returns:
            a `ReversibleRun`: value, scores and grads as `value_and_grad`, plus the initial
            parameters as fixed-point integers, the same reconstructed by the reverse pass (equal
            bit for bit when the reversal is exact), the reconstructed initial velocity (zero) and
            `matched`, whether the objective's own optimiser made the fixed-point SGD's update at
            every step (False: value, scores and grads are NaN).
        """
        return self.reverse(objective.loop(data), hparams, key)

    def reverse(self, loop: Loop, hparams: HParams, key: Key) -> ReversibleRun:
        """`run` on a loop: train forward in fixed point, then undo training step by step."""
        _check_standard_step(loop)  # also when called directly (run), not through `check`
        T = loop.num_steps
        # Training runs in int64 fixed point: nothing returned has a derivative path back to the
        # hyperparameters through it, so differentiating the result is refused, not silently 0.
        hparams = refusing_derivatives(hparams, self, "it trains in int64 fixed-point arithmetic, "
                                       "which carries no derivative")
        state = loop.init(hparams, key)
        # Leaves as arrays: init may return a Python float (or a NumPy scalar) for a parameter, which
        # training makes an array of its dtype (jnp.result_type) at the first step.
        state = state._replace(params=jax.tree.map(jnp.asarray, state.params))
        arith = _Arithmetic.of(self, loop, hparams, state)
        lr = jnp.asarray(hparams[self.lr])
        lrs = jnp.broadcast_to(lr, (T,)) if lr.ndim == 0 else lr[:T]
        W0, ok0 = arith.fixed(jax.tree.leaves(state.params))
        (WT, VT, ok, matched), info = _forward(arith, W0, ok0, lrs)

        # The validation loss and its gradient at the end of training.
        wT = arith.tree(arith.floats(WT))
        value, scores = loop.readout(state._replace(params=wT), hparams)
        wbar, direct = jax.grad(loop.val_loss, argnums=(0, 1))(wT, hparams)  # direct: a model reading hparams
        W0_rec, V0_rec, wbar0, hbar, mbar, lr_bars = _backward(arith, WT, VT, jax.tree.leaves(wbar), lrs, info)
        # The initial parameters' adjoint, pulled back through `init` (a model whose init reads hparams).
        _, init_vjp = jax.vjp(lambda h: jax.tree.leaves(loop.init(h, key).params), hparams)
        through_init, = init_vjp([b.astype(w.dtype) for b, w in zip(wbar0, jax.tree.leaves(state.params))])

        lr_grad = jnp.sum(lr_bars) if lr.ndim == 0 else jnp.zeros(lr.shape, jnp.float64).at[:T].set(lr_bars)
        grads = jax.tree.map(lambda a, b, c: a + b.astype(a.dtype) + c.astype(a.dtype), dict(hbar), dict(direct),
                             dict(through_init))
        grads[self.lr] = grads[self.lr] + lr_grad.astype(grads[self.lr].dtype)
        grads[self.momentum] = grads[self.momentum] + mbar.astype(grads[self.momentum].dtype)
        # Outside the int64 range the integers wrapped, outside [2^-info_bits, 1] the momentum was
        # clipped (a traced value `check` could not see), where the objective's own optimiser
        # did not update like the fixed-point SGD the run reversed is not the one that trains, and
        # where the reverse pass did not arrive back at (W0, V0 = 0) bit for bit it did not retrace
        # the forward pass (a gradient computed differently in the two passes): report NaN rather
        # than a wrong number.
        retraced = _tree_all([jnp.array_equal(a, b) for a, b in zip(W0, W0_rec)]
                             + [jnp.all(v == 0) for v in V0_rec])
        ok = ok & matched & retraced & (arith.momentum >= 2.0 ** -self.info_bits) & (arith.momentum <= 1)
        grads = jax.tree.map(lambda a: jnp.where(ok, a, jnp.nan), grads)
        value = jnp.where(ok, value, jnp.nan)
        scores = jax.tree.map(lambda a: jnp.where(ok, a, jnp.nan), scores)
        return ReversibleRun(value, scores, grads, arith.tree(W0), arith.tree(W0_rec), arith.tree(V0_rec), matched)


def _check_param_dtypes(params: PyTree) -> None:
    """A ValueError for a parameter leaf that is not a float of at least 32 bits. Training in
    bfloat16 or float16 rounds the parameters to that dtype at every step; the fixed point keeps
    them to 2^-radix_bits and the witness compares in float64, so neither would see that rounding,
    and the value and hypergradient returned would be another (almost float32) run's."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        where = f"the parameter at {jax.tree_util.keystr(path)!r}" if path else "the parameter"
        dtype = jnp.result_type(leaf)  # a Python float given concretely has none of its own
        if not jnp.issubdtype(dtype, jnp.floating):
            held = not jnp.issubdtype(dtype, jnp.complexfloating)  # an integer or boolean leaf
            why = ("training holds it constant, and Reversible's fixed-point SGD moves every parameter. Use "
                   "method=hg.Reverse() (or hg.Forward()), which holds integer and boolean leaves constant and "
                   "differentiates the floating-point ones" if held else
                   "Reversible's fixed-point SGD is real. Use method=hg.Reverse() (or hg.Forward()), which "
                   "differentiates training with complex parameters")
            raise ValueError(f"Reversible: {where} (Problem(init=...)) has dtype {dtype}; every parameter must be "
                             f"a floating-point array: {why}")
        if jnp.finfo(dtype).bits < 32:
            raise ValueError(
                f"Reversible: {where} has dtype {dtype}, narrower than float32. Training in "
                f"{dtype} rounds the parameters to {dtype} at every step, which Reversible's "
                "exact fixed-point reversal does not reproduce: it would return the value and "
                "hypergradient of another training run than objective(hparams, key). Use "
                "method=hg.Reverse() (it differentiates the low-precision run), or float32 parameters "
                "(Problem(init=...) returning float32 arrays)")


def _check_standard_step(loop: Loop) -> None:
    """`ValueError` unless `loop` trains and reads out as `hypergrad.loop.Loop` does: `Reversible`
    replaces the training step by its own fixed-point SGD and takes the gradient of `val_loss`, so
    a subclass that changes a step (a projection, an average of weights, alternating updates) or
    the readout would get the value and hypergradient of the plain loop, silently wrong."""
    changed = overridden(loop, _REPLACED)
    if changed:
        raise ValueError(
            f"Reversible cannot honour the objective's custom training loop: {type(loop).__name__} overrides "
            f"{', '.join('Loop.' + name for name in changed)}, and Reversible runs its own fixed-point "
            "optax.sgd step in place of Loop.update and differentiates Loop.val_loss, so its value and "
            "hypergradient would be those of the plain loop, not yours. Use hg.Reverse() (or hg.Forward()), "
            "which differentiate the loop as it runs")


@dataclasses.dataclass(frozen=True)
class _Arithmetic:
    """The fixed-point arithmetic of one reversal: parameter layout, grid and the momentum ratio."""

    loop: Loop
    hparams: HParams
    data_key: Key
    treedef: Any
    dtypes: tuple
    scale: float
    n: jax.Array      # the momentum as n / 2^MOMENTUM_BITS
    momentum: jax.Array
    bits: int

    @classmethod
    def of(cls, method: Reversible, loop: Loop, hparams: HParams, state) -> _Arithmetic:
        leaves, treedef = jax.tree.flatten(state.params)
        m = jnp.asarray(hparams[method.momentum])
        n = jnp.clip(jnp.round(m.astype(jnp.float64) * 2.0 ** MOMENTUM_BITS),
                     2 ** (MOMENTUM_BITS - method.info_bits), 2 ** MOMENTUM_BITS).astype(jnp.int64)
        return cls(loop, hparams, state.data_key, treedef, tuple(jnp.result_type(p) for p in leaves),
                   float(2.0 ** method.radix_bits), n, m, method.info_bits)

    def tree(self, leaves):
        """The user's parameter pytree from the list of leaves the loops work on."""
        return jax.tree.unflatten(self.treedef, leaves)

    def minibatch(self, t):
        # Minibatch t of the loop (the problem's epoch order, a pure function of the data key and
        # t), drawn inside each step: O(batch) work per step and no stored indices, so memory
        # stays flat in T.
        return self.loop.draw(LoopState(None, None, self.data_key), t)

    def train_grad(self, leaves, h, minibatch):
        return jax.tree.leaves(jax.grad(self.loop.train_loss)(self.tree(leaves), h, minibatch))

    def gradient(self, w, minibatch):
        """The training gradient, isolated: the same computation in both passes, bit for bit."""
        return _isolated(lambda w_, b_: self.train_grad(w_, self.hparams, b_))(w, minibatch)

    def floats(self, W):
        return [_to_float(x, self.scale, dt) for x, dt in zip(W, self.dtypes)]

    def fixed(self, xs, scale=None):
        pairs = [_to_fixed(x, self.scale if scale is None else scale) for x in xs]
        return [p[0] for p in pairs], _tree_all([p[1] for p in pairs])

    def step_size(self, V1, lr_t):
        """round(lr_t v_{t+1}) in grid units, identical in both passes."""
        return self.fixed([lr_t * v.astype(jnp.float64) for v in V1], 1.0)


def _forward(arith: _Arithmetic, W0, ok0, lrs):
    """Integer SGD with momentum from W0 (V0 = 0), storing only the fiber indices of each step;
    returns ((W_T, V_T, in range, matched), fiber indices), `matched` saying whether the
    objective's own optimiser made the same update at every step (`_Witness`)."""
    witness = _Witness.of(arith, W0)

    def step(carry, x):
        W, V, ok, seen = carry
        t, lr_t = x
        w = arith.floats(W)
        g = arith.gradient(w, arith.minibatch(t))
        G, ok_g = arith.fixed(g)
        QJ = [_mul(v, arith.n) for v in V]
        V1 = [q + g for (q, _), g in zip(QJ, G)]
        U, ok_u = arith.step_size(V1, lr_t)
        W1 = [w - u for w, u in zip(W, U)]
        in_range = _tree_all([jnp.all(jnp.abs(a) < 2 * _LIMIT) for a in W1 + V1])
        seen = witness.step(seen, t, lr_t, w, g, U)
        return (W1, V1, ok & ok_g & ok_u & in_range, seen), [_pack(j, arith.bits) for _, j in QJ]

    V0 = [jnp.zeros_like(w) for w in W0]
    T = lrs.shape[0]
    (WT, VT, ok, seen), info = jax.lax.scan(step, (W0, V0, ok0, witness.start), (jnp.arange(T), lrs), length=T,
                                            unroll=arith.loop.unroll)
    return (WT, VT, ok, seen[-1]), info


@dataclasses.dataclass(frozen=True)
class _Witness:
    """The objective's own optimiser, run beside the fixed-point SGD on the same gradients and
    parameters (in float64), and its update compared with the fixed-point step at every step.

    The probe in `check` compares the optimiser with optax.sgd on made-up gradients only; this
    compares it on the real ones, so a clip whose threshold the probe did not reach, an optimiser
    closing over a traced choice (nothing for the probe to run) or one that is SGD only at the
    stand-in values of a traced call cannot make `Reversible` return another run's value.

    Tolerance, elementwise at step t (counting from 1), with a_t = m a_{t-1} + |g_t| bounding
    |v_t|: |update + fixed-point step| <= |lr_t| (r_t a_t + 2 t 2^-radix_bits) + 2^-radix_bits,
    r_t = 1e-6 + t (2^-30 + 4 eps), eps of the optimiser's least precise float. It bounds what
    the two may honestly differ by: the momentum rounded to n / 2^30 (at most 2^-31 t a_t), the
    gradient rounded and m v floored to the grid (at most 1.5 units a step), the step rounded
    (half a unit) and the optimiser's own rounding (about 2 eps t a_t), each with room to spare.
    An update that differs by more (a clip by a factor of 1 + 1e-6 or more) is a mismatch; the
    two run on the same gradients, so a difference never feeds back and grows.
    Cost: one update of the optimiser, the bound and the comparison per step, elementwise
    (O(parameters)); memory: the optimiser's state and a_t in float64.
    """

    arith: _Arithmetic
    optimizer: Any
    start: tuple
    eps: float

    @classmethod
    def of(cls, arith: _Arithmetic, W0) -> _Witness:
        optimizer = arith.loop.optimizer(arith.hparams)
        w0 = [x.astype(jnp.float64) for x in arith.floats(W0)]
        state = optimizer.init(arith.tree(w0))
        dtypes = [jnp.result_type(x) for x in jax.tree.leaves(state)] + [jnp.dtype(jnp.float64)]
        eps = max(float(jnp.finfo(d).eps) for d in dtypes if jnp.issubdtype(d, jnp.inexact))
        return cls(arith, optimizer, (state, [jnp.zeros_like(x) for x in w0], jnp.asarray(True)), eps)

    def step(self, seen, t, lr_t, w, g, U):
        """(optimiser state, a_t, matched so far) after step t, whose fixed-point step is -U."""
        state, a, matched = seen
        g = [x.astype(jnp.float64) for x in g]
        update, new_state = self.optimizer.update(self.arith.tree(g), state,
                                                  self.arith.tree([x.astype(jnp.float64) for x in w]))
        m = jnp.clip(self.arith.momentum.astype(jnp.float64), 0.0, 1.0)
        a = [m * x + jnp.abs(y) for x, y in zip(a, g)]
        steps = (t + 1).astype(jnp.float64)
        grid = 1.0 / self.arith.scale
        rel = 1e-6 + steps * (2.0 ** -30 + 4 * self.eps)
        lr = jnp.abs(lr_t.astype(jnp.float64))
        leaves = jax.tree.leaves(update)
        same = [jnp.all(jnp.abs(u.astype(jnp.float64) + step.astype(jnp.float64) * grid)
                        <= lr * (rel * bound + 2 * steps * grid) + grid)
                for u, step, bound in zip(leaves, U, a)]
        matched = matched & _tree_all(same) & (len(leaves) == len(U))
        return _cast_as(new_state, state), a, matched


def _cast_as(new, old):
    """`new` with each leaf cast to the dtype of the same leaf of `old` (a scan's carry keeps its
    dtypes; an optimiser may promote its state under float64 hyperparameters)."""
    if jax.tree.structure(new) != jax.tree.structure(old):
        return new
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), new, old)


def _backward(arith: _Arithmetic, WT, VT, wbar, lrs, info):
    """Undo each step exactly, pulling the adjoints back through it; returns the reconstructed
    (W0, V0), the adjoint of W0, the hyperparameter adjoint of the training loss, the momentum's
    and each lr_t's.

    Step t maps (w_t, v_t) to v_{t+1} = m v_t + g(w_t), w_{t+1} = w_t - lr_t v_{t+1}. With
    adjoints (wbar, vbar) of (w_{t+1}, v_{t+1}):
      vtil      = vbar - lr_t wbar          the total adjoint of v_{t+1}
      dL/dlr_t  = -<wbar, v_{t+1}>
      dL/dm    += <vtil, v_t>
      wbar     <- wbar + vtil^T dg/dw       a Hessian-vector product (VJP of the gradient)
      hbar     += vtil^T dg/dh              hyperparameters of train_loss (weight decay)
      vbar     <- m vtil
    """
    def step(carry, x):
        W1, V1, wbar, vbar, hbar, mbar = carry
        t, lr_t, J = x
        U, _ = arith.step_size(V1, lr_t)
        W = [w1 + u for w1, u in zip(W1, U)]       # w_t = w_{t+1} + lr_t v_{t+1}, exactly
        w = arith.floats(W)
        minibatch = arith.minibatch(t)
        G, _ = arith.fixed(arith.gradient(w, minibatch))   # the forward pass's rounded gradient
        V = [_unmul(v1 - g, _unpack(j, arith.bits, v1.shape), arith.n) for v1, g, j in zip(V1, G, J)]

        vtil = [vb - lr_t.astype(wb.dtype) * wb for vb, wb in zip(vbar, wbar)]
        lr_bar = -_tree_vdot(wbar, arith.floats(V1))
        mbar = mbar + _tree_vdot(vtil, arith.floats(V))
        _, vjp = jax.vjp(lambda p, h: arith.train_grad(p, h, minibatch), w, arith.hparams)
        dw, dh = vjp(vtil)
        wbar = [a + b for a, b in zip(wbar, dw)]
        hbar = jax.tree.map(jnp.add, hbar, dh)
        vbar = [arith.momentum.astype(a.dtype) * a for a in vtil]
        return (W, V, wbar, vbar, hbar, mbar), lr_bar

    vbar = [jnp.zeros_like(a) for a in wbar]
    hbar = jax.tree.map(jnp.zeros_like, arith.hparams)
    carry = (WT, VT, wbar, vbar, hbar, jnp.zeros((), jnp.float64))
    T = lrs.shape[0]
    (W0, V0, wbar0, _, hbar, mbar), lr_bars = jax.lax.scan(
        step, carry, (jnp.arange(T), lrs, info), length=T, reverse=True, unroll=arith.loop.unroll)
    return W0, V0, wbar0, hbar, mbar, lr_bars
