"""Type aliases shared across hypergrad."""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any
"""Any JAX pytree: nested dicts, lists, tuples, NamedTuples, flax.nnx.State, ..."""

Params = PyTree
"""Model parameters: the pytree that the inner optimiser updates."""

HParams = dict[str, jax.Array]
"""Constrained hyperparameter values, keyed by name (a learning rate is 0.1, not its log)."""

Key = jax.Array
"""A JAX PRNG key."""

Scalar = jax.Array
"""A 0-d array."""

Batch = PyTree
"""A pytree of arrays whose leaves share a leading example axis."""
