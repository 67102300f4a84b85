"""`hg.use_compilation_cache`: a second process loads its programs from the cache directory, the
environment variable moves or disables it, the library writes nothing unless it is called, and the
`hypergrad` command turns it on before anything compiles.

The suite itself runs with the cache off (conftest sets HYPERGRAD_COMPILATION_CACHE=0); the checks
that turn it on run in child processes, so this process's JAX settings stay as they were.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import _caches, _program_store, cli

# A small search on the iris preset in a child process: the cache directory in use, JAX's count of
# persistent-cache hits (its monitoring events) and the search's compile seconds.
CHILD = """
import json, sys
import jax
import hypergrad as hg
from hypergrad.problems.presets import preset
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
path = hg.use_compilation_cache() if sys.argv[1] == "on" else None
objective, space = preset("iris-mlp", num_steps=5)
result = hg.random_search(objective, space, jax.random.key(0), num_trials=2)
print(json.dumps({"path": path, "hits": len(hits), "compile_seconds": result.compile_seconds}))
"""


def _child(env: dict, mode: str = "on") -> dict:
    full = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=full,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _files(folder) -> list[str]:
    return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files]


# A small search and a lone tuner on the iris preset in a child process with the cache on: JAX's count of
# persistent-cache hits, the search's compile seconds, how many programs the tune call loaded from
# hypergrad's program store, and its trials' values.
BOTH_CHILD = """
import json
import jax, optax
import hypergrad as hg
from hypergrad import _program_store
from hypergrad.problems.presets import preset
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
path = hg.use_compilation_cache()
objective, space = preset("iris-mlp", num_steps=5)
result = hg.random_search(objective, space, jax.random.key(0), num_trials=2)
searched = {"path": path, "hits": len(hits), "compile_seconds": result.compile_seconds}
before = _program_store.counts()["store_loads"]
result = hg.tune(objective, space, jax.random.key(0), steps=1, outer=optax.adam(0.1))
print(json.dumps({**searched, "store_loads": _program_store.counts()["store_loads"] - before,
                  "values": [t.value for t in result.trials]}))
"""


@pytest.fixture(scope="module")
def two_cached_processes(tmp_path_factory):
    """BOTH_CHILD run twice, one process after the other, with one cache directory: (the directory,
    the files the first process left in it, what each printed, the files after the second)."""
    cache = tmp_path_factory.mktemp("cached") / "cache"
    env = {**os.environ, _caches.ENV_VAR: str(cache)}
    runs, listings = [], []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", BOTH_CHILD], capture_output=True, text=True, env=env,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        listings.append(sorted(_files(cache)))
    return cache, runs, listings


def test_a_second_process_compiles_from_the_cache(two_cached_processes):
    cache, (first, second), (written, after) = two_cached_processes
    assert first["path"] == str(cache)
    assert written, "the first process wrote no cache entries"
    assert first["hits"] == 0
    assert second["hits"] > 0  # JAX loaded programs from the directory instead of compiling them
    assert after == written  # and had nothing new to write
    # compile_seconds is reported in both (the second is usually lower; timing is not asserted)
    assert first["compile_seconds"] > 0 and second["compile_seconds"] >= 0


def test_a_second_process_loads_the_tune_program_from_the_program_store(two_cached_processes):
    # tune passed no jaxpr to the program cache (and its key held the optax object, whose repr
    # names addresses), so a warm process still traced, batched and lowered its outer step.
    # (It runs after a random search in the same processes, which stores programs of its own.)
    _, runs, _ = two_cached_processes
    assert runs[0]["store_loads"] == 0 and runs[1]["store_loads"] == 1
    assert runs[1]["values"] == runs[0]["values"]


def test_the_program_store_key_reads_the_constants_of_nested_jaxprs():
    # An array that a `jax.jit` inside the traced function closes over is a constant of the nested
    # jaxpr, whose text names it without its value: two programs differing only there had one key,
    # and a later process would load the other's program.
    def scaled(scale):
        factor = np.full((1,), scale)
        inner = jax.jit(lambda x: -jnp.sum(factor) * x)
        return lambda x: inner(x) + 1.0

    x = np.zeros(3)
    jaxprs = [jax.make_jaxpr(scaled(s))(x) for s in (0.1, 0.1, 0.2)]
    keys = [_program_store.key(jaxpr, ("search",), (x,)) for jaxpr in jaxprs]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    # the key without its environment, for keys in memory: unmoved by a JAX setting such as log_compiles
    digests = [_program_store.digest(jaxpr, ("search",), (x,)) for jaxpr in jaxprs]
    assert digests[0] == digests[1] and digests[0] != digests[2]
    with jax.log_compiles():
        assert _program_store.digest(jaxprs[0], ("search",), (x,)) == digests[0]


@pytest.mark.parametrize("setting", ["0", "off", "OFF", "false", ""])
def test_the_environment_variable_turns_it_off(tmp_path, monkeypatch, setting):
    monkeypatch.setenv(_caches.ENV_VAR, setting)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hg.use_compilation_cache() is None
    assert not any(tmp_path.iterdir())


def test_off_in_a_child_writes_nothing(tmp_path):
    out = _child({_caches.ENV_VAR: "0", "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert out["path"] is None and out["hits"] == 0
    assert _files(tmp_path) == []


def test_the_library_writes_nothing_unless_asked(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    env_without = {k: v for k, v in os.environ.items() if k != _caches.ENV_VAR}
    proc = subprocess.run([sys.executable, "-c", CHILD, "off"], capture_output=True, text=True,
                          env={**env_without, **env}, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(tmp_path) == []


def test_the_default_directory_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _caches.default_compilation_cache_dir() == str(tmp_path / "xdg" / "hypergrad" / "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _caches.default_compilation_cache_dir() == str(tmp_path / "home" / ".cache" / "hypergrad" / "jax")


def test_the_command_turns_it_on_before_anything_compiles(tmp_path, monkeypatch):
    """`hypergrad compare` calls hg.use_compilation_cache() first: stopped there, nothing else ran."""
    calls = []

    class Stop(Exception):
        pass

    def stop(path=None):
        calls.append(path)
        raise Stop

    monkeypatch.setattr(hg, "use_compilation_cache", stop)
    with pytest.raises(Stop):
        cli.main(["compare", "--problem", "iris-mlp", "--budget", "8", "--steps", "8", "--out", str(tmp_path)])
    assert calls == [None]
    assert not any(tmp_path.iterdir())  # no output written, no program run before it


def test_a_file_or_a_non_path_is_refused_naming_the_argument(tmp_path, monkeypatch):
    """use_compilation_cache("/a/file/cache") raised a raw NotADirectoryError and (5) a TypeError
    naming nothing; each is now a ValueError naming path= (or the environment variable), raised
    before JAX's settings change."""
    a_file = tmp_path / "afile"
    a_file.write_text("")
    before = jax.config.jax_compilation_cache_dir
    for path, match in ((str(a_file / "cache"), r"path=.*afile/cache'\) lies under .*afile', which is a file; give a "
                                           r"folder"),
                        (str(a_file), r"path=.*afile'\) is a file; give a folder"),
                        (5, r"use_compilation_cache\(path=5\) must be the path of a folder"),
                        (["a"], r"use_compilation_cache\(path=\['a'\]\) must be the path of a folder")):
        with pytest.raises(ValueError, match=match):
            hg.use_compilation_cache(path)
    monkeypatch.setenv(_caches.ENV_VAR, str(a_file))
    with pytest.raises(ValueError, match=rf"{_caches.ENV_VAR}=.*afile' is a file"):
        hg.use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
