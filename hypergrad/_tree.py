"""Pytree helpers shared by several modules (the rest come from `optax.tree_utils`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["all_finite"]


def all_finite(tree: Any) -> jax.Array:
    """A boolean scalar: whether every element of every leaf of `tree` is finite."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
