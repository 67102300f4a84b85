"""Random and grid search: one vmapped, chunked program equal to evaluating every trial alone.

Checks that the vmapped values equal a Python loop of single evaluations (float64), that padding
and chunking change nothing, that grids hold their bounds, that diverged trials fail and are never
best, that repeated calls compile nothing, that logs stream, and that bad arguments are refused
before anything compiles.
"""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _compile, accounting, search  # noqa: E402
from hypergrad.results import COMPLETE, FAIL  # noqa: E402
from hypergrad.search import run_flops  # noqa: E402
from _helpers import counting  # noqa: E402
from hypergrad.problems import sgd_momentum_schedule as sgd_schedule  # noqa: E402

T = 12  # training steps of the minibatch objective


@pytest.fixture(scope="module")
def mb_objective():
    """Softmax regression on minibatches of 8 (so every trial must replay the same batches)."""
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0,
                                   batch_size=8)
    return hg.Objective(problem, sgd_schedule, num_steps=T)


@pytest.fixture(scope="module")
def mb_space():
    return hg.Space({
        "lr": hg.LogUniform(1e-2, 1.0, shape=(T,)),
        "momentum": hg.Uniform(0.0, 0.9),
        "weight_decay": hg.LogUniform(1e-5, 1e-1),
    })


@pytest.fixture(scope="module")
def single_evaluation(mb_objective):
    """Scores of one trial evaluated alone: `objective.evaluate(hparams, key)`, jitted once."""
    return jax.jit(mb_objective.evaluate)


def sgd(h):
    return optax.sgd(h["lr"])


@pytest.fixture(scope="module")
def ridge_problem_():
    return hg.problems.ridge(num_examples=40, num_features=5, seed=0)


def assert_trials_match_loop(result, evaluate, key):
    """Every trial's value and scores equal a single evaluation of its hyperparameters."""
    for i, trial in enumerate(result.trials):
        assert trial.number == i
        alone = evaluate(trial.hparams, key)
        assert set(trial.scores) == set(alone)
        for name, value in alone.items():
            np.testing.assert_allclose(trial.scores[name], float(value), rtol=1e-10, atol=1e-12,
                                       err_msg=f"trial {i}, score {name}")
        assert trial.value == trial.scores["val_loss"]
        assert trial.test_value == trial.scores["test_loss"]


# -- random search equals a loop --------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_results(mb_objective, mb_space):
    """10 trials in chunks of 4 (4 + 4 + 2 padded) and in one chunk (chunk_size > num_trials)."""
    key = jax.random.key(3)
    return key, {chunk: hg.random_search(mb_objective, mb_space, key, num_trials=10, chunk_size=chunk)
                 for chunk in (4, 64)}


@pytest.mark.parametrize("chunk_size", [4, 64])
def test_random_search_equals_loop_of_single_evaluations(random_results, mb_objective, single_evaluation,
                                                         chunk_size):
    key, results = random_results
    result = results[chunk_size]
    assert len(result.trials) == 10
    assert result.info["chunk_size"] == min(chunk_size, 10)
    assert_trials_match_loop(result, single_evaluation, key)
    if chunk_size == 4:  # the public call itself (not jitted), for the last trial of the padded chunk
        last = result.trials[-1]
        np.testing.assert_allclose(last.value, float(mb_objective(last.hparams, key)), rtol=1e-10)


def test_one_trial_search_equals_a_single_evaluation(mb_objective, mb_space, single_evaluation):
    """One trial runs the plain program (no vmap), its scores stacked into one array and named
    back: the same values and names as evaluating the trial alone."""
    key = jax.random.key(7)
    result = hg.random_search(mb_objective, mb_space, key, num_trials=1)
    assert len(result.trials) == 1 and result.info["chunk_size"] == 1
    assert_trials_match_loop(result, single_evaluation, key)


def test_random_search_samples_inside_the_space_with_constant_schedules(random_results, mb_space):
    _, results = random_results
    trials = results[4].trials
    for trial in trials:
        assert set(trial.hparams) == set(mb_space.names)
        assert trial.hparams["lr"].shape == (T,)
        np.testing.assert_array_equal(trial.hparams["lr"], trial.hparams["lr"][0])  # one value broadcast
        for name in mb_space.names:
            dist = mb_space[name]
            assert np.all((dist.lo <= trial.hparams[name]) & (trial.hparams[name] <= dist.hi))
    lrs = [float(t.hparams["lr"][0]) for t in trials]
    assert len(set(lrs)) == len(lrs)  # distinct settings
    assert all(t.state == COMPLETE for t in trials)


