"""The hybrid strategy: each configuration's trajectory is exactly `hg.tune` with the choices fixed."""

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile

from _helpers import sgd_scalar_momentum


@pytest.fixture(scope="module")
def objective(logistic_problem_module):
    return hg.Objective(logistic_problem_module, sgd_scalar_momentum, num_steps=10)


@pytest.fixture(scope="module")
def logistic_problem_module():
    return hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0)


SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "momentum": hg.Choice([0.0, 0.5, 0.9])})
OUTER = optax.adam(0.2)


def _step_cost(objective, key):
    return hg.tune_step_cost(objective.with_fixed({"momentum": 0.5}), hg.Space({"lr": SPACE["lr"]}), key)


def test_each_configuration_follows_tune_with_its_choice_fixed(objective, key):
    budget = 3 * 4.5 * _step_cost(objective, key)  # 4 evaluations for each of 3 configurations
    result = hg.hybrid_search(objective, SPACE, key, budget=budget, outer=OUTER)
    assert result.info["configs"] == 3 and result.info["steps"] == 3 and result.info["programs"] == 1
    assert len(result.trials) == 3 * 4
    assert result.runs <= budget * (1 + 1e-9)
    for i, momentum in enumerate([0.0, 0.5, 0.9]):
        ours = [t for t in result.trials if t.hparams["momentum"] == momentum]
        assert [t.number for t in ours] == [i, 3 + i, 6 + i, 9 + i]  # produced step by step across configs
        alone = hg.tune(objective.with_fixed({"momentum": momentum}), hg.Space({"lr": SPACE["lr"]}), key,
                        steps=3, outer=OUTER)
        np.testing.assert_allclose([t.value for t in ours], [t.value for t in alone.trials], rtol=1e-9)
        np.testing.assert_allclose([float(t.hparams["lr"]) for t in ours],
                                   [float(t.hparams["lr"]) for t in alone.trials], rtol=1e-9)
    assert result.best_value == min(t.value for t in result.trials)


def test_sampled_configurations_are_distinct_and_reused_program(objective, key):
    budget = 2 * 3.5 * _step_cost(objective, key)
    before = _compile.stats.compilations
    first = hg.hybrid_search(objective, SPACE, key, budget=budget, configs=2, outer=OUTER)
    compiled = _compile.stats.compilations - before
    momenta = {float(t.hparams["momentum"]) for t in first.trials}
    assert len(momenta) == 2 and first.info["configs"] == 2
    hg.hybrid_search(objective, SPACE, jax.random.key(7), budget=budget, configs=2, outer=OUTER)
    assert _compile.stats.compilations - before == compiled  # new values, same shapes: nothing compiles


def test_an_equal_outer_optimiser_made_anew_compiles_nothing(objective, key):
    # The outer-step program was keyed by the optax object, and optax.adam(0.2) != optax.adam(0.2)
    # (fresh closures): every call with outer=optax.adam(...) written inline (HypergradSearchCV's
    # too) compiled it again.
    budget = 2 * 3.5 * _step_cost(objective, key)
    first = hg.hybrid_search(objective, SPACE, key, budget=budget, configs=2, outer=optax.adam(0.2))
    before = _compile.stats.compilations
    again = hg.hybrid_search(objective, SPACE, key, budget=budget, configs=2, outer=optax.adam(0.2))
    assert _compile.stats.compilations == before and again.compile_seconds == 0.0
    assert [t.value for t in again.trials] == [t.value for t in first.trials]


def test_hybrid_refuses_what_it_cannot_do(objective, key):
    with pytest.raises(ValueError, match="no hg.Choice"):
        hg.hybrid_search(objective, hg.Space({"lr": SPACE["lr"]}), key, budget=100)
    with pytest.raises(ValueError, match="no Uniform/LogUniform"):
        hg.hybrid_search(objective, hg.Space({"momentum": SPACE["momentum"]}), key, budget=100)
    for bad in (-1, float("inf"), float("nan"), "60", True):
        with pytest.raises(ValueError, match=r"budget=.* must be a positive, finite number"):
            hg.hybrid_search(objective, SPACE, key, budget=bad)
    with pytest.raises(ValueError, match=r"budget=7(\.0)? runs buys 1"):  # a numpy number is a number
        hg.hybrid_search(objective, SPACE, key, budget=np.float32(7), configs=2)
    with pytest.raises(ValueError, match="configs='all'"):
        hg.hybrid_search(objective, SPACE, key, budget=100, configs="all")
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"budget=1 runs cannot buy two hypergradients for each of 3"):
        hg.hybrid_search(objective, SPACE, key, budget=1)
    assert _compile.stats.compilations == compilations
    with pytest.raises(ValueError, match=r"budget=7 runs buys 1 hypergradient"):  # 3.3 runs each, after accounting
        hg.hybrid_search(objective, SPACE, key, budget=7, configs=2)
    assert _compile.stats.compilations == compilations  # counted by tracing, refused before compiling


_TWO_DEVICES = """
import json, jax, optax, hypergrad as hg
hg.use_cpu_cores(2)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=10)
space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "momentum": hg.Choice([0.0, 0.5, 0.9])})
result = hg.hybrid_search(objective, space, jax.random.key(0), budget=40.0, outer=optax.adam(0.2))
print(json.dumps({"runs": result.runs, "trial_runs": sum(t.runs for t in result.trials),
                  "steps": result.info["steps"], "trials": len(result.trials)}))
"""


