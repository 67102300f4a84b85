"""k-fold cross-validation (`hg.Problem(cv=k)`) and `Result.cv_results()`.

Folds: sizes, disjointness, stratification, seeds. The cv objective against k single-split
objectives built by hand from the same fold arrays; its hypergradient against finite differences
(float64, from tests/conftest.py) and against the per-fold hypergradients; search, tune and compute
accounting on a cv problem (every method as the fold mean of its own: tests/test_agreement.py); the
scikit-learn results format.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.problem import kfold_indices
from hypergrad.results import COMPLETE, FAIL, Result, Trial
from hypergrad.search import run_flops

T = 6  # training steps: short, so every compiled program is small
K = 4  # folds
HPARAMS = {"lr": 0.3, "weight_decay": 0.02}


def sgd(hparams):
    return optax.sgd(hparams["lr"], momentum=0.5)


def pooled_labels(problem):
    return np.concatenate([np.asarray(problem.train_data[1]), np.asarray(problem.val_data[1])])


def with_cv(problem, k=K, stratified=True, **kwargs):
    labels = pooled_labels(problem) if stratified else None
    return dataclasses.replace(problem, cv=k, cv_labels=labels, **kwargs)


def fold_problem(cv_problem, i):
    """Fold i of a cv problem as an ordinary single-split problem, from the same arrays."""
    data = cv_problem.data
    take = lambda tree: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
    return dataclasses.replace(cv_problem, train_data=take(data["train"]), val_data=take(data["val"]),
                               cv=None, cv_labels=None)


def fold_data(cv_problem, i):
    data = cv_problem.data
    return {**data, "train": jax.tree.map(lambda a: a[i], data["train"]),
            "val": jax.tree.map(lambda a: a[i], data["val"])}


def per_fold(cv_objective, fn, hparams, key):
    """[fn(single, hparams, key, data_i) for each fold i], where `single` is the single-split
    objective of fold 0 and data_i fold i's arrays: one compilation (the data are arguments)."""
    single = dataclasses.replace(cv_objective, problem=fold_problem(cv_objective.problem, 0))
    compiled = jax.jit(lambda h, k, d: fn(single, h, k, d))
    hparams = {name: jnp.asarray(v) for name, v in hparams.items()}
    return [compiled(hparams, key, fold_data(cv_objective.problem, i)) for i in range(cv_objective.problem.num_folds)]


def fold_scores(objective, hparams, key, data):
    return objective.loss_and_scores(hparams, key, data)[1]


@pytest.fixture(scope="module")
def cv_problem(logistic_minibatch_problem):
    """The 36 + 11 logistic examples pooled into 4 stratified folds of 11 (3 left over); minibatches of 8."""
    return with_cv(logistic_minibatch_problem)


@pytest.fixture(scope="module")
def cv_objective(cv_problem):
    return hg.Objective(cv_problem, sgd, num_steps=T)


# -- folds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(23, 5), (20, 4), (7, 7), (10, 2)])
def test_kfold_indices_sizes_disjoint_and_complementary(n, k):
    val, train = kfold_indices(n, k, seed=3)
    m = n // k
    assert val.shape == (k, m) and train.shape == (k, n - m)
    assert len(np.unique(val)) == k * m  # disjoint validation folds of k * m distinct examples
    assert val.min() >= 0 and val.max() < n
    for i in range(k):
        assert np.array_equal(np.sort(np.concatenate([val[i], train[i]])), np.arange(n))
        assert np.all(np.diff(val[i]) > 0) and np.all(np.diff(train[i]) > 0)
    # the n mod k left-overs are in every fold's training set
    left_over = np.setdiff1d(np.arange(n), val.reshape(-1))
    assert len(left_over) == n % k
    assert all(np.isin(left_over, train[i]).all() for i in range(k))


