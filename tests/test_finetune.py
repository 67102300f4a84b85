"""Fine-tuning problems (hypergrad/problems/finetune.py) and offline pretrained models
(hypergrad/problems/pretrained.py): exact initialisation, L2-SP, per-group rates and freezing,
float64 hypergradients against finite differences, and the on-disk cache (a temporary folder)."""

import importlib
import os
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import hypergrad as hg
from hypergrad.problems import cnn
from hypergrad.problems import pretrained as pre

ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

D, H, C = 4, 5, 3


def _tiny_pretrained(seed=0):
    rng = np.random.default_rng(seed)
    return {"body": {"w": rng.normal(size=(D, H)), "b": rng.normal(size=(H,)) * 0.1},
            "head": {"w": rng.normal(size=(H, C)) * 0.5, "b": np.zeros(C)}}


def _apply(params, x):
    h = jnp.tanh(x @ params["body"]["w"] + params["body"]["b"])
    return h @ params["head"]["w"] + params["head"]["b"]


def _task(seed=0, n=(24, 12, 12)):
    rng = np.random.default_rng(seed)
    splits = []
    for size in n:
        x = rng.normal(size=(size, D))
        splits.append((x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)))
    return tuple(splits)


def _new_head(key, params):
    return {**params, "head": {"w": 0.3 * jax.random.normal(key, (H, C)), "b": jnp.zeros(C)}}


@pytest.fixture(scope="module")
def tiny():
    return _tiny_pretrained(), ft.finetune(_tiny_pretrained(), _task(), _apply)


def test_init_returns_the_pretrained_values_exactly(tiny):
    pretrained, problem = tiny
    params = problem.init(jax.random.key(3))
    assert jax.tree.structure(params) == jax.tree.structure(pretrained)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(pretrained)):
        assert got.dtype == want.dtype and np.array_equal(np.asarray(got), want)


def test_a_fresh_head_comes_from_the_key_and_the_body_stays_exact():
    pretrained = _tiny_pretrained()
    problem = ft.finetune(pretrained, _task(), _apply, head=_new_head, groups={"body": "body", "head": "head"})
    a, b = problem.init(jax.random.key(0)), problem.init(jax.random.key(1))
    assert np.array_equal(a["body"]["w"], pretrained["body"]["w"])
    assert not np.array_equal(a["head"]["w"], b["head"]["w"])
    assert np.array_equal(a["head"]["w"], problem.init(jax.random.key(0))["head"]["w"])


def test_nnx_state_is_returned_exactly(tmp_path):
    graphdef, state = pre.pretrained_digits_mlp((8,), steps=3, cache=tmp_path)
    problem = pre.digits_transfer(5, hidden=(8,), fresh_head=False, cache=tmp_path, pretrain_steps=3)
    params = problem.init(jax.random.key(0))
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(state)):
        assert np.array_equal(np.asarray(got), np.asarray(want, got.dtype))  # float32 values, cast up exactly


def _penalty_grad(problem, params, alpha, batch):
    def penalty(p):
        return problem.train_loss(p, {"l2sp": alpha}, batch) - problem.train_loss(p, {}, batch)
    return penalty, jax.grad(penalty)(params)


def test_l2sp_gradient_equals_finite_differences_and_vanishes_at_the_pretrained_point(tiny):
    pretrained, problem = tiny
    batch = problem.train_data
    params = jax.tree.map(lambda w: w + 0.1 * np.cos(np.arange(w.size).reshape(w.shape)), pretrained)
    penalty, grads = _penalty_grad(problem, params, 0.7, batch)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    eps = 1e-6
    for i in range(0, flat.size, 5):
        e = jnp.zeros_like(flat).at[i].set(eps)
        fd = (penalty(unravel(flat + e)) - penalty(unravel(flat - e))) / (2 * eps)
        assert jnp.allclose(fd, jax.flatten_util.ravel_pytree(grads)[0][i], rtol=1e-6, atol=1e-8)
    for g, w, w0 in zip(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(pretrained)):
        np.testing.assert_allclose(g, 0.7 * (w - w0), rtol=1e-12)  # alpha (w - w_pretrained)
    _, at_start = _penalty_grad(problem, jax.tree.map(jnp.asarray, pretrained), 0.7, batch)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(at_start))


