"""Populations of gradient tuners (`hg.tune(population=N, warmup=, halving=)`, `hypergrad.outer`).

One program for any number of steps and tuners filling the same chunk; a population of one against
an outer loop written out here (hg.hypergradient, the VJP of space.constrain, optax.adam); each tuner
of a population against a lone tune from the same start; halving keeps exactly the better tuners;
warm-up starts are the best warm-up trials; a diverging tuner never wins and never stops the others;
bad arguments refused before anything compiles. float64 throughout (tests/conftest.py).
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad import outer as outer_driver
from hypergrad.results import TrialRecorder
from _helpers import POPULATION_SPACE, POPULATION_T, population_objective, sgd_half_momentum, by_tuner
from _helpers import population_starts as starts

OUTER = optax.adam(0.3)
T, SPACE, sgd = POPULATION_T, POPULATION_SPACE, sgd_half_momentum


@pytest.fixture(scope="module")
def objective(logistic_minibatch_problem):
    return population_objective(logistic_minibatch_problem)


def test_one_program_for_any_steps_and_tuners_filling_a_chunk(objective, key):
    before = _compile.stats.traces["tune"]
    a = hg.tune(objective, SPACE, key, population=4, chunk_size=4, steps=2, outer=OUTER)
    b = hg.tune(objective, SPACE, key, population=3, chunk_size=4, steps=5, outer=OUTER, init=starts(3))
    c = hg.tune(objective, SPACE, key, population=6, chunk_size=4, steps=1, outer=OUTER)  # two chunks, padded
    assert _compile.stats.traces["tune"] == before + 1
    assert [len(r.trials) for r in (a, b, c)] == [4 * 3, 3 * 6, 6 * 2]
    assert sorted(by_tuner(c)) == list(range(6)) and all(len(ts) == 2 for ts in by_tuner(c).values())


def test_a_population_of_one_is_the_outer_loop_written_out(objective, key):
    """tune(population=1) against the outer loop by hand: hypergradient at constrain(z), pulled
    back through the bijection, an Adam step on z; values and iterates to 1e-10."""
    init = {"lr": jnp.asarray(0.2), "weight_decay": jnp.asarray(0.01)}
    result = hg.tune(objective, SPACE, key, steps=4, outer=OUTER, init=init)
    z = SPACE.unconstrain(init)
    state = OUTER.init(z)
    for trial in result.trials:
        hparams, pullback = jax.vjp(SPACE.constrain, z)
        value, grads = hg.hypergradient(objective, hparams, key)
        np.testing.assert_allclose(trial.value, value, rtol=1e-10)
        for name in hparams:
            np.testing.assert_allclose(trial.hparams[name], hparams[name], rtol=1e-10)
        (grad_z,) = pullback(grads)
        np.testing.assert_allclose(trial.grad_norm, optax.tree_utils.tree_norm(grad_z), rtol=1e-10)
        updates, state = OUTER.update(grad_z, state, z)
        z = optax.apply_updates(z, updates)
    # the iterate really moved (the comparison is not of five copies of the start)
    assert len({float(t.hparams["lr"]) for t in result.trials}) == len(result.trials)
    assert {t.tuner for t in result.trials} == {0}


def test_each_tuner_equals_a_lone_tune_from_its_start(objective, key):
    init = starts(3)
    population = hg.tune(objective, SPACE, key, population=3, steps=3, outer=OUTER, init=init)
    tuners = by_tuner(population)
    for i in range(3):
        alone = hg.tune(objective, SPACE, key, steps=3, outer=OUTER, init=jax.tree.map(lambda a: a[i], init))
        assert len(tuners[i]) == len(alone.trials) == 4
        for ours, theirs in zip(tuners[i], alone.trials):
            np.testing.assert_allclose(ours.value, theirs.value, rtol=1e-10)
            for name in SPACE.names:
                np.testing.assert_allclose(ours.hparams[name], theirs.hparams[name], rtol=1e-10)
    # trials run step by step across tuners, numbered in that order
    assert [t.tuner for t in population.trials[:6]] == [0, 1, 2, 0, 1, 2]
    assert [t.number for t in population.trials] == list(range(12))
    assert population.best_value == min(t.value for t in population.trials)


def test_halving_keeps_exactly_the_better_tuners(objective, key):
    result = hg.tune(objective, SPACE, key, population=5, halving=1, steps=3, outer=OUTER, init=starts(5, seed=1))
    steps = [[t for t in result.trials if t.number in range(lo, hi)] for lo, hi in ((0, 5), (5, 8), (8, 10), (10, 11))]
    assert [len(s) for s in steps] == [5, 3, 2, 1]  # ceil(n / 2) go on after each step; the last is scored
    for before, after in zip(steps, steps[1:]):
        ranked = sorted(before, key=lambda t: (t.value, t.tuner))
        assert [t.tuner for t in after] == sorted(t.tuner for t in ranked[:len(after)])


def test_halving_on_a_cpu_runs_every_round_on_one_program(objective, key):
    """On a CPU a halving population runs one tuner per device from the start (`cohort_chunk`):
    rounds of 5, 3, 2 and 1 tuners compile one program, not one per round, and compute the same
    trials as chunks that follow the live tuners (`chunk_size="live"`, what an accelerator does
    by default; float64, 1e-10)."""
    assert jax.default_backend() == "cpu"
    assert outer_driver.cohort_chunk(None, 1) == jax.local_device_count()
    assert outer_driver.cohort_chunk(None, None) is None and outer_driver.cohort_chunk(3, 1) == 3
    assert outer_driver.cohort_chunk("live", 1) is None
    args = dict(population=5, halving=1, steps=3, init=starts(5, seed=2))
    before = _compile.stats.traces["tune"]
    one = hg.tune(objective, SPACE, key, outer=optax.adam(0.29), **args)  # no other test's optimiser: nothing cached
    assert _compile.stats.traces["tune"] == before + 1
    assert one.info["chunk_size"] == jax.local_device_count()
    before = _compile.stats.traces["tune"]
    # an equal optimiser made anew: the program for one's chunk is one's
    per_round = hg.tune(objective, SPACE, key, outer=optax.adam(0.29), chunk_size="live", **args)
    assert _compile.stats.traces["tune"] - before == len({outer_driver.chunk_rows(n, None) for n in (5, 3, 2, 1)}
                                                         - {one.info["chunk_size"]})
    assert [(t.number, t.tuner, t.state) for t in one.trials] == \
        [(t.number, t.tuner, t.state) for t in per_round.trials]
    np.testing.assert_allclose([t.value for t in one.trials], [t.value for t in per_round.trials], rtol=1e-10)
    for a, b in zip(one.trials, per_round.trials):
        for name in a.hparams:
            np.testing.assert_allclose(a.hparams[name], b.hparams[name], rtol=1e-10)


def test_driving_a_population_through_halving_compiles_nothing_but_its_step(objective, key, caplog):
    """Between steps the cohort's arrays are numpy on the host: halving's selections, a chunk's
    padded rows and their concatenation compile no small programs (on device arrays each new shape
    did). 7 tuners in chunks of 3, halved to 4, 2 and 1: every call runs the compiled step only."""
    z = SPACE.unconstrain(starts(7, seed=3))
    cohort = outer_driver.make_cohort(objective, SPACE, hg.Reverse(), optax.adam(0.2), key, z, chunk_size=3,
                                      flops=1.0, unit=1.0)
    recorder = TrialRecorder("population", None, False, total=7 + 4 + 2 + 1 + 1)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        outer_driver.drive([cohort], steps=4, key=key, resample_key=False, recorder=recorder, halving=1)
    assert [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()] == []
    assert len(recorder.trials) == 7 + 4 + 2 + 1 + 1 and len(cohort.tuners) == 1


def test_warmup_starts_are_the_best_warmup_trials(objective, key):
    result = hg.tune(objective, SPACE, key, population=3, warmup=10, steps=2, outer=OUTER)
    warm, tuned = result.trials[:10], result.trials[10:]
    assert all(t.tuner is None for t in warm) and all(t.tuner is not None for t in tuned)
    alone = hg.random_search(objective, SPACE, key, num_trials=10)
    np.testing.assert_allclose([t.value for t in warm], [t.value for t in alone.trials], rtol=1e-12)
    best = sorted(warm, key=lambda t: t.value)[:3]
    first = tuned[:3]
    for start, trial in zip(best, first):
        np.testing.assert_allclose(trial.value, start.value, rtol=1e-10)
        for name in SPACE.names:
            np.testing.assert_allclose(trial.hparams[name], start.hparams[name], rtol=1e-10)
    assert result.best_value <= min(t.value for t in best)
    assert result.info["warmup"] == 10
    # the warm-up's compute is in the result
    assert sum(t.runs for t in result.trials) == pytest.approx(sum(t.runs for t in warm) + sum(t.runs for t in tuned))


def test_a_diverging_tuner_never_becomes_best_and_never_stops_the_others(ridge_problem, key):
    """The middle tuner's start overflows. It used to back off to that start (its only "good"
    iterate) and spend every step there; it now restarts at a fresh draw after each failed step
    (`outer.restart_draws`), so it moves, and reaches a finite loss here. The other tuners' trials
    are bitwise those of a population without it (one tuner per call, so one program for both)."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=80)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e6)})
    init = {"lr": jnp.asarray([0.05, 1e5, 0.1])}  # the middle tuner overflows
    with pytest.warns(RuntimeWarning, match=r"1 of 3 tuners \(1\) started where .* 1 of them then reached"):
        result = hg.tune(objective, space, key, population=3, steps=3, outer=OUTER, init=init, chunk_size=1)
    tuners = by_tuner(result)
    assert tuners[1][0].state == "fail"
    assert len({float(t.hparams["lr"]) for t in tuners[1]}) > 1  # it moved
    assert any(t.state == "complete" for t in tuners[1])
    for i in (0, 2):
        assert all(t.state == "complete" and np.isfinite(t.value) for t in tuners[i])
    assert result.best_trial.state == "complete" and np.isfinite(result.best_value)
    alone = by_tuner(hg.tune(objective, space, key, population=2, steps=3, outer=OUTER, chunk_size=1,
                             init={"lr": init["lr"][::2]}))
    for i, j in ((0, 0), (2, 1)):
        assert [t.value for t in tuners[i]] == [t.value for t in alone[j]]
        assert [float(t.hparams["lr"]) for t in tuners[i]] == [float(t.hparams["lr"]) for t in alone[j]]


