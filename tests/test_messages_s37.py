"""Refusals that now give the way forward, and one that is lifted (README hunt, session 37).

- `hg.tune(init=grid.best_hparams)`: a grid includes its bounds, so its pick often sits on one. A held
  name (`hold=`) is never mapped to the unconstrained z, so it may sit on a bound and runs as the objective
  held there; a tuned name on a bound is still refused (its z is infinite), saying that grid points include
  the bounds, how to start just inside, and which `hold=` keeps it there.
- `hypergrad compare`'s verdict with a lead it could not weigh says which pick had no per-example test
  losses and why (its retraining did not reproduce its recorded test loss: chaotic training).
- A stored random search asked for more trials is refused naming `extends=hg.load_study(...)`.
float64 throughout (tests/conftest.py).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import cli
from hypergrad.results import Trial

KEY = jax.random.key(0)
SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "l2": hg.LogUniform(1e-4, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
REST = hg.Space({"l2": SPACE["l2"], "momentum": SPACE["momentum"]})
OUTER = optax.adam(0.3)


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


@pytest.fixture(scope="module")
def objective():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(3)},
                         train_loss=lambda p, h, b: _mse(p, b) + h["l2"] * jnp.sum(p["w"] ** 2),
                         val_loss=_mse, train_data=(X, y), val_data=(X, y))
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)


@pytest.mark.parametrize("lr", [0.5, 1e-3], ids=["hi", "lo"])
def test_a_held_start_on_a_bound_runs_as_the_objective_held_there(objective, lr):
    init = {"lr": lr, "l2": 0.01, "momentum": 0.5}
    held = hg.tune(objective, SPACE, KEY, init=init, hold=("lr",), steps=2, outer=OUTER)
    lone = hg.tune(objective.with_fixed({"lr": jnp.asarray(lr)}), REST, KEY, init={"l2": 0.01, "momentum": 0.5},
                   steps=2, outer=OUTER)
    assert len(held.trials) == len(lone.trials) == 3
    for mine, alone in zip(held.trials, lone.trials):
        assert float(mine.hparams["lr"]) == lr  # held on the bound, recorded as given
        np.testing.assert_allclose(mine.value, alone.value, rtol=1e-10)
        np.testing.assert_allclose(mine.hparams["l2"], alone.hparams["l2"], rtol=1e-10)
    assert len({float(t.hparams["l2"]) for t in held.trials}) == 3  # the others really descend
    direct = objective({"lr": jnp.asarray(lr), "l2": jnp.asarray(0.01), "momentum": jnp.asarray(0.5)}, KEY)
    np.testing.assert_allclose(held.trials[0].value, float(direct), rtol=1e-10)


def test_a_held_start_past_a_bound_is_still_refused(objective):
    with pytest.raises(ValueError, match=r"init\['lr'\], held \(hold=\), lies outside the bounds \[0.001, 0.5\]"):
        hg.tune(objective, SPACE, KEY, init={"lr": 0.6, "l2": 0.01, "momentum": 0.5}, hold=("lr",), steps=1)


def test_a_grid_pick_on_a_bound_names_the_ways_on(objective):
    start = {name: values[-1] for name, values in SPACE.grid(3).items()}  # the last grid point: every hi bound
    start["l2"] = jnp.asarray(SPACE["l2"].grid_values(3)[1])  # one name inside
    with pytest.raises(ValueError) as err:
        hg.tune(objective, SPACE, KEY, init=start, steps=1)
    message = str(err.value)
    assert message.startswith("init['lr']=0.5 is the bound hi of the space (0.001, 0.5)")
    assert "Space.grid includes the bounds" in message and "jnp.clip(z, -6.0, 6.0)" in message
    assert "hold=('lr', 'momentum')" in message  # every start on a bound, one name left to tune
    # with one of them already held, holding the other too would leave nothing to tune: not offered
    with pytest.raises(ValueError) as err:
        hg.tune(objective, hg.Space({"lr": SPACE["lr"], "momentum": SPACE["momentum"]}), KEY,
                init={"lr": 0.1, "momentum": 0.9}, hold=("lr",), steps=1)
    assert str(err.value).startswith("init['momentum']=0.9 is the bound hi") and "hold=" not in str(err.value)
    # the snippet the message gives starts just inside, and is accepted
    inside = SPACE.constrain(jax.tree.map(lambda z: jnp.clip(z, -6.0, 6.0), SPACE.unconstrain(start)))
    assert 0.45 < float(inside["lr"]) < 0.5 and float(inside["l2"]) == pytest.approx(float(start["l2"]), rel=1e-12)
    hg.tune(objective, SPACE, KEY, init=inside, steps=1)
    # a start outside the bounds keeps its message
    with pytest.raises(ValueError, match=r"^init\['lr'\] lies outside or on the bounds \(0.001, 0.5\) of the space; "
                                         "start strictly inside them$"):
        hg.tune(objective, SPACE, KEY, init={"lr": 0.6, "l2": 0.01, "momentum": 0.5}, steps=1)


def _pick(setting: float, val: float, test: float) -> Trial:
    return Trial(number=0, hparams={"lr": np.asarray(setting)}, value=val, scores={"val_loss": val, "test_loss": test},
                 state="complete", flops=1.0, seconds=1.0, run_flops=1.0)


def test_an_unweighed_lead_says_which_pick_had_no_per_example_losses_and_why():
    picks = {"grid": _pick(3.0, 0.1094, 0.0785), "hypergradient": _pick(0.5, 0.11, 0.0848),
             "random": _pick(2.28, 0.1143, 0.1151)}
    table = {3.0: 0.0785 + np.linspace(-0.01, 0.01, 20), 0.5: 0.0848 + np.linspace(0.01, -0.01, 20)}
    line, outcome = cli._winner_line("p", "equal compute", picks, lambda p: table.get(float(p.hparams["lr"])))
    assert outcome == "no clear winner (grid lowest)"
    assert "its lead over random not weighed against the test set's noise (no per-example test losses: random's " \
           "pick, trained again alone to score every test example, did not reproduce the test loss its trial " \
           "recorded" in line
    assert "near divergence, where training is chaotic" in line and "Determinism in the README" in line
    # several picks without losses are all named
    line, _ = cli._winner_line("p", "equal compute", picks, lambda p: None)
    assert "the picks of grid, hypergradient and random, each trained again alone" in line
    # not told how to get per-example losses at all: no reason is claimed
    line, _ = cli._winner_line("p", "equal compute", picks)
    assert "(no per-example test losses)," in line


def test_a_stored_random_search_asked_for_more_trials_names_extends(objective, tmp_path):
    db = os.fspath(tmp_path / "s.db")
    hg.random_search(objective, SPACE, KEY, num_trials=4, storage=db, study="r")
    with pytest.raises(ValueError) as err:
        hg.random_search(objective, SPACE, KEY, num_trials=8, storage=db, study="r")
    assert "arguments.num_trials differs (4 stored, 8 now)" in str(err.value)
    assert f"pass extends=hg.load_study({db!r}, 'r') to random_search with num_trials=8 and without storage= and " \
           "study=" in str(err.value)
    for other in (dict(num_trials=2), dict(num_trials=8, key=jax.random.key(1))):  # extends would not serve
        with pytest.raises(ValueError) as err:
            hg.random_search(objective, SPACE, other.pop("key", KEY), storage=db, study="r", **other)
        assert "extends" not in str(err.value)
    longer = hg.random_search(objective, SPACE, KEY, num_trials=8, extends=hg.load_study(db, "r"))  # the advice
    fresh = hg.random_search(objective, SPACE, KEY, num_trials=8)  # chunked otherwise: equal to the last bits
    np.testing.assert_allclose([t.value for t in longer.trials], [t.value for t in fresh.trials], rtol=1e-10)
