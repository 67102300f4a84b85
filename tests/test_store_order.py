"""A stored study resumed with its space's entries in another order is refused: the order fixes the
grid's enumeration and each entry's random draws (`fold_in` by position), so a resumed grid would
run some points twice and skip others, and a resumed random search would mix two orders' draws.
Studies stored before the check (fingerprint formats 1 and 2, which kept the space's order) still
resume in their own order."""

import json
import sqlite3

import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad._store_codec import first_difference, in_format, space_reordering
from _helpers import Stop, fingerprint_format, stop_after

LR, WD, MOM = hg.LogUniform(1e-3, 0.5), hg.LogUniform(1e-4, 1.0), hg.Uniform(0.0, 0.9)
STORED = hg.Space({"lr": LR, "weight_decay": WD, "momentum": MOM})
REORDERED = hg.Space({"momentum": MOM, "weight_decay": WD, "lr": LR})
REFUSAL = (r"was made by a different call: its space lists the same entries in another order \(lr, weight_decay, "
           r"momentum stored; momentum, weight_decay, lr now\).*stored order, "
           r"hg\.Space\(\{'lr': \.\.\., 'weight_decay': \.\.\., 'momentum': \.\.\.\}\)")


@pytest.fixture(scope="module")
def objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=5)


def points(result):
    return [tuple(float(t.hparams[name]) for name in STORED.names) for t in result.trials]


def assert_refused_before_anything_runs(call, db, study):
    """`call()` raises the order's refusal without compiling, running a trial or writing one."""
    (before,) = hg.list_studies(db)
    hg.clear_caches()  # as in a new process
    compilations = _compile.stats.compilations
    progress = stop_after(0)
    with pytest.raises(ValueError, match=REFUSAL):
        call(progress)
    assert _compile.stats.compilations == compilations and progress.calls == []
    (after,) = hg.list_studies(db)
    assert (after.name, after.num_trials, after.state) == (study, before.num_trials, before.state)


def test_a_grid_study_resumed_with_its_space_in_another_order_is_refused(objective, key, tmp_path):
    db = tmp_path / "study.db"
    whole = hg.grid_search(objective, STORED, key, 2, chunk_size=3)
    with pytest.raises(Stop):
        hg.grid_search(objective, STORED, key, 2, chunk_size=3, storage=db, study="g", progress=stop_after(1))
    assert_refused_before_anything_runs(
        lambda progress: hg.grid_search(objective, REORDERED, key, 2, chunk_size=3, storage=db, study="g",
                                        progress=progress), db, "g")
    resumed = hg.grid_search(objective, STORED, key, 2, chunk_size=3, storage=db, study="g")
    assert points(resumed) == points(whole) and len(set(points(resumed))) == 8
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]


def test_a_random_study_resumed_or_called_again_in_another_order_is_refused(objective, key, tmp_path):
    db = tmp_path / "study.db"
    whole = hg.random_search(objective, STORED, key, 8, chunk_size=4)
    with pytest.raises(Stop):
        hg.random_search(objective, STORED, key, 8, chunk_size=4, storage=db, study="r", progress=stop_after(1))
    call = lambda progress: hg.random_search(objective, REORDERED, key, 8, chunk_size=4,  # noqa: E731
                                             storage=db, study="r", progress=progress)
    assert_refused_before_anything_runs(call, db, "r")
    resumed = hg.random_search(objective, STORED, key, 8, chunk_size=4, storage=db, study="r")
    assert points(resumed) == points(whole)
    assert_refused_before_anything_runs(call, db, "r")  # the finished study, called again
    assert points(hg.random_search(objective, STORED, key, 8, chunk_size=4, storage=db, study="r")) == points(whole)


def test_a_population_tune_resumed_in_another_order_is_refused(objective, key, tmp_path):
    db = tmp_path / "study.db"
    with pytest.raises(Stop):
        hg.tune(objective, STORED, key, population=2, init="sample", steps=2, storage=db, study="t",
                progress=stop_after(1))
    assert_refused_before_anything_runs(
        lambda progress: hg.tune(objective, REORDERED, key, population=2, init="sample", steps=2, storage=db,
                                 study="t", progress=progress), db, "t")


@pytest.mark.parametrize("version", [1, 2])
def test_a_study_stored_in_an_older_format_resumes_in_its_own_order_only(objective, key, tmp_path, version):
    """Formats 1 and 2 stored the space as a dict in its order, as format 3 does: their studies keep
    resuming with their own order, and refuse another."""
    db = tmp_path / "study.db"
    with fingerprint_format(2), pytest.raises(Stop):
        hg.random_search(objective, STORED, key, 8, chunk_size=4, storage=db, study="r", progress=stop_after(1))
    if version == 1:
        with sqlite3.connect(db) as conn:
            (stored,) = conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()
            old = {k: in_format(v, 1) for k, v in json.loads(stored).items() if k != "format"}
            conn.execute("UPDATE studies SET fingerprint = ? WHERE name = 'r'", (json.dumps(old),))
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()[0])
    assert stored.get("format", 1) == version and list(stored["space"]) == list(STORED.names)
    assert_refused_before_anything_runs(
        lambda progress: hg.random_search(objective, REORDERED, key, 8, chunk_size=4, storage=db, study="r",
                                          progress=progress), db, "r")
    progress = stop_after(0)
    resumed = hg.random_search(objective, STORED, key, 8, chunk_size=4, storage=db, study="r", progress=progress)
    assert len(progress.calls) == 1  # the stored chunk was loaded, the second ran
    assert points(resumed) == points(hg.random_search(objective, STORED, key, 8, chunk_size=4))


def test_a_changed_entry_is_a_difference_and_the_same_entries_reordered_a_reordering(objective, key):
    described = lambda space: json.loads(json.dumps(hg.store.fingerprint("grid", objective, space, key)))  # noqa: E731
    assert first_difference(described(STORED), described(STORED)) is None
    assert space_reordering(described(STORED), described(STORED)) is None
    assert first_difference(described(STORED), described(REORDERED)) is None
    assert space_reordering(described(STORED), described(REORDERED)) == (list(STORED.names), list(REORDERED.names))
    changed = hg.Space({"momentum": MOM, "weight_decay": WD, "lr": hg.LogUniform(1e-3, 0.4)})
    assert first_difference(described(STORED), described(changed)) == "space.lr.hi"
    fewer = hg.Space({"weight_decay": WD, "lr": LR})
    assert first_difference(described(STORED), described(fewer)) == "space.momentum"
