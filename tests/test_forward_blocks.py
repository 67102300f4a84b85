"""Forward(blocks=) on a per-group schedule, shape (groups, T) (`hypergrad.problems.group_sgd`):
the blocks share the step axis, the one whose length is the objective's num_steps, wherever it is.

Before, blocks always split the leading axis: a (2, T) schedule was split into its 2 groups, so
blocks=10 shared nothing (the exact per-step gradient at 2T JVPs), and past max_directions the
refusal asked for `Forward(blocks=10)` although blocks=10 was given. Checked in float64 against
Reverse (block sums over the steps equal) and a central finite difference along a block-constant
perturbation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad.methods.forward import Forward
from _helpers import sgd_schedule  # noqa: E402

T = 10  # blocks of 4, 3, 3 steps under Forward(blocks=3)
LENGTHS = [4, 3, 3]


def group_objective(problem, steps):
    groups = hg.problems.layer_groups(problem.init(jax.random.key(0)))
    assert len(groups) == 2
    return hg.Objective(problem, hg.problems.group_sgd(groups), num_steps=steps)


def step_block_sums(x):
    return np.add.reduceat(np.asarray(x), np.cumsum([0, *LENGTHS[:-1]]), axis=-1)


def test_forward_blocks_share_the_steps_of_a_per_group_schedule(mlp_problem, key):
    objective = group_objective(mlp_problem, T)
    hparams = {"lr": jnp.stack([jnp.linspace(0.3, 0.1, T), jnp.linspace(0.5, 0.2, T)]),
               "momentum": jnp.asarray(0.6)}
    value, grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    value_b, grads_b = hg.hypergradient(objective, hparams, key, method=Forward(blocks=3))
    np.testing.assert_allclose(value_b, value, rtol=1e-12)
    np.testing.assert_allclose(grads_b["momentum"], grads["momentum"], rtol=1e-10)  # scalar: exact
    g, gb = np.asarray(grads["lr"]), np.asarray(grads_b["lr"])
    assert gb.shape == g.shape == (2, T) and gb.dtype == g.dtype
    # one direction per group and block of steps: the block sums along the steps are exact ...
    np.testing.assert_allclose(step_block_sums(gb), step_block_sums(g), rtol=1e-10)
    # ... and every step holds its block's mean of the exact gradient, per group
    np.testing.assert_allclose(gb, np.repeat(step_block_sums(g) / np.asarray(LENGTHS), LENGTHS, axis=-1),
                               rtol=1e-10)
    assert not np.allclose(gb, g, rtol=1e-3), "sharing changed nothing: the blocks split the groups"
    # a block-constant perturbation of the schedule: its directional derivative is exact
    direction = np.repeat(np.asarray([[1.0, -2.0, 0.5], [-1.0, 0.3, 2.0]]), LENGTHS, axis=-1)
    eps = 1e-5

    def moved(sign):
        return objective({**hparams, "lr": hparams["lr"] + sign * eps * direction}, key)

    finite_difference = (moved(1) - moved(-1)) / (2 * eps)
    np.testing.assert_allclose(np.sum(gb * direction), finite_difference, rtol=1e-6)


def test_forward_blocks_on_a_long_per_group_schedule_are_accepted_and_counted_per_block(mlp_problem):
    """At T=200, (2, 200) in 10 blocks of steps is 20 directions, far below max_directions."""
    objective = group_objective(mlp_problem, 200)
    hparams = {"lr": jnp.full((2, 200), 0.05)}
    Forward(blocks=10).check(objective, hparams)
    with pytest.raises(ValueError, match=r"Forward needs 20 JVPs \(one per hyperparameter direction; "
                                         r"lr: 20 \(10 blocks along axis 1 of shape \(2, 200\)\)\), more than "
                                         r"max_directions=19"):
        Forward(blocks=10, max_directions=19).check(objective, hparams)


def test_forward_refusal_never_asks_for_the_blocks_already_given(mlp_problem, key):
    objective = group_objective(mlp_problem, 300)
    hparams = {"lr": jnp.full((2, 300), 0.05), "momentum": jnp.asarray(0.9)}
    match = (r"Forward needs 401 JVPs \(one per hyperparameter direction; lr: 400 \(200 blocks along axis 1 "
             r"of shape \(2, 300\)\), momentum: 1\), more than max_directions=256: each costs one to two "
             r"training runs. Use fewer blocks than blocks=200, raise max_directions, or use hg.Reverse\(\)")
    with pytest.raises(ValueError, match=match) as refusal:
        hg.hypergradient(objective, hparams, key, method=Forward(blocks=200))
    assert "Set blocks=" not in str(refusal.value)
    with pytest.raises(ValueError, match=r"lr: 600, momentum: 1\), more .*Set blocks= to share schedules"):
        Forward().check(objective, hparams)  # no blocks given: the advice to set them stays


def test_forward_refusal_names_the_shaped_hyperparameters_left_out_of_share(ridge_problem):
    """A per-step schedule left out of share= is what costs the directions: the refusal says so."""
    steps = 300
    objective = hg.Objective(ridge_problem, sgd_schedule, num_steps=steps)
    hparams = {"lr": jnp.full(steps, 0.1), "weight_decay": jnp.full(ridge_problem.train_data[0].shape[1], 0.01)}
    match = (r"Forward needs 302 JVPs \(one per hyperparameter direction; lr: 300, weight_decay: 2 \(2 blocks "
             r"along axis 0 of shape \(5,\)\)\), more than max_directions=256: each costs one to two training "
             r"runs. Use fewer blocks than blocks=2, share \['lr'\] too \(share=None shares every shaped "
             r"hyperparameter\), raise max_directions, or use hg.Reverse\(\)")
    with pytest.raises(ValueError, match=match) as refusal:
        Forward(blocks=2, share="weight_decay").check(objective, hparams)
    assert "Set blocks=" not in str(refusal.value)
    Forward(blocks=2).check(objective, hparams)  # both shared: 2 + 2 directions
