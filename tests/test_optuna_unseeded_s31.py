"""optuna_search with storage= and an unseeded sampler instance (hunt of the messages, D2).

Resuming such a study said "resume with a seeded sampler (seed= or the key's default), or give another
study name"; every seeded variant was then refused as "a different call ... Repeat the original call",
so only another study name worked. The refusal now says that this study cannot be resumed and what
makes a new one resumable, and such a call warns at its start (it still runs, as before).
"""

import warnings

import jax
import optax
import pytest

import hypergrad as hg

optuna = pytest.importorskip("optuna")

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
UNSEEDED = r"sampler instance TPESampler is not seeded"


class Stop(Exception):
    pass


def _interrupt(line):  # stands for a Ctrl-C after the first round
    raise Stop()


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def _search(objective, db, study, sampler, **kw):
    return hg.optuna_search(objective, SPACE, jax.random.key(0), 4, sampler=sampler, batch_size=2, chunk_size=2,
                            storage=db, study=study, **kw)


def _unseeded_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Stop:
            pass
    return [w for w in caught if "not seeded" in str(w.message)]


def test_an_unseeded_sampler_study_says_it_cannot_resume_and_what_works(tmp_path, objective):
    db = tmp_path / "s.db"
    with pytest.warns(UserWarning, match=UNSEEDED + r".*could not be resumed.*seed=0"), pytest.raises(Stop):
        _search(objective, db, "u", optuna.samplers.TPESampler(), progress=_interrupt)
    with pytest.warns(UserWarning, match=UNSEEDED), pytest.raises(ValueError) as refused:
        _search(objective, db, "u", optuna.samplers.TPESampler())
    said = str(refused.value)
    assert "cannot be resumed" in said and "another study name" in said
    assert "resume with a seeded sampler" not in said  # old: advice that every seeded call then refused
    # the advice: another study name, with a seeded sampler, which resumes
    assert not _unseeded_warnings(lambda: _search(objective, db, "s", optuna.samplers.TPESampler(seed=0),
                                                  progress=_interrupt))
    resumed = _search(objective, db, "s", optuna.samplers.TPESampler(seed=0))
    whole = _search(objective, tmp_path / "whole.db", "s", optuna.samplers.TPESampler(seed=0))
    assert [(t.number, t.value) for t in resumed.trials] == [(t.number, t.value) for t in whole.trials]


def test_no_warning_where_the_study_can_resume_or_none_is_stored(tmp_path, objective):
    db = tmp_path / "s.db"
    assert not _unseeded_warnings(lambda: _search(objective, db, "a", "tpe"))
    assert not _unseeded_warnings(lambda: _search(objective, db, "b", "random", seed=3))
    assert not _unseeded_warnings(lambda: _search(objective, db, "c", optuna.samplers.RandomSampler(seed=1)))
    assert not _unseeded_warnings(lambda: _search(objective, None, None, optuna.samplers.TPESampler()))


def test_a_seeded_instance_given_another_seed_is_told_to_give_the_first_seed(tmp_path, objective):
    db = tmp_path / "s.db"
    with pytest.raises(Stop):
        _search(objective, db, "r", optuna.samplers.RandomSampler(seed=1), progress=_interrupt)
    with pytest.raises(ValueError, match="seeded as the first call's") as refused:
        _search(objective, db, "r", optuna.samplers.RandomSampler(seed=2))
    assert "resume with a seeded sampler" not in str(refused.value)
    assert len(_search(objective, db, "r", optuna.samplers.RandomSampler(seed=1)).trials) == 4  # the advice works
