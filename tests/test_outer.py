"""The outer optimiser's programs (`hypergrad.outer`): keyed by what the optimiser computes, not by
which object it is.

optax builds every transformation from fresh closures, so `optax.adam(0.1) == optax.adam(0.1)` is
False: keyed by the object, the README's own `hg.tune(..., outer=optax.adam(0.1))` compiled its
whole outer step (seconds) and the optimiser's init again on every call, and the caches kept every
such object alive. Two equal optimisers made apart share one program; a different learning rate,
or a different constant anywhere in the update (even inside a `jax.jit` it calls), gets its own.
Compilations are counted, never timed. float64 throughout (tests/conftest.py).
"""

import gc
import json
import logging
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad import outer as outer_driver
from _helpers import POPULATION_SPACE, POPULATION_T, population_objective, sgd_half_momentum

T, SPACE, sgd = POPULATION_T, POPULATION_SPACE, sgd_half_momentum


@pytest.fixture(scope="module")
def objective(logistic_minibatch_problem):
    return population_objective(logistic_minibatch_problem)


def compiled_by_xla(caplog, call):
    """The messages of every program XLA compiled while `call()` ran, and its value."""
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        value = call()
    return [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()], value


def first_move(result):
    """How far each hyperparameter's unconstrained coordinate moved in the first outer step."""
    before, after = result.trials[0].hparams, result.trials[1].hparams
    return {n: float(SPACE.unconstrain(after)[n] - SPACE.unconstrain(before)[n]) for n in SPACE.names}


def test_equal_outer_optimisers_made_apart_share_one_program(objective, key, caplog):
    first = hg.tune(objective, SPACE, key, steps=2, outer=optax.adam(0.1))
    compilations = _compile.stats.compilations
    messages, again = compiled_by_xla(caplog, lambda: hg.tune(objective, SPACE, key, steps=2,
                                                              outer=optax.adam(0.1)))
    assert messages == []  # neither the outer step nor the optimiser's init compiled again
    assert _compile.stats.compilations == compilations and again.compile_seconds == 0.0
    for a, b in zip(first.trials, again.trials, strict=True):
        assert a.value == b.value and all(np.array_equal(a.hparams[n], b.hparams[n]) for n in SPACE.names)


def test_another_learning_rate_gets_its_own_program(objective, key):
    """Adam's first step moves every coordinate by about its learning rate: each call's numbers
    must come from its own rate, whichever was compiled first."""
    slow = hg.tune(objective, SPACE, key, steps=1, outer=optax.adam(0.1))
    compilations = _compile.stats.compilations
    fast = hg.tune(objective, SPACE, key, steps=1, outer=optax.adam(0.2))
    assert _compile.stats.compilations == compilations + 1
    for name in SPACE.names:
        assert abs(first_move(slow)[name]) == pytest.approx(0.1, rel=1e-3)
        assert abs(first_move(fast)[name]) == pytest.approx(0.2, rel=1e-3)
    again = hg.tune(objective, SPACE, key, steps=1, outer=optax.adam(0.1))
    assert _compile.stats.compilations == compilations + 1
    assert [t.value for t in again.trials] == [t.value for t in slow.trials]


def scaled_sgd(scale):
    """SGD whose step is read from an array inside a `jax.jit` of its own: the array is a constant
    of the nested jaxpr, which the jaxpr's text names without its value."""
    factor = np.full((1,), scale)

    @jax.jit
    def move(g):
        return -jnp.sum(factor) * g

    return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                        lambda updates, state, params=None: (jax.tree.map(move, updates), state))


def test_a_constant_inside_a_nested_jit_tells_optimisers_apart(objective, key):
    """(The program store's key read no nested constants: tests/test_compilation_cache.py.)"""
    z = {"a": np.zeros(3)}
    keys = [outer_driver.update_key(scaled_sgd(s), z, optax.EmptyState()) for s in (0.1, 0.1, 0.2)]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    slow = hg.tune(objective, SPACE, key, steps=1, outer=scaled_sgd(0.1))
    fast = hg.tune(objective, SPACE, key, steps=1, outer=scaled_sgd(0.2))
    for name in SPACE.names:
        assert first_move(fast)[name] == pytest.approx(2 * first_move(slow)[name], rel=1e-9)


def test_the_caches_keep_no_outer_optimiser_alive(objective, key):
    outer = optax.adam(0.1)
    alive = weakref.ref(outer.update)
    hg.tune(objective, SPACE, key, steps=1, outer=outer)
    del outer
    gc.collect()
    assert alive() is None


