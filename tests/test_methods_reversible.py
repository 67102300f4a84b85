"""Reversible: exact reversal of SGD with momentum, agreement with Reverse, and its refusals.

float64 throughout (conftest). Tolerance for the agreement with `hg.Reverse()`: relative 1e-6 of
the largest entry of each gradient. Reversible differentiates the fixed-point trajectory, which
differs from the float one by rounding every gradient and step to 2^-40 (~1e-12) and the momentum
to a multiple of 2^-30 (~1e-9); over these short runs that moves the hypergradient by ~1e-9
relative (measured), so 1e-6 leaves room for longer and more chaotic runs while still catching
any wrong term of the reverse pass (those are O(1) errors).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods import reversible
from hypergrad.methods.reversible import MOMENTUM_BITS, Reversible, _mul, _pack, _unmul, _unpack
from hypergrad.problems import sgd_momentum_schedule  # noqa: E402

T = 8
RTOL = 1e-6


def sgd_momentum_scalar(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])


def assert_matches_reverse(objective, hparams, key, method, *, exact=True, via_hypergradient=False):
    """Reversible's value and hypergradient equal Reverse's (relative RTOL), and, with `exact`, the
    reverse pass lands on the initial fixed-point parameters bit for bit and on v_0 = 0."""
    value, grads = hg.hypergradient(objective, hparams, key)
    if via_hypergradient:  # the public entry point (one compiled program)
        value_rev, grads_rev = hg.hypergradient(objective, hparams, key, method=method)
        out = None
    else:  # one program that also returns the reconstruction
        method.check(objective, hparams)
        out = jax.jit(lambda h, k: method.run(objective, h, k))(hparams, key)
        value_rev, grads_rev = out.value, out.grads
    np.testing.assert_allclose(value_rev, value, rtol=1e-9)
    assert jax.tree.structure(grads_rev) == jax.tree.structure(grads)
    for name in hparams:
        expected, ours = np.asarray(grads[name]), np.asarray(grads_rev[name])
        assert ours.shape == expected.shape and ours.dtype == expected.dtype
        assert np.max(np.abs(expected)) > 0
        np.testing.assert_allclose(ours, expected, rtol=0, atol=RTOL * np.max(np.abs(expected)), err_msg=name)
    if exact and out is not None:
        initial, reconstructed, velocity = out.initial, out.reconstructed, out.velocity0
        assert jax.tree.structure(initial) == jax.tree.structure(reconstructed)
        for a, b, v in zip(jax.tree.leaves(initial), jax.tree.leaves(reconstructed), jax.tree.leaves(velocity)):
            assert a.dtype == jnp.int64 and b.dtype == jnp.int64
            np.testing.assert_array_equal(b, a)
            np.testing.assert_array_equal(v, 0)
        # The initial integers really are the problem's initial parameters on the 2^-radix grid.
        state = objective.loop().init(hparams, key)
        for a, p in zip(jax.tree.leaves(initial), jax.tree.leaves(state.params)):
            np.testing.assert_array_equal(a, np.round(np.asarray(p, np.float64) * 2.0 ** method.radix_bits))
    return grads_rev


# -- the integer kernels -------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1.0, 0.999, 0.9, 0.5, 0.37, 2.0 ** -8])
def test_multiplication_by_the_momentum_is_exactly_undone(m):
    n = jnp.asarray(round(m * 2 ** MOMENTUM_BITS), jnp.int64)
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.integers(-2 ** 61, 2 ** 61, 2000), rng.integers(-5000, 5000, 2000), [0, -1, 1]])
    v = jnp.asarray(v, jnp.int64)
    q, j = _mul(v, n)
    # q is floor(v m) (checked with Python's big integers), j a small fiber index.
    expected = [(int(a) * int(n)) >> MOMENTUM_BITS for a in np.asarray(v)[:50]]
    assert np.asarray(q)[:50].tolist() == expected
    base = -(-(2 ** MOMENTUM_BITS) // int(n))  # ceil(1 / m): the fiber size bound
    assert int(jnp.min(j)) >= 0 and int(jnp.max(j)) < base
    np.testing.assert_array_equal(_unmul(q, j, n), v)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_information_buffer_packs_and_unpacks(bits):
    j = jnp.asarray(np.random.default_rng(bits).integers(0, 2 ** bits, (3, 7)), jnp.int64)
    packed = _pack(j, bits)
    assert packed.dtype == jnp.uint8 and packed.size == -(-21 * bits // 8)
    np.testing.assert_array_equal(_unpack(packed, bits, (3, 7)), j)


# -- agreement with Reverse and exact reversal -----------------------------------------------------
def test_ridge_scalar_lr_momentum_and_decay(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd_momentum_scalar, num_steps=T)
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.7), "weight_decay": jnp.asarray(0.02)}
    assert_matches_reverse(objective, hparams, key, Reversible(), via_hypergradient=True)
    # 1 bit per parameter per step is enough for momentum >= 1/2: same answer, still exact.
    assert_matches_reverse(objective, hparams, key, Reversible(info_bits=1))


def test_logistic_minibatch_schedule_momentum_and_feature_decay(logistic_minibatch_problem):
    objective = hg.Objective(logistic_minibatch_problem, sgd_momentum_schedule, num_steps=T)
    d = logistic_minibatch_problem.train_data[0].shape[1]
    hparams = {"lr": jnp.linspace(0.8, 0.1, T), "momentum": jnp.asarray(0.9),
               "weight_decay": jnp.geomspace(1e-3, 1e-1, d)}
    key = jax.random.key(3)
    grads = assert_matches_reverse(objective, hparams, key, Reversible())
    assert np.all(np.asarray(grads["lr"]) != 0)  # every step of the schedule gets its own derivative


def test_mlp_minibatch_schedule_with_small_momentum(mlp_minibatch_problem, key):
    """The nonconvex case; momentum 0.05 loses ~4.3 bits per parameter per step, all recovered."""
    objective = hg.Objective(mlp_minibatch_problem, sgd_momentum_schedule, num_steps=T)
    hparams = {"lr": jnp.linspace(0.5, 0.2, T), "momentum": jnp.asarray(0.05), "weight_decay": jnp.asarray(1e-2)}
    assert_matches_reverse(objective, hparams, key, Reversible())


def test_value_and_scores_are_those_of_the_trained_parameters(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd_momentum_schedule, num_steps=T)
    hparams = {"lr": jnp.linspace(0.4, 0.1, T), "momentum": jnp.asarray(0.6), "weight_decay": jnp.asarray(1e-2)}
    (value, scores), _ = jax.jit(lambda h, k: Reversible().value_and_grad(objective, h, k, ridge_problem.data))(
        hparams, key)
    expected = objective.evaluate(hparams, key)
    assert set(scores) == set(expected)
    for name in expected:
        np.testing.assert_allclose(scores[name], expected[name], rtol=1e-9)
    assert value == scores["val_loss"]


def test_leaving_the_fixed_point_range_gives_nan(ridge_problem, key):
    """A diverging run overflows int64 (|w| >= 2^21 at radix 2^-40): NaN, never a wrong number."""
    objective = hg.Objective(ridge_problem, sgd_momentum_scalar, num_steps=T)
    hparams = {"lr": jnp.asarray(50.0), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(0.0)}
    value, grads = hg.hypergradient(objective, hparams, key, method=Reversible())
    assert np.isnan(value) and all(np.all(np.isnan(g)) for g in grads.values())


def test_a_reverse_pass_that_misses_the_initial_parameters_gives_nan(ridge_problem, key, monkeypatch):
    """Exactness rests on both passes computing the same gradients bit for bit; where the reverse
    pass arrives anywhere but at (W0, V0 = 0) it did not retrace the forward pass, and its
    hypergradient is NaN, not a number of some other run. Simulated by moving one reconstructed
    integer by one unit of the grid (and, separately, the reconstructed velocity)."""
    objective = hg.Objective(ridge_problem, sgd_momentum_scalar, num_steps=T)
    hparams = {"lr": jnp.asarray(0.1), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(0.01)}
    value, grads = hg.hypergradient(objective, hparams, key, method=Reversible())
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    honest = reversible._backward
    for which in (0, 1):  # W0_rec, then V0_rec
        def disturbed(*args, which=which):
            out = list(honest(*args))
            out[which] = [out[which][0].at[(0,) * out[which][0].ndim].add(1)] + list(out[which][1:])
            return tuple(out)
        monkeypatch.setattr(reversible, "_backward", disturbed)
        (value, _), grads = Reversible().value_and_grad(objective, hparams, key, ridge_problem.data)  # traced anew
        assert np.isnan(value) and all(np.all(np.isnan(g)) for g in grads.values()), which
        monkeypatch.setattr(reversible, "_backward", honest)


def test_a_traced_momentum_it_cannot_reverse_gives_nan_not_a_wrong_number(ridge_problem, key):
    """Rows of one vmapped call: `check` sees only concrete values, so a traced momentum below
    2^-info_bits (or above 1) used to be clipped silently and its row returned the value of another
    momentum. Now such a row is NaN; the rows in range still equal Reverse."""
    objective = hg.Objective(ridge_problem, sgd_momentum_scalar, num_steps=T)
    momenta = jnp.asarray([0.5, 0.002, 0.0, 1.5, 2.0 ** -8])
    rows = {"lr": jnp.full(5, 0.3), "momentum": momenta, "weight_decay": jnp.full(5, 0.02)}
    value, grads = jax.jit(jax.vmap(lambda h: hg.hypergradient(objective, h, key, method=Reversible())))(rows)
    bad = np.array([False, True, True, True, False])
    assert np.isnan(np.asarray(value)[bad]).all() and np.isfinite(np.asarray(value)[~bad]).all()
    for g in grads.values():
        assert np.isnan(np.asarray(g)[bad]).all() and np.isfinite(np.asarray(g)[~bad]).all()
    for i in np.flatnonzero(~bad):
        expected, expected_grads = hg.hypergradient(objective, jax.tree.map(lambda a: a[i], rows), key)
        np.testing.assert_allclose(value[i], expected, rtol=1e-9)
        for name in rows:
            np.testing.assert_allclose(grads[name][i], expected_grads[name], rtol=RTOL)
    # In a population, the tuner started where it cannot reverse fails there and is never best there;
    # with no good iterate it restarts at fresh draws of the space (hypergrad.outer), not at its start.
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "momentum": hg.Uniform(0.0, 0.9),
                      "weight_decay": hg.LogUniform(1e-3, 1e-1)})
    two = {"lr": jnp.full(2, 0.3), "momentum": jnp.asarray([0.5, 0.002]), "weight_decay": jnp.full(2, 0.02)}
    with pytest.warns(RuntimeWarning, match="started where the loss or its hypergradient was not finite"):
        result = hg.tune(objective, space, key, population=2, steps=2, method=Reversible(), init=two)
    outside = [t for t in result.trials if t.tuner == 1]
    assert outside[0].state == "fail" and float(outside[0].hparams["momentum"]) == pytest.approx(0.002)
    assert all(float(t.hparams["momentum"]) != pytest.approx(0.002) for t in outside[1:])
    unreversible = [t for t in result.trials if not 2.0 ** -8 <= float(t.hparams["momentum"]) <= 1.0]
    assert unreversible and all(t.state == "fail" and not np.isfinite(t.value) for t in unreversible)
    assert np.isfinite(result.best_value) and result.best_trial not in unreversible


# -- refusals, before anything is traced ------------------------------------------------------------
def counted(problem):
    count = {"traces": 0}

    def train_loss(params, hparams, batch):
        count["traces"] += 1
        return problem.train_loss(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), count


GOOD = {"lr": jnp.full(T, 0.1), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(1e-2)}


@pytest.mark.parametrize("optimizer", [
    lambda h: optax.adam(h["lr"][0]),
    lambda h: optax.sgd(lambda s: h["lr"][s]),  # momentum ignored
    lambda h: optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"], nesterov=True),
    lambda h: optax.chain(optax.add_decayed_weights(h["weight_decay"]),
                          optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])),
    lambda h: optax.sgd(h["lr"][0], momentum=h["momentum"]),  # constant, not the schedule
    lambda h: optax.sgd(lambda s: h["lr"][s] * jnp.where(s >= 5, 0.1, 1.0), momentum=h["momentum"]),
    lambda h: optax.chain(optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"]), optax.scale(h["mult"])),
], ids=["adam", "no-momentum", "nesterov", "decoupled-decay", "ignores-schedule", "step-decay-at-5",
        "scale-1-at-the-given-point"])
def test_other_optimisers_are_refused_before_tracing(ridge_problem, key, optimizer):
    """Refused at any step (a decay from step 5 of 8) and at any value (a scale that is 1 at the
    given point), and under jit, where the hyperparameters are traced, as outside it."""
    problem, count = counted(ridge_problem)
    objective = hg.Objective(problem, optimizer, num_steps=T)
    hparams = {**GOOD, "lr": jnp.linspace(0.1, 0.05, T), "mult": jnp.asarray(1.0)}
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Reversible supports SGD with momentum only"):
        hg.hypergradient(objective, hparams, key, method=Reversible())
    assert count["traces"] == 0 and _compile.stats.compilations == before
    with pytest.raises(ValueError, match=r"Reversible supports SGD with momentum only"):
        jax.jit(lambda h: hg.hypergradient(objective, h, key, method=Reversible()))(hparams)


_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None)


def test_a_second_hypergradient_at_new_values_compiles_nothing(ridge_problem, key):
    """The optimiser probe of `check` is one program per optimiser, method and T: it was traced and
    compiled again at every call (eager), so each hypergradient paid seconds of checking. Its verdict
    still follows the values: a momentum out of the reversible range is refused at the same shapes."""
    objective = hg.Objective(ridge_problem, sgd_momentum_schedule, num_steps=T)
    hparams = dict(GOOD)
    hg.hypergradient(objective, hparams, key, method=Reversible())
    before = len(_COMPILES)
    for lr in (0.05, 0.2):
        value, grads = hg.hypergradient(objective, {**hparams, "lr": jnp.full(T, lr)}, key, method=Reversible())
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    assert len(_COMPILES) == before
    clipped = hg.Objective(ridge_problem, lambda h: optax.chain(optax.clip(1e-3), sgd_momentum_schedule(h)),
                           num_steps=T)
    with pytest.raises(ValueError, match=r"Reversible supports SGD with momentum only"):
        hg.hypergradient(clipped, hparams, key, method=Reversible())


def test_a_model_that_reads_hyperparameters(key):
    """init(key, hparams) and val_loss(params, hparams, batch) read hyperparameters: their direct
    and through-initialisation terms are in the hypergradient (they were dropped: zero)."""
    rng = np.random.default_rng(0)
    x, x_val = rng.normal(size=(40, 4)), rng.normal(size=(20, 4))
    w = rng.normal(size=4)
    data, val = (x, x @ w + 0.1 * rng.normal(size=40)), (x_val, x_val @ w)

    def train_loss(p, h, b):
        return jnp.mean((b[0] @ p["w"] - b[1]) ** 2) + h["weight_decay"] * jnp.sum(p["w"] ** 2)

    problem = hg.Problem(init=lambda k, h: {"w": h["init_scale"] * jax.random.normal(k, (4,))},
                         train_loss=train_loss, val_loss=lambda p, h, b: jnp.mean((h["out_scale"] * (b[0] @ p["w"])
                                                                                 - b[1]) ** 2),
                         train_data=data, val_data=val, model_reads_hparams=True)
    objective = hg.Objective(problem, sgd_momentum_scalar, num_steps=T)
    hparams = {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.75), "weight_decay": jnp.asarray(0.01),
               "init_scale": jnp.asarray(0.5), "out_scale": jnp.asarray(1.1)}
    grads = assert_matches_reverse(objective, hparams, key, Reversible())
    assert abs(float(grads["init_scale"])) > 1e-3 and abs(float(grads["out_scale"])) > 1e-3


@pytest.mark.parametrize("hparams, method, match", [
    ({"lr": GOOD["lr"], "weight_decay": 0.1}, Reversible(), r"Reversible\(momentum='momentum'\): hparams has no"),
    (GOOD, Reversible(lr="eta"), r"Reversible\(lr='eta'\): hparams has no 'eta'"),
    ({**GOOD, "lr": jnp.full(T - 1, 0.1)}, Reversible(), r"shape \(7,\); give a scalar or a per-step schedule"),
    ({**GOOD, "momentum": jnp.full(3, 0.9)}, Reversible(), r"the momentum must be a scalar"),
    ({**GOOD, "momentum": 0.3}, Reversible(info_bits=1), r"Reversible\(info_bits=1\) reverses momentum in"),
    ({**GOOD, "momentum": 1e-4}, Reversible(), r"raise info_bits .* or use hg.Reverse\(\)"),
], ids=["no-momentum", "renamed-lr", "short-schedule", "shaped-momentum", "momentum-below-floor",
        "tiny-momentum"])
def test_unsupported_hyperparameters_are_refused(ridge_problem, key, hparams, method, match):
    problem, count = counted(ridge_problem)
    objective = hg.Objective(problem, sgd_momentum_schedule, num_steps=T)
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, hparams, key, method=method)
    assert count["traces"] == 0


def test_renamed_hyperparameters(ridge_problem, key):
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(lambda s: h["eta"][s], momentum=h["beta"]),
                             num_steps=T)
    hparams = {"eta": jnp.linspace(0.3, 0.1, T), "beta": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.01)}
    assert_matches_reverse(objective, hparams, key, Reversible(lr="eta", momentum="beta"), via_hypergradient=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 3}, r"Reversible\(lr=3\) must be the name"),
    ({"momentum": ""}, r"Reversible\(momentum=''\) must be the name"),
    ({"lr": "a", "momentum": "a"}, r"must be different"),
    ({"radix_bits": 60}, r"Reversible\(radix_bits=60\) must be an int in \[8, 56\]"),
    ({"radix_bits": 40.0}, r"radix_bits=40.0"),
    ({"info_bits": 3}, r"Reversible\(info_bits=3\) must be 1, 2, 4 or 8"),
    ({"info_bits": True}, r"info_bits=True"),
])
def test_bad_fields_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reversible(**kwargs)


def test_is_immutable_and_hashable_by_value():
    assert Reversible(info_bits=4) == Reversible(info_bits=4)
    assert hash(Reversible()) == hash(Reversible())
    assert Reversible() != Reversible(info_bits=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reversible().info_bits = 1


# -- inside tune -----------------------------------------------------------------------------------
def test_tune_lowers_the_validation_loss_on_digits():
    """Softmax regression on digits (minibatches of 64, a per-step schedule): the digits MLP works
    the same way but compiles several times slower, and this file must stay fast."""
    steps_inner = 20
    problem = hg.problems.logistic("digits", batch_size=64)
    objective = hg.Objective(problem, sgd_momentum_schedule, num_steps=steps_inner)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(steps_inner,)), "momentum": hg.Uniform(0.1, 0.95),
                      "weight_decay": hg.LogUniform(1e-6, 1e-1)})
    init = {"lr": jnp.full((steps_inner,), 0.01), "momentum": 0.5, "weight_decay": 1e-3}  # too small a step
    result = hg.tune(objective, space, jax.random.key(0), method=Reversible(), outer=optax.adam(0.3), steps=6,
                     init=init)
    start = result.trials[0]
    assert all(t.state == "complete" and np.isfinite(t.value) for t in result.trials)
    assert result.best_value < 0.9 * start.value
    assert result.trials[-1].value < start.value


def test_hybrid_search_checks_every_configuration(ridge_problem, key):
    """A held choice of optimiser (SGD or Adam, selected by its index): hybrid_search with
    Reversible refuses the Adam configuration, before compiling. Only the first configuration (SGD)
    was checked, and Adam's were reversed as SGD: wrong values and gradients."""
    def optimizer(h):
        momentum_sgd = optax.sgd(h["lr"], momentum=h["momentum"])
        return hg.select_transform(jnp.asarray(h["solver"], jnp.int32), (momentum_sgd, optax.adam(h["lr"])))

    objective = hg.Objective(ridge_problem, optimizer, num_steps=T)
    space = hg.Space({"lr": hg.LogUniform(0.01, 0.1), "momentum": hg.Uniform(0.5, 0.9),
                      "weight_decay": hg.LogUniform(1e-3, 1e-1), "solver": hg.Choice([0, 1])})
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Reversible supports SGD with momentum only"):
        hg.hybrid_search(objective, space, key, budget=60, method=Reversible())
    assert _compile.stats.compilations == before
    sgd_only = hg.Space({**{n: space[n] for n in ("lr", "momentum", "weight_decay")}, "solver": hg.Choice([0])})
    result = hg.hybrid_search(objective, sgd_only, key, budget=30, method=Reversible())  # SGD alone: reversed
    assert all(np.isfinite(t.value) for t in result.trials)


