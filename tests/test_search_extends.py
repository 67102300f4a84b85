"""Random search continued (`extends=`) and families of grouped choices only.

Checks that a family whose every choice is grouped runs in any chunk size.
"""

import jax

jax.config.update("jax_enable_x64", True)


import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402

STEPS = 5


@pytest.fixture(scope="module")
def ridge():
    return hg.problems.ridge(num_examples=40, num_features=3, seed=0)


def test_a_family_of_grouped_choices_only_runs_in_any_chunk_size(ridge):
    # every group's settings were empty: vmap had nothing to map ("vmap must have at least one
    # non-None value"), and the program's cache key (shapes of no leaves) gave the one-row program
    # of chunk_size=1 to a chunk of 2 (IndexError)
    space = hg.Space({"opt": hg.Choice(["sgd", "adam"], structural=True)})
    family = hg.Structured(lambda c: hg.Objective(
        ridge, (lambda h: optax.sgd(0.05)) if c["opt"] == "sgd" else (lambda h: optax.adam(0.05)), num_steps=STEPS))
    key = jax.random.key(0)
    runs = [hg.random_search(family, space, key, num_trials=4, chunk_size=size) for size in (1, 2, None, 3)]
    assert [r.info["chunk_size"] for r in runs] == [1, 2, 2, 2]
    drawn = [t.hparams["opt"] for t in runs[0].trials]
    assert set(drawn) == {"sgd", "adam"}
    alone = {opt: float(family.objective({"opt": opt})({}, key)) for opt in ("sgd", "adam")}
    for result in runs:
        assert [t.hparams["opt"] for t in result.trials] == drawn
        np.testing.assert_allclose([t.value for t in result.trials], [alone[opt] for opt in drawn], rtol=1e-12)
