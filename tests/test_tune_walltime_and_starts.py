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

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _batching  # noqa: E402


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
os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"  # as conftest
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