def test_chunking_and_padding_change_nothing_but_compute(random_results, mb_objective):
    key, results = random_results
    padded, whole = results[4], results[64]
    for a, b in zip(padded.trials, whole.trials, strict=True):
        for name in a.hparams:
            np.testing.assert_array_equal(a.hparams[name], b.hparams[name])
        np.testing.assert_allclose(a.value, b.value, rtol=1e-10)
    # The padded last chunk (2 real trials in 4 rows) is compute spent: 12 evaluations, not 10.
    per_trial = run_flops(mb_objective, padded.trials[0].hparams, key)
    assert padded.flops == pytest.approx(12 * per_trial, rel=1e-9)
    assert whole.flops == pytest.approx(10 * per_trial, rel=1e-9)
    assert padded.trials[-1].runs == pytest.approx(2 * padded.trials[0].runs, rel=1e-9)
    assert padded.trials[0].runs == pytest.approx(1.0, rel=1e-12)  # a trial is one training run


def test_new_key_changes_samples_and_training(mb_objective, mb_space, random_results):
    key, results = random_results
    other = hg.random_search(mb_objective, mb_space, jax.random.key(4), num_trials=4, chunk_size=4)
    assert not np.allclose(other.trials[0].hparams["momentum"], results[4].trials[0].hparams["momentum"])



# -- a search continued (equal wall time) ------------------------------------------------------------
def test_extended_random_search_equals_one_call_with_more_trials(random_results, mb_objective, mb_space, tmp_path):
    """`extends=`: the earlier trials kept (not re-run), the rest drawn after them: trial for trial
    one call with the larger count (same key), numbered on, only the new trials logged."""
    key, results = random_results
    earlier = results[4]
    log = tmp_path / "more.jsonl"
    more = hg.random_search(mb_objective, mb_space, key, num_trials=15, chunk_size=4, extends=earlier, log=log)
    once = hg.random_search(mb_objective, mb_space, key, num_trials=15, chunk_size=4)
    assert [t.number for t in more.trials] == list(range(15))
    assert all(a is b for a, b in zip(more.trials[:10], earlier.trials))  # kept, not re-run
    for a, b in zip(more.trials, once.trials, strict=True):
        for name in a.hparams:
            np.testing.assert_array_equal(a.hparams[name], b.hparams[name])
        np.testing.assert_allclose(a.value, b.value, rtol=1e-10)
    assert [json.loads(line)["number"] for line in log.read_text().splitlines()] == list(range(10, 15))
    assert more.info["num_trials"] == 15 and more.info["extended_from"] == 10
    assert more.flops == pytest.approx(earlier.flops + 8 * more.run_flops, rel=1e-9)  # 5 new trials in 2 chunks of 4
    assert more.compile_seconds >= earlier.compile_seconds
    assert hg.random_search(mb_objective, mb_space, key, num_trials=10, extends=earlier) is earlier


def test_extends_refuses_what_is_not_this_search(random_results, mb_objective, mb_space, tmp_path):
    key, results = random_results
    earlier = results[4]
    with pytest.raises(ValueError, match="num_trials >= 10"):
        hg.random_search(mb_objective, mb_space, key, num_trials=6, extends=earlier)
    with pytest.raises(ValueError, match="not this search's first draws"):
        hg.random_search(mb_objective, mb_space, jax.random.key(4), num_trials=12, extends=earlier)
    grid = dataclasses.replace(earlier, strategy="grid")
    with pytest.raises(ValueError, match="Result of an earlier random_search"):
        hg.random_search(mb_objective, mb_space, key, num_trials=12, extends=grid)
    with pytest.raises(ValueError, match="extends=hg.load_study"):
        hg.random_search(mb_objective, mb_space, key, num_trials=12, extends=earlier,
                         storage=tmp_path / "s.db", study="s")
    with pytest.raises(ValueError, match="extends=hg.load_study"):
        hg.random_search(mb_objective, mb_space, key, num_trials=12, extends=earlier, study="s")


def test_the_refusal_to_extend_a_stored_study_gives_advice_that_works(mb_objective, mb_space, tmp_path):
    # it said "call it again with the larger num_trials", which the study refuses (arguments.num_trials differs)
    key, db = jax.random.key(7), tmp_path / "s.db"
    stored = hg.random_search(mb_objective, mb_space, key, num_trials=4, storage=db, study="s")
    with pytest.raises(ValueError, match="arguments.num_trials differs"):
        hg.random_search(mb_objective, mb_space, key, num_trials=8, storage=db, study="s")
    with pytest.raises(ValueError, match="extends=hg.load_study") as refusal:
        hg.random_search(mb_objective, mb_space, key, num_trials=8, extends=stored, storage=db, study="s")
    assert "without storage= and study=" in str(refusal.value)
    extended = hg.random_search(mb_objective, mb_space, key, num_trials=8, extends=hg.load_study(db, "s"))
    whole = hg.random_search(mb_objective, mb_space, key, num_trials=8)
    np.testing.assert_allclose([t.value for t in extended.trials], [t.value for t in whole.trials], rtol=1e-12)



