"""optuna_search with a sampler instance uses a copy of it (hunt of the histories, D4).

The instance was given to Optuna as it was, so a call advanced its random state: the same call again in
the same process proposed other trials than in a fresh process, and with storage=/study= the same call
again (the documented replay/resume) was refused with 'seed it as the first call's was', which it was.
Each call now starts from a copy of the instance as the user gave it.
"""

import copy

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad.store import fingerprint

optuna = pytest.importorskip("optuna")

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})


@pytest.fixture(scope="module")
def objective():
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def _search(objective, sampler, **kw):
    return hg.optuna_search(objective, SPACE, jax.random.key(0), 4, sampler=sampler, batch_size=2, chunk_size=2, **kw)


def _lrs(result):
    return [float(t.hparams["lr"]) for t in result.trials]


@pytest.mark.parametrize("make", [lambda: optuna.samplers.RandomSampler(seed=0),
                                  lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=2)])
def test_the_same_call_twice_with_one_instance_equals_a_fresh_call(objective, make):
    sampler = make()
    first, again = _lrs(_search(objective, sampler)), _lrs(_search(objective, sampler))
    fresh = _lrs(_search(objective, make()))
    assert first == fresh and again == fresh  # old: `again` drew on from where `first` left the instance


def test_a_stored_study_replays_with_the_instance_of_its_first_call(tmp_path, objective):
    sampler, db = optuna.samplers.RandomSampler(seed=0), tmp_path / "s.db"
    first = _search(objective, sampler, storage=db, study="s")
    again = _search(objective, sampler, storage=db, study="s")  # old: refused, 'seeded as the first call's was'
    assert _lrs(again) == _lrs(first) == _lrs(_search(objective, optuna.samplers.RandomSampler(seed=0)))


def test_a_copy_describes_the_instance_as_the_original(objective):
    for make in (lambda: optuna.samplers.RandomSampler(seed=0), lambda: optuna.samplers.TPESampler(seed=3),
                 optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        used, unused = make(), make()
        _search(objective, used)
        described = [fingerprint("optuna", objective, SPACE, jax.random.key(0), sampler=s)
                     for s in (used, unused, copy.deepcopy(unused))]
        assert described[0] == described[1] == described[2]  # the user's instance is left as given, and a copy
        # describes it as the original does (a stored study's fingerprint is the same as before)


class Stop(Exception):
    pass


def _interrupt(line):  # stands for a Ctrl-C after the first round
    raise Stop()


def test_an_unseeded_instance_used_before_still_gets_the_unseeded_messages(tmp_path, objective):
    sampler, db, unseeded = optuna.samplers.RandomSampler(), tmp_path / "s.db", "instance RandomSampler is not seeded"
    _search(objective, sampler)  # old: filled the instance's lazy random state, so it read as seeded afterwards
    with pytest.warns(UserWarning, match=unseeded), pytest.raises(Stop):
        _search(objective, sampler, storage=db, study="u", progress=_interrupt)
    with pytest.warns(UserWarning, match=unseeded), pytest.raises(ValueError, match="cannot be resumed by any call"):
        _search(objective, sampler, storage=db, study="u")


def test_an_instance_that_cannot_be_copied_is_used_as_is(objective):
    sampler = optuna.samplers.NSGAIISampler(seed=0)  # holds a thread lock: copy.deepcopy refuses it
    with pytest.raises(TypeError):
        copy.deepcopy(sampler)
    assert len(_search(objective, sampler).trials) == 4  # runs, as before the copy
