"""ES and PES: zero-order hypergradients, unbiased for the smoothed loss, checked against Reverse.

Unbiasedness is a statement about the mean of many estimates. Each check draws K independent
estimates (keys) of n samples each, and requires, in float64 on a smooth (full-batch ridge)
problem with three scalar hyperparameters:

- every coordinate of their mean within 4 standard errors (from the spread of the K estimates)
  plus the O(sigma^2) smoothing bias (negligible at sigma = 0.01) of Reverse's exact gradient;
- the mean's error, in the natural relative coordinates D g (D = diag |h|), below 10% of |D g|;
- the cosine similarity of the mean with Reverse above 0.9 (it is about 0.999).

A wrong normalisation (a factor 2, a missing D^-1), a truncated PES (noise of the last window only)
or noise correlated with the training data fails at least one of these.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.es import ES, PES
from _helpers import scaled_ridge, sgd_scalar_momentum as sgd_momentum  # noqa: E402

T = 8
K = 16           # independent estimates (keys) per unbiasedness check
N = 256          # samples per estimate
SIGMA = 0.01


@pytest.fixture(scope="module")
def ridge_case(ridge_problem):
    """Momentum carries state across windows, so a PES that forgot earlier windows' noise is biased."""
    objective = hg.Objective(ridge_problem, sgd_momentum, num_steps=T)
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.05)}
    key = jax.random.key(0)
    value, exact = hg.hypergradient(objective, hparams, key)
    return objective, hparams, key, value, exact


@functools.lru_cache(maxsize=None)
def _vmapped(method, objective):
    """One compiled program per (method, objective): K estimates, one per key."""
    return jax.jit(jax.vmap(lambda h, k, d: method.value_and_grad(objective, h, k, d), in_axes=(None, 0, None)))


def estimates(method, objective, hparams, keys):
    (values, _), grads = _vmapped(method, objective)(hparams, keys, objective.problem.data)
    return values, grads


def flat(tree, names):
    return np.concatenate([np.ravel(np.asarray(tree[n])) for n in names])


@pytest.mark.parametrize("method", [
    ES(SIGMA, N),
    ES(SIGMA, N, antithetic=False),
    PES(SIGMA, N, window=3),          # windows of 3, 3 and 2 steps
    PES(SIGMA, N, window=1),          # every step its own window
], ids=["es", "es-baseline", "pes-3", "pes-1"])
def test_mean_of_estimates_is_unbiased_for_reverse(ridge_case, method):
    objective, hparams, key, value, exact = ridge_case
    keys = jax.random.split(jax.random.key(1), K)
    values, grads = estimates(method, objective, hparams, keys)
    np.testing.assert_allclose(values, value, rtol=1e-12)  # every key trains the same full-batch run
    names = sorted(hparams)
    samples = np.stack([flat({n: grads[n][i] for n in names}, names) for i in range(K)])
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(K)
    ref = flat(exact, names)
    scale = np.abs(flat(hparams, names))
    assert np.all(np.abs(mean - ref) <= 4 * stderr + 1e-3 * np.abs(ref)), (mean, ref, stderr)
    assert np.linalg.norm(scale * (mean - ref)) <= 0.1 * np.linalg.norm(scale * ref)
    cosine = mean @ ref / (np.linalg.norm(mean) * np.linalg.norm(ref))
    assert cosine > 0.9
    # The estimates are noisy but not degenerate: individual estimates differ.
    assert np.all(samples.std(axis=0) > 0)


def test_absolute_perturbations_are_unbiased_too(ridge_case):
    objective, hparams, key, value, exact = ridge_case
    keys = jax.random.split(jax.random.key(2), K)
    _, grads = estimates(ES(1e-3, N, relative=False), objective, hparams, keys)
    names = sorted(hparams)
    samples = np.stack([flat({n: grads[n][i] for n in names}, names) for i in range(K)])
    mean, ref = samples.mean(axis=0), flat(exact, names)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(K)
    assert np.all(np.abs(mean - ref) <= 4 * stderr + 1e-3 * np.abs(ref))
    assert mean @ ref / (np.linalg.norm(mean) * np.linalg.norm(ref)) > 0.9