def test_l2sp_skips_the_new_head_and_weight_decay_reaches_every_group():
    problem = ft.finetune(_tiny_pretrained(), _task(), _apply, head=_new_head, groups={"body": "body", "head": "head"})
    params = jax.tree.map(lambda w: w + 1.0, problem.init(jax.random.key(0)))
    _, grads = _penalty_grad(problem, params, jnp.asarray([0.5, 2.0]), problem.train_data)
    assert np.all(np.asarray(grads["head"]["w"]) == 0) and np.all(np.asarray(grads["body"]["w"]) != 0)
    wd = jax.grad(lambda p: problem.train_loss(p, {"weight_decay": 0.3}, problem.train_data)
                  - problem.train_loss(p, {}, problem.train_data))(params)
    np.testing.assert_allclose(wd["head"]["w"], 0.3 * params["head"]["w"], rtol=1e-12)


def test_rates_per_group_change_only_their_group_and_zero_freezes_bitwise(tiny):
    pretrained, problem = tiny
    groups = {"body": "body", "head": "head"}
    objective = hg.Objective(problem, ft.group_sgd(groups), num_steps=6)
    key = jax.random.key(0)
    frozen = objective.train({"lr": jnp.asarray([0.0, 0.1]), "l2sp": 0.1, "weight_decay": 0.01}, key)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(frozen["body"]), jax.tree.leaves(pretrained["body"])))
    assert not np.array_equal(frozen["head"]["w"], pretrained["head"]["w"])
    opt = ft.group_sgd(groups)
    params = jax.tree.map(jnp.asarray, pretrained)
    grads = jax.grad(problem.train_loss)(params, {}, problem.train_data)
    one = opt({"lr": jnp.asarray([0.05, 0.1])}).update(grads, opt({}).init(params), params)[0]
    two = opt({"lr": jnp.asarray([0.05, 0.7])}).update(grads, opt({}).init(params), params)[0]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(one["body"]), jax.tree.leaves(two["body"])))
    assert not np.array_equal(one["head"]["w"], two["head"]["w"])


def test_freeze_choice_zeroes_the_lowest_groups(tiny):
    pretrained, problem = tiny
    objective = hg.Objective(problem, ft.group_sgd({"body": "body", "head": "head"}), num_steps=4)
    params = objective.train({"lr": jnp.asarray(0.1), "freeze": jnp.asarray(1)}, jax.random.key(0))
    assert np.array_equal(params["body"]["w"], pretrained["body"]["w"])
    assert not np.array_equal(params["head"]["w"], pretrained["head"]["w"])


def test_group_rates_layerwise_decay_warmup_and_schedules():
    rates = ft.group_rates({"lr": 0.2, "lr_decay": 0.5}, jnp.asarray(0), 3)
    np.testing.assert_allclose(rates, [0.05, 0.1, 0.2], rtol=1e-12)
    schedule = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(ft.group_rates({"lr": schedule}, jnp.asarray(1), 2), [1.0, 4.0])
    np.testing.assert_allclose(ft.group_rates({"lr": schedule}, jnp.asarray(9), 2), [2.0, 5.0])  # held at the end
    ramp = [float(ft.warmup_ramp(t, 4.0)) for t in range(6)]
    np.testing.assert_allclose(ramp, [0.4375, 0.75, 0.9375, 1.0, 1.0, 1.0])
    assert float(ft.warmup_ramp(0, 0.0)) == 1.0 and np.isfinite(jax.grad(ft.warmup_ramp, 1)(0, 0.0))
    cosine = ft.group_rates({"lr": 1.0}, jnp.asarray(5), 1, num_steps=10, cosine=True)
    np.testing.assert_allclose(cosine, [0.5], atol=1e-12)


def _fd_check(objective, hparams, key, names, eps=1e-5):
    _, grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    for name in names:
        value = np.asarray(hparams[name], np.float64)
        for i in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[i] += eps
            down[i] -= eps
            fd = (objective({**hparams, name: jnp.asarray(up)}, key)
                  - objective({**hparams, name: jnp.asarray(down)}, key)) / (2 * eps)
            np.testing.assert_allclose(np.asarray(grads[name])[i], fd, rtol=1e-5, atol=1e-9, err_msg=f"{name}{i}")


def test_hypergradients_of_layer_rates_l2sp_and_warmup_equal_finite_differences():
    problem = ft.finetune(_tiny_pretrained(), _task(), _apply, head=_new_head, groups={"body": "body", "head": "head"})
    objective = hg.Objective(problem, ft.group_sgd({"body": "body", "head": "head"}), num_steps=8)
    hparams = {"lr": jnp.asarray([0.05, 0.2]), "l2sp": jnp.asarray(0.3), "weight_decay": jnp.asarray(0.01),
               "warmup": jnp.asarray(3.4), "lr_decay": jnp.asarray(0.8), "momentum": jnp.asarray(0.5)}
    _fd_check(objective, hparams, jax.random.key(1), ["lr", "l2sp", "weight_decay", "warmup", "lr_decay", "momentum"])


