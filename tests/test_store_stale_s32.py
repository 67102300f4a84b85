"""A count made outside a stored call while the objective read an edited global is not stored by a later stored
call once the edit is undone: the store learns of counts as it learns of compiled programs."""

import jax
import optax
import pytest

import hypergrad as hg

CHAIN = 0  # read by `_scaled_sgd`, edited by the test


def _scaled_sgd(h):
    return optax.chain(optax.sgd(h["lr"], momentum=h.get("momentum")), *[optax.scale(0.5) for _ in range(CHAIN)])


@pytest.fixture
def chain():
    global CHAIN
    CHAIN = 0
    yield
    CHAIN = 0


def test_a_count_made_during_an_edit_undone_since_is_not_stored(tmp_path, chain):
    # stored call; edit; hg.run_flops at types no stored call had counted (compiles nothing); edit undone; a stored
    # call at those types stored the edited optimiser's count: its description matched the first stored call's and
    # no program had been compiled since, so the objective passed as untouched
    global CHAIN
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    objective = hg.Objective(problem, _scaled_sgd, num_steps=3)
    key = jax.random.key(0)
    lr = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    both = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    hg.random_search(objective, lr, key, num_trials=2, storage=str(tmp_path / "s.db"), study="lr")
    CHAIN = 3
    edited = hg.run_flops(objective, both.centre(), key)
    CHAIN = 0
    result = hg.random_search(objective, both, key, num_trials=2, storage=str(tmp_path / "s.db"), study="both")
    plain = hg.run_flops(hg.Objective(problem, _scaled_sgd, num_steps=3), both.centre(), key)
    assert edited != plain
    assert result.run_flops == plain
    assert [t.flops for t in result.trials] == [plain, plain]


def _count_tune(objective, space, **stored):
    from hypergrad import accounting
    before = accounting.stats["counts"]
    result = hg.tune(objective, space, jax.random.key(0), steps=1, **stored)
    return accounting.stats["counts"] - before, result


def test_a_stored_tune_of_a_new_objective_counts_its_run_once(tmp_path):
    # the study forgot the objective its own checks had just counted (no stored call had described it), so the run
    # was traced and counted again: a stored tune counted 3 programs where the same call without storage counts 2
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    plain, unstored = _count_tune(hg.Objective(problem, _scaled_sgd, num_steps=3), space)
    counted, stored = _count_tune(hg.Objective(problem, _scaled_sgd, num_steps=3), space,
                                  storage=str(tmp_path / "s.db"), study="s")
    assert counted == plain == 2
    assert [t.value for t in stored.trials] == [t.value for t in unstored.trials]
    assert [t.flops for t in stored.trials] == [t.flops for t in unstored.trials]


def test_a_stored_tune_after_an_edit_still_counts_the_objective_as_it_is(tmp_path, chain):
    # the counts kept from a stored call's own checks are of the objective as it is then; one counted by an earlier
    # call without storage, before an edit, is still forgotten
    global CHAIN
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    objective = hg.Objective(problem, _scaled_sgd, num_steps=3)
    before = hg.run_flops(objective, space.centre(), jax.random.key(0))
    CHAIN = 3
    result = hg.tune(objective, space, jax.random.key(0), steps=1, storage=str(tmp_path / "s.db"), study="s")
    edited = hg.run_flops(hg.Objective(problem, _scaled_sgd, num_steps=3), space.centre(), jax.random.key(0))
    assert edited != before and result.run_flops == edited


def _hybrid(objective, **stored):
    from hypergrad import accounting
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Choice([0.0, 0.9])})
    before = accounting.stats["counts"]
    result = hg.hybrid_search(objective, space, jax.random.key(0), budget=12, **stored)
    return accounting.stats["counts"] - before, result


def test_a_finished_hybrid_study_called_again_returns_its_result_and_compiles_nothing(tmp_path):
    # as tune's: hybrid_search's storage is "as in hg.tune"; it resumed at its last checkpoint instead, compiling
    # every cohort's outer step to run no step
    from hypergrad import _compile
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    objective = hg.Objective(problem, _scaled_sgd, num_steps=3)
    _, first = _hybrid(objective, storage=str(tmp_path / "s.db"), study="s")
    hg.clear_caches()
    compiled = _compile.stats.compilations
    _, again = _hybrid(objective, storage=str(tmp_path / "s.db"), study="s")
    assert _compile.stats.compilations == compiled
    assert again.trials == first.trials and again.info == first.info and again.run_flops == first.run_flops
