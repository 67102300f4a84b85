"""A call's description (a stored study's fingerprint, which `jax.distributed` processes also
compare) is the same in every process running the same code, whatever its PYTHONHASHSEED, and it
sees the code of a Choice's function options and keyword-only defaults. Studies stored in the
format before (3) still resume."""

import dataclasses
import functools
import json
import os
import sqlite3
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import FINGERPRINT_FORMAT, first_difference
from _helpers import Stop, fingerprint_format, stop_after

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})

# A loss and a Choice option whose code holds set literals: Python compiles `x in {...}` to a
# frozenset constant, whose repr lists its elements in the order of their string hashes.
DESCRIBE = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
import hypergrad as hg

def train_loss(p, h, b):
    x, t = b
    name = "mse"
    if name in {"mse", "l2", "squared", "quadratic", "ridge", "gauss"}:
        return jnp.mean((x @ p - t) ** 2) + h["lr"] * 0.0
    return jnp.mean(jnp.abs(x @ p - t))

def clipped(z):
    return z if "relu" in {"tanh", "relu", "gelu", "silu", "elu"} else -z

X = np.arange(12.0).reshape(4, 3)
problem = hg.Problem(init=lambda k: jnp.zeros(3), train_loss=train_loss, val_loss=lambda p, b: jnp.mean(b[0] @ p),
                     train_data=(X, X[:, 0]), val_data=(X, X[:, 0]))
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.1), "act": hg.Choice([clipped, jnp.tanh])})
call = hg.store.fingerprint("grid", objective, space, jax.random.key(0), num_points=2)

# Objects described by their repr (an installed package's: argparse.Namespace) and a pytree node with a
# frozenset of strings as auxiliary data, printed in the hash seed's order before format 6.
from hypergrad._store_codec import identity
import argparse, typing

from _helpers import Node  # tests/ is on the child's PYTHONPATH

T = typing.TypeVar("T")
class Losses(typing.Generic[T]):  # the user's Generic class: its Python repr prints a set
    def __init__(self, names):
        self.names = set(names)
    def __repr__(self):
        return f"Losses({self.names})"

names = ["mse", "l2", "huber", "hinge", "logistic", "ridge"]
json.dump({"call": call,
           "namespace": identity(argparse.Namespace(losses=set(names), lr=0.1)),
           "node": identity(Node(jnp.zeros(2), frozenset(names))),
           "generic": identity(Losses(names))}, sys.stdout, sort_keys=True)
"""


@functools.cache
def described_with_hash_seeds(*seeds):
    """What `DESCRIBE` prints in fresh interpreters (run at once), one per PYTHONHASHSEED in
    `seeds`: the call's fingerprint and the objects' descriptions. Cached: one launch serves every
    test that reads it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(hg.__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", DESCRIBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONHASHSEED": str(seed), "JAX_PLATFORMS": "cpu",
                                              "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests"),
                                                                            os.environ.get("PYTHONPATH", "")])})
             for seed in seeds]
    described = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        described.append(json.loads(out))
    return described


def test_a_call_is_described_alike_under_any_hash_seed():
    """Two fresh processes (two launches of one script, or two processes of one jax.distributed run)
    get other hash seeds: a set literal in the user's loss once made their descriptions differ, so
    the processes refused to run together and a stored study did not resume."""
    a, b = (described["call"] for described in described_with_hash_seeds(0, 2))
    assert a["format"] == FINGERPRINT_FORMAT
    assert first_difference(a, b) is None and a == b


def test_objects_described_by_their_repr_and_nodes_are_described_alike_under_any_hash_seed():
    """An argparse.Namespace holding a set of strings (described by its repr: an installed
    package's object) and a pytree node with a frozenset of strings as auxiliary data were
    described otherwise under two hash seeds: a study of a loss closing over one never resumed in
    a new process. (A user's typing.Generic class with a Python repr: alike already.) The same
    launch as the test above."""
    a, b = ({k: v for k, v in described.items() if k != "call"} for described in described_with_hash_seeds(0, 2))
    assert first_difference(a, b) is None
    assert "repr" not in a["generic"]


