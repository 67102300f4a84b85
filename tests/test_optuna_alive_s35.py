"""optuna_search keeps no objective alive through optuna's first import (session 35).

The first call of `hg.optuna_search` in a process imported optuna under its own frame; optuna keeps the
tracebacks of the optional imports it defers (`optuna._imports.try_import`, redis when missing), and a
kept traceback's frames hold their callers' frames (`f_back`) with their locals, so that first call's
objective (and its data) stayed alive for the rest of the process. The import now runs on a thread of
its own. Only a fresh process imports optuna for the first time, hence the subprocess.
"""

import importlib.abc
import subprocess
import sys
import textwrap

import jax
import optax
import pytest

import hypergrad as hg

pytest.importorskip("optuna")

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3)})

# redis refused whether or not it is installed: optuna then keeps that ImportError's traceback
FIRST_CALL = textwrap.dedent("""
    import gc, sys, weakref
    sys.modules["redis"] = None
    import jax, optax
    import hypergrad as hg
    assert "optuna" not in sys.modules, "optuna was imported before the first optuna_search"
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3)})
    for call in range(2):
        problem = hg.problems.ridge(num_examples=12, num_features=3, noise=0.5, seed=0)
        objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
        alive = weakref.ref(objective)
        hg.optuna_search(objective, space, jax.random.key(0), num_trials=2, sampler="random")
        del objective, problem
        gc.collect()
        print(call, "alive" if alive() is not None else "freed")
""")


class _NoOptuna(importlib.abc.MetaPathFinder):
    """Stands for an environment without optuna (its first import, not yet in sys.modules)."""

    def find_spec(self, name, path=None, target=None):
        if name == "optuna":
            raise ModuleNotFoundError("No module named 'optuna'", name="optuna")
        return None


def _objective():
    problem = hg.problems.ridge(num_examples=12, num_features=3, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)


@pytest.mark.parametrize("loaded", [True, False], ids=["refused-in-sys.modules", "first-import"])
def test_missing_optuna_names_the_extra(monkeypatch, loaded):
    if loaded:
        monkeypatch.setitem(sys.modules, "optuna", None)
    else:
        monkeypatch.delitem(sys.modules, "optuna")
        monkeypatch.setattr(sys, "meta_path", [_NoOptuna(), *sys.meta_path])
    with pytest.raises(ImportError, match=r"pip install 'hypergrad\[optuna\]'"):
        hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=1)


# Result.to_optuna imported optuna the same way: a caller's frame (here `study`, holding the
# objective) stayed alive through optuna's kept traceback when to_optuna came first in a process.
TO_OPTUNA_FIRST = textwrap.dedent("""
    import gc, os, sys, tempfile, weakref
    sys.modules["redis"] = None
    import jax, optax
    import hypergrad as hg
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3)})
    folder = tempfile.mkdtemp()

    def study(call):
        problem = hg.problems.ridge(num_examples=12, num_features=3, noise=0.5, seed=0)
        objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
        result = hg.random_search(objective, space, jax.random.key(0), num_trials=2)
        assert call or "optuna" not in sys.modules, "optuna was imported before the first to_optuna"
        result.to_optuna(f"sqlite:///{os.path.join(folder, 'o.db')}", f"s{call}", space=space)
        return weakref.ref(objective)

    for call in range(2):
        alive = study(call)
        gc.collect()
        print(call, "alive" if alive() is not None else "freed")
""")


@pytest.mark.parametrize("script", [FIRST_CALL, TO_OPTUNA_FIRST], ids=["optuna_search", "to_optuna"])
def test_the_first_import_of_optuna_frees_the_callers_objective(script):
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "freed", "1", "freed"], out.stdout


def test_missing_optuna_names_the_extra_in_to_optuna(monkeypatch, tmp_path):
    result = hg.random_search(_objective(), SPACE, jax.random.key(0), num_trials=1)
    monkeypatch.delitem(sys.modules, "optuna")
    monkeypatch.setattr(sys, "meta_path", [_NoOptuna(), *sys.meta_path])
    with pytest.raises(ImportError, match=r"to_optuna needs optuna: pip install 'hypergrad\[optuna\]'"):
        result.to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "s")
