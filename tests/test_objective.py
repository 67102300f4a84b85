"""Objective: the unrolled training loop as a pure function; its transformations and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hypergrad as hg
from hypergrad.loop import DRAW_BLOCK  # noqa: E402
from hypergrad.problems import sgd_momentum_schedule  # noqa: E402

T = 6


def sgd(hparams):
    return optax.sgd(hparams["lr"])


@pytest.fixture(scope="module")
def logistic_run(logistic_problem):
    """objective(h, k), evaluate(h, k) and train(h, k), compiled together as one program."""
    objective = hg.Objective(logistic_problem, sgd, num_steps=T)
    hparams = {"lr": jnp.asarray(0.5), "weight_decay": jnp.asarray(1e-2)}
    key = jax.random.key(0)
    everything = jax.jit(lambda h, k: (objective(h, k), objective.evaluate(h, k), objective.train(h, k)))
    return logistic_problem, key, everything(hparams, key)


def test_call_equals_evaluate_val_loss_and_the_val_loss_of_train(logistic_run):
    problem, _, (value, scores, params) = logistic_run
    assert set(scores) == {"val_loss", "test_loss", "val_accuracy", "test_accuracy"}
    assert value.shape == () and value.dtype == jnp.float64
    np.testing.assert_allclose(value, scores["val_loss"], rtol=1e-14)
    np.testing.assert_allclose(value, problem.val_loss(params, problem.val_data), rtol=1e-14)
    np.testing.assert_allclose(scores["test_loss"], problem.val_loss(params, problem.test_data), rtol=1e-14)
    x, y = problem.val_data
    accuracy = np.mean(np.argmax(np.asarray(x @ params["w"] + params["b"]), axis=1) == np.asarray(y))
    np.testing.assert_allclose(scores["val_accuracy"], accuracy)


def test_train_returns_trained_params_shaped_like_init(logistic_run):
    problem, key, (value, _, params) = logistic_run
    init = problem.init(key)
    assert jax.tree.structure(params) == jax.tree.structure(init)
    for p, p0 in zip(jax.tree.leaves(params), jax.tree.leaves(init)):
        assert p.shape == p0.shape and p.dtype == p0.dtype
    assert not np.allclose(params["w"], init["w"])  # it trained
    # and training helps: the validation loss falls below the untrained model's
    untrained = problem.val_loss(init, problem.val_data)
    assert float(value) < float(untrained) - 0.05


@pytest.fixture(scope="module")
def minibatch_objective(logistic_minibatch_problem):
    """A minibatch objective (the key chooses the batches) and its jitted form, shared below."""
    objective = hg.Objective(logistic_minibatch_problem, sgd_momentum_schedule, num_steps=T)
    return objective, jax.jit(objective)


MINIBATCH_HPARAMS = {"lr": jnp.linspace(0.5, 0.1, T), "momentum": jnp.asarray(0.8)}


def test_training_replays_minibatch_t_of_the_data_key(minibatch_objective, key):
    """The objective equals a hand-written loop drawing batch t of the epoch stream keyed by
    split(key)[1] (`Problem.batch_indices`, step by step; the draw itself is pinned in
    test_sampler.py)."""
    objective, jitted = minibatch_objective
    problem, hparams = objective.problem, MINIBATCH_HPARAMS
    init_key, data_key = jax.random.split(key)

    def hand_written(batch_number):
        params = problem.init(init_key)
        opt = sgd_momentum_schedule(hparams)
        state = opt.init(params)
        for t in range(T):
            chosen = np.asarray(problem.batch_indices(data_key, batch_number(t)))
            batch = jax.tree.map(lambda leaf: leaf[chosen], problem.train_data)
            grads = jax.grad(problem.train_loss)(params, hparams, batch)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return float(problem.val_loss(params, problem.val_data))

    value = float(jitted(hparams, key))
    np.testing.assert_allclose(value, hand_written(lambda t: t), rtol=1e-12)
    # the check can tell: replaying batch 0 at every step gives another loss
    assert abs(value - hand_written(lambda t: 0)) > 1e-6


def test_jit_equals_eager_and_accepts_raw_and_typed_keys(minibatch_objective):
    objective, jitted = minibatch_objective
    eager_raw = objective(MINIBATCH_HPARAMS, jax.random.PRNGKey(4))
    np.testing.assert_allclose(jitted(MINIBATCH_HPARAMS, jax.random.key(4)), eager_raw, rtol=1e-12)


def test_vmap_over_hparams_and_keys_equals_separate_calls(minibatch_objective):
    objective, single = minibatch_objective
    lrs = jnp.asarray([0.05, 0.2, 0.6])
    batch = {"lr": jnp.repeat(lrs[:, None], T, axis=1), "momentum": jnp.asarray([0.0, 0.5, 0.9])}
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(objective))(batch, keys)
    expected = [single(jax.tree.map(lambda v: v[i], batch), keys[i]) for i in range(3)]
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, expected, rtol=1e-10)
    assert len(set(np.round(np.asarray(batched), 8).tolist())) == 3
    # the key chooses the minibatches: the same key replays exactly, another key differs
    same = {k: v[1] for k, v in batch.items()}
    np.testing.assert_array_equal(single(same, keys[0]), single(same, keys[0]))
    assert float(single(same, keys[0])) != float(single(same, keys[1]))


def test_grad_of_objective_equals_hypergradient(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd, num_steps=T)
    hparams = {"lr": jnp.asarray(0.2), "weight_decay": jnp.asarray(0.05)}
    value, grads = jax.jit(jax.value_and_grad(objective))(hparams, key)
    value2, grads2 = hg.hypergradient(objective, hparams, key)
    np.testing.assert_allclose(value2, value, rtol=1e-12)
    for name in hparams:
        assert grads[name] != 0.0
        np.testing.assert_allclose(grads2[name], grads[name], rtol=1e-10)


@pytest.mark.parametrize("num_steps", [0, -5, 2.5, True, "10"])
def test_num_steps_below_one_or_not_an_int_is_refused(ridge_problem, num_steps):
    with pytest.raises(ValueError, match=r"num_steps=.* must be an integer >= 1"):
        hg.Objective(ridge_problem, sgd, num_steps=num_steps)


def test_optimizer_returning_a_non_optax_object_is_refused(ridge_problem, key):
    objective = hg.Objective(ridge_problem, lambda h: (lambda g: g), num_steps=3)
    with pytest.raises(ValueError, match=r"optimizer\(hparams\) returned function; it must return an "
                                         r"optax.GradientTransformation such as optax.sgd"):
        objective({"lr": 0.1}, key)
    with pytest.raises(ValueError, match=r"returned str"):
        hg.hypergradient(hg.Objective(ridge_problem, lambda h: "sgd", num_steps=3), {"lr": 0.1}, key)


def test_an_optimiser_asking_for_a_line_search_or_a_wrapper_is_refused_with_the_fix(ridge_problem, key):
    # optax.lbfgs() (zoom line search) failed with optax's raw TypeError about 'grad' and 'value_fn';
    # optax.MultiSteps was refused without naming the call that works
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0)})
    lbfgs = hg.Objective(ridge_problem, lambda h: optax.lbfgs(h["lr"]), num_steps=3)
    for call in (lambda: lbfgs({"lr": 0.1}, key), lambda: hg.hypergradient(lbfgs, {"lr": 0.1}, key),
                 lambda: hg.random_search(lbfgs, space, key, num_trials=2)):
        with pytest.raises(ValueError, match=r"never value_fn=.*optax.lbfgs\(lr, linesearch=None\)"):
            call()
    fixed = hg.Objective(ridge_problem, lambda h: optax.lbfgs(h["lr"], linesearch=None), num_steps=3)
    assert np.isfinite(float(fixed({"lr": 0.1}, key)))
    multi = hg.Objective(ridge_problem, lambda h: optax.MultiSteps(optax.sgd(h["lr"]), 2), num_steps=3)
    with pytest.raises(ValueError, match=r"returned MultiSteps.*return its .gradient_transformation\(\)"):
        multi({"lr": 0.1}, key)


def test_bad_constructor_arguments_are_refused(ridge_problem):
    with pytest.raises(ValueError, match=r"optimizer must be a function hparams -> optax.GradientTransformation"):
        hg.Objective(ridge_problem, optax.sgd(0.1), num_steps=3)
    with pytest.raises(ValueError, match=r"problem must be an hg.Problem, got dict; build one with hg.Problem"):
        hg.Objective({"init": None}, sgd, num_steps=3)


def test_bad_hparams_and_keys_are_refused_by_the_objective(ridge_problem, key):
    objective = hg.Objective(ridge_problem, sgd, num_steps=3)
    with pytest.raises(ValueError, match=r"key=0 is an int; pass jax.random.key\(0\)"):
        objective({"lr": 0.1}, 0)
    with pytest.raises(ValueError, match=r"single key, not a batch"):
        objective({"lr": 0.1}, jax.random.split(key, 2))
    with pytest.raises(ValueError, match=r"hparams must be a dict of name -> value"):
        objective([0.1], key)
    with pytest.raises(ValueError, match=r"hparams\['lr'\]='fast' is not numeric|hparams\['lr'\] has dtype"):
        objective({"lr": "fast"}, key)
    with pytest.raises(ValueError, match=r"hparams\['lr'\]=None is not numeric"):  # was numpy's message, unnamed
        objective({"lr": None}, key)
    # per-parameter weight decay as a nested dict got "{...} is not numeric; give a number or an array"
    with pytest.raises(ValueError, match=r"hparams\['wd'\] is a dict; hyperparameters are a flat dict.*wd_w, wd_b"):
        hg.hypergradient(objective, {"lr": 0.1, "wd": {"w": jnp.ones(3), "b": 0.4}}, key)


_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None)


def test_one_program_whatever_kind_of_number_or_key_is_passed(ridge_problem):
    # A weakly typed value (a Python float, space.centre()'s arrays) and a numpy one, or a raw and a
    # typed key, were different argument types to the jitted program: each compiled it again.
    objective = hg.Objective(ridge_problem, sgd, num_steps=3)
    calls = [({"lr": 0.1}, jax.random.key(1)), ({"lr": np.float64(0.2)}, jax.random.PRNGKey(2)),
             ({"lr": jnp.asarray(0.3)}, jax.random.key(3)), ({"lr": np.asarray(0.4)}, jax.random.key(4))]
    for h, k in calls:  # another objective first: the eager conversions compile once per process
        hg.Objective(ridge_problem, sgd, num_steps=2)(h, k)
    values = []
    for method in ("__call__", "train", "evaluate"):
        getattr(objective, method)(*calls[0])
        before = len(_COMPILES)
        values += [getattr(objective, method)(h, k) for h, k in calls[1:]]
        assert len(_COMPILES) == before, method
    # same numbers as before: a raw key is the typed key of the same bits
    np.testing.assert_allclose(objective({"lr": 0.2}, jax.random.key(2)), values[0], rtol=1e-15)


class TinyNet(nnx.Module):
    """A user's own flax.nnx model: 4 -> 6 (relu) -> 3, in float64."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, 6, rngs=rngs, param_dtype=jnp.float64)
        self.out = nnx.Linear(6, 3, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def test_user_defined_nnx_model_via_nnx_problem(mlp_problem, key):
    problem = hg.problems.nnx_problem(TinyNet, mlp_problem.train_data, mlp_problem.val_data,
                                      mlp_problem.test_data, batch_size=None, name="tiny")
    params = problem.init(key)
    assert isinstance(params, nnx.State)
    assert {p.shape for p in jax.tree.leaves(params)} == {(4, 6), (6,), (6, 3), (3,)}
    objective = hg.Objective(problem, sgd, num_steps=15)
    hparams = {"lr": jnp.asarray(0.3), "weight_decay": jnp.asarray(1e-3)}
    value, grads = hg.hypergradient(objective, hparams, key)
    untrained = problem.val_loss(params, problem.val_data)
    assert float(value) < float(untrained) - 0.1  # it trained
    for name in hparams:
        assert np.isfinite(grads[name]) and grads[name] != 0.0
    # the gradient points the right way: a small step against it lowers the loss (same program)
    step = {name: hparams[name] * (1 - 1e-2 * jnp.sign(grads[name])) for name in hparams}
    assert float(hg.hypergradient(objective, step, key)[0]) < float(value)
    # another key initialises another network
    assert float(hg.hypergradient(objective, hparams, jax.random.key(1))[0]) != float(value)


@pytest.mark.parametrize("start,num_steps", [(0, 2 * DRAW_BLOCK + 5), (3, DRAW_BLOCK), (7, 5)])
def test_loop_run_draws_in_blocks_the_same_minibatches_as_step_by_step(logistic_minibatch_problem, key,
                                                                        start, num_steps):
    """`Loop.run` draws minibatches DRAW_BLOCK steps at a time (blocks, a remainder, a start
    offset) and trains exactly as `Loop.step`, which draws minibatch t inside step t."""
    objective = hg.Objective(logistic_minibatch_problem, sgd_momentum_schedule, num_steps=start + num_steps)
    hparams = {"lr": jnp.linspace(0.5, 0.1, start + num_steps), "momentum": jnp.asarray(0.8)}
    loop = objective.loop()
    state = loop.init(hparams, key)
    blocked = jax.jit(lambda s: loop.run(s, hparams, start, num_steps))(state)
    stepwise = jax.jit(lambda s: jax.lax.fori_loop(
        start, start + num_steps, lambda t, s: loop.step(s, hparams, t), s))(state)
    assert blocked.data_key is state.data_key or bool(jnp.all(
        jax.random.key_data(blocked.data_key) == jax.random.key_data(state.data_key)))
    for a, b in zip(jax.tree.leaves(blocked[:2]), jax.tree.leaves(stepwise[:2])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


class _StepByStep(hg.Method):
    """A method written against the narrow loop alone (init, step, readout, num_steps): plain
    autodiff through a Python-visible fori_loop of `step`. Outside code can write one."""

    def differentiate(self, loop, hparams, key):
        def loss(h):
            state = jax.lax.fori_loop(0, loop.num_steps, lambda t, s: loop.step(s, h, t), loop.init(h, key))
            return loop.readout(state, h)

        return jax.value_and_grad(loss, has_aux=True)(hparams)

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _StepByStep)


@pytest.mark.parametrize("cv", [None, 3])
def test_a_method_that_sees_only_init_step_readout_equals_reverse(key, cv):
    """The loop contract is enough for a method: one built from `init`, `step` and `readout`
    alone gives Reverse()'s value, scores and hypergradient, and cross-validation wraps it
    without its knowing (the fold mean of its per-fold gradients)."""
    problem = hg.problems.logistic("breast_cancer", batch_size=32, cv=cv)
    objective = hg.Objective(problem, sgd, num_steps=T)
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(1e-3)}
    value, grads = hg.hypergradient(objective, hparams, key, method=_StepByStep())
    expected, expected_grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    for name in hparams:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-9)
    assert float(grads["lr"]) != 0.0


