"""`matmul(a, b)`: a matrix product whose derivatives of every order are plain (untransposed) products.

JAX differentiates `a @ b` into `g @ b.T` and `a.T @ g`; XLA folds those transposes into the
products, and XLA:CPU runs folded (transposed-operand) products, batched ones above all, on a slow
path (`FeatureMajorDense`). A `jax.custom_jvp` can choose the layouts of the first derivative's
products, but not of the second: reverse over reverse (a hypergradient through the training
gradient) transposes the first derivative's products with JAX's own rule, which folds the
transposes back in. `matmul` is instead a primitive whose transpose rule is itself: the cotangents
are `matmul(g, t(b))` and `matmul(t(a), g)`, where `t` is a transposed copy XLA cannot fold away
(behind `optimization_barrier`), so every product, at every order of differentiation and under
`jax.vmap` (a leading batch axis on either operand, e.g. the trials of a search), is a canonical
`(m, k) @ (k, n)` product or a batched one with the batch axes leading. A transposed copy costs one
pass over an operand; the products it serves are `k` times larger.

The primitive carries the jaxpr of its own computation (`lax.dot_general`) as a parameter, so
anything that reads jaxprs (FLOP accounting) sees the product it is. Rematerialisation policies
that match `lax.dot_general_p` (`jax.checkpoint_policies.dots_saveable`) do not see it; both
primitives set `is_matrix_product = True` for policies that look (`Reverse(store="dots")` does).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from hypergrad import _caches

__all__ = ["affine", "matmul"]


def _product(a, b):
    """`a @ b` for a (..., m, k), b (..., k, n): equal leading axes (a batched product), or b 2-D
    (a's leading axes folded into its rows: one product), or a 2-D (broadcast over b's)."""
    if b.ndim == 2:
        out = lax.dot_general(a.reshape(-1, a.shape[-1]), b, (((1,), (0,)), ((), ())))
        return out.reshape(a.shape[:-1] + b.shape[-1:])
    if a.ndim == 2:
        a = jnp.broadcast_to(a, b.shape[:-2] + a.shape)
    lead = tuple(range(a.ndim - 2))
    return lax.dot_general(a, b, (((a.ndim - 1,), (a.ndim - 2,)), (lead, lead)))


@functools.lru_cache(maxsize=512)
def _jaxpr(a_shape, b_shape, dtype):
    spec = [jax.ShapeDtypeStruct(s, dtype) for s in (a_shape, b_shape)]
    return jax.make_jaxpr(_product)(*spec)


_caches.register(_jaxpr.cache_clear)  # hg.clear_caches() empties it (it holds up to 512 jaxprs)


_matmul_p = Primitive("feature_major_matmul")
_matmul_p.is_matrix_product = True


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a @ b` for a (..., m, k) and b (..., k, n) with equal leading axes, or either operand 2-D.
    Same values as `a @ b`; its derivatives are plain products of transposed copies (above)."""
    dtype = jnp.result_type(a, b)
    a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2] or (
            a.ndim > 2 and b.ndim > 2 and a.shape[:-2] != b.shape[:-2]):
        raise ValueError(f"matmul(a, b): shapes {a.shape} and {b.shape} must be (..., m, k) and (..., k, n) "
                         "with equal leading axes, or one of them 2-D")
    return _matmul_p.bind(a, b, jaxpr=_jaxpr(a.shape, b.shape, np.dtype(dtype)))


def transposed_copy(x: jax.Array) -> jax.Array:
    """`x` with its last two axes swapped, materialised: `optimization_barrier` keeps XLA from
    folding the transpose into the product that reads it."""
    return lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


def _abstract(a, b, *, jaxpr):
    lead = a.shape[:-2] if a.ndim > 2 else b.shape[:-2]
    return jax.core.ShapedArray(lead + (a.shape[-2], b.shape[-1]), a.dtype)