def test_kfold_indices_seeds():
    a, _ = kfold_indices(50, 5, seed=0)
    b, _ = kfold_indices(50, 5, seed=0)
    c, _ = kfold_indices(50, 5, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    labels = np.arange(50) % 3
    assert not np.array_equal(kfold_indices(50, 5, labels, seed=0)[0], kfold_indices(50, 5, labels, seed=1)[0])


def assert_stratified_as_documented(labels, k, val):
    """Every fold's count of every class c within what the stratified rule guarantees:
    m * n_c / n - 1 < count <= ceil(n_c / k), so the miss against the share is under
    1 + (n mod k) * n_c / (n * k) (under 2 only, were a member of another class given back).

    Dealt round-robin, each class's members (consecutive in the dealt order) give every fold floor
    or ceil of n_c / k of them; giving one back only lowers a count, hence the upper bound. A class
    nothing was given back from keeps floor(n_c / k) > n_c / k - 1 >= m * n_c / n - 1. The class
    given back is the one most in excess of its share: a fold dealt m + 1 has excesses summing to
    1, so that class's is at least 1 / (number of classes) > 0, and one less is still above -1."""
    n, m = len(labels), len(labels) // k
    for cls in np.unique(labels):
        n_c = int(np.sum(labels == cls))
        counts = np.array([np.sum(labels[row] == cls) for row in val])
        assert np.all(counts > m * n_c / n - 1), (cls, counts, m * n_c / n)
        assert np.all(counts <= -(-n_c // k)), (cls, counts, -(-n_c // k))


@pytest.mark.parametrize("n,k", [(103, 5), (60, 7), (40, 3)])
def test_stratified_folds_keep_class_proportions(n, k):
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.6, 0.3, 0.1])  # any sortable labels
    val, _ = kfold_indices(n, k, labels, seed=0)
    m = n // k

    def drift(folds):  # the largest miss of a fold's class count against its share m * n_c / n
        return max(abs(np.sum(labels[row] == c) - m * np.mean(labels == c)) for row in folds for c in "abc")

    # dealt round-robin: each class count is floor or ceil of n_c / k, less at most one given back
    assert_stratified_as_documented(labels, k, val)
    assert drift(val) < 1 + (n % k) / k
    for cls in "abc":
        counts = [np.sum(labels[row] == cls) for row in val]
        assert max(counts) - min(counts) <= 2
    # without labels the proportions drift further
    assert drift(kfold_indices(n, k, seed=0)[0]) > drift(val)


def test_stratified_folds_give_back_the_class_most_in_excess_for_any_draw():
    """Over many label draws with a rare class (often absent from a fold dealt one too many):
    no draw fails, and every fold is within the rule's bounds. A member of the class least in
    excess given back instead drifted by up to 1.7 and failed outright on a class the fold lacked."""
    for n in (23, 31, 40, 50, 60, 103):
        for k in (3, 4, 6, 7):
            for seed in range(10):
                rng = np.random.default_rng(seed)
                labels = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.6, 0.3, 0.1])
                val, train = kfold_indices(n, k, labels, seed=seed)
                assert val.shape == (k, n // k) and train.shape == (k, n - n // k)
                assert_stratified_as_documented(labels, k, val)


def test_problem_data_stacks_the_folds(logistic_minibatch_problem, cv_problem):
    base = logistic_minibatch_problem
    n = base.num_train + len(base.val_data[1])  # 36 + 11
    m = n // K
    assert cv_problem.num_folds == K and base.num_folds == 1
    assert cv_problem.num_train == n - m and base.num_train == 36
    data = cv_problem.data
    assert data["train"][0].shape == (K, n - m, 4) and data["val"][1].shape == (K, m)
    assert data["test"] is not None and np.array_equal(data["test"][0], base.test_data[0])
    assert data["train"][0] is cv_problem.data["train"][0]  # gathered once
    x = np.concatenate([np.asarray(base.train_data[0]), np.asarray(base.val_data[0])])
    val_idx, train_idx = cv_problem.fold_indices
    for i in range(K):
        np.testing.assert_array_equal(data["val"][0][i], x[val_idx[i]])
        np.testing.assert_array_equal(data["train"][0][i], x[train_idx[i]])
    # the train (first) examples of the pool are the training split, in order
    assert np.array_equal(x[:36], base.train_data[0])
    # minibatches index a fold's training set
    assert int(cv_problem.batch_indices(jax.random.key(0), 3).max()) < n - m


@pytest.mark.parametrize("kwargs,match", [
    ({"cv": 1}, r"cv=1\) must be an int >= 2"),
    ({"cv": True}, r"cv=True\) must be an int >= 2"),
    ({"cv": 2.5}, r"cv=2.5\) must be an int >= 2"),
    ({"cv": 48}, r"cv=48\) needs at least 48 examples.*pool 47; use cv <= 47"),
    ({"cv": 4, "cv_labels": np.zeros(46)}, r"cv_labels=...\) has shape \(46,\).*pool 47 examples"),
    ({"cv": 4, "cv_labels": np.zeros((47, 1))}, r"cv_labels=...\) has shape \(47, 1\)"),
    ({"cv_labels": np.zeros(47)}, r"cv_labels=...\) was given without cv; set cv=k"),
    ({"cv": 4, "cv_seed": 0.5}, r"cv_seed=0.5\) must be an int"),
    ({"cv": 4, "cv_seed": -1}, r"cv_seed=-1\) must be an int >= 0"),
    ({"cv": 4, "cv_seed": np.int64(-3)}, r"cv_seed=np.int64\(-3\)\) must be an int >= 0"),
    ({"cv": 4, "batch_size": 37}, r"batch_size=37 is larger than the 36 examples each fold trains on with "
                                  r"cv=4 \(47 pooled.*folds of 11\); use batch_size <= 36"),
])
def test_bad_cv_arguments(logistic_problem, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(logistic_problem, **kwargs)


def test_cv_needs_train_and_val_of_one_structure(logistic_problem):
    x, y = logistic_problem.val_data
    with pytest.raises(ValueError, match="same structure and the same shapes"):
        dataclasses.replace(logistic_problem, val_data=(x[:, :3], y), cv=3)
    with pytest.raises(ValueError, match="same structure"):
        dataclasses.replace(logistic_problem, val_data={"x": x, "y": y}, cv=3)


def test_cv_larger_than_training_split_allows_larger_batches(logistic_problem):
    # 36 training examples alone, and 47 - 5 = 42 per fold at cv=8
    problem = dataclasses.replace(logistic_problem, cv=8, batch_size=42)
    assert problem.num_train == 42


# -- the objective ------------------------------------------------------------------------------------
def test_cv_objective_is_the_mean_of_single_split_objectives(cv_problem, cv_objective, key):
    value, scores = jax.jit(cv_objective.loss_and_scores)(
        {k: jnp.asarray(v) for k, v in HPARAMS.items()}, key, cv_problem.data)
    folds = per_fold(cv_objective, fold_scores, HPARAMS, key)
    # fold_problem(i) is an ordinary problem on fold i's arrays: the shortcut above computes the same
    alone = hg.Objective(fold_problem(cv_problem, K - 1), sgd, num_steps=T).evaluate(HPARAMS, key)
    np.testing.assert_array_equal(float(alone["val_loss"]), float(folds[K - 1]["val_loss"]))
    losses = np.array([float(f["val_loss"]) for f in folds])
    accuracies = np.array([float(f["val_accuracy"]) for f in folds])
    # the same arithmetic, batched: equal up to the rounding of the final mean
    np.testing.assert_allclose(float(value), losses.mean(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(float(cv_objective(HPARAMS, key)), losses.mean(), rtol=1e-13, atol=0)
    for i in range(K):
        np.testing.assert_allclose(float(scores[f"val_loss_fold{i}"]), losses[i], rtol=1e-13, atol=0)
        np.testing.assert_allclose(float(scores[f"val_accuracy_fold{i}"]), accuracies[i], rtol=1e-6)
    np.testing.assert_allclose(float(scores["val_loss_std"]), losses.std(), rtol=1e-10)
    np.testing.assert_allclose(float(scores["val_accuracy"]), accuracies.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(scores["val_accuracy_std"]), accuracies.std(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(scores["test_loss"]), np.mean([float(f["test_loss"]) for f in folds]),
                               rtol=1e-13)
    np.testing.assert_allclose(float(scores["test_accuracy"]),
                               np.mean([float(f["test_accuracy"]) for f in folds]), rtol=1e-6)
    assert "test_loss_std" not in scores and "test_loss_fold0" not in scores
    assert np.isclose(float(scores["val_loss_std"]), 0.0) is np.False_  # the folds do differ


def test_cv_train_has_a_fold_axis_equal_to_each_fold(cv_problem, cv_objective, key):
    params = cv_objective.train(HPARAMS, key)
    assert params["w"].shape == (K, 4, 3)
    alone = per_fold(cv_objective, lambda o, h, k, d: o.run(h, k, d).params, HPARAMS, key)
    for i in range(K):
        np.testing.assert_allclose(params["w"][i], alone[i]["w"], rtol=1e-12, atol=1e-15)


def test_cv_mlp_folds_share_the_initialisation(mlp_minibatch_problem, key):
    problem = with_cv(mlp_minibatch_problem, k=3)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=1)
    params = objective.train({"lr": 0.0}, key)  # lr 0: the parameters stay at their initialisation
    leaves = jax.tree.leaves(params)
    assert all(leaf.shape[0] == 3 for leaf in leaves)
    for leaf in leaves:
        np.testing.assert_array_equal(leaf[0], leaf[1])
        np.testing.assert_array_equal(leaf[0], leaf[2])


# -- hypergradients ------------------------------------------------------------------------------------
def test_cv_reverse_hypergradient_matches_finite_differences_and_per_fold_mean(cv_problem, cv_objective, key):
    hparams = {k: jnp.asarray(v, jnp.float64) for k, v in HPARAMS.items()}
    value, grads = hg.hypergradient(cv_objective, hparams, key, method=hg.Reverse())
    assert set(grads) == set(hparams) and all(g.dtype == jnp.float64 for g in grads.values())

    def f(h):
        return float(hg.hypergradient(cv_objective, h, key, method=hg.Reverse())[0])

    rng = np.random.default_rng(0)
    eps = 1e-5
    probes = [{"lr": 0.3, "weight_decay": 0.0}, {"lr": 0.0, "weight_decay": 0.02}]
    probes += [{n: v * rng.normal() for n, v in HPARAMS.items()} for _ in range(2)]
    for v in probes:
        plus = {n: hparams[n] + eps * v[n] for n in hparams}
        minus = {n: hparams[n] - eps * v[n] for n in hparams}
        fd = (f(plus) - f(minus)) / (2 * eps)
        ad = sum(float(grads[n]) * v[n] for n in hparams)
        scale = sum(abs(float(grads[n]) * v[n]) for n in hparams)
        assert abs(fd - ad) <= 1e-6 * scale, (v, fd, ad)
    folds = per_fold(cv_objective, lambda o, h, k, d: hg.Reverse().value_and_grad(o, h, k, d), hparams, key)
    np.testing.assert_allclose(float(value), np.mean([float(v) for (v, _), _ in folds]), rtol=1e-13)
    for name in hparams:
        np.testing.assert_allclose(float(grads[name]), np.mean([float(g[name]) for _, g in folds]), rtol=1e-10)


def test_cv_forward_agrees_with_reverse(cv_objective, key):
    hparams = {k: jnp.asarray(v, jnp.float64) for k, v in HPARAMS.items()}
    value_r, grads_r = hg.hypergradient(cv_objective, hparams, key, method=hg.Reverse())
    value_f, grads_f = hg.hypergradient(cv_objective, hparams, key, method=hg.Forward())
    np.testing.assert_allclose(float(value_f), float(value_r), rtol=1e-13)
    for name in hparams:
        np.testing.assert_allclose(float(grads_f[name]), float(grads_r[name]), rtol=1e-9)


@pytest.mark.parametrize("method", [hg.Truncated(window=T), hg.Reverse(checkpoint_every=2)])
def test_cv_full_window_truncation_and_checkpointing_are_reverse(cv_objective, key, method):
    hparams = {k: jnp.asarray(v, jnp.float64) for k, v in HPARAMS.items()}
    _, grads_r = hg.hypergradient(cv_objective, hparams, key, method=hg.Reverse())
    _, grads = hg.hypergradient(cv_objective, hparams, key, method=method)
    for name in hparams:
        np.testing.assert_allclose(float(grads[name]), float(grads_r[name]), rtol=1e-12)


def test_cv_online_hypergradient_optimizer_trains_each_fold(cv_problem, key):
    objective = hg.Objective(cv_problem, lambda h: hg.online.sgd_hd(h["lr"], h["beta"]), num_steps=T)
    hparams = {"lr": jnp.asarray(0.2), "beta": jnp.asarray(0.01)}
    value, grads = hg.hypergradient(objective, hparams, key)
    alone = per_fold(objective, lambda o, h, k, d: o.loss_and_scores(h, k, d)[0], hparams, key)
    np.testing.assert_allclose(float(value), np.mean([float(a) for a in alone]), rtol=1e-12)
    assert all(np.isfinite(float(g)) for g in grads.values())


# -- strategies and compute ------------------------------------------------------------------------
def test_cv_random_search_trials_equal_single_evaluations(cv_objective, key):
    space = hg.Space({"lr": hg.LogUniform(0.05, 1.0), "weight_decay": hg.LogUniform(1e-4, 1e-1)})
    result = hg.random_search(cv_objective, space, key, num_trials=5, chunk_size=3)
    assert len(result.trials) == 5
    for trial in (result.trials[0], result.trials[4]):  # one from each chunk (the second is padded)
        alone = cv_objective.evaluate(trial.hparams, key)
        assert set(trial.scores) == set(alone)
        for name, value in alone.items():
            np.testing.assert_allclose(trial.scores[name], float(value), rtol=1e-12, atol=1e-12)
        assert trial.value == trial.scores["val_loss"]


def test_cv_tune_descends_the_fold_mean(cv_objective, key):
    space = hg.Space({"lr": hg.LogUniform(0.01, 1.0), "weight_decay": hg.LogUniform(1e-4, 1e-1)})
    result = hg.tune(cv_objective, space, key, steps=3, outer=optax.adam(0.1))
    first, last = result.trials[0], result.trials[-1]
    for trial in (first, last):  # every trial's value is the fold mean at its hyperparameters
        np.testing.assert_allclose(trial.value, float(cv_objective(trial.hparams, key)), rtol=1e-12)
    assert "val_loss_std" in first.scores and f"val_loss_fold{K - 1}" in first.scores
    assert all(np.isfinite(t.value) for t in result.trials)
    # It descends: every step lowers the fold mean (measured 0.963 -> 0.954 -> 0.945 -> 0.937), and
    # the last iterate is the best. An update of the wrong sign raises it at every step.
    values = [t.value for t in result.trials]
    assert all(after < before for before, after in zip(values, values[1:])), values
    assert last.value < 0.98 * first.value, values
    assert result.best_trial.number == last.number


def test_cv_run_flops_count_k_fits(logistic_problem, cv_problem, cv_objective, key):
    hparams = {k: jnp.asarray(v) for k, v in HPARAMS.items()}
    full_batch = with_cv(logistic_problem)
    single = hg.Objective(fold_problem(full_batch, 0), sgd, num_steps=T)
    cv_flops = run_flops(hg.Objective(full_batch, sgd, num_steps=T), hparams, key)
    # k fits, less what depends only on what the folds share (the key's split for initialisation,
    # the optimiser's scalar arithmetic on the shared hyperparameters, the one test set's labels):
    # the vmapped program does that once, and accounting counts it once
    fits = K * run_flops(single, hparams, key)
    assert 0.97 * fits < cv_flops < fits
    # with minibatches, the folds share the drawn indices: counted once, not k times
    minibatch_fit = run_flops(hg.Objective(fold_problem(cv_problem, 0), sgd, num_steps=T), hparams, key)
    assert 1.5 * minibatch_fit < run_flops(cv_objective, hparams, key) < K * minibatch_fit


# -- built-in problems ---------------------------------------------------------------------------------
def test_builtin_problems_pass_cv_with_stratified_labels():
    mlp = hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=32, cv=5)
    assert mlp.cv == 5 and mlp.num_train == 96 and mlp.data["val"][1].shape == (5, 24)
    for fold in np.asarray(mlp.data["val"][1]):  # 40 of each class pooled: 8 per fold
        assert np.array_equal(np.bincount(fold, minlength=3), [8, 8, 8])
    assert hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=32).cv is None
    logistic = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, cv=3)
    assert logistic.num_folds == 3 and logistic.data["val"][0].shape == (3, 15, 4)
    labels = pooled_labels(logistic)
    np.testing.assert_array_equal(logistic.fold_indices[0], kfold_indices(47, 3, labels, seed=0)[0])


# -- cv_results ------------------------------------------------------------------------------------------
def _trial(number, hparams, scores, state=COMPLETE, seconds=1.0):
    return Trial(number=number, hparams=hparams, value=scores.get("val_loss", float("nan")), scores=scores,
                 state=state, flops=1.0, seconds=seconds, run_flops=1.0)


def _cv_scores(fold_losses, fold_accuracies):
    losses, accs = np.asarray(fold_losses, float), np.asarray(fold_accuracies, float)
    scores = {"val_loss": losses.mean(), "val_loss_std": losses.std(),
              "val_accuracy": accs.mean(), "val_accuracy_std": accs.std(), "test_loss": 0.5}
    scores |= {f"val_loss_fold{i}": v for i, v in enumerate(losses)}
    scores |= {f"val_accuracy_fold{i}": v for i, v in enumerate(accs)}
    return scores


def test_cv_results_keys_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RandomizedSearchCV

    del sklearn
    x, y = np.random.default_rng(0).normal(size=(30, 2)), np.arange(30) % 2
    search = RandomizedSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, n_iter=3, cv=3, random_state=0)
    expected = search.fit(x, y).cv_results_
    result = Result("random", tuple(_trial(i, {"C": np.asarray(c)}, _cv_scores([0.5 + i, 0.6, 0.7], [0.9, 0.8, 1.0]))
                                    for i, c in enumerate([0.1, 1.0, 10.0])), 1.0, 0.0)
    ours = result.cv_results()
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert type(ours[name]) is type(value), name
        if name != "params":
            assert ours[name].shape == value.shape and ours[name].dtype.kind == value.dtype.kind, name
    assert ours["rank_test_score"].dtype == expected["rank_test_score"].dtype == np.int32


