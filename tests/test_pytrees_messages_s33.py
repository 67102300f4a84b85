"""Refusals for parameter pytrees that name the cause and the fix (hunt PYTREES, session 33).

Float32 parameters under float64 hyperparameters with a tuned `optax.clip_by_global_norm(h['clip'])`
failed in every strategy with optax's bare "lax.select requires arguments to have the same dtypes,
got float64, float32"; it is now a ValueError naming `Objective(optimizer=...)` and the cast that
fixes it, raised while traced. Reversible's refusal of an integer or boolean parameter leaf names the
fix (hg.Reverse()); Implicit, which refused such a leaf too, now holds it constant as training does
(tests/test_methods_implicit.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

CLIP_REFUSAL = (r"Objective\(optimizer=\.\.\.\): optax's clip_by_global_norm .* the parameters are float32 while "
                r"the hyperparameters are float64.* combines hparams\['clip'\] .*"
                r"optax\.clip_by_global_norm\(h\['clip'\]\.astype\(jnp\.float32\)\), or make the parameters float64")


def float32_regression():
    """Full-batch least squares in float32 (float64 mode): 40 examples of 3 features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    Y = (X @ np.ones(3)).astype(np.float32)

    def mse(p, batch):
        return jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2)

    problem = hg.Problem(init=lambda k: {"w": jnp.zeros(3, jnp.float32)}, train_loss=lambda p, h, b: mse(p, b),
                         val_loss=mse, train_data=(X, Y), val_data=(X, Y))
    return problem, X, Y


def test_a_tuned_global_norm_clip_on_float32_params_is_refused_while_traced_with_the_cast():
    problem, _, _ = float32_regression()
    objective = hg.Objective(problem, lambda h: optax.chain(optax.clip_by_global_norm(h["clip"]), optax.sgd(h["lr"])),
                             num_steps=3)
    h, key = {"clip": 0.5, "lr": 0.1}, jax.random.key(0)
    with pytest.raises(ValueError, match=CLIP_REFUSAL) as info:  # traced only: nothing compiles
        jax.eval_shape(lambda: objective(h, key))
    assert isinstance(info.value.__cause__, TypeError)  # optax's own error is chained
    with pytest.raises(ValueError, match=CLIP_REFUSAL):
        objective(h, key)
    space = hg.Space({"clip": hg.LogUniform(0.1, 1.0), "lr": hg.LogUniform(0.01, 0.3)})
    with pytest.raises(ValueError, match=CLIP_REFUSAL):
        hg.random_search(objective, space, key, num_trials=2)


def test_the_suggested_cast_runs_and_trains_as_python_floats_do():
    problem, X, Y = float32_regression()

    def optimizer(h):
        return optax.chain(optax.clip_by_global_norm(h["clip"].astype(jnp.float32)), optax.sgd(h["lr"]))

    objective = hg.Objective(problem, optimizer, num_steps=3)
    h, key = {"clip": 0.5, "lr": 0.1}, jax.random.key(0)
    # the same training by hand with Python floats (weakly typed: it runs in float32)
    opt = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1))
    p = {"w": jnp.zeros(3, jnp.float32)}
    s = opt.init(p)
    for _ in range(3):
        g = jax.grad(lambda p: jnp.mean((X @ p["w"] - Y) ** 2))(p)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(objective(h, key), jnp.mean((X @ p["w"] - Y) ** 2), rtol=1e-5)
    _, grads = hg.hypergradient(objective, h, key)
    assert all(np.isfinite(v) for v in grads.values())
    space = hg.Space({"clip": hg.LogUniform(0.1, 1.0), "lr": hg.LogUniform(0.01, 0.3)})
    assert np.isfinite(hg.random_search(objective, space, key, num_trials=2).best_value)


def test_a_dtype_mismatch_in_the_users_own_optimiser_keeps_jax_s_words():
    """Only optax's own select is reworded: the same TypeError from the user's transform stays as raised
    (JAX's message points at the user's line)."""
    problem, _, _ = float32_regression()

    def mine(h):
        def update(updates, state, params=None):
            return jax.tree.map(lambda t: jax.lax.select(t > 0, t, t * h["clip"]), updates), state
        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    objective = hg.Objective(problem, mine, num_steps=2)
    with pytest.raises(TypeError, match="lax.select requires arguments to have the same dtypes") as info:
        objective({"clip": 0.5}, jax.random.key(0))
    assert not isinstance(info.value, ValueError)


def constant_leaf_objective(leaf, optimizer):
    """Linear regression whose params hold a float weight beside `leaf` (a scale, held constant)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = x @ np.array([1.0, -2.0, 0.5])

    def mse(params, batch):
        return jnp.mean((batch[0] @ (params["w"] * params["scale"]) - batch[1]) ** 2)

    problem = hg.Problem(init=lambda k: {"w": jnp.zeros(3), "scale": leaf},
                         train_loss=lambda p, h, b: mse(p, b) + h["weight_decay"] * jnp.sum(p["w"] ** 2),
                         val_loss=mse, train_data=(x[:20], y[:20]), val_data=(x[20:], y[20:]))
    return hg.Objective(problem, optimizer, num_steps=5)


LEAVES = [jnp.asarray(2, jnp.int32), jnp.asarray([True, False, True])]


@pytest.mark.parametrize("leaf", LEAVES, ids=["int32", "bool"])
def test_reversible_names_the_fix_for_an_integer_or_boolean_leaf(leaf):
    objective = constant_leaf_objective(leaf, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]))
    h = {"weight_decay": jnp.asarray(0.1), "lr": jnp.asarray(0.05), "momentum": jnp.asarray(0.5)}
    with pytest.raises(ValueError, match=r"""Reversible: the parameter at "\['scale'\]" \(Problem\(init=\.\.\.\)\) """
                                         rf"has dtype {leaf.dtype}; .* Use method=hg\.Reverse\(\)"):
        jax.eval_shape(lambda h: hg.hypergradient(objective, h, jax.random.key(0), method=hg.Reversible()), h)
