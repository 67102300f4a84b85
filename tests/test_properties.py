"""Property-based tests (hypothesis) of issue 19: `Space`, `Problem` construction and the
`hypergrad` command line's arguments.

Valid inputs: a space's bijection round-trips (z -> value -> z, value -> z -> value), every value,
sample and grid point lies inside its bounds with the declared shapes, and nothing is NaN. Bad
inputs: a `ValueError` naming the argument (or, for the command line, argparse's usage error naming
the option), never an exception from inside JAX or numpy, never a NaN result. Runs in float64
(tests/conftest.py). Example counts are small (`FEW`) so the file runs in a few seconds.
"""

import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hypergrad as hg
from hypergrad import cli

# derandomize: the same examples on every run (a CI failure reproduces; no example database kept)
FEW = settings(max_examples=25, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])
# Each new space or shape compiles small programs (a sample is one program per space): fewer examples
COMPILING = settings(FEW, max_examples=10)

# subnormal bounds are refused (XLA flushes them to zero: `hg.Uniform`), so none is drawn
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)
shapes = st.sampled_from([(), (1,), (3,), (2, 3)])


@st.composite
def uniform_bounds(draw):
    lo = draw(finite)
    width = draw(st.floats(min_value=1e-3, max_value=1e6))
    return lo, lo + width


@st.composite
def log_bounds(draw):
    log_lo = draw(st.floats(min_value=-20, max_value=10))
    decades = draw(st.floats(min_value=0.01, max_value=12))
    return 10.0 ** log_lo, 10.0 ** (log_lo + decades)


@st.composite
def distributions(draw):
    if draw(st.booleans()):
        lo, hi = draw(uniform_bounds())
        return hg.Uniform(lo, hi, shape=draw(shapes), independent=draw(st.booleans()))
    lo, hi = draw(log_bounds())
    return hg.LogUniform(lo, hi, shape=draw(shapes), independent=draw(st.booleans()))


spaces = st.dictionaries(st.sampled_from(["a", "b", "c"]), distributions(), min_size=1, max_size=3).map(hg.Space)


def _inside(value, dist) -> bool:
    value = np.asarray(value)
    return bool(np.all(np.isfinite(value)) and np.all(value >= dist.lo) and np.all(value <= dist.hi))


# -- Space: valid inputs ----------------------------------------------------------------------------
@COMPILING
@given(spaces, st.floats(min_value=-30, max_value=30))
def test_constrain_is_inside_and_unconstrain_inverts_it(space, z0):
    z = {name: jnp.full(dist.shape, z0) for name, dist in space.items}
    values = space.constrain(z)
    back = space.unconstrain(values)
    u = 1 / (1 + math.exp(-z0))
    for name, dist in space.items:
        assert values[name].shape == dist.shape
        assert _inside(values[name], dist) and bool(jnp.all(values[name] > dist.lo)), (name, dist, z0)
        np.testing.assert_allclose(back[name], z0, rtol=0, atol=_round_trip_error(dist, u))


def _round_trip_error(dist, u: float) -> float:
    """A bound on |z' - z| after z -> value -> z' in float64: the fraction u = sigmoid(z) comes back
    within a few ulps of the value (or of its log) relative to the range, and z = logit(u) moves
    by that over u (1 - u)."""
    if isinstance(dist, hg.LogUniform):
        lo, hi = math.log(dist.lo), math.log(dist.hi)
        scale = (abs(lo) + abs(hi) + 1) / (hi - lo)
    else:
        scale = (abs(dist.lo) + abs(dist.hi)) / (dist.hi - dist.lo)
    return 16 * np.finfo(np.float64).eps * scale / (u * (1 - u))


@COMPILING
@given(spaces, st.floats(min_value=0.001, max_value=0.999))
def test_values_round_trip_through_the_unconstrained_coordinates(space, fraction):
    values = {}
    for name, dist in space.items:
        if isinstance(dist, hg.LogUniform):
            value = math.exp(math.log(dist.lo) + fraction * math.log(dist.hi / dist.lo))
        else:
            value = dist.lo + fraction * (dist.hi - dist.lo)
        values[name] = jnp.full(dist.shape, value)
    again = space.constrain(space.unconstrain(values))
    for name in space:
        np.testing.assert_allclose(again[name], values[name], rtol=1e-9, atol=1e-9 * float(np.max(np.abs(values[name]))))


@COMPILING
@given(spaces, st.sampled_from([1, 5]), st.integers(0, 2**31 - 1))
def test_samples_lie_inside_with_their_shapes(space, n, seed):
    samples = space.sample(jax.random.key(seed), n)
    for name, dist in space.items:
        value = np.asarray(samples[name])
        assert value.shape == (n, *dist.shape)
        assert _inside(value, dist), (name, dist)
        if dist.shape and not dist.independent:  # one value per setting, broadcast to the shape
            assert np.all(value == value.reshape(n, -1)[:, :1].reshape((n,) + (1,) * len(dist.shape)))


