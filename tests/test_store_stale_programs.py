"""A stored study is computed from the objective its fingerprint describes, even when the same objective
object ran before an edit of a value its functions read (a module-level value, a closed-over dict): its
programs, cached per objective object and traced before the edit, would otherwise give the old values,
stored under a fingerprint naming the new one, and a later process resuming the study would get them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "weight_decay": hg.LogUniform(1e-6, 1e-1)})
SCALE = 1.0  # read by `_global_scaled`'s train loss, edited by the tests


def _global_scaled(problem):
    def train_loss(params, hparams, batch):
        x, y = batch
        return SCALE * jnp.mean((x @ params["w"] - y) ** 2) + hparams["weight_decay"] * jnp.sum(params["w"] ** 2)

    return hg.Objective(dataclasses.replace(problem, train_loss=train_loss), lambda h: optax.sgd(h["lr"]), num_steps=4)


def _closure_scaled(problem, config):
    def train_loss(params, hparams, batch):
        x, y = batch
        return (config["scale"] * jnp.mean((x @ params["w"] - y) ** 2)
                + hparams["weight_decay"] * jnp.sum(params["w"] ** 2))

    return hg.Objective(dataclasses.replace(problem, train_loss=train_loss), lambda h: optax.sgd(h["lr"]), num_steps=4)


def _values(result):
    return np.array([t.value for t in result.trials])


def _search(objective, db, study):
    return hg.random_search(objective, SPACE, jax.random.key(0), num_trials=4, storage=db, study=study)


def _tune(objective, db, study):
    return hg.tune(objective, SPACE, jax.random.key(0), steps=2, storage=db, study=study)


@pytest.fixture
def scale():
    global SCALE
    SCALE = 1.0
    yield
    SCALE = 1.0


@pytest.mark.parametrize("run", [_search, _tune], ids=["random_search", "tune"])
def test_a_study_after_editing_a_global_the_loss_reads_computes_the_edited_objective(ridge_problem, tmp_path, run,
                                                                                       scale):
    # the second study was stored under a fingerprint saying SCALE=5 with the values of SCALE=1 (the
    # programs traced by the first call were reused), and a later process resumed it without complaint
    global SCALE
    db = tmp_path / "s.db"
    objective = _global_scaled(ridge_problem)
    first = run(objective, db, "s1")
    SCALE = 5.0
    with pytest.raises(ValueError, match="SCALE differs"):
        run(objective, db, "s1")
    second = run(objective, db, "s2")
    hg.clear_caches()
    rebuilt = run(objective, db, "s3")
    np.testing.assert_array_equal(_values(second), _values(rebuilt))
    assert not np.allclose(_values(second), _values(first))
    np.testing.assert_array_equal(_values(run(objective, db, "s2")), _values(rebuilt))  # resumed: as stored


@pytest.mark.parametrize("run", [_search, _tune], ids=["random_search", "tune"])
def test_a_study_after_editing_a_closed_over_dict_computes_the_edited_objective(ridge_problem, tmp_path, run):
    config = {"scale": 1.0}
    db = tmp_path / "s.db"
    objective = _closure_scaled(ridge_problem, config)
    first = run(objective, db, "t1")
    config["scale"] = 5.0
    second = run(objective, db, "t2")
    hg.clear_caches()
    rebuilt = run(objective, db, "t3")
    np.testing.assert_array_equal(_values(second), _values(rebuilt))
    assert not np.allclose(_values(second), _values(first))


def test_a_first_study_after_calls_without_storage_computes_the_edited_objective(ridge_problem, tmp_path):
    # the programs an unstored call traced before the edit were just as stale
    config = {"scale": 1.0}
    objective = _closure_scaled(ridge_problem, config)
    before = hg.random_search(objective, SPACE, jax.random.key(0), num_trials=4)
    config["scale"] = 5.0
    stored = _search(objective, tmp_path / "s.db", "s")
    hg.clear_caches()
    rebuilt = hg.random_search(objective, SPACE, jax.random.key(0), num_trials=4)
    np.testing.assert_array_equal(_values(stored), _values(rebuilt))
    assert not np.allclose(_values(stored), _values(before))


def test_an_unchanged_objective_compiles_nothing_again(ridge_problem, tmp_path):
    # the check must not cost a compilation: stored calls, and unstored calls between them that make
    # programs of the same objective unchanged, keep every program
    objective = _closure_scaled(ridge_problem, {"scale": 2.0})
    db = tmp_path / "s.db"
    _search(objective, db, "a")
    hg.tune(objective, SPACE, jax.random.key(1), steps=2)  # a new program, no storage
    compilations = _compile.stats.compilations
    _search(objective, db, "b")
    _tune(objective, db, "c")
    hg.random_search(objective, SPACE, jax.random.key(2), num_trials=4)
    assert _compile.stats.compilations == compilations


FAMILY_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "weight_decay": hg.LogUniform(1e-6, 1e-1),
                         "steps": hg.Choice(["short", "long"])})


def _family(problem, config, frozen=False):
    # frozen: `build` reads config["scale"] when it builds a member (a copy), not when it is traced
    def build(choice):
        read = dict(config) if frozen else config
        return dataclasses.replace(_closure_scaled(problem, read), num_steps={"short": 3, "long": 4}[choice["steps"]])

    return hg.Structured(build)


def _family_search(family, db=None, study=None):
    return hg.random_search(family, FAMILY_SPACE, jax.random.key(0), num_trials=4, storage=db, study=study)


def test_a_family_stored_after_an_edit_computes_the_edited_family(ridge_problem, tmp_path):
    # the fingerprint describes the family, its programs belong to the objectives it built: the first
    # stored call after the edit reused the members' programs traced before it (stored values = before)
    config = {"scale": 1.0}
    family = _family(ridge_problem, config)
    before = _family_search(family)
    config["scale"] = 5.0
    stored = _family_search(family, tmp_path / "s.db", "s")
    hg.clear_caches()
    rebuilt = _family_search(_family(ridge_problem, config))
    np.testing.assert_array_equal(_values(stored), _values(rebuilt))
    assert not np.allclose(_values(stored), _values(before))


def test_a_family_whose_build_reads_the_edited_value_builds_its_objectives_again(ridge_problem, tmp_path):
    # hg.clear_caches() left the objectives the family had built, made with the old value
    config = {"scale": 1.0}
    family, other = _family(ridge_problem, config, frozen=True), _family(ridge_problem, config, frozen=True)
    before = _family_search(family)
    _family_search(other, tmp_path / "s.db", "a")
    config["scale"] = 5.0
    hg.clear_caches()
    after_clear = _family_search(family)
    new = _family_search(_family(ridge_problem, config, frozen=True))
    np.testing.assert_array_equal(_values(after_clear), _values(new))
    assert not np.allclose(_values(after_clear), _values(before))
    # a stored call on the edited family forgets the objectives it built (build reads the value again)
    np.testing.assert_array_equal(_values(_family_search(other, tmp_path / "s.db", "b")), _values(new))


def test_a_stored_call_keeps_the_programs_of_other_objectives(ridge_problem, tmp_path):
    # a stored call that found its own objective's programs of unknown description emptied every
    # objective's caches: the unchanged objective explored before compiled its programs again
    explored = _closure_scaled(ridge_problem, {"scale": 1.0})
    hg.random_search(explored, SPACE, jax.random.key(0), num_trials=4)
    hg.tune(explored, SPACE, jax.random.key(0), steps=2)
    other = _closure_scaled(ridge_problem, {"scale": 2.0})
    hg.random_search(other, SPACE, jax.random.key(0), num_trials=4)
    _search(other, tmp_path / "s.db", "other")
    compilations = _compile.stats.compilations
    hg.random_search(explored, SPACE, jax.random.key(1), num_trials=4)
    hg.tune(explored, SPACE, jax.random.key(1), steps=2)
    assert _compile.stats.compilations == compilations
