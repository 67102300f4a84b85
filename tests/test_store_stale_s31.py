"""A stored call after an edit of a value the objective's functions read (a module-level flag) computes, counts
and checks the objective as it is now, even where an earlier call in the same process only checked or counted it
(nothing compiled): `hypergrad.store.studying` forgets the objective, and every cache held for it goes with it."""

import jax
import optax
import pytest

import hypergrad as hg

DECAY = False  # read by `_sgd`, edited by the tests


def _sgd(h):
    base = optax.sgd(h["lr"], momentum=h["momentum"])
    return optax.chain(optax.add_decayed_weights(0.01), base) if DECAY else base


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
    objective = hg.Objective(problem, _sgd, num_steps=3)
    hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),  # plain SGD with momentum: runs
            storage=str(tmp_path / "before.db"), study="before")
    DECAY = True
    with pytest.raises(ValueError, match="Reversible supports SGD with momentum only"):
        hg.tune(objective, space, jax.random.key(0), steps=1, method=hg.Reversible(),
                storage=str(tmp_path / "after.db"), study="after")
