"""In-process cache keys that Python's `==` or a copy blurred: a structured family's configurations
are keyed by the options' types too (True, 1 and 1.0 are three), a copied objective's `jax.jit`
programs are its own and `hg.clear_caches()` reaches them (and nothing of JAX's caches shared with
the user's own `jax.jit` functions), and FLOP counts are keyed on JAX's trace
settings (`hypergrad._compile.trace_settings()`); the names an objective's trace never reads are kept
per hyperparameter shapes, not for the last ones only."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import accounting
from hypergrad.sklearn import MLPRegressor, _mlp
from hypergrad.structure import Masked

from _helpers import counting, linear_data, mse


def _data(dtype):
    return linear_data(dtype, 16)


def _objective(loss, init=lambda k: jnp.ones(4), dtype=np.float64, batch_size=None):
    X, y = _data(dtype)
    problem = hg.Problem(init=init, train_loss=lambda p, h, b: loss(p, b), val_loss=loss, train_data=(X, y),
                         val_data=(X, y), batch_size=batch_size)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_a_structured_family_builds_each_type_of_an_equal_option():
    # keyed by ==, {"flag": True} got the objective built for {"flag": 1} (and 0.0 and False that of 0), so a
    # search over Choice([True, 2]) after one over Choice([1, 2]) ran the program of 1 and reported its loss
    built = []

    def build(config):
        built.append(config["flag"])
        return _objective(mse)

    family = hg.Structured(build)
    options = [1, True, 1.0, 0, False, 0.0, (1, 2), (True, 2)]
    objectives = [family.objective({"flag": option}) for option in options]
    assert len({id(o) for o in objectives}) == len(options)
    assert [(type(b), b) for b in built] == [(type(o), o) for o in options]
    assert family.objective({"flag": True}) is objectives[1]  # each still built once
    assert family.objective({"flag": np.int64(1)}) is objectives[0]  # a numpy scalar is its Python value
    masked = [family.objective({"flag": Masked("flag", options)}) for options in [(1, 2), (True, 2), (1, 2)]]
    assert masked[0] is not masked[1] and masked[0] is masked[2]


_SETTING = {"l2": 0.0}


def _l2_loss(p, b):
    return mse(p, b) + _SETTING["l2"] * jnp.sum(p ** 2)


def test_clear_caches_reaches_a_copied_objectives_programs():
    # copy.copy shared the original's dict of jax.jit wrappers, out of clear_caches' reach: after changing a
    # value the loss reads and clearing, the copy (and the original, whose trace JAX found again through the
    # copy's live wrapper) ran the old program: 3.9e-32 where hypergradient gave 12.3
    objective = _objective(_l2_loss)
    hparams, key = {"lr": jnp.asarray(0.01)}, jax.random.key(0)
    try:
        before = float(objective(hparams, key))
        copies = [copy.copy(objective), copy.deepcopy(objective)]
        assert [float(c(hparams, key)) for c in copies] == [before, before]
        _SETTING["l2"] = 10.0
        hg.clear_caches()
        after = float(hg.hypergradient(objective, hparams, key)[0])
        assert after != before
        assert [float(o(hparams, key)) for o in [objective, *copies]] == [after] * 3
    finally:
        _SETTING["l2"] = 0.0


def test_clear_caches_evicts_a_wrapper_still_held_elsewhere():
    # JAX keys a trace on the bound method, so a dropped wrapper kept alive elsewhere (here held by hand, as a
    # traceback's frame may hold it) handed the next wrapper its old trace
    objective = _objective(_l2_loss)
    hparams, key = {"lr": jnp.asarray(0.01)}, jax.random.key(0)
    try:
        before = float(objective(hparams, key))
        held = objective._jitted("loss_and_scores")  # noqa: F841 (kept alive across the clear)
        _SETTING["l2"] = 10.0
        hg.clear_caches()
        after = float(objective(hparams, key))
        assert after == float(hg.hypergradient(objective, hparams, key)[0]) != before
    finally:
        _SETTING["l2"] = 0.0


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # max_iter=2 of the tiny fit
def test_clear_caches_leaves_a_users_own_jit_cache_alone(monkeypatch):
    # each objective wrapper's jit clear_cache() also emptied JAX's process-wide cache of every jit's traced
    # parameters (pjit._infer_params_cached), the user's own unrelated functions' included: the user's next
    # trace was a miss; so did the sklearn estimators' prediction jit (registered once hypergrad.sklearn is
    # imported). Measured across the one hg.clear_caches() call, so whatever else the process ran is no matter
    pjit = pytest.importorskip("jax._src.pjit", reason="JAX moved jax._src.pjit, this test's probe of its cache")
    cache = getattr(pjit, "_infer_params_cached", None)
    if cache is None or not hasattr(cache, "cache_info"):
        pytest.skip("JAX no longer has jax._src.pjit._infer_params_cached.cache_info(), this test's probe of "
                    "its process-wide cache of jit-traced parameters")

    @jax.jit
    def users_own(x):
        return jnp.sin(x) * 2

    hg.clear_caches()  # the prediction program's traces of earlier tests gone: the first predict traces
    X, y = _data(np.float64)
    objective = _objective(mse)  # alive across the clear: its jit wrappers are among those clear_caches drops
    objective({"lr": jnp.asarray(0.01)}, jax.random.key(0))
    traces = []
    forward = _mlp.forward
    monkeypatch.setattr(_mlp, "forward", lambda *a: traces.append(1) or forward(*a))  # traces of predict's program
    mlp = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    fitted = len(traces)
    predicted = [mlp.predict(X), mlp.predict(X)]
    users_own.trace(1.0)
    before = cache.cache_info()
    hg.clear_caches()
    users_own.trace(1.0)
    after = cache.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)  # the user's entry survived
    predicted.append(mlp.predict(X))
    assert len(traces) - fitted == 2  # one prediction trace before the clear, one after it
    assert all((p == predicted[0]).all() for p in predicted)


def test_flop_counts_follow_x64_at_the_same_argument_types():
    # a float32 problem whose init draws at the default dtype: the draw is 64-bit under x64, so its count
    # differs (6428 against 6194 for the run), and the cache handed the count of the setting it was made under
    objective = _objective(mse, init=lambda k: jax.random.normal(k, (4,)), dtype=np.float32, batch_size=8)
    hparams = {"lr": np.float32(0.01)}

    def counts():
        key = jax.random.key(0)
        return accounting.run_flops(objective, hparams, key), accounting.hypergradient_flops(
            objective, hg.Reverse(), hparams, key)

    try:
        on = counts()
        jax.config.update("jax_enable_x64", False)
        off = counts()
        hg.clear_caches()
        assert counts() == off != on
        jax.config.update("jax_enable_x64", True)
        assert counts() == on
    finally:
        jax.config.update("jax_enable_x64", True)  # the suite's setting (conftest)


def test_hypergradient_at_alternating_hyperparameter_shapes_traces_each_once():
    # the objective's check kept the names its trace never reads for the last shapes only, so calls alternating
    # a scalar and a vector weight decay traced the objective once more per call (1, 1 after the first two)
    X, y = _data(np.float64)
    problem, count = counting(hg.Problem(
        init=lambda k: jnp.zeros(4), train_loss=lambda p, h, b: mse(p, b) + jnp.sum(h["wd"]) * jnp.sum(p ** 2),
        val_loss=mse, train_data=(X, y), val_data=(X, y)))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    traces = []
    for wd in [np.float64(0.01), np.full(2, 0.01), np.float64(0.01), np.full(2, 0.01)]:
        before = count["traces"]
        hg.hypergradient(objective, {"lr": 0.1, "wd": wd}, jax.random.key(0))
        traces.append(count["traces"] - before)
    assert traces[2:] == [0, 0]
