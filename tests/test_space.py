"""Space: bijections, centre, sampling, grids and the errors for bad declarations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

CONTINUOUS = [
    hg.Uniform(0.1, 0.9),
    hg.Uniform(-1.0, 1.0),
    hg.Uniform(0.0, 0.99, shape=(3,)),
    hg.LogUniform(1e-3, 3.0),
    hg.LogUniform(1e-6, 1e-1, shape=(2, 2)),
]


def ids(dist):
    return f"{type(dist).__name__}({dist.lo},{dist.hi},{dist.shape})"


# -- bijections ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dist", CONTINUOUS, ids=ids)
def test_unconstrain_inverts_constrain(dist):
    z = 3.0 * jax.random.normal(jax.random.key(1), dist.shape, jnp.float64)
    np.testing.assert_allclose(dist.unconstrain(dist.constrain(z)), z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dist", CONTINUOUS, ids=ids)
def test_constrain_inverts_unconstrain_on_values_inside_bounds(dist):
    u = jax.random.uniform(jax.random.key(2), dist.shape, jnp.float64, 0.01, 0.99)
    if isinstance(dist, hg.LogUniform):
        values = jnp.exp(math.log(dist.lo) + u * (math.log(dist.hi) - math.log(dist.lo)))
    else:
        values = dist.lo + u * (dist.hi - dist.lo)
    np.testing.assert_allclose(dist.constrain(dist.unconstrain(values)), values, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("dist", CONTINUOUS, ids=ids)
def test_constrain_stays_strictly_inside_bounds_for_huge_z(dist, dtype):
    z = jnp.asarray([-1e6, -1e3, -100.0, -40.0, -20.0, 0.0, 20.0, 40.0, 100.0, 1e3, 1e6], dtype)
    values = np.asarray(jax.vmap(dist.constrain)(jnp.broadcast_to(z[:, None], (len(z), math.prod(dist.shape)))
                                                 .reshape((len(z), *dist.shape))), np.float64)
    assert values.dtype == np.float64 and np.all(np.isfinite(values))
    assert np.all(values > dist.lo), values.min()
    assert np.all(values < dist.hi), values.max()
    # and monotone: larger z never gives a smaller value
    flat = values.reshape(len(z), -1)
    assert np.all(np.diff(flat, axis=0) >= 0)


def test_constrain_accepts_integer_z():
    dist = hg.LogUniform(1e-2, 1.0)
    np.testing.assert_allclose(dist.constrain(0), 0.1, rtol=1e-12)


@pytest.mark.parametrize("dist", [hg.Uniform(0.2, 1.4), hg.LogUniform(1e-4, 1e2)], ids=ids)
def test_constrain_derivative_matches_its_formula(dist):
    z = 0.7
    s = 1.0 / (1.0 + math.exp(-z))
    if isinstance(dist, hg.Uniform):
        expected = (dist.hi - dist.lo) * s * (1 - s)
    else:
        expected = float(dist.constrain(z)) * (math.log(dist.hi) - math.log(dist.lo)) * s * (1 - s)
    np.testing.assert_allclose(jax.grad(dist.constrain)(z), expected, rtol=1e-12)


def test_space_constrain_unconstrain_round_trip_on_dicts():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(4,)), "momentum": hg.Uniform(0.0, 0.99)})
    hparams = {"lr": jnp.asarray([0.5, 0.1, 0.01, 0.002]), "momentum": jnp.asarray(0.9)}
    z = space.unconstrain(hparams)
    assert set(z) == {"lr", "momentum"} and z["lr"].shape == (4,) and z["momentum"].shape == ()
    back = space.constrain(z)
    for name in hparams:
        np.testing.assert_allclose(back[name], hparams[name], rtol=1e-12)


def test_unconstrain_of_a_bound_is_infinite():
    dist = hg.Uniform(0.0, 1.0)
    assert float(dist.unconstrain(0.0)) == -math.inf
    assert float(dist.unconstrain(1.0)) == math.inf


def test_float32_values_at_or_just_inside_a_bound_never_unconstrain_to_nan():
    # The fraction, computed in float32 against float64 bounds, rounded just past 1 (or 0), where
    # the logit was NaN: a float32 bound, or a start a few ulps inside one, failed every tune trial.
    for dist in (hg.LogUniform(1e-4, 2.0), hg.Uniform(0.9, 0.99), hg.LogUniform(1e-6, 0.1)):
        for bound, sign in ((dist.lo, -1.0), (dist.hi, 1.0)):
            value = np.float32(bound)
            assert float(dist.unconstrain(value)) == sign * math.inf, (dist, bound)
            for _ in range(3):
                value = np.nextafter(value, np.float32(dist.centre), dtype=np.float32)
                z = float(dist.unconstrain(value))
                assert not math.isnan(z), (dist, value)
                assert math.isinf(z) or abs(float(dist.constrain(z)) - float(value)) <= 1e-6 * abs(float(value))
    problem = hg.problems.ridge(num_examples=60, num_features=4)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-6, 1e-1)})
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), 10)
    inside = np.nextafter(np.float32(0.1), np.float32(0), dtype=np.float32)  # strictly inside: accepted
    result = hg.tune(objective, space, jax.random.key(0), steps=3, init={"lr": 0.1, "weight_decay": inside})
    assert all(t.state == "complete" and math.isfinite(t.value) for t in result.trials), result.trials
    np.testing.assert_allclose(result.trials[0].hparams["weight_decay"], inside, rtol=1e-6)


def test_independent_must_be_a_bool():
    with pytest.raises(ValueError, match=r"independent='no'\) must be True"):
        hg.Uniform(0.0, 1.0, shape=(2,), independent="no")  # was truthy: searched element by element


# -- centre --------------------------------------------------------------------------------------
def test_centre_is_arithmetic_for_uniform_geometric_for_loguniform_first_for_choice():
    space = hg.Space({
        "a": hg.Uniform(-1.0, 3.0),
        "lr": hg.LogUniform(1e-4, 1.0, shape=(5,)),
        "layers": hg.Choice([2, 1, 3]),
    })
    centre = space.centre()
    np.testing.assert_allclose(centre["a"], 1.0, rtol=1e-12)
    assert centre["lr"].shape == (5,)
    np.testing.assert_allclose(centre["lr"], np.full(5, 1e-2), rtol=1e-12)
    assert int(centre["layers"]) == 2


def test_centre_is_constrain_of_zero():
    space = hg.Space({"a": hg.Uniform(0.3, 0.7), "lr": hg.LogUniform(1e-3, 1e-1, shape=(3,))})
    z = {"a": jnp.zeros(()), "lr": jnp.zeros(3)}
    for name, value in space.constrain(z).items():
        np.testing.assert_allclose(value, space.centre()[name], rtol=1e-12)
        np.testing.assert_allclose(space.unconstrain(space.centre())[name], 0.0, atol=1e-12)


# -- sample --------------------------------------------------------------------------------------
def test_sample_shapes_dtypes_and_bounds():
    space = hg.Space({
        "lr": hg.LogUniform(1e-3, 3.0, shape=(7,)),
        "momentum": hg.Uniform(0.0, 0.99),
        "wd": hg.LogUniform(1e-6, 1e-1, shape=(2, 3), independent=True),
        "layers": hg.Choice([1, 2, 3]),
    })
    n = 50
    samples = space.sample(jax.random.key(0), n)
    assert set(samples) == set(space.names)
    assert samples["lr"].shape == (n, 7)
    assert samples["momentum"].shape == (n,)
    assert samples["wd"].shape == (n, 2, 3)
    assert samples["layers"].shape == (n,)
    assert jnp.issubdtype(samples["layers"].dtype, jnp.integer)
    assert samples["lr"].dtype == jnp.float64
    for name in ("lr", "momentum", "wd"):
        dist = space[name]
        assert np.all(np.asarray(samples[name]) >= dist.lo) and np.all(np.asarray(samples[name]) <= dist.hi)
    assert set(np.asarray(samples["layers"]).tolist()) <= {1, 2, 3}


def test_sample_is_reproducible_for_a_key_and_differs_between_keys():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Uniform(0.0, 1.0)})
    a = space.sample(jax.random.key(3), 10)
    b = space.sample(jax.random.key(3), 10)
    c = space.sample(jax.random.key(4), 10)
    np.testing.assert_array_equal(a["lr"], b["lr"])
    assert not np.allclose(a["lr"], c["lr"])
    # each hyperparameter gets its own stream: equal bounds must not give equal draws
    same = hg.Space({"x": hg.Uniform(0.0, 1.0), "y": hg.Uniform(0.0, 1.0)}).sample(jax.random.key(0), 10)
    assert not np.allclose(same["x"], same["y"])


def test_sample_stream_draws_from_the_folded_key():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Uniform(0.0, 1.0)})
    key = jax.random.key(3)
    folded = space.sample(jax.random.fold_in(key, 7), 10)
    streamed = space.sample(key, 10, stream=7)
    for name in ("lr", "m"):
        np.testing.assert_array_equal(streamed[name], folded[name])
    assert not np.allclose(space.sample(key, 10, stream=8)["lr"], streamed["lr"])
    with pytest.raises(ValueError, match=r"stream='a'"):
        space.sample(key, 10, stream="a")


@pytest.mark.parametrize("stream", [-1, 2**32, np.int64(-1), 2**40])
def test_sample_refuses_a_stream_outside_uint32_before_tracing(stream):
    # was an OverflowError from inside the jitted fold_in ("Python integer -1 out of bounds for uint32")
    space = hg.Space({"m": hg.Uniform(0.0, 1.0)})
    with pytest.raises(ValueError, match=r"Space.sample\(stream=.*\): give an int in \[0, 2\*\*32\)"):
        space.sample(jax.random.key(0), 4, stream=stream)
    assert space.sample(jax.random.key(0), 4, stream=2**32 - 1)["m"].shape == (4,)  # the largest accepted


def test_loguniform_samples_are_uniform_in_log_space():
    lo, hi = 1e-4, 1.0
    space = hg.Space({"lr": hg.LogUniform(lo, hi)})
    values = np.asarray(space.sample(jax.random.key(0), 4000)["lr"])
    logs = np.log10(values)
    # quartiles of log10 values: -4 + 4 * (0.25, 0.5, 0.75); a uniform-in-value draw would put the
    # median near 0.5 (log10 ~ -0.3), far outside this tolerance
    np.testing.assert_allclose(np.quantile(logs, [0.25, 0.5, 0.75]), [-3.0, -2.0, -1.0], atol=0.15)
    np.testing.assert_allclose(logs.mean(), -2.0, atol=0.1)


def test_uniform_samples_are_uniform_in_value():
    values = np.asarray(hg.Space({"m": hg.Uniform(2.0, 4.0)}).sample(jax.random.key(1), 4000)["m"])
    np.testing.assert_allclose(np.quantile(values, [0.25, 0.5, 0.75]), [2.5, 3.0, 3.5], atol=0.05)


def test_shaped_sample_broadcasts_one_value_unless_independent():
    space = hg.Space({
        "schedule": hg.LogUniform(1e-3, 1.0, shape=(6,)),
        "per_feature": hg.LogUniform(1e-3, 1.0, shape=(6,), independent=True),
    })
    s = space.sample(jax.random.key(0), 20)
    schedule, per_feature = np.asarray(s["schedule"]), np.asarray(s["per_feature"])
    # not independent: constant along the shape, varied across settings
    np.testing.assert_array_equal(schedule, np.broadcast_to(schedule[:, :1], schedule.shape))
    assert len(np.unique(schedule[:, 0])) == 20
    # independent: every element drawn separately
    assert all(len(np.unique(row)) == 6 for row in per_feature)


def test_choice_samples_cover_every_option():
    s = hg.Space({"c": hg.Choice([0.5, 1.5, 2.5])}).sample(jax.random.key(0), 300)
    values, counts = np.unique(np.asarray(s["c"]), return_counts=True)
    np.testing.assert_array_equal(values, [0.5, 1.5, 2.5])
    assert counts.min() > 60  # ~100 each


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_sample_rejects_bad_counts(n):
    with pytest.raises(ValueError, match=r"n=.* must be an integer >= 1"):
        hg.Space({"a": hg.Uniform(0, 1)}).sample(jax.random.key(0), n)


# -- grid ----------------------------------------------------------------------------------------
def test_grid_is_the_cartesian_product_with_bounds_included():
    space = hg.Space({"m": hg.Uniform(0.0, 0.9), "lr": hg.LogUniform(1e-3, 1.0)})
    grid = space.grid(4)
    assert grid["m"].shape == (16,) and grid["lr"].shape == (16,)
    m_values = np.unique(np.asarray(grid["m"]))
    lr_values = np.unique(np.asarray(grid["lr"]))
    np.testing.assert_allclose(m_values, [0.0, 0.3, 0.6, 0.9], atol=1e-12)
    assert m_values[0] == 0.0 and m_values[-1] == 0.9
    assert lr_values[0] == 1e-3 and lr_values[-1] == 1.0  # bounds exactly
    np.testing.assert_allclose(lr_values, [1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)  # even in log
    pairs = set(zip(np.asarray(grid["m"]).tolist(), np.asarray(grid["lr"]).tolist()))
    assert len(pairs) == 16


def test_grid_with_one_point_is_the_centre():
    space = hg.Space({"m": hg.Uniform(0.0, 1.0), "lr": hg.LogUniform(1e-4, 1.0)})
    grid = space.grid(1)
    np.testing.assert_allclose(grid["m"], [0.5])
    np.testing.assert_allclose(grid["lr"], [1e-2], rtol=1e-12)


def test_grid_choice_contributes_all_options_whatever_points_per_axis():
    space = hg.Space({"m": hg.Uniform(0.0, 1.0), "layers": hg.Choice([1, 2, 3, 4])})
    for points in (1, 2, 5):
        grid = space.grid(points)
        assert grid["layers"].shape == (points * 4,)
        assert sorted(set(np.asarray(grid["layers"]).tolist())) == [1, 2, 3, 4]
        assert jnp.issubdtype(grid["layers"].dtype, jnp.integer)


def test_grid_independent_axes_multiply_and_shared_shapes_broadcast():
    space = hg.Space({
        "per_feature": hg.Uniform(0.0, 1.0, shape=(2,), independent=True),
        "schedule": hg.LogUniform(1e-2, 1.0, shape=(5,)),
    })
    grid = space.grid(3)
    assert grid["per_feature"].shape == (27, 2)  # 3 ** 2 * 3
    assert grid["schedule"].shape == (27, 5)
    schedule = np.asarray(grid["schedule"])
    np.testing.assert_array_equal(schedule, np.broadcast_to(schedule[:, :1], schedule.shape))
    rows = {tuple(r) for r in np.asarray(grid["per_feature"]).tolist()}
    assert rows == {(a, b) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)}
    triples = {(*pf, s[0]) for pf, s in zip(np.asarray(grid["per_feature"]).tolist(), schedule.tolist())}
    assert len(triples) == 27


def test_grid_refuses_an_explosive_size():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(20,), independent=True)})
    with pytest.raises(ValueError, match=r"points_per_axis=5.*lower points_per_axis"):
        space.grid(5)


def test_grid_refuses_a_huge_points_per_axis_before_building_any_axis(monkeypatch):
    # grid_values(points) ran for every axis first: points_per_axis=10**9 allocated gigabytes before the refusal
    built = []
    for cls in (hg.Uniform, hg.LogUniform, hg.Choice):
        monkeypatch.setattr(cls, "grid_values", lambda self, points: built.append(points))
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Uniform(0.0, 1.0), "c": hg.Choice([1, 2, 3])})
    with pytest.raises(ValueError, match=r"points_per_axis=1000000000\) would have .* points over 3 axes"):
        space.grid(10**9)
    wide = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(10**6,), independent=True)})
    with pytest.raises(ValueError, match=r"points_per_axis=2\) would have about 1e\+?301029 points over 1000000 axes"):
        wide.grid(2)
    assert built == []


def test_grid_holds_exactly_the_declared_integer_options_above_2_to_the_53():
    # the columns were float64, so Choice([2**53 + 1, 2**60 + 1]) ran 2**53 and 2**60 in the grid
    options = [2**53 + 1, 2**60 + 1, -(2**62) - 3]
    space = hg.Space({"seed": hg.Choice(options), "x": hg.Uniform(0.0, 1.0)})
    grid = space.grid(2)
    assert grid["seed"].dtype == space.sample(jax.random.key(0), 4)["seed"].dtype == jnp.int64
    assert sorted(set(np.asarray(grid["seed"]).tolist())) == sorted(options)
    for value in np.asarray(grid["seed"]).tolist():
        space["seed"].index(value)  # every grid value is an option


@pytest.mark.parametrize("points", [0, -2, 1.5])
def test_grid_rejects_bad_points_per_axis(points):
    with pytest.raises(ValueError, match=r"points_per_axis=.* must be an integer >= 1"):
        hg.Space({"a": hg.Uniform(0, 1)}).grid(points)


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("lo", [0.0, -1e-3])
def test_loguniform_needs_a_positive_lower_bound(lo):
    with pytest.raises(ValueError, match=r"LogUniform\(lo=.*lo must be > 0.*use Uniform"):
        hg.LogUniform(lo, 1.0)


@pytest.mark.parametrize("cls", [hg.Uniform, hg.LogUniform])
@pytest.mark.parametrize("lo,hi", [(1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_be_ordered(cls, lo, hi):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(lo=.*lo must be smaller than hi; swap them"):
        cls(lo, hi)


def test_bounds_must_be_finite():
    with pytest.raises(ValueError, match="both bounds must be finite"):
        hg.Uniform(0.0, math.inf)


@pytest.mark.parametrize("shape", [(0,), (3, -1), "abc", 200])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match=r"shape="):
        hg.Uniform(0.0, 1.0, shape=shape)


@pytest.mark.parametrize("options", [["relu", "tanh"], [1, "two"], [True, False], [(50,), (100,)]])
def test_non_numeric_choices_are_structural_and_sampled_as_indices(options, key):
    choice = hg.Choice(options)
    assert choice.structural
    space = hg.Space({"c": choice, "lr": hg.LogUniform(1e-3, 1.0)})
    assert space.structural == ("c",)
    draws = space.sample(key, 50)
    assert draws["c"].dtype == jnp.int32
    assert set(np.asarray(draws["c"]).tolist()) == set(range(len(options)))
    np.testing.assert_array_equal(space.grid(2)["c"], np.repeat(np.arange(len(options)), 2))
    assert space.options_of(draws, row=0)["c"] == options[int(draws["c"][0])] or \
        list(space.options_of(draws, row=0)["c"]) == list(options[int(draws["c"][0])])
    assert choice.index(options[1]) == 1


def test_numeric_choice_can_be_declared_structural(key):
    choice = hg.Choice([50, 100, 200], structural=True)
    assert choice.structural and choice.option(2) == 200
    assert not hg.Choice([50, 100, 200]).structural
    with pytest.raises(ValueError, match=r"structural=False\): only numbers can be traced"):
        hg.Choice(["tanh", "relu"], structural=False)


def test_choice_refuses_repeats_and_unhashable_options():
    with pytest.raises(ValueError, match="repeats an option"):
        hg.Choice(["relu", "relu"])
    with pytest.raises(ValueError, match="not hashable"):
        hg.Choice([{"a": 1}])
    with pytest.raises(ValueError, match="give a list of options"):
        hg.Choice("relu")
    with pytest.raises(ValueError, match=r"'gelu' is not one of the options"):
        hg.Choice(["relu", "tanh"]).index("gelu")
    for options in ([float("nan"), 1.0], ["relu", np.float32("nan")]):  # NaN equals nothing, itself included
        with pytest.raises(ValueError, match=r"NaN is not an option"):
            hg.Choice(options)


def test_the_centre_of_a_numeric_choice_has_the_dtype_of_its_samples(key):
    # Choice([1, 2.5]) sampled float values but its centre was the int 1: a program compiled for one
    # was another program for the other.
    for options in ([1, 2.5], [3, 1], [0.5, 2.0]):
        space = hg.Space({"a": hg.Choice(options)})
        assert space.centre()["a"].dtype == space.sample(key, 2)["a"].dtype == space.grid(2)["a"].dtype
        assert space.centre()["a"] == options[0]


def test_choice_refuses_no_options():
    with pytest.raises(ValueError, match=r"Choice\(options=\[\]\): give at least one option"):
        hg.Choice([])


def test_space_refuses_bad_declarations():
    with pytest.raises(ValueError, match="non-empty dict"):
        hg.Space({})
    with pytest.raises(ValueError, match=r"'lr' is .*use hg.Uniform, hg.LogUniform or hg.Choice"):
        hg.Space({"lr": (1e-3, 1.0)})
    with pytest.raises(ValueError, match="must be a string"):
        hg.Space({1: hg.Uniform(0, 1)})


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(3,)), "momentum": hg.Uniform(0.0, 0.99)})


def test_check_accepts_matching_hparams():
    SPACE.check({"lr": jnp.ones(3) * 0.1, "momentum": 0.9})


def test_check_names_missing_and_unexpected_hyperparameters():
    with pytest.raises(ValueError, match=r"hparams names .*missing \['momentum'\], unexpected \['mom'\]; "
                                         r"pass exactly the space's names"):
        SPACE.check({"lr": jnp.ones(3), "mom": 0.9})


def test_check_names_the_bad_shape_and_the_expected_one():
    with pytest.raises(ValueError, match=r"init\['lr'\] has shape \(4,\), but the space declares \(3,\); "
                                         r"give an array of shape \(3,\)"):
        SPACE.check({"lr": jnp.ones(4), "momentum": 0.9}, argname="init")


def test_check_refuses_a_non_dict():
    with pytest.raises(ValueError, match="hparams must be a dict of name -> array, got list"):
        SPACE.check([0.1, 0.9])


def test_gradient_bijections_refuse_choice():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "layers": hg.Choice([1, 2])})
    assert space.choices == ("layers",)
    with pytest.raises(ValueError, match=r"\['layers'\] are hg.Choice; search them with hg.random_search"):
        space.constrain({"lr": 0.0, "layers": 1})
    # a discrete hyperparameter beside continuous ones: descended per option, not declared continuous blindly
    with pytest.raises(ValueError, match=r"hg.hybrid_search.*only if the objective reads it as a real number"):
        space.check_differentiable("tune")


def test_space_is_hashable_by_value():
    a = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(3,))})
    b = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(3,))})
    assert a == b and hash(a) == hash(b)
    assert a != hg.Space({"lr": hg.LogUniform(1e-3, 2.0, shape=(3,))})
    assert a.num_scalars == 3 and len(a) == 1 and list(a) == ["lr"]


def test_sample_and_the_bijections_name_what_is_wrong():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    with pytest.raises(ValueError, match=r"key=0 is an int; pass jax.random.key\(0\)"):
        space.sample(0, 4)  # was JAX's "invalid PRNG key data"
    with pytest.raises(ValueError, match=r"Space.constrain\(z\) lacks \['momentum'\]"):
        space.constrain({"lr": 0.0})  # was a bare KeyError
    with pytest.raises(ValueError, match=r"Space.unconstrain\(hparams\) lacks \['lr'\]"):
        space.unconstrain({"momentum": 0.5})


# -- Choice identity: equal spaces must sample the same dtype ------------------------------------
def test_choices_of_equal_numbers_but_different_types_are_different_spaces(key):
    # (1, 2) == (1.0, 2.0) in Python: the two spaces were equal with equal hashes, so the compiled
    # draw cached for one served the other (the float space sampled int64 after the int space had).
    ints, floats = hg.Space({"c": hg.Choice([1, 2, 4])}), hg.Space({"c": hg.Choice([1.0, 2.0, 4.0])})
    singles = hg.Space({"c": hg.Choice([np.float32(1.0), np.float32(2.0), np.float32(4.0)])})
    assert ints != floats and floats != singles and ints != singles
    assert len({hash(ints), hash(floats), hash(singles)}) == 3
    assert hg.Choice([1, 2]) == hg.Choice([1, 2]) and hash(hg.Choice([1, 2])) == hash(hg.Choice([1, 2]))
    assert hg.Choice([(1, 2)], structural=True) != hg.Choice([(1.0, 2.0)], structural=True)
    assert ints.sample(key, 3)["c"].dtype == jnp.int64
    assert floats.sample(key, 3)["c"].dtype == jnp.float64
    assert singles.sample(key, 3)["c"].dtype == jnp.float32


def test_random_search_of_an_int_choice_after_a_float_one_indexes_with_ints(ridge_problem, key):
    rates = jnp.asarray([0.01, 0.05, 0.1])
    by_factor = hg.Objective(ridge_problem, lambda h: optax.sgd(0.01 + 0.02 * h["which"]), num_steps=3)
    by_index = hg.Objective(ridge_problem, lambda h: optax.sgd(rates[h["which"]]), num_steps=3)
    hg.random_search(by_factor, hg.Space({"which": hg.Choice([0.0, 1.0, 2.0])}), key, num_trials=2)
    result = hg.random_search(by_index, hg.Space({"which": hg.Choice([0, 1, 2])}), key, num_trials=2)
    assert all(np.issubdtype(t.hparams["which"].dtype, np.integer) for t in result.trials)


# -- samples stay inside the bounds as their dtype represents them --------------------------------
# Ranges where a draw's extreme fraction (u = 0, or the largest u below 1 that jax.random.uniform
# returns) computes a value past a bound as the dtype holds it: exp(log lo) rounds below lo, or
# lo + (hi - lo) * u above hi. Found by a scan of random ranges; the first is the hunter's.
EXTREME_DRAWS = {
    np.float32: [hg.LogUniform(1e-8, 1e-5), hg.LogUniform(4.594108928598881, 4.595241156163063),
                 hg.Uniform(7.148085531751388, 7.148244574345878),
                 hg.LogUniform(7.149085531751388, 7.149244574345879)],
    np.float64: [hg.LogUniform(2.9953936658660756, 12.192299383386406),
                 hg.LogUniform(9.280730170028132, 13.052787700158762)],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_samples_at_the_extreme_fractions_stay_within_the_bounds(dtype, monkeypatch, key):
    # jax.random.uniform returns exactly 0.0 about once in 2**23 float32 draws (2**52 in float64),
    # and 1 - eps/2 as often; sample() returned 9.999997e-09 for LogUniform(1e-8, 1e-5) in float32
    # (which unconstrain mapped to -inf) and values above hi, where constrain and grid keep inside.
    extremes = np.asarray([0.0, 1 - np.finfo(dtype).eps / 2], dtype)

    def uniform(k, shape, *args, **kwargs):
        return jnp.asarray(np.resize(extremes, math.prod(shape)).reshape(shape))

    hg.clear_caches()  # a draw compiled before would not call the fake
    monkeypatch.setattr(jax.random, "uniform", uniform)
    try:
        for dist in EXTREME_DRAWS[dtype]:
            space = hg.Space({"x": dist, "y": hg.Uniform(0.0, 1.0, shape=(2,), independent=True)})
            samples = {name: np.asarray(v) for name, v in space.sample(key, 4).items()}
            x, lo, hi = samples["x"], dtype(dist.lo), dtype(dist.hi)
            assert x.dtype == dtype
            assert np.all(x >= lo) and np.all(x <= hi), (dist, x, lo, hi)
            np.testing.assert_allclose(x, [lo, hi, lo, hi], rtol=8 * np.finfo(dtype).eps)
            np.testing.assert_array_equal(samples["y"], [extremes, extremes, extremes, extremes])
    finally:
        hg.clear_caches()  # drop the programs traced with the fake


# -- bad arguments name what is wrong ------------------------------------------------------------
@pytest.mark.parametrize("method,argname", [("constrain", "z"), ("unconstrain", "hparams")])
def test_bijections_refuse_wrong_shapes_and_unknown_names(method, argname):
    space = hg.Space({"a": hg.Uniform(0.0, 1.0), "b": hg.LogUniform(1e-3, 1.0, shape=(3,))})
    bijection = getattr(space, method)
    # were accepted, returning a (4,) "b" for a (3,) hyperparameter, and ignoring "c"
    with pytest.raises(ValueError, match=rf"Space.{method}\({argname}\)\['b'\] has shape \(4,\), but the space "
                                         r"declares \(3,\)"):
        bijection({"a": 0.5, "b": np.full(4, 0.1)})
    with pytest.raises(ValueError, match=rf"Space.{method}\({argname}\)\['b'\] has shape \(\), but the space "
                                         r"declares \(3,\)"):
        bijection({"a": 0.5, "b": 0.1})
    with pytest.raises(ValueError, match=rf"Space.{method}\({argname}\) has \['c'\], which the space "
                                         r"\['a', 'b'\] does not declare"):
        bijection({"a": 0.5, "b": np.full(3, 0.1), "c": 1.0})
    with pytest.raises(ValueError, match=rf"Space.{method}\({argname}\) must be a dict of name -> array"):
        bijection([0.5, np.full(3, 0.1)])
    # leading axes are a batch of settings (tune's starts unconstrain a population at once)
    batch = bijection({"a": np.full(5, 0.5), "b": np.full((5, 3), 0.1)})
    assert batch["a"].shape == (5,) and batch["b"].shape == (5, 3)


def test_structural_must_be_a_bool_or_none():
    with pytest.raises(ValueError, match=r"Choice\(structural='yes'\) must be True .*False .*or None"):
        hg.Choice([1, 2], structural="yes")  # was truthy: accepted as structural
    with pytest.raises(ValueError, match=r"Choice\(structural=1\) must be True"):
        hg.Choice([1, 2], structural=1)
    assert hg.Choice([1, 2], structural=np.bool_(True)).structural


@pytest.mark.parametrize("cls", [hg.Uniform, hg.LogUniform])
@pytest.mark.parametrize("lo,hi", [(math.nan, 1.0), (0.1, math.nan), (-math.inf, 1.0), (0.1, math.inf)])
def test_non_finite_bounds_are_named_as_such(cls, lo, hi):
    # LogUniform(nan, 1) said "lo must be > 0 for a log scale" (nan > 0 is False)
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(lo=.*both bounds must be finite"):
        cls(lo, hi)


# -- unconstrain of a bound ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("dist", [hg.Uniform(0.0, 0.99), hg.Uniform(1.0, 1.000001), hg.Uniform(-1e30, 1e30),
                                  hg.Uniform(0.0, 0.9), hg.LogUniform(1e-3, 3.0), hg.LogUniform(0.9, 0.99)], ids=ids)
def test_a_bound_as_the_dtype_holds_it_unconstrains_to_infinity(dist, dtype):
    # The fraction of a bound rounded inside (0, 1): in float32, Uniform(0, 0.99) mapped hi to
    # 16.6 and Uniform(1, 1.000001) to 3.02; in float64, Uniform(-1e30, 1e30) mapped hi to 36.7.
    lo, hi = dtype(dist.lo), dtype(dist.hi)
    space = hg.Space({"x": dist})
    beyond = [np.nextafter(lo, dtype(-np.inf)), np.nextafter(hi, dtype(np.inf))]
    values = np.asarray([lo, hi, *beyond], dtype)
    for z in (dist.unconstrain(values), space.unconstrain({"x": values})["x"], jax.jit(dist.unconstrain)(values)):
        assert z.dtype == dtype
        np.testing.assert_array_equal(z, [-np.inf, np.inf, -np.inf, np.inf])
    # constrain never returns a bound; its extremes are one step inside, finite or not
    inside = np.asarray(dist.constrain(jnp.asarray([-1e3, 1e3], dtype)))
    assert lo < inside[0] < inside[1] < hi
    assert not np.any(np.isnan(np.asarray(dist.unconstrain(inside))))
    # the derivative stays a number inside, and is 0 (not NaN) on a bound, where z is constant
    assert np.isfinite(jax.grad(dist.unconstrain)(jnp.asarray(dist.centre, dtype)))
    assert [float(jax.grad(dist.unconstrain)(jnp.asarray(v))) for v in (lo, hi)] == [0.0, 0.0]


def test_sampling_any_count_up_to_a_power_of_two_is_one_program_and_a_prefix():
    # The draw was compiled for every new n (0.4-0.5 s each: a search continued to a new count, a
    # population of a new size); the first n draws of a key are the same however many are drawn,
    # so one program per power of two gives the same numbers.
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(4,), independent=True), "m": hg.Uniform(0.0, 0.9),
                      "act": hg.Choice(["tanh", "relu"], structural=True), "wd": hg.Choice([0.0, 1e-4, 1e-2])})
    key = jax.random.key(3)
    whole = {name: np.asarray(v) for name, v in space.sample(key, 40, stream=7).items()}
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *a, **k: compiles.append(event) if event.endswith("backend_compile_duration") else None)
    for n in (33, 35, 64):  # one bucket: 64
        part = space.sample(key, n, stream=7)
        for name in space.names:
            assert part[name].shape[0] == n and part[name].dtype == whole[name].dtype
            np.testing.assert_array_equal(np.asarray(part[name])[:33], whole[name][:33])
    assert len(compiles) == 0


def _ulps_above(value, count):
    for _ in range(count):
        value = float(np.nextafter(value, np.inf))
    return value


@pytest.mark.parametrize("make", [hg.Uniform, hg.LogUniform])
@pytest.mark.parametrize("lo", [1 / 3, 1000.0, 1e10, 5.8e24])
def test_bounds_with_no_value_between_them_are_refused(make, lo):
    # were accepted, and constrain(z) returned lo for every z (its clip interval was inverted)
    with pytest.raises(ValueError, match=rf"{make.__name__}\(lo=.*\): no float64 number lies strictly between lo "
                                         "and hi.*widen the range"):
        make(lo, _ulps_above(lo, 1))


@pytest.mark.parametrize("make", [hg.Uniform, hg.LogUniform])
@pytest.mark.parametrize("lo", [1 / 3, 1000.0, 1e10, 5.8e24, 2.8735015529008603e-28])
@pytest.mark.parametrize("gap", [2, 3, 5, 40, 400])
def test_bounds_a_few_ulps_apart_keep_constrain_centre_and_grid_inside(make, lo, gap):
    # accepted, but the centre was lo or hi (not constrain(0)), and LogUniform's grid left [lo, hi]
    try:
        dist = make(lo, _ulps_above(lo, gap))
    except ValueError as err:  # refused, where its log scale would have no width (e.g. 1e10 + 2 ulps)
        assert make is hg.LogUniform and "log(lo) and log(hi) are the same float64 number" in str(err)
        return
    for z in (-1e4, -40.0, -1.0, 0.0, 1.0, 40.0, 1e4):
        assert dist.lo < float(dist.constrain(jnp.asarray(z))) < dist.hi, z
    assert float(dist.centre) == float(dist.constrain(jnp.asarray(0.0)))
    grid = dist.grid_values(7)
    assert grid[0] == dist.lo and grid[-1] == dist.hi
    assert np.all(np.diff(grid) >= 0), grid
    assert dist.lo < dist.grid_values(1)[0] < dist.hi


@pytest.mark.parametrize("lo,hi", [(0.0, np.finfo(np.float64).tiny), (-np.finfo(np.float64).tiny, 0.0)])
def test_bounds_zero_and_the_smallest_normal_are_refused(lo, hi):
    # XLA flushes subnormals to zero, so nothing lies between 0 and the smallest normal number
    with pytest.raises(ValueError, match="no float64 number lies strictly between lo and hi"):
        hg.Uniform(lo, hi)


def test_bounds_either_side_of_zero_by_the_smallest_normal_constrain_to_zero():
    # the step inside from -tiny was a subnormal flushed back to -tiny (the bound); it is 0
    tiny = float(np.finfo(np.float64).tiny)
    dist = hg.Uniform(-tiny, tiny)
    for z in (-1e4, 0.0, 1e4):
        assert float(dist.constrain(jnp.asarray(z))) == 0.0


def test_a_span_below_the_smallest_normal_and_a_zero_width_log_scale_are_refused():
    # both were accepted, and unconstrain(constrain(z)) was NaN: the fraction divided by a zero width
    tiny = float(np.finfo(np.float64).tiny)
    with pytest.raises(ValueError, match=r"hi - lo is below the smallest normal float64 number.*widen the range"):
        hg.Uniform(tiny, 1.5 * tiny)
    with pytest.raises(ValueError, match=r"LogUniform\(lo=0.0001, .*log\(lo\) and log\(hi\) are the same float64 "
                                         r"number.*widen the range, or use Uniform"):
        hg.LogUniform(1e-4, _ulps_above(1e-4, 2))
    assert np.isfinite(float(hg.Uniform(1e-4, _ulps_above(1e-4, 2)).unconstrain(jnp.asarray(_ulps_above(1e-4, 1)))))
