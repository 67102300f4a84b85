"""A stored call after an edit of a value the objective's functions read (a module-level flag) computes, counts
and checks the objective as it is now, even where an earlier call in the same process only checked or counted it
(nothing compiled): `hypergrad.store.studying` forgets the objective, and every cache held for it goes with it."""

import jax
import optax
import pytest

import hypergrad as hg

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
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
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
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
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
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
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
