"""finetune_space's warm-up range starts where `warmup_ramp` starts acting (hunt J25, finding 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad.problems.finetune import warmup_ramp


def _problem():
    rng = np.random.default_rng(0)
    pretrained = {"body": {"w": rng.normal(size=(3, 4))}, "head": {"w": rng.normal(size=(4, 2))}}

    def apply(params, x):
        return jnp.tanh(x @ params["body"]["w"]) @ params["head"]["w"]

    splits = []
    for size in (8, 4, 4):
        x = rng.normal(size=(size, 3))
        splits.append((x, (x[:, 0] > 0).astype(np.int32)))
    return hg.problems.finetune(pretrained, tuple(splits), apply)


def _ramp_slope(length: float, num_steps: int) -> float:
    """d/d length of the sum of the warm-up factors over a run of `num_steps` steps."""
    steps = jnp.arange(num_steps)
    return float(jax.grad(lambda n: warmup_ramp(steps, n).sum())(jnp.asarray(length)))


@pytest.mark.parametrize("num_steps", [1, 4, 8, 100])
def test_finetune_spaces_warmup_range_is_where_the_ramp_acts(num_steps):
    """The range was 0 to T/4, but a length up to 1 is no warm-up (factor 1 from the first step, a
    hypergradient of exactly 0): 4% of the range at T=100, and all of it at T=4 (the experiment's smoke),
    where every value trained the same run. It now starts at 1 and spans at least 1 to 2."""
    _, space = hg.problems.finetune_space(_problem(), num_steps)
    warmup = space["warmup"]
    assert _ramp_slope(0.5, num_steps) == 0.0  # the ramp's definition the range rests on: inert below 1
    assert warmup.lo >= 1.0 and warmup.hi > warmup.lo
    assert warmup.hi == max(2.0, num_steps / 4)
    for fraction in (0.01, 0.5, 0.99):  # anywhere inside the range, the length changes the run
        assert _ramp_slope(warmup.lo + fraction * (warmup.hi - warmup.lo), num_steps) < 0.0
