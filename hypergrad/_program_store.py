"""Compiled programs on disk, keyed by the jaxpr they are made from, beside JAX's persistent
compilation cache: a later process then skips batching and lowering as well as compiling.

JAX's persistent cache is keyed by the lowered program (its StableHLO), so to find a program there
a process must still make it: for a search, vmap the traced run and lower it, which takes about
as long as tracing the run. Here the key is what the program is a function of:

- the traced jaxpr (its text, which names every operation, shape, dtype and parameter, nested
  jaxprs included, and the bytes of its constants and of every nested jaxpr's, and the values of
  its literals, which the text names without their values: with JAX's
  `jax_use_simplified_jaxpr_constants` on, a captured array is a literal, printed `[...]`);
- what is made of it (`tag`, e.g. ("search", chunk size)) and the arguments' tree, shapes, dtypes
  and shardings;
- everything else that shapes a compiled program: JAX's and jaxlib's versions, JAX's
  configuration, the XLA_FLAGS environment variable, the backend and its devices, the host CPU's
  instruction-set features (`host_cpu`), and hypergrad's own source (whose code turns the jaxpr
  into the program).

A parameter that holds Python code prints as a name alone (JAX masks the address in an object's
repr: `rule=<function rule at 0xXXXXXXXXXXXX>`), so the text cannot tell an edited function from
the old one. A jaxpr holding such a parameter gets no key, and its program is neither stored nor
loaded: a `custom_vmap` rule (which batching runs), a host callback (`pure_callback`,
`io_callback`, `jax.debug.callback`), `lax.reduce`'s computation. Only the rules that nothing
here runs are let through by name: the programs are made by batching and lowering the jaxpr,
never by differentiating it again, so `custom_jvp`'s and `custom_vjp`'s rules and a remat policy,
which only differentiation reads, cannot change them.

Equal keys mean equal programs; equal programs may still get different keys, and a miss costs
the usual path. Nothing
is written unless the persistent cache is on (`hg.use_compilation_cache`): one file per program
in its directory's `hypergrad-programs/` (the serialised executable, about the size of JAX's own
entry), written atomically. Like JAX's cache, the directory must be trusted: loading an
executable runs its code. Only a program XLA compiled in this process is written: on the CPU an
executable JAX loaded from its own cache serialises to one that does not load. So the store does
not fill for a program JAX's cache already holds: after hypergrad's source changes (an upgrade, a
local edit: a new key here, the same HLO for JAX) or another part of this key that JAX's lacks
changes, such a program is made and lowered in every process, as without the store, and loaded
from JAX's cache; deleting the cache folder lets both fill again. One process only (under
`jax.distributed` the programs span processes, and the store stays out of the way).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import pickle
import platform
import re
import types
from collections.abc import Callable
from typing import Any

import jax
import jaxlib
import numpy as np
from jax.experimental.serialize_executable import deserialize_and_load, serialize
from jax.extend import core as jcore

from hypergrad._files import replaced_atomically
from hypergrad._jaxprs import sub_jaxprs

__all__ = ["directory", "digest", "host_cpu", "key", "load", "store", "load_or_compile", "jax_cache_hits", "counts"]

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
    changed mid-process changes the key), XLA_FLAGS, devices, the host CPU (`host_cpu`), and
    hypergrad's source."""
    config = sorted((name, repr(value)) for name, value in jax.config.values.items()
                    if name != "jax_compilation_cache_dir")
    devices = [(d.platform, d.device_kind, d.id) for d in jax.devices()]
    return _source() + host_cpu() + repr((jax.__version__, jaxlib.__version__, config, os.environ.get("XLA_FLAGS"),
                                          devices)).encode()


@functools.cache
def host_cpu() -> bytes:
    """The host CPU's model and instruction-set features (Linux: `/proc/cpuinfo`'s first "model
    name" and "flags" / "Features" lines; elsewhere `platform.processor()`), with the machine type.
    XLA:CPU compiles for the host's features, and its loader refuses a program compiled for
    features this host lacks; a device kind is just "cpu". Without this in the key, machines of
    two CPU generations sharing a cache folder (a network home on a cluster) would each find the
    other's program, fail to load it, compile and overwrite it, in every process. Read once per
    process."""
    found = {}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "flags", "Features", "CPU part") and name not in found:
                    found[name] = value.strip()
                elif not line.strip() and found:  # the first processor's block ends
                    break
    return repr((platform.machine(), sorted(found.items()) or platform.processor())).encode()


# Parameters that hold Python functions (printed by name alone: JAX masks their addresses) but
# shape no program made here: the programs are made from a jaxpr by batching and lowering it, never
# by differentiating it again, and only differentiation reads these (the custom rules' calls are
# lowered from their `call_jaxpr`, a remat from its `jaxpr`).
_DIFFERENTIATION_ONLY = frozenset({("custom_jvp_call", "jvp_jaxpr_fun"), ("custom_jvp_call", "jvp_jaxpr_thunk"),
                                   ("custom_vjp_call", "fwd_jaxpr_thunk"), ("custom_vjp_call", "bwd"),
                                   ("custom_vjp_call", "out_trees"), ("remat2", "policy")})

_unkeyable = itertools.count()  # `digest`'s part for a jaxpr that holds an opaque parameter


