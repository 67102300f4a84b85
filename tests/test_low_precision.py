"""Low-precision (bfloat16) hyperparameters and parameters: ES/PES and Implicit.

bfloat16 keeps 8 significant bits: its spacing is 2^-7 of a value's power of two, so a relative
step below about 2^-9 rounds back to the value. ES and PES perturb bfloat16 hyperparameters in
float32 (an exact cast), so their estimate is the float32 one on the same noise, rounded once to
bfloat16 at the end: within 2^-8 relative. Implicit solves its linear system in float32 at the
bfloat16 parameters (cast up exactly); training itself ends at bfloat16-rounded parameters, so the
answer is compared with the float32 problem's within 5% (see the test).
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg

BF16_REL = 2.0 ** -8  # one rounding to bfloat16 (8-bit significand), relative


def _regression(dtype, num_features=6, num_examples=24):
    """Full-batch ridge regression whose parameters and data are `dtype`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * num_examples, num_features)) * np.linspace(0.3, 1.5, num_features)
    y = x @ rng.normal(size=num_features) + 0.3 * rng.normal(size=2 * num_examples)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    train, val = (x[:num_examples], y[:num_examples]), (x[num_examples:], y[num_examples:])

    def mse(w, batch):
        return jnp.mean((batch[0] @ w - batch[1]) ** 2)

    def train_loss(w, hp, batch):
        return mse(w, batch) + hp["weight_decay"] * jnp.sum(w ** 2)

    return hg.Problem(init=lambda key: jnp.zeros(num_features, dtype), train_loss=train_loss,
                      val_loss=mse, train_data=train, val_data=val, name=f"ridge-{jnp.dtype(dtype).name}")


def _sgd(hp):
    return optax.sgd(hp["lr"], momentum=hp["momentum"])


def _hparams(dtype):  # values exact in bfloat16, so both dtypes perturb the same point
    return {"lr": jnp.asarray(0.25, dtype), "momentum": jnp.asarray(0.5, dtype),
            "weight_decay": jnp.asarray(2.0 ** -10, dtype)}


@pytest.mark.parametrize("method", [hg.ES(sigma=1e-3, num_samples=4),
                                    hg.ES(sigma=1e-3, num_samples=4, antithetic=False),
                                    hg.PES(sigma=1e-3, num_samples=4, window=3)],
                         ids=["es", "es-one-sided", "pes"])
def test_es_with_bfloat16_hparams_is_the_float32_estimate(method):
    """Old code: the step sigma * h rounded back to h in bfloat16, L+ == L-, and the estimate was 0
    (or rounding noise) divided by the intended step: near-zero grads, no warning."""
    objective = hg.Objective(_regression(jnp.float32), _sgd, num_steps=6)
    key = jax.random.key(0)
    _, want = hg.hypergradient(objective, _hparams(jnp.float32), key, method=method)
    _, got = hg.hypergradient(objective, _hparams(jnp.bfloat16), key, method=method)
    for name, value in got.items():
        assert value.dtype == jnp.bfloat16, name
        np.testing.assert_allclose(np.float32(value), np.float32(want[name]), rtol=BF16_REL, err_msg=name)
        assert abs(float(want[name])) > 1e-3, name  # a real signal, not two zeros agreeing


@pytest.mark.parametrize("solver", ["cg", "neumann"])
def test_implicit_with_bfloat16_params_solves_in_float32(solver):
    """Old code: the solve ran in bfloat16; on this ill-conditioned system (32 weights, 24 examples,
    a weight decay of 2^-10) CG returned -58.3 against float32's 38.2 (the wrong sign) and Neumann
    38.0 against 32.9. Training itself ends at bfloat16-rounded weights, which moves the answer of
    an exact solve too (here by under 1%); 5% leaves room for that and none for the old errors."""
    key = jax.random.key(0)
    fixed = {"lr": 0.1, "momentum": 0.5}
    h = {"weight_decay": jnp.asarray(2.0 ** -10, jnp.float32)}
    method = hg.Implicit(solver=solver)
    answers = []
    for dtype in (jnp.float32, jnp.bfloat16):
        problem = _regression(dtype, num_features=32, num_examples=24)
        objective = hg.Objective(problem, _sgd, num_steps=10).with_fixed(fixed)
        answers.append(float(hg.hypergradient(objective, h, key, method=method)[1]["weight_decay"]))
    want, got = answers
    assert np.isfinite(got) and abs(got - want) <= 0.05 * abs(want), (got, want)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
def test_reversible_refuses_parameters_narrower_than_float32(dtype):
    """Old code: Reversible kept the parameters in int64 fixed point and cast them to bfloat16 only
    for the gradients, so it trained almost as float32 does, while the objective's bfloat16 training
    rounds every step (the iris MLP at lr 0.002: value 1.3611 against objective(h)'s 1.3742), and
    its witness, in float64, never noticed: another run's value and hypergradient, no warning."""
    objective = hg.Objective(_regression(dtype), _sgd, num_steps=4)
    h = _hparams(jnp.float32)
    with pytest.raises(ValueError, match=rf"{jnp.dtype(dtype).name}, narrower than float32.*hg\.Reverse\(\)"):
        hg.hypergradient(objective, h, jax.random.key(0), method=hg.Reversible())
    value, _ = hg.hypergradient(objective, h, jax.random.key(0), method=hg.Reverse())  # the fix it names works
    assert np.isfinite(float(value))


def _with_a_dead_feature(dtype):
    """Least squares whose third feature is always 0: its weight's gradient, so Adam's second
    moment there, is exactly 0 at every step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3))
    x[:, 2] = 0.0
    y = x @ np.array([1.0, -0.5, 0.0]) + 0.1 * rng.normal(size=16)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)

    def mse(w, batch):
        return jnp.mean((batch[0] @ w - batch[1]) ** 2)

    return hg.Problem(init=lambda key: jnp.zeros(3, dtype), train_loss=lambda w, hp, batch: mse(w, batch),
                      val_loss=mse, train_data=(x[:8], y[:8]), val_data=(x[8:], y[8:]))


def _rooted_adam(hp):  # eps=1e-3: representable in float16, so the training itself stays finite
    return optax.adam(hp["lr"], eps=1e-3, eps_root=1e-16)


SKIP_WARNING = "an outer step's validation loss was finite but its hypergradient was not"


def test_tune_skip_warning_tells_float16_that_eps_root_is_no_fix():
    """eps_root=1e-16, the warning's fix for a NaN hypergradient through Adam, works for float32
    parameters but is 0 in float16 (optax keeps Adam's second moment in the parameters' dtype):
    the step is skipped again. Old code: the warning recommended eps_root alone."""
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})
    for dtype, skipped in ((jnp.float32, False), (jnp.float16, True)):
        objective = hg.Objective(_with_a_dead_feature(dtype), _rooted_adam, num_steps=3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = hg.tune(objective, space, jax.random.key(0), steps=1)
        assert (result.trials[0].state == "skipped") == skipped, (dtype, result.trials[0].state)
        why = [str(w.message) for w in caught if str(w.message).startswith(SKIP_WARNING)]
        assert len(why) == skipped, why
    assert re.search(r"eps_root=1e-16\), but not with float16 parameters.*bfloat16.*or float32", why[0]), why[0]
