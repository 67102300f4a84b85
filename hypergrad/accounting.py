"""Compute accounting: the FLOPs of every program the library runs, counted from its trace.

A program (one training run and its scoring, one hypergradient of a method) is traced once with
`jax.make_jaxpr` (no lowering, no compilation) and its equations are counted:

- `dot_general`: 2 x batch x m x n x k, from its dimension numbers (a multiply and an add per term);
  `conv_general_dilated`: 2 x output elements x kernel elements per output feature.
- elementwise operations, arithmetic or logical, integer or floating, transcendental or not
  (`add`, `mul`, `max`, `select_n`, `exp`, `tanh`, `log`, comparisons, shifts...): 1 FLOP per
  output element. A transcendental is counted as one operation like an add (XLA's cost analysis
  puts them in a separate "transcendentals" column instead; they are a small share of a network's
  work, and counting them keeps activations and losses from being free). The fused primitives of
  jax 0.12 are charged as the operations they lower to and replace, so a program written the same
  way counts the same on jax 0.10 and 0.12: `fma` / `fmuladd` (a x b + c) 2, `one_minus_square`
  (tanh's derivative, lowered as (1 + x)(1 - x)) 3, `polynomial` of degree d (`jnp.polyval`:
  d multiply-adds by Horner's rule, where jax 0.10's loop ran d + 1 from zero) 2d. Where JAX
  itself rewrites a function (jax 0.12 gives `logsumexp` and `softmax` their own derivative
  rule, fewer operations in a cross-entropy's gradient), the count follows the program JAX traces.
- reductions (`reduce_sum`, `reduce_max`, `argmax`, cumulative sums...): 1 FLOP per input element.
  `sort` and `top_k`: n x ceil(log2 n) comparisons per sorted row of n.
- the PRNG (threefry2x32, the default key implementation): one threefry2x32 hash costs
  `THREEFRY_FLOPS` = 117 operations (20 rounds of an add, a 3-operation rotate and an xor on a pair
  of 32-bit words, plus 17 key-schedule adds) and yields two words. So `random_bits` costs
  `THREEFRY_FLOPS / 2` per 32-bit word drawn, `random_split` and `random_fold_in` one hash per key
  made, and a raw `threefry2x32` one hash per element of an output. Drawing a minibatch
  (`Problem.batch_indices`: integer hashes of each of its b indices, O(b) per step) is a small
  share of a step.
- data movement is free: reshapes, broadcasts, transposes, slices, gathers, concatenation,
  conversions, `iota`, copies, key wrapping, `unstack` (slices), sharding and layout casts. A
  scatter-add costs 1 FLOP per update element.
- any other primitive without sub-programs: 1 FLOP per output element.
- host callbacks and foreign calls (`jax.pure_callback`, `jax.experimental.io_callback`,
  `jax.ffi.ffi_call`): 1 FLOP per output element, like any other primitive. The work the called
  function does outside the program (a numpy or scipy solve, a kernel of one's own) is NOT counted,
  so a method or loss that hands its work to one looks almost free to the counts and to
  `hg.compare`'s line-up at equal compute. Counting a program that holds one warns (a
  `UserWarning` naming the called function, pointing at the user's line that asked for the count,
  so Python's default warning filter shows it once per function and line; a count found in the
  cache warns no more); compare such strategies with `by="seconds"`. `jax.debug.print` and
  `jax.debug.callback` return nothing the program computes with: free, and not warned about.

Control flow and sub-programs:

- `scan` (`lax.scan`, `lax.map`, and `fori_loop` with static bounds): its body times its length.
- `while`: its body (and condition) times the trip count when the condition bounds it, that is
  when it holds a comparison `i < c` of a carried counter against a constant (or a carried value
  the body passes on unchanged, starting from a constant) and the body adds a constant to that
  counter (a `fori_loop` with traced bounds, or `hg.Implicit`'s conjugate gradient,
  `k < maxiter`): the bound `(c - start) / step` (start 0 when not a constant), an upper bound for
  a loop that may stop early (CG is charged `maxiter` products). A `while` whose trip count cannot
  be read so is counted as one iteration (a lower bound; the library's one such loop is the
  minibatch draw's cycle walk, which runs zero to a few iterations).
- `cond` / `switch`: the SUM of the branches, which is what the vmapped program of a masked
  structural choice computes (a batched predicate turns the conditional into a select of every
  branch).
- `pjit`, `closed_call`, `custom_jvp_call`, `custom_vjp_call`, `checkpoint` (remat) and any other
  primitive holding sub-programs: the sum of its sub-programs, counted as they are traced
  (`custom_linear_solve`: its solve only). A differentiated program is counted after autodiff, so
  its backward pass and the recomputations of `jax.checkpoint` are counted as written.

The minibatch draw is counted wherever the program computes it: once per step in a training run,
and once for all the passes of a hypergradient that share it. So a method's count in training
runs depends on the draw's share of a run (5% on the iris MLP with batches of 16, under 1% on
the digits preset): where several training passes share one draw (ES's and PES's perturbed runs,
Forward's tangents) the count falls below the same method's on a full batch.

Dead code is dropped before counting (equations none of whose results reach the program's
outputs, in each (sub-)program; a sub-program's outputs all count as read). What is not modelled:
XLA's other rewrites (common subexpressions merged, constants folded, algebraic simplification;
fusion saves memory traffic, not FLOPs), and the cost of memory movement. The count is that of the
program as traced, so it depends only on the shapes and dtypes of the arguments and on JAX's
settings in force (under `jax_enable_x64` a program's own draws are 64-bit, twice the random
bits; the cache keys the settings), never on their values; work that does not depend on a
`vmap`ped argument (the minibatch indices and initialisation shared by ES's perturbed runs, the
minibatch indices shared by the folds under `cv=k`) is counted once, as it runs once. A search's
trial is charged one run, as if it ran alone (its vmapped program computes what the trials share
once, so the charge is an upper bound).

The two counts the library reports:

- `run_flops(objective, hparams, key)`: one training run and its scoring,
  `objective.loss_and_scores` (under `cv=k`, the k vmapped fits with their minibatch draw counted
  once, as it runs once): the compute unit ("training-run equivalents") of every result.
- `hypergradient_flops(objective, method, hparams, key, held=None)`: one hypergradient, the program
  `hypergrad.hypergradient.value_and_grad_fn(objective, method)` that `hg.hypergradient` compiles.

Both are cached per objective (weakly: the cache never keeps an objective or its data alive;
at most `MAX_ENTRIES` counts per objective, least recently used dropped) and cleared by
`hg.clear_caches()`. Counting traces the program once: about the tracing share of a compilation,
a fraction of a second for the library's programs.

One trace serves both the count and the search: a search vmaps and compiles the jaxpr of the run
it counts (`traced_run`, a `TracedRun`) instead of tracing the objective's Python a second time.
Inside `sharing_traces()` (a search evaluating a structured family opens it around its plan and its
programs) `run_flops` also keeps the trace of each count it makes, and `traced_run` takes it: the
planner's count of the run a search then compiles is that program's only trace. The traces are
dropped when the block ends, so nothing outlives it. A trace is reused only for the same objective
(by identity) and the same argument types (tree structure, shapes, dtypes and weak types) under the
same JAX settings (`hypergrad._compile.trace_settings()`), which is all tracing sees. `hg.tune`
opens such a block around its call: its count of a run is the program of its warm-up search, and
its count of a hypergradient (`hypergradient_flops`) is the hypergradient its outer step replays
(`traced_hypergradient`) instead of tracing the method and the objective's Python a second time.
`hg.hybrid_search` opens one too: each program's count with its configurations' held values
(`held=`) is the hypergradient its outer step replays, on the tuner's held values. `hg.ES` and
`hg.PES`, whose outer steps pass a fresh noise key at each step, are traced with the noise key an
input (`NOISE_AS_INPUT`) and counted with it derived from the key as `hg.hypergradient` derives it:
the same count. A method of one's own that draws noise (`random_estimate`) is counted as
`hg.hypergradient` compiles it, and its outer step traces it again, with its noise key.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from hypergrad import _caches, _compile
from hypergrad._jaxprs import sub_jaxprs
from hypergrad._types import HParams, Key
from hypergrad._checks import check_key, users_stacklevel
from hypergrad.hypergradient import check_method, check_method_output, check_objective, value_and_grad_fn
from hypergrad.methods.base import perturbation_key
from hypergrad.methods.es import ES, PES
from hypergrad.objective import as_hparams

__all__ = ["jaxpr_flops", "program_flops", "run_flops", "traced_run", "TracedRun", "hypergradient_flops",
           "traced_hypergradient", "sharing_traces", "matmul_flops_per_second", "clear", "THREEFRY_FLOPS", "MAX_ENTRIES"]

THREEFRY_FLOPS = 117
"""Operations of one threefry2x32 hash (two 32-bit words out): 20 rounds x (add, rotate = two
shifts and an or, xor) = 100, plus the key schedule's 2 + 5 x 3 adds."""

