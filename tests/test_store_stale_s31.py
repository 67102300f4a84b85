"""A stored call after an edit of a value the objective's functions read (a module-level flag) computes, counts
and checks the objective as it is now, even where an earlier call in the same process only checked or counted it
(nothing compiled): `hypergrad.store.studying` forgets the objective, and every cache held for it goes with it."""

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile, accounting


def _problem():
    """The small full-batch problem every test here trains."""
    return hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)

DECAY = False  # read by `_sgd`, edited by the tests


def _sgd():
    """A new optimiser function (Reversible's probes are held per function) reading `DECAY`."""
    def optimizer(h):
        base = optax.sgd(h["lr"], momentum=h["momentum"])
        return optax.chain(optax.add_decayed_weights(0.01), base) if DECAY else base

    return optimizer


@pytest.fixture
def decay():
    global DECAY
    DECAY = False
    yield
    DECAY = False


def test_reversible_after_an_edit_refuses_the_edited_optimiser_in_a_stored_tune(tmp_path, decay):
    # Reversible's probe of the optimiser, traced before the edit, accepted the edited (not plain SGD) optimiser:
    # the stored tune ran it and stored NaN trials where a fresh process refuses.
    global DECAY
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.5, 0.9)})
    objective = hg.Objective(problem, _sgd(), num_steps=3)
    hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),  # plain SGD with momentum: runs
            storage=str(tmp_path / "before.db"), study="before")
    DECAY = True
    with pytest.raises(ValueError, match="Reversible supports SGD with momentum only"):
        hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),
                storage=str(tmp_path / "after.db"), study="after")


def test_reversible_checked_before_an_edit_refuses_the_edited_optimiser_in_a_stored_tune(tmp_path, decay):
    # Only a check before the edit (nothing compiled): the objective counted as untouched and kept its probe.
    global DECAY
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.5, 0.9)})
    objective = hg.Objective(problem, _sgd(), num_steps=3)
    hg.Reversible().check(objective, space.centre())  # accepted: plain SGD with momentum
    DECAY = True
    with pytest.raises(ValueError, match="Reversible supports SGD with momentum only"):
        hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),
                storage=str(tmp_path / "s.db"), study="s")


CHAIN = 0  # read by `_scaled_sgd`, edited by the test


def _scaled_sgd(h):
    return optax.chain(optax.sgd(h["lr"]), *[optax.scale(0.5) for _ in range(CHAIN)])


@pytest.fixture
def chain():
    global CHAIN
    CHAIN = 0
    yield
    CHAIN = 0


def test_a_flop_count_made_before_an_edit_is_not_stored_by_a_stored_call_after_it(tmp_path, chain):
    # hg.run_flops compiles nothing, so the stored call took the objective for untouched and stored the count
    # of the optimiser before the edit beside values computed after it.
    global CHAIN
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    objective = hg.Objective(problem, _scaled_sgd, num_steps=3)
    key = jax.random.key(0)
    before = hg.run_flops(objective, space.centre(), key)
    CHAIN = 3
    result = hg.random_search(objective, space, key, num_trials=2, storage=str(tmp_path / "s.db"), study="s")
    edited = hg.run_flops(hg.Objective(problem, _scaled_sgd, num_steps=3), space.centre(), key)
    assert edited != before
    assert result.run_flops == edited
    assert [t.flops for t in result.trials] == [edited, edited]


# A count made outside a stored call while the objective read an edited global is not stored by a later stored call
# once the edit is undone (the store learns of counts as it learns of compiled programs), and a stored call keeps
# what its own checks counted.
def _scaled_momentum_sgd(h):
    """`_scaled_sgd` reading "momentum" when the space has it (so two spaces give two argument types)."""
    return optax.chain(optax.sgd(h["lr"], momentum=h.get("momentum")), *[optax.scale(0.5) for _ in range(CHAIN)])


def test_a_count_made_during_an_edit_undone_since_is_not_stored(tmp_path, chain):
    # stored call; edit; hg.run_flops at types no stored call had counted (compiles nothing); edit undone; a stored
    # call at those types stored the edited optimiser's count: its description matched the first stored call's and
    # no program had been compiled since, so the objective passed as untouched
    global CHAIN
    problem = _problem()
    objective = hg.Objective(problem, _scaled_momentum_sgd, num_steps=3)
    key = jax.random.key(0)
    lr = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    both = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    hg.random_search(objective, lr, key, num_trials=2, storage=str(tmp_path / "s.db"), study="lr")
    CHAIN = 3
    edited = hg.run_flops(objective, both.centre(), key)
    CHAIN = 0
    result = hg.random_search(objective, both, key, num_trials=2, storage=str(tmp_path / "s.db"), study="both")
    plain = hg.run_flops(hg.Objective(problem, _scaled_momentum_sgd, num_steps=3), both.centre(), key)
    assert edited != plain
    assert result.run_flops == plain
    assert [t.flops for t in result.trials] == [plain, plain]