def scaled_loss(scale):
    """A train loss whose scale is a keyword-only default, held beside its code (its code is the
    same for every scale)."""

    def train_loss(params, hparams, batch, *, factor=scale):
        x, y = batch
        return factor * jnp.mean((x @ params - y) ** 2) + hparams["weight_decay"] * jnp.sum(params ** 2)

    return train_loss


def test_a_keyword_only_default_of_the_users_function_is_described(ridge_problem, key):
    """`def train_loss(p, h, b, *, factor=2.0)`: editing the default changes results as much as
    editing the code, and was not described."""
    objectives = [hg.Objective(dataclasses.replace(ridge_problem, train_loss=scaled_loss(s)),
                               lambda h: optax.sgd(h["lr"]), num_steps=3) for s in (1.0, 2.0, 1.0)]
    described = json.loads(json.dumps([hg.store.fingerprint("grid", o, SPACE, key, num_points=2) for o in objectives]))
    assert first_difference(described[0], described[1]) == "objective.problem.train_loss.kwdefaults.factor"
    assert first_difference(described[0], described[2]) is None


def identity_activation(z):
    return z


def build(config):
    """A family whose objective applies the chosen activation (given as the option itself)."""
    act = config["act"]
    x = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    y = np.tanh(x.sum(1))
    loss = lambda p, b: jnp.mean((act(b[0] @ p) - b[1]) ** 2)  # noqa: E731
    problem = hg.Problem(init=lambda k: jnp.full(3, 0.1), train_loss=lambda p, h, b: loss(p, b), val_loss=loss,
                         train_data=(x, y), val_data=(x, y))
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def activations(edited):
    """The options [identity, tanh], or with the second option's body edited (the same name)."""
    second = (lambda z: jnp.sin(3 * z)) if edited else (lambda z: jnp.tanh(z))
    return hg.Space({"lr": hg.LogUniform(1e-2, 0.5), "act": hg.Choice([identity_activation, second])})


def test_an_edited_function_option_is_a_different_call(key, tmp_path):
    """A Choice's function options were described by their name alone (every lambda is
    '<function <lambda>>'): a study resumed after an option's body was edited returned the old
    function's trials as the new one's."""
    db = tmp_path / "study.db"
    family = hg.Structured(build)
    stored = hg.grid_search(family, activations(False), key, 2, storage=db, study="g")
    with pytest.raises(ValueError, match=r"study 'g' .* different call: space\.act\.options\[1\]\.code differs"):
        hg.grid_search(family, activations(True), key, 2, storage=db, study="g")
    resumed = hg.grid_search(family, activations(False), key, 2, storage=db, study="g")
    assert [t.value for t in resumed.trials] == [t.value for t in stored.trials]
    # the labels Result.to_optuna and hg.optuna_search read stay the options' names
    assert resumed.info["space"]["act"]["options"][1] == {"repr": "<function activations.<locals>.<lambda>>"}


def test_a_study_stored_in_format_3_still_resumes(key, tmp_path):
    """A study stored before format 4 (its function options by name, its code's sets by repr) is
    compared as it was made, and resumes."""
    db = tmp_path / "study.db"
    family, space = hg.Structured(build), activations(False)
    with fingerprint_format(3), pytest.raises(Stop):
        hg.random_search(family, space, key, 6, chunk_size=3, storage=db, study="r", progress=stop_after(1))
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()[0])
    assert stored["format"] == 3 and stored["space"]["act"]["options"][1] == {
        "repr": "<function activations.<locals>.<lambda>>"}
    progress, whole_progress = stop_after(0), stop_after(0)
    resumed = hg.random_search(family, space, key, 6, chunk_size=3, storage=db, study="r", progress=progress)
    whole = hg.random_search(family, space, key, 6, chunk_size=3, progress=whole_progress)
    assert len(progress.calls) < len(whole_progress.calls)  # the stored trials were loaded, not run again
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
