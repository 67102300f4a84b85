"""`tune`: the outer loop over unconstrained hyperparameters.

It must lower the validation loss, compile its step once (however many steps, and not again for a
new key or starting point), refuse what it cannot differentiate before compiling, survive
divergent steps without returning NaN, and record every step as a trial.
"""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import math  # noqa: E402
import sqlite3  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _compile  # noqa: E402
from hypergrad import outer as outer_driver  # noqa: E402
from hypergrad._store_codec import decode_value, encode_value  # noqa: E402
from hypergrad.results import COMPLETE, FAIL, SKIPPED  # noqa: E402
from _helpers import counting  # noqa: E402
from hypergrad.problems import sgd_momentum_schedule as sgd_schedule  # noqa: E402

T = 30        # inner training steps of the digits MLP
STEPS = 6     # outer steps of the first tune call


def sgd(h):
    return optax.sgd(h["lr"])


def in_bounds(space, hparams):
    return all(bool(np.all((space[n].lo < hparams[n]) & (hparams[n] < space[n].hi))) for n in space.names)


# -- the digits MLP ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    problem, count = counting(hg.problems.mlp_classifier("digits", hidden=(16,), batch_size=64))
    objective = hg.Objective(problem, sgd_schedule, num_steps=T)
    space = hg.Space({
        "lr": hg.LogUniform(1e-3, 1.0, shape=(T,)),
        "momentum": hg.Uniform(0.0, 0.95),
        "weight_decay": hg.LogUniform(1e-6, 1e-1),
    })
    init = {"lr": jnp.full((T,), 0.01), "momentum": 0.5, "weight_decay": 1e-3}  # too small a step
    compilations, tunes = _compile.stats.compilations, _compile.stats.traces["tune"]
    at_report = []  # (traces, compilations) after each step is recorded

    def progress(line):
        at_report.append((count["traces"], _compile.stats.compilations))

    result = hg.tune(objective, space, jax.random.key(0), steps=STEPS, init=init, progress=progress)
    return {"objective": objective, "space": space, "init": init, "result": result, "count": count,
            "at_report": at_report, "new_compilations": _compile.stats.compilations - compilations,
            "new_tune_programs": _compile.stats.traces["tune"] - tunes}


def test_tune_lowers_the_validation_loss(digits):
    result = digits["result"]
    start = result.trials[0]
    assert result.best_trial.number > 0
    assert result.best_value < 0.9 * start.value  # at least 10% lower after a handful of steps
    assert result.best_test_value < start.test_value  # and the pick does better on held-out data
    assert result.trials[-1].value < start.value


def test_every_trial_is_recorded(digits):
    result, space, init = digits["result"], digits["space"], digits["init"]
    assert [t.number for t in result.trials] == list(range(STEPS + 1))  # steps plus the final iterate
    for trial in result.trials:
        assert trial.state == COMPLETE
        assert {n: np.shape(v) for n, v in trial.hparams.items()} == {n: space[n].shape for n in space.names}
        assert in_bounds(space, trial.hparams)
        assert math.isfinite(trial.value) and trial.value == trial.scores["val_loss"]
        assert math.isfinite(trial.test_value) and trial.test_value == trial.scores["test_loss"]
        assert 0.0 <= trial.scores["test_accuracy"] <= 1.0
        assert trial.grad_norm is not None and math.isfinite(trial.grad_norm) and trial.grad_norm > 0
        assert trial.flops > 0 and trial.run_flops > 0
        assert trial.runs > 1.0  # a hypergradient costs more than one training run
        assert trial.seconds >= 0
    for name in space.names:  # the first step is taken at the given starting point
        np.testing.assert_allclose(result.trials[0].hparams[name], init[name], rtol=1e-12)
    # The schedule is a free (T,) vector: the hypergradient moves its entries differently.
    assert np.ptp(result.trials[-1].hparams["lr"]) > 0
    assert result.info["steps"] == STEPS
    json.dumps(result.to_dict(), allow_nan=False)


def test_outer_steps_trace_the_training_function_once(digits):
    """One compiled outer-step program; the steps themselves trace nothing."""
    assert digits["new_compilations"] == 1
    assert digits["new_tune_programs"] == 1
    at_report = digits["at_report"]
    assert len(at_report) == STEPS + 1
    assert at_report[0][0] > 0  # train_loss was traced (for the program and its FLOP accounting) ...
    assert all(r == at_report[0] for r in at_report)  # ... before the first step, never after


