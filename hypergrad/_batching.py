"""One chunking and sharding path for everything vmapped over rows: search trials and the tuners
of a population. A batch of rows runs in padded chunks of one compiled program; each chunk's rows
are split evenly across the devices (several GPUs, or CPU devices from `hg.use_cpu_cores()`), with
the data and key replicated.

Several processes (after `jax.distributed.initialize(...)`, JAX's multi-controller runtime): every
process runs the same calls in the same order with the same arguments; a chunk's rows are split
over the global mesh of all processes' devices, and its outputs are gathered to every process
(`to_host`), so each returns the same result. Only process 0 writes files (`is_writer`)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from hypergrad._types import PyTree

__all__ = ["DEFAULT_CHUNK", "balanced_chunk", "chunk_for", "even_chunk", "default_cap", "devices_for", "shardings",
           "take_rows", "first_row", "place", "to_host", "is_writer", "device_count", "from_process_0"]

DEFAULT_CHUNK = 64
"""Rows per vmapped call when the caller gives no chunk size."""


def balanced_chunk(num: int, chunk_size: int) -> int:
    """Rows per call: at most `chunk_size`, in as few calls as that allows, split evenly so the
    padding of the last call is under one row per call (72 rows at 64 run as 2 x 36, not 64 + 64)."""
    calls = -(-num // chunk_size)
    return -(-num // calls)


def is_writer() -> bool:
    """True in the process that writes logs and study files: process 0 of a multi-process run
    (`jax.distributed.initialize`), and always in a lone process."""
    return jax.process_index() == 0


def device_count() -> int:
    """Devices a chunk's rows are split over: every process's devices (the global mesh)."""
    return jax.device_count()


def chunk_for(num: int, chunk_size: int | None) -> int:
    """Rows per vmapped call: `chunk_size`, or `num` rounded up to a multiple of the devices of all
    processes when that is smaller (fewer rows than a chunk run in one call, padded so it shards
    evenly, never beyond `chunk_size`); with chunk_size None `even_chunk(num, DEFAULT_CHUNK)`: at
    most `DEFAULT_CHUNK` rows per call, as the README's Search bullet says. A given chunk that the
    devices do not divide is not padded past `chunk_size` (a memory bound): `shardings` splits it
    over the most devices that divide it."""
    devices = device_count()
    if chunk_size is not None:
        return min(chunk_size, -(-num // devices) * devices)
    return even_chunk(num, DEFAULT_CHUNK, devices)


def even_chunk(num: int, most: int, devices: int) -> int:
    """Rows per call of `num` rows on `devices` devices, at most `most` rows per call (or `devices`,
    when there are more devices than that): a balanced chunk (`balanced_chunk`) of at most
    `default_cap(devices, most)` rows, rounded up to a multiple of the devices, which can never
    pass that cap (itself such a multiple), so every call shards evenly and padding stays under one
    row per call and device. What a search runs with chunk_size None (`most` = `DEFAULT_CHUNK`),
    and what the CLI gives as the chunk of a search under its --chunk-size."""
    return -(-balanced_chunk(num, default_cap(devices, most)) // devices) * devices


def default_cap(devices: int, most: int = DEFAULT_CHUNK) -> int:
    """The most rows of a default chunk on `devices` devices: the largest multiple of `devices` not
    over `most` (63 on 3 devices for `DEFAULT_CHUNK`, where rounding 64 up would make 66), so each
    call shards evenly and stays within the bound; `devices` when there are more than `most` (one
    row per device). Cost: a count of rows just over the cap runs in one call more (64 rows on 3
    devices as 2 x 33, where rounding up made 1 x 66), its padding still under one row per call
    and device."""
    return max(devices, most // devices * devices)


def devices_for(chunk: int, devices: int) -> int:
    """How many of `devices` devices a chunk of `chunk` rows is split over: the most that divide it
    evenly (16 rows on 3 devices: 2; 4 tuners on 5 devices: 4), 1 when no more than one does. The
    rows and their padding stay as they are; only devices that would get a fraction of a row are
    left idle. Cost: a division per device."""
    return max(d for d in range(1, max(1, min(chunk, devices)) + 1) if chunk % d == 0)


def shardings(chunk: int) -> tuple[Any, Any] | tuple[None, None]:
    """(row-axis sharding, replicated sharding) of a chunk: its rows split evenly over the devices of
    all processes; else over this process's devices, all of them when they divide the chunk, or
    the most of them that do (`devices_for`: 16 rows on 3 devices over 2, a population of 4 on 5
    devices over 4), every process then computing every row; (None, None) with one device, or a
    chunk that no more than one local device divides (a prime number of rows, over fewer devices):
    the default device of each process. The trials do not change with the mesh (to the last bits
    of float arithmetic, as with any device count: README's Determinism)."""
    everywhere = jax.devices()
    if len(everywhere) > 1 and chunk % len(everywhere) == 0:
        return _mesh_shardings(everywhere)
    local = jax.local_devices()
    used = devices_for(chunk, len(local))
    return _mesh_shardings(local[:used]) if used > 1 else (None, None)


def _mesh_shardings(devices: list) -> tuple[Any, Any]:
    """(rows split over `devices`, replicated over them)."""
    mesh = jax.sharding.Mesh(np.asarray(devices), ("trials",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("trials")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _put(leaf: Any, sharding: Any) -> Any:
    """One leaf on `sharding`. A PRNG key goes as its raw data and is wrapped again there
    (`device_put` refuses a key array for devices of other processes)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = jax.device_put(np.asarray(jax.random.key_data(leaf)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    return jax.device_put(leaf, sharding)


def place(tree: PyTree, sharding: Any) -> PyTree:
    """`tree` on `sharding`, or as it is when there is none (one device). Every process must pass
    the same values (they are the rows of one global array)."""
    if sharding is None:
        return tree
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def from_process_0(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` on every process (a broadcast over the processes; `values` itself in a
    lone process): what every process must decide alike from numbers it measured alone, such as a
    structural plan's timings, so all run the same programs in the same order."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def _replicate(tree: PyTree) -> PyTree:
    return tree


@functools.lru_cache(maxsize=64)
def _gather_program(targets: tuple) -> Any:
    """The identity, jitted to put its arguments on the replicated shardings `targets` (one per
    leaf): an all-gather. Cached, so a chunk's gather is traced once."""
    return jax.jit(_replicate, out_shardings=list(targets))


def to_host(tree: PyTree) -> PyTree:
    """`tree` with every array split over several processes' devices gathered, whole, into a numpy
    array on every process (one collective program for all such leaves); other leaves as they are.
    Cost: one all-gather of those leaves over the processes' network; nothing in one process."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable]
    if not split:
        return tree
    if all(isinstance(leaves[i].sharding, jax.sharding.NamedSharding) for i in split):
        targets = tuple(leaves[i].sharding.update(spec=jax.sharding.PartitionSpec()) for i in split)
        whole = [np.asarray(a.addressable_data(0)) for a in _gather_program(targets)([leaves[i] for i in split])]
    else:  # another kind of sharding: JAX's own gather, one program per leaf
        whole = [np.asarray(multihost_utils.process_allgather(leaves[i], tiled=True)) for i in split]
    for i, array in zip(split, whole):
        leaves[i] = array
    return jax.tree.unflatten(treedef, leaves)


def first_row(batch: PyTree) -> PyTree:
    return jax.tree.map(lambda a: a[0], batch)


def take_rows(batch: PyTree, start: int, size: int) -> PyTree:
    """Rows start .. start+size of `batch`, padded with copies of row `start` to `size` rows."""
    def take(a):
        rows = a[start:start + size]
        if rows.shape[0] < size:
            pad = np.repeat(np.asarray(rows[:1]), size - rows.shape[0], axis=0)
            rows = np.concatenate([np.asarray(rows), pad], axis=0)
        return rows
    return jax.tree.map(take, batch)