def test_cv_results_scores_ranks_and_params():
    scipy_stats = pytest.importorskip("scipy.stats")
    trials = (
        _trial(0, {"lr": np.asarray(0.1), "hidden": (50,), "activation": "relu", "sched": np.ones(3)},
               _cv_scores([0.3, 0.5], [0.9, 0.7]), seconds=2.0),
        _trial(1, {"lr": np.asarray(0.2), "hidden": (50, 50), "activation": "tanh", "sched": np.zeros(3)},
               _cv_scores([0.2, 0.4], [0.8, 0.8])),   # ties trial 0 on accuracy
        _trial(2, {"lr": np.asarray(0.3), "hidden": (100,), "activation": "relu", "sched": np.ones(3)},
               _cv_scores([np.nan, np.nan], [np.nan, np.nan]), state=FAIL),
        _trial(3, {"lr": np.asarray(0.4), "hidden": (100,), "activation": "relu", "sched": np.ones(3)},
               _cv_scores([0.1, 0.1], [0.95, 0.95])),
        _trial(4, {"lr": np.asarray(0.5), "hidden": (100,), "activation": "relu", "sched": np.ones(3)},
               _cv_scores([0.9, 0.9], [0.1, 0.1])),
    )
    result = Result("random", trials, 1.0, 0.0)
    out = result.cv_results()  # accuracy by default
    np.testing.assert_allclose(out["mean_test_score"], [0.8, 0.8, np.nan, 0.95, 0.1])
    np.testing.assert_allclose(out["split1_test_score"], [0.7, 0.8, np.nan, 0.95, 0.1])
    np.testing.assert_allclose(out["std_test_score"][[0, 1, 3, 4]],
                               np.std([[out[f"split{i}_test_score"][j] for i in range(2)] for j in (0, 1, 3, 4)],
                                      axis=1))
    # scikit-learn: NaN means are set below the worst and ranked with rankdata(-x, method="min")
    means = out["mean_test_score"]
    reference = scipy_stats.rankdata(-np.nan_to_num(means, nan=np.nanmin(means) - 1), method="min")
    np.testing.assert_array_equal(out["rank_test_score"], reference)
    np.testing.assert_array_equal(out["rank_test_score"], [2, 2, 5, 1, 4])
    np.testing.assert_allclose(out["mean_fit_time"], [1.0, 0.5, 0.5, 0.5, 0.5])  # per fold
    assert not out["std_fit_time"].any() and not out["mean_score_time"].any()
    # params: Python numbers for scalars, arrays for shaped values, other objects as they are
    assert out["params"][1]["lr"] == 0.2 and type(out["params"][1]["lr"]) is float
    assert out["params"][1]["hidden"] == (50, 50) and out["params"][1]["activation"] == "tanh"
    assert out["param_hidden"].dtype == object and out["param_hidden"][0] == (50,)
    assert list(out["param_activation"]) == ["relu", "tanh", "relu", "relu", "relu"]
    np.testing.assert_array_equal(out["param_sched"][1], np.zeros(3))
    assert not np.ma.getmaskarray(out["param_lr"]).any() and out["param_lr"].dtype == np.float64
    # the loss, higher is better
    loss = result.cv_results("loss")
    np.testing.assert_allclose(loss["mean_test_score"], [-0.4, -0.3, np.nan, -0.1, -0.9])
    np.testing.assert_allclose(loss["split0_test_score"], [-0.3, -0.2, np.nan, -0.1, -0.9])
    np.testing.assert_allclose(loss["std_test_score"][0], 0.1)
    np.testing.assert_array_equal(loss["rank_test_score"], [3, 2, 5, 1, 4])
    np.testing.assert_array_equal(result.cv_results("accuracy")["rank_test_score"], out["rank_test_score"])
    with pytest.raises(ValueError, match=r"metric='f1'.*\['accuracy', 'loss'\]"):
        result.cv_results("f1")


