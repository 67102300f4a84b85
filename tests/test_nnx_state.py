"""flax.nnx models with state beside their Params (BatchNorm's running statistics, Dropout's RNG):
hypergrad trains the `nnx.Param` leaves only and holds the rest fixed, as eval-mode inference
does, because the loop carries no state a forward pass updates and no per-step dropout key. A
model in train mode, a whole state holding batch statistics, and a `make_model` that returns
None are refused before anything compiles, naming the fix (hunt C, findings 1-4)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hypergrad as hg
from _helpers import import_experiment
from hypergrad.loop import check_no_keys

MEAN, VAR = 0.3, 2.0  # "pretrained" running statistics, far from BatchNorm's initial 0 and 1


class BNNet(nnx.Module):
    """Linear -> BatchNorm -> tanh -> Linear, float64, in train mode unless told otherwise."""

    def __init__(self, rngs, dropout=False):
        self.l1 = nnx.Linear(4, 6, param_dtype=jnp.float64, rngs=rngs)
        self.bn = nnx.BatchNorm(6, param_dtype=jnp.float64, rngs=rngs)
        self.do = nnx.Dropout(0.5, rngs=rngs) if dropout else None
        self.l2 = nnx.Linear(6, 3, param_dtype=jnp.float64, rngs=rngs)
        self.bn.mean = nnx.BatchStat(jnp.full(6, MEAN))  # float64 (flax makes them float32)
        self.bn.var = nnx.BatchStat(jnp.full(6, VAR))

    def __call__(self, x):
        h = jnp.tanh(self.bn(self.l1(x)))
        return self.l2(h if self.do is None else self.do(h))


def _eval_model(rngs, dropout=False):
    model = BNNet(rngs, dropout)
    model.eval()
    return model


def _splits(n=(24, 12, 12)):
    rng = np.random.default_rng(0)
    out = []
    for size in n:
        x = rng.normal(size=(size, 4)) * 2.0 + 1.0
        out.append((x, (x[:, 0] + x[:, 1] > 2.0).astype(np.int32) + (x[:, 2] > 1.0)))
    return out


def _paths(tree):
    return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


def test_nnx_problem_trains_the_params_of_an_eval_mode_batchnorm_model_and_holds_its_statistics():
    """The whole state used to be trained: adamw's weight decay moved the running variance like a
    weight, and scores used those moved statistics."""
    train, val, test = _splits()
    problem = hg.problems.nnx_problem(_eval_model, train, val, test, batch_size=8)
    assert not any("mean" in p or "var" in p for p in _paths(problem.init(jax.random.key(0))))
    objective = hg.Objective(problem, lambda h: optax.adamw(h["lr"], weight_decay=h["wd"]), num_steps=6)
    hparams = {"lr": jnp.asarray(0.05), "wd": jnp.asarray(0.5)}
    trained = objective.train(hparams, jax.random.key(1))
    model = _eval_model(nnx.Rngs(0))
    nnx.update(model, trained)
    np.testing.assert_array_equal(model.bn.mean[...], MEAN)
    np.testing.assert_array_equal(model.bn.var[...], VAR)
    expected = optax.softmax_cross_entropy_with_integer_labels(model(val[0]), val[1]).mean()
    np.testing.assert_allclose(problem.val_loss(trained, val), expected, rtol=1e-12)


def test_hypergradient_through_an_eval_mode_batchnorm_model_matches_central_differences():
    train, val, _ = _splits()
    problem = hg.problems.nnx_problem(_eval_model, train, val, batch_size=None)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=0.5), num_steps=5)
    hparams = {"lr": jnp.asarray(0.2), "weight_decay": jnp.asarray(0.05)}
    key = jax.random.key(2)
    value, grads = hg.hypergradient(objective, hparams, key)
    np.testing.assert_allclose(value, objective(hparams, key), rtol=1e-12)
    eps = 1e-6
    for name in hparams:
        up = objective({**hparams, name: hparams[name] + eps}, key)
        down = objective({**hparams, name: hparams[name] - eps}, key)
        np.testing.assert_allclose(grads[name], (up - down) / (2 * eps), rtol=1e-6, err_msg=name)
    assert abs(float(grads["lr"])) > 1e-4  # a real check, not 0 == 0


@pytest.mark.parametrize("dropout", [False, True])
def test_nnx_problem_refuses_a_model_in_train_mode_naming_eval(dropout):
    """BatchNorm in train mode lost its running-average update every step; Dropout in train mode
    was refused for its RNG key with a recipe nnx_problem's caller cannot follow."""
    train, val, _ = _splits()
    with pytest.raises(ValueError, match=r"nnx_problem\(make_model=...\): the model is in train mode.*"
                                         r"(BatchStat|RngCount).*no per-step dropout key.*model\.eval\(\).*"
                                         r"use_running_average=True.*deterministic=True"):
        hg.problems.nnx_problem(lambda rngs: BNNet(rngs, dropout), train, val)


