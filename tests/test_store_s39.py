"""Session 39's store fixes: the same call of a finished search keeps the study's stored seconds."""

import optax
import pytest

import hypergrad as hg

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
