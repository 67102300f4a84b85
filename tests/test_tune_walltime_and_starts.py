"""Default chunks within their documented bound, tune's given starts, and where tune's set-up sits on
the wall-time axis.

- A default chunk holds at most 64 rows on any device count (rounded down to a multiple of the
  devices, not up past 64).
- `tune(init=...)`: an integer start of a continuous hyperparameter is its float; a start that
  rounds onto a bound in the working dtype is refused saying so.
- `tune(warmup=...)`: the outer step's compilation and set-up are placed before the first tuner
  step (`info["setup_seconds_at"]`), not before the warm-up's first trial, so
  `Result.spent("seconds")` shows when the warm-up's trials really finished.
"""

import jax

jax.config.update("jax_enable_x64", True)

import importlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _batching  # noqa: E402
from hypergrad.outer import make_cohort  # noqa: E402
from hypergrad.results import COMPLETE, Result, Trial  # noqa: E402
from hypergrad.search import evaluate_settings  # noqa: E402

tune_module = importlib.import_module("hypergrad.tune")  # `hypergrad.tune` is also the function


@pytest.mark.parametrize("devices", [1, 2, 3, 5, 6, 7, 8, 9, 63, 64, 65, 100])
def test_a_default_chunk_never_passes_64_rows_and_shards_evenly(monkeypatch, devices):
    monkeypatch.setattr(_batching, "device_count", lambda: devices)
    for num in (1, 2, 3, 10, 33, 63, 64, 65, 66, 100, 128, 129, 200, 1000):
        chunk = _batching.chunk_for(num, None)
        assert chunk % devices == 0, (devices, num, chunk)
        assert chunk <= max(64, devices), (devices, num, chunk)  # 64 trials on 3 devices made 66 before
        calls = -(-num // chunk)
        assert calls * chunk - num < calls * devices, (devices, num, chunk)  # padding stays small
        if 64 % devices == 0:  # where rounding up never passed 64, the chunks are as they were
            assert chunk == -(-_batching.balanced_chunk(num, 64) // devices) * devices


_THREE_DEVICES = """
import os
from hypergrad import _compile  # starts no JAX backend, so the flags below still apply
os.environ["XLA_FLAGS"] = _compile.quick_xla_flags()  # as conftest: only flags this jaxlib knows
import json, jax
import optax, hypergrad as hg
hg.use_cpu_cores(3)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.LogUniform(1e-4, 1.0)})
result = hg.random_search(objective, space, jax.random.key(3), num_trials=64)
print(json.dumps({"devices": result.info["devices"], "chunk": result.info["chunk_size"], "trials": len(result.trials)}))
"""


def test_64_trials_on_three_devices_run_in_chunks_of_at_most_64():
    out = subprocess.run([sys.executable, "-c", _THREE_DEVICES], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 3 and got["trials"] == 64
    assert got["chunk"] <= 64 and got["chunk"] % 3 == 0  # one call of 66 rows before


@pytest.fixture(scope="module")
def objective():
    """Ridge regression, a few steps of SGD: tiny, full batch."""
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 3.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_hypergradient_names_the_float_fix_for_an_integer_value(objective):
    with pytest.raises(ValueError, match=r"hparams\['lr'\] has dtype int\d+: .*give it as a float, 1.0 rather than 1"):
        hg.hypergradient(objective, {"lr": 1, "weight_decay": 0.01}, jax.random.key(0))


def test_an_integer_start_of_a_continuous_hyperparameter_is_its_float(objective):
    key = jax.random.key(0)
    as_int = hg.tune(objective, SPACE, key, init={"lr": 1, "weight_decay": 0.01}, steps=1)
    as_float = hg.tune(objective, SPACE, key, init={"lr": 1.0, "weight_decay": 0.01}, steps=1)
    # the start goes through the space's unconstrained coordinates and back (log, logit, sigmoid, exp),
    # which returns 1.0 on jax 0.10 and 0.9999999999999998 on jax 0.12: the int start must be recorded
    # and tuned exactly as the float start is, and that start is 1.0 up to that round trip
    assert float(as_int.trials[0].hparams["lr"]) == float(as_float.trials[0].hparams["lr"])
    assert float(as_int.trials[0].hparams["lr"]) == pytest.approx(1.0, rel=1e-15, abs=0)
    assert [t.value for t in as_int.trials] == [t.value for t in as_float.trials]
    population = {"lr": np.array([1, 2]), "weight_decay": np.array([0.01, 0.1])}  # batched starts too
    pop = hg.tune(objective, SPACE, key, init=population, population=2, steps=1)
    assert sorted(float(t.hparams["lr"]) for t in pop.trials[:2]) == [1.0, 2.0]


_FLOAT32_START = """
import os
from hypergrad import _compile  # starts no JAX backend, so the flags below still apply
os.environ["XLA_FLAGS"] = _compile.quick_xla_flags()  # as conftest: only flags this jaxlib knows
import json, jax
import numpy as np, optax, hypergrad as hg
assert jax.numpy.zeros(()).dtype == jax.numpy.float32  # the default: float64 off
problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=2)
space = hg.Space({"lr": hg.LogUniform(1e-3, 3.0), "momentum": hg.Uniform(0.0, 0.99)})
out = {}
for label, init, population in [("rounds", {"lr": 0.1, "momentum": 0.98999999}, 1),
                                ("batched", {"lr": np.array([0.1, 0.1]), "momentum": np.array([0.5, 0.98999999])}, 2),
                                ("outside", {"lr": 0.1, "momentum": 0.995}, 1)]:
    try:
        hg.tune(objective, space, jax.random.key(0), init=init, population=population, steps=1)
    except ValueError as err:
        out[label] = str(err)
print(json.dumps(out))
"""


def test_a_start_rounded_onto_a_bound_in_float32_is_refused_saying_so():
    out = subprocess.run([sys.executable, "-c", _FLOAT32_START], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "init['momentum']=0.98999999 is inside the bounds (0.0, 0.99) as given, but rounds to 0.99 in float32" \
        in got["rounds"]
    assert "the bound hi=0.99; start further inside the bounds" in got["rounds"]
    assert "jax_enable_x64" in got["rounds"]
    assert got["batched"].startswith("init['momentum'][1]=0.98999999 is inside")
    assert got["outside"] == ("init['momentum'] lies outside or on the bounds (0.0, 0.99) of the space; start "
                              "strictly inside them")  # a start outside as given: refused as before


def test_the_outer_steps_set_up_is_placed_after_the_warm_up_and_each_rounds_program_before_its_round(
        objective, monkeypatch):
    """A slow outer-step set-up (made slow here: 1 s) was charged before trial 0, so every warm-up
    trial seemed to finish after it; it now sits before the first tuner step (trial `warmup`), and
    the program of each halving round that narrows the chunk before that round's first trial."""
    clock = {}

    def warm_up(*args, **kwargs):
        result = evaluate_settings(*args, **kwargs)
        clock["warm-up ended"] = time.perf_counter()
        return result

    def slow_cohort(*args, **kwargs):
        time.sleep(1.0)
        return make_cohort(*args, **kwargs)

    monkeypatch.setattr(tune_module, "evaluate_settings", warm_up)
    monkeypatch.setattr(tune_module, "make_cohort", slow_cohort)
    began = time.perf_counter()
    result = hg.tune(objective, SPACE, jax.random.key(0), population=4, warmup=4, halving=1, steps=2,
                     chunk_size="live")
    warm_up_took = clock["warm-up ended"] - began
    # trials: 4 warm-up, 4 tuners at step 0, 2 at step 1, 1 scored at the end; rounds narrow 4 -> 2 -> 1
    assert len(result.trials) == 11
    spent = result.spent("seconds")
    assert spent[3] < warm_up_took + 0.5  # it was warm_up_took + 1 s or more before
    assert spent[4] - spent[3] >= 1.0
    assert [index for index, _ in result.info["setup_seconds_at"]] == [4, 8, 10]
    assert result.info["setup_seconds_at"][0][1] >= 1.0  # the slow set-up, after the warm-up
    assert spent[-1] == pytest.approx(result.compile_seconds + result.setup_seconds + result.seconds)
    assert result.spent("seconds")[0] > 0


def test_placed_set_up_never_exceeds_what_the_call_charges():
    """A resumed study's stored trials ran in an earlier call: this call may charge less set-up than
    it measured after them, and the placed seconds are cut (the latest first) so that
    `spent("seconds")` never starts below 0."""
    trials = tuple(Trial(number=i, hparams={"lr": np.asarray(0.1)}, value=1.0, scores={}, state=COMPLETE,
                         flops=1.0, seconds=0.25, run_flops=1.0) for i in range(6))
    result = Result("tune", trials, 1.0, 1.0, {"setup_seconds": 0.5, "setup_seconds_at": [[2, 1.0], [4, 1.0]]})
    assert result.spent("seconds")[0] < 0  # as with_setup may leave it
    cut = tune_module._placed_within_charge(result)
    assert cut.info["setup_seconds_at"] == [[2, 1.0], [4, 0.5]]
    assert cut.spent("seconds")[0] == pytest.approx(0.25)
    assert cut.spent("seconds")[-1] == pytest.approx(result.spent("seconds")[-1])
    plain = Result("tune", trials, 1.0, 1.0, {"setup_seconds": 0.5})
    assert tune_module._placed_within_charge(plain) is plain
