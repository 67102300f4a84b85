"""hypergrad.sklearn's program keys (`_program_key` of a search's programs, `cached_program` of a
fit's) follow every JAX setting that shapes a trace (`hypergrad._compile.trace_settings()`), not
the float width alone: a fit or search after flipping `jax_threefry_partitionable` gets programs of
its own. No compilation."""

import jax

from hypergrad.sklearn import MLPClassifier, Ridge
from hypergrad.sklearn._base import cached_program


def test_program_keys_follow_a_flipped_threefry_setting():
    """`_program_key` held the x64 flag by hand, so programs traced under the other
    jax_threefry_partitionable shared a key; `cached_program` held no setting at all."""
    varying = {"alpha": [0.1, 1.0]}
    made = []

    def make():
        made.append(jax.config.jax_threefry_partitionable)
        return len(made)

    start = jax.config.jax_threefry_partitionable
    keys = [(Ridge()._program_key(varying), MLPClassifier()._program_key(varying, 3))]
    cached_program(("test_sklearn_program_keys",), make)
    try:
        jax.config.update("jax_threefry_partitionable", not start)
        keys.append((Ridge()._program_key(varying), MLPClassifier()._program_key(varying, 3)))
        assert cached_program(("test_sklearn_program_keys",), make) == 2
    finally:
        jax.config.update("jax_threefry_partitionable", start)
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    assert (Ridge()._program_key(varying), MLPClassifier()._program_key(varying, 3)) == keys[0]
    assert cached_program(("test_sklearn_program_keys",), make) == 1 and made == [start, not start]