def test_a_checkpoint_without_good_iterate_flags_infers_them(objective, key):
    """A cohort's record stored before the flags were: a tuner whose z equals its z_good (where the
    old rule left a tuner whose every step failed) is read as having no good iterate, the others
    as having one; a record with flags restores them as stored."""
    z = SPACE.unconstrain(starts(3, seed=5))
    cohort = outer_driver.make_cohort(objective, SPACE, hg.Reverse(), OUTER, key, z, flops=1.0, unit=1.0)
    state = outer_driver.cohort_state([cohort])
    assert state[0]["good"].tolist() == [False, False, False]
    moved = jax.tree.map(lambda a: np.where(np.arange(3) == 1, a, a + 0.5), cohort.carry[0])
    cohort.carry = (moved, *cohort.carry[1:])
    old = [{k: v for k, v in saved.items() if k != "good"} for saved in outer_driver.cohort_state([cohort])]
    outer_driver.restore_cohorts([cohort], old)
    assert cohort.good.tolist() == [True, False, True]
    state[0]["good"] = np.asarray([True, True, False])
    outer_driver.restore_cohorts([cohort], state)
    assert cohort.good.tolist() == [True, True, False]


def test_with_resample_key_the_warmup_and_each_live_tuners_final_iterate_are_scored_on_key(objective, key):
    """The warm-up and the final scorings train with the call's key, the steps with fold_in(key, step):
    the trials a baseline's can be compared with, named by info["final_trials"] (the final scoring
    trained with fold_in(key, steps) before). 4 warm-up trials, 2 tuners at step 0, halved to 1."""
    result = hg.tune(objective, SPACE, key, population=2, warmup=4, halving=1, steps=2, outer=OUTER,
                     resample_key=True)
    assert len(result.trials) == 4 + 2 + 1 + 1 and result.info["final_trials"] == [7]
    steps = {4: 0, 5: 0, 6: 1}
    for trial in result.trials:
        trained_with = jax.random.fold_in(key, steps[trial.number]) if trial.number in steps else key
        np.testing.assert_allclose(trial.value, float(objective(trial.hparams, trained_with)), rtol=1e-12)


