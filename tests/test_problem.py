"""Problem: minibatch sampling, validation of its arguments, and the built-in problems' data."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile


def _mse(params, batch):
    x, y = batch
    return jnp.mean((x * params["w"] - y) ** 2)


def make_problem(n=20, batch_size=5, **overrides):
    """A problem whose inputs are the example indices, so a batch says which examples it holds."""
    x = jnp.arange(n, dtype=jnp.float64)
    kwargs = dict(
        init=lambda key: {"w": jnp.zeros(())},
        train_loss=lambda params, hparams, batch: _mse(params, batch),
        val_loss=_mse,
        train_data=(x, 2.0 * x),
        val_data=(x[:4], 2.0 * x[:4]),
        batch_size=batch_size,
    )
    kwargs.update(overrides)
    return hg.Problem(**kwargs)


# -- minibatches ---------------------------------------------------------------------------------
def test_minibatch_t_is_batch_t_of_the_epoch_stream():
    """Batches 0-3 of 20 examples in batches of 5 are epoch 0, each example once (the construction
    itself is pinned in test_sampler.py)."""
    problem = make_problem(n=20, batch_size=5)
    key = jax.random.key(7)
    seen = []
    for t in range(4):
        x, y = problem.train_batch(problem.train_data, key, jnp.asarray(t))
        np.testing.assert_array_equal(x, np.asarray(problem.batch_indices(key, t), np.float64))
        np.testing.assert_array_equal(y, 2.0 * x)  # inputs and targets stay paired
        seen += np.asarray(x).tolist()
    assert sorted(seen) == list(range(20))


def test_minibatch_is_reproducible_distinct_and_changes_with_the_step():
    problem = make_problem(n=30, batch_size=10)
    key = jax.random.key(0)
    batches = [np.asarray(problem.train_batch(problem.train_data, key, t)[0]) for t in range(6)]
    again = [np.asarray(problem.train_batch(problem.train_data, key, t)[0]) for t in range(6)]
    for b, b2 in zip(batches, again):
        np.testing.assert_array_equal(b, b2)
        assert len(np.unique(b)) == 10  # without replacement
        assert set(b.tolist()) <= set(range(30))
    assert len({tuple(b.tolist()) for b in batches}) == 6
    other_key = np.asarray(problem.train_batch(problem.train_data, jax.random.key(1), 0)[0])
    assert not np.array_equal(other_key, batches[0])


def test_minibatch_works_with_a_traced_step():
    problem = make_problem(n=20, batch_size=4)
    key = jax.random.key(3)
    traced = jax.jit(lambda t: problem.train_batch(problem.train_data, key, t)[0])
    for t in range(3):
        np.testing.assert_array_equal(traced(t), problem.train_batch(problem.train_data, key, t)[0])


def test_full_batch_when_batch_size_is_none():
    problem = make_problem(n=12, batch_size=None)
    x, y = problem.train_batch(problem.train_data, jax.random.key(0), 5)
    np.testing.assert_array_equal(x, np.arange(12))
    np.testing.assert_array_equal(y, 2.0 * np.arange(12))


def test_batch_size_equal_to_the_data_is_a_permutation():
    problem = make_problem(n=8, batch_size=8)
    x, _ = problem.train_batch(problem.train_data, jax.random.key(0), 0)
    assert sorted(np.asarray(x).tolist()) == list(range(8))


def test_data_may_be_any_pytree():
    data = {"x": jnp.arange(10.0), "pair": (jnp.ones((10, 3)), jnp.zeros(10, jnp.int32))}
    problem = make_problem(train_data=data, val_data=data, batch_size=4)
    batch = problem.train_batch(problem.train_data, jax.random.key(0), 2)
    assert batch["x"].shape == (4,) and batch["pair"][0].shape == (4, 3) and batch["pair"][1].shape == (4,)
    assert problem.num_train == 10


# -- errors --------------------------------------------------------------------------------------
def test_numpy_data_become_the_arrays_jnp_asarray_makes_without_compiling():
    """numpy leaves go to the device with `jax.device_put` (same dtype, bits and placement as
    `jnp.asarray`, which compiles a small identity program per shape and dtype); folds too."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((23, 3))  # shapes no other test uses: a compile would show
    y = rng.integers(0, 3, 23)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *a, **k: compiles.append(event) if event.endswith("backend_compile_duration") else None)
    train, val = (x, y), (x[:7], y[:7])
    before = len(compiles)
    problem = hg.Problem(init=lambda key: {"w": 0.0}, train_loss=lambda params, hparams, batch: 0.0,
                         val_loss=lambda params, batch: 0.0, train_data=train, val_data=val, cv=3)
    assert len(compiles) == before
    for got, want in [(problem.train_data, train), (problem.val_data, val)]:
        for a, b in zip(got, want):
            ref = jnp.asarray(b)
            assert isinstance(a, jax.Array) and a.dtype == ref.dtype and a.weak_type == ref.weak_type
            assert a.sharding == ref.sharding and a._committed == ref._committed
            np.testing.assert_array_equal(np.asarray(a), np.asarray(ref))
    assert problem.num_folds == 3 and all(isinstance(a, jax.Array) for a in jax.tree.leaves(problem.data))


