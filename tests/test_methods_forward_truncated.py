"""Forward (forward-mode, block sharing) and Truncated (reverse mode through the last steps).

Checked against hg.Reverse in float64: Forward == Reverse (relative 1e-10; measured ~1e-14) on
ridge, logistic and a minibatch MLP with scalar and shaped hyperparameters; block-shared Forward
against Reverse summed over the blocks; Truncated(window > T) == Reverse (1e-10); Truncated(T - 1)
and short windows against independently written training loops whose state is cut with
stop_gradient before the window (one from the problem's public functions and a plain optax loop). Both
work in hg.hypergradient (also under jit/vmap) and in hg.tune, and refuse bad inputs clearly.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.forward import Forward
from hypergrad.methods.truncated import Truncated
from hypergrad.problems import sgd_momentum_schedule  # noqa: E402
from _helpers import sgd_scalar_momentum, sgd_schedule  # noqa: E402
from _helpers import stop_gradient_reference as reference_program  # noqa: E402

T = 8  # training steps of the small problems


def f64(hparams):
    return {name: jnp.asarray(value, jnp.float64) for name, value in hparams.items()}


def assert_grads_close(actual, expected, rtol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert np.any(e != 0), f"{name}: the reference gradient is zero, the comparison would be vacuous"
        # relative per element, with a floor far below the gradient's scale for elements near zero
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-12 * np.max(np.abs(e)), err_msg=name)


def counted(problem):
    """The problem with a train_loss that counts its traces (a refusal must come before any)."""
    traces = {"count": 0}

    def train_loss(params, hparams, batch):
        traces["count"] += 1
        return problem.train_loss(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), traces


# -- cases ---------------------------------------------------------------------------------------
def ridge_shaped(ridge_problem):
    d = ridge_problem.train_data[0].shape[1]
    return (hg.Objective(ridge_problem, sgd_schedule, num_steps=T),
            {"lr": jnp.linspace(0.4, 0.1, T), "weight_decay": jnp.geomspace(1e-3, 1e-1, d)})


def ridge_scalars(ridge_problem):
    return (hg.Objective(ridge_problem, sgd_scalar_momentum, num_steps=T),
            {"lr": 0.3, "momentum": 0.7, "weight_decay": 0.02})


def logistic_shaped(logistic_problem):
    steps = 10  # blocks of 4, 3, 3 under Forward(blocks=3)
    d = logistic_problem.train_data[0].shape[1]
    return (hg.Objective(logistic_problem, sgd_momentum_schedule, num_steps=steps),
            {"lr": jnp.linspace(0.6, 0.1, steps), "momentum": 0.6, "weight_decay": jnp.geomspace(1e-3, 1e-1, d)})


def mlp_minibatch(mlp_minibatch_problem):
    return (hg.Objective(mlp_minibatch_problem, sgd_momentum_schedule, num_steps=T),
            {"lr": jnp.linspace(0.5, 0.2, T), "momentum": 0.8, "weight_decay": 1e-2})


CASES = {"ridge-schedule-feature-decay": (ridge_shaped, "ridge_problem"),
         "ridge-scalar-lr-momentum-decay": (ridge_scalars, "ridge_problem"),
         "logistic-schedule-momentum-feature-decay": (logistic_shaped, "logistic_problem"),
         "mlp-minibatch-schedule-momentum-decay": (mlp_minibatch, "mlp_minibatch_problem")}

_cases = {}


def get_case(request, name):
    """(objective, hparams, key, Reverse's (value, grads)) of a case, built and differentiated once
    per session (the same objective object, so its compiled programs are reused across tests)."""
    if name not in _cases:
        build, fixture = CASES[name]
        objective, hparams = build(request.getfixturevalue(fixture))
        hparams, key = f64(hparams), jax.random.key(3)
        _cases[name] = (objective, hparams, key, hg.hypergradient(objective, hparams, key))
    return _cases[name]


@pytest.fixture(params=list(CASES))
def case(request):
    return get_case(request, request.param)


# -- Forward -------------------------------------------------------------------------------------
def test_forward_equals_reverse(case):
    objective, hparams, key, (value, grads) = case
    value_f, grads_f = hg.hypergradient(objective, hparams, key, method=Forward())
    np.testing.assert_allclose(value_f, value, rtol=1e-12)
    np.testing.assert_allclose(value_f, objective(hparams, key), rtol=1e-12)
    assert_grads_close(grads_f, grads, rtol=1e-10)  # measured at most 7.9e-15


def block_sums(x, lengths):
    return np.add.reduceat(np.asarray(x), np.cumsum([0, *lengths[:-1]]), axis=0)


def test_block_shared_forward_matches_reverse_summed_over_blocks(request):
    """Blocks of 4, 3, 3 steps of the schedule and 2, 1, 1 features of the decay; momentum unshared."""
    objective, hparams, key, (value, grads) = get_case(request, "logistic-schedule-momentum-feature-decay")
    value_b, grads_b = hg.hypergradient(objective, hparams, key, method=Forward(blocks=3))
    np.testing.assert_allclose(value_b, value, rtol=1e-12)
    for hname, h in hparams.items():
        g, gb = np.asarray(grads[hname]), np.asarray(grads_b[hname])
        assert gb.shape == g.shape and gb.dtype == g.dtype
        if h.ndim == 0:  # not shared: exact
            np.testing.assert_allclose(gb, g, rtol=1e-10)
            continue
        lengths = {"lr": [4, 3, 3], "weight_decay": [2, 1, 1]}[hname]  # contiguous, the longer first
        # The block sums are the exact derivatives w.r.t. each block's common value ...
        np.testing.assert_allclose(block_sums(gb, lengths), block_sums(g, lengths), rtol=1e-10)  # measured 1e-15
        # ... and every element holds its block's mean of the exact gradient.
        means = np.repeat(block_sums(g, lengths) / np.asarray(lengths), lengths, axis=0)
        np.testing.assert_allclose(gb, means, rtol=1e-10)  # measured 1.1e-15
        assert not np.allclose(gb, g, rtol=1e-3), f"{hname}: sharing changed nothing; the test is vacuous"


def test_forward_shares_only_the_named_hyperparameters_and_one_block_per_element_is_exact(request):
    objective, hparams, key, (_, grads) = get_case(request, "logistic-schedule-momentum-feature-decay")
    _, only_lr = hg.hypergradient(objective, hparams, key, method=Forward(blocks=3, share="lr"))
    np.testing.assert_allclose(only_lr["weight_decay"], grads["weight_decay"], rtol=1e-10)
    np.testing.assert_allclose(block_sums(only_lr["lr"], [4, 3, 3]), block_sums(grads["lr"], [4, 3, 3]), rtol=1e-10)
    assert np.ptp(np.asarray(only_lr["lr"][:4])) == 0
    # blocks >= the axis length: one element per block, the exact gradient
    _, exact = hg.hypergradient(objective, hparams, key, method=Forward(blocks=50))
    assert_grads_close(exact, grads, rtol=1e-10)


def test_forward_works_inside_jit_and_vmap(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd_schedule, num_steps=T)
    batch = {"lr": jnp.stack([jnp.full(T, 0.1), jnp.linspace(0.3, 0.1, T)]), "weight_decay": jnp.asarray([1e-3, 1e-1])}
    method = Forward(blocks=2)
    values, grads = jax.jit(jax.vmap(lambda h: hg.hypergradient(objective, h, key, method=method)))(batch)
    for i in range(2):
        value_i, grads_i = hg.hypergradient(objective, {n: v[i] for n, v in batch.items()}, key, method=method)
        np.testing.assert_allclose(values[i], value_i, rtol=1e-12)
        for name in batch:
            np.testing.assert_allclose(grads[name][i], grads_i[name], rtol=1e-10)


def test_forward_gives_an_empty_hyperparameter_an_empty_gradient(ridge_problem, key):
    """A hyperparameter with no elements (shape (0,) or (0, 3)) has no direction and an empty
    gradient of its shape, blocks or not; Forward(blocks=B) divided by zero splitting it, and with
    no other hyperparameter Forward returned {} instead of grads shaped like hparams."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"] + jnp.sum(h["e"])), num_steps=4)
    for shape in [(0,), (0, 3)]:
        hparams = {"lr": jnp.asarray(0.2), "e": jnp.zeros(shape), "weight_decay": jnp.asarray(0.01)}
        value, grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
        for method in [Forward(blocks=2), Forward(blocks=2, share="e"), Forward()]:
            value_f, grads_f = hg.hypergradient(objective, hparams, key, method=method)
            np.testing.assert_allclose(value_f, value, rtol=1e-12)
            assert grads_f["e"].shape == shape and grads_f["e"].dtype == jnp.float64
            for name in ("lr", "weight_decay"):
                assert grads[name] != 0
                np.testing.assert_allclose(grads_f[name], grads[name], rtol=1e-10)
    only_empty = hg.Objective(ridge_problem, lambda h: optax.sgd(0.2 + jnp.sum(h["e"])), num_steps=4)
    for method in [Forward(blocks=2), Forward()]:
        value_f, grads_f = hg.hypergradient(only_empty, {"e": jnp.zeros((0,))}, key, method=method)
        np.testing.assert_allclose(value_f, only_empty({"e": jnp.zeros((0,))}, key), rtol=1e-12)
        assert list(grads_f) == ["e"] and grads_f["e"].shape == (0,)


