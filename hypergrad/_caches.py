"""The engine's caches, made explicit: every module-level cache registers its `clear` here, so
`hg.clear_caches()` empties them all (compiled programs, FLOP counts, search programs, measured
rates)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["register", "clear_caches"]

_clears: list[Callable[[], None]] = []


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Registers a cache's `clear()` with `clear_caches`; returns it (usable as a decorator)."""
    _clears.append(clear)
    return clear


def clear_caches() -> None:
    """Empties every cache of the engine: the next call of any strategy compiles and counts anew."""
    for clear in _clears:
        clear()