def test_inputs_and_targets_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match=r"train_data: inputs and targets have different lengths \[10, 9\]"):
        make_problem(train_data=(jnp.zeros(10), jnp.zeros(9)))
    with pytest.raises(ValueError, match=r"val_data: inputs and targets have different lengths"):
        make_problem(val_data=(jnp.zeros(4), jnp.zeros(5)))
    with pytest.raises(ValueError, match=r"test_data: inputs and targets have different lengths"):
        make_problem(test_data=(jnp.zeros(4), jnp.zeros(5)))


def test_batch_size_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match=r"batch_size=21 is larger than the 20 training examples; "
                                         r"use batch_size <= 20, or None for full batch"):
        make_problem(n=20, batch_size=21)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_below_one_is_refused(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size={batch_size} must be >= 1, or None for full batch"):
        make_problem(batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [2.5, True, "16"])
def test_batch_size_must_be_an_int(batch_size):
    with pytest.raises(ValueError, match=r"batch_size=.* must be an int or None"):
        make_problem(batch_size=batch_size)


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8])
def test_a_numpy_integer_batch_size_draws_what_the_python_int_draws(kind):
    """A numpy integer batch size is stored as a Python int: kept as given, its strong type promoted
    the sampler's uint32 arithmetic to signed ints, so the draw gave negative indices (NaN losses)
    or a cycle walk that never ended."""
    problem = make_problem(n=20, batch_size=kind(7))
    assert type(problem.batch_size) is int
    key = jax.random.key(3)
    steps = jnp.arange(6)
    np.testing.assert_array_equal(problem.batch_indices(key, steps),
                                  make_problem(n=20, batch_size=7).batch_indices(key, steps))


def test_a_numpy_integer_cv_and_cv_seed_are_stored_as_ints():
    problem = make_problem(n=20, batch_size=None, cv=np.int64(4), cv_seed=np.int32(2))
    assert type(problem.cv) is int and type(problem.cv_seed) is int


def test_scalar_or_empty_data_is_refused():
    with pytest.raises(ValueError, match="train_data holds a scalar; every leaf needs a leading example axis"):
        make_problem(train_data=(jnp.zeros(()), jnp.zeros(())))
    with pytest.raises(ValueError, match="val_data has no arrays"):
        make_problem(val_data=())
    with pytest.raises(ValueError, match="train_data is empty"):
        make_problem(train_data=(jnp.zeros(0), jnp.zeros(0)), batch_size=None)