def test_populations_on_one_chunk_share_their_starts_and_init_programs(objective, key, caplog):
    """Warm-up starts (numpy, nothing eager) on a fixed chunk of 4: the starting points' and the
    optimiser states' programs ran per population size; now per chunk, so a population of 2, 3
    or 5 after one of 4 compiles nothing."""
    outer = optax.adam(0.2)
    hg.tune(objective, SPACE, key, population=4, warmup=8, chunk_size=4, steps=1, outer=outer)
    for population in (2, 3, 5):
        messages, result = compiled_by_xla(caplog, lambda: hg.tune(
            objective, SPACE, key, population=population, warmup=8, chunk_size=4, steps=1, outer=outer))
        assert messages == [], population
        assert len(result.trials) == 8 + 2 * population


# -- optimisers that read the loss (value=) ------------------------------------------------------
def moves(result):
    """Per tuner, (|z_{k+1} - z_k|, value_k, grad_norm_k) of each outer step k, z unconstrained."""
    out = {}
    for tuner, trials in sorted(tuners_of(result).items()):
        zs = [np.concatenate([np.ravel(SPACE.unconstrain(t.hparams)[n]) for n in SPACE.names]) for t in trials]
        out[tuner] = [(float(np.linalg.norm(b - a)), t.value, t.grad_norm) for a, b, t in zip(zs, zs[1:], trials)]
    return out


def tuners_of(result):
    out = {}
    for t in result.trials:
        out.setdefault(t.tuner, []).append(t)
    return out


def test_polyak_sgds_step_is_the_loss_gap_over_the_gradient_norm(objective, key):
    # Polyak's step is (value - f_min) / |g|^2 along -g, so it moves z by (value - f_min) / |g|: the
    # outer step must give the optimiser the validation loss as value= (optax raised a TypeError).
    # f_min is set from the first step's losses and gradients (the same at the same starts for any
    # outer optimiser) so that each tuner's first step moves z by at least half its gradient's norm.
    pilot = hg.tune(objective, SPACE, key, steps=1, population=2, outer=optax.sgd(0.0)).trials[:2]
    f_min = min(t.value - 0.5 * t.grad_norm ** 2 for t in pilot)
    result = hg.tune(objective, SPACE, key, steps=1, population=2,
                     outer=optax.polyak_sgd(max_learning_rate=1e6, f_min=f_min))
    assert all(t.state == "complete" for t in result.trials)
    first = [steps[0] for steps in moves(result).values()]
    assert len(first) == 2 and first[0][1] != first[1][1]  # two tuners, two losses
    for moved, value, grad_norm in first:
        np.testing.assert_allclose(moved, (value - f_min) / grad_norm, rtol=1e-6)


def test_reduce_on_plateau_shrinks_the_step_while_the_loss_stalls(objective, key):
    # atol so large that no loss after the first counts as an improvement: with patience 1 the
    # scale falls tenfold at every later step, so the SGD steps are lr |g| times 1, 0.1, 0.01
    lr = 0.2
    plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.1, atol=1e9, accumulation_size=1)
    result = hg.tune(objective, SPACE, key, steps=3, outer=optax.chain(optax.sgd(lr), plateau))
    (steps,) = moves(result).values()
    scales = [moved / (lr * grad_norm) for moved, _, grad_norm in steps]
    np.testing.assert_allclose(scales, [1.0, 0.1, 0.01], rtol=1e-6)


@pytest.mark.parametrize("make", [optax.lbfgs, lambda: optax.chain(optax.sgd(0.1), optax.scale_by_zoom_linesearch(5))])
def test_an_optimiser_asking_for_the_loss_as_a_function_is_refused_naming_outer(objective, key, make):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"outer=: .*value_fn"):
        hg.tune(objective, SPACE, key, steps=1, outer=make())
    assert _compile.stats.compilations == before


def test_info_outer_describes_the_optimiser_without_addresses(objective, key):
    # it held repr(outer): closures at memory addresses, unlike for equal optimisers and alike for others
    info = [hg.tune(objective, SPACE, key, steps=1, outer=outer).info["outer"]
            for outer in (optax.adam(0.3), optax.adam(0.3), optax.adam(0.01))]
    assert info[0] == info[1] != info[2]
    text = json.dumps(info[0])
    assert "0x" not in text and "-0.3" in text
