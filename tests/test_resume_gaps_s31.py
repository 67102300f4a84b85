"""A tune or hybrid_search study with a trial row deleted before its checkpoint (hunt of the messages, D1).

The unreadable-trial message advised "delete this trial's row to recompute it on resume". For a
search (random, grid, optuna) that works; a tune or hybrid_search study resumes from its outer-step
checkpoint, past the trial, so the repeated call silently returned trials [0, 2, 3] instead of
[0, 1, 2, 3], and `hg.load_study` the same. Such a gap is now refused, naming what works.
"""

import sqlite3

import jax
import optax
import pytest

import hypergrad as hg

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def _tune(objective, db, **kw):
    return hg.tune(objective, SPACE, jax.random.key(0), steps=2, storage=db, study="t", **kw)


def _edit(db, sql, *args):
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)
    conn.close()


def test_a_deleted_step_trial_of_tune_is_refused_on_resume_and_load(tmp_path, objective):
    db = tmp_path / "s.db"
    first = _tune(objective, db)
    assert [t.number for t in first.trials] == [0, 1, 2]
    _edit(db, "UPDATE trials SET scores = 'x' WHERE study = 't' AND number = 1")
    with pytest.raises(ValueError, match="trial 1 is unreadable") as unreadable:
        _tune(objective, db)
    assert "delete this trial's row" not in str(unreadable.value)  # the advice that lost the trial
    assert "another study name" in str(unreadable.value)
    _edit(db, "DELETE FROM trials WHERE study = 't' AND number = 1")  # what the old message advised
    for call in (lambda: _tune(objective, db), lambda: hg.load_study(db, "t")):
        with pytest.raises(ValueError, match=r"trial\(s\) \[1\] .*missing.*another study name"):
            call()  # old: trials [0, 2], no error
    _edit(db, "UPDATE studies SET state = 'running' WHERE name = 't'")  # as if killed after its last step
    with pytest.raises(ValueError, match=r"trial\(s\) \[1\] .*missing.*never be recomputed"):
        _tune(objective, db)
    assert [t.number for t in _tune(objective, tmp_path / "new.db").trials] == [0, 1, 2]  # the advice works


def test_a_deleted_warmup_trial_of_a_running_tune_study_is_still_recomputed(tmp_path, objective):
    db = tmp_path / "s.db"
    first = _tune(objective, db, warmup=2)
    assert [t.number for t in first.trials] == [0, 1, 2, 3, 4]
    _edit(db, "DELETE FROM trials WHERE study = 't' AND number = 1")  # a warm-up trial, which a resume recomputes
    _edit(db, "UPDATE studies SET state = 'running' WHERE name = 't'")
    with pytest.raises(ValueError, match=r"trial\(s\) \[1\] .*missing.*repeat its call"):
        hg.load_study(db, "t")
    again = _tune(objective, db, warmup=2)
    assert [(t.number, t.value) for t in again.trials] == [(t.number, t.value) for t in first.trials]
    assert [t.number for t in hg.load_study(db, "t").trials] == [0, 1, 2, 3, 4]


def test_a_deleted_trial_of_hybrid_search_is_refused(tmp_path, objective):
    db = tmp_path / "s.db"
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Choice([0.0, 0.5])})
    family = hg.Objective(objective.problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)

    def call():
        return hg.hybrid_search(family, space, jax.random.key(0), budget=12, storage=db, study="h")

    assert len(call().trials) > 2
    _edit(db, "UPDATE trials SET scores = 'x' WHERE study = 'h' AND number = 1")
    with pytest.raises(ValueError, match="trial 1 is unreadable.*another study name") as unreadable:
        call()
    assert "delete this trial's row" not in str(unreadable.value)
    _edit(db, "DELETE FROM trials WHERE study = 'h' AND number = 1")
    with pytest.raises(ValueError, match=r"trial\(s\) \[1\] of this hybrid_search study are missing.*another study name"):
        call()  # old: trials [0, 2, ...], no error


def test_a_search_study_keeps_the_delete_advice(tmp_path, objective):
    db = tmp_path / "s.db"
    first = hg.random_search(objective, SPACE, jax.random.key(0), 4, storage=db, study="r")
    _edit(db, "UPDATE trials SET scores = 'x' WHERE study = 'r' AND number = 1")
    with pytest.raises(ValueError, match="delete this trial's row to recompute it on resume"):
        hg.load_study(db, "r")
    _edit(db, "DELETE FROM trials WHERE study = 'r' AND number = 1")
    again = hg.random_search(objective, SPACE, jax.random.key(0), 4, storage=db, study="r")
    assert [(t.number, t.value) for t in again.trials] == [(t.number, t.value) for t in first.trials]