def test_nnx_problem_takes_an_eval_mode_model_with_dropout_and_runs_it_without_dropout():
    train, val, _ = _splits()
    problem = hg.problems.nnx_problem(lambda rngs: _eval_model(rngs, dropout=True), train, val, batch_size=8)
    assert not any("rngs" in p for p in _paths(problem.init(jax.random.key(0))))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=4)
    trained = objective.train({"lr": jnp.asarray(0.1)}, jax.random.key(0))
    model = _eval_model(nnx.Rngs(0), dropout=True)
    nnx.update(model, trained)
    np.testing.assert_allclose(problem.val_loss(trained, val),
                               optax.softmax_cross_entropy_with_integer_labels(model(val[0]), val[1]).mean(),
                               rtol=1e-12)


def test_nnx_problem_names_make_model_when_it_returns_none():
    """`lambda rngs: Net(rngs).eval()` returns None (nnx's eval returns None): a bare TypeError."""
    train, val, _ = _splits()
    with pytest.raises(ValueError, match=r"make_model\(rngs\) returned NoneType.*model\.eval\(\) returns None"):
        hg.problems.nnx_problem(lambda rngs: BNNet(rngs).eval(), train, val)


def test_a_whole_state_with_batch_statistics_is_refused_by_finetune_and_the_loop():
    """finetune with `nnx.split(model)[1]` trained the statistics as a parameter group: weight
    decay drove the variance negative and every value NaN."""
    train, val, test = _splits()
    graphdef, state = nnx.split(_eval_model(nnx.Rngs(0)))

    def apply(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss(params, batch):
        return optax.softmax_cross_entropy_with_integer_labels(apply(params, batch[0]), batch[1]).mean()

    message = r"holds an nnx.BatchStat at \"\['bn'\]\['mean'\]\".*model\.eval\(\).*nnx\.split\(model, nnx\.Param"
    with pytest.raises(ValueError, match="pretrained " + message):
        hg.problems.finetune(state, (train, val, test), apply)
    problem = hg.Problem(init=lambda key: state, train_loss=lambda p, h, b: loss(p, b), val_loss=loss,
                         train_data=train, val_data=val)
    with pytest.raises(ValueError, match="the parameter pytree " + message):
        hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)({"lr": jnp.asarray(0.1)}, jax.random.key(0))


@pytest.mark.parametrize("dropout", [False, True])
def test_finetune_refuses_an_apply_in_train_mode_naming_eval(dropout):
    """The documented recipe without `model.eval()` raised flax's TraceContextError from inside."""
    graphdef, params, rest = nnx.split(BNNet(nnx.Rngs(0), dropout), nnx.Param, ...)
    with pytest.raises(ValueError, match=r"finetune\(apply=...\).*(BatchStat|RngCount).*train mode.*"
                                         r"no per-step dropout key.*model\.eval\(\)"):
        hg.problems.finetune(params, _splits(), lambda p, x: nnx.merge(graphdef, p, rest)(x))


def test_the_finetune_recipe_holds_the_statistics_fixed_under_heavy_weight_decay():
    """The module docstring's recipe: eval mode, Params only; weight_decay=1 used to make NaN."""
    model = _eval_model(nnx.Rngs(0), dropout=True)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    problem = hg.problems.finetune(params, _splits(), lambda p, x: nnx.merge(graphdef, p, rest)(x))
    groups = hg.problems.layer_groups(params)
    assert list(groups) == ["bn", "l1", "l2"]
    objective = hg.Objective(problem, hg.problems.group_sgd(groups), num_steps=5)
    hparams = {"lr": jnp.full((3,), 0.1), "weight_decay": jnp.asarray(1.0)}
    trained = objective.train(hparams, jax.random.key(0))
    assert np.isfinite(objective(hparams, jax.random.key(0)))
    assert not np.array_equal(trained["l1"]["kernel"][...], params["l1"]["kernel"][...])
    np.testing.assert_array_equal(rest["bn"]["mean"][...], MEAN)
    np.testing.assert_array_equal(rest["bn"]["var"][...], VAR)


def test_the_prng_key_refusal_advises_eval_mode_before_the_split():
    """Its advice (split the Params, merge with the rest) crashed for a model in train mode."""
    with pytest.raises(ValueError, match=re.escape("call model.eval() first") + r".*nnx\.split\(model, nnx\.Param"):
        check_no_keys({"w": jnp.zeros(2), "rng": jax.random.key(0)})


