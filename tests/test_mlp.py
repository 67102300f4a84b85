"""The built-in flax.nnx MLP: its feature-major layers compute the same function as a batch-major
dense network, with LeCun-normal kernels over fan-in, and the problem's losses read class-major logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hypergrad as hg
from hypergrad.problems.mlp import MLP, FeatureMajorDense


def _batch_major_logits(model: MLP, x):
    """The same network written the usual way: x @ kernel.T + bias, layer by layer."""
    h = x
    for i, layer in enumerate(model.layers):
        h = h @ layer.kernel[...].T + layer.bias[...]
        if i < len(model.layers) - 1:
            h = jnp.tanh(h)
    return h


def test_feature_major_dense_is_an_affine_map_of_each_column():
    layer = FeatureMajorDense(5, 3, rngs=nnx.Rngs(0), dtype=jnp.float64)
    layer.bias[...] = jnp.arange(3.0)
    x = jax.random.normal(jax.random.key(1), (5, 7), jnp.float64)  # (features, batch)
    out = layer(x)
    assert out.shape == (3, 7)
    expected = np.stack([np.asarray(layer.kernel[...]) @ np.asarray(x[:, j]) + np.arange(3.0) for j in range(7)], 1)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_feature_major_kernels_are_lecun_normal_over_fan_in():
    wide = FeatureMajorDense(400, 300, rngs=nnx.Rngs(0), dtype=jnp.float64)
    assert wide.kernel[...].shape == (300, 400)  # (out, in)
    np.testing.assert_allclose(np.std(np.asarray(wide.kernel[...])), 1 / np.sqrt(400), rtol=0.03)
    np.testing.assert_array_equal(wide.bias[...], 0.0)


def test_mlp_matches_the_batch_major_network_and_class_major_is_its_transpose():
    x = jax.random.normal(jax.random.key(2), (9, 4), jnp.float64)
    model = MLP((4, 6, 5, 3), "tanh", rngs=nnx.Rngs(3), dtype=jnp.float64)
    class_major = MLP((4, 6, 5, 3), "tanh", rngs=nnx.Rngs(3), dtype=jnp.float64, class_major=True)
    np.testing.assert_allclose(model(x), _batch_major_logits(model, x), rtol=1e-12)
    np.testing.assert_allclose(class_major(x), model(x).T, rtol=1e-12)


def test_mlp_classifier_losses_equal_the_standard_cross_entropy_and_accuracy():
    problem = hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=None)
    params = problem.init(jax.random.key(0))
    graphdef, _ = nnx.split(MLP((4, 8, 3), "tanh", rngs=nnx.Rngs(0), dtype=jnp.float64))
    model = nnx.merge(graphdef, params)
    x, y = problem.val_data
    logits = _batch_major_logits(model, x)  # (batch, classes)
    wd = 1e-2
    penalty = 0.5 * wd * sum(jnp.sum(layer.kernel[...] ** 2) for layer in model.layers)
    np.testing.assert_allclose(problem.val_loss(params, (x, y)),
                               optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), rtol=1e-12)
    np.testing.assert_allclose(problem.train_loss(params, {"weight_decay": wd}, (x, y)),
                               optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + penalty, rtol=1e-12)
    accuracy = problem.metrics["accuracy"](params, (x, y))
    assert accuracy.dtype == jnp.float64  # a mean of bools is float32: 0.9 read 0.90000004 under x64
    assert float(accuracy) == np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y))


def test_vmapped_trials_of_the_mlp_equal_each_trial_alone():
    """The layout is for vmapped searches: a vmapped batch of trials gives each trial's own value."""
    problem = hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=16)
    objective = hg.Objective(problem, hg.problems.sgd_momentum_schedule, num_steps=5)
    settings = {"lr": jnp.linspace(0.05, 0.5, 3)[:, None] * jnp.ones((3, 5)), "momentum": jnp.array([0.0, 0.5, 0.9]),
                "weight_decay": jnp.array([1e-4, 1e-3, 1e-2])}
    key = jax.random.key(0)
    batched = jax.vmap(objective, in_axes=(0, None))(settings, key)
    alone = [objective(jax.tree.map(lambda a, i=i: a[i], settings), key) for i in range(3)]
    np.testing.assert_allclose(batched, alone, rtol=1e-10)