# -- Truncated -----------------------------------------------------------------------------------
_references = {}  # objective -> compiled reference, the window a traced argument: one compile each


def truncated_reference(objective, hparams, key, window):
    """d val_loss / d h of a training loop written out here (not Objective.run / Loop.run), whose
    state entering step T - window is cut by stop_gradient."""
    if objective not in _references:
        _references[objective] = jax.jit(jax.value_and_grad(_reference_loss(objective)))
    return _references[objective](hparams, window, key)


def _reference_loss(objective):
    problem, steps = objective.problem, objective.num_steps

    def loss(h, window, key):
        init_key, data_key = jax.random.split(key)
        opt = objective.optimizer(h)
        params = problem.init(init_key)

        def body(state, t):
            state = jax.lax.cond(t == steps - window, jax.lax.stop_gradient, lambda s: s, state)
            params, opt_state = state
            batch = problem.train_batch(problem.train_data, data_key, t)
            updates, opt_state = opt.update(jax.grad(problem.train_loss)(params, h, batch), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        params = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))[0][0]
        return problem.val_loss(params, problem.val_data)

    return loss


_stop_gradient_references = {}  # (problem, optimizer, num_steps, window) -> compiled value_and_grad


def stop_gradient_reference(objective, hparams, key, window):
    """(value, d value / d h) of `_helpers.stop_gradient_reference` for this objective's problem,
    optimiser and horizon (compiled once per window)."""
    problem, optimizer, steps = objective.problem, objective.optimizer, objective.num_steps
    cache_key = (problem, optimizer, steps, window)
    if cache_key not in _stop_gradient_references:
        _stop_gradient_references[cache_key] = reference_program(problem, optimizer, steps, window)
    return _stop_gradient_references[cache_key](hparams, key)