MAX_ENTRIES = 64
"""Most counts held per objective (methods x held x argument shapes), least recently used dropped."""


# Primitives that move or relabel data without arithmetic.
_FREE = frozenset({
    "broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "gather", "concatenate", "pad", "rev", "convert_element_type",
    "bitcast_convert_type", "iota", "copy", "copy_p", "device_put", "select_and_gather_add",
    "optimization_barrier", "sharding_constraint", "split", "random_wrap", "random_unwrap",
    "random_seed", "random_clone", "stop_gradient", "pvary", "mesh_cast", "reduce_precision",
    "squeeze_p", "empty", "zeros_like", "broadcast", "real", "imag",
    # `unstack` is a slice and squeeze per row (it lowers to exactly those; jax 0.12 emits it where
    # unpacking an array emitted slices and squeezes before, `a, b = x`); `relayout` changes
    # an array's layout; `reduced_vary_cast` / `vary_unreduced_cast` relabel an array's sharding axes
    # (lowered to the array itself; jax 0.10 named them `reduced_vary_cast_p`, `vary_unreduced_cast_p`).
    "unstack", "relayout", "reduced_vary_cast", "vary_unreduced_cast", "reduced_vary_cast_p",
    "vary_unreduced_cast_p",
})

# Fused elementwise primitives (jax 0.12), per output element: the operations they lower to and
# replace. `one_minus_square` lowers to (1 + x) * (1 - x), 3; tanh's derivative g * one_minus_square(y)
# so costs what jax 0.10's g * (1 - y) + g * (1 - y) * y did (4 with the product by g).
# `fma` / `fmuladd`: a * b + c, 2.
_FUSED = {"one_minus_square": 3, "fma": 2, "fmuladd": 2}

