"""The product primitives behind `FeatureMajorDense` (hypergrad/problems/_matmul.py): values and
derivatives of every order equal the plain expressions (and finite differences), under vmap too,
and every product they differentiate into is a plain (untransposed) one."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import accounting
from hypergrad.problems import _matmul
from hypergrad.problems._matmul import matmul
from hypergrad.problems.mlp import affine


def _normal(key, *shapes):
    keys = jax.random.split(jax.random.key(key), len(shapes))
    return tuple(jax.random.normal(k, s, jnp.float64) for k, s in zip(keys, shapes))


def _net(mm, aff):
    """A two-layer network loss over (k1, b1, k2, b2) on data x: tanh between, squares at the end."""
    def loss(params, x):
        k1, b1, k2, b2 = params
        h = jnp.tanh(aff(k1, b1, x))
        return jnp.sum(jnp.sin(mm(k2, h) + b2[:, None]) ** 2)
    return loss


FAST = _net(lambda a, b: matmul(a, b), affine)
PLAIN = _net(lambda a, b: a @ b, lambda k, b, x: k @ x + b[:, None])


def _params(key=0):
    return _normal(key, (4, 3), (4,), (2, 4), (2,))


def _close(a, b, rtol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol * float(np.max(np.abs(v))))


def test_second_order_equals_finite_differences_of_the_first_derivative():
    params, (x,) = _params(), _normal(1, (3, 5))
    direction = _params(2)
    grad = jax.grad(FAST)
    # forward over reverse (jvp of the gradient) and reverse over reverse (gradient of <grad, v>)
    fwd = jax.jvp(lambda p: grad(p, x), (params,), (direction,))[1]
    rev = jax.grad(lambda p: sum(jnp.vdot(g, v) for g, v in zip(grad(p, x), direction)))(params)
    eps = 1e-5
    shifted = [grad(jax.tree.map(lambda p, v, s=s: p + s * eps * v, params, direction), x) for s in (1, -1)]
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), *shifted)
    _close(fwd, fd, 1e-7)
    _close(rev, fwd, 1e-12)  # the Hessian is symmetric: both are H v
    _close(fwd, jax.jvp(lambda p: jax.grad(PLAIN)(p, x), (params,), (direction,))[1], 1e-12)


def test_jvp_of_vjp_and_third_order_equal_the_plain_expression():
    params, (x,) = _params(), _normal(1, (3, 5))
    direction, ct = _params(3), _params(4)

    def vjp_of(loss):
        return lambda p: jax.vjp(lambda q: jax.grad(loss)(q, x), p)[1](ct)[0]
    _close(jax.jvp(vjp_of(FAST), (params,), (direction,))[1], jax.jvp(vjp_of(PLAIN), (params,), (direction,))[1],
           1e-12)
    third = lambda loss: jax.grad(lambda p: jnp.sum(vjp_of(loss)(p)[0] ** 2))(params)
    _close(third(FAST), third(PLAIN), 1e-12)


@pytest.mark.parametrize("axes", [(0, None), (None, 0), (0, 0)])
def test_vmapped_second_order_equals_the_plain_expression(axes):
    """Trials batched in the parameters, the data or both (then vmapped again, as folds x trials)."""
    params, (x,) = _params(), _normal(1, (3, 5))
    stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p, -p]), params)
    xs = jnp.stack([x, 2 * x, x - 1])
    p_in, x_in = (stacked if axes[0] == 0 else params), (xs if axes[1] == 0 else x)

    def hyper(loss):  # the gradient of a function of the gradient: what a hypergradient takes
        inner = lambda p, x: jnp.sum(jax.grad(loss)(p, x)[0] ** 2)
        return jax.vmap(jax.grad(inner), in_axes=axes)(p_in, x_in)
    _close(hyper(FAST), hyper(PLAIN), 1e-12)
    twice = lambda loss: jax.vmap(lambda s: jax.vmap(jax.grad(loss), in_axes=axes)(p_in, s * x_in))(jnp.arange(1.0, 3.0))
    _close(twice(FAST), twice(PLAIN), 1e-12)


_DOT = re.compile(r"stablehlo.dot_general %\S+, %\S+, (batching_dims = \[([\d, ]*)\] x \[([\d, ]*)\], )?"
                  r"contracting_dims = \[(\d+)\] x \[(\d+)\].*?: \(tensor<([\dx]+)x\w+>, tensor<([\dx]+)x\w+>\)")


def _products(fn, *args):
    """(lhs contracting dim, lhs rank, rhs contracting dim, number of batch dims) of every
    dot_general in the lowered program."""
    text = jax.jit(fn).lower(*args).as_text()
    found = [(int(m[3]), len(m[5].split("x")), int(m[4]), len(m[1].split(",")) if m[1] else 0)
             for m in _DOT.findall(text)]
    assert len(found) == text.count("stablehlo.dot_general"), "a product the pattern did not parse"
    return found


def test_every_product_of_a_vmapped_hypergradient_is_untransposed():
    """Reverse over reverse under vmap over trials (the population's program): every product
    contracts the lhs's last axis with the rhs's first non-batch axis. The plain expression
    does not (the check can fail)."""
    params, (x,) = _params(), _normal(1, (3, 5))
    stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p]), params)

    def hyper(loss):
        inner = lambda p: jnp.sum(jax.grad(loss)(p, x)[2] ** 2)
        return jax.vmap(jax.grad(inner))

    def canonical(products):
        return all(lc == rank - 1 and rc == nb for lc, rank, rc, nb in products)
    fast = _products(hyper(FAST), stacked)
    assert len(fast) >= 8 and canonical(fast), fast
    assert not canonical(_products(hyper(PLAIN), stacked))


def test_flop_accounting_sees_the_products():
    a, b = _normal(5, (3, 4), (4, 6))
    assert accounting.program_flops(matmul, a, b) == accounting.program_flops(jnp.matmul, a, b) == 2 * 3 * 4 * 6
    kernel, bias, x = _normal(6, (3, 4), (3,), (4, 6))
    assert accounting.program_flops(affine, kernel, bias, x) == 2 * 3 * 4 * 6 + 3 * 6


def test_bad_shapes_are_value_errors_naming_the_shapes():
    a, b = _normal(7, (3, 4), (5, 6))
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 6\)"):
        matmul(a, b)
    with pytest.raises(ValueError, match=r"affine\(kernel, bias, x\)"):
        affine(a, jnp.zeros(2), b)


def _plain_affine(kernel, bias, x):
    return kernel @ x + bias[..., None]


def test_a_bias_with_the_products_leading_axes_works_under_jit_vmap_and_grad():
    """kernel (m, k), bias (L, m), x (L, k, n): the batching rule kept that bias unbroadcast as if
    it were (m,) and then broadcast it wrongly ('Incompatible types for broadcasting')."""
    kernel, bias, x, xs = _normal(8, (2, 3), (5, 2), (5, 3, 4), (3, 5, 3, 4))
    for fn in (affine, jax.jit(affine)):
        np.testing.assert_allclose(fn(kernel, bias, x), _plain_affine(kernel, bias, x), rtol=1e-12)
    assert jax.eval_shape(affine, kernel, bias, x).shape == (5, 2, 4)
    for axes, args in [((None, None, 0), (kernel, bias, xs)), ((None, 0, None), (kernel, jnp.stack([bias] * 3), x)),
                       ((0, None, 0), (jnp.stack([kernel] * 3), bias, xs))]:
        np.testing.assert_allclose(jax.vmap(affine, axes)(*args), jax.vmap(_plain_affine, axes)(*args), rtol=1e-12)

    def loss(f):
        return lambda k, b, x: jnp.sum(jnp.sin(f(k, b, x)) ** 2)

    _close(jax.grad(loss(affine), (0, 1, 2))(kernel, bias, x), jax.grad(loss(_plain_affine), (0, 1, 2))(kernel, bias, x),
           1e-12)
    _close(jax.vmap(jax.grad(loss(affine), (0, 1)), (None, None, 0))(kernel, bias, xs),
           jax.vmap(jax.grad(loss(_plain_affine), (0, 1)), (None, None, 0))(kernel, bias, xs), 1e-12)


def test_a_bias_with_more_leading_axes_than_the_product_is_refused():
    """bias (L, m) with kernel (m, k) and x (k, n): the output has axes the product lacks, and the
    abstract shape dropped them (jit failed to lower, eval_shape was (m, n))."""
    kernel, bias, x = _normal(9, (2, 3), (5, 2), (3, 4))
    with pytest.raises(ValueError, match=r"the bias \(5, 2\) has leading axes \(5,\) that are not the product's \(\)"):
        affine(kernel, bias, x)
    with pytest.raises(ValueError, match=r"not the product's \(5,\)"):
        affine(kernel, jnp.zeros((4, 2)), jnp.zeros((5, 3, 4)))
    with pytest.raises(ValueError, match="kernel and x with equal leading axes"):
        affine(jnp.zeros((5, 2, 3)), jnp.zeros(2), jnp.zeros((4, 3, 4)))


def test_clear_caches_empties_the_product_jaxpr_caches():
    a, b = _normal(10, (3, 4), (4, 2))
    matmul(a, b)
    affine(a, jnp.zeros(3), b)
    assert _matmul._jaxpr.cache_info().currsize and _matmul._affine_jaxpr.cache_info().currsize
    hg.clear_caches()
    assert _matmul._jaxpr.cache_info().currsize == 0 and _matmul._affine_jaxpr.cache_info().currsize == 0