@FEW
@given(spaces, st.integers(1, 3))
def test_grids_hold_their_bounds_and_size(space, points):
    axes = sum(dist.num_axes for _, dist in space.items)
    if points ** axes > 2000:
        return  # an independent shaped hyperparameter grows the grid as points ** size
    grid = space.grid(points)
    for name, dist in space.items:
        value = np.asarray(grid[name])
        assert value.shape == (points ** axes, *dist.shape)
        assert _inside(value, dist)
        if points > 1:
            assert value.min() == dist.lo and value.max() == dist.hi
        else:
            assert dist.lo < value.min() == value.max() < dist.hi


# -- Space: bad inputs ------------------------------------------------------------------------------
bad_numbers = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.none(), st.text(max_size=3),
                        st.just([1.0, 2.0]))


@FEW
@given(st.sampled_from([hg.Uniform, hg.LogUniform]), bad_numbers, st.booleans())
def test_a_bound_that_is_not_a_finite_number_is_a_value_error(kind, bad, bad_is_lo):
    lo, hi = (bad, 10.0) if bad_is_lo else (1.0, bad)
    with pytest.raises(ValueError, match=r"lo=|hi="):
        kind(lo, hi)


@FEW
@given(st.sampled_from([hg.Uniform, hg.LogUniform]), st.floats(min_value=1e-3, max_value=1e6), st.floats(0, 1e6))
def test_bounds_in_the_wrong_order_are_a_value_error(kind, lo, below):
    with pytest.raises(ValueError, match="lo"):
        kind(lo, lo - below)


@FEW
@given(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1e-3, max_value=1e3))
def test_a_log_scale_from_zero_or_below_is_a_value_error(lo, hi):
    # -inf is named as not finite (checked first), any other lo <= 0 as below a log scale's start
    with pytest.raises(ValueError, match="both bounds must be finite" if lo == -np.inf else "lo must be > 0"):
        hg.LogUniform(lo, hi)


@FEW
@given(st.floats(min_value=0.9e308, max_value=1.7e308))
def test_a_range_too_wide_for_floats_is_a_value_error(width):
    with pytest.raises(ValueError, match="hi - lo"):
        hg.Uniform(-width, width)


@FEW
@given(st.one_of(st.just((0,)), st.just((-1, 2)), st.just((2.5,)), st.just("ab"), st.just(3), st.just((None,))))
def test_a_bad_shape_is_a_value_error(shape):
    with pytest.raises(ValueError, match="shape"):
        hg.Uniform(0.0, 1.0, shape=shape)


@FEW
@given(st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.just(True), st.text(max_size=2)))
def test_a_bad_count_of_samples_or_grid_points_is_a_value_error(count):
    space = hg.Space({"a": hg.Uniform(0.0, 1.0)})
    with pytest.raises(ValueError, match="n="):
        space.sample(jax.random.key(0), count)
    with pytest.raises(ValueError, match="points_per_axis"):
        space.grid(count)


@FEW
@given(st.one_of(st.just({}), st.just([("a", hg.Uniform(0, 1))]), st.just({1: hg.Uniform(0, 1)}),
                 st.just({"a": (0, 1)}), st.just({"a": None})))
def test_a_bad_space_is_a_value_error(distributions):
    with pytest.raises(ValueError, match="Space"):
        hg.Space(distributions)


@FEW
@given(shapes, shapes)
def test_hyperparameters_of_the_wrong_shape_are_a_value_error(declared, given_shape):
    space = hg.Space({"a": hg.Uniform(0.0, 1.0, shape=declared)})
    if declared == given_shape:
        space.check({"a": np.zeros(given_shape)})
        return
    with pytest.raises(ValueError, match=r"hparams\['a'\]"):
        space.check({"a": np.zeros(given_shape)})


# -- Problem construction ---------------------------------------------------------------------------
def _loss(params, hparams, batch):
    return jnp.mean((batch[0] @ params - batch[1]) ** 2)


def _val(params, batch):
    return _loss(params, {}, batch)


def _problem(**changes):
    x, y = np.ones((6, 2)), np.zeros(6)
    base = dict(init=lambda key: jnp.zeros(2), train_loss=_loss, val_loss=_val, train_data=(x, y), val_data=(x, y))
    return hg.Problem(**{**base, **changes})


