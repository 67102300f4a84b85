"""Primitives that newer JAX emits in place of older operations (`unstack`, `one_minus_square`,
`fma`, `fmuladd`, `polynomial`, the layout and sharding casts) are charged as the operations they
replace, so one program counts the same on either JAX. Each was charged 1 FLOP per output element
by the fallback rule: unpacking an array counted it as arithmetic (a (2, n) array unpacked and
summed counted 4n + 1 instead of 2n + 1 on jax 0.12), a degree-d `jnp.polyval` d times too little,
and tanh's derivative 2 too little per element. Each primitive is built directly where the
installed JAX has it and skipped where it does not."""

import importlib

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from hypergrad.accounting import jaxpr_flops, program_flops

N = 12


def _lax(name):
    """`jax.lax.<name>`, or a skip on a JAX without it."""
    if not hasattr(lax, name):
        pytest.skip(f"jax {jax.__version__} has no lax.{name}")
    return getattr(lax, name)


def _primitive(module, name):
    """The primitive object `<module>.<name>` of the installed JAX (private, tests only), or a skip."""
    found = getattr(importlib.import_module(f"jax._src.{module}"), name, None)
    if found is None:
        pytest.skip(f"jax {jax.__version__} has no {module}.{name}")
    return found


def test_unpacking_an_array_is_data_movement_as_slices_were():
    x = jnp.ones((2, N))

    def unpacked(x):
        a, b = x  # jax 0.12: one `unstack`; jax 0.10: slices and squeezes
        return a.sum() + b.sum()

    def sliced(x):
        return lax.index_in_dim(x, 0, keepdims=False).sum() + lax.index_in_dim(x, 1, keepdims=False).sum()

    assert program_flops(unpacked, x) == program_flops(sliced, x) == 2 * N + 1


def test_unstack_is_free():
    unstack = _lax("unstack")
    assert program_flops(lambda x: unstack(x), jnp.ones((3, N))) == 0


def test_tanh_derivative_counts_the_same_on_either_jax():
    # jax 0.10: g * (1 - y) + g * (1 - y) * y (sub, mul, mul, add_any); jax 0.12:
    # g * one_minus_square(y), lowered as (1 + y) * (1 - y): 4 per element either way, plus the tanh
    x = jnp.linspace(0.1, 0.9, N)
    assert program_flops(jax.grad(lambda x: jnp.tanh(x).sum()), x) == 5 * N


def test_one_minus_square_costs_its_lowering():
    one_minus_square = _lax("one_minus_square")
    x = jnp.linspace(0.1, 0.9, N)
    assert program_flops(one_minus_square, x) == program_flops(lambda x: (1 + x) * (1 - x), x) == 3 * N


@pytest.mark.parametrize("name", ["fma", "fmuladd"])
def test_fused_multiply_add_costs_a_multiply_and_an_add(name):
    fused = _lax(name)
    a, b, c = jnp.ones(N), jnp.ones(N), jnp.ones(N)
    assert program_flops(fused, a, b, c) == program_flops(lambda a, b, c: a * b + c, a, b, c) == 2 * N


def test_polynomial_costs_horner():
    polynomial = _lax("polynomial")
    coeffs = [1.0, 2.0, 3.0, 4.0, 5.0]  # degree 4: 4 multiply-adds per element
    x = jnp.linspace(0.1, 0.9, N)

    def horner(x):
        acc = coeffs[-1] * jnp.ones_like(x)
        for c in reversed(coeffs[:-1]):
            acc = acc * x + c
        return acc

    assert program_flops(lambda x: polynomial(x, coeffs), x) == 2 * 4 * N
    # the explicit Horner loop multiplies the leading coefficient in once more
    assert program_flops(horner, x) == 2 * 4 * N + N


@pytest.mark.parametrize("module, name", [
    ("pjit", "relayout_p"),  # a layout change (jax 0.12)
    ("core", "reduced_vary_cast_p"),  # relabels sharding axes; lowered to the array itself
    ("lax.parallel", "vary_unreduced_cast_p"),
])
def test_layout_and_sharding_casts_are_free(module, name):
    primitive = _primitive(module, name)
    # their type rules need a mesh with varying axes: the equation of a `neg` is given the
    # primitive instead, which is all the count reads (its name and its output's shape)
    closed = jax.make_jaxpr(lambda x: -x)(jnp.ones((3, N)))
    eqn, = closed.jaxpr.eqns
    closed = closed.replace(jaxpr=closed.jaxpr.replace(eqns=[eqn.replace(primitive=primitive)]))
    assert jaxpr_flops(closed) == 0