def test_extends_refuses_a_result_of_another_objective(random_results, mb_objective, mb_space):
    """Another data set (same shapes), optimizer or number of steps would mix two functions'
    trials in one table; an equal objective built anew is the same objective."""
    key, results = random_results
    earlier = results[4]
    problem = mb_objective.problem
    other_data = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=1,
                                      batch_size=8)
    others = [hg.Objective(other_data, sgd_schedule, num_steps=T),
              hg.Objective(problem, lambda h: sgd_schedule({**h, "momentum": 0.0 * h["momentum"]}), num_steps=T),
              hg.Objective(problem, sgd_schedule, num_steps=T - 1)]
    for other in others:
        with pytest.raises(ValueError, match=r"random_search\(extends=...\) was given the Result of a search of "
                                             "another objective"):
            hg.random_search(other, mb_space, key, num_trials=12, extends=earlier)
    again = hg.Objective(hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0,
                                              batch_size=8), sgd_schedule, num_steps=T)
    assert hg.random_search(again, mb_space, key, num_trials=10, extends=earlier) is earlier


# -- grid search ---------------------------------------------------------------------------------
def test_grid_search_equals_loop_and_spans_the_bounds(mb_objective, single_evaluation):
    # Same names and shapes as mb_space, so the chunk-of-4 program is reused; momentum is a Choice.
    space = hg.Space({
        "lr": hg.LogUniform(0.05, 0.8, shape=(T,)),
        "momentum": hg.Choice([0.0, 0.9]),
        "weight_decay": hg.LogUniform(1e-4, 1e-2),
    })
    key = jax.random.key(5)
    result = hg.grid_search(mb_objective, space, key, points_per_axis=3, chunk_size=4)
    assert len(result.trials) == 3 * 2 * 3  # 18 = 4 + 4 + 4 + 4 + 2 (padded)
    lrs = sorted({float(t.hparams["lr"][0]) for t in result.trials})
    wds = sorted({float(t.hparams["weight_decay"]) for t in result.trials})
    moms = sorted({float(t.hparams["momentum"]) for t in result.trials})
    assert lrs[0] == 0.05 and lrs[-1] == 0.8 and len(lrs) == 3
    assert lrs[1] == pytest.approx(math.sqrt(0.05 * 0.8), rel=1e-12)  # log-spaced
    assert wds == pytest.approx([1e-4, 1e-3, 1e-2], rel=1e-12)
    assert wds[0] == 1e-4 and wds[-1] == 1e-2
    assert moms == [0.0, 0.9]
    combos = {(float(t.hparams["lr"][0]), float(t.hparams["momentum"]), float(t.hparams["weight_decay"]))
              for t in result.trials}
    assert combos == set(itertools.product(lrs, moms, wds))
    assert result.info["points_per_axis"] == 3
    assert_trials_match_loop(result, single_evaluation, key)


def test_random_search_over_a_numeric_choice(mb_objective, single_evaluation):
    options = [0.0, 0.5, 0.9]
    space = hg.Space({
        "lr": hg.LogUniform(0.05, 0.5, shape=(T,)),
        "momentum": hg.Choice(options),
        "weight_decay": hg.LogUniform(1e-4, 1e-2),
    })
    key = jax.random.key(6)
    result = hg.random_search(mb_objective, space, key, num_trials=8, chunk_size=4)
    momenta = [float(t.hparams["momentum"]) for t in result.trials]
    assert set(momenta) <= set(options)
    assert len(set(momenta)) >= 2
    assert_trials_match_loop(result, single_evaluation, key)


# -- divergence ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverging_objective(ridge_problem_):
    # Full-batch ridge with a step size up to 1e12: the largest ones overflow to inf/NaN in 20 steps.
    return hg.Objective(ridge_problem_, sgd, num_steps=20)


DIVERGING_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e12), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.mark.parametrize("strategy", ["grid", "random"])
def test_diverged_trials_fail_and_are_never_best(diverging_objective, strategy, tmp_path):
    key = jax.random.key(0)
    log = tmp_path / "trials.jsonl"
    if strategy == "grid":
        result = hg.grid_search(diverging_objective, DIVERGING_SPACE, key, points_per_axis=5, chunk_size=8,
                                log=log)
    else:
        result = hg.random_search(diverging_objective, DIVERGING_SPACE, key, num_trials=20, chunk_size=8,
                                  log=log)
    failed = [t for t in result.trials if t.state == FAIL]
    complete = [t for t in result.trials if t.state == COMPLETE]
    assert failed and complete
    assert len(failed) + len(complete) == len(result.trials)
    assert all(not math.isfinite(t.value) for t in failed)
    assert all(math.isfinite(t.value) for t in complete)
    assert all(float(t.hparams["lr"]) > 1.0 for t in failed)  # only huge steps diverge
    assert result.num_failed == len(failed)
    assert math.isfinite(result.best_value)
    assert result.best_value == min(t.value for t in complete)
    assert result.best_trial.state == COMPLETE
    # NaN/inf never reach the exports.
    json.dumps(result.to_dict(), allow_nan=False)
    for line in log.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the log"))


