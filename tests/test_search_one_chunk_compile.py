"""A search whose trials fill exactly one chunk runs the program that longer searches at that
chunk size compiled (README, Search: "any trial count from chunk_size up reuses one program")."""

import json
import subprocess
import sys

import jax
import numpy as np
import optax

import hypergrad as hg
from hypergrad import _compile


def _objective(problem):
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)


_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def _compiled_by(search):
    """(result, programs compiled) of `search()`."""
    before = _compile.stats.compilations
    result = search()
    return result, _compile.stats.compilations - before


def test_one_chunk_of_trials_reuses_the_program_of_several_chunks_with_the_same_values(ridge_problem):
    objective = _objective(ridge_problem)
    key = jax.random.key(0)
    longer, compiled = _compiled_by(lambda: hg.random_search(objective, _SPACE, key, num_trials=8, chunk_size=4))
    assert compiled == 1 and longer.info["chunk_size"] == 4
    one, compiled = _compiled_by(lambda: hg.random_search(objective, _SPACE, key, num_trials=4, chunk_size=4))
    assert compiled == 0 and one.compile_seconds == 0.0 and one.info["chunk_size"] == 4
    # the same draws through the same program: the first chunk's values, bit for bit
    assert [t.hparams for t in one.trials] == [t.hparams for t in longer.trials[:4]]
    assert [t.value for t in one.trials] == [t.value for t in longer.trials[:4]]


def test_one_chunk_first_then_several_compiles_once(ridge_problem):
    objective = _objective(ridge_problem)
    one, compiled = _compiled_by(lambda: hg.random_search(objective, _SPACE, jax.random.key(1), num_trials=3,
                                                          chunk_size=3))
    assert compiled == 1
    longer, compiled = _compiled_by(lambda: hg.random_search(objective, _SPACE, jax.random.key(1), num_trials=7,
                                                             chunk_size=3))
    assert compiled == 0 and longer.compile_seconds == 0.0
    np.testing.assert_array_equal([t.value for t in longer.trials[:3]], [t.value for t in one.trials])


_TWO_DEVICES = """
import os
from hypergrad import _compile  # starts no JAX backend, so the flags below still apply
os.environ["XLA_FLAGS"] = _compile.quick_xla_flags()  # as conftest: only flags this jaxlib knows
import json, jax, optax, hypergrad as hg
from hypergrad import _compile
hg.use_cpu_cores(2)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
out = {}
for chunk in (4, 3):  # 4 shards over the 2 devices; 3 divides no mesh and runs on the default device
    for n in (2 * chunk, chunk):
        before = _compile.stats.compilations
        r = hg.random_search(objective, space, jax.random.key(3), num_trials=n, chunk_size=chunk)
        out[f"{chunk}/{n}"] = {"compiled": _compile.stats.compilations - before, "devices": r.info["devices"],
                               "values": [t.value for t in r.trials]}
print(json.dumps(out))
"""


def test_on_two_devices_one_chunk_reuses_the_program_sharded_or_not():
    done = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, check=True)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    for chunk in (4, 3):
        longer, one = runs[f"{chunk}/{2 * chunk}"], runs[f"{chunk}/{chunk}"]
        assert longer["devices"] == one["devices"] == 2
        assert (longer["compiled"], one["compiled"]) == (1, 0), chunk
        assert one["values"] == longer["values"][:chunk]