def _plain_affine(kernel, bias, x):
    return kernel @ x + bias[:, None]


def _affine_loss(fn):
    def loss(kernel, bias, x):
        return jnp.sum(jnp.tanh(fn(kernel, bias, x)) ** 2)
    return loss


def test_affine_value_and_derivatives_of_every_order_equal_the_plain_expression():
    from hypergrad.problems.mlp import affine

    k = jax.random.split(jax.random.key(4), 5)
    kernel, bias, x = (jax.random.normal(k[0], (3, 5), jnp.float64), jax.random.normal(k[1], (3,), jnp.float64),
                       jax.random.normal(k[2], (5, 7), jnp.float64))
    args = (kernel, bias, x)
    np.testing.assert_allclose(affine(*args), _plain_affine(*args), rtol=1e-13)
    fast, plain = _affine_loss(affine), _affine_loss(_plain_affine)
    # reverse mode in all three arguments, and in the parameters only (the input is data)
    for argnums in ((0, 1, 2), (0, 1)):
        for a, b in zip(jax.grad(fast, argnums)(*args), jax.grad(plain, argnums)(*args)):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    # forward mode, and second order (Hessian-vector products, as hypergradients need)
    tangents = tuple(jax.random.normal(kk, a.shape, jnp.float64) for kk, a in zip(k[2:], args))
    np.testing.assert_allclose(jax.jvp(fast, args, tangents)[1], jax.jvp(plain, args, tangents)[1], rtol=1e-12)
    hvp = lambda f: jax.jvp(jax.grad(f, (0, 1, 2)), args, tangents)[1]
    for a, b in zip(hvp(fast), hvp(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-11)
    # and under vmap over a batch of kernels sharing the input, as a vmapped search runs it
    kernels = jnp.stack([kernel, 2 * kernel])
    g_fast = jax.vmap(jax.grad(fast, (0, 1)), in_axes=(0, None, None))(kernels, bias, x)
    g_plain = jax.vmap(jax.grad(plain, (0, 1)), in_axes=(0, None, None))(kernels, bias, x)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_corrupted_examples_are_exactly_the_noisy_problems_flipped_labels():
    clean = np.asarray(hg.problems.mlp_classifier("iris", batch_size=None).train_data[1])
    for noise, noise_seed in ((0.3, 0), (0.5, 2)):
        problem = hg.problems.noisy_mlp_classifier("iris", noise, hidden=(4,), batch_size=None, noise_seed=noise_seed)
        noisy = np.asarray(problem.train_data[1])
        mask = hg.problems.corrupted_examples("iris", noise, noise_seed=noise_seed)
        assert mask.dtype == bool and mask.shape == clean.shape
        np.testing.assert_array_equal(noisy != clean, mask)  # a flipped label always changes class
        assert mask.sum() == round(noise * len(clean))
    # the preset's mask is its problem's
    objective, _ = hg.problems.preset("digits-noisy", 4)
    digits = np.asarray(hg.problems.mlp_classifier("digits").train_data[1])
    np.testing.assert_array_equal(np.asarray(objective.problem.train_data[1]) != digits,
                                  hg.problems.preset_corrupted_examples("digits-noisy"))
    assert hg.problems.preset_corrupted_examples("digits-mlp") is None


def test_the_default_batch_is_clipped_to_what_a_fit_trains_on():
    # iris trains on 90 examples (96 per fold at cv=5): the default batch of 100 was refused, though
    # the docstring promised it clipped
    for problem, expected in ((hg.problems.mlp_classifier("iris"), 90),
                              (hg.problems.mlp_classifier("iris", cv=5), 96),
                              (hg.problems.noisy_mlp_classifier("iris", noise=0.2), 90),
                              (hg.problems.mlp_classifier("digits"), 100)):
        assert problem.batch_size == expected == min(100, problem.num_train), problem.name


@pytest.mark.parametrize("call, match", [
    (lambda: hg.problems.mlp_classifier("iris", batch_size=2.5), r"batch_size=2.5 must be an int >= 1"),
    (lambda: hg.problems.mlp_classifier("iris", batch_size=True), r"batch_size=True must be an int >= 1"),
    (lambda: hg.problems.mlp_classifier("iris", hidden=[8.7]), r"hidden=\[8.7\] must be a sequence of layer widths"),
    (lambda: hg.problems.mlp_classifier("iris", hidden=50), r"hidden=50 must be a sequence of layer widths"),
    (lambda: hg.problems.mlp_classifier("iris", cv=0), r"cv=0: mlp_classifier takes None or k >= 2 folds"),
    (lambda: hg.problems.mlp_classifier("iris", cv=[(np.arange(3), np.arange(3))]), r"explicit folds: build"),
    (lambda: hg.problems.noisy_mlp_classifier("iris", noise=None), r"noise=None must be a share"),
    (lambda: hg.problems.logistic("synthetic", num_examples=3), r"num_examples=3 must be an int >= 10"),
    (lambda: hg.problems.logistic("synthetic", num_classes=0), r"num_classes=0 must be an int >= 2"),
    (lambda: hg.problems.ridge(num_examples=3), r"num_examples=3 must be an int >= 10"),
    (lambda: hg.problems.digits_transfer(val_shots=0), r"val_shots=0: pass a positive number"),
    (lambda: hg.problems.digits_transfer(val_shots=2.5), r"val_shots=2.5: pass a positive number"),
    # a raw numpy error ('Cannot take a larger sample than population', 'expected non-negative integer')
    (lambda: hg.problems.corrupted_examples("iris", noise=2.0), r"noise=2.0 must be a share of training labels"),
    (lambda: hg.problems.corrupted_examples("iris", noise_seed=-1), r"noise_seed=-1 must be an int >= 0"),
    (lambda: hg.problems.flip_labels(np.arange(10) % 3, 1.5, 3, 0), r"fraction=1.5 must be a share of the labels"),
    (lambda: hg.problems.flip_labels(np.arange(10) % 3, 0.5, 1, 0), r"num_classes=1 must be an int >= 2"),
    (lambda: hg.problems.flip_labels(np.arange(10) % 3, 0.5, 3, -2), r"seed=-2 must be an int >= 0"),
    (lambda: hg.problems.mlp_classifier("iris", seed=-1), r"seed=-1 must be an int >= 0"),
    (lambda: hg.problems.noisy_mlp_classifier("iris", 0.5, noise_seed=-1), r"noise_seed=-1 must be an int >= 0"),
    # silently ignored for a named dataset (trained on all its features), or a negative noise scale accepted
    (lambda: hg.problems.ridge("diabetes", num_features=3), r"ridge\(dataset='diabetes', num_features=3\): .*shape "
                                                              r"the synthetic data only"),
    (lambda: hg.problems.logistic("iris", num_classes=4), r"logistic\(dataset='iris', num_classes=4\): .*synthetic"),
    (lambda: hg.problems.ridge(noise=-1.0), r"ridge\(noise=-1.0\): give the noise's standard deviation"),
], ids=["batch-float", "batch-bool", "hidden-float", "hidden-int", "cv-0", "cv-folds", "noise-none", "few-examples",
        "no-classes", "ridge-few-examples", "val-shots-0", "val-shots-float", "corrupted-noise", "corrupted-seed",
        "flip-fraction", "flip-classes", "flip-seed", "mlp-seed", "noisy-seed", "ridge-named-shape",
        "logistic-named-shape", "ridge-noise"])
def test_built_in_problems_name_a_bad_argument(call, match):
    """Bad arguments get a ValueError naming them, not a silent conversion (batch_size=2.5 trained
    on batches of 2, hidden=[8.7] built a layer of 8) or a crash from deep inside (ZeroDivisionError
    for cv=0, 'zero-size array' for 3 examples)."""
    with pytest.raises(ValueError, match=match):
        call()
    hg.problems.mlp_classifier("iris", hidden=np.array([4, 3]), batch_size=np.int64(10), cv=3)  # numpy ints are ints


def _linear(rngs):
    return nnx.Linear(3, 2, rngs=rngs)  # logits (batch, 2): classes 0 and 1


def _binary_splits(relabel=lambda y: y, split=None):
    """(train, val, test) pairs of a binary task, `relabel` applied to every split's labels (or to
    `split`'s only)."""
    rng = np.random.default_rng(0)
    splits = []
    for i, n in enumerate((24, 12, 12)):
        x = rng.normal(size=(n, 3))
        y = (x[:, 0] > 0).astype(np.int32)
        splits.append((x, relabel(y) if split in (None, i) else y))
    return tuple(splits)


@pytest.mark.parametrize("relabel, match", [
    (lambda y: 2 * y - 1, r"train_data: the labels \(train_data\[1\]\) run from -1 to 1, but the logits have 2 "
                          r"classes along class_axis=-1; give labels in \[0, 2\)"),
    (lambda y: y + 1, r"train_data: the labels \(train_data\[1\]\) run from 1 to 2.*give labels in \[0, 2\)"),
    (lambda y: y.astype(np.float64), r"train_data: the labels \(train_data\[1\]\) have dtype float64; give integer "
                                     r"class indices \(e.g. y.astype\(np.int32\)\)"),
    (lambda y: y[:, None], r"train_data: the labels \(train_data\[1\]\) have shape \(24, 1\).*shape \(24,\).*y.ravel"),
], ids=["plus-minus-one", "one-based", "float", "column"])
def test_nnx_problem_refuses_labels_that_are_not_class_indices_at_construction(relabel, match):
    """+-1 labels trained on class 1 for -1 with a falsely low loss, 1-based labels made every loss
    NaN, float and (n, 1) labels failed inside the trace naming neither the labels nor the fix;
    hg.problems.finetune already refused them."""
    for cv in (None, 3):
        with pytest.raises(ValueError, match=match):
            hg.problems.nnx_problem(_linear, *_binary_splits(relabel), cv=cv)
    for split, argname in ((1, "val_data"), (2, "test_data")):
        with pytest.raises(ValueError, match=rf"{argname}: the labels \({argname}\[1\]\)"):
            hg.problems.nnx_problem(_linear, *_binary_splits(relabel, split))
    with pytest.raises(ValueError, match=r"test_data: the labels \(test_data\[1\]\) run from 0 to 2"):
        train, val, (x, y) = _binary_splits()
        hg.problems.nnx_problem(_linear, train, val, (x, np.where(y == 1, 2, 0)))
    problem = hg.problems.nnx_problem(_linear, *_binary_splits())  # 0-based integer labels are fine
    assert np.isfinite(float(problem.val_loss(problem.init(jax.random.key(0)), problem.val_data)))


def test_nnx_problem_refuses_a_wrong_class_axis_and_data_that_is_not_pairs():
    class_major = lambda rngs: MLP((3, 2), "tanh", rngs=rngs, class_major=True)  # noqa: E731
    with pytest.raises(ValueError, match=r"class_axis=-1: the model gives logits of shape \(2, 1\).*set class_axis"):
        hg.problems.nnx_problem(class_major, *_binary_splits())
    hg.problems.nnx_problem(class_major, *_binary_splits(), class_axis=0)
    with pytest.raises(ValueError, match=r"class_axis=3: the model gives logits of shape \(1, 2\).*int in \[-2, 2\)"):
        hg.problems.nnx_problem(_linear, *_binary_splits(), class_axis=3)
    train, val, _ = _binary_splits()
    with pytest.raises(ValueError, match=r"val_data must be a pair \(inputs, integer labels\); got dict"):
        hg.problems.nnx_problem(_linear, train, {"x": val[0], "y": val[1]})


def test_nnx_problem_checks_labels_given_as_pandas():
    pd = pytest.importorskip("pandas")
    (x, y), (xv, yv), _ = _binary_splits()
    problem = hg.problems.nnx_problem(_linear, (pd.DataFrame(x), pd.Series(y)), (pd.DataFrame(xv), pd.Series(yv)))
    assert np.isfinite(float(problem.val_loss(problem.init(jax.random.key(0)), problem.val_data)))
    with pytest.raises(ValueError, match=r"train_data: the labels \(train_data\[1\]\) run from -1 to 1"):
        hg.problems.nnx_problem(_linear, (pd.DataFrame(x), pd.Series(2 * y - 1)), (pd.DataFrame(xv), pd.Series(yv)))