# -- compiles once -------------------------------------------------------------------------------
def test_search_traces_once_and_recompiles_nothing(ridge_problem_):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    problem, count = counting(ridge_problem_)
    objective = hg.Objective(problem, sgd, num_steps=10)
    at_report = []  # (traces, compilations) after each chunk

    def progress(line):
        at_report.append((count["traces"], _compile.stats.compilations))

    compilations, searches = _compile.stats.compilations, _compile.stats.traces["search"]
    first = hg.random_search(objective, space, jax.random.key(1), num_trials=10, chunk_size=3,
                             progress=progress)
    assert first.info["chunk_size"] == 3 and len(first.trials) == 10
    # One program for all 4 chunks (3 + 3 + 3 + 1 padded): compiled once, before the first chunk ran.
    assert _compile.stats.compilations == compilations + 1
    assert _compile.stats.traces["search"] == searches + 1
    assert len(at_report) == 4
    assert at_report[0][0] > 0 and all(r == at_report[0] for r in at_report)
    assert first.compile_seconds > 0

    traced, compilations = count["traces"], _compile.stats.compilations
    again = hg.random_search(objective, space, jax.random.key(2), num_trials=7, chunk_size=3)  # 3 + 3 + 1
    assert len(again.trials) == 7
    assert count["traces"] == traced
    assert _compile.stats.compilations == compilations
    assert again.compile_seconds == 0.0
    assert again.trials[0].value != first.trials[0].value  # new values through the same program
    # A grid over the same names and shapes reuses it too.
    grid = hg.grid_search(objective, space, jax.random.key(3), points_per_axis=2, chunk_size=3)
    assert len(grid.trials) == 4
    assert count["traces"] == traced
    assert _compile.stats.compilations == compilations


def _vmapped_objective_program(objective, chunk):
    """The search program as it was written before it reused the accounting trace: the objective's
    `loss_and_scores` traced under `vmap`, its scores stacked in their own order."""
    def scores(h, k, d):
        out = objective.loss_and_scores(h, k, d)[1]
        dtype = jnp.result_type(*out.values())
        return jnp.stack([jnp.asarray(v, dtype) for v in out.values()])

    if chunk == 1:
        return lambda h, k, d: scores(jax.tree.map(lambda v: v[0], h), k, d)[:, None]
    return jax.vmap(scores, in_axes=(0, None, None), out_axes=1)


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("cv", [None, 3])
def test_the_search_program_is_the_objective_traced_under_vmap(mb_space, chunk, cv):
    """The search compiles the jaxpr its FLOP count traced (`accounting.traced_run`), vmapped; that
    lowers to the very program tracing the objective under vmap gives (same StableHLO, so the same
    executable and numbers), with the score rows in the objective's own order."""
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0,
                                   batch_size=8, cv=cv)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    key = jax.random.key(0)
    settings = mb_space.sample(key, chunk)
    one = {n: v[0] for n, v in settings.items()}
    args = (settings, key, problem.data)
    run = accounting.traced_run(objective, one, key, problem.data)
    assert list(run.score_names) == list(objective.loss_and_scores(one, key, problem.data)[1])
    new = jax.jit(search._trials_program(run, chunk)).lower(*args).as_text(debug_info=False)
    old = jax.jit(_vmapped_objective_program(objective, chunk)).lower(*args).as_text(debug_info=False)
    assert _called_program(new) == _called_program(old)


def test_called_program_sees_through_duplicated_helpers_but_not_different_ones():
    def module(*helpers):  # main calls one helper per line of `helpers`: (callee name, its operation)
        calls = [f"    %{i + 1} = call @{name}(%{i}) : (tensor<f64>) -> tensor<f64>"
                 for i, (name, _) in enumerate(helpers)]
        defs = {name: ["  func.func private @" + name + "(%arg0: tensor<f64>) -> tensor<f64> {",
                       f"    %0 = stablehlo.{op} %arg0 : tensor<f64>", "    return %0 : tensor<f64>", "  }"]
                for name, op in helpers}
        main = ["  func.func public @main(%0: tensor<f64>) -> tensor<f64> {", *calls,
                f"    return %{len(helpers)} : tensor<f64>", "  }"]
        return "\n".join(["module @m {", *main, *(line for d in defs.values() for line in d), "}"])

    shared = module(("f", "negate"), ("f", "negate"))
    assert _called_program(shared) == _called_program(module(("f", "negate"), ("f_7", "negate")))
    assert _called_program(shared) != _called_program(module(("f", "negate"), ("f_7", "sine")))