def _count_tune(objective, space, **stored):
    before = accounting.stats["counts"]
    result = hg.tune(objective, space, jax.random.key(0), steps=1, **stored)
    return accounting.stats["counts"] - before, result


def test_a_stored_tune_of_a_new_objective_counts_its_run_once(tmp_path):
    # the study forgot the objective its own checks had just counted (no stored call had described it), so the run
    # was traced and counted again: a stored tune counted 3 programs where the same call without storage counts 2
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    plain, unstored = _count_tune(hg.Objective(problem, _scaled_momentum_sgd, num_steps=3), space)
    counted, stored = _count_tune(hg.Objective(problem, _scaled_momentum_sgd, num_steps=3), space,
                                  storage=str(tmp_path / "s.db"), study="s")
    assert counted == plain == 2
    assert [t.value for t in stored.trials] == [t.value for t in unstored.trials]
    assert [t.flops for t in stored.trials] == [t.flops for t in unstored.trials]


def test_a_stored_tune_after_an_edit_still_counts_the_objective_as_it_is(tmp_path, chain):
    # the counts kept from a stored call's own checks are of the objective as it is then; one counted by an earlier
    # call without storage, before an edit, is still forgotten
    global CHAIN
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    objective = hg.Objective(problem, _scaled_momentum_sgd, num_steps=3)
    before = hg.run_flops(objective, space.centre(), jax.random.key(0))
    CHAIN = 3
    result = hg.tune(objective, space, jax.random.key(0), steps=1, storage=str(tmp_path / "s.db"), study="s")
    edited = hg.run_flops(hg.Objective(problem, _scaled_momentum_sgd, num_steps=3), space.centre(), jax.random.key(0))
    assert edited != before and result.run_flops == edited


def _hybrid(objective, **stored):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Choice([0.0, 0.9])})
    before = accounting.stats["counts"]
    result = hg.hybrid_search(objective, space, jax.random.key(0), budget=12, **stored)
    return accounting.stats["counts"] - before, result


def test_a_finished_hybrid_study_called_again_returns_its_result_and_compiles_nothing(tmp_path):
    # as tune's: hybrid_search's storage is "as in hg.tune"; it resumed at its last checkpoint instead, compiling
    # every cohort's outer step to run no step
    problem = _problem()
    objective = hg.Objective(problem, _scaled_momentum_sgd, num_steps=3)
    _, first = _hybrid(objective, storage=str(tmp_path / "s.db"), study="s")
    hg.clear_caches()
    compiled = _compile.stats.compilations
    _, again = _hybrid(objective, storage=str(tmp_path / "s.db"), study="s")
    assert _compile.stats.compilations == compiled
    assert again.trials == first.trials and again.info == first.info and again.run_flops == first.run_flops


def test_a_probe_made_during_an_edit_undone_since_does_not_refuse_a_stored_tune(tmp_path, decay):
    # stored tune; edit; Reversible.check refuses the edited optimiser (its probe traced now); edit undone; a stored
    # tune with Reversible was refused by that probe, in its checks before the study opened, where a fresh process
    # accepts plain SGD with momentum
    global DECAY
    problem = _problem()
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.5, 0.9)})
    objective = hg.Objective(problem, _sgd(), num_steps=3)
    hg.tune(objective, space, jax.random.key(0), steps=1, storage=str(tmp_path / "s.db"), study="reverse")
    DECAY = True
    with pytest.raises(ValueError, match="Reversible supports SGD with momentum only"):
        hg.Reversible().check(objective, space.centre())
    DECAY = False
    result = hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),
                     storage=str(tmp_path / "s.db"), study="reversible")
    assert len(result.trials) == 2 and all(t.value == t.value for t in result.trials)


def test_a_stored_hybrid_search_after_an_edit_prices_and_stores_the_objective_as_it_is(tmp_path, chain):
    # hybrid_search plans (prices its programs by FLOP counts) before its study opens: it planned and stored with the
    # count made before the edit
    global CHAIN
    problem = _problem()
    objective = hg.Objective(problem, _scaled_momentum_sgd, num_steps=3)
    setting = {"lr": 0.1, "momentum": 0.0}
    before = hg.run_flops(objective, setting, jax.random.key(0))
    CHAIN = 3
    _, result = _hybrid(objective, storage=str(tmp_path / "s.db"), study="s")
    edited = hg.run_flops(hg.Objective(problem, _scaled_momentum_sgd, num_steps=3), setting, jax.random.key(0))
    assert edited != before
    assert result.run_flops == edited and {t.run_flops for t in result.trials} == {edited}