@pytest.mark.parametrize("method", ["__call__", "train", "evaluate"])
def test_a_hyperparameter_not_given_is_named_not_a_key_error(logistic_problem, method):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=T)
    with pytest.raises(ValueError, match="the objective reads hyperparameter 'momentum' that was not given"):
        getattr(objective, method)({"lr": 0.1}, jax.random.key(0))


def dict_data_problem(train_key="y", val_key="y", reads=None):
    """Linear regression on dict batches {"x", "y"}; the losses read the targets under `train_key`
    and `val_key`, and the training loss the hyperparameter `reads` (if any)."""
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(12, 3)), "y": rng.normal(size=12)}

    def mse(params, batch, target):
        return jnp.mean((batch["x"] @ params["w"] - batch[target]) ** 2)

    def train_loss(params, hparams, batch):
        return mse(params, batch, train_key) + (0.0 if reads is None else hparams[reads])

    return hg.Problem(init=lambda k: {"w": jnp.zeros(3)}, train_loss=train_loss,
                      val_loss=lambda params, batch: mse(params, batch, val_key),
                      train_data=data, val_data=data, batch_size=4)


@pytest.mark.parametrize("where", ["train", "val"])
def test_a_key_error_from_the_users_own_dicts_is_not_blamed_on_hyperparameters_alone(where, key):
    """A typo in a batch dict (the losses read "label"; the data hold "y") was reported only as "the
    objective reads hyperparameter 'label' that was not given". The error now also says it may be a
    key missing from the user's own dicts, and keeps the KeyError as its cause (the line it came from)."""
    problem = dict_data_problem(**{f"{where}_key": "label"})
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    for run in (lambda: objective({"lr": 0.1}, key), lambda: hg.hypergradient(objective, {"lr": 0.1}, key)):
        with pytest.raises(ValueError, match="Otherwise it is a key missing from a dict of your own") as caught:
            run()
        assert isinstance(caught.value.__cause__, KeyError) and caught.value.__cause__.args == ("label",)


