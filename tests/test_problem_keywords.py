"""Keyword arguments of the built-in problem helpers that were silently accepted with a wrong or no
effect (hunt KWARGS, F1 and F3): each is now refused before anything compiles or trains, naming the
argument, its value and the fix."""

import importlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
