"""ES and PES draw fresh noise at every outer step of `tune`, `hybrid_search` (and so
`HypergradSearchCV`), while the training key stays fixed (`hypergrad.outer.step_noise_key`).

With the noise of the first step reused at every step, ES with n samples gave estimates that all
lay in the span of the same n directions: the tuner descended a fixed random projection of the
gradient. The checks: the step estimates of a tune span more than n directions; each step's
estimate is the method's on `step_noise_key` (the first one `hg.hypergradient`'s with the same key);
still one compiled program for any number of steps; a population's tuners equal lone tunes; a
hybrid configuration steps with the same noise; a method that draws no noise keeps the interface
`differentiate(loop, hparams, key)`. float64 throughout (tests/conftest.py).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.base import Method, perturbation_key
from hypergrad.outer import step_noise_key

T = 10
LR = 0.5
OUTER = optax.sgd(LR)
ES = hg.ES(sigma=0.05, num_samples=2, relative=False)
SPACE = hg.Space({"lr": hg.Uniform(0.01, 0.5),
                  "weight_decay": hg.Uniform(0.0, 1.0, shape=(4,), independent=True)})


def sgd(h):
    return optax.sgd(h["lr"])


@pytest.fixture(scope="module")
def objective():
    return hg.Objective(hg.problems.ridge(num_examples=60, num_features=4), sgd, num_steps=T)


def tuned(space, trial):
    """The trial's values of the space's hyperparameters (a hybrid trial also holds its choices)."""
    return {name: trial.hparams[name] for name in space.names}


def z_of(space, trial):
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(space.unconstrain(tuned(space, trial)))])


def estimate_z(objective, space, trial, key, method, noise_key):
    """The method's estimate at the trial's hyperparameters pulled back to z: what the step applied."""
    hparams, pullback = jax.vjp(space.constrain, space.unconstrain(tuned(space, trial)))
    _, grads = method.value_and_grad(objective, hparams, key, objective.problem.data, noise_key=noise_key)
    (grad_z,) = pullback(grads)
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(grad_z)])


def test_the_step_estimates_of_an_es_tune_span_more_than_num_samples_directions(objective):
    """11 steps of ES with 2 samples over 5 hyperparameters: in the hyperparameters' own
    coordinates each estimate lies in the span of its step's 2 noise draws; with the same draws at
    every step all 11 lay in one plane (third singular value 0)."""
    result = hg.tune(objective, SPACE, jax.random.key(0), method=ES, outer=OUTER, steps=12)
    z = np.stack([z_of(SPACE, t) for t in result.trials[:-1]])
    s = jax.nn.sigmoid(z)
    dh_dz = np.concatenate([[0.49], np.ones(4)]) * s * (1 - s)  # Uniform: h = lo + (hi - lo) sigmoid(z)
    grad_h = -np.diff(z, axis=0) / LR / dh_dz[:-1]
    singular = np.linalg.svd(grad_h / np.linalg.norm(grad_h, axis=1, keepdims=True), compute_uv=False)
    assert singular[2] > 0.2 * singular[0], singular
    assert all(t.state == "complete" for t in result.trials)


@pytest.mark.parametrize("method", [ES, hg.PES(sigma=0.05, num_samples=2, window=4, relative=False)],
                         ids=["es", "pes"])
def test_each_step_draws_its_noise_from_step_noise_key_and_the_first_is_hypergradients(objective, method):
    key = jax.random.key(1)
    result = hg.tune(objective, SPACE, key, method=method, outer=OUTER, steps=3)
    first, later = result.trials[0], result.trials[1:3]
    # the first step is hg.hypergradient with the call's key, and its update is that estimate's
    hparams, pullback = jax.vjp(SPACE.constrain, SPACE.unconstrain(first.hparams))
    value, grads = hg.hypergradient(objective, hparams, key, method=method)
    (grad_z,) = pullback(grads)
    np.testing.assert_allclose(first.value, value, rtol=1e-12)
    np.testing.assert_allclose(first.grad_norm, optax.tree_utils.tree_norm(grad_z), rtol=1e-10)
    moved = z_of(SPACE, result.trials[1]) - z_of(SPACE, first)
    np.testing.assert_allclose(moved, -LR * np.concatenate([np.ravel(a) for a in jax.tree.leaves(grad_z)]),
                               rtol=1e-9, atol=1e-12)
    for step, trial in enumerate(later, start=1):
        fresh = estimate_z(objective, SPACE, trial, key, method, step_noise_key(key, step, False))
        reused = estimate_z(objective, SPACE, trial, key, method, perturbation_key(key))
        np.testing.assert_allclose(trial.grad_norm, np.linalg.norm(fresh), rtol=1e-10)
        np.testing.assert_allclose(z_of(SPACE, result.trials[step + 1]) - z_of(SPACE, trial), -LR * fresh,
                                   rtol=1e-9, atol=1e-12)
        assert not np.allclose(fresh, reused, rtol=1e-3)  # the first step's noise is not reused
        np.testing.assert_allclose(trial.value, objective(trial.hparams, key), rtol=1e-12)  # training key fixed


def test_step_noise_keys_differ_by_step_and_resampling_uses_the_steps_key():
    key = jax.random.key(2)
    data = [jax.random.key_data(step_noise_key(key, s, False)).tolist() for s in range(4)]
    assert len({str(d) for d in data}) == 4
    assert data[0] == jax.random.key_data(perturbation_key(key)).tolist()
    assert (jax.random.key_data(step_noise_key(key, 3, True)).tolist()
            == jax.random.key_data(perturbation_key(jax.random.fold_in(key, 3))).tolist())


def test_an_es_tune_compiles_one_program_for_any_number_of_steps(objective):
    fresh = hg.Objective(objective.problem, sgd, num_steps=T)  # a new objective: its own programs
    compilations, tunes = _compile.stats.compilations, _compile.stats.traces["tune"]
    hg.tune(fresh, SPACE, jax.random.key(0), method=ES, outer=OUTER, steps=2)
    assert _compile.stats.compilations - compilations == 1
    assert _compile.stats.traces["tune"] - tunes == 1
    again = hg.tune(fresh, SPACE, jax.random.key(3), method=ES, outer=OUTER, steps=5)
    assert _compile.stats.compilations - compilations == 1 and again.compile_seconds == 0.0
    assert len(again.trials) == 6


def test_each_tuner_of_an_es_population_equals_a_lone_es_tune_from_its_start(objective):
    key = jax.random.key(4)
    init = {"lr": jnp.asarray([0.1, 0.3, 0.2]), "weight_decay": jnp.asarray([[0.2, 0.4, 0.6, 0.8]] * 3)}
    population = hg.tune(objective, SPACE, key, method=ES, outer=OUTER, steps=3, population=3, init=init)
    for i in range(3):
        ours = [t for t in population.trials if t.tuner == i]
        alone = hg.tune(objective, SPACE, key, method=ES, outer=OUTER, steps=3,
                        init=jax.tree.map(lambda a, i=i: a[i], init))
        assert len(ours) == len(alone.trials) == 4
        np.testing.assert_allclose([t.value for t in ours], [t.value for t in alone.trials], rtol=1e-10)
        np.testing.assert_allclose([t.grad_norm for t in ours], [t.grad_norm for t in alone.trials], rtol=1e-10)
        for a, b in zip(ours, alone.trials):
            for name in SPACE.names:
                np.testing.assert_allclose(a.hparams[name], b.hparams[name], rtol=1e-10)
    one = hg.tune(objective, SPACE, key, method=ES, outer=OUTER, steps=3, population=1,
                  init=jax.tree.map(lambda a: a[:1], init))
    np.testing.assert_allclose([t.value for t in one.trials],
                               [t.value for t in population.trials if t.tuner == 0], rtol=1e-10)


def test_a_hybrid_configuration_draws_fresh_noise_at_every_step(objective):
    """hybrid_search (and HypergradSearchCV, which runs it) steps with the same noise keys as tune."""
    space = hg.Space({"lr": SPACE["lr"], "weight_decay": SPACE["weight_decay"], "momentum": hg.Choice([0.0, 0.5])})
    family = hg.Objective(objective.problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=T)
    key = jax.random.key(5)
    continuous = hg.Space({"lr": SPACE["lr"], "weight_decay": SPACE["weight_decay"]})
    step = hg.tune_step_cost(family.with_fixed({"momentum": 0.5}), continuous, key, method=ES)
    result = hg.hybrid_search(family, space, key, budget=2 * 4.5 * step, method=ES, outer=OUTER)
    assert result.info["steps"] == 3
    for momentum in (0.0, 0.5):
        ours = [t for t in result.trials if t.hparams["momentum"] == momentum]
        held = family.with_fixed({"momentum": momentum})
        trial = ours[2]  # step 2
        fresh = estimate_z(held, continuous, trial, key, ES, step_noise_key(key, 2, False))
        np.testing.assert_allclose(trial.grad_norm, np.linalg.norm(fresh), rtol=1e-10)
        alone = hg.tune(held, continuous, key, method=ES, outer=OUTER, steps=3)
        np.testing.assert_allclose([t.value for t in ours], [t.value for t in alone.trials], rtol=1e-9)


@dataclasses.dataclass(frozen=True)
class PlainReverse(Method):
    """A user's method written against the old interface: differentiate(loop, hparams, key)."""

    def differentiate(self, loop, hparams, key):
        return hg.Reverse().differentiate(loop, hparams, key)


def test_a_method_without_noise_keeps_its_interface_and_refuses_a_noise_key(objective):
    key = jax.random.key(6)
    ours = hg.tune(objective, SPACE, key, method=PlainReverse(), outer=OUTER, steps=2)
    reverse = hg.tune(objective, SPACE, key, method=hg.Reverse(), outer=OUTER, steps=2)
    np.testing.assert_allclose([t.value for t in ours.trials], [t.value for t in reverse.trials], rtol=1e-12)
    with pytest.raises(TypeError, match="noise_key=None"):
        hg.Reverse().value_and_grad(objective, SPACE.centre(), key, objective.problem.data, noise_key=key)
