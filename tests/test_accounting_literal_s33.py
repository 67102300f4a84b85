"""A `while_loop` whose bound is a scalar made inside the traced function reaches its condition as a
jaxpr Literal, which is unhashable: `program_flops` raised TypeError('unhashable type: Literal')."""

import jax
import jax.numpy as jnp

from hypergrad.accounting import program_flops


def _loop(limit_inside: bool):
    x = jnp.ones((4, 4))

    def loop(v):
        limit = jnp.asarray(7, jnp.int32) if limit_inside else 7
        body = lambda s: (s[0] @ x, s[1] + 1)  # noqa: E731
        return jax.lax.while_loop(lambda s: s[1] < limit, body, (v, jnp.asarray(0, jnp.int32)))[0]
    return loop, x


def test_a_while_bound_made_inside_the_trace_is_counted_as_a_python_bound():
    inside, x = _loop(True)
    python_int, _ = _loop(False)
    counted = program_flops(inside, x)
    assert counted == program_flops(python_int, x)
    assert counted >= 7 * 2 * 4 * 4 * 4  # seven trips of a 4x4 product, at least