FULL_BATCH_CASES = [n for n in CASES if not n.startswith("mlp")]


@pytest.mark.parametrize("name", FULL_BATCH_CASES)
def test_truncated_matches_an_independent_stop_gradient_reference(request, name):
    """Truncated(T - 1) and a short window (with and without checkpoints) against the hand-written
    loop above. With window >= T Truncated runs Reverse's own program (its "residuals" store), so
    comparing it with Reverse checks nothing of the truncation: the windows below are all shorter
    than T."""
    objective, hparams, key, (value, grads) = get_case(request, name)
    steps = objective.num_steps
    # The reference is faithful: with nothing cut it reproduces the objective and Reverse.
    ref_value, ref_full = stop_gradient_reference(objective, hparams, key, steps)
    np.testing.assert_allclose(ref_value, objective(hparams, key), rtol=1e-12)
    assert_grads_close(ref_full, grads, rtol=1e-10)
    for window in (steps - 1, 3):
        ref_value, ref = stop_gradient_reference(objective, hparams, key, window)
        # The cut matters: the reference differs from Reverse far beyond the tolerance below.
        assert any(np.max(np.abs(np.asarray(ref[n]) - np.asarray(grads[n]))) > 1e-6 * np.max(np.abs(grads[n]))
                   for n in hparams), window
        for every in (None, 2):
            value_t, grads_t = hg.hypergradient(objective, hparams, key,
                                                method=Truncated(window, checkpoint_every=every))
            np.testing.assert_allclose(value_t, ref_value, rtol=1e-12)
            assert_grads_close(grads_t, ref, rtol=1e-10)


