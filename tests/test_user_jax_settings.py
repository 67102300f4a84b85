"""The user's own global JAX settings: hypergrad runs under each setting a user may turn on for
their own code (debug_nans, rank_promotion="raise", dtype_promotion="strict", another default
PRNG implementation), and its errors under them name the real cause. Each test sets the flag with
`jax.config.update` and restores it when it ends. Also: an exit while a search's refit compiles
(a user's Ctrl-C) ends cleanly."""

import contextlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import iris_head

import hypergrad as hg
from hypergrad.sklearn import LogisticRegression, MLPClassifier, MLPRegressor, Ridge


@contextlib.contextmanager
def jax_setting(name, value):
    """Inside, jax.config's `name` is `value`; the old value is restored on the way out."""
    old = getattr(jax.config, name)
    jax.config.update(name, value)
    try:
        yield
    finally:
        jax.config.update(name, old)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_fits_return_no_nan_placeholder_under_debug_nans():
    # old: the loss curve / validation scores the fit program returns were NaN past n_iter_ (and
    # all NaN without early stopping), so every default fit raised FloatingPointError
    x, y = iris_head(10)
    made = dict(hidden_layer_sizes=(3,), max_iter=4, random_state=0)
    plain = MLPClassifier(**made).fit(x, y)
    with jax_setting("jax_debug_nans", True):
        debugged = MLPClassifier(**made).fit(x, y)
        stopped = MLPRegressor(hidden_layer_sizes=(3,), max_iter=30, tol=10.0, n_iter_no_change=1,
                               random_state=0).fit(x, y.astype(float))
    np.testing.assert_array_equal(debugged.loss_curve_, plain.loss_curve_)  # what the user sees is unchanged
    assert debugged.validation_scores_ is None and debugged.n_iter_ == 4
    assert stopped.n_iter_ < 30 and len(stopped.loss_curve_) == stopped.n_iter_  # a tol stop: the tail is unread
    assert np.isfinite(stopped.loss_curve_).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_fits_broadcast_explicitly_under_rank_promotion_raise():
    # old: Ridge (x - x_mean), LogisticRegression (x @ coef + intercept), the MLPs (product + bias)
    # and their r2 score raised JAX's rank-promotion ValueError
    x, y = iris_head(10)
    allowed = Ridge(alpha=0.5).fit(x, y)
    with jax_setting("jax_numpy_rank_promotion", "raise"):
        ridge = Ridge(alpha=0.5).fit(x, y, sample_weight=np.linspace(0.5, 1.5, len(y)))
        ridge_plain = Ridge(alpha=0.5).fit(x, y)
        ridge_plain.score(x, y)
        LogisticRegression(max_iter=5).fit(x, y).predict_proba(x)
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, batch_size=8).fit(x, y).predict(x)
        MLPRegressor(hidden_layer_sizes=(3,), max_iter=3, early_stopping=True, batch_size=8).fit(x, y.astype(float))
    np.testing.assert_allclose(ridge_plain.coef_, allowed.coef_, rtol=1e-12)
    assert np.isfinite(ridge.coef_).all()


def test_builtin_accuracy_and_tunes_default_error_under_strict_dtype_promotion():
    # old: accuracy compared int64 argmax with int32 labels (TypePromotionError), and tune without
    # outer= blamed outer= and recommended optax.adam(0.05), the default that had failed
    mlp = hg.Objective(hg.problems.mlp_classifier("iris", hidden=(3,), batch_size=16), lambda h: optax.sgd(h["lr"]),
                       num_steps=2)
    ridge = hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, seed=0), lambda h: optax.sgd(h["lr"]),
                         num_steps=2)
    space = hg.Space({"lr": hg.LogUniform(1e-2, 0.5)})
    with jax_setting("jax_numpy_dtype_promotion", "strict"):
        scores = mlp.evaluate({"lr": jnp.asarray(0.1)}, jax.random.key(0))
        with pytest.raises(ValueError) as default:
            hg.tune(ridge, space, jax.random.key(0), steps=2)
    assert 0.0 <= float(scores["val_accuracy"]) <= 1.0
    message = str(default.value)
    assert "default outer optimiser (outer=None: optax.adam(0.05))" in message
    assert "jax_numpy_dtype_promotion='strict'" in message and "TypePromotionError" in message
    assert "e.g. optax.adam(0.05)" not in message and "optax.sgd(0.05)" in message
    assert isinstance(default.value.__cause__, jax.dtypes.TypePromotionError)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_a_raw_key_of_the_default_prng_implementation_is_accepted(impl):
    # old: only raw keys of shape (2,) (threefry's) were wrapped; rbg's PRNGKey(0) is uint32 (4,)
    objective = hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, seed=0),
                             lambda h: optax.sgd(h["lr"]), num_steps=2)
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(0.01)}
    with jax_setting("jax_default_prng_impl", impl):
        raw, typed = jax.random.PRNGKey(0), jax.random.key(0)
        assert raw.shape == (4,)
        assert objective(hparams, raw) == objective(hparams, typed)
        with pytest.raises(ValueError, match=re.escape(f"a raw key of jax_default_prng_impl='{impl}' is uint32(4,)")):
            objective(hparams, jnp.zeros(2, jnp.uint32))


EXIT_DURING_REFIT = """
import threading, time
from sklearn.datasets import load_iris
from hypergrad import _compile
from hypergrad.sklearn import MLPClassifier
from hypergrad.sklearn._mlp import MaskedRefit

compiling = threading.Event()

def announced(jitted, args, tag):  # the refit thread's compilation, announced, then a little C-level wait
    lowered = jitted.lower(*args)
    compiling.set()
    executable = lowered.compile()
    time.sleep(1.0)
    print("refit thread finished", flush=True)
    return executable

_compile.compile_jitted = announced
X, y = load_iris(return_X_y=True)
refit = MaskedRefit(MLPClassifier(max_iter=3, random_state=0, batch_size=50), X, y,
                    {"hidden_layer_sizes": [(2,), (3,)], "activation": ["tanh", "relu"]})
refit.start()
compiling.wait()
print("main thread exits", flush=True)
"""


def test_the_interpreter_waits_for_a_search_refit_compiling_at_exit(tmp_path):
    # old: the hypergrad-refit thread was a daemon, so a script that exited (e.g. on Ctrl-C) while it
    # compiled in XLA tore it down inside XLA's C++ frames during finalisation: "FATAL: exception not
    # rethrown", exit status 134, in 4 of 6 exits 2-4 s into the refit's compilation. The thread now
    # ends before the interpreter finalises (here: the old code exits before the thread's line).
    script = tmp_path / "exit_during_refit.py"
    script.write_text(EXIT_DURING_REFIT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["main thread exits", "refit thread finished"], done.stdout
