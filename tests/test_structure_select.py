"""select_transform: the unchosen optimisers' derivatives never reach the hypergradient.

A masked unit (here a hidden unit multiplied by a constant 0) has gradients of exactly 0, where
adam's second moment is 0 and its square root has an infinite derivative. A hyperparameter read by
an unchosen adam (its b2) then got 0 * inf = NaN from adam's backward pass, and `tune` skipped every
step. float64 throughout (conftest). The choices: sgd, adam (NaN when chosen, optax's own
arithmetic) and adam with eps_root (finite); with sgd chosen the exact d/d b2 is 0, and every
hypergradient equals that of the chosen optimiser alone.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

T = 5
MASK = jnp.asarray([1.0, 1.0, 0.0, 1.0])  # hidden unit 2 is masked: its weights get gradients of exactly 0
HPARAMS = {"lr": jnp.asarray(0.1), "b2": jnp.asarray(0.99), "weight_decay": jnp.asarray(0.03)}


def masked_problem():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=12)
    x_val, y_val = rng.normal(size=(9, 3)), rng.normal(size=9)

    def predict(p, x):
        return (jnp.tanh(x @ p["w1"] + p["b"]) * MASK) @ p["v"]

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (3, 4)), "b": jnp.zeros(4), "v": 0.5 * jax.random.normal(k2, (4,))}

    def train_loss(p, h, batch):
        return jnp.mean((predict(p, batch[0]) - batch[1]) ** 2) + 0.5 * h["weight_decay"] * jnp.sum(p["w1"] ** 2)

    return hg.Problem(init=init, train_loss=train_loss, val_loss=lambda p, b: jnp.mean((predict(p, b[0]) - b[1]) ** 2),
                      train_data=(x, y), val_data=(x_val, y_val), batch_size=5)


def sgd(h):
    return optax.sgd(h["lr"], momentum=0.5)


def adam(h):  # infinite derivative at a zero second moment: NaN whenever it is chosen (optax's own)
    return optax.adam(h["lr"], b2=h["b2"])


def rooted_adam(h):  # eps_root: differentiable at the masked unit's zero second moment
    return optax.adam(h["lr"], b2=h["b2"], eps_root=1e-16)


def selecting(h):
    return hg.select_transform(h["opt"], (sgd(h), adam(h), rooted_adam(h)))


@pytest.fixture(scope="module")
def problem():
    return masked_problem()


def alone(problem, optimizer):
    """value and hypergradient of the chosen optimiser on its own."""
    return hg.hypergradient(hg.Objective(problem, optimizer, num_steps=T), HPARAMS, jax.random.key(0))


def assert_equals_alone(value, grads, expected_value, expected_grads):
    assert value == expected_value  # forward values bitwise unchanged by the selection
    for name in HPARAMS:
        assert np.isfinite(grads[name]), name
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-12, atol=0, err_msg=name)


@pytest.mark.parametrize("method", [hg.Reverse(), hg.Reverse(store="states"), hg.Forward()], ids=repr)
def test_a_concrete_choice_differentiates_only_the_chosen_optimiser(problem, method):
    """with_fixed of a constant (a concrete index at trace time): Reverse gave d/d b2 = NaN."""
    objective = hg.Objective(problem, selecting, num_steps=T).with_fixed({"opt": jnp.asarray(0, jnp.int32)})
    value, grads = hg.hypergradient(objective, HPARAMS, jax.random.key(0), method=method)
    assert grads["b2"] == 0.0
    assert_equals_alone(value, grads, *alone(problem, sgd))


def test_a_traced_choice_differentiates_only_the_chosen_optimiser(problem):
    """The index traced under jit (not batched): only the chosen branch runs, forward and back."""
    objective = hg.Objective(problem, selecting, num_steps=T)
    for index, optimizer in ((0, sgd), (2, rooted_adam)):
        value, grads = jax.jit(lambda i: hg.hypergradient(objective.with_fixed({"opt": i}), HPARAMS,
                                                          jax.random.key(0)))(jnp.asarray(index, jnp.int32))
        assert_equals_alone(value, grads, *alone(problem, optimizer))
        if index == 0:
            assert grads["b2"] == 0.0


def test_a_batched_choice_differentiates_only_the_chosen_optimiser(problem):
    """Rows of one vmapped call (a hybrid search's configurations): every branch runs, and the
    unchosen ones' partials, those of the hyperparameters they close over included, are selected
    away rather than multiplied by 0 and summed. Both orders: vmap of the hypergradient (as hybrid
    search runs it) and the gradient of a sum over vmapped rows. Values may differ from the chosen
    optimiser's alone in the last bit (XLA fuses the selection differently)."""
    objective = hg.Objective(problem, selecting, num_steps=T)
    rows = jnp.asarray([0, 2], jnp.int32)
    values, grads = jax.jit(jax.vmap(lambda i: hg.hypergradient(objective.with_fixed({"opt": i}), HPARAMS,
                                                                jax.random.key(0))))(rows)
    expected = [alone(problem, optimizer) for optimizer in (sgd, rooted_adam)]
    for row, (expected_value, expected_grads) in enumerate(expected):
        np.testing.assert_allclose(values[row], expected_value, rtol=1e-14)
        for name in HPARAMS:
            np.testing.assert_allclose(grads[name][row], expected_grads[name], rtol=1e-12, atol=0, err_msg=name)
    assert grads["b2"][0] == 0.0

    def total(h):
        return jnp.sum(jax.vmap(lambda i: objective.with_fixed({"opt": i})(h, jax.random.key(0)))(rows))

    summed = jax.jit(jax.grad(total))(HPARAMS)
    for name in HPARAMS:
        np.testing.assert_allclose(summed[name], expected[0][1][name] + expected[1][1][name], rtol=1e-12,
                                   err_msg=name)


def test_tune_steps_with_the_unchosen_optimisers_hyperparameter(problem):
    """The consequence: tune skipped every step (a NaN hypergradient) and never moved."""
    objective = hg.Objective(problem, selecting, num_steps=T).with_fixed({"opt": jnp.asarray(0, jnp.int32)})
    space = hg.Space({"lr": hg.LogUniform(0.01, 1.0), "b2": hg.Uniform(0.9, 0.999),
                      "weight_decay": hg.LogUniform(1e-3, 1e-1)})
    result = hg.tune(objective, space, jax.random.key(0), steps=2)
    assert [t.state for t in result.trials] == ["complete"] * 3
    assert result.trials[1].hparams["lr"] != result.trials[0].hparams["lr"]


def test_a_concrete_index_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"select_transform\(index=2\) .* 2 transformations"):
        hg.select_transform(2, (optax.sgd(0.1), optax.adam(0.1)))
