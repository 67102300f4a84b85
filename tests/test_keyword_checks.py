"""Keywords of Problem, Objective, Loop and the structural-choice check that were unchecked, raised a
raw error, or were refused with the wrong reason (hunt KWARGS, F2, F4 and F5): each is now refused
before anything compiles, naming the argument, its value and the fix."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg


def _mse(params, batch):
    x, y = batch
    return jnp.mean((params["w"] * x - y) ** 2)


def _problem(**overrides):
    x = jnp.arange(12, dtype=jnp.float64)
    kwargs = dict(init=lambda key: {"w": jnp.zeros(())}, train_loss=lambda params, hparams, batch: _mse(params, batch),
                  val_loss=_mse, train_data=(x, 2.0 * x), val_data=(x[:4], 2.0 * x[:4]))
    kwargs.update(overrides)
    return hg.Problem(**kwargs)


# -- F2: cv_seed seeds only the folds of cv=k; elsewhere any value was accepted, unchecked ---------
@pytest.mark.parametrize("cv", [None, "folds", 3], ids=["no cv", "explicit folds", "cv=3"])
@pytest.mark.parametrize("seed", [-1, "x", 2.5, True])
def test_a_cv_seed_that_is_no_seed_is_refused_whatever_cv_is(seed, cv):
    folds = [(np.arange(0, 6), np.arange(0, 2)), (np.arange(6, 12), np.arange(2, 4))]
    with pytest.raises(ValueError, match=r"Problem\(cv_seed=.*\) must be an int >= 0 \(the seed of the folds of cv=k\)"):
        _problem(cv=folds if cv == "folds" else cv, cv_seed=seed)


def test_cv_seed_seeds_cv_k_and_the_builders_keep_their_identity():
    """A valid cv_seed without cv is kept (it is part of the objective's identity: the built-in
    problems pass their data seed there, and a stored study of logistic(seed=3) must still match)."""
    assert _problem().cv_seed == 0 and _problem(cv_seed=np.int64(0)).num_folds == 1
    a, b = _problem(cv=4, cv_seed=1), _problem(cv=4, cv_seed=2)
    assert not np.array_equal(a.fold_indices[0], b.fold_indices[0])
    assert hg.problems.logistic("iris", seed=3).cv_seed == 3
    assert hg.problems.logistic("iris", seed=3, cv=3).cv_seed == 3


# -- F4: checkpoint_every of the public training entry points raised raw errors -------------------
@pytest.fixture(scope="module")
def objective():
    return hg.Objective(_problem(), lambda h: optax.sgd(h["lr"]), num_steps=6)


_BAD = [(0, "ZeroDivisionError"), (-1, "reshape"), (2.5, "float"), (True, "bool"), ("3", "str")]


@pytest.mark.parametrize("value", [v for v, _ in _BAD], ids=[why for _, why in _BAD])
@pytest.mark.parametrize("where", ["Objective.run", "Objective.loss_and_scores", "Loop.train", "Loop.run"])
def test_a_bad_checkpoint_every_is_refused_naming_the_entry_point(objective, key, where, value):
    h = {"lr": jnp.asarray(0.1)}
    data = objective.problem.data
    calls = {"Objective.run": lambda: objective.run(h, key, data, checkpoint_every=value),
             "Objective.loss_and_scores": lambda: objective.loss_and_scores(h, key, data, checkpoint_every=value),
             "Loop.train": lambda: objective.loop().train(h, key, checkpoint_every=value),
             "Loop.run": lambda: objective.loop().run(objective.loop().init(h, key), h, 0, 6,
                                                      checkpoint_every=value)}
    with pytest.raises(ValueError, match=rf"{where.replace('.', '[.]')}\(checkpoint_every={value!r}\) must be a "
                                         r"positive int \(try about sqrt\(num_steps\)\) or None"):
        calls[where]()


def test_a_valid_checkpoint_every_gives_the_same_loss(objective, key):
    h = {"lr": jnp.asarray(0.1)}
    data = objective.problem.data
    plain = objective.loss_and_scores(h, key, data)[0]
    for k in (2, np.int64(4), 50):
        assert float(objective.loss_and_scores(h, key, data, checkpoint_every=k)[0]) == pytest.approx(float(plain),
                                                                                                      rel=1e-12)


# -- F5: numbers made structural with one objective were called "not numbers" ---------------------
def test_numeric_structural_choice_with_one_objective_gives_the_right_reason_and_fix(objective, key):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Choice([0.0, 0.5], structural=True)})
    with pytest.raises(ValueError, match=r"choices \['momentum'\] have numbers as options but were made structural"
                                         r".*drop structural=True.*or pass an hg.Structured") as err:
        hg.random_search(objective, space, key, 2)
    assert "not numbers" not in str(err.value)


def test_mixed_structural_choices_give_each_its_reason(objective, key):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Choice([0.0, 0.5], structural=True),
                      "act": hg.Choice(["tanh", "relu"])})
    with pytest.raises(ValueError, match=r"structural choices \['act'\] change the program \(their options are not "
                                         r"numbers\).*; and the space's choices \['momentum'\] have numbers"):
        hg.random_search(objective, space, key, 2)


def test_methods_keep_a_numpy_checkpoint_every_as_given():
    """A method is part of a stored study's identity (described with its fields' types): checking
    checkpoint_every must not convert np.int64(2) to 2, or studies stored with it are refused as
    'arguments.method.checkpoint_every differs' (review R3 of 8c384ea)."""
    from hypergrad._store_codec import identity

    for method in (hg.Reverse(checkpoint_every=np.int64(2)), hg.Truncated(3, checkpoint_every=np.int64(2))):
        assert type(method.checkpoint_every) is np.int64
        assert "int64" in str(identity(method))