def _sum_to(x, shape):
    """Sums the leading axes `x` has beyond `shape` (the cotangent of a broadcast operand)."""
    return x.sum(tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x


def _transpose_a(ct, a, b, *, jaxpr):
    return _sum_to(matmul(ct, transposed_copy(b)), a.aval.shape)


def _transpose_b(ct, a, b, *, jaxpr):
    return _sum_to(matmul(transposed_copy(a), ct), b.aval.shape)


def _aligned(args, dims, keep):
    """Batched operands with the mapped axis moved to the front; an unmapped operand kept as it is
    where `keep` says so (a 2-D matrix, folded or broadcast by `_product`), else broadcast over
    it; operands with fewer leading axes than the others get them (broadcast) after the first."""
    size = next(x.shape[d] for x, d in zip(args, dims) if d is not None)
    out = [jnp.moveaxis(x, d, 0) if d is not None else x if k else jnp.broadcast_to(x, (size,) + x.shape)
           for x, d, k in zip(args, dims, keep)]
    lead = max((x.shape[:-r] for x, r in zip(out, _RANKS[len(out)]) if x.ndim > r), key=len, default=())
    return [x if x.ndim == r else jnp.broadcast_to(
        x.reshape(x.shape[:1] + (1,) * (len(lead) + r - x.ndim) + x.shape[1:]), lead + x.shape[x.ndim - r:])
        for x, r in zip(out, _RANKS[len(out)])]


_RANKS = {2: (2, 2), 3: (2, 1, 2)}  # the unbatched rank of each operand: matmul (a, b), affine (kernel, bias, x)


def _batch(args, dims, *, jaxpr):
    a, b = args
    return matmul(*_aligned(args, dims, (a.ndim == 2, b.ndim == 2))), 0


_matmul_p.def_impl(lambda a, b, *, jaxpr: _product(a, b))
_matmul_p.def_abstract_eval(_abstract)
ad.defbilinear(_matmul_p, _transpose_a, _transpose_b)
batching.primitive_batchers[_matmul_p] = _batch
mlir.register_lowering(_matmul_p, mlir.lower_fun(lambda a, b, *, jaxpr: _product(a, b), multiple_results=False))


# -- affine: kernel @ x + bias, with the kernel's and the bias's cotangent in one product ------------
def _affine_product(kernel, bias, x):
    return _product(kernel, x) + bias[..., None]


@functools.lru_cache(maxsize=512)
def _affine_jaxpr(shapes, dtype):
    return jax.make_jaxpr(_affine_product)(*[jax.ShapeDtypeStruct(s, dtype) for s in shapes])


_caches.register(_affine_jaxpr.cache_clear)


_affine_p = Primitive("feature_major_affine")
_affine_p.is_matrix_product = True


def affine(kernel: jax.Array, bias: jax.Array, x: jax.Array) -> jax.Array:
    """`kernel @ x + bias[..., None]` (kernel (..., m, k), bias (..., m), x (..., k, n)); its
    derivative in (kernel, bias) transposes to ONE plain product `g @ copy([x; 1].T)` (the bias's
    cotangent is its last column: no row reduction), its derivative in x is `matmul(kernel, dx)`.

    Leading axes: kernel and x have equal ones or one of them is 2-D (as in `matmul`); the bias's
    leading axes are the product's or a trailing part of them (broadcast over the rest), never more
    (an output with more axes than the product would need its own abstract shape, batching and
    transposition rules: add them with `kernel` or `x` instead)."""
    dtype = jnp.result_type(kernel, bias, x)
    kernel, bias, x = (jnp.asarray(v, dtype) for v in (kernel, bias, x))
    lead = kernel.shape[:-2] if kernel.ndim > 2 else x.shape[:-2]
    if kernel.ndim < 2 or x.ndim < 2 or kernel.shape[-1] != x.shape[-2] or bias.ndim < 1 or (
            bias.shape[-1:] != kernel.shape[-2:-1]) or (kernel.ndim > 2 and x.ndim > 2 and kernel.shape[:-2] != x.shape[:-2]):
        raise ValueError(f"affine(kernel, bias, x): shapes {kernel.shape}, {bias.shape}, {x.shape} must be "
                         "(..., m, k), (..., m) and (..., k, n), kernel and x with equal leading axes or one 2-D")
    if bias.ndim - 1 > len(lead) or bias.shape[:-1] != lead[len(lead) - (bias.ndim - 1):]:
        raise ValueError(f"affine(kernel, bias, x): the bias {bias.shape} has leading axes {bias.shape[:-1]} that are "
                         f"not the product's {lead} (or a trailing part of them); give kernel or x those axes "
                         "(e.g. jnp.broadcast_to(kernel, bias.shape[:-1] + kernel.shape))")
    shapes = (kernel.shape, bias.shape, x.shape)
    return _affine_p.bind(kernel, bias, x, jaxpr=_affine_jaxpr(shapes, np.dtype(dtype)))


def _affine_jvp(primals, tangents, *, jaxpr):
    kernel, bias, x = primals
    d_kernel, d_bias, d_x = tangents
    out = _affine_p.bind(kernel, bias, x, jaxpr=jaxpr)
    d_out = None
    if not (type(d_kernel) is ad.Zero and type(d_bias) is ad.Zero):
        d_out = affine(ad.instantiate_zeros(d_kernel), ad.instantiate_zeros(d_bias), x)
    if type(d_x) is not ad.Zero:  # the first layer's input is data: no tangent, no product
        d_in = matmul(kernel, d_x)
        d_out = d_in if d_out is None else d_out + d_in
    return out, (ad.Zero.from_primal_value(out) if d_out is None else d_out)


def _affine_transpose(ct, kernel, bias, x, *, jaxpr):
    if ad.is_undefined_primal(x):
        raise ValueError("affine is linear in (kernel, bias) for a known x, or in x through matmul")
    if type(ct) is ad.Zero:
        return [None, None, None]
    x_ones = jnp.concatenate([x, jnp.ones(x.shape[:-2] + (1, x.shape[-1]), x.dtype)], axis=-2)
    both = matmul(ct, transposed_copy(x_ones))  # (..., m, k + 1): [d kernel | d bias]
    ct_kernel = _sum_to(both[..., :-1], kernel.aval.shape) if ad.is_undefined_primal(kernel) else None
    ct_bias = _sum_to(both[..., -1], bias.aval.shape) if ad.is_undefined_primal(bias) else None
    return [ct_kernel, ct_bias, None]


def _affine_batch(args, dims, *, jaxpr):
    kernel, bias, x = args
    # kernel and bias kept unbroadcast only when both are unbatched and plain (m, k) and (m,)
    both_unmapped = dims[0] is None and dims[1] is None and kernel.ndim == 2 and bias.ndim == 1
    return affine(*_aligned(args, dims, (both_unmapped, both_unmapped, x.ndim == 2))), 0


_affine_p.def_impl(lambda kernel, bias, x, *, jaxpr: _affine_product(kernel, bias, x))
_affine_p.def_abstract_eval(lambda kernel, bias, x, *, jaxpr: _abstract(kernel, x, jaxpr=jaxpr))
ad.primitive_jvps[_affine_p] = _affine_jvp
ad.primitive_transposes[_affine_p] = _affine_transpose
batching.primitive_batchers[_affine_p] = _affine_batch
mlir.register_lowering(_affine_p, mlir.lower_fun(lambda kernel, bias, x, *, jaxpr: _affine_product(kernel, bias, x),
                                                 multiple_results=False))