def test_cv_results_without_cv_and_with_missing_params(logistic_problem, key):
    objective = hg.Objective(logistic_problem, sgd, num_steps=T)
    space = hg.Space({"lr": hg.LogUniform(0.05, 1.0), "weight_decay": hg.LogUniform(1e-4, 1e-1)})
    result = hg.random_search(objective, space, key, num_trials=3)
    out = result.cv_results()
    assert not any(name.startswith("split") for name in out)
    np.testing.assert_allclose(out["mean_test_score"], [t.scores["val_accuracy"] for t in result.trials])
    assert not out["std_test_score"].any()
    assert sorted(out["rank_test_score"]) == sorted(
        1 + np.sum(np.asarray(out["mean_test_score"])[None, :] > np.asarray(out["mean_test_score"])[:, None], 1))
    np.testing.assert_allclose(result.cv_results("loss")["mean_test_score"], [-t.value for t in result.trials])
    # trials from groups with different hyperparameters: masked where absent, as scikit-learn
    mixed = Result("mixed", (_trial(0, {"a": np.asarray(1.0)}, {"val_loss": 0.5}),
                             _trial(1, {"b": np.asarray(2)}, {"val_loss": 0.25})), 1.0, 0.0)
    table = mixed.cv_results()
    assert list(np.ma.getmaskarray(table["param_a"])) == [False, True] and table["param_a"].dtype == object
    assert table["param_b"][1] == 2 and type(table["param_b"][1]) is int
    np.testing.assert_array_equal(table["rank_test_score"], [2, 1])
    all_failed = Result("x", (_trial(0, {}, {"val_loss": float("nan")}, state=FAIL),), 1.0, 0.0)
    np.testing.assert_array_equal(all_failed.cv_results()["rank_test_score"], [1])


