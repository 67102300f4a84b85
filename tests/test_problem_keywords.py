"""Keyword arguments of the built-in problem helpers that were silently accepted with a wrong or no
effect (hunt KWARGS, F1 and F3): each is now refused before anything compiles or trains, naming the
argument, its value and the fix."""

import importlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hypergrad.problems import pretrained as pre

ft = importlib.import_module("hypergrad.problems.finetune")  # the package exports a function of that name


@pytest.mark.parametrize("kwargs,message", [
    # cosine=True with num_steps=0 gave NaN rates, -3 or 2.5 zero rates, None a raw TypeError from jnp.minimum
    (dict(cosine=True, num_steps=0), r"group_rates\(cosine=True\) needs num_steps.*int >= 1; got 0"),
    (dict(cosine=True, num_steps=-3), r"needs num_steps.*got -3"),
    (dict(cosine=True, num_steps=2.5), r"needs num_steps.*got 2.5"),
    (dict(cosine=True), r"needs num_steps.*got None"),
    (dict(cosine="yes", num_steps=10), r"group_rates\(cosine='yes'\) must be True or False"),  # was taken as True
    (dict(lr_decay=-1.0), r"group_rates\(lr_decay=-1.0\) must be a finite number >= 0"),  # gave rate -0.01
    (dict(lr=-0.1), r"group_rates\(lr=-0.1\) must be a finite number >= 0"),
    (dict(lr=float("nan")), r"group_rates\(lr=nan\) must be a finite number >= 0"),
    (dict(warmup=-5.0), r"group_rates\(warmup=-5.0\) must be a finite number >= 0"),
    (dict(num_steps=10), r"group_rates\(num_steps=10\) is read only with cosine=True"),
])
def test_group_rates_refuses_bad_keyword_defaults(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ft.group_rates({}, jnp.asarray(3), 2, **kwargs)


def test_group_rates_keeps_good_defaults_and_reads_hparams_unchecked():
    np.testing.assert_allclose(ft.group_rates({}, jnp.asarray(3), 2, lr=0.2, lr_decay=0.5), [0.1, 0.2])
    np.testing.assert_allclose(ft.group_rates({}, jnp.asarray(5), 1, lr=1.0, num_steps=np.int64(10), cosine=True),
                               [0.5], atol=1e-12)
    np.testing.assert_allclose(ft.group_rates({}, jnp.asarray(0), 2, lr=jnp.asarray([0.0, 0.3])), [0.0, 0.3])
    # a value in hparams is the (traced) hyperparameter, not a default: it is not checked here
    np.testing.assert_allclose(ft.group_rates({"lr_decay": -1.0}, jnp.asarray(0), 2, lr=0.1), [-0.1, 0.1])


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=-1.0), r"group_sgd\(lr=-1.0\) must be a finite number >= 0"),
    (dict(momentum=1.5), r"group_sgd\(momentum=1.5\) must be a finite number in \[0, 1\)"),
    (dict(momentum=-0.1), r"group_sgd\(momentum=-0.1\) must be a finite number in \[0, 1\)"),
    (dict(lr_decay=-1.0), r"group_sgd\(lr_decay=-1.0\) must be a finite number >= 0"),
    (dict(cosine="yes", num_steps=10), r"group_sgd\(cosine='yes'\) must be True or False"),
    (dict(num_steps=-5), r"group_sgd\(num_steps=-5\) is read only with cosine=True"),  # was never read
    # base= replaces the momentum trace: momentum=0.5 and 0.0 gave the same loss bit for bit
    (dict(base=lambda h: optax.scale_by_adam(), momentum=0.5),
     r"group_sgd\(momentum=0.5, base=...\): base replaces the momentum trace.*drop momentum"),
    (dict(base=lambda h: optax.scale_by_adam(), momentum=0.0), r"group_sgd\(momentum=0.0, base=...\)"),
])
def test_group_sgd_refuses_bad_or_unread_keywords_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ft.group_sgd(**kwargs)


def test_group_sgd_defaults_still_build():
    for kwargs in (dict(), dict(momentum=0.0), dict(base=lambda h: optax.scale_by_adam()),
                   dict(cosine=True, num_steps=4, lr=0.0, lr_decay=0.0, warmup=2.0)):
        assert callable(ft.group_sgd(**kwargs))


@pytest.mark.parametrize("kwargs,message", [
    # each built the same problem as without it (hunt KWARGS F3: the data and init digests were equal)
    (dict(shift=3), r"digits_transfer\(target='5-9', shift=3\): shift moves the 'shifted' target's images only; "
                    r"drop shift for target='5-9', or use target='shifted'"),
    (dict(noise=0.9), r"digits_transfer\(target='5-9', noise=0.9\): noise blurs"),
    (dict(channels=(2, 3)), r"digits_transfer\(model='mlp', channels=\(2, 3\)\): channels shapes the CNN only; "
                            r"drop channels for model='mlp', or use model='cnn'"),
    (dict(model="cnn", hidden=(6,)), r"digits_transfer\(model='cnn', hidden=\(6,\)\): hidden shapes the MLP only"),
    (dict(pretrained=False, fresh_head=False),
     r"digits_transfer\(pretrained=False, fresh_head=False\): fresh_head chooses whether the pretrained head is "
     r"kept.*drop fresh_head for pretrained=False, or use pretrained=True"),
])
def test_digits_transfer_refuses_keywords_its_model_or_target_never_reads(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pre.digits_transfer(5, cache="unused", **kwargs)  # refused before any model is trained or loaded


def test_digits_transfer_defaults_of_the_keywords_read(tmp_path):
    common = dict(model="cnn", target="shifted", channels=(2, 3), pretrain_steps=1, cache=tmp_path)
    default, explicit = pre.digits_transfer(5, **common), pre.digits_transfer(5, shift=1, noise=0.2, **common)
    for a, b in zip(default.train_data, explicit.train_data):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