def _hand_built(train_model, val_model=None):
    """An `hg.Problem` written by hand over `train_model`'s Params (its split's rest closed over),
    validating with `val_model`'s apply (default: the same)."""
    train, val, test = _splits()

    def loss_of(model):
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)

        def loss(params, batch):
            logits = nnx.merge(graphdef, params, rest)(batch[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
        return loss

    train_loss, val_loss = loss_of(train_model), loss_of(val_model or train_model)
    return hg.Problem(init=lambda key: nnx.split(BNNet(nnx.Rngs(key)), nnx.Param, ...)[1],
                      train_loss=lambda p, h, b: train_loss(p, b), val_loss=val_loss,
                      train_data=train, val_data=val, test_data=test, batch_size=8)


TRAIN_MODE = (r"Problem\(train_loss=...\) updates a flax.nnx model's state \(flax: 'Cannot mutate {what} .*train "
              r"mode.*no per-step dropout key.*model\.eval\(\).*use_running_average=True.*deterministic=True.*"
              r"nnx\.split\(model, nnx\.Param, \.\.\.\)")


def _train_mode(rngs, dropout):
    """BatchNorm in train mode; or, with `dropout`, BatchNorm in eval mode and Dropout in train mode."""
    model = BNNet(rngs, dropout)
    model.bn.use_running_average = dropout
    return model


@pytest.mark.parametrize("dropout", [False, True])
def test_a_hand_built_problem_over_a_train_mode_model_is_refused_at_its_first_trace_naming_eval(dropout):
    """nnx_problem and finetune refuse a model in train mode, but an hg.Problem written by hand
    over one failed inside the training step with flax's raw TraceContextError (hunt C, finding 2).
    The refusal comes while the program is traced (make_jaxpr compiles nothing), for the objective,
    a hypergradient and a vmapped search alike."""
    objective = hg.Objective(_hand_built(_train_mode(nnx.Rngs(0), dropout)), lambda h: optax.sgd(h["lr"]),
                             num_steps=3)
    hparams, key = {"lr": jnp.asarray(0.1)}, jax.random.key(0)
    message = TRAIN_MODE.format(what="RngCount" if dropout else "BatchStat")
    with pytest.raises(ValueError, match=message):
        jax.make_jaxpr(lambda h: objective(h, key))(hparams)
    with pytest.raises(ValueError, match=message):
        hg.hypergradient(objective, hparams, key)
    with pytest.raises(ValueError, match=message):
        hg.random_search(objective, hg.Space({"lr": hg.LogUniform(0.01, 1.0)}), key, num_trials=2)


def test_a_train_mode_model_in_val_loss_alone_is_refused_naming_val_loss():
    objective = hg.Objective(_hand_built(_eval_model(nnx.Rngs(0)), BNNet(nnx.Rngs(0))),
                             lambda h: optax.sgd(h["lr"]), num_steps=2)
    with pytest.raises(ValueError, match=r"Problem\(val_loss=...\).*'Cannot mutate BatchStat.*model\.eval\(\)"):
        objective({"lr": jnp.asarray(0.1)}, jax.random.key(0))


def test_the_same_hand_built_problem_in_eval_mode_trains_and_other_errors_pass_unchanged():
    """The refusal is narrow: eval mode runs, and an error of the user's own is not reworded."""
    objective = hg.Objective(_hand_built(_eval_model(nnx.Rngs(0), dropout=True)), lambda h: optax.sgd(h["lr"]),
                             num_steps=3)
    assert np.isfinite(objective({"lr": jnp.asarray(0.1)}, jax.random.key(0)))

    def broken(params, hparams, batch):
        raise ZeroDivisionError("the user's own bug")

    train, val, _ = _splits()
    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(2)}, train_loss=broken, val_loss=lambda p, b: p["w"].sum(),
                         train_data=train, val_data=val)
    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)({"lr": jnp.asarray(0.1)}, jax.random.key(0))


class _ResidualWithState(nnx.Module):
    """The constructor of experiments/custom_nnx_model.py's ResidualMLP, with BatchNorm and Dropout
    (in train mode until `eval()`)."""

    def __init__(self, d_in, width, num_classes, *, rngs):
        self.embed = nnx.Linear(d_in, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.do = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.head(self.do(jnp.tanh(self.bn(self.embed(x)))))


def test_the_custom_nnx_model_experiment_splits_the_params_of_an_eval_mode_model(monkeypatch):
    """experiments/custom_nnx_model.py, the README's example of a user's own model, trained
    `nnx.split(model)[1]`, the whole state: copied onto a model with BatchNorm or Dropout, that is
    refused (batch statistics, an RNG key). Its recipe is now the Params of the model in eval mode,
    which for its own model (Params only) is the very pytree it trained before, so its results stay."""
    experiment = import_experiment("custom_nnx_model")
    key = jax.random.key(3)
    problem = experiment.build_problem(4, batch_size=32)
    d_in = problem.train_data[0].shape[1]
    whole = nnx.split(experiment.ResidualMLP(d_in, 4, 10, rngs=nnx.Rngs(key)))[1]
    params = problem.init(key)
    assert jax.tree.structure(params) == jax.tree.structure(whole)
    jax.tree.map(np.testing.assert_array_equal, params, whole)

    monkeypatch.setattr(experiment, "ResidualMLP", _ResidualWithState)
    problem = experiment.build_problem(4, batch_size=32)
    params = problem.init(key)
    assert not any("mean" in p or "var" in p or "rngs" in p for p in _paths(params))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(1e-3)}
    assert np.isfinite(objective(hparams, key))
