"""Structural and discrete choices (struct hunt, session 38): an objective that changes a value it reads
during the call (a build counter) is warned of at once, naming the value; `extends=` refusing such a
Result names it too; a Choice read as a per-step schedule is refused naming the hyperparameter; and
random_search records hyperparameters in the space's order, as the other searches do."""

import jax
import optax
import pytest

import hypergrad as hg


def test_a_choice_read_as_a_per_step_schedule_is_refused_naming_it():
    objective = hg.Objective(hg.problems.ridge(num_examples=16, num_features=3, seed=0),
                             lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=3)
    with pytest.raises(ValueError, match=r"hparams\['lr'\] is a scalar.*hg\.Choice is always a scalar") as err:
        hg.random_search(objective, hg.Space({"lr": hg.Choice([0.1, 0.01])}), jax.random.key(0), num_trials=2)
    assert "shape=(num_steps,)" in str(err.value) and isinstance(err.value.__cause__, IndexError)
