"""`hypergrad._program_store`: compiled programs on disk keyed by their jaxpr, so that a second
process loads a search's program (and a scikit-learn search's refit program) without making and
lowering it, with the same results; a damaged or missing entry is a miss, a stored program runs;
the key changes with the jaxpr,
the arguments' shapes and shardings. The store is written only with the persistent cache on, so
the whole-path checks run in child processes (conftest turns the cache off here)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import _caches, _program_store

CHILD = """
import json, os, sys, warnings
import hypergrad as hg
hg.use_cpu_cores(2)
import jax
from hypergrad import _compile, _program_store
from hypergrad.problems.presets import preset
from hypergrad.sklearn import GridSearchCV, MLPClassifier
from sklearn.datasets import load_iris
lowered, loaded = [], []
make_lower, load = _compile.lower, _program_store.load
_compile.lower = lambda fn, args: lowered.append(1) or make_lower(fn, args)
_program_store.load = lambda name: (lambda found: loaded.append(found is not None) or found)(load(name))
path = hg.use_compilation_cache()
objective, space = preset("iris-mlp", num_steps=5)
result = hg.random_search(objective, space, jax.random.key(0), num_trials=4)
x, y = load_iris(return_X_y=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(3,), max_iter=4, random_state=0),
                          {"activation": ["tanh", "relu"]}, cv=2).fit(x, y)
print(json.dumps({"lowered": len(lowered), "loaded": loaded, "values": [t.value for t in result.trials],
                  "coef": search.best_estimator_.coefs_[0].ravel().tolist(),
                  "stored": sorted(os.listdir(os.path.join(path, "hypergrad-programs"))),
                  "counts": _program_store.counts()}))
"""


def _child(cache) -> dict:
    env = {**os.environ, _caches.ENV_VAR: str(cache)}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_programs_without_lowering_them(tmp_path):
    first = _child(tmp_path)
    # the random search's program, the grid search's program and its refit program (one device)
    assert len(first["stored"]) == 3 and first["loaded"] == [False] * 3 and first["lowered"] >= 2
    second = _child(tmp_path)
    assert second["loaded"] == [True] * 3 and second["lowered"] == 0
    # counted: a cold process loads nothing and XLA compiles; a warm one loads the stored three and
    # takes every other program (small eager ones included) from JAX's cache
    assert first["counts"]["store_loads"] == 0 and first["counts"]["jax_requests"] > first["counts"]["jax_hits"]
    assert second["counts"]["store_loads"] == 3
    assert second["counts"]["jax_hits"] == second["counts"]["jax_requests"] > 0
    assert second["values"] == first["values"] and second["coef"] == first["coef"]
    assert second["stored"] == first["stored"]


def test_a_damaged_or_missing_entry_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setattr(_program_store, "directory", lambda: str(tmp_path))
    (tmp_path / "damaged").write_bytes(b"not a program")
    assert _program_store.load("damaged") is None and _program_store.load("missing") is None
    executable = jax.jit(lambda a: 2 * a).lower(jnp.ones(3)).compile()
    _program_store.store("doubles", executable)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "doubles"]  # no partial file left
    np.testing.assert_array_equal(_program_store.load("doubles")(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_the_key_follows_the_jaxpr_the_tag_and_the_arguments():
    args = (jnp.ones((4, 3)), jnp.ones(3))
    jaxpr = jax.make_jaxpr(lambda a, b: a @ b)(*args)
    base = _program_store.key(jaxpr, ("search",), args)
    assert base == _program_store.key(jax.make_jaxpr(lambda a, b: a @ b)(*args), ("search",), args)
    assert base != _program_store.key(jax.make_jaxpr(lambda a, b: a @ b + 1)(*args), ("search",), args)
    assert base != _program_store.key(jaxpr, ("other",), args)
    assert base != _program_store.key(jaxpr, ("search",), (jnp.ones((4, 3)), jnp.ones(3, jnp.int32)))
    assert base != _program_store.key(jaxpr, ("search",), (np.ones((4, 3)), np.ones(3)))  # no device placement
    def with_constant(constant):
        return jax.make_jaxpr(lambda a, b: a @ (b + constant))(*args)

    # the same text, another constant's value: another program
    assert str(with_constant(np.arange(3.0))) == str(with_constant(np.arange(3.0) + 1))
    assert _program_store.key(with_constant(np.arange(3.0)), ("search",), args) == _program_store.key(
        with_constant(np.arange(3.0)), ("search",), args)
    assert _program_store.key(with_constant(np.arange(3.0)), ("search",), args) != _program_store.key(
        with_constant(np.arange(3.0) + 1), ("search",), args)


def test_nothing_is_stored_without_the_persistent_cache():
    assert _program_store.directory() is None  # conftest: HYPERGRAD_COMPILATION_CACHE=0