def _called_program(module: str) -> str:
    """A StableHLO module as `main` with every call replaced by its callee's canonical form (by
    content), so two modules compare equal when they compute with the same operations whatever
    their private functions are named, and whether or not a helper lowered twice became one
    function or two (JAX shares one when its tracing cache hands out the same jaxpr both times,
    which the tests run before in the same process can change: one CI run differed in nothing but
    `@argmax_18` against `@argmax_19`)."""
    bodies, name = {}, None
    for line in module.splitlines():
        header = re.match(r"  func\.func (?:public|private) @([\w.$-]+)(.*)", line)
        if header:
            name, bodies[header.group(1)] = header.group(1), [header.group(2)]
        elif name is not None:
            bodies[name].append(line)
            name = None if line == "  }" else name

    @functools.cache
    def canonical(fn: str) -> str:
        text = "\n".join(bodies[fn])
        return re.sub(r"@([\w.$-]+)", lambda m: "@{" + canonical(m.group(1)) + "}" if m.group(1) in bodies
                      else m.group(0), text)

    return canonical("main")


def test_search_traces_the_run_once_and_charges_run_flops(ridge_problem_):
    """A search traces its objective once (the count's trace is the program's), and charges each
    trial `run_flops` exactly, as a fresh count gives it."""
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    problem, count = counting(ridge_problem_)
    objective = hg.Objective(problem, sgd, num_steps=10)
    key = jax.random.key(1)
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(0.01)}
    jax.make_jaxpr(lambda h, k, d: objective.loss_and_scores(h, k, d))(hparams, key, problem.data)
    one_trace = count["traces"]  # the training loss's traces in one trace of a run
    count["traces"] = 0
    result = hg.random_search(objective, space, key, num_trials=5)
    assert count["traces"] == one_trace > 0  # was 2 x: the count's trace and the vmapped one
    hg.clear_caches()
    unit = run_flops(objective, {n: np.asarray(v) for n, v in result.trials[0].hparams.items()}, key)
    assert result.run_flops == unit and all(t.run_flops == unit for t in result.trials)


# -- streaming log ------------------------------------------------------------------------------
def test_log_gets_one_json_line_per_trial_as_produced(diverging_objective, tmp_path):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    log = tmp_path / "logs" / "random.jsonl"
    lines_at_report = []

    def progress(line):
        lines_at_report.append(len(log.read_text().splitlines()))

    result = hg.random_search(diverging_objective, space, jax.random.key(0), num_trials=19, chunk_size=8,
                              log=log, progress=progress)
    assert lines_at_report == [8, 16, 19]  # on disk chunk by chunk, before the search finished
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["number"] for r in records] == list(range(19))
    for record, trial in zip(records, result.trials, strict=True):
        assert record["strategy"] == "random"
        assert record["value"] == trial.value
        assert record["test_value"] == trial.test_value
        assert record["hparams"]["lr"] == float(trial.hparams["lr"])
        assert record["flops"] > 0


# -- bad arguments ---------------------------------------------------------------------------------
def _raises_before_compiling(match, fn, *args, **kwargs):
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
    assert _compile.stats.compilations == compilations


@pytest.mark.parametrize("num_trials", [0, -3, 2.5, True])
def test_random_search_rejects_bad_num_trials(diverging_objective, num_trials):
    _raises_before_compiling("num_trials", hg.random_search, diverging_objective, DIVERGING_SPACE,
                             jax.random.key(0), num_trials=num_trials)


@pytest.mark.parametrize("search", ["random", "grid"])
def test_search_rejects_chunk_size_zero(diverging_objective, search):
    if search == "random":
        _raises_before_compiling("chunk_size", hg.random_search, diverging_objective, DIVERGING_SPACE,
                                 jax.random.key(0), num_trials=4, chunk_size=0)
    else:
        _raises_before_compiling("chunk_size", hg.grid_search, diverging_objective, DIVERGING_SPACE,
                                 jax.random.key(0), points_per_axis=2, chunk_size=0)


@pytest.mark.parametrize("points", [0, -1, 1.5])
def test_grid_search_rejects_bad_points_per_axis(diverging_objective, points):
    _raises_before_compiling("points_per_axis", hg.grid_search, diverging_objective, DIVERGING_SPACE,
                             jax.random.key(0), points_per_axis=points)