# Reductions: one FLOP per input element.
_REDUCTIONS = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor",
    "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "reduce",
})

_SCATTERS = frozenset({"scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min",
                       "scatter-max", "scatter_min", "scatter_max", "scatter"})


def _size(aval: Any) -> int:
    shape = getattr(aval, "shape", ())
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _out_elements(eqn: Any) -> int:
    return sum(_size(v.aval) for v in eqn.outvars)


def _dot_flops(eqn: Any) -> float:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    del lhs_batch
    # Every lhs element (batch x m x k) meets every rhs free element (n): 2 x batch x m x n x k.
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return 2.0 * float(np.prod(lhs, dtype=np.float64)) * float(np.prod(rhs_free, dtype=np.float64))


def _conv_flops(eqn: Any) -> float:
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"]
    out_feature_dim = spec.rhs_spec[0] if spec is not None else 0
    per_output = float(np.prod(rhs, dtype=np.float64)) / rhs[out_feature_dim]
    return 2.0 * _out_elements(eqn) * per_output


def _sort_flops(eqn: Any) -> float:
    shape = eqn.invars[0].aval.shape
    if not shape:
        return 0.0
    axis = eqn.params.get("dimension", len(shape) - 1)
    n = shape[axis]
    rows = _size(eqn.invars[0].aval) // max(n, 1)
    return float(rows * n * max(math.ceil(math.log2(n)), 1)) if n > 1 else 0.0


