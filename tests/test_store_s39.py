"""Session 39's store fixes: the same call of a finished search keeps the study's stored seconds, and an
unfinished tune(resample_key=True) study read back picks among the trials scored on the call's key."""

import math

import optax
import pytest

import hypergrad as hg
from _helpers import Stop, stop_after

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def ridge_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.chain(
        optax.add_decayed_weights(h["weight_decay"]), optax.sgd(h["lr"])), num_steps=5)


def _random(objective, key, db):
    return hg.random_search(objective, SPACE, key, 6, chunk_size=3, storage=db, study="s")


def _grid(objective, key, db):
    return hg.grid_search(objective, SPACE, key, 2, storage=db, study="s")


def _optuna(objective, key, db):
    pytest.importorskip("optuna")
    return hg.optuna_search(objective, SPACE, key, 4, batch_size=2, storage=db, study="s")


@pytest.mark.parametrize("search", [_random, _grid, _optuna])
def test_the_same_call_of_a_finished_search_keeps_its_stored_seconds(ridge_objective, key, tmp_path, search):
    """The same random/grid/optuna call of a finished study found every trial stored, computed none,
    and then wrote its own compile and set-up seconds (about 0) over the study's, in the file and in
    the Result it returned: the search's wall time was lost for good. The study's row now stays as
    the first call wrote it and the repeat returns the stored Result, as a finished tune's does."""
    db = tmp_path / "study.db"
    first = search(ridge_objective, key, db)
    (before,) = hg.list_studies(db)
    hg.clear_caches()  # as in a new process
    again = search(ridge_objective, key, db)
    for result in (again, hg.load_study(db, "s")):
        assert (result.strategy, result.run_flops, result.compile_seconds, result.setup_seconds) == \
            (first.strategy, first.run_flops, first.compile_seconds, first.setup_seconds)
        assert [t.value for t in result.trials] == [t.value for t in first.trials]
        assert result.spent("seconds")[-1] == pytest.approx(first.spent("seconds")[-1], rel=1e-12)
    assert hg.list_studies(db) == [before]  # its row untouched (`updated` included)


TUNE = dict(population=2, warmup=3, steps=3, resample_key=True, outer=optax.adam(0.3))


def _picked_on_key(part, whole):
    """Checks the read-back `part` of a running study picks as its Result should (`whole`: the
    uninterrupted call's); returns the final iterates it holds."""
    assert part.info["resample_key"] is True
    final = [t.number for t in part.trials if t.number in set(whole.info["final_trials"])]
    assert part.info["final_trials"] == final
    on_key = [t for t in part.trials if t.tuner is None or t.number in set(final)]
    assert part.best_trial in on_key
    assert part.best_value == min(t.value for t in on_key if math.isfinite(t.value))
    return final


def test_an_unfinished_resample_key_tune_read_back_picks_among_trials_scored_on_its_key(
        ridge_objective, key, tmp_path):
    """load_study (and list_studies) of a tune(resample_key=True) study stopped before it finished
    picked its best among every trial, each step's scored on its own key (biased low, not reproduced
    by objective(best_hparams, key)), since the unfinished study's info did not say resample_key.
    They now read it from the stored call: the pick ranges over the warm-up's trials and the final
    iterates stored so far, none before the last outer step, all once their commit is in (a study
    stopped there, before it was marked complete, picks as the finished call)."""
    db = tmp_path / "study.db"
    whole = hg.tune(ridge_objective, SPACE, key, **TUNE)
    with pytest.raises(Stop):  # the warm-up's report, then the first two outer steps'
        hg.tune(ridge_objective, SPACE, key, **TUNE, storage=db, study="t", progress=stop_after(3))
    part = hg.load_study(db, "t")
    steps = [t.value for t in part.trials if t.tuner is not None]
    warm = [t.value for t in part.trials if t.tuner is None]
    assert steps and min(steps) < min(warm)  # else the old rule's pick would be the same
    assert _picked_on_key(part, whole) == []
    assert part.best_value == min(warm) == hg.list_studies(db)[0].best_value
    with pytest.raises(Stop):  # the last step and the final iterates' commit; not marked complete
        hg.tune(ridge_objective, SPACE, key, **TUNE, storage=db, study="t", progress=stop_after(2))
    part = hg.load_study(db, "t")
    assert hg.list_studies(db)[0].state == "running"
    assert _picked_on_key(part, whole) == whole.info["final_trials"]
    assert part.best_value == whole.best_value == hg.list_studies(db)[0].best_value
    finished = hg.tune(ridge_objective, SPACE, key, **TUNE, storage=db, study="t")
    assert finished.best_value == whole.best_value == hg.list_studies(db)[0].best_value
    assert hg.load_study(db, "t").info["final_trials"] == whole.info["final_trials"]
