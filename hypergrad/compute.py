"""Compute accounting: FLOPs of training runs and hypergradients, per step and in total.

XLA's cost analysis counts the body of a `while` loop (what `lax.scan` lowers to) once, whatever its
trip count. We therefore compile each program twice more with the training loop fully unrolled, at
horizons T=1 and T=2 (for counting only: without LLVM optimisation), and extrapolate linearly:

    flops(T) = flops(1) + (T - 1) * (flops(2) - flops(1))

which is exact for every program whose work is affine in T (the training loop, reverse mode with or
without checkpointing, forward mode, evaluation). The accounting costs two extra compilations per
program (about a third of the program's own compile time each), done once and cached per objective
and method.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import time

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._compile import _signature, flops_of, lower

__all__ = ["affine_flops", "cached_affine_flops", "cached_flops_per_step", "cached_flops_per_step_beside",
           "flops_per_step", "matmul_flops_per_second"]

_Work = TypeVar("_Work")


# Reference programs are compiled only to be counted, never run: skipping LLVM's optimisations
# makes compilation about 3x faster and leaves XLA's (HLO-level) cost analysis unchanged.
_COUNT_ONLY = {"xla_backend_optimization_level": 0}


def _reference_lowerings(build: Callable[[int], Callable], args: tuple) -> list[Any]:
    """The programs at T=1 and T=2, fully unrolled, lowered (traced) on this thread."""
    return [lower(build(steps), args) for steps in (1, 2)]


def _counted(lowerings: list[Any]) -> tuple[float, float]:
    """(flops outside the loop, flops per step) from the lowered T=1 and T=2 references."""
    one, two = (flops_of(lowered.compile(compiler_options=_COUNT_ONLY)) for lowered in lowerings)
    per_step = max(two - one, 0.0)
    return one - per_step, per_step


def flops_per_step(build: Callable[[int], Callable], args: tuple) -> tuple[float, float]:
    """(flops outside the loop, flops per step) of a program whose loop `build(T)` fully unrolls.

    Args:
        build: `T -> fn`, where `fn(*args)` runs the program with a horizon of T steps, unrolled.
        args: example arguments for `fn`.
    """
    return _counted(_reference_lowerings(build, args))


def affine_flops(build: Callable[[int], Callable], args: tuple, num_steps: int) -> float:
    """Total FLOPs of the program at horizon `num_steps`, by per-step accounting."""
    fixed, per_step = flops_per_step(build, args)
    return fixed + num_steps * per_step


_flops_cache: dict[Any, tuple[float, float]] = {}


def cached_flops_per_step(tag: Any, build: Callable[[int], Callable], args: tuple) -> tuple[float, float]:
    """`flops_per_step`, computed once per (tag, argument shapes)."""
    key = (tag, _signature(args))
    if key not in _flops_cache:
        _flops_cache[key] = flops_per_step(build, args)
    return _flops_cache[key]


def cached_flops_per_step_beside(tag: Any, build: Callable[[int], Callable], args: tuple,
                                 work: Callable[[], _Work]) -> tuple[tuple[float, float], _Work]:
    """`cached_flops_per_step(tag, build, args)` and `work()`, the reference programs compiling on a
    worker thread while `work` (typically compiling the program being accounted) runs on this one.

    The references are traced and lowered here first, so user code is never traced from two
    threads; only XLA's compilations, which release the GIL, overlap. On 2 CPU cores this cut the
    set-up of a cold search of the iris study from about 7 s to about 6 s (XLA's compiler uses
    more than one thread itself, so the overlap is partial).
    """
    key = (tag, _signature(args))
    if key in _flops_cache:
        return _flops_cache[key], work()
    lowerings = _reference_lowerings(build, args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        counts = pool.submit(_counted, lowerings)
        result = work()
        _flops_cache[key] = counts.result()
    return _flops_cache[key], result


def cached_affine_flops(tag: Any, build: Callable[[int], Callable], args: tuple, num_steps: int) -> float:
    """`affine_flops`, from per-step counts computed once per (tag, argument shapes)."""
    fixed, per_step = cached_flops_per_step(tag, build, args)
    return fixed + num_steps * per_step


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