@pytest.mark.parametrize("as_array", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_nan_or_infinite_data_are_refused_with_their_count(as_array):
    x = np.ones((20, 3), np.float32)
    x[2, 1], x[7, 0] = np.nan, -np.inf
    y = np.zeros(20, np.float32)
    with pytest.raises(ValueError, match="train_data holds 2 NaN or infinite values; drop or impute them first"):
        make_problem(train_data=(as_array(x), as_array(y)))
    with pytest.raises(ValueError, match="val_data holds 1 NaN or infinite values"):
        make_problem(val_data=(as_array(x[:4]), as_array(y[:4])))
    assert make_problem(train_data=(as_array(np.ones((20, 3), np.float32)), as_array(y)),
                        val_data=(as_array(np.ones((4, 3), np.float32)), as_array(y[:4]))).num_train == 20


def test_non_callables_are_refused():
    with pytest.raises(ValueError, match=r"Problem\(train_loss=...\) must be a function"):
        make_problem(train_loss=3.0)
    with pytest.raises(ValueError, match=r"metrics\['acc'\] must be a function"):
        make_problem(metrics={"acc": 1.0})


def test_scores_report_val_and_test_losses_and_metrics():
    problem = make_problem(test_data=(jnp.arange(3.0), jnp.zeros(3)), metrics={"w": lambda p, b: p["w"]})
    scores = problem.scores({"w": jnp.asarray(2.0)}, problem.data)
    assert set(scores) == {"val_loss", "test_loss", "val_w", "test_w"}
    np.testing.assert_allclose(scores["val_loss"], 0.0)  # val targets are 2x
    np.testing.assert_allclose(scores["test_loss"], np.mean((2.0 * np.arange(3.0)) ** 2))
    assert "test_loss" not in make_problem().scores({"w": jnp.asarray(1.0)}, make_problem().data)


@pytest.mark.parametrize("optimizer", [
    lambda lr: optax.adamw(lr, weight_decay=0.3),
    # integer zeros for the held leaves broke the global norm's select ("lax.select requires
    # arguments to have the same dtypes"); eps_root, as for any adam whose gradient has exact zeros
    # (the masked weight's) that a global norm then couples to the rest
    lambda lr: optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(lr, weight_decay=0.3, eps_root=1e-16)),
], ids=["adamw", "clip_by_global_norm"])
def test_integer_and_boolean_params_are_held_constant(key, optimizer):
    """Params may hold integer and boolean leaves (a scale, a mask): the floating-point leaves
    train and the others stay as init gave them, through adamw's weight decay too (jax.grad of
    train_loss over the whole tree raised 'grad requires real- or complex-valued inputs'), and
    through a transform that combines every leaf. The hypergradient matches central differences."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    mask = jnp.array([True, False, True])

    def mse(params, batch):
        inputs, targets = batch
        return jnp.mean((inputs @ (jnp.where(params["mask"], params["w"], 0.0) * params["scale"]) - targets) ** 2)

    problem = hg.Problem(init=lambda k: {"w": jnp.full(3, 0.1), "mask": mask, "scale": jnp.asarray(2, jnp.int32)},
                         train_loss=lambda p, h, batch: mse(p, batch), val_loss=mse,
                         train_data=(x[:20], y[:20]), val_data=(x[20:], y[20:]), batch_size=5)
    objective = hg.Objective(problem, lambda h: optimizer(h["lr"]), num_steps=6)
    hparams = {"lr": jnp.asarray(0.05)}
    params = objective.train(hparams, key)
    assert params["scale"].dtype == jnp.int32 and int(params["scale"]) == 2
    np.testing.assert_array_equal(params["mask"], mask)
    assert not np.allclose(params["w"], 0.1)
    value, grads = hg.hypergradient(objective, hparams, key)
    eps = 1e-6
    fd = (objective({"lr": 0.05 + eps}, key) - objective({"lr": 0.05 - eps}, key)) / (2 * eps)
    assert abs(float(grads["lr"])) > 0
    np.testing.assert_allclose(grads["lr"], fd, rtol=1e-6)
    np.testing.assert_allclose(value, objective(hparams, key), rtol=1e-12)


# -- built-in problems ---------------------------------------------------------------------------
def _arrays(problem):
    return jax.tree.leaves(problem.data)


def _assert_same_data(a, b):
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _assert_split(problem, total, num_features, num_classes=None, disjoint=True):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = problem.train_data, problem.val_data, problem.test_data
    assert len(x_tr) + len(x_va) + len(x_te) == total
    assert abs(len(x_tr) - 0.6 * total) <= 3 and abs(len(x_va) - 0.2 * total) <= 3
    assert x_tr.shape[1] == num_features and x_tr.dtype == jnp.float64
    # standardised with the training statistics
    np.testing.assert_allclose(np.asarray(x_tr).mean(axis=0), 0.0, atol=1e-10)
    if num_classes is not None:
        assert y_tr.dtype == jnp.int32
        for y in (y_tr, y_va, y_te):  # stratified: every class in every split
            assert set(np.asarray(y).tolist()) == set(range(num_classes))
    if not disjoint:  # iris holds duplicate rows, so only the sizes can be checked
        return
    # no example appears in two splits
    rows = [set(map(tuple, np.round(np.asarray(x), 8).tolist())) for x in (x_tr, x_va, x_te)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_builtin_digits_loads_and_splits():
    problem = hg.problems.logistic("digits")
    _assert_split(problem, total=1797, num_features=64, num_classes=10)
    assert problem.init(jax.random.key(0))["w"].shape == (64, 10)


def test_builtin_iris_mlp_loads_and_splits(mlp_problem):
    _assert_split(mlp_problem, total=150, num_features=4, num_classes=3, disjoint=False)
    assert mlp_problem.batch_size is None


def test_builtin_ridge_and_logistic_synthetic_load():
    ridge = hg.problems.ridge(num_examples=50, num_features=3)
    _assert_split(ridge, total=50, num_features=3)
    np.testing.assert_allclose(np.asarray(ridge.train_data[1]).mean(), 0.0, atol=1e-10)  # centred targets
    logistic = hg.problems.logistic("synthetic", num_examples=90, num_features=5, num_classes=3)
    _assert_split(logistic, total=90, num_features=5, num_classes=3)


@pytest.mark.parametrize("build", [
    lambda seed: hg.problems.ridge(num_examples=30, num_features=3, seed=seed),
    lambda seed: hg.problems.logistic("synthetic", num_examples=30, seed=seed),
    lambda seed: hg.problems.logistic("iris", seed=seed),
    lambda seed: hg.problems.logistic("digits", seed=seed),
], ids=["ridge", "logistic-synthetic", "logistic-iris", "logistic-digits"])
def test_builtin_splits_are_seeded_and_reproducible(build):
    _assert_same_data(build(0), build(0))
    a, b = _arrays(build(0)), _arrays(build(1))
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, b))


def test_builtin_problems_refuse_unknown_data_sets():
    with pytest.raises(ValueError, match=r"dataset='mnist'.*choose"):
        hg.problems.logistic("mnist")
    with pytest.raises(ValueError, match=r"dataset='iris'.*choose 'synthetic'"):
        hg.problems.ridge("iris")
    with pytest.raises(ValueError, match=r"mlp_classifier\(dataset='diabetes'\)"):
        hg.problems.mlp_classifier("diabetes")
    with pytest.raises(ValueError, match=r"activation='swish'"):
        hg.problems.mlp_classifier("iris", activation="swish")


def test_a_prng_key_among_the_params_is_refused_naming_the_fix(key):
    """An nnx model with Dropout split whole (`nnx.split(model)`) puts its RNG key among the params;
    every optimiser then failed deep inside optax with a TypeError (keys cannot be added to or
    multiplied). The loop refuses it when traced, naming the key and how to split the Params off."""
    x = np.random.default_rng(0).normal(size=(20, 3))

    def mse(params, batch):
        return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)

    problem = hg.Problem(init=lambda k: {"w": jnp.zeros(3), "rng": jax.random.key(1)},
                         train_loss=lambda p, h, batch: mse(p, batch), val_loss=mse,
                         train_data=(x[:10], x[:10, 0]), val_data=(x[10:], x[10:, 0]))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    with pytest.raises(ValueError, match=r"PRNG key at \"\['rng'\]\".*nnx.split\(model, nnx.Param"):
        objective({"lr": jnp.asarray(0.1)}, key)


def test_ridge_closed_form_refuses_a_schedule_shorter_than_num_steps(ridge_problem):
    """A 3-entry schedule for 10 steps was sliced to 3 steps silently (the closed form of 3 steps)."""
    with pytest.raises(ValueError, match=r"learning_rates has shape \(3,\).*at least num_steps=10"):
        hg.problems.ridge_trained_weights(ridge_problem, jnp.full(3, 0.1), 0.05, 10)
    with pytest.raises(ValueError, match=r"learning_rates has shape \(2, 10\)"):
        hg.problems.ridge_trained_weights(ridge_problem, jnp.full((2, 10), 0.1), 0.05, 10)
    longer = hg.problems.ridge_trained_weights(ridge_problem, jnp.linspace(0.1, 0.2, 12), 0.05, 10)
    np.testing.assert_array_equal(longer, hg.problems.ridge_trained_weights(ridge_problem, jnp.linspace(0.1, 0.2, 12)[:10], 0.05, 10))


# -- loss shapes ------------------------------------------------------------------------------------
SHAPED = {  # what the user's function returns -> the function the error names
    "train_loss": (dict(train_loss=lambda p, h, batch: _mse(p, batch)[None]), r"Problem\(train_loss=...\)"),
    "val_loss": (dict(val_loss=lambda p, batch: _mse(p, batch).reshape(1)), r"Problem\(val_loss=...\)"),
    "per_example": (dict(val_loss=lambda p, batch: (batch[0] * p["w"] - batch[1]) ** 2), r"Problem\(val_loss=...\)"),
    "metric": (dict(metrics={"err": lambda p, batch: _mse(p, batch)[None]}), r"Problem\(metrics=\{'err': ...\}\)"),
}


@pytest.fixture(scope="module")
def eager_ops_compiled():
    """The one-op programs of eager array code on the way to a refusal (`Space.centre`'s jnp, a key's
    dtype conversion), which JAX compiles once per process: run every call below on a fine objective."""
    objective = hg.Objective(make_problem(n=12, batch_size=4), lambda h: optax.sgd(lambda t: h["lr"][t]), num_steps=3)
    space, key = hg.Space({"lr": hg.LogUniform(0.01, 1.0, shape=(3,))}), jax.random.key(0)
    objective({"lr": jnp.full(3, 0.1)}, key)
    hg.tune(objective, space, key, steps=1)
    hg.tune(objective, space, key, population=2, steps=1)


@pytest.mark.parametrize("case", sorted(SHAPED))
def test_a_loss_or_metric_that_is_not_a_scalar_is_refused_before_compiling(case, caplog, eager_ops_compiled):
    """A val_loss of shape (1,) or (n,) was silently the objective's value (a search then failed
    converting it); a train_loss of shape (1,) failed in autodiff. Every one is now a ValueError
    naming the function and the shape, while the training program is traced, before it compiles.
    Before any program at all: tune compiled its starts and the schedule check before the trace that
    refuses. Not checked here: in a fresh process a population drawing its starts, and random search,
    still compile their sampler first (random search traces the objective once, for its count and its
    program together); the fixture has compiled it, as it has the one-op programs of eager code."""
    overrides, names = SHAPED[case]
    problem = make_problem(n=12, batch_size=4, **overrides)
    objective = hg.Objective(problem, lambda h: optax.sgd(lambda t: h["lr"][t]), num_steps=3)
    hparams, key = {"lr": jnp.full(3, 0.1)}, jax.random.key(0)
    space = hg.Space({"lr": hg.LogUniform(0.01, 1.0, shape=(3,))})
    before = _compile.stats.compilations
    shape = r"\(4,\)" if case == "per_example" else r"\(1,\)"
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        for run in (lambda: objective(hparams, key), lambda: objective.evaluate(hparams, key),
                    lambda: hg.hypergradient(objective, hparams, key),
                    lambda: hg.tune(objective, space, key, steps=2), lambda: hg.tune(objective, space, key, population=2)):
            with pytest.raises(ValueError, match=names + rf" returned shape {shape}; it must return a scalar"):
                run()
    assert _compile.stats.compilations == before
    assert [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()] == []


@pytest.mark.parametrize("split", ["val_data", "test_data"])
@pytest.mark.parametrize("case", ["features", "targets", "kind"])
def test_a_split_whose_examples_differ_from_train_data_is_refused_naming_split_and_leaf(split, case):
    """val_data with 4 features while train_data had 3 failed in the first trace with "dot_general
    requires contracting dimensions", naming neither split; targets of shape (n, 1) broadcast silently
    against predictions of shape (n,); integer labels in one split and floats in another failed deep in
    a loss. Each is now refused at construction, naming the split, the leaf and both shapes or kinds."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.integers(0, 2, size=30)
    other = {"features": (rng.normal(size=(10, 4)), y[:10]), "targets": (x[:10], y[:10, None]),
             "kind": (x[:10], y[:10].astype(float))}[case]
    match = {"features": rf"{split}\[0\] holds examples of shape \(4,\), but train_data\[0\] holds \(3,\)",
             "targets": rf"{split}\[1\] holds examples of shape \(1,\), but train_data\[1\] holds \(\)",
             "kind": rf"{split}\[1\] holds floating values, but train_data\[1\] holds integer.*y.astype\(int\)"}[case]
    splits = {"val_data": (x[20:], y[20:]), "test_data": (x[20:], y[20:]), split: other}
    with pytest.raises(ValueError, match=match):
        hg.Problem(init=lambda k: {"w": jnp.zeros(3)}, train_loss=lambda p, h, b: 0.0, val_loss=lambda p, b: 0.0,
                   train_data=(x[:20], y[:20]), **splits)


