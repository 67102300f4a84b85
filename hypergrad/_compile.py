"""A cache of compiled programs, with compile counts and times, for reuse across calls.

`jax.jit` caches too, but it neither reports how long compilation took nor exposes the compiled
executable's cost analysis. Strategies therefore compile ahead of time through `compiled(...)`:
the first call with a given (tag, static configuration, argument shapes and dtypes) lowers and
compiles; later calls with new values reuse the executable and compile nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

__all__ = ["cached", "compiled", "lower", "stats", "flops_of"]

_MAX_ENTRIES = 256


@dataclasses.dataclass
class CompileStats:
    """Counts of compilations (cache misses) and the seconds they took, since import."""

    compilations: int = 0
    seconds: float = 0.0
    traces: collections.Counter = dataclasses.field(default_factory=collections.Counter)


_cache: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
stats = CompileStats()


def _signature(args: Any) -> Hashable:
    leaves, treedef = jax.tree.flatten(args)
    # an array's own dtype when it has one (result_type walks JAX's type lattice, ~30 us a leaf)
    return treedef, tuple((np.shape(x), x.dtype if isinstance(x, (np.ndarray, jax.Array)) else
                           jax.numpy.result_type(x)) for x in leaves)


def lower(fn: Callable, args: tuple) -> Any:
    """`jax.jit(fn).lower(*args)`, with a missing hyperparameter named in a `ValueError`."""
    try:
        return jax.jit(fn).lower(*args)
    except KeyError as err:  # the loss or optimiser read a hyperparameter nobody passed
        raise ValueError(
            f"the objective reads hyperparameter {err} that was not given; declare it in the "
            "hg.Space (or pass it in hparams), or remove it from the optimizer/loss"
        ) from err


def cached(tag: Hashable, args: tuple) -> Any | None:
    """The program `compiled(tag, ..., args)` would return without compiling, or None."""
    return _cache.get((tag, _signature(args)))


def compiled(tag: Hashable, make_fn: Callable[[], Callable], args: tuple) -> tuple[Any, float]:
    """The compiled program for `tag` at the shapes of `args`, and the seconds spent compiling now.

    Args:
        tag: hashable identity of the program (e.g. ("hypergradient", objective, method)).
        make_fn: builds the Python function to jit; called only on a cache miss.
        args: example arguments (values are ignored; shapes and dtypes key the cache).

    Returns:
        (executable, seconds): call the executable as `executable(*args)`; seconds is 0.0 when the
        program came from the cache.
    """
    key = (tag, _signature(args))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key], 0.0
    start = time.perf_counter()
    executable = lower(make_fn(), args).compile()
    seconds = time.perf_counter() - start
    stats.compilations += 1
    stats.seconds += seconds
    stats.traces[tag[0] if isinstance(tag, tuple) else tag] += 1
    _cache[key] = executable
    while len(_cache) > _MAX_ENTRIES:
        _cache.popitem(last=False)
    return executable, seconds


def flops_of(executable: Any) -> float:
    """FLOPs of a compiled program by XLA's cost analysis (loop bodies counted once)."""
    analysis = executable.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))