@pytest.mark.parametrize("window,every", [(11, None), (10 ** 6, 3)])
def test_truncated_past_the_end_equals_reverse_with_and_without_checkpoints(request, window, every):
    objective, hparams, key, (value, grads) = get_case(request, "logistic-schedule-momentum-feature-decay")
    assert window > objective.num_steps
    value_t, grads_t = hg.hypergradient(objective, hparams, key, method=Truncated(window, checkpoint_every=every))
    np.testing.assert_allclose(value_t, value, rtol=1e-12)
    assert_grads_close(grads_t, grads, rtol=1e-10)


@pytest.mark.parametrize("every", [None, 3])
def test_truncated_cost_stays_on_its_line_at_and_past_the_end(request, every):
    """The FLOP count (hypergrad.accounting) is affine in the window up to T and constant after, as
    the docstring says: window >= T runs plain autodiff of the loop (Reverse's "residuals" store),
    as shorter windows do. It used to switch to Reverse's default store there (each step's forward
    recomputed): on this MLP 2.41 runs at window T against 1.89 on the line."""
    objective, hparams, key, _ = get_case(request, "mlp-minibatch-schedule-momentum-decay")
    steps = objective.num_steps
    run = hg.run_flops(objective, hparams, key)

    def runs(method):
        return hg.accounting.hypergradient_flops(objective, method, hparams, key) / run

    # Checkpointed, a step's share depends on where segment boundaries fall (with k = 3 every third
    # step adds more, 5% on this MLP since minibatches are drawn with eight Feistel rounds): compare
    # increments over whole periods of k steps, where that pattern repeats.
    d = every or 1
    counts = {w: runs(Truncated(w, checkpoint_every=every)) for w in (steps - 2 * d, steps - d, steps, steps + 3)}
    slope = counts[steps - d] - counts[steps - 2 * d]
    assert slope > 0.01 * d  # each step of the window adds its share of the backward pass
    assert counts[steps] - counts[steps - d] == pytest.approx(slope, rel=0.05)
    assert counts[steps + 3] == counts[steps] == runs(hg.Reverse(every, store="residuals"))


@pytest.mark.parametrize("name,window", [("logistic-schedule-momentum-feature-decay", 4),
                                         ("mlp-minibatch-schedule-momentum-decay", 3),
                                         ("ridge-scalar-lr-momentum-decay", 1)])
def test_truncated_is_the_exact_gradient_with_the_early_steps_cut(request, name, window):
    objective, hparams, key, (value, grads) = get_case(request, name)
    steps = objective.num_steps
    # The hand-written loop reproduces Reverse when nothing is cut: it is a faithful reference.
    ref_value_full, ref_full = truncated_reference(objective, hparams, key, steps)
    np.testing.assert_allclose(ref_value_full, value, rtol=1e-12)
    assert_grads_close(ref_full, grads, rtol=1e-10)

    ref_value, ref = truncated_reference(objective, hparams, key, window)
    for every in (None, 2) if name.startswith("logistic") else (None,):  # (fewer compiles of the MLP)
        value_t, grads_t = hg.hypergradient(objective, hparams, key,
                                            method=Truncated(window, checkpoint_every=every))
        np.testing.assert_allclose(value_t, value, rtol=1e-12)  # the value of the full training run
        np.testing.assert_allclose(value_t, ref_value, rtol=1e-12)
        assert_grads_close(grads_t, ref, rtol=1e-10)
    # It is biased: the early steps' influence is missing ...
    differs = [np.max(np.abs(np.asarray(grads_t[n]) - np.asarray(grads[n]))) > 1e-3 * np.max(np.abs(grads[n]))
               for n in hparams]
    assert any(differs), "truncation changed nothing: the bias check is vacuous"
    # ... and schedule entries before the window get exactly zero, those inside it are nonzero.
    if hparams["lr"].ndim == 1:
        assert np.all(np.asarray(grads_t["lr"][:steps - window]) == 0)
        assert np.all(np.asarray(grads_t["lr"][steps - window:]) != 0)