def _prng_flops(eqn: Any) -> float:
    name = eqn.primitive.name
    if name == "random_bits":
        words = _size(eqn.outvars[0].aval) * max(1, eqn.params["bit_width"] // 32)
        return THREEFRY_FLOPS / 2 * words
    if name in ("random_split", "random_fold_in"):
        return float(THREEFRY_FLOPS * _size(eqn.outvars[0].aval))
    return float(THREEFRY_FLOPS * _size(eqn.outvars[0].aval))  # threefry2x32: one hash per element pair


_PRNG = frozenset({"random_bits", "random_split", "random_fold_in", "threefry2x32"})

# Calls whose work runs outside the program, unseen by the count: the public name of each.
_OUTSIDE = {"pure_callback": "jax.pure_callback", "io_callback": "jax.experimental.io_callback",
            "ffi_call": "jax.ffi.ffi_call"}


def _warn_uncounted(eqn: Any) -> None:
    """A `UserWarning` that the work of `eqn`, a host callback or foreign call, is not counted,
    naming the function it calls (jax wraps a callback's function in `callback_func`)."""
    callback = eqn.params.get("callback")
    called = getattr(callback, "callback_func", callback)
    name = getattr(called, "__qualname__", None) or eqn.params.get("target_name") or repr(called)
    warnings.warn(
        f"hypergrad.accounting counted a program that calls {name} through {_OUTSIDE[eqn.primitive.name]}: "
        "the work it does outside the program is not counted (the call is charged 1 FLOP per output element), "
        "so FLOP counts, training-run equivalents and hg.compare's line-up at equal compute leave it out; "
        "compare such strategies with by=\"seconds\"", UserWarning, stacklevel=users_stacklevel())


def _literal(atom: Any, consts: Mapping[Any, Any]) -> float | None:
    """The value of a scalar literal or known constant, else None."""
    if isinstance(atom, jcore.Literal):
        value = atom.val
    elif isinstance(atom, jcore.Var) and atom in consts:
        value = consts[atom]
    else:
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - a non-numeric constant (a key) bounds nothing
        return None
    return float(array) if array.shape == () and jnp.issubdtype(array.dtype, jnp.number) else None  # bf16 too


def _while_trips(eqn: Any, consts: Mapping[Any, Any]) -> float | None:
    """The trip count bound of a `while` counting a carried integer up to a constant, or None."""
    params = eqn.params
    cond, body = params["cond_jaxpr"], params["body_jaxpr"]
    cond_nconsts, body_nconsts = params["cond_nconsts"], params["body_nconsts"]
    carry_in = eqn.invars[cond_nconsts + body_nconsts:]
    cond_carry = cond.jaxpr.invars[cond_nconsts:]
    body_carry = body.jaxpr.invars[body_nconsts:]
    cond_consts = dict(zip(cond.jaxpr.constvars, cond.consts))
    cond_consts.update({v: a.val if isinstance(a, jcore.Literal) else consts[a]  # a Literal is unhashable
                        for v, a in zip(cond.jaxpr.invars[:cond_nconsts], eqn.invars[:cond_nconsts])
                        if isinstance(a, jcore.Literal) or a in consts})
    best = None
    for c_eqn in cond.jaxpr.eqns:
        if c_eqn.primitive.name not in ("lt", "le") or c_eqn.invars[0] not in cond_carry:
            continue
        limit = _literal(c_eqn.invars[1], cond_consts)
        if limit is None and c_eqn.invars[1] in cond_carry:  # a carried bound the body passes on
            j = cond_carry.index(c_eqn.invars[1])
            if body.jaxpr.outvars[j] is body_carry[j]:
                limit = _literal(carry_in[j], consts)
        index = cond_carry.index(c_eqn.invars[0])
        step = _increment(body, body_carry[index], index)
        if limit is None or step is None or step <= 0:
            continue
        start = _literal(carry_in[index], consts)
        start = 0.0 if start is None else start
        trips = max(math.ceil((limit - start + (1 if c_eqn.primitive.name == "le" else 0)) / step), 0)
        best = trips if best is None else min(best, trips)
    return best


def _increment(body: Any, var: Any, index: int) -> float | None:
    """The constant the body adds to carried `var` (its output `index`), or None."""
    out = body.jaxpr.outvars[index]
    for b_eqn in body.jaxpr.eqns:
        if b_eqn.primitive.name == "add" and out in b_eqn.outvars and var in b_eqn.invars:
            other = b_eqn.invars[1] if b_eqn.invars[0] is var else b_eqn.invars[0]
            return _literal(other, dict(zip(body.jaxpr.constvars, body.consts)))
    return None


def _live_eqns(jaxpr: Any) -> list:
    """The equations whose results reach the outputs (or that have effects), in order: what
    the program computes once dead code (results nobody reads, often left by autodiff) is
    dropped, as XLA drops it."""
    live = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars if not isinstance(v, jcore.DropVar)):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return kept[::-1]


def _count(jaxpr: Any, consts: Mapping[Any, Any]) -> float:
    total = 0.0
    for eqn in _live_eqns(jaxpr):
        name = eqn.primitive.name
        if name == "scan":
            body = eqn.params["jaxpr"]
            total += eqn.params["length"] * _count(body.jaxpr, dict(zip(body.jaxpr.constvars, body.consts)))
        elif name == "while":
            cond, body = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
            trips = _while_trips(eqn, consts)
            trips = 1 if trips is None else trips
            total += trips * _count(body.jaxpr, dict(zip(body.jaxpr.constvars, body.consts)))
            total += (trips + 1) * _count(cond.jaxpr, dict(zip(cond.jaxpr.constvars, cond.consts)))
        elif name == "custom_linear_solve":  # runs its solve; matvec and the transposes are for autodiff
            solve = eqn.params["jaxprs"].solve
            total += _count(solve.jaxpr, dict(zip(solve.jaxpr.constvars, solve.consts)))
        elif name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name in _PRNG:
            total += _prng_flops(eqn)
        elif name in ("sort", "top_k"):
            total += _sort_flops(eqn)
        elif name in _REDUCTIONS:
            total += sum(_size(v.aval) for v in eqn.invars)
        elif name in _SCATTERS:
            total += _size(eqn.invars[-1].aval) if name not in ("scatter",) else 0.0
        elif name in _FREE:
            continue
        elif name in _FUSED:
            total += _FUSED[name] * _out_elements(eqn)
        elif name == "polynomial":  # Horner on (x, a_0..a_d): d multiply-adds per element
            total += 2 * (len(eqn.invars) - 2) * _out_elements(eqn)
        else:
            subs = sub_jaxprs(eqn.params)
            if subs:  # pjit, closed_call, custom_jvp/vjp, checkpoint, cond/switch (sum of branches)
                total += sum(_count(sub, dict(zip(sub.constvars, sub_consts))) for sub, sub_consts in subs)
            else:
                if name in _OUTSIDE:
                    _warn_uncounted(eqn)
                total += _out_elements(eqn)
    return total