@FEW
@given(st.integers(1, 6))
def test_a_valid_problem_builds_and_gives_finite_scores(batch_size):
    problem = _problem(batch_size=batch_size)
    scores = problem.scores(jnp.zeros(2), problem.data)
    assert all(math.isfinite(float(v)) for v in scores.values())


bad_problems = st.one_of(
    st.tuples(st.just("init"), st.sampled_from([None, 3, "f"])),
    st.tuples(st.just("train_loss"), st.sampled_from([None, 3])),
    st.tuples(st.just("batch_size"), st.one_of(st.integers(max_value=0), st.integers(7, 100), st.floats(1, 5),
                                               st.just(True), st.text(max_size=2))),
    st.tuples(st.just("train_data"), st.sampled_from([(), {}, (np.ones((6, 2)), np.zeros(5)), (np.ones(()),),
                                                      (np.ones((0, 2)), np.zeros(0)),
                                                      (np.array([["a", "b"]] * 6), np.zeros(6)),
                                                      (np.full((6, 2), np.nan), np.zeros(6)),
                                                      (np.ones((6, 2)), np.full(6, np.inf)),
                                                      ([[1.0, 2.0], [3.0]], [0.0, 1.0])])),
    st.tuples(st.just("val_data"), st.sampled_from([(np.ones((6, 2)), np.zeros(4)), None,
                                                    (np.ones((6, 2)) * np.nan, np.zeros(6))])),
    st.tuples(st.just("test_data"), st.sampled_from([(np.ones((3, 2)), np.zeros(2)), (np.zeros(()),)])),
    st.tuples(st.just("metrics"), st.sampled_from([{"acc": 3}, ["acc"], "acc"])),
    st.tuples(st.just("cv"), st.sampled_from([1, 0, -2, 2.5, True, "3", 13, [(np.arange(3), np.arange(3, 6))]])),
    st.tuples(st.just("cv_labels"), st.sampled_from([np.zeros(12), np.zeros(5)])),
)


@FEW
@given(bad_problems)
def test_a_bad_problem_is_a_value_error_naming_the_argument(change):
    argname, value = change
    with pytest.raises(ValueError, match=argname):
        _problem(**{argname: value})


# -- the command line -------------------------------------------------------------------------------
def _parse(argv):
    """(args, None) when `argv` parses, else (None, argparse's usage message)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return cli.build_parser().parse_args(["compare", *argv]), None
    except SystemExit as exit_:
        assert exit_.code == 2, f"{argv}: exit code {exit_.code}"
        return None, stderr.getvalue()


BAD_NUMBERS = ["nan", "inf", "-inf", "abc", "", "1e400"]
bad_options = st.one_of(
    st.tuples(st.sampled_from(["--budget", "--outer-lr"]),
              st.one_of(st.sampled_from(BAD_NUMBERS + ["0", "-1"]), st.floats(max_value=0).map(repr))),
    st.tuples(st.sampled_from(["--steps", "--chunk-size", "--checkpoint-every"]),
              st.one_of(st.sampled_from(BAD_NUMBERS + ["2.5", "1e3"]), st.integers(max_value=0).map(str))),
    st.tuples(st.just("--cpu-devices"), st.one_of(st.sampled_from(BAD_NUMBERS + ["1.5"]),
                                                  st.integers(max_value=-1).map(str))),
    st.tuples(st.just("--seed"), st.one_of(st.sampled_from(BAD_NUMBERS + ["0.5"]), st.integers(max_value=-1).map(str),
                                           st.integers(min_value=2**32).map(str))),
    st.tuples(st.just("--problem"), st.sampled_from(["", ",", "nope", "digits-mlp,nope", "Digits-MLP"])),
)


@FEW
@given(bad_options)
def test_a_bad_command_line_value_is_a_usage_error_naming_the_option(option):
    name, value = option
    args, message = _parse([name, value])
    assert args is None, f"{name} {value!r} was accepted"
    assert name in message and "usage:" in message, message


good_options = st.one_of(
    st.tuples(st.sampled_from(["--budget", "--outer-lr"]),
              st.floats(min_value=1e-6, max_value=1e6).map(repr)),
    st.tuples(st.sampled_from(["--steps", "--chunk-size", "--checkpoint-every"]), st.integers(1, 10**6).map(str)),
    st.tuples(st.just("--cpu-devices"), st.integers(0, 64).map(str)),
    st.tuples(st.just("--seed"), st.integers(0, 2**32 - 1).map(str)),
)


@FEW
@given(good_options)
def test_a_good_command_line_value_is_read_as_given(option):
    name, value = option
    args, message = _parse([name, value])
    assert message is None, message
    read = getattr(args, name[2:].replace("-", "_"))
    assert read == (float(value) if name in ("--budget", "--outer-lr") else int(value))
