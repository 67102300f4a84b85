"""`hypergrad compare --resample-key`: the gradient strategy trains each outer step on a fresh key
(`tune(resample_key=True)`, the README's remedy against a tuned schedule or per-example weights
fitting one key's noise; `benchmarks/noisy_ceiling.md` measures it on digits-noisy), which the
command had no way to ask for; the plan's description says so."""

import argparse

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad import cli

SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
PLAN = {"tune_steps": 2, "population": 2, "warmup": 4, "halving": None, "random_trials": 4,
        "grid_points_per_axis": 2}


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_the_option_parses_off_by_default():
    parser = cli.build_parser()
    assert parser.parse_args(["compare"]).resample_key is False
    assert parser.parse_args(["compare", "--resample-key"]).resample_key is True


@pytest.mark.parametrize("resample", [False, True])
def test_the_gradient_strategy_resamples_its_key_when_asked(objective, resample):
    key = jax.random.key(0)
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=64, resample_key=resample),
                                  objective, SPACE, key, hg.Reverse(), PLAN, None, None)
    assert results["hypergradient"].info["resample_key"] is resample
    hg.clear_caches()  # as the command does before tune
    alone = hg.tune(objective, SPACE, key, method=hg.Reverse(), outer=optax.adam(0.05), steps=2, population=2,
                    warmup=4, resample_key=resample)
    assert [t.value for t in results["hypergradient"].trials] == [t.value for t in alone.trials]


def test_a_namespace_without_the_option_keeps_one_key(objective):
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=64), objective, SPACE,
                                  jax.random.key(0), hg.Reverse(), PLAN, None, None)
    assert results["hypergradient"].info["resample_key"] is False


def test_the_plan_line_and_the_report_say_the_key_is_resampled(objective, tmp_path):
    args = argparse.Namespace(outer_lr=0.05, chunk_size=64, resample_key=True, budget=20.0, seed=0, steps=None,
                              checkpoint_every=None)
    said: list[str] = []
    # the name only labels the outputs (a preset with no label noise: no weights section)
    planned = (objective, SPACE, jax.random.key(0), hg.Reverse(), {**PLAN, "halving": 1})
    cli._compare_one(args, "iris-mlp", planned, str(tmp_path), said.append)
    plan_line = next(line for line in said if line.startswith("[plan]"))
    assert cli.RESAMPLE_WORDS in plan_line
    assert f"unconstrained coordinates{cli.RESAMPLE_WORDS})" in (tmp_path / "report.md").read_text()