def jaxpr_flops(closed: Any) -> float:
    """FLOPs of a `jax.make_jaxpr` result (a ClosedJaxpr), counted as the module docstring says."""
    return _count(closed.jaxpr, dict(zip(closed.jaxpr.constvars, closed.consts)))


def program_flops(fn: Callable, *args: Any) -> float:
    """FLOPs of `fn(*args)`: traced once (values ignored, shapes and dtypes used), never compiled."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args))


# -- the cache --------------------------------------------------------------------------------------
def _signature(args: Any) -> Hashable:
    """Tree structure, shapes and canonical dtypes (what tracing sees) of `args`, and JAX's settings
    that shape a trace (`hypergrad._compile.trace_settings()`): turning `jax_enable_x64` off makes a
    program's own draws and constants float32, which changes its count at the same argument types."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((np.shape(x), jax.dtypes.canonicalize_dtype(
        x.dtype if hasattr(x, "dtype") else jnp.result_type(x), allow_extended_dtype=True)) for x in leaves), \
        _compile.trace_settings()


class _Counts:
    """Counts per owner (an objective), held weakly on the owner; at most `MAX_ENTRIES` per owner.
    Thread-safe: one lock around each look-up, insertion and clear (never around a count), so a
    count evicted or cleared by another thread is a miss, counted again."""

    def __init__(self):
        self._tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.RLock()

    def get(self, owner: Any, key: Hashable) -> float | None:
        with self._lock:
            table = self._tables.get(owner)
            if table is None or key not in table:
                return None
            table.move_to_end(key)
            return table[key]

    def put(self, owner: Any, key: Hashable, value: float) -> float:
        with self._lock:
            table = self._tables.get(owner)
            if table is None:
                table = self._tables[owner] = collections.OrderedDict()
            table[key] = value
            while len(table) > MAX_ENTRIES:
                table.popitem(last=False)
        _compile.note_trace(owner)  # made from what the owner's functions read now (`hypergrad.store`)
        return value

    def get_or_count(self, owner: Any, key: Hashable, count: Callable[[], float]) -> float:
        value = self.get(owner, key)
        if value is not None:
            return value
        with _timed():
            value = float(count())
        return self.put(owner, key, value)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(t) for t in self._tables.values())

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()

    def drop(self, owner: Any) -> None:
        with self._lock:
            try:
                self._tables.pop(owner, None)
            except TypeError:  # not weakly referenceable: never an owner here
                pass


_counts = _Counts()
stats = {"counts": 0, "seconds": 0.0}
"""Programs counted (cache misses) and the seconds their tracing and counting took, since import."""


@contextlib.contextmanager
def _timed():
    """Adds one count, and the seconds its tracing and counting took, to `stats`."""
    began = time.perf_counter()
    yield
    stats["counts"] += 1
    stats["seconds"] += time.perf_counter() - began


# Inside `sharing_traces()`: (id of the objective, exact argument types) -> (objective, TracedRun);
# else None.
_local = threading.local()  # .held: this thread's traces kept by `sharing_traces`, or absent


def _held() -> dict | None:
    return getattr(_local, "held", None)


@contextlib.contextmanager
def sharing_traces():
    """A block within which `run_flops` keeps the trace of each run it counts and `traced_run`
    hands it out (once), so a run counted and then compiled is traced once. The kept traces (their
    jaxprs, constants included) are dropped when the outermost block ends. Per thread: a search
    on one thread and a fit compiling on another (a scikit-learn search's refit) keep their own."""
    if _held() is not None:  # nested: the outer block keeps them
        yield
        return
    _local.held = {}
    try:
        yield
    finally:
        _local.held = None


@_caches.register
def clear() -> None:
    """Empties the accounting cache (`hg.clear_caches()` calls it)."""
    _counts.clear()


_caches.register_owner(_counts.drop)  # one objective's counts (`hypergrad._caches.forget`)