def test_hypergradient_of_per_group_l2sp_on_the_nnx_transfer_problem(tmp_path):
    problem = pre.digits_transfer(5, hidden=(6,), cache=tmp_path, pretrain_steps=20)
    groups = ft.layer_groups(problem.init(jax.random.key(0)))
    assert list(groups) == ["layers/0", "layers/1"]
    objective = hg.Objective(problem, ft.group_sgd(groups), num_steps=5)
    hparams = {"lr": jnp.asarray([0.02, 0.1]), "l2sp": jnp.asarray([0.5, 0.2])}
    _fd_check(objective, hparams, jax.random.key(0), ["lr", "l2sp"])


def _counting(monkeypatch):
    calls = []
    original = pre.pretrain_mlp

    def counted(config):
        calls.append(config)
        return original(config)

    monkeypatch.setattr(pre, "pretrain_mlp", counted)
    return calls


def test_the_cached_pretrained_model_is_reused(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    _, first = pre.pretrained_digits_mlp((8,), steps=5, cache=tmp_path)
    _, again = pre.pretrained_digits_mlp((8,), steps=5, cache=tmp_path)
    assert len(calls) == 1
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)))
    pre.pretrained_digits_mlp((8,), steps=6, cache=tmp_path)  # another configuration: another model
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    monkeypatch.setenv(pre.CACHE_ENV, str(tmp_path))
    pre.pretrained_digits_mlp((8,), steps=5)  # the same folder named by the environment variable
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-config"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    calls = _counting(monkeypatch)
    _, good = pre.pretrained_digits_mlp((8,), steps=5, cache=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        pre.save_params(str(path), jax.tree.map(lambda x: x + 1, good), {"something": "else"})
    with pytest.warns(UserWarning, match="rebuilding"):
        _, rebuilt = pre.pretrained_digits_mlp((8,), steps=5, cache=tmp_path)
    assert len(calls) == 2
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(rebuilt)))
    with np.load(path, allow_pickle=False) as stored:  # rewritten, readable without pickles
        assert "config" in stored.files


