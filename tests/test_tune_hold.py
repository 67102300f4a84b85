"""`hg.tune(..., hold=names)`: tuners that keep some hyperparameters where they start and descend the rest.

Each tuner of a population holding `lr` equals a lone tune of `objective.with_fixed({"lr": its lr})` over the
other hyperparameters from the same start (values and iterates, float64, 1e-10 relative); with a warm-up the
held values are the best warm-up trials'; `hg.Implicit`, which refuses an optimiser's learning rate, tunes the
rest around it; every trial and the pick record the held values; bad `hold=` values are refused before anything
compiles; a study's fingerprint holds `hold` only when it is given (studies stored before it still resume).
"""

import json
import sqlite3

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.tune import _hold_compared, hypergradient_flops
from _helpers import POPULATION_SPACE, POPULATION_T, population_objective, by_tuner
from _helpers import Stop, stop_after
from _helpers import population_starts as starts

OUTER = optax.adam(0.3)
SPACE = POPULATION_SPACE
REST = hg.Space({"weight_decay": SPACE["weight_decay"]})
IMPLICIT = hg.Implicit(solver="cg", maxiter=30, damping=0.01)


@pytest.fixture(scope="module")
def objective(logistic_minibatch_problem):
    return population_objective(logistic_minibatch_problem)


@pytest.mark.parametrize("method", [hg.Reverse(), IMPLICIT], ids=["Reverse", "Implicit"])
def test_each_held_tuner_equals_a_lone_tune_of_the_objective_held_at_its_values(objective, key, method):
    init = starts(3)
    population = hg.tune(objective, SPACE, key, method=method, population=3, steps=3, outer=OUTER, init=init,
                         hold=("lr",))
    for tuner, trials in by_tuner(population).items():
        lr = init["lr"][tuner]
        lone = hg.tune(objective.with_fixed({"lr": lr}), REST, key, method=method, steps=3, outer=OUTER,
                       init={"weight_decay": init["weight_decay"][tuner]})
        assert len(trials) == len(lone.trials) == 4
        for mine, alone in zip(trials, lone.trials):
            np.testing.assert_allclose(mine.value, alone.value, rtol=1e-10)
            np.testing.assert_allclose(mine.hparams["weight_decay"], alone.hparams["weight_decay"], rtol=1e-10)
            np.testing.assert_allclose(mine.grad_norm, alone.grad_norm, rtol=1e-10)
            assert float(mine.hparams["lr"]) == float(lr)  # held exactly, recorded in every trial
        # the tuned hyperparameter really moved
        assert len({float(t.hparams["weight_decay"]) for t in trials}) == len(trials)
    assert population.info["hold"] == ["lr"]


def test_implicit_is_refused_an_optimisers_rate_unless_it_is_held(objective, key):
    with pytest.raises(ValueError, match=r"'lr' is read by the optimizer.*in hg.tune with 'lr' among hold="):
        hg.tune(objective, SPACE, key, method=IMPLICIT, steps=1)  # the refusal names the way out
    with pytest.raises(ValueError, match="'lr' is read by the optimizer"):
        hg.tune_step_cost(objective, SPACE, key, IMPLICIT)
    held = hg.tune_step_cost(objective, SPACE, key, IMPLICIT, hold=("lr",))
    lr = SPACE.centre()["lr"]
    counted = hypergradient_flops(objective, IMPLICIT, {"weight_decay": SPACE.centre()["weight_decay"]}, key,
                                  {"lr": jnp.asarray(lr)}) / hg.run_flops(objective, SPACE.centre(), key)
    assert held == pytest.approx(counted, rel=1e-12) and held > 1.0


def test_held_values_are_the_best_warm_up_trials(objective, key):
    result = hg.tune(objective, SPACE, key, population=2, warmup=6, steps=2, outer=OUTER, hold=("lr",))
    warm = result.trials[:6]
    best = sorted(warm, key=lambda t: (t.value, t.number))[:2]
    tuners = by_tuner(result)
    for k in range(2):
        lrs = {float(t.hparams["lr"]) for t in tuners[k]}
        assert lrs == {float(best[k].hparams["lr"])}
        assert tuners[k][0].hparams["weight_decay"] == pytest.approx(float(best[k].hparams["weight_decay"]),
                                                                      rel=1e-10)


def test_the_pick_holds_every_hyperparameter_and_reproduces_its_value(objective, key):
    result = hg.tune(objective, SPACE, key, population=2, steps=2, outer=OUTER, init=starts(2, seed=1),
                     hold=("lr",))
    assert sorted(result.best_hparams) == ["lr", "weight_decay"]
    value = objective(result.best_hparams, key)
    np.testing.assert_allclose(value[0] if isinstance(value, tuple) else value, result.best_value, rtol=1e-10)
    frame = result.to_dataframe()
    assert {"params_lr", "params_weight_decay"} <= set(frame.columns)


@pytest.mark.parametrize("hold, message", [
    ("lr", r"hold='lr' is one string: give the names to hold as a tuple of the space's names, hold=\('lr',\)"),
    ("", r"hold='' is one string: give the names to hold as a tuple of the space's names, e.g. hold=\('lr',\)"),
    (("nope",), r"'nope' is not a hyperparameter of the space \(lr, weight_decay\)"),
    (("lr", "lr"), r"names 'lr' more than once"),
    (("lr", "weight_decay"), r"holds every hyperparameter of the space, leaving none to tune"),
    (5, r"hold=5: give a tuple of the space's hyperparameter names"),
])
def test_bad_hold_is_refused_before_anything_compiles(objective, key, hold, message):
    before = _compile.stats.traces["tune"]
    with pytest.raises(ValueError, match=message):
        hg.tune(objective, SPACE, key, steps=1, hold=hold)
    with pytest.raises(ValueError, match=message):
        hg.tune_step_cost(objective, SPACE, key, hold=hold)
    assert _compile.stats.traces["tune"] == before


