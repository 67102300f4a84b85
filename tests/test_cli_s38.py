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


@pytest.mark.parametrize("every", ["20", "1000"])
def test_a_checkpoint_every_of_at_least_the_steps_is_a_usage_error_before_anything_runs(tmp_path, capsys,
                                                                                        monkeypatch, every):
    # was accepted, and the plan said "checkpointed every 1000 steps" of a run trained in one segment of 20
    monkeypatch.setattr(cli, "_planned", lambda *a: pytest.fail("planned"))
    monkeypatch.setattr(hg, "use_compilation_cache", lambda *a: pytest.fail("turned the cache on"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--problem", "iris-mlp", "--steps", "20", "--checkpoint-every", every,
                  "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "argument --checkpoint-every" in err and "--steps T=20" in err and "sqrt(T) = 4" in err, err
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_every_below_a_presets_default_steps_is_checked_against_them(tmp_path, capsys, monkeypatch):
    # no --steps: the preset's own T (200 on iris-mlp) is what K must stay below
    monkeypatch.setattr(cli, "_planned", lambda *a: pytest.fail("planned"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--problem", "iris-mlp", "--checkpoint-every", "200", "--out", str(tmp_path), "--quiet"])
    assert exit_.value.code == 2 and "T=200 (the preset default) on iris-mlp" in capsys.readouterr().err
    cli._check_checkpointing(argparse.Namespace(checkpoint_every=199, steps=None, problem=["iris-mlp"]))  # accepted


def test_results_json_holds_the_random_search_the_equal_time_tables_rank(ridge_problem, tmp_path, monkeypatch):
    # results.json kept only the budget's random search and the continued one's counts: its set-up
    # seconds and where they are charged were written nowhere, so the equal-time tables could not be
    # recomputed from the files
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    key = jax.random.key(0)
    random = hg.random_search(objective, SPACE, key, 4, chunk_size=4)
    continued = hg.random_search(objective, SPACE, key, 12, chunk_size=4, extends=random)
    grid = hg.grid_search(objective, SPACE, key, 2, chunk_size=4)
    results, by_seconds = {"random": random, "grid": grid}, {"random": continued, "grid": grid}
    monkeypatch.setattr(type(hg.compare(results)), "plot", lambda self, out: (_ for _ in ()).throw(ImportError("-")))
    args = argparse.Namespace(budget=4.0, seed=0, outer_lr=0.05)
    plan = {"tune_steps": 1, "population": 2, "warmup": 4, "halving": None, "random_trials": 4,
            "grid_points_per_axis": 2, "method": "Reverse"}
    cli._write_outputs(args, str(tmp_path), "ridge", objective, SPACE, plan, results, by_seconds, "", 1.0, None)
    written = json.loads((tmp_path / "results.json").read_text())
    assert list(written["results_at_equal_wall_time"]) == ["random"]
    read = {name: hg.Result.from_dict(written["results_at_equal_wall_time"].get(name, entry))
            for name, entry in written["results"].items()}
    assert len(read["random"].trials) == 12
    assert read["random"].info["setup_seconds_at"] == continued.info["setup_seconds_at"]
    # the budget: the seconds the slowest strategy took within its own budget
    slowest = max(float(hg.Result.from_dict(entry).spent("seconds")[-1]) for entry in written["results"].values())
    again = hg.compare(read, [slowest / 8, slowest / 4, slowest / 2, slowest], by="seconds")
    assert again.to_dict() == written["comparison_by_seconds"]


def test_progress_while_random_search_continues_counts_all_its_trials():
    # "[random] 40/360" counted only the continuation's trials, though the budget's 40 had already run
    said = []
    cli._more(said.append, 40)("[random] 40/360  best val 3.3e-05  40.0 runs  1.2s")
    cli._more(said.append, 40)("no count here")
    assert said == ["[random] 40/360 more (80/400 in all)  best val 3.3e-05  40.0 runs  1.2s", "no count here"]
