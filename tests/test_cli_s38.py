"""`hypergrad compare`, session 38 fixes (report_hunt): in a cold run each strategy pays for its own
compilation (none loads a program another strategy of the same run compiled, from hypergrad's
program store or JAX's persistent cache); results.json holds the random search the equal-time tables
rank; a --checkpoint-every that checkpoints nothing is refused."""

import argparse
import json

import jax
import optax
import pytest
from jax._src import compilation_cache

import hypergrad as hg
from hypergrad import cli

SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
# random's 4 trials and grid's 2^2 points run in one chunk of 4 each: the same search program
PLAN = {"tune_steps": 1, "population": 2, "warmup": 4, "halving": None, "random_trials": 4,
        "grid_points_per_axis": 2}


@pytest.fixture
def cold_cache(tmp_path):
    """The persistent compilation cache on, in an empty folder of its own (conftest turns it off); JAX's
    settings restored afterwards."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    hg.use_compilation_cache(tmp_path / "cache")
    yield tmp_path / "cache"
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_in_a_cold_run_random_search_loads_nothing_grid_search_compiled(ridge_problem, cold_cache):
    # random ran after grid and loaded grid's program from the store grid had just written ("partly
    # warm: 1 loaded"), so it was charged ~1 s of compilation where grid paid 13 s at equal wall time
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=4), objective, SPACE,
                                  jax.random.key(0), hg.Reverse(), PLAN, None, None)
    assert results["random"].info["chunk_size"] == results["grid"].info["chunk_size"] == 4
    for name, result in results.items():
        compilation = result.info["compilation"]
        assert compilation["cache"] == "cold" and compilation["loaded"] == 0, (name, compilation)
    # the entries held out of the later strategies' reach are back where a later run finds them
    assert not [p for p in cold_cache.iterdir() if p.name.startswith(".hypergrad-compare-held")]
    assert len(list((cold_cache / "hypergrad-programs").iterdir())) >= 2  # tune's programs, the searches' one