def _arguments(db, study):
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT fingerprint FROM studies WHERE name = ?", (study,)).fetchone()
    return json.loads(text)["arguments"]


def test_a_studys_fingerprint_holds_hold_only_when_given(objective, key, tmp_path):
    db = str(tmp_path / "studies.db")
    plain = hg.tune(objective, SPACE, key, steps=1, outer=OUTER, storage=db, study="plain")
    assert "hold" not in _arguments(db, "plain")  # as before hold= existed: those studies still resume
    held = hg.tune(objective, SPACE, key, steps=1, outer=OUTER, hold=["lr"], storage=db, study="held")
    assert _arguments(db, "held")["hold"] == ["lr"]
    again = hg.tune(objective, SPACE, key, steps=1, outer=OUTER, hold=("lr",), storage=db, study="held")
    assert [t.value for t in again.trials] == [t.value for t in held.trials]
    with pytest.raises(ValueError):  # another call under the same study name
        hg.tune(objective, SPACE, key, steps=1, outer=OUTER, hold=("lr",), storage=db, study="plain")
    assert len(plain.trials) == 2


def test_a_held_schedule_given_as_numpy_is_indexed_by_the_traced_step(key, logistic_minibatch_problem):
    """A per-step rate schedule held at a numpy start (as trials record hyperparameters) reads as a tuned one."""
    objective = hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(lambda t: h["lr"][t]),
                             num_steps=POPULATION_T)
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(POPULATION_T,)), "weight_decay": SPACE["weight_decay"]})
    init = {"lr": np.linspace(0.1, 0.5, POPULATION_T), "weight_decay": np.float64(0.01)}
    result = hg.tune(objective, space, key, method=IMPLICIT, steps=2, outer=OUTER, init=init, hold=("lr",))
    np.testing.assert_array_equal(result.trials[-1].hparams["lr"], init["lr"])
    assert result.trials[-1].hparams["weight_decay"] != pytest.approx(0.01)


@pytest.mark.parametrize("stop_at", [1, 3])  # after the warm-up, and after a halving round's step
def test_an_interrupted_held_study_resumes_to_the_uninterrupted_trials(objective, key, tmp_path, stop_at):
    call = dict(population=4, warmup=8, halving=1, steps=3, outer=OUTER, hold=("lr",))
    whole = hg.tune(objective, SPACE, key, **call)
    db = str(tmp_path / "held.db")
    with pytest.raises(Stop):
        hg.tune(objective, SPACE, key, storage=db, study="s", progress=stop_after(stop_at), **call)
    resumed = hg.tune(objective, SPACE, key, storage=db, study="s", **call)
    assert [t.tuner for t in resumed.trials] == [t.tuner for t in whole.trials]
    for mine, alone in zip(resumed.trials, whole.trials, strict=True):
        np.testing.assert_allclose(mine.value, alone.value, rtol=1e-10)
        for name in ("lr", "weight_decay"):
            np.testing.assert_allclose(mine.hparams[name], alone.hparams[name], rtol=1e-10)


def test_a_methods_refusal_under_hold_says_what_it_sees_and_names_every_held_name(objective, key,
                                                                                 logistic_minibatch_problem):
    # Reversible looks its rate up among the tuned names: one held is refused, saying that it is held
    with pytest.raises(ValueError, match=r"hparams has no 'lr'.*under tune's hold=\('lr',\), the method sees only "
                                         r"the tuned hyperparameters \['weight_decay'\]"):
        hg.tune(objective, SPACE, key, method=hg.Reversible(), steps=1, hold=("lr",))
    # Implicit with one optimiser hyperparameter held and another tuned: the advice adds it to hold=
    momentum = hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]),
                            num_steps=POPULATION_T)
    space = hg.Space({**dict(SPACE.items), "momentum": hg.Uniform(0.0, 0.9)})
    with pytest.raises(ValueError, match=r"'momentum' is read by the optimizer.*'momentum' among hold="):
        hg.tune(momentum, space, key, method=IMPLICIT, steps=1, hold=("lr",))
    result = hg.tune(momentum, space, key, method=IMPLICIT, steps=1, hold=("lr", "momentum"))  # the advice
    assert np.isfinite(result.best_value)


def test_held_values_are_recorded_as_the_tuned_ones_are(objective, key):
    result = hg.tune(objective, SPACE, key, population=2, steps=1, outer=OUTER, init=starts(2), hold=("lr",))
    for trial in result.trials:
        for name in ("lr", "weight_decay"):  # 0-d arrays both, not a numpy scalar beside a 0-d array
            assert isinstance(trial.hparams[name], np.ndarray) and trial.hparams[name].ndim == 0, (name, trial)


def test_processes_compare_the_held_names_not_their_order_or_container():
    """What `checked_together` compares across processes: a set was described only as "a set"."""
    assert _hold_compared({"weight_decay", "lr"}) == _hold_compared(("lr", "weight_decay")) == ("lr", "weight_decay")
    assert _hold_compared({"lr"}) != _hold_compared({"momentum"})
    assert _hold_compared(None) is None and _hold_compared("lr") == "lr"
