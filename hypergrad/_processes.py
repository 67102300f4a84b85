"""Several processes making one call (`jax.distributed`): every process must make the same call, or
the programs they run differ and a collective waits for ever (or gloo aborts with a "collective
mismatch"). `check_processes_agree` compares the calls' descriptions across processes before
anything runs, and refuses a difference on every process, naming it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["check_processes_agree"]

PARTS = ("kind", "space", "objective", "key")  # a description's parts compared whole; its arguments one by one
_DIGEST_BYTES = 8
_ARGUMENT_SLOTS = 24  # arguments compared one by one; any further ones share the last slot


def check_processes_agree(describe: Callable[[], dict[str, Any]], what: str) -> None:
    """Raises `ValueError` on every process when the processes' calls differ: `describe()` is this
    call's description as a stored study's fingerprint gives it (`hypergrad.store.fingerprint`: kind,
    space, objective with its functions and data, key, the arguments that change results). Every
    process must call it at the same point. Nothing in a lone process.

    Cost, with several processes: the description (the objective's data hashed on the host) and one
    all-gather of a few hundred bytes, which is also a barrier. A description too large to make (a
    `ValueError` from `describe`) is not compared, on any process."""
    if jax.process_count() == 1:
        return
    try:
        described = describe()
    except ValueError:
        described = None
    sent = _digests(described)
    got = np.asarray(multihost_utils.process_allgather(sent), np.uint8).reshape(jax.process_count(), -1)
    differing = {p: _differences(got[0], got[p], described) for p in range(1, len(got))
                 if not np.array_equal(got[p], got[0])}
    if differing:
        said = "; ".join(f"process {p}'s call differs from process 0's in {', '.join(parts)}"
                         for p, parts in differing.items())
        raise ValueError(
            f"several processes made different calls of {what}: {said}. Every process must "
            "make the same call (the same objective, data, space, key and arguments), or they run different "
            "programs and wait for each other for ever: load the same data in each, and seed the key the same "
            "(not with jax.process_index())")


def _digest(value: Any) -> np.ndarray:
    text = json.dumps(value, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha1(text).digest()[:_DIGEST_BYTES], np.uint8)


def _digests(described: dict[str, Any] | None) -> np.ndarray:
    """The description's parts and each of its arguments (sorted by name), digested; zeros for none."""
    slots = np.zeros((len(PARTS) + _ARGUMENT_SLOTS, _DIGEST_BYTES), np.uint8)
    if described is None:
        return slots.reshape(-1)
    for i, part in enumerate(PARTS):
        slots[i] = _digest(described.get(part))
    arguments = sorted(described.get("arguments", {}).items())
    for i, (name, value) in enumerate(arguments[:_ARGUMENT_SLOTS - 1]):
        slots[len(PARTS) + i] = _digest([name, value])
    if len(arguments) >= _ARGUMENT_SLOTS:
        slots[-1] = _digest(arguments[_ARGUMENT_SLOTS - 1:])
    return slots.reshape(-1)


def _differences(first: np.ndarray, other: np.ndarray, described: dict[str, Any] | None) -> list[str]:
    """The names of the parts whose digests differ (arguments by name, as this process's call names them)."""
    first, other = first.reshape(-1, _DIGEST_BYTES), other.reshape(-1, _DIGEST_BYTES)
    arguments = sorted((described or {}).get("arguments", {}))
    names = [*PARTS, *(f"arguments.{name}" for name in arguments[:_ARGUMENT_SLOTS - 1])]
    return [names[i] if i < len(names) else "arguments" for i in range(len(first))
            if not np.array_equal(first[i], other[i])]