@pytest.mark.parametrize("search", ["random", "grid"])
def test_search_rejects_a_space_that_is_not_a_space(diverging_objective, search):
    as_dict = {"lr": hg.LogUniform(1e-3, 1.0)}
    if search == "random":
        _raises_before_compiling("space", hg.random_search, diverging_objective, as_dict, jax.random.key(0),
                                 num_trials=4)
    else:
        _raises_before_compiling("space", hg.grid_search, diverging_objective, as_dict, jax.random.key(0),
                                 points_per_axis=2)


def test_structural_choice_needs_a_structured_family(diverging_objective):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "activation": hg.Choice(["relu", "tanh"])})
    _raises_before_compiling("hg.Structured", hg.random_search, diverging_objective, space,
                             jax.random.key(0), num_trials=4)
    _raises_before_compiling("hg.Structured", hg.grid_search, diverging_objective, space,
                             jax.random.key(0), points_per_axis=2)


def test_search_rejects_bad_objective_and_key(diverging_objective):
    _raises_before_compiling("objective", hg.random_search, lambda h, k: 0.0, DIVERGING_SPACE,
                             jax.random.key(0), num_trials=4)
    _raises_before_compiling("key", hg.random_search, diverging_objective, DIVERGING_SPACE, 0, num_trials=4)
    _raises_before_compiling("key", hg.grid_search, diverging_objective, DIVERGING_SPACE, 0,
                             points_per_axis=2)


def test_hyperparameter_the_objective_does_not_get_is_named(diverging_objective):
    """A space without a hyperparameter the optimiser reads fails with its name, not a KeyError."""
    space = hg.Space({"weight_decay": hg.LogUniform(1e-4, 1.0)})  # no "lr"
    with pytest.raises(ValueError, match="'lr'"):
        hg.random_search(diverging_objective, space, jax.random.key(0), num_trials=2)
    with pytest.raises(ValueError, match="reads hyperparameter 'lr' that was not given"):  # a KeyError before
        hg.run_flops(diverging_objective, {"weight_decay": 0.1}, jax.random.key(0))


def test_float64_is_on():  # the 1e-10 agreements above assume it
    assert jnp.zeros(()).dtype == jnp.float64


def test_default_chunks_are_balanced_so_padding_stays_small(diverging_objective):
    from hypergrad._batching import balanced_chunk

    assert [balanced_chunk(n, 64) for n in (1, 64, 65, 72, 128, 129)] == [1, 64, 33, 36, 64, 43]
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    result = hg.random_search(diverging_objective, space, jax.random.key(0), num_trials=72)
    assert result.info["chunk_size"] == 36
    assert result.runs == pytest.approx(72.0)  # two calls of 36: no padding (64 + 64 would be 128 runs)


_TWO_DEVICES = """
import os
from hypergrad import _compile  # starts no JAX backend, so the flags below still apply
os.environ["XLA_FLAGS"] = _compile.quick_xla_flags()  # as conftest: only flags this jaxlib knows
import json, jax
import optax, hypergrad as hg
hg.use_cpu_cores(2)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=10)
space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
result = hg.random_search(objective, space, jax.random.key(3), num_trials=9)
given = hg.random_search(objective, space, jax.random.key(3), num_trials=9, chunk_size=16)
print(json.dumps({"devices": result.info["devices"], "chunk": result.info["chunk_size"],
                  "given_chunk": given.info["chunk_size"], "values": [t.value for t in result.trials],
                  "given_values": [t.value for t in given.trials]}))
"""


def test_chunks_shard_across_devices_and_change_no_value(ridge_problem_):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, check=True)
    sharded = json.loads(out.stdout.strip().splitlines()[-1])
    assert sharded["devices"] == 2 and sharded["chunk"] == 10  # 9 trials padded to shard evenly
    assert sharded["given_chunk"] == 10  # a chunk_size above the trials: the same (they ran unsharded)
    np.testing.assert_allclose(sharded["given_values"], sharded["values"], rtol=1e-12)
    objective = hg.Objective(ridge_problem_, lambda h: optax.sgd(h["lr"]), num_steps=10)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    alone = hg.random_search(objective, space, jax.random.key(3), num_trials=9)
    np.testing.assert_allclose(sharded["values"], [t.value for t in alone.trials], rtol=1e-10)


def test_use_cpu_cores_refuses_bad_counts_and_a_started_jax():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="use_cpu_cores"):
            hg.use_cpu_cores(bad)
    jnp.zeros(()).block_until_ready()  # JAX has started in this process
    with pytest.raises(RuntimeError, match="right after importing hypergrad"):
        hg.use_cpu_cores(2)