def test_a_second_call_compiles_nothing(digits):
    count, traced = digits["count"], digits["count"]["traces"]
    compilations = _compile.stats.compilations
    assert traced > 0
    init = {"lr": jnp.full((T,), 0.03), "momentum": 0.2, "weight_decay": 1e-4}
    again = hg.tune(digits["objective"], digits["space"], jax.random.key(1), steps=3, init=init)
    assert count["traces"] == traced
    assert _compile.stats.compilations == compilations
    assert again.compile_seconds == 0.0
    assert len(again.trials) == 4
    np.testing.assert_allclose(again.trials[0].hparams["lr"], 0.03, rtol=1e-12)
    assert again.trials[0].value != digits["result"].trials[0].value


def test_a_choice_is_refused_before_compiling(digits):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(T,)), "momentum": hg.Choice([0.0, 0.9]),
                      "weight_decay": hg.LogUniform(1e-6, 1e-1)})
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match="Choice") as info:
        hg.tune(digits["objective"], space, jax.random.key(0), steps=2)
    assert "momentum" in str(info.value)
    assert _compile.stats.compilations == compilations


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "outside", "on_bound", "not_a_dict",
                                  "integer"])
def test_bad_init_is_refused_naming_init(digits, case):
    good = {"lr": jnp.full((T,), 0.01), "momentum": 0.5, "weight_decay": 1e-3}
    init = {
        "missing": {"lr": good["lr"], "momentum": 0.5},
        "extra": {**good, "nesterov": 1.0},
        "shape": {**good, "lr": jnp.full((T - 1,), 0.01)},
        "outside": {**good, "momentum": 1.5},
        "on_bound": {**good, "weight_decay": 1e-1},
        "not_a_dict": [0.01, 0.5, 1e-3],
        "integer": {**good, "lr": jnp.ones((T,), jnp.int32)},
    }[case]
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match="init"):
        hg.tune(digits["objective"], digits["space"], jax.random.key(0), steps=2, init=init)
    assert _compile.stats.compilations == compilations


@pytest.mark.parametrize("kwargs, argname", [
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"outer": "adam"}, "outer"),
    ({"method": "reverse"}, "method"),
    ({"resample_key": "yes"}, "resample_key"),  # was truthy: a fresh key per step
    ({"progress": 1}, "progress"),  # was silently no progress
    # a bad log failed after the step compiled, with open()'s error, which names no argument
    ({"log": 123}, "log=123 must be the path of a JSON-lines file"),
    ({"log": "/proc/no_such_dir/trials.jsonl"}, "log='/proc/no_such_dir/trials.jsonl': its directory"),
    ({"log": "/tmp"}, "log='/tmp' is a directory"),
    ({"outer": optax.lbfgs()}, "outer=: .*value_fn"),  # was optax's TypeError from inside the trace
])
def test_bad_arguments_are_refused_before_compiling(digits, kwargs, argname):
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=argname):
        hg.tune(digits["objective"], digits["space"], jax.random.key(0), **kwargs)
    assert _compile.stats.compilations == compilations


def test_bad_space_and_key_are_refused(digits):
    with pytest.raises(ValueError, match="space"):
        hg.tune(digits["objective"], {"lr": hg.LogUniform(1e-3, 1.0)}, jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        hg.tune(digits["objective"], digits["space"], 0)


# -- divergence -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ridge_problem_():
    return hg.problems.ridge(num_examples=40, num_features=5, seed=0)


DIVERGING_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e12), "weight_decay": hg.LogUniform(1e-4, 1.0)})
WILD_OUTER = optax.adam(30.0)  # one object, so both calls below share one compiled program


@pytest.fixture(scope="module")
def diverging_objective(ridge_problem_):
    # Full-batch ridge for 20 steps: step sizes above ~1e8 overflow the loss to inf.
    return hg.Objective(ridge_problem_, sgd, num_steps=20)


# -- the outer step is the chain rule -------------------------------------------------------------
ETA = 0.3
SGD_OUTER = optax.sgd(ETA)