# -- inside tune ---------------------------------------------------------------------------------
TUNE_T = 30
OUTER = optax.adam(0.1)  # a truncated hypergradient only moves the last `window` steps' rates


@pytest.fixture(scope="module")
def digits():
    problem = hg.problems.mlp_classifier("digits", hidden=(16,), batch_size=64)
    objective = hg.Objective(problem, sgd_momentum_schedule, num_steps=TUNE_T)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(TUNE_T,)), "momentum": hg.Uniform(0.0, 0.95),
                      "weight_decay": hg.LogUniform(1e-6, 1e-1)})
    init = {"lr": jnp.full((TUNE_T,), 0.01), "momentum": 0.5, "weight_decay": 1e-3}  # too small a step
    return objective, space, init


@pytest.mark.parametrize("method", [Forward(blocks=5), Truncated(window=10)], ids=["forward-blocks", "truncated"])
def test_tune_with_the_method_lowers_the_validation_loss(digits, method):
    objective, space, init = digits
    result = hg.tune(objective, space, jax.random.key(0), method=method, steps=5, init=init, outer=OUTER)
    start = result.trials[0]
    assert result.best_trial.number > 0
    assert result.best_value < 0.9 * start.value
    assert all(np.isfinite(t.value) for t in result.trials)
    if isinstance(method, Forward):  # a block-constant schedule stays block-constant
        lr = np.asarray(result.trials[-1].hparams["lr"])
        for block in np.array_split(lr, 5):
            np.testing.assert_allclose(block, block[0], rtol=1e-12)


# -- errors --------------------------------------------------------------------------------------
def test_forward_refuses_too_many_directions_before_compiling(ridge_problem, key):
    problem, traces = counted(ridge_problem)
    steps = 300
    objective = hg.Objective(problem, sgd_schedule, num_steps=steps)
    hparams = {"lr": jnp.full(steps, 0.1), "weight_decay": jnp.asarray(1e-2)}
    before = _compile.stats.compilations
    match = (r"Forward needs 301 JVPs \(one per hyperparameter direction; lr: 300, weight_decay: 1\), more than "
             r"max_directions=256: .*Set blocks= to share schedules in a few blocks .*or use hg.Reverse\(\)")
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, hparams, key, method=Forward())
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(steps,)), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    with pytest.raises(ValueError, match=r"Forward needs 301 JVPs"):
        hg.tune(objective, space, key, method=Forward(), steps=2)
    with pytest.raises(ValueError, match=r"Forward needs 13 JVPs .*max_directions=12"):
        Forward(blocks=12, max_directions=12).check(objective, hparams)
    Forward(blocks=10).check(objective, hparams)  # 11 directions: accepted
    Forward(max_directions=301).check(objective, hparams)
    assert traces["count"] == 0 and _compile.stats.compilations == before


@pytest.mark.parametrize("kwargs,match", [
    ({"blocks": 0}, r"Forward\(blocks=0\) must be an int >= 1"),
    ({"blocks": -3}, r"Forward\(blocks=-3\) must be an int >= 1"),
    ({"blocks": 2.5}, r"Forward\(blocks=2.5\) must be an int >= 1"),
    ({"blocks": True}, r"Forward\(blocks=True\) must be an int >= 1"),
    ({"share": "lr"}, r"Forward\(share='lr'\) needs blocks=: say how many blocks"),
    ({"blocks": 4, "share": 3}, r"Forward\(share=3\) must be a hyperparameter name or a tuple of names"),
    ({"blocks": 4, "share": ()}, r"Forward\(share=\(\)\) must be a hyperparameter name"),
    ({"max_directions": 0}, r"Forward\(max_directions=0\) must be an int >= 1"),
], ids=["zero", "negative", "float", "bool", "share-without-blocks", "share-int", "share-empty", "max-zero"])
def test_forward_refuses_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Forward(**kwargs)


