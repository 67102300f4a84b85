"""The engine's caches, made explicit: every module-level cache registers its `clear` here, so
`hg.clear_caches()` empties them all (compiled programs, FLOP counts, search programs, measured
rates); every cache held per objective also registers a `drop(owner)`, so `forget(owner)` empties
one objective's entries and leaves every other's. `hg.use_compilation_cache()` turns on the one
cache that outlives a process, JAX's persistent compilation cache on disk; only a call to it
writes there."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache

from hypergrad._checks import users_stacklevel

__all__ = ["register", "register_owner", "register_table", "forget", "clear_caches", "use_compilation_cache",
           "default_compilation_cache_dir", "user_cache_dir", "ENV_VAR"]

_clears: list[Callable[[], None]] = []
_drops: list[Callable[[Any], None]] = []


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Registers a cache's `clear()` with `clear_caches`; returns it (usable as a decorator)."""
    _clears.append(clear)
    return clear


def register_owner(drop: Callable[[Any], None]) -> Callable[[Any], None]:
    """Registers a per-objective cache's `drop(owner)` (empties that owner's entries, a no-op for an
    owner it holds nothing of) with `forget`; returns it (usable as a decorator)."""
    _drops.append(drop)
    return drop


def register_table(table: Any) -> Any:
    """Registers a weak dictionary keyed by objective: `clear_caches` empties it, `forget(owner)` drops
    `owner`'s entry; returns it."""
    register(table.clear)

    @register_owner
    def drop(owner: Any) -> None:
        try:
            table.pop(owner, None)
        except TypeError:  # not weakly referenceable: never a key
            pass

    return table


def forget(owner: Any) -> None:
    """Empties the entries of one objective (or `hg.Structured` family: with each objective it built,
    and the family's built objectives themselves, so it calls `build` again) from every cache held per
    objective: its compiled programs, `jax.jit` wrappers, FLOP counts, checked shapes and unread
    names. Every other objective's programs stay; so do the caches not held per objective (measured
    rates, programs keyed on a space or a jaxpr's content). The next call on it traces and compiles
    anew, reading the values its functions read as they are now. Cost: a pass over the cached
    programs' keys (at most `hypergrad._compile.MAX_ENTRIES`)."""
    for drop in _drops:
        drop(owner)


def clear_caches() -> None:
    """Empties every cache of the engine: the next call of any strategy compiles and counts anew.

    Programs are cached per objective object and keyed on the arguments' types, not on the values
    its functions read outside their arguments (a module-level value, a closed-over dict): after
    editing such a value, a call without `storage=` reuses the program traced before the edit, as
    `jax.jit` does. Call this (or build the objective again) to compute with the edited value; it
    also empties the objectives each `hg.Structured` family built, so `build` is called again. A
    call with `storage=` and `study=` forgets its objective itself (`forget`: that objective's
    entries, or a family's and its built objectives', every other objective's kept) when the
    objective's description (its study fingerprint's) differs from the one its programs were traced
    under (`hypergrad.store.studying`).

    Memory: this drops hypergrad's references to its programs; it does not empty JAX's own caches,
    and not all of those are bounded: JAX's trace cache (`trace_to_jaxpr` in JAX's partial_eval)
    keeps a jaxpr of each of jax.numpy's functions (`jnp.multiply`, `jnp.where`, `jax.nn.relu`, ...)
    at each argument shape it has met, without limit, for the life of the process. A long session
    that traces at many new shapes (a sweep over num_steps, data shapes or layer sizes; scikit-learn
    fits of new structures) grows by tens of entries per new program however often it calls this;
    only `jax.clear_caches()` empties that cache (it also drops JAX's compiled executables, so every
    jitted function compiles again on its next call)."""
    for clear in _clears:
        clear()


ENV_VAR = "HYPERGRAD_COMPILATION_CACHE"
"""Moves the persistent compilation cache (a directory) or turns it off (0, off, false, no, none,
or empty) wherever `use_compilation_cache()` is called without a path."""

_OFF = {"", "0", "off", "false", "no", "none"}


def user_cache_dir() -> str | None:
    """The user's cache folder, shared by every cache of hypergrad (compiled programs, pretrained
    models): `$XDG_CACHE_HOME` when it is an absolute path (a leading `~` expanded), else
    `~/.cache`. A relative `$XDG_CACHE_HOME` is ignored, as the XDG specification says (it would
    put a cache in every working directory). None when no home folder can be found (HOME unset
    and no password entry for this user, where `~` cannot be expanded): never a path relative to
    the working directory, such as a folder literally named `~`."""
    xdg = os.path.expanduser(os.environ.get("XDG_CACHE_HOME", ""))
    if os.path.isabs(xdg):
        return xdg
    home = os.path.expanduser("~")
    return os.path.join(home, ".cache") if os.path.isabs(home) else None