def test_explicit_folds_equal_the_same_folds_by_hand(logistic_problem):
    """cv=[(train, val), ...] (scikit-learn's split) stacks exactly those folds, and the cv objective's
    per-fold scores equal single-split objectives built on the same arrays."""
    from sklearn.model_selection import KFold  # test extra
    pooled = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]),
                          logistic_problem.train_data, logistic_problem.val_data)
    n = len(pooled[1])
    splits = [(tr[:30], va[:15]) for tr, va in KFold(3, shuffle=True, random_state=0).split(np.zeros(n))]
    problem = dataclasses.replace(logistic_problem, train_data=pooled, val_data=pooled, cv=splits)
    assert problem.num_folds == 3 and problem.num_train == 30
    val_idx, train_idx = problem.fold_indices
    for i, (tr, va) in enumerate(splits):
        np.testing.assert_array_equal(problem.data["train"][0][i], pooled[0][tr])
        np.testing.assert_array_equal(problem.data["val"][1][i], pooled[1][va])
        np.testing.assert_array_equal(val_idx[i], va)
    scores = hg.Objective(problem, sgd, num_steps=T).evaluate(HPARAMS, jax.random.key(0))
    for i, (tr, va) in enumerate(splits):
        take = lambda idx: jax.tree.map(lambda a: a[idx], pooled)  # noqa: E731
        single = dataclasses.replace(logistic_problem, train_data=take(tr), val_data=take(va))
        alone = hg.Objective(single, sgd, num_steps=T).evaluate(HPARAMS, jax.random.key(0))
        np.testing.assert_allclose(scores[f"val_loss_fold{i}"], alone["val_loss"], rtol=1e-10)
    # with_fixed (which rebuilds the problem) keeps the explicit folds
    assert np.array_equal(problem.with_fixed({}).fold_indices[0], val_idx)