def test_cache_files_are_as_readable_as_the_umask_allows(tmp_path):
    # mkstemp makes 0600 files: a cache shared through HYPERGRAD_CACHE was unreadable to the others,
    # who retrained with a warning
    previous = os.umask(0o022)
    try:
        pre.save_params(str(tmp_path / "shared.npz"), {"w": np.ones(3)}, {"k": 1})
        os.umask(0o077)
        pre.save_params(str(tmp_path / "private.npz"), {"w": np.ones(3)}, {"k": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.npz").stat().st_mode & 0o777 == 0o600


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.delenv(pre.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pre.cache_dir() == os.path.join(str(tmp_path / "xdg"), "hypergrad", "pretrained")
    monkeypatch.setenv(pre.CACHE_ENV, str(tmp_path / "env"))
    assert pre.cache_dir() == str(tmp_path / "env")
    assert pre.cache_dir(tmp_path / "arg") == str(tmp_path / "arg")


def test_bad_inputs_name_the_argument(tiny):
    pretrained, problem = tiny
    with pytest.raises(ValueError, match="matches no prefix"):
        ft.finetune(pretrained, _task(), _apply, groups={"body": "body"})
    with pytest.raises(ValueError, match="new_groups"):
        ft.finetune(pretrained, _task(), _apply, head=_new_head, new_groups=["tail"])
    with pytest.raises(ValueError, match="head changed a leaf"):
        ft.finetune(pretrained, _task(), _apply, groups={"body": "body", "head": "head"}, new_groups=[],
                    head=lambda k, p: {**p, "body": {"w": jnp.zeros((D, 2)), "b": p["body"]["b"]}})
    with pytest.raises(ValueError, match=r"hparams\['lr'\] has shape \(3,\)"):
        hg.Objective(problem, ft.group_sgd({"body": "body", "head": "head"}), 2)({"lr": jnp.ones(3)},
                                                                                 jax.random.key(0))
    with pytest.raises(ValueError, match="needs num_steps"):
        ft.group_sgd(cosine=True)
    with pytest.raises(ValueError, match="give shots from 1 to") as refused:
        pre.digits_transfer(500, cache="unused")
    # the limit named is the one over every class: it was the first short class's, and following it
    # failed again at the next class (150 -> "at most 112" -> "111" -> "109" -> "104")
    most = int(re.search(r"give shots from 1 to (\d+)", str(refused.value)).group(1))
    train, _, _ = pre._few_shot_split(pre._target_data("mlp", "5-9", 0.0, 0.0)[1], most, 30, 0)
    assert len(train) == 5 * most
    with pytest.raises(ValueError, match=f"give shots from 1 to {most}"):
        pre.digits_transfer(most + 1, cache="unused")
    for bad in (0, -3, "most", 2.5, True):
        with pytest.raises(ValueError, match="or 'all'"):
            pre.digits_transfer(bad, cache="unused")


def test_all_shots_uses_every_example_not_held_out():
    """shots='all' trains on every example of each class outside validation and test, and its test
    set is the one every shot count of that seed uses (so shot counts compare on the same examples)."""
    y = np.repeat(np.arange(3), [90, 84, 87])
    train, val, test = pre._few_shot_split(y, "all", 20, seed=3)
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test) == len(y)
    assert np.array_equal(np.bincount(y[train]), [90 - 60, 84 - 60, 87 - 60])
    assert np.array_equal(np.bincount(y[val]), [20, 20, 20]) and np.array_equal(np.bincount(y[test]), [40] * 3)
    _, _, test10 = pre._few_shot_split(y, 10, 20, seed=3)
    assert np.array_equal(np.sort(test), np.sort(test10))


def test_the_digits_finetune_preset(tmp_path, monkeypatch):
    monkeypatch.setenv(pre.CACHE_ENV, str(tmp_path))
    objective, space = hg.problems.preset("digits-finetune", num_steps=4)
    assert set(space.names) == {"lr", "l2sp", "warmup"} and space["lr"].shape == (3,)
    scores = objective.evaluate(space.centre(), jax.random.key(0))
    assert np.isfinite(float(scores["val_loss"])) and 0.0 <= float(scores["test_accuracy"]) <= 1.0


def _counting_cnn(monkeypatch):
    calls = []
    original = pre.pretrain_cnn

    def counted(config):
        calls.append(config)
        return original(config)

    monkeypatch.setattr(pre, "pretrain_cnn", counted)
    return calls


def test_the_cnn_source_is_cached_reused_and_a_corrupt_file_rebuilt(tmp_path, monkeypatch):
    calls = _counting_cnn(monkeypatch)
    _, first = pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path)
    _, again = pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path)
    assert len(calls) == 1 and all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)))
    pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path, source="clean-quarter")  # another source: another model
    assert len(calls) == 2 and len(list(tmp_path.glob("digits-cnn-*.npz"))) == 2
    path = pre.cache_path("digits-cnn", calls[0], tmp_path)
    with open(path, "wb") as f:
        f.write(b"not a zip file at all")
    with pytest.warns(UserWarning, match="rebuilding"):
        _, rebuilt = pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path)
    assert len(calls) == 3
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(rebuilt)))
    with np.load(path, allow_pickle=False) as stored:
        assert "config" in stored.files and any("conv0" in k for k in stored.files)


def test_cnn_transfer_init_returns_the_pretrained_values_exactly(tmp_path):
    _, state = pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path, source="clean-quarter")
    kept = pre.digits_transfer(5, model="cnn", target="shifted", channels=(2, 3), pretrain_steps=3, cache=tmp_path)
    params = kept.init(jax.random.key(0))
    assert list(hg.problems.layer_groups(params)) == ["conv0", "conv1", "head"]
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(state)):
        assert np.array_equal(np.asarray(got), np.asarray(want, got.dtype))
    _, source = pre.pretrained_digits_cnn((2, 3), steps=3, cache=tmp_path)
    fresh = pre.digits_transfer(5, model="cnn", channels=(2, 3), pretrain_steps=3, cache=tmp_path)
    a, b = fresh.init(jax.random.key(0)), fresh.init(jax.random.key(1))
    body = a["conv1"]["kernel"][...]
    assert np.array_equal(np.asarray(body), np.asarray(source["conv1"]["kernel"][...], body.dtype))
    assert not np.array_equal(a["head"]["kernel"][...], b["head"]["kernel"][...])
    scratch = pre.digits_transfer(5, model="cnn", channels=(2, 3), pretrain_steps=3, cache=tmp_path, pretrained=False)
    assert not np.array_equal(scratch.init(jax.random.key(0))["conv0"]["kernel"][...], a["conv0"]["kernel"][...])