def test_dataframe_has_a_tuner_column(objective, key):
    frame = hg.tune(objective, SPACE, key, population=2, steps=1, outer=OUTER).to_dataframe()
    assert list(frame["tuner"]) == [0, 1, 0, 1]


@pytest.mark.parametrize("kwargs,match", [
    ({"population": 0}, r"population=0 must be an int >= 1"),
    ({"population": 2.0}, r"population=2.0 must be an int >= 1"),
    ({"population": 4, "warmup": 3}, r"warmup=3 random-search trials cannot start population=4 tuners"),
    ({"population": 2, "warmup": 4, "init": "centre"}, r"give init= or warmup=, not both"),
    ({"population": 1, "halving": 2}, r"halving=2 needs a population of at least 2"),
    ({"population": 2, "halving": 0}, r"halving=0 must be an int >= 1"),
    ({"population": 2, "init": "middle"}, r"init='middle' must be 'sample', 'centre'"),
    ({"population": 3, "init": {"lr": jnp.ones(2) * 0.1, "weight_decay": jnp.ones(2) * 0.01}},
     r"init has leading sizes .* but population=3: give every hyperparameter a leading axis of 3"),
    ({"population": 3, "init": {"lr": 0.1, "weight_decay": 0.01}}, r"leading axis of 3"),
    ({"population": 3, "chunk_size": 0}, r"chunk_size=0 must be an int >= 1"),
    ({"population": 3, "chunk_size": "wide"}, r"chunk_size='wide' must be .*'live'"),
])
def test_bad_population_arguments_are_refused_before_compiling(objective, key, kwargs, match):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.tune(objective, SPACE, key, steps=2, **kwargs)
    assert _compile.stats.compilations == before


