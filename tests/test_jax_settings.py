"""hypergrad under the installed jax/jaxlib's own options and settings: XLA's quick compile options
(`hypergrad._compile.QUICK_COMPILE`, also the test run's XLA_FLAGS) only where that jaxlib's XLA has
them, `jax_disable_jit` refused up front, and every JAX setting that shapes a trace in the program keys."""

import importlib.util
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile


def test_the_quick_compile_options_are_ones_this_xla_accepts():
    # jax >= 0.11.1 (what pip picks on Python 3.12+) refused xla_cpu_use_fusion_emitters:
    # "INVALID_ARGUMENT: No such compile option", so hg.tune and small scikit-learn fits crashed
    program = jax.jit(lambda x: jnp.sin(x) * 2.0).lower(jnp.ones(3)).compile(_compile.QUICK_COMPILE)
    np.testing.assert_allclose(program(jnp.ones(3)), 2.0 * np.sin(1.0))
    assert _compile.QUICK_COMPILE == _compile.quick_compile_options()  # the installed jaxlib's


def test_the_fusion_emitter_option_is_passed_only_to_the_jaxlibs_that_have_it():
    kept = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    for version in ("0.10.2", "0.11.0"):  # checked: these accept it, and compile as before
        assert _compile.quick_compile_options(version) == kept
    for version in ("0.11.1", "0.11.1.dev20260101", "0.12.1", "1.0.0"):  # checked: 0.11.1 to 0.12.1 refuse it
        assert _compile.quick_compile_options(version) == {"xla_backend_optimization_level": 0}
    assert _compile.quick_xla_flags(kept) == "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    with pytest.raises(ValueError, match="major.minor.patch"):
        _compile.jaxlib_version_tuple("nightly")


def test_importing_hypergrad_leaves_xla_flags_to_be_read_when_jax_starts():
    # tests/conftest.py picks XLA_FLAGS after importing hypergrad (for quick_xla_flags): that works only
    # while the import starts no backend. An unknown flag aborts XLA when it starts: so it must still start
    script = ("import os, hypergrad, hypergrad.sklearn\nos.environ['XLA_FLAGS'] = '--xla_hypergrad_no_such_flag=1'\n"
              "import jax.numpy as jnp\njnp.zeros(1).block_until_ready()\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "xla_hypergrad_no_such_flag" in done.stderr, done.stderr[-2000:]


def _ridge_objective(num_steps=3):
    problem = hg.problems.ridge(num_examples=16, num_features=3, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=num_steps)


def test_disable_jit_is_refused_up_front_naming_the_setting():
    # JAX's own "Disable jit is not supported in the AOT path" came only when the compiled program was
    # called (Implicit: after ~15 s of trace and compilation); now a ValueError before either
    objective = _ridge_objective()
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(0.01)}
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1)})
    implicit = hg.Objective(objective.problem, lambda h: optax.sgd(0.1), num_steps=200)
    calls = {"reverse": lambda: hg.hypergradient(objective, hparams, jax.random.key(0)),
             "implicit": lambda: hg.hypergradient(implicit, {"weight_decay": jnp.asarray(0.01)}, jax.random.key(0),
                                                  method=hg.Implicit()),
             "random_search": lambda: hg.random_search(objective, space, jax.random.key(0), num_trials=2),
             "tune": lambda: hg.tune(objective, space, jax.random.key(0), steps=2)}
    for name, call in calls.items():
        start = time.perf_counter()
        with jax.disable_jit(), pytest.raises(ValueError, match="jax_disable_jit is on.*jax.disable_jit"):
            call()
        assert time.perf_counter() - start < 10.0, name
    with jax.disable_jit():
        value = objective(hparams, jax.random.key(0))  # the user's own code still runs op by op
    assert float(value) == pytest.approx(float(objective(hparams, jax.random.key(0))))


def test_every_strategy_refuses_disable_jit_before_touching_the_space(monkeypatch):
    # The strategies refused only where their programs compile: first random_search drew its whole space,
    # and tune ran its checks, op by op (1-2 s on a tiny objective, longer on a big space); the refusal is
    # now their first check. A probe on the space's every numeric method shows nothing ran before it
    objective = _ridge_objective()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.Choice([0.0, 0.01])})

    def touched(*args, **kwargs):
        raise AssertionError("the space was used before jax_disable_jit was refused")

    for name in ("sample", "grid", "centre", "constrain", "unconstrain", "check"):
        monkeypatch.setattr(hg.Space, name, touched)
    key = jax.random.key(0)
    calls = {"random_search": lambda: hg.random_search(objective, space, key, num_trials=2),
             "grid_search": lambda: hg.grid_search(objective, space, key, points_per_axis=2),
             "tune": lambda: hg.tune(objective, space, key, steps=2),
             "hybrid_search": lambda: hg.hybrid_search(objective, space, key, budget=10)}
    if importlib.util.find_spec("optuna") is not None:
        calls["optuna_search"] = lambda: hg.optuna_search(objective, space, key, num_trials=2)
    for name, call in calls.items():
        with jax.disable_jit(), pytest.raises(ValueError, match="jax_disable_jit is on"):
            call()


def test_trace_settings_name_every_setting_in_jaxs_own_trace_context():
    # jax 0.12 added settings that change a trace (jax_random_normal_mode, jax_accurate_logistic, ...):
    # missing from the keys, a call after flipping one reused the program traced under the old value
    from jax._src import config as jax_config

    names = getattr(jax_config, "trace_context_names", None)
    try:
        context = names()
    except (TypeError, NotImplementedError):
        pytest.skip("this jax does not list its trace context")
    missing = [n for n in context if n in jax.config.values and n not in _compile.TRACE_SETTINGS]
    assert not missing, f"add to hypergrad._compile._KNOWN_TRACE_SETTINGS: {missing}"
    assert len(_compile.TRACE_SETTINGS) == len(_compile.trace_settings())


@pytest.mark.skipif("jax_random_normal_mode" not in jax.config.values, reason="jax < 0.12 has no such setting")
def test_hypergradient_after_flipping_random_normal_mode_draws_as_a_fresh_start():
    X = np.linspace(-1.0, 1.0, 24).reshape(8, 3)
    y = X @ np.array([1.0, 2.0, 3.0])
    loss = lambda p, b: jnp.mean((b[0] @ p["w"] - b[1]) ** 2)  # noqa: E731
    problem = hg.Problem(init=lambda key: {"w": jax.random.normal(key, (3,))}, train_loss=lambda p, h, b: loss(p, b),
                         val_loss=loss, train_data=(X, y), val_data=(X, y))
    objective, hparams, key = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2), {"lr": 0.1}, \
        jax.random.key(0)
    start = jax.config.jax_random_normal_mode
    other = "highest" if start != "highest" else "low"
    first = float(hg.hypergradient(objective, hparams, key)[0])
    try:
        jax.config.update("jax_random_normal_mode", other)
        flipped = float(hg.hypergradient(objective, hparams, key)[0])
        assert flipped == pytest.approx(float(objective(hparams, key)), rel=1e-12)
        assert flipped != pytest.approx(first, rel=1e-6)
    finally:
        jax.config.update("jax_random_normal_mode", start)
