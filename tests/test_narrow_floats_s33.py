"""bfloat16 and float16 inputs (session 33, hunt DTYPES finding 2): `Space.constrain`/`unconstrain`
compute a z or value narrower than float32 in the default float dtype, where the bounds were checked, so a
narrow z maps strictly inside the bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg

BF16 = jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("dist", [hg.Uniform(100.0, 100.5), hg.Uniform(1.0, 1.001), hg.LogUniform(1.0, 1.01)])
def test_a_narrow_z_maps_strictly_inside_the_bounds_in_the_default_float(dist, dtype):
    # bfloat16 holds no number strictly between 100 and 100.5: every z gave lo itself
    for z in (-100.0, -3.0, 0.0, 3.0, 100.0):
        value = dist.constrain(jnp.asarray(z, dtype))
        assert value.dtype == jnp.result_type(float)
        assert dist.lo < float(value) < dist.hi, (z, value)
        assert float(value) == float(dist.constrain(jnp.asarray(z, dtype).astype(jnp.result_type(float))))


def test_a_float16_z_is_not_clipped_at_float16s_largest_number():
    dist = hg.LogUniform(1e-30, 1e30)
    value = dist.constrain(jnp.asarray(5.0, jnp.float16))  # was 65504, float16's largest number
    np.testing.assert_allclose(float(value), float(dist.constrain(jnp.asarray(5.0))), rtol=1e-12)
    assert float(value) > 1e20


def test_a_narrow_value_inside_the_bounds_unconstrains_to_a_finite_z():
    dist = hg.Uniform(100.3, 200.0)  # bfloat16(100.3) is 100.5: the value 100.5 sat on lo and gave -inf
    value = jnp.asarray(100.5, BF16)
    z = dist.unconstrain(value)
    assert z.dtype == jnp.result_type(float) and np.isfinite(float(z))
    np.testing.assert_allclose(float(dist.constrain(z)), 100.5, rtol=1e-12)
    # a value on or past a bound still maps to an infinity, as documented
    assert float(dist.unconstrain(jnp.asarray(100.0, BF16))) == -np.inf
    assert float(dist.unconstrain(jnp.asarray(256.0, BF16))) == np.inf


def test_space_maps_narrow_coordinates_through_the_same_widening():
    space = hg.Space({"lr": hg.LogUniform(1.0, 1.01), "c": hg.Uniform(100.0, 100.5)})
    hparams = space.constrain({"lr": jnp.zeros((), BF16), "c": jnp.zeros((), jnp.float16)})
    assert 1.0 < float(hparams["lr"]) < 1.01 and 100.0 < float(hparams["c"]) < 100.5
    z = space.unconstrain(hparams)
    assert all(np.isfinite(float(v)) for v in z.values())


def test_float32_and_float64_coordinates_keep_their_dtype_and_numbers():
    dist = hg.LogUniform(1e-3, 3.0)
    for dtype in (jnp.float32, jnp.float64):
        z = jnp.asarray([-40.0, -1.5, 0.0, 0.7, 40.0], dtype)
        value = dist.constrain(z)
        assert value.dtype == dtype
        assert dist.unconstrain(value).dtype == dtype
        # the same operations in z's own dtype, as before (Python-float constants are weakly typed)
        expected = jnp.exp(math.log(1e-3) + (math.log(3.0) - math.log(1e-3)) * jax.nn.sigmoid(z))
        np.testing.assert_array_equal(value[1:4], expected[1:4])