# -- the library's two counts -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class TracedRun:
    """`objective.loss_and_scores(hparams, key, data)` traced once (`jax.make_jaxpr`): the program
    `run_flops` counts. Calling it evaluates the jaxpr (inside a trace: binds its equations again,
    without running the objective's Python), so a search can `vmap` and compile it.

    Attributes:
        jaxpr: the ClosedJaxpr of the flattened `(hparams, key, data)`.
        in_tree: the tree structure of `(hparams, key, data)` it was traced for.
        out_tree: the tree structure of `(loss, scores)`.
        score_names: the scores' names in the order `loss_and_scores` returned them (a flattened
            dict is sorted; this is the objective's own order).
        seconds: how long the trace took.
    """

    jaxpr: Any
    in_tree: Any
    out_tree: Any
    score_names: tuple[str, ...]
    seconds: float

    def __call__(self, hparams: HParams, key: Key, data: Any) -> tuple[Any, dict[str, Any]]:
        leaves, tree = jax.tree.flatten((dict(hparams), key, data))
        if tree != self.in_tree:
            raise ValueError(f"TracedRun called with arguments of structure {tree}; it was traced for {self.in_tree}")
        loss, scores = _evaluate(self.jaxpr, self.out_tree, leaves)
        return loss, {name: scores[name] for name in self.score_names}


def _evaluate(closed: Any, out_tree: Any, leaves: list) -> Any:
    """The ClosedJaxpr `closed` evaluated (inlined into the caller's trace) on the flat `leaves`, its
    outputs in the tree `out_tree`."""
    return jax.tree.unflatten(out_tree, jcore.jaxpr_as_fun(closed)(*leaves))


def _trace_run(objective: Any, args: tuple) -> TracedRun:
    names: list[str] = []

    def run(h, k, d):
        loss, scores = objective.loss_and_scores(h, k, d)
        names[:] = list(scores)
        return loss, scores

    began = time.perf_counter()
    with _compile.naming_missing_hparams(args[0]):  # a shaped hyperparameter read as a scalar named too
        closed, shapes = jax.make_jaxpr(run, return_shape=True)(*args)
    return TracedRun(closed, jax.tree.structure(args), jax.tree.structure(shapes), tuple(names),
                     time.perf_counter() - began)


def _exact_types(args: Any) -> Hashable:
    """Tree structure and each leaf's type as tracing sees it (shape, dtype, weak type)."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((aval.shape, aval.dtype, aval.weak_type) for aval in map(jax.typeof, leaves))


def _held_key(objective: Any, args: tuple) -> Hashable:
    # held with the objective itself, so the id stays its own; a trace made under other JAX settings
    # (`_compile.trace_settings()`) computes what those made of it, so it is not handed out
    return id(objective), _exact_types(args), _compile.trace_settings()


def run_flops(objective: Any, hparams: HParams, key: Key) -> float:
    """FLOPs of one training run and its scoring (validation and test losses and metrics):
    `objective.loss_and_scores`, what one search trial costs and the unit of every result.

    Inside `sharing_traces()` a count made now keeps its trace for `traced_run`.

    Raises:
        ValueError: for an `objective` that is not an `hg.Objective`, `hparams` that is not a dict
            (`as_hparams`'s message) or a `key` that is not a PRNG key, before anything is traced.
    """
    check_objective(objective)
    hparams = _hparams_dict(hparams)
    key = check_key(key)
    data = objective.problem.data
    args = (hparams, key, data)
    signature = ("run", _signature(args))
    value = _counts.get(objective, signature)
    if value is not None:
        return value
    traced, value = _trace_and_count(objective, args, signature)
    held = _held()
    if held is not None:
        held[_held_key(objective, args)] = (objective, traced)
    return value


def _hparams_dict(hparams: Any, argname: str = "hparams") -> dict:
    """`dict(hparams)`, refusing anything but a dict with the objective's own message
    (`hypergrad.objective.as_hparams`): a list such as [0.1] failed in `dict()` with "cannot convert
    dictionary update sequence element #0 to a sequence". The values are kept as given: converting
    them (as `as_hparams` does) would compile small eager programs for numpy or Python numbers,
    and change the weak types that `traced_run`'s held traces are keyed on."""
    if not isinstance(hparams, Mapping):
        as_hparams(hparams, argname)  # raises the ValueError naming argname and the dict form
    return dict(hparams)


def _trace_and_count(objective: Any, args: tuple, signature: Hashable) -> tuple[TracedRun, float]:
    """The run traced at the types of `args`, and its FLOPs, counted and cached under `signature`
    (one count in `stats`). The count is of a trace without placement: an argument placed on a mesh
    (a search's key on several devices) traces resharding and sums over no axes that one device does
    not, and the count, cached per signature (shapes and dtypes), would follow whichever call counted
    first. Cost: one more trace when an argument is placed on a mesh."""
    with _timed():
        traced = _trace_run(objective, args)
        unplaced = _unplaced(args)
        counted = traced if unplaced is args else _trace_run(objective, unplaced)
        value = _counts.put(objective, signature, jaxpr_flops(counted.jaxpr))
    return traced, value


def _unplaced(args: Any) -> Any:
    """`args` with each array placed on more than one device as a `jax.ShapeDtypeStruct` of its type
    (shape, dtype, weak type; no sharding); `args` itself when none is."""
    def on_mesh(x: Any) -> bool:
        return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1

    if not any(map(on_mesh, jax.tree.leaves(args))):
        return args
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=jax.typeof(x).weak_type)
                        if on_mesh(x) else x, args)