def test_a_hyperparameter_a_loss_reads_that_was_not_given_is_named(key):
    """Read by the training loss, directly and through `with_fixed`, a missing name is named."""
    objective = hg.Objective(dict_data_problem(reads="shift"), lambda h: optax.sgd(h["lr"]), num_steps=3)
    fixed = objective.with_fixed({"lr": jnp.asarray(0.1)})
    for run in (lambda: objective({"lr": 0.1}, key), lambda: hg.hypergradient(objective, {"lr": 0.1}, key),
                lambda: fixed({}, key)):
        with pytest.raises(ValueError, match="the objective reads hyperparameter 'shift' that was not given"):
            run()
    assert float(objective({"lr": 0.1, "shift": 0.0}, key)) >= 0.0


def _int_params_problem():
    x = np.random.default_rng(0).normal(size=(20, 3))

    def mse(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    return hg.Problem(init=lambda k: {"w": jnp.zeros(3, dtype=int), "on": jnp.ones(3, bool)},
                      train_loss=lambda p, h, batch: mse(p, batch), val_loss=mse,
                      train_data=(x[:12], x[:12, 0]), val_data=(x[12:], x[12:, 0]))


def test_parameters_with_no_floating_point_leaf_are_refused_before_compiling(ridge_problem, key):
    """`init=lambda k: {"w": jnp.zeros(3, int)}` (a typo'd dtype) trained nothing: integer and boolean
    leaves are held constant, so every setting scored the same and every hypergradient was 0, without
    a word. The first trace of init now refuses it, naming Problem(init=...) and the fix, before any
    program compiles."""
    fine = hg.Objective(ridge_problem, sgd, num_steps=3)
    hparams = {"lr": jnp.asarray(0.1, jnp.float64)}
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3)})
    # the eager ops on the way to the trace (the space's centre), compiled once per process
    fine(hparams, key), hg.hypergradient(fine, hparams, key), hg.tune(fine, space, key, steps=1)
    objective = hg.Objective(_int_params_problem(), sgd, num_steps=3)
    refused = r"Problem\(init=\.\.\.\) returned parameters with no floating-point leaf \(bool, int64\).*" \
              r"jnp.zeros\(3\), not jnp.zeros\(3, int\)"
    before = len(_COMPILES)
    for run in (lambda: objective(hparams, key), lambda: objective.train(hparams, key),
                lambda: hg.hypergradient(objective, hparams, key), lambda: hg.tune(objective, space, key, steps=2)):
        with pytest.raises(ValueError, match=refused):
            run()
    assert _COMPILES[before:] == []
    with pytest.raises(ValueError, match=refused):  # after its sampler, before the search program
        hg.random_search(objective, space, key, num_trials=2)