def test_overlap_runs_once_before_the_program_compiles_and_once_when_it_is_cached(mb_objective, mb_space):
    """`evaluate_settings(overlap=...)` is called once per call, before XLA compiles its program
    (the compilation count is still 0 then), and once again on a second call that compiles nothing.
    A chunk of 5 no other test compiles, two chunks."""
    settings = {name: np.asarray(v) for name, v in mb_space.sample(jax.random.key(1), 7).items()}
    seen = []
    before = _compile.stats.compilations
    search.evaluate_settings(mb_objective, settings, jax.random.key(0), strategy="x", chunk_size=5,
                             overlap=lambda: seen.append(_compile.stats.compilations - before))
    assert seen == [0] and _compile.stats.compilations > before
    search.evaluate_settings(mb_objective, settings, jax.random.key(0), strategy="x", chunk_size=5,
                             overlap=lambda: seen.append(_compile.stats.compilations - before))
    assert len(seen) == 2 and seen[1] == _compile.stats.compilations - before


def test_a_schedule_shorter_than_the_training_is_refused_before_compiling(ridge_problem_):
    """A per-step rate of 10 entries indexed over 20 steps: JAX clamps steps 10-19 to the last
    entry, silently. random_search, tune, hybrid_search and hypergradient refuse it, naming the shape and the fix,
    before compiling; a full schedule, an explicit clamp and a per-group vector indexed in bounds
    run."""
    key = jax.random.key(0)

    def objective(schedule):
        return hg.Objective(ridge_problem_, lambda h: optax.sgd(schedule(h), momentum=h["momentum"]), num_steps=20)

    def space(entries, **extra):
        return hg.Space({"lr": hg.LogUniform(1e-3, 1e-1, shape=(entries,)), "momentum": hg.Uniform(0.0, 0.9),
                         **extra})

    short = objective(lambda h: lambda step: h["lr"][step])
    before = _compile.stats.compilations
    for run in (lambda: hg.random_search(short, space(10), key, num_trials=2),
                lambda: hg.tune(short, space(10), key, steps=1),
                lambda: hg.hypergradient(short, space(10).centre(), key),
                lambda: hg.hybrid_search(short, space(10, weight_decay=hg.Choice([0.0, 0.1])), key, budget=100)):
        with pytest.raises(ValueError, match=r"indexes a hyperparameter past its end within num_steps=20 .*shape "
                                             r"\(10,\).*index 10 is out of bounds.*hparams\['lr'\] has shape \(10,\) "
                                             r"and is read along axis 0 once per step: give it num_steps=20 entries "
                                             r"there, shape \(20,\).*jnp.minimum\(step, n - 1\)"):
            run()
    assert _compile.stats.compilations == before
    hg.random_search(short, space(20), key, num_trials=2)
    hg.random_search(objective(lambda h: lambda step: h["lr"][jnp.minimum(step, 9)]), space(10), key, num_trials=2)
    blocks = objective(lambda h: lambda step: h["lr"][step // 10])  # two blocks of 10 steps: in bounds
    hg.random_search(blocks, space(2), key, num_trials=2)


# -- wall time: every second of the call is recorded ---------------------------------------------------
def test_a_searchs_recorded_seconds_are_the_whole_call(mb_space):
    """`spent("seconds")` at the last trial is the call's wall time: set-up outside the trials (the
    sample's program, the FLOP count's trace, checks) is charged with the compilation, on a fresh
    objective (everything compiled) and again on the same one (everything cached)."""
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0, batch_size=8)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    key = jax.random.key(8)
    for _ in range(2):
        for run in (lambda: hg.random_search(objective, mb_space, key, num_trials=6, chunk_size=3),
                    lambda: hg.grid_search(objective, mb_space, key, points_per_axis=2, chunk_size=4)):
            began = time.perf_counter()
            result = run()
            measured = time.perf_counter() - began
            recorded = float(result.spent("seconds")[-1])
            assert 0.9 * measured <= recorded <= measured * (1 + 1e-9), (result.strategy, recorded, measured)


def test_an_extended_searchs_later_set_up_is_charged_where_it_was_paid(mb_space):
    """`extends=`: the continuation's set-up (here a program of its own: 2 trials left, chunks of 4)
    comes after the earlier trials, so they keep the seconds they finished at; the total is both
    calls' wall time."""
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0, batch_size=8)
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    key = jax.random.key(9)
    began = time.perf_counter()
    earlier = hg.random_search(objective, mb_space, key, num_trials=8, chunk_size=4)
    first_call = time.perf_counter() - began
    began = time.perf_counter()
    more = hg.random_search(objective, mb_space, key, num_trials=10, chunk_size=4, extends=earlier)
    second_call = time.perf_counter() - began
    spent = more.spent("seconds")
    np.testing.assert_allclose(spent[:8], earlier.spent("seconds"), rtol=1e-12)
    assert spent[8] - spent[7] >= 0.9 * second_call - sum(t.seconds for t in more.trials[9:])
    assert spent[-1] >= 0.9 * (first_call + second_call)
    assert more.compile_seconds + more.setup_seconds == pytest.approx(spent[-1] - more.seconds, rel=1e-12)
    again = hg.Result.from_dict(json.loads(json.dumps(more.to_dict())))  # the placement survives export
    np.testing.assert_allclose(again.spent("seconds"), spent, rtol=1e-12)


