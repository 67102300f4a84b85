"""Compiled programs on disk, keyed by the jaxpr they are made from, beside JAX's persistent
compilation cache: a later process then skips batching and lowering as well as compiling.

JAX's persistent cache is keyed by the lowered program (its StableHLO), so to find a program there
a process must still make it: for a search, vmap the traced run and lower it, which takes about
as long as tracing the run. Here the key is what the program is a function of:

- the traced jaxpr (its text, which names every operation, shape, dtype and parameter, nested
  jaxprs included, and the bytes of its constants and of every nested jaxpr's, which the text names
  without their values);
- what is made of it (`tag`, e.g. ("search", chunk size)) and the arguments' tree, shapes, dtypes
  and shardings;
- everything else that shapes a compiled program: JAX's and jaxlib's versions, JAX's
  configuration, the XLA_FLAGS environment variable, the backend and its devices, and hypergrad's
  own source (whose code turns the jaxpr into the program).

Equal keys mean equal programs; equal programs may still get different keys (a function's repr
in a jaxpr holds its address, so a jaxpr with a host callback never hits), and a miss costs the
usual path. Nothing
is written unless the persistent cache is on (`hg.use_compilation_cache`): one file per program
in its directory's `hypergrad-programs/` (the serialised executable, about the size of JAX's own
entry), written atomically. Like JAX's cache, the directory must be trusted: loading an
executable runs its code. Only a program XLA compiled in this process is written: on the CPU an
executable JAX loaded from its own cache does not serialise again. One process only (under
`jax.distributed` the programs span processes, and the store stays out of the way).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
from collections.abc import Callable
from typing import Any

import jax
import jaxlib
import numpy as np
from jax.experimental.serialize_executable import deserialize_and_load, serialize

from hypergrad._files import replaced_atomically
from hypergrad._jaxprs import sub_jaxprs

__all__ = ["directory", "digest", "key", "load", "store", "load_or_compile", "jax_cache_hits", "counts"]

SUBDIRECTORY = "hypergrad-programs"

_hits = [0]
_requests = [0]
_loads = [0]


def _count_hits(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _hits[0] += 1
    elif event == "/jax/compilation_cache/compile_requests_use_cache":
        _requests[0] += 1


jax.monitoring.register_event_listener(_count_hits)


def jax_cache_hits() -> int:
    """Programs this process has loaded from JAX's persistent cache so far."""
    return _hits[0]


def counts() -> dict[str, int]:
    """What this process's programs came from so far: `jax_requests`, programs JAX looked up in its
    persistent cache (every one it compiled while the cache was on, small eager ones included);
    `jax_hits`, those it loaded from there (the rest, `jax_requests - jax_hits`, XLA compiled);
    `store_loads`, programs loaded from this store (which JAX never saw). Differences of two calls
    say where one piece of work's programs came from (`hypergrad compare` reports them per strategy)."""
    return {"jax_requests": _requests[0], "jax_hits": _hits[0], "store_loads": _loads[0]}


def directory() -> str | None:
    """Where programs are stored: `hypergrad-programs/` in the persistent cache's directory, or
    None when that cache is off or several processes share the programs."""
    root = jax.config.jax_compilation_cache_dir
    if not root or not jax.config.jax_enable_compilation_cache or jax.process_count() > 1:
        return None
    return os.path.join(root, SUBDIRECTORY)


@functools.cache
def _source() -> bytes:
    """A digest of hypergrad's source files (read once per process)."""
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__))
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(os.path.relpath(os.path.join(folder, name), package).encode() + f.read())
    return digest.digest()


def _environment() -> bytes:
    """The key's part outside the program: versions, JAX's configuration as it is now (a setting
    changed mid-process changes the key), XLA_FLAGS, devices, and hypergrad's source."""
    config = sorted((name, repr(value)) for name, value in jax.config.values.items()
                    if name != "jax_compilation_cache_dir")
    devices = [(d.platform, d.device_kind, d.id) for d in jax.devices()]
    return _source() + repr((jax.__version__, jaxlib.__version__, config, os.environ.get("XLA_FLAGS"),
                             devices)).encode()