def test_splits_of_another_structure_or_precision_are_not_compared():
    """A split of another structure is the user's design; float32 against float64 is a precision, not a slip."""
    x = np.random.default_rng(0).normal(size=(30, 3))
    problem = hg.Problem(init=lambda k: {"w": jnp.zeros(3)}, train_loss=lambda p, h, b: 0.0,
                         val_loss=lambda p, b: 0.0, train_data=(x[:20], x[:20, 0]),
                         val_data={"x": x[20:, :2]}, test_data=(x[20:].astype(np.float32), x[20:, 0]))
    assert problem.data["val"]["x"].shape == (10, 2)


def test_cv_refuses_val_labels_of_another_kind_of_number_before_pooling():
    """cv=k pooled int train labels with float val labels into floats, which failed inside the
    trace with a bare TypeError; without cv the same data got this ValueError."""
    x = np.arange(20.0)
    labels = np.arange(20) % 2
    for cv in (None, 3):
        with pytest.raises(ValueError, match=r"val_data\[1\] holds floating values, but train_data\[1\] holds "
                                             r"integer.*y.astype\(int\)"):
            make_problem(train_data=(x, labels), val_data=(x[:4], labels[:4].astype(np.float64)), cv=cv)
    assert make_problem(train_data=(x, labels), val_data=(x[:4], labels[:4]), cv=3).num_folds == 3


def test_list_data_is_refused_naming_the_list_and_the_fix():
    """Python lists are pytree nodes to JAX, so each number became a leaf of its own and the message
    said only that a leaf was a scalar."""
    x = np.arange(20.0)
    with pytest.raises(ValueError, match=r"train_data\[0\] is a Python list.*pass arrays.*np.asarray"):
        make_problem(train_data=(x.tolist(), 2.0 * x))
    with pytest.raises(ValueError, match=r"val_data\[1\] is a Python list"):
        make_problem(val_data=(x[:4], [[0.0], [1.0], [2.0], [3.0]]))
    with pytest.raises(ValueError, match=r"train_data is a Python list"):
        make_problem(train_data=[0.0, 1.0, 2.0])
    assert make_problem(train_data=[x, 2.0 * x], val_data=[x[:4], 2.0 * x[:4]]).num_train == 20  # lists of arrays