def test_explicit_folds_index_each_split_of_its_own_structure(logistic_problem):
    """Explicit folds gather train rows from train_data and val rows from val_data, which may differ
    in structure (a weight column only in training, say)."""
    x, y = logistic_problem.train_data
    train = (x, y, np.ones(len(y)))
    folds = [(np.arange(0, 20), np.arange(0, 5)), (np.arange(10, 30), np.arange(5, 10))]
    problem = dataclasses.replace(logistic_problem, train_data=train, cv=folds,
                                  train_loss=lambda p, h, b: logistic_problem.train_loss(p, h, b[:2]))
    assert problem.data["train"][2].shape == (2, 20) and len(problem.data["val"]) == 2
    np.testing.assert_array_equal(problem.data["val"][0][1], np.asarray(logistic_problem.val_data[0])[5:10])
    np.testing.assert_array_equal(problem.data["train"][0][1], np.asarray(x)[10:30])


def test_a_batch_larger_than_an_explicit_fold_says_so_without_pooling(logistic_problem):
    # explicit folds index train_data and val_data; the message spoke of "pooled train + val examples"
    folds = [(np.arange(0, 20), np.arange(0, 5)), (np.arange(10, 30), np.arange(5, 10))]
    with pytest.raises(ValueError, match=r"larger than the 20 examples each of the 2 explicit folds trains on "
                                         r"\(validation folds of 5\)") as refused:
        dataclasses.replace(logistic_problem, cv=folds, batch_size=21)
    assert "pooled" not in str(refused.value)


@pytest.mark.parametrize("cv,match", [
    ([(np.arange(5), np.arange(5, 8))], r"lists 1 fold\(s\); give at least 2"),
    ([(np.arange(5), np.arange(5, 8)), (np.arange(4), np.arange(5, 8))], r"sizes \[\(4, 3\), \(5, 3\)\]"),
    ([(np.arange(5), np.arange(9, 12)), (np.arange(5), np.arange(5, 8))], r"fold 0: val indices must lie in \[0, 11\)"),
    ([(np.arange(5.0), np.arange(5, 8)), (np.arange(5), np.arange(5, 8))], r"fold 0: train indices must be"),
    ([1, 2], r"must list \(train_indices, val_indices\) pairs"),
])
def test_bad_explicit_folds(logistic_problem, cv, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(logistic_problem, cv=cv)