@pytest.fixture(scope="module")
def shaped_hparams(ridge_case, ridge_problem):
    """The ridge case with a per-feature weight decay (d,)."""
    d = ridge_problem.train_data[0].shape[1]
    return dict(ridge_case[1], weight_decay=jnp.geomspace(1e-3, 1e-1, d))


@pytest.mark.parametrize("window,antithetic", [(T, True), (T + 5, True), (T, False)])
def test_pes_with_one_window_is_es_with_the_same_noise(ridge_case, shaped_hparams, window, antithetic):
    objective, _, key, _, _ = ridge_case
    hparams = shaped_hparams
    v_es, g_es = hg.hypergradient(objective, hparams, key, method=ES(SIGMA, 6, antithetic=antithetic))
    v_pes, g_pes = hg.hypergradient(objective, hparams, key, method=PES(SIGMA, 6, window=window,
                                                                          antithetic=antithetic))
    assert v_es == v_pes
    for name in hparams:
        assert np.all(np.asarray(g_es[name]) != 0)
        np.testing.assert_allclose(g_pes[name], g_es[name], rtol=1e-11, atol=0)


# -- a validation loss that reads the hyperparameters ------------------------------------------
@pytest.fixture(scope="module")
def model_reads_case(ridge_problem):
    """Ridge whose initial weights are init_scale times a fixed vector and whose validation loss
    scales the predictions by out_scale (model_reads_hparams=True): out_scale acts on the loss
    directly. The initialisation ignores the key, so every key trains the same full-batch run and
    estimates from different keys share one exact hypergradient."""
    problem = scaled_ridge(ridge_problem)
    objective = hg.Objective(problem, sgd_momentum, num_steps=T)
    hparams = {"lr": jnp.asarray(0.2), "momentum": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.05),
               "init_scale": jnp.asarray(0.5), "out_scale": jnp.asarray(0.6)}
    return objective, hparams, jax.random.key(0)


def central_differences(objective, hparams, key, eps=1e-6):
    f = jax.jit(objective)
    out = {}
    for name in hparams:
        up = f(dict(hparams, **{name: hparams[name] + eps}), key)
        down = f(dict(hparams, **{name: hparams[name] - eps}), key)
        out[name] = (up - down) / (2 * eps)
    return out


@pytest.mark.parametrize("window", [T, T + 5])
def test_pes_with_one_window_is_es_when_the_validation_loss_reads_the_hyperparameters(model_reads_case,
                                                                                        window):
    """Each particle is scored at its own perturbed hyperparameters, as ES scores each run; PES
    used to score every particle at the unperturbed h, so out_scale's estimate was noise about 0."""
    objective, hparams, key = model_reads_case
    _, g_es = hg.hypergradient(objective, hparams, key, method=ES(SIGMA, 6))
    _, g_pes = hg.hypergradient(objective, hparams, key, method=PES(SIGMA, 6, window=window))
    for name in hparams:
        assert np.all(np.asarray(g_es[name]) != 0)
        np.testing.assert_allclose(g_pes[name], g_es[name], rtol=1e-11, atol=0)


@pytest.mark.parametrize("window", [3, 2], ids=["remainder", "no-remainder"])
def test_pes_is_unbiased_when_the_validation_loss_reads_the_hyperparameters(model_reads_case, window):
    """The mean of K estimates against central finite differences in float64 (within 4 standard
    errors), over windows that end in a shorter remainder (8 = 3 + 3 + 2) and that do not."""
    objective, hparams, key = model_reads_case
    exact = central_differences(objective, hparams, key)
    keys = jax.random.split(jax.random.key(7), K)
    _, grads = estimates(PES(SIGMA, N, window=window), objective, hparams, keys)
    names = sorted(hparams)
    samples = np.stack([flat({n: grads[n][i] for n in names}, names) for i in range(K)])
    mean, ref = samples.mean(axis=0), flat(exact, names)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(K)
    assert np.all(np.abs(mean - ref) <= 4 * stderr + 1e-3 * np.abs(ref)), (mean, ref, stderr)
    i = names.index("out_scale")
    assert abs(ref[i]) > 10 * stderr[i]  # out_scale's check is not vacuous: 0 would fail it


