"""bfloat16 and float16 inputs (session 33, hunt DTYPES findings 2 and 3): `Space.constrain`/`unconstrain`
compute a z or value narrower than float32 in the default float dtype, where the bounds were checked, so a
narrow z maps strictly inside the bounds; and a bfloat16 number (ml_dtypes, which numpy's np.floating and
np.number miss) is a real number to the argument checks (`sgd_hd`, `group_sgd`, `group_rates`' freeze,
`select_transform`), to `Choice` (numeric, not structural) and to FLOP counting's constants."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._checks import is_number
from hypergrad.accounting import program_flops
from hypergrad.online import sgd_hd

ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

BF16 = jnp.bfloat16


def _bf16_scalar(x):
    """A numpy (ml_dtypes) bfloat16 scalar: hashable, as Choice options must be."""
    return np.asarray(x, BF16)[()]


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


def test_bfloat16_numbers_are_numbers():
    assert is_number(_bf16_scalar(0.1))
    assert is_number(np.float16(0.1)) and is_number(1) and is_number(np.float64(0.1))
    assert not is_number(True) and not is_number(np.bool_(True)) and not is_number(np.complex64(1.0))
    assert not is_number("0.1") and not is_number(None)


def test_sgd_hd_takes_a_bfloat16_rate_and_momentum():
    sgd_hd(jnp.asarray(0.1, BF16), 0.01)
    sgd_hd(0.1, 0.01, jnp.asarray(0.9, BF16))
    sgd_hd(_bf16_scalar(0.1), _bf16_scalar(0.01))
    with pytest.raises(ValueError, match="must be in"):
        sgd_hd(0.1, 0.01, jnp.asarray(1.5, BF16))  # still range-checked
    with pytest.raises(ValueError, match="must be >= 0"):
        sgd_hd(jnp.asarray(-0.1, BF16), 0.01)
    with pytest.raises(ValueError, match="real number"):
        sgd_hd(jnp.asarray(0.1 + 0.0j), 0.01)
    with pytest.raises(ValueError, match="not a bool"):
        sgd_hd(jnp.asarray(True), 0.01)


def test_group_sgd_takes_bfloat16_defaults():
    ft.group_sgd(lr=jnp.asarray(0.01, BF16), warmup=_bf16_scalar(2.0))
    with pytest.raises(ValueError, match="finite number >= 0"):
        ft.group_sgd(lr=jnp.asarray(-0.01, BF16))
    with pytest.raises(ValueError, match="finite number >= 0"):
        ft.group_sgd(lr=jnp.asarray(True))
    with pytest.raises(ValueError, match="finite number >= 0"):
        ft.group_sgd(lr=np.complex64(0.01))


def test_a_bfloat16_freeze_count_is_a_whole_number():
    rates = ft.group_rates({"lr": 1.0, "lr_decay": 0.5, "freeze": jnp.asarray(1.0, BF16)}, jnp.asarray(0), 3)
    np.testing.assert_allclose(rates, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="whole number"):
        ft.group_rates({"lr": 1.0, "freeze": jnp.asarray(1.5, BF16)}, jnp.asarray(0), 3)
    with pytest.raises(ValueError, match="whole number"):
        ft.group_rates({"lr": 1.0, "freeze": np.bool_(True)}, jnp.asarray(0), 3)


def test_a_choice_of_bfloat16_numbers_is_numeric():
    choice = hg.Choice([_bf16_scalar(0.0), _bf16_scalar(0.5)])
    assert not choice.structural
    assert not hg.Choice([np.float16(0.0), np.float16(0.5)]).structural


def test_select_transform_takes_a_concrete_bfloat16_index():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 2.0)}
    chosen = hg.select_transform(jnp.asarray(1.0, BF16), (optax.sgd(0.1), optax.sgd(1.0)))
    updates, _ = chosen.update(grads, chosen.init(params), params)
    np.testing.assert_array_equal(updates["w"], -2.0 * np.ones(3))
    with pytest.raises(ValueError, match="must be an integer"):
        hg.select_transform(jnp.asarray(0.5, BF16), (optax.sgd(0.1), optax.sgd(1.0)))
    with pytest.raises(ValueError, match="must be an integer"):
        hg.select_transform(np.bool_(True), (optax.sgd(0.1), optax.sgd(1.0)))


def test_a_while_loop_counting_in_bfloat16_counts_its_trips():
    x = jnp.ones((4, 4))

    def loop(v, dtype):  # the bound and the step are literals of the counter's dtype
        return jax.lax.while_loop(lambda s: s[1] < 7, lambda s: (s[0] @ x, s[1] + 1), (v, jnp.asarray(0, dtype)))[0]

    counted = {d: program_flops(lambda v: loop(v, d), x) for d in (jnp.int32, jnp.float32, BF16)}
    assert counted[jnp.float32] > 5 * program_flops(lambda v: v @ x, x)  # 7 trips read from the constants
    assert counted[BF16] == counted[jnp.float32]