def _constants(closed: Any) -> list[Any]:
    """The constants of the ClosedJaxpr `closed` and of every closed jaxpr nested in its equations
    (a `jax.jit` inside the traced function closing over an array holds it there), in order: the
    jaxpr's text names a nested constant without its value."""
    out = list(closed.consts)
    stack = [closed.jaxpr]
    while stack:
        for eqn in stack.pop(0).eqns:
            for jaxpr, consts in sub_jaxprs(eqn.params):
                out.extend(consts)
                stack.append(jaxpr)
    return out


def digest(jaxpr: Any, tag: Any, args: Any) -> str:
    """What the program made as `tag` from the ClosedJaxpr `jaxpr` for `args` computes, as a hex
    digest: the jaxpr's text, its constants' bytes (nested ones included), `tag` and the arguments'
    tree, shapes, dtypes and shardings; without `key`'s environment, which is fixed within a process
    but for JAX's settings (turning `jax.log_compiles` on would change it). What keys programs in
    memory (`hypergrad.outer`). Cost: printing the jaxpr (milliseconds) and hashing its constants."""
    out = hashlib.sha256(str(jaxpr.jaxpr).encode())
    for const in _constants(jaxpr):
        is_key = jax.dtypes.issubdtype(jax.typeof(const).dtype, jax.dtypes.prng_key)
        array = np.asarray(jax.random.key_data(const) if is_key else const)
        out.update(repr((is_key, array.shape, array.dtype.str)).encode() + array.tobytes())
    leaves, tree = jax.tree.flatten(args)
    types = [(jax.typeof(x).shape, str(jax.typeof(x).dtype), repr(getattr(x, "sharding", None))) for x in leaves]
    out.update(repr((tag, str(tree), types)).encode())
    return out.hexdigest()


def key(jaxpr: Any, tag: Any, args: Any) -> str:
    """The store's key of the program made as `tag` from the ClosedJaxpr `jaxpr`, for `args`: its
    `digest` with the environment (`_environment`). Cost: `digest`'s."""
    return hashlib.sha256(_environment() + digest(jaxpr, tag, args).encode()).hexdigest()


def load(name: str) -> Any | None:
    """The program stored under key `name`, loaded; None when there is none or it cannot be read."""
    folder = directory()
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, name), "rb") as f:
            device_ids, (payload, in_tree, out_tree) = pickle.load(f)
        by_id = {d.id: d for d in jax.devices()}
        return deserialize_and_load(payload, in_tree, out_tree, execution_devices=[by_id[i] for i in device_ids])
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or foreign entry is a miss: compile instead
        return None


def store(name: str, executable: Any) -> None:
    """Writes `executable` under key `name` (atomically; nothing when the store is off or the
    executable cannot be serialised)."""
    folder = directory()
    if folder is None:
        return
    try:  # the devices it runs on, in order: loading on any others would run it sharded otherwise
        device_ids = [d.id for d in executable._executable._unloaded_executable.device_list]
        blob = pickle.dumps((device_ids, serialize(executable)))
    except Exception:  # noqa: BLE001 - a program that does not serialise is simply not stored
        return
    os.makedirs(folder, exist_ok=True)
    with contextlib.suppress(OSError), replaced_atomically(os.path.join(folder, name), binary=True) as f:
        f.write(blob)


def load_or_compile(name: str | None, compile_now: Callable[[], Any]) -> Any:
    """The program stored under key `name`, else `compile_now()`, stored under `name` when XLA
    compiled it in this process (not when JAX loaded it from its own cache: see the module
    docstring). `name` None: `compile_now()` alone."""
    executable = load(name) if name is not None else None
    if executable is not None:
        _loads[0] += 1
        return executable
    loaded_before = jax_cache_hits()
    executable = compile_now()
    if name is not None and jax_cache_hits() == loaded_before:
        store(name, executable)
    return executable