def test_pes_uses_the_minibatches_of_each_window(logistic_minibatch_problem):
    """With sigma -> 0 and the unperturbed run as baseline, a particle must retrace that run: had
    PES replayed the wrong minibatches in a later window (a wrong start offset), L_T(+) - L(h)
    would be O(1) and the estimate O(1 / sigma) instead of close to Reverse."""
    objective = hg.Objective(logistic_minibatch_problem, sgd_momentum, num_steps=T)
    hparams = {"lr": jnp.asarray(0.4), "momentum": jnp.asarray(0.5), "weight_decay": jnp.asarray(0.05)}
    key = jax.random.key(4)
    reverse_value, exact = hg.hypergradient(objective, hparams, key)
    names = sorted(hparams)
    ref = flat(exact, names)
    method = PES(1e-7, 512, window=3, antithetic=False)
    value, grads = hg.hypergradient(objective, hparams, key, method=method)
    np.testing.assert_allclose(value, reverse_value, rtol=1e-13)  # the unperturbed run
    est = flat(grads, names)
    assert np.linalg.norm(est - ref) < 0.5 * np.linalg.norm(ref), (est, ref)


def test_estimates_are_replayable_and_do_not_depend_on_the_chunk(ridge_case, shaped_hparams):
    """Shaped hyperparameters (a per-feature decay); 6 samples in chunks of 4 leave a remainder.
    (The unchunked programs are those of the test above, compiled once.)"""
    objective, _, key, _, _ = ridge_case
    hparams = shaped_hparams
    values = []
    for whole, chunked in [(ES(SIGMA, 6), ES(SIGMA, 6, chunk=4)),
                           (PES(SIGMA, 6, window=T), PES(SIGMA, 6, window=T, chunk=4))]:
        value, grads = hg.hypergradient(objective, hparams, key, method=whole)
        values.append(value)
        again = hg.hypergradient(objective, hparams, key, method=whole)[1]
        in_chunks = hg.hypergradient(objective, hparams, key, method=chunked)[1]
        other_key = hg.hypergradient(objective, hparams, jax.random.key(6), method=whole)[1]
        for name in hparams:
            assert grads[name].shape == hparams[name].shape and grads[name].dtype == jnp.float64
            assert np.all(np.isfinite(np.asarray(grads[name])))
            np.testing.assert_array_equal(again[name], grads[name])
            np.testing.assert_allclose(in_chunks[name], grads[name], rtol=1e-10, atol=1e-14)
            assert not np.allclose(other_key[name], grads[name])
    assert values[0] == values[1]  # the same unperturbed run


def test_zero_hyperparameters_get_an_absolute_step(ridge_case):
    """D = 1 where h == 0: a zero momentum is still perturbed, with no 0/0, and its mean estimate
    agrees with Reverse."""
    objective, hparams, key, _, _ = ridge_case
    hparams = dict(hparams, momentum=jnp.zeros_like(hparams["momentum"]))
    _, exact = hg.hypergradient(objective, hparams, key)
    _, grads = estimates(ES(SIGMA, N), objective, hparams, jax.random.split(jax.random.key(3), K))
    momentum = np.asarray(grads["momentum"])
    assert np.all(np.isfinite(momentum)) and np.all(momentum != 0)
    stderr = momentum.std(ddof=1) / np.sqrt(K)
    assert abs(momentum.mean() - float(exact["momentum"])) <= 4 * stderr
    assert abs(float(exact["momentum"])) > 4 * stderr  # the check is not vacuous


def test_cost_accounting_counts_every_sample(ridge_case):
    """At least 2n + 1 training runs (noise draws add a little on a problem this small), and about
    the same chunked or not: the chunks' loop is counted times its length."""
    objective, hparams, key, _, _ = ridge_case
    space = hg.Space({"lr": hg.LogUniform(0.01, 1.0), "momentum": hg.Uniform(0.0, 0.9),
                      "weight_decay": hg.LogUniform(1e-3, 1.0)})
    es = hg.tune_step_cost(objective, space, key, method=ES(SIGMA, 4))
    es_chunked = hg.tune_step_cost(objective, space, key, method=ES(SIGMA, 4, chunk=2))
    assert 9 <= es <= 15
    # Chunked, what the samples share (the initialisation, the data key) is computed once per
    # chunk instead of once: a little more, never the chunked loop counted once.
    assert es <= es_chunked <= 1.02 * es
    pes = hg.tune_step_cost(objective, space, key, method=PES(SIGMA, 4, window=2))
    pes_chunked = hg.tune_step_cost(objective, space, key, method=PES(SIGMA, 4, window=2, chunk=2))
    assert 9 <= pes <= 15 and pes <= pes_chunked <= 1.02 * pes


