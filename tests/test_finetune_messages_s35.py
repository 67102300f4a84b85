"""Bad inputs to `hg.problems.finetune` and `group_sgd` (hypergrad/problems/finetune.py, session 35).

Each failed without naming the argument or the fix, or named the wrong one: `dtype=int32` blamed
`groups`, a `new_groups` string was split into characters, `groups` as a list or with a number for a
prefix failed with AttributeError or "'int' object is not iterable", `group_sgd("body")` failed deep
inside optax when first traced, `apply=None` and `head="head"` with Python's own TypeError, and a
per-group `momentum` with a bare broadcasting error inside optax.trace. Each is now refused before
anything compiles (construction, or an abstract trace: `jax.eval_shape`), naming the argument and
the fix."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from _helpers import TINY_FINETUNE_SHAPES, tiny_finetune  # noqa: E402

ft = importlib.import_module("hypergrad.problems.finetune")  # hg.problems.finetune is the function

_, H, C = TINY_FINETUNE_SHAPES
GROUPS = {"body": "body", "head": "head"}


def _pretrained():
    return tiny_finetune('body', 'head')[0]


_apply = tiny_finetune('body', 'head')[1]


def _task():
    return tiny_finetune('body', 'head')[2]


def _new_head(key, p):
    return {**p, "head": {"w": jax.random.normal(key, (H, C)), "b": jnp.zeros(C)}}


def _per_group_momentum():
    objective = hg.Objective(ft.finetune(_pretrained(), _task(), _apply), ft.group_sgd(GROUPS), num_steps=4)
    hparams = {"lr": jnp.asarray([0.1, 0.2]), "momentum": jnp.asarray([0.5, 0.9])}
    jax.eval_shape(objective, hparams, jax.random.key(0))  # traced, never compiled


CASES = {
    "dtype int32": (lambda: ft.finetune(_pretrained(), _task(), _apply, dtype=jnp.int32), ValueError,
                    r"finetune\(dtype=int32\) must be a floating-point dtype.*dtype=jnp.float64"),
    "new_groups str": (lambda: ft.finetune(_pretrained(), _task(), _apply, groups=GROUPS, head=_new_head,
                                           new_groups="head"), TypeError,
                       r"finetune\(new_groups='head'\) must be a list of group names, e.g. new_groups=\['head'\]"),
    "groups list": (lambda: ft.finetune(_pretrained(), _task(), _apply, groups=["body", "head"]), TypeError,
                    r"finetune\(groups=\['body', 'head'\]\) must be a mapping.*groups=\{'body': 'body', 'head': 'head'\}"),
    "groups number prefix": (lambda: ft.finetune(_pretrained(), _task(), _apply, groups={"body": 1, "head": "head"}),
                             TypeError, r"finetune\(groups=...\): groups\['body'\]=1 must be a path prefix.*'body'"),
    "group_sgd str": (lambda: ft.group_sgd("body"), TypeError,
                      r"group_sgd\(groups='body'\) must be a mapping.*e.g. groups=\{"),
    "apply None": (lambda: ft.finetune(_pretrained(), _task(), None), TypeError,
                   r"finetune\(apply=None\) must be a function apply\(params, inputs\) -> logits"),
    "head str": (lambda: ft.finetune(_pretrained(), _task(), _apply, head="head"), TypeError,
                 r"finetune\(head='head'\) must be None or a function head\(key, pretrained\) -> params"),
    "momentum per group": (_per_group_momentum, ValueError,
                           r"hparams\['momentum'\] has shape \(2,\).*give a scalar.*group_sgd\(base=...\)"),
    "no float leaf": (lambda: ft.finetune({"count": np.asarray(3, np.int32)}, _task(), _apply), ValueError,
                      r"finetune\(pretrained=...\) holds no floating-point leaf.*nothing would train"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inputs_name_the_argument_and_the_fix(case):
    call, error, match = CASES[case]
    with pytest.raises(error, match=match):
        call()


def test_the_accepted_forms_still_build():
    """A tuple of prefixes, a list (or tuple) of new groups and a floating dtype keep working."""
    problem = ft.finetune(_pretrained(), _task(), _apply, groups={"body": ("body",), "head": "head"},
                          head=_new_head, new_groups=("head",), dtype=jnp.float64)
    objective = hg.Objective(problem, ft.group_sgd(problem, momentum=0.5), num_steps=2)
    assert np.isfinite(float(objective({"lr": jnp.asarray([0.1, 0.2]), "momentum": 0.3}, jax.random.key(0))))