def test_the_shifted_task_shapes_labels_and_shift():
    (xs, ys), (xt, yt) = pre.image_source_target("shifted")
    assert xs.shape[1:] == xt.shape[1:] == (8, 8, 1) and len(xs) + len(xt) == 1797
    assert set(ys) == set(yt) == set(range(10)) and 0.2 < len(xs) / 1797 < 0.3
    images, _ = pre.digits_images()
    moved = pre.shift_and_noise(images[:50], shift=1, noise=0.0, seed=3)
    for before, after in zip(images[:50, :, :, 0], moved[:, :, :, 0]):  # each is one of the four one-pixel moves
        options = [pre._translate(before[None, :, :, None], dy, dx)[0, :, :, 0]
                   for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]]
        assert any(np.array_equal(after, o) for o in options)
    noisy = pre.shift_and_noise(images[:50], noise=0.2, seed=3)
    assert 0.15 < float(np.std(noisy - moved)) < 0.25
    with pytest.raises(ValueError, match="model='vgg'"):
        pre.digits_transfer(10, model="vgg")


@pytest.mark.parametrize("model,shape", [("cnn", (8, 8, 1)), ("mlp", (64,))])
def test_the_shifted_transfer_problem(tmp_path, model, shape):
    size = {"hidden": (6,)} if model == "mlp" else {"channels": (2, 3)}  # the other model's keyword is refused
    problem = pre.digits_transfer(10, model=model, target="shifted", pretrain_steps=3, cache=tmp_path, **size)
    (x, y), (xv, yv), (xt, yt) = problem.train_data, problem.val_data, problem.test_data
    assert x.shape == (100, *shape) and xv.shape == (100, *shape) and xt.shape == (400, *shape)
    for labels, per_class in [(y, 10), (yv, 10), (yt, 40)]:
        assert np.array_equal(np.bincount(np.asarray(labels), minlength=10), np.full(10, per_class))
    params = problem.init(jax.random.key(0))
    assert float(problem.val_loss(params, problem.val_data)) > 0


def _hidden_then_classifier(seed=0):
    """A body whose layer names sort after the head's: leaf order is ("classifier", "hidden")."""
    rng = np.random.default_rng(seed)
    return {"hidden": {"w": rng.normal(size=(D, H)), "b": rng.normal(size=(H,)) * 0.1},
            "classifier": {"w": rng.normal(size=(H, C)) * 0.5, "b": np.zeros(C)}}


def _apply_hc(params, x):
    return jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"]) @ params["classifier"]["w"] \
        + params["classifier"]["b"]


def test_the_default_new_group_is_the_one_the_head_changes_not_the_last_leaf():
    """With default groups (alphabetical: "classifier" before "hidden") the new head was taken to be
    the LAST group, "hidden": L2-SP pulled the fresh classifier towards the old head and never
    regularised the pretrained body. The new groups are now those `head` changes."""
    def head(key, params):
        return {**params, "classifier": {"w": 0.3 * jax.random.normal(key, (H, C)), "b": jnp.zeros(C)}}

    problem = ft.finetune(_hidden_then_classifier(), _task(), _apply_hc, head=head)
    assert list(ft.layer_groups(problem.init(jax.random.key(0)))) == ["classifier", "hidden"]
    params = jax.tree.map(lambda w: w + 1.0, problem.init(jax.random.key(0)))
    _, grads = _penalty_grad(problem, params, 0.5, problem.train_data)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["classifier"]))
    np.testing.assert_allclose(grads["hidden"]["w"], 0.5 * np.ones((D, H)), rtol=1e-12)
    # a head that changes the body too (from scratch) makes every group new; an explicit choice wins
    scratch = ft.finetune(_hidden_then_classifier(), _task(), _apply_hc,
                          head=lambda k, p: jax.tree.map(lambda w: w + jax.random.normal(k, w.shape), p))
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(_penalty_grad(scratch, params, 0.5, scratch.train_data)[1]))
    chosen = ft.finetune(_hidden_then_classifier(), _task(), _apply_hc, head=head, new_groups=["hidden"])
    assert np.all(np.asarray(_penalty_grad(chosen, params, 0.5, chosen.train_data)[1]["hidden"]["w"]) == 0)


