"""Reverse's fast loops are exact: store="steps" (the default without checkpointing: per-step
rematerialisation keeping each step's input state), store="dots" (the same, also keeping matrix
products; the default with checkpointing) and store="states"
(the hand-written VJP of the training loop).

Three layers, in float64 (tests/conftest.py): central finite differences, agreement with the plain
reverse mode (`Reverse(store="residuals")`, JAX's own VJP of the scan) to rounding, and with and without
checkpointing (segments that divide T and a remainder segment). Also: full-batch problems (no
minibatch indices), optimisers with several state leaves and an integer step count, use under
jit and vmap, one compilation for new values, and the error for a bad `store`.
"""

import dataclasses
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.problems import sgd_momentum_schedule
from _helpers import counting

T = 10
PLAIN = hg.Reverse(store="residuals")
STORES = ["steps", "dots", "states"]
FAST = hg.Reverse(store="states")


def hparams_for(problem, steps=T):
    return {"lr": jnp.linspace(0.5, 0.1, steps), "momentum": jnp.asarray(0.7), "weight_decay": jnp.asarray(3e-2)}


def finite_difference_errors(objective, hparams, key, method, *, eps=1e-6, directions=3, seed=0):
    """Relative errors |fd - <g, v>| / sum|g * v| of central differences along random relative
    directions v = h * N(0, 1), each perturbing every hyperparameter at once."""
    value, grads = hg.hypergradient(objective, hparams, key, method=method)
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(directions):
        v = {n: np.asarray(h) * rng.normal(size=np.shape(h)) for n, h in hparams.items()}

        def f(s):
            return float(hg.hypergradient(objective, {n: hparams[n] + s * v[n] for n in hparams}, key,
                                          method=method)[0])

        fd = (f(eps) - f(-eps)) / (2 * eps)
        ad = sum(float(np.sum(np.asarray(grads[n]) * v[n])) for n in hparams)
        scale = sum(float(np.sum(np.abs(np.asarray(grads[n]) * v[n]))) for n in hparams)
        assert scale > 0
        errors.append(abs(fd - ad) / scale)
    return value, grads, errors


def assert_same(a, b, rtol=1e-10):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=rtol,
                                   atol=rtol * float(np.max(np.abs(np.asarray(b[name])))), err_msg=name)


@pytest.fixture(scope="module")
def mlp_objective(mlp_minibatch_problem):
    return hg.Objective(mlp_minibatch_problem, sgd_momentum_schedule, num_steps=T)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("checkpoint_every", [None, 5, 3])  # 3: three segments and a remainder of 1
def test_matches_finite_differences_and_plain_reverse(mlp_objective, mlp_minibatch_problem, key, checkpoint_every,
                                                      store):
    hparams = hparams_for(mlp_minibatch_problem)
    method = hg.Reverse(checkpoint_every=checkpoint_every, store=store)
    value, grads, errors = finite_difference_errors(mlp_objective, hparams, key, method)
    assert max(errors) < 1e-7, errors
    plain_value, plain = hg.hypergradient(mlp_objective, hparams, key, method=PLAIN)
    np.testing.assert_allclose(value, plain_value, rtol=1e-13)
    assert_same(grads, plain)
    assert grads["lr"].shape == (T,) and grads["lr"].dtype == jnp.float64
    assert float(jnp.max(jnp.abs(grads["lr"]))) > 0  # a test that could fail: the gradient is not trivially 0


def test_wrong_gradient_is_caught(mlp_objective, mlp_minibatch_problem, key):
    """The finite-difference check can fail: a gradient off by 1% along one entry is flagged."""
    hparams = hparams_for(mlp_minibatch_problem)
    _, grads = hg.hypergradient(mlp_objective, hparams, key, method=FAST)
    rng = np.random.default_rng(0)
    v = {n: np.asarray(h) * rng.normal(size=np.shape(h)) for n, h in hparams.items()}
    bad = dict(grads, momentum=grads["momentum"] * 1.01)
    f = lambda s: float(mlp_objective({n: hparams[n] + s * v[n] for n in hparams}, key))  # noqa: E731
    fd = (f(1e-6) - f(-1e-6)) / 2e-6
    ad = sum(float(np.sum(np.asarray(bad[n]) * v[n])) for n in hparams)
    scale = sum(float(np.sum(np.abs(np.asarray(bad[n]) * v[n]))) for n in hparams)
    assert abs(fd - ad) / scale > 1e-5