def traced_run(objective: Any, hparams: HParams, key: Key, data: Any, *, keep: bool = False) -> TracedRun:
    """The run `run_flops(objective, hparams, key)` counts, traced at the types of
    `(hparams, key, data)`: the trace `run_flops` made of it inside the current `sharing_traces()`
    block, if any (handed out once), else traced now (and counted, if `run_flops` has not counted
    it yet).

    `keep`: the trace stays held in the current block (made now, if none was) for the next
    caller at the same types, so a check that reads it and the program compiled from it later
    in the block (tune's warm-up search) share one trace; nothing held outside a block.

    Cost: nothing when held; else one trace of the objective (and a count of the jaxpr's
    equations on a count miss), no compilation. Memory: the jaxpr (its constants included), and
    with `keep` until the block ends.
    """
    args = (dict(hparams), key, data)
    held, name = _held(), _held_key(objective, args)
    found = None if held is None else (held.get(name) if keep else held.pop(name, None))
    if found is not None and found[0] is objective:
        return found[1]
    signature = ("run", _signature((dict(hparams), key, objective.problem.data)))
    if _counts.get(objective, signature) is not None:
        traced = _trace_run(objective, args)
    else:
        traced = _trace_and_count(objective, args, signature)[0]
    if keep and held is not None:
        held[name] = (objective, traced)
    return traced


def hypergradient_flops(objective: Any, method: Any, hparams: HParams, key: Key,
                        held: HParams | None = None) -> float:
    """FLOPs of one hypergradient of `method` on `objective`: the program
    `hypergrad.hypergradient.value_and_grad_fn(objective, method)`. For `hg.ES` and `hg.PES` the
    program is traced with its noise key an input and counted with that key derived from `key`
    (`perturbation_key`, as the method does given no noise key): the same equations, so the same
    count, and the trace an outer step given a noise key evaluates (`traced_hypergradient`).

    Args:
        held: hyperparameters held fixed, for the hypergradient of `objective.with_fixed(held)`.
            They enter the counted program as inputs, as they do the batched program of
            `hg.hybrid_search`, so a masked choice is counted with every branch (the sum of the
            branches of its `switch`, which is what the vmapped program computes). Closed over
            as constants, the index would let the count follow the option the held values pick,
            and each new `with_fixed` objective would miss the cache.

    Raises:
        ValueError: for an `objective` that is not an `hg.Objective`, a `method` that is not a
            method object (`hg.Reverse()`, not "reverse" or the class `hg.Reverse`), `hparams` or
            `held` that is not a dict, a `key` that is not a PRNG key, or a method that cannot run
            here (`method.check`, e.g. `hg.Reversible()` without float64), before anything is traced.
        TypeError: a `method` that cannot be hashed (a list or array field, a dataclass that is
            not frozen: `hypergrad._compile.check_hashable`), before anything is traced.
    """
    check_objective(objective)
    check_method(method)
    _compile.check_hashable(method)
    hparams = _hparams_dict(hparams)
    key = check_key(key)
    data = objective.problem.data
    args = (hparams, key, data) if held is None else (hparams, _hparams_dict(held, "held"), key, data)
    signature = ("hypergradient" if held is None else "hypergradient-held", method, _signature(args))
    if held is None and _counts.get(objective, signature) is None:  # checked once per count, as it is made
        method.check(objective, hparams)
    with _compile.naming_missing_hparams():
        return _counts.get_or_count(objective, signature, lambda: _count_hypergradient(objective, method, args))


NOISE_AS_INPUT = (ES, PES)
"""The methods (by exact type) whose hypergradient is traced with its noise key
an input (`hypergradient_flops`): their `differentiate` derives the key given none once, as
`perturbation_key(key)`, before anything reads it, so the count is the same either way. A method
of one's own (a subclass too) is traced as `hg.hypergradient` compiles it."""


def _noise_as_input(method: Any) -> bool:
    return type(method) in NOISE_AS_INPUT


def _hypergradient_program(objective: Any, method: Any, held: bool, noisy: bool) -> Callable:
    """`value_and_grad_fn(objective, method)` as a function of (hparams, held values (with `held`),
    key, data, noise key (with `noisy`)): the held values for `objective.with_fixed`, the noise key
    passed to `method.value_and_grad`; its output checked as `value_and_grad_fn` checks it."""

    def program(h, *rest):
        fixed, (k, d, *noise) = (rest[0], rest[1:]) if held else (None, rest)
        inner = objective if fixed is None else objective.with_fixed(fixed)
        if not noisy:
            return value_and_grad_fn(inner, method)(h, k, d)
        out = method.value_and_grad(inner, h, k, d, noise_key=noise[0],
                                    check_fold=lambda fold_out: check_method_output(method, h, fold_out, fold=True))
        return check_method_output(method, h, out)

    return program