# -- the optimiser Reversible reverses is the one that trains --------------------------------------
def large_input_ridge():
    """Ridge on inputs of scale 30: the first training gradient has norm 1623, far above the
    gradients of size <= 10 the probe once drew, so a clip threshold of 200 changes training."""
    rng = np.random.default_rng(0)
    x, x_val = 30.0 * rng.normal(size=(30, 3)), 30.0 * rng.normal(size=(10, 3))
    w = np.array([1.0, -2.0, 0.5])
    mse = lambda p, b: 0.5 * jnp.mean((b[0] @ p["w"] - b[1]) ** 2)  # noqa: E731
    return hg.Problem(init=lambda k: {"w": jnp.zeros(3)},
                      train_loss=lambda p, h, b: mse(p, b) + 0.5 * h["weight_decay"] * jnp.sum(p["w"] ** 2),
                      val_loss=mse, train_data=(x, x @ w + rng.normal(size=30)), val_data=(x_val, x_val @ w))


LARGE = {"lr": jnp.asarray(1e-4), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(0.1)}


@pytest.mark.parametrize("transform", [
    lambda: optax.clip_by_global_norm(200.0),
    lambda: optax.clip_by_global_norm(1e4),
    lambda: optax.clip(1e5),
    lambda: optax.stateless(lambda u, p: jax.tree.map(lambda g: jnp.where(jnp.abs(g) < 1e-6, 0.0, g), u)),
], ids=["global-norm-200", "global-norm-1e4", "elementwise-1e5", "dead-zone-1e-6"])
def test_thresholds_anywhere_in_the_fixed_point_range_are_refused(key, transform):
    """A clip passed the probe, whose gradients stayed below ~10, and Reversible then reversed
    unclipped SGD: with a threshold of 200 (training gradients of norm 1623) it returned the value
    103.0 of another run (the objective's is 1345.6), silently. The probe's gradients now span the
    whole range the fixed point represents (2^-40 to 2^20 at the default radix)."""
    problem, count = counted(large_input_ridge())
    objective = hg.Objective(problem, lambda h: optax.chain(transform(), optax.sgd(h["lr"], momentum=h["momentum"])),
                             num_steps=6)
    with pytest.raises(ValueError, match=r"Reversible supports SGD with momentum only"):
        hg.hypergradient(objective, LARGE, key, method=Reversible())
    assert count["traces"] == 0


