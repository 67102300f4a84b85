"""Follow-ups of session 39's space hunt: the shaped-hyperparameter message from the searches (finding 4),
and the out-of-bounds advice for a block schedule (finding 3)."""

import jax.numpy as jnp
import optax
import pytest

import hypergrad as hg

from test_messages_s39 import SHAPED, objective  # noqa: F401 - the fixture, shared


def test_the_searches_name_a_shaped_hyperparameter_read_as_a_scalar(objective, key):
    """random_search and grid_search trace the optimiser first in their schedule check, which did not
    pass its hyperparameters on: they showed JAX's bare "mul got incompatible shapes" where tune named
    'lr' and its shape; so did a direct call of the objective (its check traces the objective first).
    They now name it too, JAX's error chained. Nothing is compiled."""
    for run in (lambda: objective({"lr": jnp.full(7, 0.1), "momentum": 0.5}, key),
                lambda: hg.random_search(objective, SHAPED, key, num_trials=2),
                lambda: hg.grid_search(objective, SHAPED, key, points_per_axis=1)):
        with pytest.raises(TypeError, match=r"non-scalar hyperparameters \('lr' of shape \(7,\)\)") as caught:
            run()
        assert "got incompatible shapes for broadcasting" in str(caught.value)
        assert isinstance(caught.value.__cause__, TypeError)


def test_a_block_schedule_past_its_end_is_not_told_to_take_num_steps_entries(logistic_problem, key):
    """h['lr'][step // 4] with 2 entries and 12 steps reads index 2 at step 8: the message said it "is read
    along axis 0 once per step" and prescribed 12 entries (9 of them never read). It now names the index
    reached and the array's length and says the array is read less often than once per step; a per-step
    schedule keeps the per-step advice."""
    block = hg.Objective(logistic_problem, lambda h: optax.sgd(lambda step: h["lr"][step // 4]), num_steps=12)
    with pytest.raises(ValueError, match=r"past its end within num_steps=12") as caught:
        hg.random_search(block, hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(2,))}), key, num_trials=2)
    message = str(caught.value)
    assert "index 2 was read along axis 0, which has 2 entries, but not within the first 3 training steps" in message
    assert "less often than once per step" in message and "once per step: give it" not in message
    per_step = hg.Objective(logistic_problem, lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=12)
    with pytest.raises(ValueError, match=r"is read along axis 0 once per step: give it num_steps=12 entries there"):
        hg.random_search(per_step, hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(2,))}), key, num_trials=2)
