"""Session 39's store fixes: the same call of a finished search keeps the study's stored seconds, an
unfinished tune(resample_key=True) study read back picks among the trials scored on the call's key, and
processes whose storage= paths are not one file are refused naming storage=; a refusal deep inside outer=
says it is outer=."""

import math

import jax
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils

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


def _fake_processes(monkeypatch, other):
    """Two processes as `open_study` sees them (this one process 0): `jax.process_count()` is 2, every
    all-gather returns this process's buffer twice, except the study's state (`_check_one_file`'s four
    ints), where process 1 sends `other`."""
    def gathered(sent):
        sent = np.asarray(sent)
        return np.stack([sent, np.asarray(other, sent.dtype) if sent.shape == (4,) else sent])
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", gathered)


def test_processes_finding_the_study_in_different_states_are_refused_naming_storage(
        ridge_objective, key, tmp_path, monkeypatch):
    """Processes whose storage= paths were not one file (a node-local disk on each machine) resumed a
    study with process 0 loading stored chunks that process 1 computed: a JAX device_put assertion or
    gloo's abort, both blaming 'a call differed'. Each process's view of the study is now compared
    as it opens: a ValueError naming storage= and the fix, the lease released."""
    db = tmp_path / "study.db"
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 9, chunk_size=3, storage=db, study="r", progress=stop_after(1))

    def opened():
        return hg.store.open_study(db, "r", kind="random", space=SPACE, fingerprint=lambda: hg.store.fingerprint(
            "random", ridge_objective, SPACE, key, num_trials=9))
    with monkeypatch.context() as patched:
        _fake_processes(patched, [3, -1, 0, 1])  # the same view: opened
        opened().close()
        _fake_processes(patched, [0, -1, 0, 0])  # process 1 finds no file
        with pytest.raises(ValueError, match=r"process 0 finds 3 stored trials; process 1 finds no file at that "
                                             r"path\), so their storage= paths are not one file\. storage= must be "
                                             r"a file every process sees"):
            opened()
        patched.setattr(hg.store, "is_writer", lambda: False)  # process 1's view, process 0 finding another file
        _fake_processes(patched, [5, 2, 1, 1])
        with pytest.raises(ValueError, match=r"process 1 finds 5 stored trials, its checkpoint at step 2, finished"):
            opened()
    resumed = hg.random_search(ridge_objective, SPACE, key, 9, chunk_size=3, storage=db, study="r")  # lease free
    assert [t.number for t in resumed.trials] == list(range(9))


def test_a_resume_with_another_outer_optimiser_says_it_is_outer(ridge_objective, key, tmp_path):
    """A tune study resumed with another outer learning rate was refused naming only a path through
    the optimiser's closures (arguments.outer.update.closure[0][1]...); the refusal now also says
    that this is outer=."""
    db = tmp_path / "study.db"
    hg.tune(ridge_objective, SPACE, key, steps=1, outer=optax.adam(0.1), storage=db, study="t")
    with pytest.raises(ValueError, match=r"different call: arguments\.outer\.\S* differs \(-0\.1 stored, -0\.2 now\); "
                                         r"that is outer=: the stored study's outer optimiser is not this one"):
        hg.tune(ridge_objective, SPACE, key, steps=1, outer=optax.adam(0.2), storage=db, study="t")
