"""One chunking and sharding path for everything vmapped over rows: search trials and the tuners
of a population. A batch of rows runs in padded chunks of one compiled program; each chunk's rows
are split evenly across the local devices (several GPUs, or CPU devices from
`hg.use_cpu_cores()`), with the data and key replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from hypergrad._types import PyTree

__all__ = ["DEFAULT_CHUNK", "balanced_chunk", "chunk_for", "shardings", "take_rows", "first_row", "place"]

DEFAULT_CHUNK = 64
"""Rows per vmapped call when the caller gives no chunk size."""


def balanced_chunk(num: int, chunk_size: int) -> int:
    """Rows per call: at most `chunk_size`, in as few calls as that allows, split evenly so the
    padding of the last call is under one row per call (72 rows at 64 run as 2 x 36, not 64 + 64)."""
    calls = -(-num // chunk_size)
    return -(-num // calls)


def chunk_for(num: int, chunk_size: int | None) -> int:
    """Rows per vmapped call: `min(chunk_size, num)`, or with chunk_size None a balanced chunk
    (`balanced_chunk`) rounded up to a multiple of the local devices, so it shards evenly."""
    if chunk_size is not None:
        return min(chunk_size, num)
    devices = jax.local_device_count()
    return -(-balanced_chunk(num, DEFAULT_CHUNK) // devices) * devices


def shardings(chunk: int) -> tuple[Any, Any] | tuple[None, None]:
    """(row-axis sharding, replicated sharding) over the local devices; one chunk's rows are split
    evenly across them. (None, None) with one device, or a chunk the devices do not divide: the
    default device."""
    devices = jax.local_devices()
    if len(devices) == 1 or chunk % len(devices):
        return None, None
    mesh = jax.sharding.Mesh(np.asarray(devices), ("trials",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("trials")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def place(tree: PyTree, sharding: Any) -> PyTree:
    """`tree` on `sharding`, or as it is when there is none (one device)."""
    return tree if sharding is None else jax.device_put(tree, sharding)


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