def test_default_is_steps_and_with_checkpointing_dots():
    assert hg.Reverse() == hg.Reverse(checkpoint_every=None, store="steps") == hg.Reverse(store=None)
    assert hg.Reverse(checkpoint_every=5) == hg.Reverse(checkpoint_every=5, store="dots")
    assert hg.Reverse(checkpoint_every=5, store="steps").store == "steps"  # a store given is kept


def _adam(h):
    return optax.chain(optax.scale_by_adam(b1=0.9, b2=0.99), optax.scale(-h["lr"]))


@pytest.fixture(scope="module")
def adam_case(logistic_problem):
    """(objective, hparams, PLAIN's grads at the `key` fixture's key 0): one objective for every
    store, so the plain reverse mode it is compared with compiles once."""
    objective = hg.Objective(logistic_problem, _adam, num_steps=8)
    hparams = {"lr": jnp.asarray(0.05), "weight_decay": jnp.asarray(1e-2)}
    return objective, hparams, hg.hypergradient(objective, hparams, jax.random.key(0), method=PLAIN)[1]


@pytest.mark.parametrize("store", STORES)
def test_full_batch_and_adam(adam_case, key, store):
    """No minibatch indices (full batch), and Adam: two float state leaves plus an int count."""
    objective, hparams, plain = adam_case
    for checkpoint_every in (None, 3):
        method = hg.Reverse(checkpoint_every=checkpoint_every, store=store)
        _, grads, errors = finite_difference_errors(objective, hparams, key, method)
        assert max(errors) < 1e-7, errors
        assert_same(grads, plain)


@pytest.mark.parametrize("store", STORES)
def test_traced_under_jit_and_vmap(mlp_objective, mlp_minibatch_problem, key, store):
    hparams = hparams_for(mlp_minibatch_problem)
    data = mlp_minibatch_problem.data
    batch = {n: jnp.stack([h, h * 0.8]) for n, h in hparams.items()}

    @jax.jit
    def many(hs):
        method = hg.Reverse(store=store)
        return jax.vmap(lambda h: method.value_and_grad(mlp_objective, h, key, data))(hs)

    (values, _), grads = many(batch)
    for i in range(2):
        one = {n: batch[n][i] for n in batch}
        value, expected = hg.hypergradient(mlp_objective, one, key, method=PLAIN)
        np.testing.assert_allclose(values[i], value, rtol=1e-13)
        assert_same({n: grads[n][i] for n in grads}, expected)


@pytest.mark.parametrize("store", STORES)
def test_compiles_once_for_new_values(mlp_minibatch_problem, key, store):
    problem, count = counting(mlp_minibatch_problem)
    objective = hg.Objective(problem, sgd_momentum_schedule, num_steps=T)
    before = _compile.stats.compilations
    hparams = hparams_for(problem)
    method = hg.Reverse(store=store)
    hg.hypergradient(objective, hparams, key, method=method)
    traces = count["traces"]
    for scale in (0.5, 2.0):
        hg.hypergradient(objective, {n: h * scale for n, h in hparams.items()}, jax.random.key(7), method=method)
    assert _compile.stats.compilations - before == 1
    assert count["traces"] == traces


def test_bad_store_is_refused():
    with pytest.raises(ValueError, match="store"):
        hg.Reverse(store="activations")
    with pytest.raises(ValueError, match="checkpoint_every"):
        hg.Reverse(checkpoint_every=0, store="states")


def _lr_grad_tangent(objective, key, method):
    """d/ds of the "lr" hypergradient at momentum * s, s = 1: jax.jvp through `method.value_and_grad`."""
    hparams = hparams_for(objective.problem)

    def grad_lr(scale):
        h = dict(hparams, momentum=hparams["momentum"] * scale)
        return method.value_and_grad(objective, h, key, objective.problem.data)[1]["lr"]

    return jax.jvp(grad_lr, (1.0,), (1.0,))[1]


@pytest.fixture(scope="module")
def plain_lr_tangent(mlp_objective):
    """The plain reverse mode's tangent, the reference of every case, at the `key` fixture's key 0."""
    return _lr_grad_tangent(mlp_objective, jax.random.key(0), PLAIN)


@pytest.mark.parametrize("method", [hg.Reverse(), *(hg.Reverse(store=s) for s in ("dots", "states")),
                                    hg.Reverse(checkpoint_every=3, store="states")], ids=repr)