def test_forward_refuses_sharing_a_missing_or_scalar_hyperparameter(ridge_problem, key):
    problem, traces = counted(ridge_problem)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    hparams = {"lr": jnp.full(T, 0.1), "weight_decay": jnp.asarray(1e-2)}
    with pytest.raises(ValueError, match=r"Forward\(share=\('learning_rate',\)\): \['learning_rate'\] are not "
                                         r"hyperparameters; the hyperparameters are \['lr', 'weight_decay'\]"):
        hg.hypergradient(objective, hparams, key, method=Forward(blocks=2, share="learning_rate"))
    with pytest.raises(ValueError, match=r"\['weight_decay'\] are scalars, with no leading axis to share"):
        hg.hypergradient(objective, hparams, key, method=Forward(blocks=2, share=["lr", "weight_decay"]))
    assert traces["count"] == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, r"Truncated\(window=0\) must be an int >= 1: the number of final training steps"),
    ({"window": -1}, r"Truncated\(window=-1\) must be an int >= 1"),
    ({"window": 2.5}, r"Truncated\(window=2.5\) must be an int >= 1"),
    ({"window": True}, r"Truncated\(window=True\) must be an int >= 1"),
    ({"window": "10"}, r"Truncated\(window='10'\) must be an int >= 1"),
    ({"window": 5, "checkpoint_every": 0}, r"Truncated\(checkpoint_every=0\) must be a positive int"),
    ({"window": 5, "checkpoint_every": 1.5}, r"Truncated\(checkpoint_every=1.5\) must be a positive int"),
], ids=["zero", "negative", "float", "bool", "string", "checkpoint-zero", "checkpoint-float"])
def test_truncated_refuses_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Truncated(**kwargs)


def test_methods_are_immutable_and_hashable_by_value():
    assert Truncated(5) == Truncated(window=5) and hash(Truncated(5)) == hash(Truncated(5))
    assert Truncated(5) != Truncated(6) and Truncated(5) != Truncated(5, checkpoint_every=2)
    assert Forward(blocks=4, share=["lr"]) == Forward(blocks=4, share=("lr",)) == Forward(blocks=4, share="lr")
    assert hash(Forward(blocks=4, share=["lr"])) == hash(Forward(blocks=4, share="lr"))
    assert Forward() != Forward(blocks=4)
    assert isinstance(Forward(), hg.Method) and isinstance(Truncated(1), hg.Method)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Truncated(5).window = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        Forward().blocks = 3


def test_truncated_sees_a_hyperparameter_the_optimiser_keeps_in_its_state(logistic_minibatch_problem, key):
    # optax.inject_hyperparams keeps the learning rate and momentum in the optimiser state, which
    # the window's steps read; cutting the state at the window's start hid them, and their truncated
    # hypergradient was exactly zero where the same optimiser reading h directly gives the estimate.
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.8), "weight_decay": jnp.asarray(0.01)}
    direct = hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]),
                          num_steps=T)
    injected = hg.Objective(logistic_minibatch_problem, lambda h: optax.inject_hyperparams(optax.sgd)(
        learning_rate=h["lr"], momentum=h["momentum"]), num_steps=T)
    for window in (1, T - 1):
        value, expected = hg.hypergradient(direct, hparams, key, method=Truncated(window))
        value_i, grads = hg.hypergradient(injected, hparams, key, method=Truncated(window))
        np.testing.assert_allclose(value_i, value, rtol=1e-12)
        assert all(abs(float(expected[n])) > 1e-6 for n in hparams)  # nothing passes by being zero
        assert_grads_close(grads, expected, rtol=1e-10)
