"""The engine's caches, made explicit: every module-level cache registers its `clear` here, so
`hg.clear_caches()` empties them all (compiled programs, FLOP counts, search programs, measured
rates). `hg.use_compilation_cache()` turns on the one cache that outlives a process, JAX's
persistent compilation cache on disk; only a call to it writes there."""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
from jax.experimental.compilation_cache import compilation_cache

__all__ = ["register", "clear_caches", "use_compilation_cache", "default_compilation_cache_dir", "ENV_VAR"]

_clears: list[Callable[[], None]] = []


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Registers a cache's `clear()` with `clear_caches`; returns it (usable as a decorator)."""
    _clears.append(clear)
    return clear


def clear_caches() -> None:
    """Empties every cache of the engine: the next call of any strategy compiles and counts anew."""
    for clear in _clears:
        clear()


ENV_VAR = "HYPERGRAD_COMPILATION_CACHE"
"""Moves the persistent compilation cache (a directory) or turns it off (0, off, false, no, none,
or empty) wherever `use_compilation_cache()` is called without a path."""

_OFF = {"", "0", "off", "false", "no", "none"}


def default_compilation_cache_dir() -> str:
    """`$XDG_CACHE_HOME/hypergrad/jax`, or `~/.cache/hypergrad/jax` without XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hypergrad", "jax")


def use_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so a program compiled once on this machine is
    loaded, not compiled, by every later process (a second `hypergrad compare`, a rerun study).

    The library never calls this itself and writes nothing unless it is called: the `hypergrad`
    command, `make demo`, the experiments and the benchmarks call it. Every program is cached,
    however quick to compile (JAX's own thresholds would skip programs compiled in under a second,
    which are most of a small problem's). Call it before the first compilation; a later call
    switches directory for the programs compiled after it.

    Args:
        path: the cache directory (created if missing). None: the directory named by the
            `HYPERGRAD_COMPILATION_CACHE` environment variable, where `0`/`off`/`false`/`no`/`none`
            turn the cache off instead; without that variable `$XDG_CACHE_HOME/hypergrad/jax`
            (`~/.cache/hypergrad/jax`).

    Returns:
        The directory in use, or None when the environment variable turned the cache off (JAX's
        settings are then left as they were).

    Raises:
        ValueError: for a `path` (or environment variable) that is not a path, names a file or
            lies under one, cannot be created, or exists but cannot be written in (another user's
            folder, a read-only mount); JAX's settings are then left as they were.
    """
    given = f"use_compilation_cache(path={path!r})"
    if path is None:
        setting = os.environ.get(ENV_VAR)
        if setting is not None and setting.strip().lower() in _OFF:
            return None
        given = f"{ENV_VAR}={setting!r}"
        path = setting if setting is not None else default_compilation_cache_dir()
    path = _created_folder(path, given)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # every entry, however small
    # JAX decides once per process whether the cache is in use, at its first compilation: reset that
    # decision so a call after some compilation still takes effect.
    compilation_cache.reset_cache()
    return path


def _created_folder(path: object, given: str) -> str:
    """`path` made absolute (`~` expanded) and created if missing; `ValueError` naming `given` (the
    argument or environment variable it came from) for a non-path, a file, a folder under a file,
    one that cannot be created (no write permission), or an existing one this user cannot write in
    (`os.access`: a folder of another user's, a read-only mount)."""
    try:
        path = os.path.abspath(os.path.expanduser(os.fsdecode(path)))
    except TypeError:
        raise ValueError(f"{given} must be the path of a folder (a str or os.PathLike), or None for the "
                         "default folder") from None
    existing = path
    while not os.path.exists(existing):  # the root exists, so this ends
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"lies under {existing!r}, which is a file"
        raise ValueError(f"{given} {where}; give a folder (created if missing) for the compiled programs, "
                         "e.g. a new folder beside that file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{given}: the folder cannot be created ({err.strerror}); give a folder you can "
                         "write") from err
    if not os.access(path, os.W_OK | os.X_OK):  # an existing folder another user owns, a read-only mount
        raise ValueError(f"{given}: the folder {path!r} exists but this user cannot write in it; give a folder "
                         f"you can write, or turn the cache off ({ENV_VAR}=0)")
    return path