def test_an_sgd_outer_step_is_the_hypergradient_pulled_back_through_the_bijection(ridge_problem_):
    """With outer=optax.sgd(eta), one step is z1 = z0 - eta * J^T g, where g is the hypergradient
    in constrained coordinates and J the Jacobian of `space.constrain` at z0; the recorded norm is
    |J^T g|. Checked to 1e-12 (float64): an update with the raw g (no pull-back), or any other
    scaling of it, moves z elsewhere. The Adam tests above cannot tell: Adam normalises the step."""
    d = ridge_problem_.train_data[0].shape[1]
    objective = hg.Objective(ridge_problem_, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=12)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.95),
                      "weight_decay": hg.LogUniform(1e-4, 1.0, shape=(d,))})
    init = {"lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.8), "weight_decay": jnp.geomspace(1e-3, 0.3, d)}
    key = jax.random.key(0)
    result = hg.tune(objective, space, key, method=hg.Reverse(), outer=SGD_OUTER, steps=1, init=init)
    assert [t.state for t in result.trials] == [COMPLETE, COMPLETE]

    z0 = space.unconstrain(init)
    hparams0, pullback = jax.vjp(space.constrain, z0)
    value, grads = hg.hypergradient(objective, hparams0, key, method=hg.Reverse())
    (grad_z,) = pullback(grads)
    z1 = jax.tree.map(lambda z, g: z - ETA * g, z0, grad_z)
    first, second = result.trials
    np.testing.assert_allclose(first.value, float(value), rtol=1e-12)
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in jax.tree.leaves(grad_z)))
    np.testing.assert_allclose(first.grad_norm, norm, rtol=1e-12)
    recorded_z1 = space.unconstrain(second.hparams)
    expected_h1 = space.constrain(z1)
    for name in space.names:
        # The chain rule matters here: J^T g differs from g by far more than the tolerance.
        assert np.max(np.abs(np.asarray(grad_z[name]) - np.asarray(grads[name]))) > 1e-3 * np.max(np.abs(grads[name]))
        np.testing.assert_allclose(recorded_z1[name], z1[name], rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(second.hparams[name], expected_h1[name], rtol=1e-12, err_msg=name)


def test_non_finite_steps_are_skipped_and_recorded(diverging_objective):
    key = jax.random.key(0)
    result = hg.tune(diverging_objective, DIVERGING_SPACE, key, outer=WILD_OUTER, steps=6,
                     init={"lr": 0.01, "weight_decay": 0.01})
    states = [t.state for t in result.trials]
    assert states[0] == COMPLETE
    assert FAIL in states or SKIPPED in states
    for trial in result.trials:
        assert in_bounds(DIVERGING_SPACE, trial.hparams)
        assert math.isfinite(trial.value) == (trial.state != FAIL)
    # Never NaN, never a failed pick: the best is the lowest finite loss among the usable trials.
    assert math.isfinite(result.best_value)
    assert result.best_trial.state != FAIL
    assert result.best_value == min(t.value for t in result.trials if t.state != FAIL)
    json.dumps(result.to_dict(), allow_nan=False)
    # A skipped step backs z off halfway towards the last iterate whose step was finite.
    z = [DIVERGING_SPACE.unconstrain(t.hparams) for t in result.trials]
    z_good, backed_off = z[0], 0
    for k in range(len(result.trials) - 1):
        if states[k] == COMPLETE:
            z_good = z[k]
        else:
            backed_off += 1
            for name in DIVERGING_SPACE.names:
                np.testing.assert_allclose(z[k + 1][name], 0.5 * (z[k][name] + z_good[name]), atol=1e-3)
    assert backed_off > 0
    # Trial values are the objective itself at the recorded hyperparameters.
    objective = jax.jit(diverging_objective)
    for trial in (result.trials[0], result.best_trial):
        np.testing.assert_allclose(trial.value, float(objective(trial.hparams, key)), rtol=1e-10)
    failed = next(t for t in result.trials if t.state == FAIL)
    assert not math.isfinite(float(objective(failed.hparams, key)))


def test_all_steps_diverging_gives_no_pick_and_no_nan(diverging_objective):
    """Every learning rate of this space overflows: each step fails, and (no good iterate to back
    off to) the tuner restarts at a fresh draw each time, inside the bounds, never NaN, no pick."""
    space = hg.Space({"lr": hg.LogUniform(1e10, 1e12), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    with pytest.warns(RuntimeWarning, match=r"1 of 1 tuners \(0\) started where .* 0 of them then reached"):
        result = hg.tune(diverging_objective, space, jax.random.key(0), outer=WILD_OUTER, steps=3,
                         init={"lr": 1e11, "weight_decay": 0.01})
    assert [t.state for t in result.trials] == [FAIL] * 4
    assert result.best_value == math.inf and result.best_trial is None and result.best_hparams is None
    for trial in result.trials:
        assert in_bounds(space, trial.hparams)
    assert len({float(t.hparams["lr"]) for t in result.trials}) == 4  # a new point every step


def test_the_restart_warning_points_at_the_users_line(diverging_objective):
    """The warning that tuners restarted without a good iterate named outer.py's drive (stacklevel 3),
    a line of the library: Python's filters and a user's traceback search then pointed there. It now
    names the user's call."""
    space = hg.Space({"lr": hg.LogUniform(1e10, 1e12), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.tune(diverging_objective, space, jax.random.key(0), outer=WILD_OUTER, steps=1,
                init={"lr": 1e11, "weight_decay": 0.01})
    restarts = [w for w in caught if "started where" in str(w.message)]
    assert restarts and all(w.filename == __file__ for w in restarts), [(w.filename, w.lineno) for w in restarts]


def test_a_tuner_whose_start_diverges_restarts_at_draws_until_a_step_is_finite(diverging_objective):
    """Its start (lr=1e11) overflows, so it has no good iterate to back off to: it used to back off
    to that start, and spent every step there (best_hparams None). Each failed step now restarts it
    at `restart_draws`' point for the step (a key folded from the call's key, tuner 0 and the step);
    from its first finite step on it descends as any tuner. The same call gives the same trials."""
    key, init = jax.random.key(0), {"lr": 1e11, "weight_decay": 0.01}

    def run():
        with pytest.warns(RuntimeWarning, match=r"1 of 1 tuners \(0\) started where the loss or its hypergradient "
                                                r"was not finite.* 1 of them then reached a finite loss"):
            return hg.tune(diverging_objective, DIVERGING_SPACE, key, steps=5, init=init)

    result = run()
    states = [t.state for t in result.trials]
    assert states[0] == FAIL and COMPLETE in states[:4]  # a finite trial within a few steps
    first = states.index(COMPLETE)
    for k in range(first):  # each failed step restarted the tuner at that step's draw
        drawn = DIVERGING_SPACE.constrain(jax.tree.map(lambda a: a[0], outer_driver.restart_draws(
            DIVERGING_SPACE, key, [0], k)))
        for name in DIVERGING_SPACE.names:
            np.testing.assert_allclose(result.trials[k + 1].hparams[name], drawn[name], rtol=1e-12)
    assert all(t.state == COMPLETE for t in result.trials[first:])
    assert math.isfinite(result.best_value) and result.best_trial.number >= first
    again = run()
    for a, b in zip(result.trials, again.trials):
        assert (a.state, a.value) == (b.state, b.value) or (math.isnan(a.value) and math.isnan(b.value))
        for name in a.hparams:
            np.testing.assert_array_equal(a.hparams[name], b.hparams[name])


def _checkpoint_without_flags(db):
    """Drops the good-iterate flags from a tune study's stored checkpoint, as a study stored before
    they were (`restore_cohorts` then infers them)."""
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute("SELECT state FROM checkpoints").fetchone()
        cohorts = decode_value(json.loads(state))
        assert all("good" in cohort for cohort in cohorts)
        old = [{k: v for k, v in cohort.items() if k != "good"} for cohort in cohorts]
        conn.execute("UPDATE checkpoints SET state = ?", (json.dumps(encode_value(old)),))


class _Stop(Exception):
    pass


def test_a_checkpoint_stored_before_the_good_iterate_flags_resumes_as_before(ridge_problem_, tmp_path):
    """A study killed after two steps, its checkpoint stripped of the flags (as one stored before
    them): the resumed call gives exactly the trials of the uninterrupted one (every tuner had a
    good iterate, which `restore_cohorts` infers from z != z_good)."""
    objective = hg.Objective(ridge_problem_, sgd, num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    key, kwargs, db = jax.random.key(0), dict(population=2, steps=4), tmp_path / "study.db"
    whole = hg.tune(objective, space, key, **kwargs)
    lines = []

    def stop(line):
        lines.append(line)
        if len(lines) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        hg.tune(objective, space, key, **kwargs, storage=db, study="t", progress=stop)
    assert 0 < len(hg.load_study(db, "t").trials) < len(whole.trials)
    _checkpoint_without_flags(db)
    resumed = hg.tune(objective, space, key, **kwargs, storage=db, study="t")
    assert [(t.state, t.tuner, t.value) for t in resumed.trials] == [(t.state, t.tuner, t.value) for t in whole.trials]
    for a, b in zip(whole.trials, resumed.trials):
        for name in a.hparams:
            np.testing.assert_array_equal(a.hparams[name], b.hparams[name])


MISSING = "the objective reads hyperparameter 'momentum' that was not given; declare it in the hg.Space"


@pytest.mark.parametrize("call", ["tune", "population", "forward", "step_cost", "hypergradient_flops"])
def test_a_hyperparameter_the_space_lacks_is_named_not_a_key_error(logistic_problem, call):
    """Every entry gives the error random search gives, naming the hyperparameter, not `KeyError`."""
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    key = jax.random.key(0)
    calls = {
        "tune": lambda: hg.tune(objective, space, key, steps=1),
        "population": lambda: hg.tune(objective, space, key, steps=1, population=3),
        "forward": lambda: hg.tune(objective, space, key, steps=1, method=hg.Forward()),
        "step_cost": lambda: hg.tune_step_cost(objective, space, key),
        "hypergradient_flops": lambda: hg.hypergradient_flops(objective, hg.Reverse(), {"lr": 0.1}, key),
    }
    with pytest.raises(ValueError, match=MISSING):
        calls[call]()


# -- which key a trial was trained with ----------------------------------------------------------------
def test_resample_key_scores_the_final_iterate_on_the_calls_key(logistic_minibatch_problem):
    """resample_key=True trains step s with fold_in(key, s), and its trial's value is that key's. The
    final iterate was scored on fold_in(key, steps) too, so no trial of the call could be reproduced
    by objective(hparams, key) or compared with the baselines, which score every trial on key; the
    final scoring now trains with key, and info["final_trials"] names it."""
    objective = hg.Objective(logistic_minibatch_problem, sgd, num_steps=6)
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    key = jax.random.key(3)
    result = hg.tune(objective, space, key, steps=2, resample_key=True)
    assert [t.number for t in result.trials] == [0, 1, 2] and result.info["final_trials"] == [2]
    for step, trial in enumerate(result.trials):
        on_key = float(objective(trial.hparams, key))
        on_step = float(objective(trial.hparams, jax.random.fold_in(key, step)))
        assert on_key != on_step  # the minibatches differ: the check below tells the keys apart
        np.testing.assert_allclose(trial.value, on_key if step == 2 else on_step, rtol=1e-12)
    fixed = hg.tune(objective, space, key, steps=2)
    assert fixed.info["final_trials"] == [2]
    np.testing.assert_allclose(fixed.trials[-1].value, float(objective(fixed.trials[-1].hparams, key)), rtol=1e-12)


# -- wall time: every second of the call is recorded ---------------------------------------------------
def test_tunes_recorded_seconds_are_the_whole_call(ridge_problem_):
    """`spent("seconds")` at the last trial is the call's wall time: the starts and initial states,
    the step's trace and differentiation, the FLOP counts and the checks are set-up charged with
    the compilation, not left out (they were, for a warm-up population, a fifth of the call). On a
    fresh objective (everything compiled), then the same call again (everything cached)."""
    objective = hg.Objective(ridge_problem_, sgd, num_steps=6)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    for _ in range(2):
        began = time.perf_counter()
        result = hg.tune(objective, space, jax.random.key(1), population=2, warmup=4, steps=1)
        measured = time.perf_counter() - began
        recorded = float(result.spent("seconds")[-1])
        assert 0.9 * measured <= recorded <= measured * (1 + 1e-9), (recorded, measured)


@pytest.mark.parametrize("args, argname", [
    ((0,), "key"),
    ((jax.random.key(0), "reverse"), "method"),
    ((jax.random.key(0), hg.Reverse), "method"),
])
def test_tune_step_cost_refuses_bad_arguments_naming_them(ridge_problem_, args, argname):
    objective = hg.Objective(ridge_problem_, sgd, num_steps=6)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    with pytest.raises(ValueError, match=argname):
        hg.tune_step_cost(objective, space, *args)