def test_an_optimizer_constructor_passed_instead_of_a_function_of_hparams_is_refused(ridge_problem, key):
    """`hg.Objective(problem, optax.sgd, T)` failed at the first call with optax's "unsupported operand
    type(s) for *: 'int' and 'dict'". An optax constructor is refused at construction; a constructor of
    the user's own fails when traced with a TypeError naming Objective(optimizer=...) and the lambda form."""
    for constructor in (optax.sgd, optax.adamw, optax.inject_hyperparams(optax.sgd)):
        with pytest.raises(ValueError, match=r"Objective\(optimizer=.*\) is an optax constructor.*"
                                             r"lambda h: optax.\w+\(h\['lr'\]\)"):
            hg.Objective(ridge_problem, constructor, num_steps=3)

    def my_sgd(learning_rate):
        return optax.sgd(learning_rate)

    objective = hg.Objective(ridge_problem, my_sgd, num_steps=3)
    for run in (lambda: objective({"lr": 0.1}, key), lambda: hg.hypergradient(objective, {"lr": 0.1}, key)):
        with pytest.raises(TypeError, match=r"Objective\(optimizer=\.\.\.\) raised TypeError when called with the "
                                            r"hparams dict \(.*'dict'.*\).*lambda h: optax.sgd\(h\['lr'\]\)") as caught:
            run()
        assert isinstance(caught.value.__cause__, TypeError)