def _contents(closed: Any) -> tuple[list[Any], list[str]]:
    """(the constants of the ClosedJaxpr `closed`, the opaque parameters of its equations).

    Constants, in order: its consts and those of every closed jaxpr nested in its equations (a
    `jax.jit` inside the traced function closing over an array holds it there), and the values of
    every literal an equation takes or a jaxpr returns (with `jax_use_simplified_jaxpr_constants`
    on, a captured array is such a literal, printed `[...]`, and `consts` is empty): the text names
    these without their values. Opaque parameters, as "primitive.name": values that print without
    their contents (a function, a `custom_vmap` rule, a host callback: JAX masks the address of
    their default repr, so the text holds a name alone), outside `_DIFFERENTIATION_ONLY`.
    Cost: one walk of the equations, nested ones included."""
    constants, opaque = list(closed.consts), []
    stack = [closed.jaxpr]
    while stack:
        jaxpr = stack.pop(0)
        for eqn in jaxpr.eqns:
            constants.extend(v.val for v in eqn.invars if isinstance(v, jcore.Literal))
            opaque.extend(f"{eqn.primitive.name}.{name}" for name in _opaque_params(eqn))
            for sub, consts in sub_jaxprs(eqn.params):
                constants.extend(consts)
                stack.append(sub)
        constants.extend(v.val for v in jaxpr.outvars if isinstance(v, jcore.Literal))
    return constants, opaque


def _opaque_params(eqn: Any) -> list[str]:
    """The names of `eqn`'s parameters whose printed form does not hold their contents, unless only
    differentiation reads them (`_DIFFERENTIATION_ONLY`)."""
    names = []
    for name, value in eqn.params.items():
        # a plain tuple's or list's elements each print; a NamedTuple prints as itself (a PRNG `impl`,
        # which holds functions but prints its name, 'fry', and is keyed by it): its repr is the test
        items = value if type(value) in (tuple, list) else (value,)
        if (eqn.primitive.name, name) not in _DIFFERENTIATION_ONLY and any(map(_opaque, items)):
            names.append(name)
    return names


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # what JAX's printer masks: the only trace of an object's identity


def _opaque(value: Any) -> bool:
    """Whether a parameter's value prints without its contents: a function (printed by its name) or
    anything whose text holds an address (a default repr: a `custom_vmap` rule, a host callback)."""
    if isinstance(value, (jcore.ClosedJaxpr, jcore.Jaxpr)):
        return False  # printed whole; its own equations are walked
    return isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)) \
        or _ADDRESS.search(str(value)) is not None


def _digest(jaxpr: Any, tag: Any, args: Any) -> tuple[str, list[str]]:
    """(`digest` without its part for opaque parameters, the opaque parameters)."""
    out = hashlib.sha256(str(jaxpr.jaxpr).encode())
    constants, opaque = _contents(jaxpr)
    for const in constants:
        is_key = jax.dtypes.issubdtype(jax.typeof(const).dtype, jax.dtypes.prng_key)
        array = np.asarray(jax.random.key_data(const) if is_key else const)
        out.update(repr((is_key, array.shape, array.dtype.str)).encode() + array.tobytes())
    leaves, tree = jax.tree.flatten(args)
    types = [(jax.typeof(x).shape, str(jax.typeof(x).dtype), repr(getattr(x, "sharding", None))) for x in leaves]
    out.update(repr((tag, str(tree), types)).encode())
    return out.hexdigest(), opaque


def digest(jaxpr: Any, tag: Any, args: Any) -> str:
    """What the program made as `tag` from the ClosedJaxpr `jaxpr` for `args` computes, as a hex
    digest: the jaxpr's text, its constants' bytes (nested ones and literals included, `_contents`),
    `tag` and the arguments' tree, shapes, dtypes and shardings; without `key`'s environment, which
    is fixed within a process but for JAX's settings (turning `jax.log_compiles` on would change
    it). What keys programs in memory (`hypergrad.outer`). A jaxpr holding an opaque parameter (a
    `custom_vmap` rule, a host callback: its text names the function, not its code) gets a digest
    of its own at every call, equal to no other: its program is then made again each time, never
    taken for another's. Cost: printing the jaxpr (milliseconds) and hashing its constants."""
    hexdigest, opaque = _digest(jaxpr, tag, args)
    if opaque:
        return hashlib.sha256(f"{hexdigest} unkeyable {os.getpid()} {next(_unkeyable)}".encode()).hexdigest()
    return hexdigest


def key(jaxpr: Any, tag: Any, args: Any) -> str | None:
    """The store's key of the program made as `tag` from the ClosedJaxpr `jaxpr`, for `args`: its
    `digest` with the environment (`_environment`); None (not stored, not loaded) when the jaxpr
    holds an opaque parameter, such as a `custom_vmap` rule or a host callback, whose code the key
    cannot see. Cost: `digest`'s."""
    hexdigest, opaque = _digest(jaxpr, tag, args)
    if opaque:
        return None
    return hashlib.sha256(_environment() + hexdigest.encode()).hexdigest()


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
    """Writes `executable` under key `name` (atomically; nothing when the store is off, the
    executable cannot be serialised or the folder cannot be made or written: never raises)."""
    folder = directory()
    if folder is None:
        return
    try:  # the devices it runs on, in order: loading on any others would run it sharded otherwise
        device_ids = [d.id for d in executable._executable._unloaded_executable.device_list]
        blob = pickle.dumps((device_ids, serialize(executable)))
    except Exception:  # noqa: BLE001 - a program that does not serialise is simply not stored
        return
    # a folder that cannot be made or written (a file in its place, another user's folder, a full
    # disk): the program is not stored, as JAX's own cache only warns there
    with contextlib.suppress(OSError):
        os.makedirs(folder, exist_ok=True)
        with replaced_atomically(os.path.join(folder, name), binary=True) as f:
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