def default_compilation_cache_dir() -> str | None:
    """`$XDG_CACHE_HOME/hypergrad/jax`, or `~/.cache/hypergrad/jax` (`user_cache_dir`); None when no
    home folder can be found."""
    base = user_cache_dir()
    return None if base is None else os.path.join(base, "hypergrad", "jax")


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
            turn the cache off instead; without that variable the default folder
            `$XDG_CACHE_HOME/hypergrad/jax` (`~/.cache/hypergrad/jax`, `user_cache_dir`).

    Returns:
        The directory in use, or None when the cache is off (JAX's settings are then left as they
        were): the environment variable turned it off, or, with neither `path` nor the variable,
        the default folder cannot be used (no home folder, a read-only home), which a
        `UserWarning` names with how to set one: the cache only saves compilation time.

    Raises:
        ValueError: for a `path` (or environment variable) that is not a path, names a file or
            lies under one, starts with a `~` that no home folder expands, cannot be created, or
            exists but cannot be written in (another user's folder, a read-only mount); JAX's
            settings are then left as they were.
    """
    given = f"use_compilation_cache(path={path!r})"
    if path is None:
        setting = os.environ.get(ENV_VAR)
        if setting is None:
            return _use_the_default_folder()
        if setting.strip().lower() in _OFF:
            return None
        given, path = f"{ENV_VAR}={setting!r}", setting
    return _turned_on(_created_folder(path, given))


def _use_the_default_folder() -> str | None:
    """`use_compilation_cache()` with no setting: the default folder, or None and one `UserWarning`
    naming it (or the missing home folder) and how to choose one when it cannot be used."""
    default = default_compilation_cache_dir()
    if default is None:
        why = "no home folder was found for its default folder (HOME is unset and this user has no password entry)"
    else:
        trouble = _folder_trouble(default)
        if trouble is None:
            return _turned_on(default)
        why = f"its default folder {default!r} {trouble}"
    warnings.warn(f"the persistent compilation cache is off: {why}; set {ENV_VAR} to a folder you can write to keep "
                  f"compiled programs across processes (or {ENV_VAR}=0 to silence this)", UserWarning,
                  stacklevel=users_stacklevel())
    return None


def _turned_on(path: str) -> str:
    """Points JAX's persistent compilation cache at the folder `path`; returns it."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # every entry, however small
    # JAX decides once per process whether the cache is in use, at its first compilation: reset that
    # decision so a call after some compilation still takes effect.
    compilation_cache.reset_cache()
    return path


def _created_folder(path: object, given: str) -> str:
    """`path` made absolute (`~` expanded) and created if missing; `ValueError` naming `given` (the
    argument or environment variable it came from) for a non-path, a `~` no home folder expands, or a
    folder `_folder_trouble` finds unusable."""
    try:
        path = os.path.expanduser(os.fsdecode(path))
    except TypeError:
        raise ValueError(f"{given} must be the path of a folder (a str or os.PathLike), or None for the "
                         "default folder") from None
    if path.startswith("~"):  # expanduser found no home: never a folder named '~' in the working directory
        raise ValueError(f"{given}: no home folder to expand '~' in (HOME is unset and this user has no password "
                         "entry); give an absolute folder")
    path = os.path.abspath(path)
    trouble = _folder_trouble(path)
    if trouble is None:
        return path
    if trouble.endswith("is a file"):
        raise ValueError(f"{given} {trouble}; give a folder (created if missing) for the compiled programs, "
                         "e.g. a new folder beside that file")
    advice = ""
    if "cannot write" in trouble:  # the variable is read only without a path: name it only where it gave the folder
        advice = (f", or turn the cache off ({ENV_VAR}=0)" if given.startswith(ENV_VAR) else
                  f", or call use_compilation_cache() without a path (the folder {ENV_VAR} names, or the default "
                  "one), or not at all (the cache stays off)")
    raise ValueError(f"{given}: the folder {path!r} {trouble}; give a folder you can write{advice}")


def _folder_trouble(path: str) -> str | None:
    """None once the absolute folder `path` exists (created if missing, with its parents) and this
    user can write in it; otherwise why not, as words that follow the folder's name: it "is a file",
    "lies under '...', which is a file", "cannot be created (<the system's reason>)", or "exists but
    this user cannot write in it" (`os.access`: a folder of another user's, a read-only mount)."""
    existing = path
    while not os.path.exists(existing):  # the root exists, so this ends
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return "is a file" if existing == path else f"lies under {existing!r}, which is a file"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        return f"cannot be created ({err.strerror})"
    if not os.access(path, os.W_OK | os.X_OK):  # an existing folder another user owns, a read-only mount
        return "exists but this user cannot write in it"
    return None