_TWO_DEVICES = """
import json, jax, optax, hypergrad as hg
hg.use_cpu_cores(2)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=6)
space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
# chunks that follow the live tuners, as on an accelerator (on a CPU halving keeps one chunk)
result = hg.tune(objective, space, jax.random.key(3), population=4, halving=1, steps=3, outer=optax.adam(0.3),
                 chunk_size="live")
print(json.dumps([[t.tuner, t.value] for t in result.trials]))
"""


def test_halving_from_a_sharded_chunk_to_an_unsharded_one(ridge_problem):
    """On 2 devices, 4 tuners shard, 2 shard, then 1 runs unsharded on the default device: its rows,
    which came back on the devices' mesh, are moved there (they were refused), and every value
    equals the one-device run."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    sharded = json.loads(out.stdout.strip().splitlines()[-1])
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=6)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    alone = hg.tune(objective, space, jax.random.key(3), population=4, halving=1, steps=3, outer=optax.adam(0.3))
    assert [tuner for tuner, _ in sharded] == [t.tuner for t in alone.trials]
    assert len(sharded) == 4 + 2 + 1 + 1
    np.testing.assert_allclose([v for _, v in sharded], [t.value for t in alone.trials], rtol=1e-10)


def test_replayed_step_equals_the_step_traced_under_vmap(objective):
    """The population program batches one traced jaxpr of a tuner's step (`replayed_step_fn`):
    the same numbers as tracing the step under `jax.vmap`, with held values (hybrid) and without."""
    key, data = jax.random.key(3), objective.problem.data
    one = outer_driver.tuner_step_fn(objective, SPACE, hg.Reverse(), OUTER)
    z = jax.vmap(SPACE.unconstrain)(starts(3))
    for fixed in ({}, {"weight_decay": jnp.asarray([1e-3, 1e-2, 1e-1])}):
        args = (z, jax.tree.map(lambda a: a * 0.9, z), jax.vmap(OUTER.init)(z), fixed, key, data)
        row = jax.tree.map(lambda a: a[0], args[:4])
        replayed = jax.jit(outer_driver.replayed_step_fn(one, (*row, key, data)))(*args)
        traced = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None)))(*args)
        assert jax.tree.structure(replayed) == jax.tree.structure(traced)
        for got, want in zip(jax.tree.leaves(replayed), jax.tree.leaves(traced)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("chunk_size", [4, np.int64(4)])
def test_a_fixed_chunk_size_also_bounds_the_warmup_searchs_calls(objective, key, chunk_size):
    # The warm-up search ran in the default chunks (up to 64 trials per call) whatever chunk_size
    # said, so a chunk_size chosen to bound memory did not bound the warm-up; a numpy int (from a
    # config array, np.ceil(...).astype(int)) was still dropped by the warm-up after that fix.
    default = hg.tune(objective, SPACE, key, population=2, warmup=10, steps=1, outer=OUTER)
    chunked = hg.tune(objective, SPACE, key, population=2, warmup=10, steps=1, outer=OUTER, chunk_size=chunk_size)
    runs = [sum(t.runs for t in r.trials[:10]) for r in (default, chunked)]
    assert runs == [pytest.approx(10.0), pytest.approx(12.0)]  # 3 calls of 4: the last padded by 2
    assert type(chunked.info["chunk_size"]) is int and chunked.info["chunk_size"] == 4
    np.testing.assert_allclose([t.value for t in chunked.trials[:10]], [t.value for t in default.trials[:10]],
                               rtol=1e-10)


# -- refusals before a study is opened; messages; progress ----------------------------------------
@pytest.mark.parametrize("refused, fixed", [
    ({"population": 3, "init": {"lr": jnp.asarray([0.1, 0.2]), "weight_decay": jnp.asarray([0.01, 0.02])}},
     {"population": 3, "init": {"lr": jnp.asarray([0.1, 0.2, 0.3]), "weight_decay": jnp.asarray([0.01, 0.02, 0.03])}}),
    ({"method": hg.Implicit()}, {"method": hg.Reverse()}),
    ({"method": hg.Implicit(), "population": 2, "warmup": 4}, {"method": hg.Reverse(), "population": 2, "warmup": 4}),
])
def test_a_refused_call_leaves_no_study_that_refuses_the_fixed_one(objective, key, tmp_path, refused, fixed):
    # the study stored the refused call's arguments before they were checked, so the corrected call
    # was refused as "a different call" under the same study name
    storage = tmp_path / "study.db"
    with pytest.raises(ValueError, match=r"leading axis of 3|Implicit differentiates"):
        hg.tune(objective, SPACE, key, steps=1, outer=OUTER, storage=storage, study="s", **refused)
    result = hg.tune(objective, SPACE, key, steps=1, outer=OUTER, storage=storage, study="s", **fixed)
    assert len(result.trials) == fixed.get("warmup", 0) + 2 * fixed.get("population", 1)


def test_a_warmup_too_diverged_to_start_the_tuners_says_a_stored_study_needs_another_name(ridge_problem, key,
                                                                                           tmp_path):
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=20)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e30)})  # all but the bottom of the range diverges
    with pytest.raises(ValueError, match=r"only \d of the 4 warm-up trials finished.*raise warmup= under another "
                                         r"study= name \(this study stores warmup=4"):
        hg.tune(objective, space, key, population=3, warmup=4, steps=1, storage=tmp_path / "w.db", study="w")


@pytest.mark.parametrize("init, match", [
    # an unexpected name: named, not every size printed as None
    ({"lr": jnp.full(3, 0.1), "weight_decay": jnp.full(3, 0.01), "momentum": jnp.full(3, 0.5)},
     r"init names .* disagree with the space .*unexpected \['momentum'\]"),
    # one name without the leading axis: the real sizes, and which one lacks it
    ({"lr": jnp.asarray([0.1, 0.2, 0.3]), "weight_decay": 0.01},
     r"init has leading sizes \{'lr': 3, 'weight_decay': None\} but population=3: .*'weight_decay' has none"),
    ({"lr": jnp.asarray([0.1, 0.2, 0.3]), "weight_decay": jnp.asarray([0.01, 0.02])},
     r"leading sizes \{'lr': 3, 'weight_decay': 2\} .*; 'weight_decay' has 2\)"),
])
def test_a_population_init_error_names_the_offending_hyperparameter(objective, key, init, match):
    with pytest.raises(ValueError, match=match):
        hg.tune(objective, SPACE, key, steps=1, population=3, init=init)


@pytest.mark.parametrize("population, steps, halving", [(8, 3, 1), (5, 4, 2), (3, 2, None)])
def test_progress_counts_to_the_trials_the_run_records(objective, key, population, steps, halving):
    # with halving the total was population * (steps + 1): a finished run ended at "15/32"
    lines = []
    result = hg.tune(objective, SPACE, key, steps=steps, population=population, halving=halving, outer=OUTER,
                     progress=lines.append)
    done = len(result.trials)
    assert f" {done}/{done} " in lines[-1]
