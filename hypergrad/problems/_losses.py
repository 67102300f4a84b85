"""Loss pieces shared by the built-in problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, axis: int = -1) -> jax.Array:
    """Mean softmax cross-entropy; `axis` is the class axis of `logits`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis).mean()


def accuracy(logits: jax.Array, labels: jax.Array, axis: int = -1) -> jax.Array:
    """Share of examples whose largest logit (along the class `axis`) is the label, in the logits'
    float dtype (a mean of bools is float32 in JAX even with x64 on: 0.9 would read 0.90000004). The
    argmax (int64 under x64) is cast to the labels' dtype, so that no comparison promotes dtypes
    (refused under jax_numpy_dtype_promotion="strict")."""
    labels = jnp.asarray(labels)
    hits = jnp.argmax(logits, axis=axis).astype(labels.dtype) == labels
    return hits.astype(jnp.result_type(logits, float)).mean()


def l2_penalty(weights: jax.Array, weight_decay: jax.Array) -> jax.Array:
    """0.5 * sum(weight_decay * w**2), where weight_decay is a scalar or one value per input row.

    A per-feature penalty of shape (d,) weighs row i of a (d, ...) weight matrix by weight_decay[i].
    """
    weight_decay = jnp.asarray(weight_decay)
    if weight_decay.ndim == 0:  # no kernel-shaped broadcast copies for reverse mode to store
        return 0.5 * weight_decay * jnp.sum(jnp.square(weights))
    if weight_decay.ndim == 1:
        weight_decay = weight_decay.reshape((-1,) + (1,) * (weights.ndim - 1))
    return 0.5 * jnp.sum(weight_decay * jnp.square(weights))


def default_dtype():
    """float64 when jax_enable_x64 is on, float32 otherwise."""
    return jnp.zeros(()).dtype
