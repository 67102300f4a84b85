"""tune's starts and its record of the chunk (session 38, pop_hunt findings 2-4). float64 (tests/conftest.py).

- After a warm-up, the call refused or recorded NaN failures depending on whether the single best warm-up
  trial happened to be one `hg.Reversible` refuses (a momentum below 2^-8): the tuners now start from the best
  warm-up trials the method accepts, with a warning naming those it refused. (A later given or sampled start
  the method refuses still fails its first step and restarts, as tests/test_methods_reversible.py documents:
  refusing the call would refuse a sampled population for one unlucky row.)
- `info["chunk_size"]` was the chunk of the last halving round, not the call's; the argument is now
  `info["chunk_size_given"]`.
- A NaN start was refused as "outside or on the bounds".
"""

import json
import re
import warnings

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import outer as outer_driver


FLOOR = 2.0 ** -8  # the least momentum Reversible(info_bits=8) reverses
LOW_MOMENTUM = hg.Space({"lr": hg.LogUniform(1e-2, 2.0), "momentum": hg.Uniform(0.0, 0.008)})  # centre accepted


@pytest.fixture(scope="module")
def momentum_objective():
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)


class LowMomentumRefused(hg.Reverse):
    """Reverse refusing a momentum below 2^-8, as hg.Reversible(info_bits=8) does, at a cheaper compile."""

    def check_loop(self, loop, hparams):
        if float(hparams["momentum"]) < FLOOR:
            raise ValueError(f"momentum={float(hparams['momentum'])} is below 2^-8")


@pytest.fixture(scope="module")
def ridge():
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)


RIDGE_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_warm_up_trials_the_method_refuses_start_no_tuner(momentum_objective):
    key = jax.random.key(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = hg.tune(momentum_objective, LOW_MOMENTUM, key, population=2, warmup=6, steps=1, outer=optax.adam(0.3),
                    method=LowMomentumRefused())
    warm = r.trials[:6]
    assert [t.tuner for t in warm] == [None] * 6  # every warm-up trial kept, the refused ones too
    ranked = sorted(warm, key=lambda t: (t.value, t.number))
    refused = [t.number for t in ranked[:2] if float(t.hparams["momentum"]) < FLOOR]
    assert refused, "the test needs a refused trial among the two best warm-up trials"
    first_steps = [t for t in r.trials[6:] if t.tuner is not None][:2]
    assert [t.state for t in first_steps] == ["complete", "complete"]  # was: 'fail' with value NaN, or a refusal
    assert all(float(t.hparams["momentum"]) >= FLOOR for t in first_steps)
    accepted = [t for t in ranked if float(t.hparams["momentum"]) >= FLOOR][:2]
    np.testing.assert_allclose([float(t.hparams["momentum"]) for t in first_steps],
                               [float(t.hparams["momentum"]) for t in accepted], rtol=1e-12)
    texts = [str(w.message) for w in caught if "refuses the values" in str(w.message)]
    assert len(texts) == 1
    named = {int(n) for n in re.search(r"numbers ([\d, ]+);", texts[0]).group(1).split(", ")}
    assert set(refused) <= named and all(float(warm[n].hparams["momentum"]) < FLOOR for n in named)


def test_too_few_accepted_warm_up_trials_say_so_and_the_log_keeps_them(momentum_objective, tmp_path):
    log = tmp_path / "trials.jsonl"
    with pytest.raises(ValueError, match="the method refuses the values of 2 of them"):
        hg.tune(momentum_objective, LOW_MOMENTUM, jax.random.key(0), population=3, warmup=4, steps=1,
                method=hg.Reversible(), log=log)
    assert len(log.read_text().splitlines()) == 4  # the warm-up the call spent, as it ran


def test_info_chunk_size_is_the_calls_not_the_last_halving_rounds(ridge):
    r = hg.tune(ridge, RIDGE_SPACE, jax.random.key(0), population=2, chunk_size="live", halving=1, steps=1)
    assert r.info["chunk_size"] == outer_driver.chunk_rows(2, None) == 2  # the first step's; was 1, the last round's
    assert r.info["chunk_size_given"] == "live"
    assert json.loads(json.dumps(r.info["chunk_size_given"])) == "live"


@pytest.mark.parametrize("hold", [None, ("lr",)])
def test_a_nan_start_is_not_a_finite_number(ridge, hold):
    init = {"lr": np.asarray([np.nan, 0.02]), "weight_decay": np.asarray([0.01, 0.02])}
    with pytest.raises(ValueError, match=r"init\['lr'\]\[0\]=nan is not a finite number"):
        hg.tune(ridge, RIDGE_SPACE, jax.random.key(0), population=2, init=init, steps=1, hold=hold)