# -- inside tune -----------------------------------------------------------------------------
def test_es_tune_lowers_the_validation_loss_of_the_digits_mlp():
    problem = hg.problems.mlp_classifier("digits", hidden=(16,), batch_size=64)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=30)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.95)})
    init = {"lr": 0.01, "momentum": 0.5}  # too small a step
    result = hg.tune(objective, space, jax.random.key(0), method=ES(0.05, 32), outer=optax.adam(0.2),
                     steps=5, init=init)
    start = result.trials[0]
    assert all(np.isfinite(t.value) for t in result.trials)
    assert result.best_trial.number > 0
    assert result.best_value < 0.9 * start.value
    assert result.trials[-1].hparams["lr"] > init["lr"]  # it learned to take longer steps


def test_pes_tune_lowers_the_validation_loss_on_ridge(ridge_case):
    """A smaller problem than the digits MLP: PES's program (a loop over windows of vmapped
    particles) takes longest to compile, and the tune accounting compiles it twice more."""
    objective, _, key, _, _ = ridge_case
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9),
                      "weight_decay": hg.LogUniform(1e-3, 1.0)})
    init = {"lr": 0.01, "momentum": 0.3, "weight_decay": 0.05}
    result = hg.tune(objective, space, key, method=PES(0.05, 16, window=3), outer=optax.adam(0.2),
                     steps=5, init=init)
    start = result.trials[0]
    assert all(np.isfinite(t.value) for t in result.trials)
    assert result.best_value < 0.9 * start.value
    assert result.trials[-1].hparams["lr"] > init["lr"]


# -- fields and errors -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"sigma": 0.0}, r"ES\(sigma=0.0\) must be a positive finite number"),
    ({"sigma": -1}, r"ES\(sigma=-1\) must be a positive finite number"),
    ({"sigma": float("nan")}, r"ES\(sigma=nan\) must be a positive finite number"),
    ({"sigma": "0.1"}, r"ES\(sigma='0.1'\) must be a positive finite number"),
    ({"num_samples": 0}, r"ES\(num_samples=0\) must be a positive int; the number of noise draws"),
    ({"num_samples": 2.0}, r"ES\(num_samples=2.0\) must be a positive int"),
    ({"antithetic": "yes"}, r"ES\(antithetic='yes'\) must be True or False"),
    ({"relative": None}, r"ES\(relative=None\) must be True or False"),
    ({"chunk": 0}, r"ES\(chunk=0\) must be a positive int or None"),
])
def test_es_refuses_bad_fields(kwargs, match):
    before = _compile.stats.compilations
    fields = {"sigma": 0.01, "num_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ES(**fields)
    assert _compile.stats.compilations == before


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, r"PES\(window=0\) must be a positive int; the number of training steps per window"),
    ({"window": None}, r"PES\(window=None\) must be a positive int"),
    ({"sigma": True}, r"PES\(sigma=True\) must be a positive finite number"),
    ({"num_samples": -3}, r"PES\(num_samples=-3\) must be a positive int"),
    ({"chunk": 1.5}, r"PES\(chunk=1.5\) must be a positive int or None"),
])
def test_pes_refuses_bad_fields(kwargs, match):
    fields = {"sigma": 0.01, "num_samples": 4, "window": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        PES(**fields)


def test_methods_are_immutable_and_hashable_by_value():
    assert ES(0.01, 4) == ES(0.01, 4) and hash(ES(0.01, 4)) == hash(ES(0.01, 4))
    assert PES(0.01, 4, 3) == PES(0.01, 4, window=3) and hash(PES(0.01, 4, 3)) == hash(PES(0.01, 4, 3))
    assert ES(0.01, 4) != ES(0.01, 4, antithetic=False)
    assert ES(0.01, 4, chunk=2) != ES(0.01, 4) and PES(0.01, 4, 3, chunk=2) != PES(0.01, 4, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ES(0.01, 4).sigma = 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        PES(0.01, 4, 3).window = 2