def test_forward_differentiable(mlp_objective, plain_lr_tangent, key, method):
    """jax.jvp through a hypergradient works with every store, the hand-written VJP of "states"
    included (its rules are plain JAX code, so forward-over-reverse differentiates them), and
    equals the plain reverse mode's."""
    tangent = _lr_grad_tangent(mlp_objective, key, method)
    expected = plain_lr_tangent
    assert float(jnp.max(jnp.abs(expected))) > 0
    np.testing.assert_allclose(tangent, expected, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(expected))))


def _scaled_lr(hparams):
    """sgd_momentum_schedule with every rate times hparams["lr_mult"] (held fixed below)."""
    return optax.sgd(lambda step: hparams["lr"][step] * hparams["lr_mult"], momentum=hparams["momentum"])


@pytest.fixture(scope="module")
def scaled_lr_case(mlp_minibatch_problem):
    """(objective, value, grads) of the plain reverse mode with lr_mult = 2 passed as a hyperparameter
    (its own gradient dropped), at the `key` fixture's key 0: one objective, compiled once for every case."""
    objective = hg.Objective(mlp_minibatch_problem, _scaled_lr, num_steps=T)
    hparams = hparams_for(mlp_minibatch_problem)
    value, plain = hg.hypergradient(objective, {**hparams, "lr_mult": jnp.asarray(2.0)}, jax.random.key(0),
                                    method=PLAIN)
    plain.pop("lr_mult")
    return objective, value, plain


@pytest.mark.parametrize("checkpoint_every", [None, 4, 3])
def test_states_with_a_traced_value_closed_over(mlp_minibatch_problem, scaled_lr_case, key, checkpoint_every):
    """store="states" whose optimiser closes over a traced value: an objective built inside jit
    from a closure, and `with_fixed` of a traced value under jit and under vmap (as hybrid_search
    holds a numeric Choice). Checkpointed, the custom VJP under jax.checkpoint failed to lower
    ("No constant handler for type: DynamicJaxprTracer"); now every form equals the plain reverse
    mode with the value passed as a hyperparameter."""
    objective, value, plain = scaled_lr_case
    hparams = hparams_for(mlp_minibatch_problem)
    method = hg.Reverse(checkpoint_every=checkpoint_every, store="states")

    def closure(mult, h):
        def optimizer(h_):
            return optax.sgd(lambda step: h_["lr"][step] * mult, momentum=h_["momentum"])

        return hg.hypergradient(hg.Objective(mlp_minibatch_problem, optimizer, num_steps=T), h, key,
                                method=method)

    def fixed(mult, h):
        return hg.hypergradient(objective.with_fixed({"lr_mult": mult}), h, key, method=method)

    mults = jnp.asarray([2.0, 2.0])
    # The closure and with_fixed under jit: both traced and lowered, as one compiled program.
    under_jit = jax.jit(lambda mult, h: (closure(mult, h), fixed(mult, h)))(jnp.asarray(2.0), hparams)
    for got_value, got in [*under_jit, jax.tree.map(lambda x: x[1], jax.vmap(fixed, (0, None))(mults, hparams))]:
        np.testing.assert_allclose(got_value, value, rtol=1e-12)
        assert_same(got, plain, rtol=1e-12)


def _checkpoint_cse_flags(fn, *args) -> list[bool]:
    """`prevent_cse` of every jax.checkpoint in the jaxpr of `fn(*args)`, nested jaxprs included."""
    flags = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if "prevent_cse" in eqn.params and eqn.primitive.name in ("checkpoint", "remat", "remat2"):
                flags.append(bool(eqn.params["prevent_cse"]))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return flags


@pytest.mark.parametrize("store", ["steps", "dots"])
def test_barrier_only_where_xla_could_merge_passes(mlp_objective, key, store):
    """store="steps" and "dots" drop the checkpoint's CSE barrier in a rolled scan (it only costs copies there)
    but keeps it in a fully unrolled program, where XLA would otherwise merge the backward pass's
    recomputation into the forward pass."""
    hparams = hparams_for(mlp_objective.problem)
    method = hg.Reverse(store=store)

    def flags(objective, h):
        return _checkpoint_cse_flags(lambda h_: method.value_and_grad(objective, h_, key, objective.problem.data), h)

    assert flags(mlp_objective, hparams) == [False]
    reference = dataclasses.replace(mlp_objective, num_steps=2, unroll=True)  # written out step by step
    assert flags(reference, {**hparams, "lr": hparams["lr"][:2]}) == [True]