def test_a_jax_type_error_in_the_optimizer_is_left_as_jax_raised_it(ridge_problem, key):
    """A Python `if` on a traced hyperparameter is JAX's own error, not a wrong kind of optimizer."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"] if h["lr"] > 0 else 0.1), num_steps=3)
    with pytest.raises(jax.errors.TracerBoolConversionError):
        objective({"lr": 0.1}, key)


@pytest.mark.parametrize("unroll", ["yes", -2, 2.5, None, np.float64(2.0)])
def test_unroll_is_checked_at_construction(ridge_problem, unroll):
    """`unroll="yes"` was accepted and failed at the first call inside lax.scan ("'<' not supported
    between 'str' and 'int'"); -2 gave JAX's message, naming neither Objective nor unroll."""
    with pytest.raises(ValueError, match=r"Objective\(unroll=.*\) must be a bool or an int >= 0"):
        hg.Objective(ridge_problem, sgd, num_steps=3, unroll=unroll)


def test_unroll_accepts_a_bool_or_an_int_and_stores_a_python_value(ridge_problem, key):
    values = [float(hg.Objective(ridge_problem, sgd, num_steps=3, unroll=u)({"lr": 0.1}, key))
              for u in (True, 0, np.int64(2))]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)
    stored = hg.Objective(ridge_problem, sgd, num_steps=3, unroll=np.int64(2)).unroll
    assert type(stored) is int and stored == 2
    assert hg.Objective(ridge_problem, sgd, num_steps=3, unroll=True).unroll is True