def test_group_order_is_documented_as_alphabetical_with_the_fix():
    for doc in (ft.__doc__, ft.layer_groups.__doc__, ft.group_rates.__doc__):
        assert "alphabetical" in " ".join(doc.split())
    assert '{"hidden": "hidden", "classifier": "classifier"}' in ft.__doc__
    rates = ft.group_rates({"lr": 1.0, "lr_decay": 0.5, "freeze": 1}, jnp.asarray(0), 3)
    np.testing.assert_allclose(rates, [0.0, 0.5, 1.0])  # counted in the order of the groups given


def _class_major_apply(params, x):
    return _apply(params, x).T  # logits (classes, batch)


@pytest.mark.parametrize("labels,match", [
    (lambda x: (np.abs(x[:, 0]) * 3).astype(np.int32) % 5, r"labels run from 0 to [34], but the logits have 3 classes along class_axis=-1"),
    (lambda x: -np.ones(len(x), np.int32), r"labels run from -1 to -1"),
    (lambda x: (x[:, 0] > 0).astype(np.float64), r"task: the train labels have dtype float64; give integer"),
], ids=["too-large", "negative", "float"])
def test_labels_that_are_not_class_indices_are_refused_at_construction(labels, match):
    rng = np.random.default_rng(0)
    task = tuple((x, labels(x)) for x in (rng.normal(size=(n, D)) for n in (24, 12, 12)))
    with pytest.raises(ValueError, match=match):
        ft.finetune(_tiny_pretrained(), task, _apply)
    good = _task()
    bad_test = (good[0], good[1], (good[2][0], np.full(12, C, np.int32)))
    with pytest.raises(ValueError, match="the test labels run from 3 to 3"):
        ft.finetune(_tiny_pretrained(), bad_test, _apply)


def test_a_wrong_class_axis_and_a_malformed_task_are_refused_at_construction():
    # class-major logits with class_axis forgotten: a late broadcasting error, or with as many
    # examples as classes a silently wrong loss
    square = tuple((np.random.default_rng(i).normal(size=(C, D)), np.arange(C, dtype=np.int32)) for i in range(3))
    for task in (_task(), square):
        with pytest.raises(ValueError, match=r"class_axis=-1: .*logits of shape \(3, 1\).*set class_axis"):
            ft.finetune(_tiny_pretrained(), task, _class_major_apply)
    problem = ft.finetune(_tiny_pretrained(), square, _class_major_apply, class_axis=0)
    assert np.isfinite(float(problem.val_loss(problem.init(jax.random.key(0)), problem.val_data)))
    with pytest.raises(ValueError, match=r"class_axis=2: .*an int in \[-2, 2\)"):
        ft.finetune(_tiny_pretrained(), _task(), _apply, class_axis=2)
    with pytest.raises(ValueError, match=r"task has 1 split\(s\); give \(train, val\) or \(train, val, test\)"):
        ft.finetune(_tiny_pretrained(), _task()[:1], _apply)
    with pytest.raises(ValueError, match=r"task has 4 split\(s\)"):  # the 4th was dropped silently
        ft.finetune(_tiny_pretrained(), _task() + (_task()[2],), _apply)
    with pytest.raises(ValueError, match="the val split must be a pair"):
        ft.finetune(_tiny_pretrained(), (_task()[0], _task()[1][0]), _apply)


def test_integer_leaves_make_no_group_and_no_penalty_and_keys_are_refused():
    """A counter among the parameters (an nnx model's RngCount) was a group of its own and its
    square was added to the weight decay (a key leaf made both raise a TypeError)."""
    pretrained = {**_tiny_pretrained(), "steps": np.asarray(7, np.int32)}
    problem = ft.finetune(pretrained, _task(), lambda p, x: _apply(p, x))
    params = problem.init(jax.random.key(0))
    assert list(ft.layer_groups(params)) == ["body", "head"]
    labels, names = ft.group_labels(params)
    assert labels["steps"] == ft.NO_GROUP and names == ("body", "head")
    batch = problem.train_data
    penalty = problem.train_loss(params, {"weight_decay": 0.2}, batch) - problem.train_loss(params, {}, batch)
    floats = sum(float(np.sum(np.square(w))) for w in jax.tree.leaves(_tiny_pretrained()))
    np.testing.assert_allclose(penalty, 0.1 * floats, rtol=1e-12)
    groups = {"body": "body", "head": "head"}
    trained = hg.Objective(problem, ft.group_sgd(groups), num_steps=3).train({"lr": jnp.asarray([0.1, 0.2])},
                                                                           jax.random.key(0))
    assert int(trained["steps"]) == 7 and not np.array_equal(trained["head"]["w"], pretrained["head"]["w"])
    with pytest.raises(ValueError, match=r"pretrained holds a PRNG key.*nnx.split\(model, nnx.Param, ...\)"):
        ft.finetune({**_tiny_pretrained(), "rng": jax.random.key(0)}, _task(), _apply)