@pytest.mark.parametrize("search", ["random", "grid"])
@pytest.mark.parametrize("log, match", [
    (123, r"log=123 must be the path of a JSON-lines file"),
    ("/proc/no_such_dir/trials.jsonl", r"log='/proc/no_such_dir/trials.jsonl': its directory .* cannot be created"),
    ("/tmp", r"log='/tmp' is a directory"),
])
def test_a_bad_log_is_refused_naming_log_before_compiling(ridge_problem_, search, log, match, tmp_path):
    # it failed after the program compiled, with open()'s TypeError or FileNotFoundError
    objective = hg.Objective(ridge_problem_, lambda h: optax.sgd(h["lr"]), num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.1)})
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        if search == "random":
            hg.random_search(objective, space, jax.random.key(0), 4, log=log, storage=tmp_path / "s.db", study="s")
        else:
            hg.grid_search(objective, space, jax.random.key(0), 3, log=log, storage=tmp_path / "s.db", study="s")
    assert _compile.stats.compilations == compilations
    assert not (tmp_path / "s.db").exists()  # refused before the study was opened


def test_a_call_refused_after_its_log_check_leaves_no_log_directory(ridge_problem_, tmp_path):
    # check_log created a missing log directory to learn whether it could, and left it behind when the
    # call was refused afterwards for another reason (here progress=)
    objective = hg.Objective(ridge_problem_, lambda h: optax.sgd(h["lr"]), num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.1)})
    log = tmp_path / "new" / "deeper" / "trials.jsonl"
    with pytest.raises(ValueError, match="progress="):
        hg.random_search(objective, space, jax.random.key(0), 4, log=log, progress="yes")
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("")  # a file where a directory must be
    with pytest.raises(ValueError, match="its directory .* cannot be created"):
        hg.random_search(objective, space, jax.random.key(0), 4, log=tmp_path / "afile" / "x" / "t.jsonl")


def test_resuming_a_complete_study_compiles_no_search_program(mb_objective, mb_space, tmp_path):
    """The same call again on a finished study (the documented way to get its result back) compiled
    the search program, in a new process, before learning that every chunk was stored. The program
    is now made at the first chunk that is not stored: none here. The stored result comes back, with
    the first call's compile seconds (the study's, kept in its row since session 39: this call's own,
    none compiled, used to replace them for good); that nothing compiled is the trace count's to say."""
    call = dict(num_trials=6, chunk_size=3, storage=tmp_path / "s.db", study="s")
    first = hg.random_search(mb_objective, mb_space, jax.random.key(3), **call)
    hg.clear_caches()  # as a new process: no program in memory
    searches = _compile.stats.traces["search"]
    again = hg.random_search(mb_objective, mb_space, jax.random.key(3), **call)
    assert _compile.stats.traces["search"] == searches and again.compile_seconds == first.compile_seconds > 0
    assert [(t.value, t.flops, t.run_flops) for t in again.trials] == [
        (t.value, t.flops, t.run_flops) for t in first.trials]
    assert again.run_flops == first.run_flops and again.best_hparams.keys() == first.best_hparams.keys()


def test_counts_past_int32_are_refused_naming_the_argument(ridge_problem, caplog):
    # random_search(..., 2_500_000_000) and tune(warmup=2_500_000_000) aborted the process inside XLA
    # ("Check failed: buffer_.IsConcrete()"); 1e300 trials failed with a TypeError from MLIR
    objective = hg.Objective(ridge_problem, sgd, num_steps=3)
    space, key = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)}), jax.random.key(0)
    big = 2**31
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        for call, name in [(lambda: hg.random_search(objective, space, key, big), "num_trials"),
                           (lambda: hg.random_search(objective, space, key, 10**300), "num_trials"),
                           (lambda: hg.tune(objective, space, key, steps=2, population=2, warmup=big), "warmup"),
                           (lambda: hg.tune(objective, space, key, steps=big), "steps"),
                           (lambda: hg.tune(objective, space, key, steps=2, population=big), "population"),
                           (lambda: hg.optuna_search(objective, space, key, big), "num_trials")]:
            with pytest.raises(ValueError, match=rf"{name}=\d+ is more than 2147483647 \(2\*\*31 - 1\)"):
                call()
    assert [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()] == []
    assert len(hg.random_search(objective, space, key, 2).trials) == 2