def _aval(x: Any) -> tuple:
    """(shape, dtype) of an array, tracer or abstract value."""
    return tuple(x.shape), x.dtype


def _hypergradient_key(objective: Any, method: Any, args: tuple, held: bool) -> Hashable:
    return "hypergradient-held" if held else "hypergradient", method, *_held_key(objective, args)


def _count_hypergradient(objective: Any, method: Any, args: tuple) -> float:
    """FLOPs of the hypergradient at `args` = (hparams, key, data) or (hparams, held, key, data), as
    `program_flops` counts them; inside `sharing_traces()` its trace (ClosedJaxpr and output tree)
    is kept for `traced_hypergradient`, for a method in `NOISE_AS_INPUT` the trace with the noise key
    an input (the count then that of its jaxpr evaluated on `perturbation_key(key)`, a re-trace of
    the jaxpr alone)."""
    held, noisy = len(args) == 4, _noise_as_input(method)
    program = _hypergradient_program(objective, method, held, noisy)
    name = _hypergradient_key(objective, method, args, held)
    if not noisy:
        closed, shapes = jax.make_jaxpr(program, return_shape=True)(*args)
        counted = closed
    else:
        noise = jax.eval_shape(perturbation_key, args[-2])
        closed, shapes = jax.make_jaxpr(program, return_shape=True)(*args, noise)
        counted = jax.make_jaxpr(lambda *a: jcore.jaxpr_as_fun(closed)(
            *jax.tree.leaves((*a, perturbation_key(a[-2])))))(*args)
    kept = _held()
    if kept is not None:
        kept[name] = (objective, closed, jax.tree.structure(shapes))
    return jaxpr_flops(counted)


def traced_hypergradient(objective: Any, method: Any, hparams: HParams, key: Key, data: Any,
                         held: HParams | None = None, noise_key: Key | None = None
                         ) -> Callable[[HParams, Key, Any], Any] | None:
    """The program `hypergradient_flops(objective, method, hparams, key, held)` counted inside the
    current `sharing_traces()` block, at the types of `(hparams, key, data)` (and of `held`, the
    values held fixed, when given: hybrid_search's count), traced or concrete, as a function
    `(hparams, key, data) -> ((value, scores), grads)` that evaluates its jaxpr (handed out once;
    with `held`, on those held values; with `noise_key`, on that noise key), so an outer step that
    holds the hypergradient is traced without running the method's and objective's Python a second
    time: the same equations, so the same program and numbers as `method.value_and_grad(objective,
    hparams, key, data, noise_key=noise_key)` (of `objective.with_fixed(held)` with `held`). None
    when no such trace is held (outside a block, a count made earlier or at other types, a
    `noise_key` for a method not in `NOISE_AS_INPUT`, none for one in it): the caller traces the
    method itself. Cost: a dictionary look-up."""
    kept = _held()
    if kept is None or (noise_key is not None) != _noise_as_input(method):
        return None
    fixed = () if held is None else (dict(held),)
    noise = () if noise_key is None else (noise_key,)
    name = _hypergradient_key(objective, method, (dict(hparams), *fixed, key, data), held is not None)
    found = kept.get(name)
    if found is None or found[0] is not objective or (noise and _aval(found[1].in_avals[-1]) != _aval(noise[0])):
        return None
    kept.pop(name)
    closed, out_tree = found[1:]

    def replay(h: HParams, k: Key, d: Any) -> Any:
        return _evaluate(closed, out_tree, jax.tree.leaves((dict(h), *fixed, k, d, *noise)))

    return replay


# -- machine rates ------------------------------------------------------------------------------------
def matmul_flops_per_second(rows: int, inner: int, cols: int, *, batch: int = 1, repeats: int = 5) -> float:
    """Measured FLOP/s of a float32 (batch x) rows x inner @ inner x cols product on the default
    device: the best of `repeats` timed calls after one warm-up (2 * batch * rows * inner * cols
    FLOPs each). A large square product measures the machine's peak; a batch of small ones, the
    rate per-trial networks reach."""
    rng = np.random.default_rng(0)  # numpy: drawing with jax would compile two more programs
    a = jnp.asarray(rng.standard_normal((batch, rows, inner), np.float32))
    b = jnp.asarray(rng.standard_normal((batch, inner, cols), np.float32))
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * batch * rows * inner * cols / best
