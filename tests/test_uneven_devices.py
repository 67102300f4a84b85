"""Chunks on device counts that divide nothing: every chunk uses the devices.

- A chunk the devices do not divide (an explicit `chunk_size`, `optuna_search`'s batch) is split
  over the most devices that divide it, not run on one device; its rows and padding unchanged.
- A population or a hybrid search with fewer tuners than devices runs one tuner per device.
- A resumed `hybrid_search` places its set-up after its stored trials on the wall-time axis.
- The CLI's search chunks and its budget plan's rows come from the library's own formula.
"""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _batching, cli  # noqa: E402

from _helpers import Stop, stop_after  # noqa: E402


@pytest.mark.parametrize("chunk, devices, used", [(16, 3, 2), (16, 5, 4), (8, 5, 4), (2, 5, 2), (4, 5, 4),
                                                  (15, 5, 5), (7, 3, 1), (1, 4, 1), (64, 3, 2), (9, 6, 3)])
def test_the_devices_a_chunk_is_split_over_are_the_most_that_divide_it(chunk, devices, used):
    assert _batching.devices_for(chunk, devices) == used


_FIVE_DEVICES = """
import os
from hypergrad import _compile  # starts no JAX backend, so the flags below still apply
os.environ["XLA_FLAGS"] = _compile.quick_xla_flags()  # as conftest: only flags this jaxlib knows
import json, warnings, jax
import optax, hypergrad as hg
from hypergrad import outer, search
hg.use_cpu_cores(5)  # first thing, before JAX computes
jax.config.update("jax_enable_x64", True)
warnings.simplefilter("ignore")
seen = []
def probe(chunk, shardings=search.shardings):  # how many devices each chunk's rows are split over
    spread, replicated = shardings(chunk)
    seen.append([chunk, 1 if spread is None else spread.mesh.devices.size])
    return spread, replicated
search.shardings = outer.shardings = probe
problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1)})
key = jax.random.key(3)
calls = {
    "search": lambda: hg.random_search(objective, space, key, num_trials=6, chunk_size=4),
    "population": lambda: hg.tune(objective, space, key, population=2, steps=1),
    "fixed_chunk": lambda: hg.tune(objective, space, key, population=4, chunk_size=8, halving=1, steps=2),
    "hybrid": lambda: hg.hybrid_search(objective, hg.Space({"lr": space["lr"], "weight_decay": hg.Choice([1e-3, 1e-1])}),
                                       key, budget=40),
}
out = {}
for name, call in calls.items():
    seen.clear()
    result = call()
    out[name] = {"used": sorted(set(map(tuple, seen))), "chunk": result.info.get("chunk_size")}
print(json.dumps(out))
"""


def test_chunks_the_devices_do_not_divide_and_small_populations_use_several_devices():
    """On 5 devices: 4 search trials per call over 4 devices, 2 tuners (and 2 hybrid configurations)
    over 2, a population's fixed chunk of 8 over 4 in every halving round. Before, each of these ran
    on one device."""
    out = subprocess.run([sys.executable, "-c", _FIVE_DEVICES], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["search"]["used"] == [[4, 4]] and got["search"]["chunk"] == 4
    assert got["population"]["used"] == [[2, 2]]
    assert got["fixed_chunk"]["used"] == [[8, 4]] and got["fixed_chunk"]["chunk"] == 8  # one chunk, every round
    assert got["hybrid"]["used"] == [[2, 2]]


@pytest.fixture(scope="module")
def objective():
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1)})


def test_a_resumed_hybrid_search_places_its_set_up_after_its_stored_trials(objective, key, tmp_path):
    space = hg.Space({"lr": SPACE["lr"], "weight_decay": hg.Choice([1e-3, 1e-1])})
    fresh = hg.hybrid_search(objective, space, key, budget=40)
    assert "setup_seconds_at" not in fresh.info  # every program compiled before its first step
    db = tmp_path / "study.db"
    with pytest.raises(Stop):
        hg.hybrid_search(objective, space, key, budget=40, storage=db, study="h", progress=stop_after(2))
    resumed = hg.hybrid_search(objective, space, key, budget=40, storage=db, study="h")
    (index, paid), = resumed.info["setup_seconds_at"]
    assert index == 2 * 2  # the 2 configurations' trials of the 2 steps the first call committed
    assert paid == pytest.approx(resumed.compile_seconds + resumed.setup_seconds)
    spent = resumed.spent("seconds")
    assert spent[index - 1] == pytest.approx(sum(t.seconds for t in resumed.trials[:index]))  # the stored ones
    assert spent[-1] == pytest.approx(resumed.compile_seconds + resumed.setup_seconds
                                      + sum(t.seconds for t in resumed.trials))


@pytest.mark.parametrize("devices", [1, 2, 3, 5, 6, 7])
def test_the_clis_chunks_and_planned_rows_are_the_librarys(monkeypatch, devices):
    """`hypergrad compare` plans its budget on the rows its searches and tune's warm-up compute: on 3
    devices it counted 132 rows for a warm-up of 127 trials that ran 135, and its chunk for 16 rows
    under --chunk-size 16 was 18."""
    monkeypatch.setattr(_batching, "device_count", lambda: devices)
    for num in range(1, 300):
        chunk = _batching.chunk_for(num, None)  # tune's warm-up: a search given no chunk
        assert cli._rows_run(num, _batching.DEFAULT_CHUNK, devices) == -(-num // chunk) * chunk, num
        for size in (8, 16, 64):
            given = cli._chunk(num, size, devices)
            assert given <= max(size, devices) and given % devices == 0, (num, size, given)
            ran = _batching.chunk_for(num, given)  # what random_search(chunk_size=given) runs
            assert cli._rows_run(num, size, devices) == -(-num // ran) * ran, (num, size)