def test_a_tilde_in_the_cache_folder_is_the_home_folder(tmp_path, monkeypatch):
    """'~/x' (argument or $HYPERGRAD_CACHE) made a literal folder '~' in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pre.cache_dir("~/arg") == str(tmp_path / "home" / "arg")
    monkeypatch.setenv(pre.CACHE_ENV, "~/env")
    assert pre.cache_dir() == str(tmp_path / "home" / "env")
    assert pre.cache_path("digits-mlp", {"k": 1}).startswith(str(tmp_path / "home" / "env") + os.sep)


def test_pretraining_gives_the_same_weights_with_and_without_x64():
    """The cache key does not name jax_enable_x64, so the weights must not depend on it: Adam's bias
    correction ran in float64 under x64 and whichever mode filled the cache decided every later
    process's weights."""
    config = pre._source_config("mlp", "0-4", 5, 3e-3, 0)
    config.update(sizes=[64, 4, 5], activation="tanh")
    with64 = pre.pretrain_mlp(config)
    with jax.enable_x64(False):
        without = pre.pretrain_mlp(config)
    for a, b in zip(jax.tree.leaves(with64), jax.tree.leaves(without)):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("call,match", [
    (lambda c: pre.pretrained_digits_mlp((8,), steps=-1, cache=c), r"steps=-1 must be an int >= 1"),
    (lambda c: pre.pretrained_digits_mlp((8,), steps=2.7, cache=c), r"steps=2.7 must be an int >= 1"),
    (lambda c: pre.pretrained_digits_mlp((8,), steps=True, cache=c), r"steps=True must be an int >= 1"),
    (lambda c: pre.pretrained_digits_mlp((8,), lr=float("nan"), cache=c), r"lr=nan must be a finite number > 0"),
    (lambda c: pre.pretrained_digits_mlp((8,), lr=0.0, cache=c), r"lr=0.0 must be a finite number > 0"),
    (lambda c: pre.pretrained_digits_mlp((8,), seed=-1, cache=c), r"seed=-1 must be an int >= 0"),
    (lambda c: pre.pretrained_digits_mlp((8,), seed=1.5, cache=c), r"seed=1.5 must be an int >= 0"),
    (lambda c: pre.pretrained_digits_mlp((-3,), cache=c), r"hidden=\(-3,\) must be a sequence of layer widths"),
    (lambda c: pre.pretrained_digits_cnn((0, 3), cache=c), r"channels=\(0, 3\) must be the two convolutions' widths"),
    (lambda c: pre.digits_transfer(5, hidden=(0,), cache=c), r"hidden=\(0,\)"),
    (lambda c: pre.digits_transfer(5, model="cnn", channels=(4,), cache=c), r"channels=\(4,\)"),
    (lambda c: pre.digits_transfer(5, pretrain_steps=-1, cache=c), r"pretrain_steps=-1 must be an int >= 1"),
    (lambda c: pre.digits_transfer(5, seed=1.5, cache=c), r"seed=1.5 must be an int >= 0 \(the seed of the few-shot"),
    (lambda c: pre.digits_transfer(5, batch_size=0, cache=c), r"batch_size=0 must be an int >= 1"),
    (lambda c: pre.digits_transfer(5, batch_size=26, cache=c), r"batch_size=26 is larger than the 25 training"),
    (lambda c: pre.digits_transfer(5, target="shifted", shift=8, cache=c), r"shift=8 must be an int of pixels from 0 to 7"),
    (lambda c: pre.digits_transfer(5, target="shifted", shift=1.5, cache=c), r"shift=1.5"),
    (lambda c: pre.digits_transfer(5, target="shifted", noise=-0.5, cache=c), r"noise=-0.5 must be a finite"),
    (lambda c: pre.image_source_target("shifted", shift=9), r"shift=9"),
    (lambda c: pre.image_source_target("shifted", noise=float("nan")), r"noise=nan"),
], ids=lambda v: None if callable(v) else v.split(" ")[0].replace("\\", ""))
def test_bad_pretraining_arguments_are_refused_before_anything_trains(tmp_path, monkeypatch, call, match):
    """steps -1/2.7/True, lr NaN or 0, seed -1, widths 0 trained (or failed with raw errors) and
    were cached under their names; batch_size was checked only after pretraining ran."""
    def refuse(config):
        raise AssertionError("pretraining ran")

    monkeypatch.setattr(pre, "pretrain_mlp", refuse)
    monkeypatch.setattr(pre, "pretrain_cnn", refuse)
    with pytest.raises(ValueError, match=match):
        call(tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("steps", [0, -5, 2.5, True])
def test_the_finetune_preset_refuses_bad_num_steps_before_pretraining(tmp_path, monkeypatch, steps):
    """num_steps=0 pretrained the source model, then failed with a misleading Uniform(0.0, 0.0) error."""
    def refuse(config):
        raise AssertionError("pretraining ran")

    monkeypatch.setenv(pre.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(pre, "pretrain_mlp", refuse)
    with pytest.raises(ValueError, match=f"num_steps={steps} must be an integer >= 1"):
        hg.problems.preset("digits-finetune", num_steps=steps)


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_conv_pads_one_pixel_as_its_docstring_says(stride):
    """The docstrings said "SAME", which at stride 2 on 8 x 8 pads (0, 1) in XLA and flax; the
    convolution pads (1, 1) (PyTorch's padding=1), as the docstrings now say."""
    x, w = _normal_pair((2, 8, 8, 3), (3, 3, 3, 4))
    padded = lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(cnn.patches(x, stride) @ w.reshape(27, 4), padded, rtol=1e-10, atol=1e-10)
    for doc in (cnn.__doc__, cnn.patches.__doc__, cnn.PatchConv.__doc__):
        assert "padding=1" in doc
    assert '("SAME" padding)' not in cnn.PatchConv.__doc__ and '("SAME")' not in cnn.patches.__doc__


def _normal_pair(*shapes):
    rng = np.random.default_rng(0)
    return tuple(jnp.asarray(rng.normal(size=s)) for s in shapes)


def test_group_sgd_cosine_takes_numpy_int_num_steps_and_refuses_bool():
    # num_steps=np.int64(100) was refused as if missing, and num_steps=True accepted as a horizon of 1
    optimizer = ft.group_sgd(cosine=True, num_steps=np.int64(4))
    rates = ft.group_rates({"lr": 1.0}, jnp.asarray(2), 1, num_steps=np.int64(4), cosine=True)
    np.testing.assert_allclose(rates, [0.5], atol=1e-12)
    assert callable(optimizer)
    for bad in (True, 0, 2.0, "4"):
        with pytest.raises(ValueError, match="num_steps.*int >= 1"):
            ft.group_sgd(cosine=True, num_steps=bad)


def test_finetune_space_refuses_a_name_or_an_objective_naming_the_call_that_fits(tiny):
    """finetune_space("digits-finetune", 10) failed with "'str' object has no attribute 'init'", and an
    Objective failed likewise; each is now a ValueError showing the call that fits, before init runs."""
    _, problem = tiny
    with pytest.raises(ValueError, match=r"finetune_space\(problem='digits-finetune'\) takes a fine-tuning "
                                         r"hg.Problem, not a name; .*hg.problems.preset\('digits-finetune'\)"):
        hg.problems.finetune_space("digits-finetune", 10)
    with pytest.raises(ValueError, match=r"not a name; the presets are \[.*'digits-finetune'"):
        hg.problems.finetune_space("digits", 10)
    objective, space = hg.problems.finetune_space(problem, 4)
    with pytest.raises(ValueError, match=r"given an hg.Objective.*finetune_space\(objective.problem, num_steps\)"):
        hg.problems.finetune_space(objective, 4)
    with pytest.raises(ValueError, match=r"problem must be an hg.Problem, got int"):
        hg.problems.finetune_space(3, 4)
    assert objective.problem is problem and set(space.names) == {"lr", "l2sp", "warmup"}


def test_label_columns_and_list_inputs_are_refused_naming_the_fix():
    """Labels of shape (n, 1) got the class_axis message (set class_axis) where the fix is to drop
    the column; inputs given as a Python list failed while tracing the model on one example."""
    (x, y), val, test = _task()
    with pytest.raises(ValueError, match=r"task: the train labels have shape \(24, 1\), but one label per example "
                                         r"needs shape \(24,\); drop the trailing axis.*y.ravel"):
        ft.finetune(_tiny_pretrained(), ((x, y[:, None]), val, test), _apply)
    with pytest.raises(ValueError, match=r"task\[0\]\[0\] is a Python list.*pass arrays.*np.asarray"):
        ft.finetune(_tiny_pretrained(), ((x.tolist(), y), val, test), _apply)