def test_budget_counts_the_padding_of_a_chunk_split_over_devices():
    """3 configurations on 2 devices run as a chunk of 4 (one padding row, charged to the trials):
    the steps the budget buys are counted with it, so the compute spent stays within the budget."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["trials"] == 3 * (got["steps"] + 1) and got["steps"] >= 1
    assert got["runs"] == pytest.approx(got["trial_runs"], rel=1e-12)
    assert got["runs"] <= 40.0 * (1 + 1e-9)


def test_hybrid_searchs_recorded_seconds_are_the_whole_call(objective, key):
    """`spent("seconds")` at the last trial is the call's wall time (set-up outside the timed programs
    charged with the compilation, as tune's and the searches'): it held only the compile and step
    seconds, leaving out the plan, the FLOP counts, the starts and the checks."""
    import time

    budget = 3 * 2.5 * _step_cost(objective, key)
    for _ in range(2):  # a fresh objective's programs compiled, then the same call again (cached)
        began = time.perf_counter()
        result = hg.hybrid_search(objective, SPACE, key, budget=budget, outer=OUTER)
        measured = time.perf_counter() - began
        recorded = float(result.spent("seconds")[-1])
        assert 0.9 * measured <= recorded <= measured * (1 + 1e-9), (recorded, measured)


@pytest.mark.parametrize("kwargs, match", [
    ({"log": 123}, r"log=123 must be the path of a JSON-lines file"),  # was open()'s TypeError, after compiling
    ({"log": "/proc/no_such_dir/trials.jsonl"}, r"log='/proc/no_such_dir/trials.jsonl': its directory"),
    ({"outer": optax.lbfgs()}, r"outer=: .*value_fn"),  # was optax's TypeError from inside the trace
])
def test_a_bad_log_or_outer_is_refused_before_compiling(objective, key, kwargs, match):
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hybrid_search(objective, SPACE, key, budget=100, **kwargs)
    assert _compile.stats.compilations == compilations


def test_info_outer_describes_the_optimiser_without_addresses(objective, key):
    budget = 3 * 2.5 * _step_cost(objective, key)
    info = [hg.hybrid_search(objective, SPACE, key, budget=budget, outer=optax.adam(0.2)).info["outer"]
            for _ in range(2)]
    assert info[0] == info[1] and "0x" not in repr(info[0])  # was repr(outer): closures at memory addresses


def test_hybrid_trials_hold_the_choice_as_random_search_does():
    """A numeric Choice came back from hybrid_search as a float64 NumPy scalar of the declared
    option (0.9), where random_search gives a 0-d array of the dtype trained (float32 0.9 without
    x64), and hybrid's hparams put the continuous names first: to_dataframe's columns differed from
    the search's. Both now give the same form, dtype and the space's order."""
    with jax.enable_x64(False):
        problem = hg.problems.ridge(num_examples=20, num_features=3, seed=0)
        objective = hg.Objective(problem, sgd_scalar_momentum, num_steps=4)
        space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "momentum": hg.Choice([0.0, 0.9]),
                          "weight_decay": hg.LogUniform(1e-4, 1e-1)})
        key = jax.random.key(0)
        hybrid = hg.hybrid_search(objective, space, key, budget=40.0, outer=OUTER)
        searched = hg.random_search(objective, space, key, num_trials=4)
    forms = {name: (type(v), v.dtype, v.shape) for name, v in searched.trials[0].hparams.items()}
    assert forms["momentum"] == (np.ndarray, np.dtype(np.float32), ())
    for trial in hybrid.trials:
        assert list(trial.hparams) == list(space.names)
        assert {name: (type(v), v.dtype, v.shape) for name, v in trial.hparams.items()} == forms
    assert {float(t.hparams["momentum"]) for t in hybrid.trials} == {0.0, float(np.float32(0.9))}
    assert list(hybrid.to_dataframe().columns) == list(searched.to_dataframe().columns)


def test_a_configuration_whose_centre_diverges_restarts_until_a_step_is_finite(ridge_problem):
    """Every configuration starts at the centre (lr=1); with mult=10 it overflows there. That start
    was its only "good" iterate, so every step went back to it: the configuration looked as if it
    always diverged, though it trains at smaller rates. Each failed step now restarts it at a fresh
    draw (`outer.restart_draws`) until one is finite, with a warning; the other configuration is
    untouched, and the same call gives the same trials."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"] * h["mult"]), num_steps=200)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e3), "mult": hg.Choice([1.0, 10.0])})

    def run():
        with pytest.warns(RuntimeWarning, match=r"1 of 2 tuners \(1\) started where .* 1 of them then reached"):
            return hg.hybrid_search(objective, space, jax.random.key(0), budget=40)

    result = run()
    wild = [t for t in result.trials if float(t.hparams["mult"]) == 10.0]
    tame = [t for t in result.trials if float(t.hparams["mult"]) == 1.0]
    assert wild[0].state == "fail" and float(wild[0].hparams["lr"]) == pytest.approx(1.0)
    assert len({float(t.hparams["lr"]) for t in wild}) > 2  # it moved
    assert any(t.state == "complete" and np.isfinite(t.value) for t in wild)
    assert all(t.state == "complete" for t in tame)
    again = run()
    assert [(t.tuner, t.state) for t in again.trials] == [(t.tuner, t.state) for t in result.trials]
    np.testing.assert_array_equal([t.value for t in again.trials], [t.value for t in result.trials])  # NaN == NaN
    assert [float(t.hparams["lr"]) for t in again.trials] == [float(t.hparams["lr"]) for t in result.trials]