def test_training_that_differs_from_the_reversed_sgd_gives_nan_not_a_wrong_number(key):
    """Where the probe cannot compare (the optimiser closes over a traced choice: rows of one
    vmapped call) or compares at stand-in values (hyperparameters traced under jit), the forward
    pass checks every step's fixed-point update against the objective's own optimiser on the real
    gradients: a row that trains differently (here clipped at 200, or halving rates above 0.2)
    is NaN, and `matched` says why. Before, such rows returned another run's value."""
    problem = large_input_ridge()

    def optimizer(h):
        momentum_sgd = optax.sgd(h["lr"], momentum=h["momentum"])
        return hg.select_transform(jnp.asarray(h["solver"], jnp.int32),
                                   (momentum_sgd, optax.chain(optax.clip_by_global_norm(200.0), momentum_sgd)))

    objective = hg.Objective(problem, optimizer, num_steps=6)
    value, grads = jax.jit(jax.vmap(lambda s: hg.hypergradient(objective.with_fixed({"solver": s}), LARGE, key,
                                                               method=Reversible())))(jnp.asarray([0, 1]))
    assert np.isnan(value[1]) and all(np.isnan(g[1]) for g in grads.values())
    plain = objective.with_fixed({"solver": jnp.asarray(0)})
    expected, expected_grads = hg.hypergradient(plain, LARGE, key)
    np.testing.assert_allclose(value[0], expected, rtol=1e-8)  # momentum rounded to 2^-30: 1.1e-9 here
    for name in LARGE:
        np.testing.assert_allclose(grads[name][0], expected_grads[name], rtol=RTOL)

    # Under jit the probe sees stand-in rates in [0.01, 0.1]; this optimiser halves rates above 0.2.
    halving = hg.Objective(ridge_fixture_problem(), lambda h: optax.sgd(
        jnp.where(h["lr"] > 0.2, 0.5 * h["lr"], h["lr"]), momentum=h["momentum"]), num_steps=T)
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.7), "weight_decay": jnp.asarray(0.02)}
    out = jax.jit(lambda h: Reversible().run(halving, h, key))(hparams)
    assert np.isnan(out.value) and all(np.isnan(g) for g in out.grads.values()) and not out.matched
    below = {**hparams, "lr": jnp.asarray(0.15)}  # the same optimiser where it is SGD: reversed, matched
    out = jax.jit(lambda h: Reversible().run(halving, h, key))(below)
    assert out.matched
    np.testing.assert_allclose(out.value, halving(below, key), rtol=1e-9)


def ridge_fixture_problem():
    return hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)


def test_float32_training_over_many_steps_matches_without_false_alarms(key):
    """The forward pass's comparison allows for the fixed point's rounding (it grows with t) and
    for an optimiser computing in float32: 2000 steps of float32 SGD are matched, not NaN."""
    problem = hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=16)
    problem32 = dataclasses.replace(problem, init=lambda k: jax.tree.map(lambda a: a.astype(jnp.float32),
                                                                         problem.init(k)))
    objective = hg.Objective(problem32, lambda h: optax.sgd(h["lr"], momentum=h["momentum"],
                                                            accumulator_dtype=jnp.float32), num_steps=2000)
    hparams = {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.9), "weight_decay": jnp.asarray(1e-3)}
    out = jax.jit(lambda h: Reversible().run(objective, h, key))(hparams)
    assert out.matched and np.isfinite(out.value)
