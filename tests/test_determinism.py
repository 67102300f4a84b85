"""Determinism (issue 19, item 6), in float32, the library's default dtype.

Each check runs a fixed workload in a fresh subprocess (JAX fixes its devices and dtype when it
starts; the suite itself runs float64): random search of 8 trials (with the default chunk, and a
chunk of 3 that pads its last call), a grid of 8 (sharing random search's program), and a
population `tune` of 4 tuners (default chunk, and a chunk of 3 that pads). The subprocess runs every call twice: the repeat must be bitwise equal.
Across subprocesses with 1, 2 and 4 CPU devices, and across chunk sizes, every trial's value and
scores must agree to 1e-6 relative; a search's hyperparameters (its draws) exactly, and a tuner's
iterates to 1e-6 of their range in the space's own scale (log for `LogUniform`). Not relative to
the value: a float32 ulp of the iterate moves a LogUniform over four decades by about 5e-7 relative,
and with XLA's full optimisation a one-device and a four-device run differ by two such ulps after
three outer steps (1.2e-6 relative, 1.3e-7 of the range), because XLA compiles the hypergradient of
a batch of one tuner per device differently from a batch of four (one device with chunk_size=1
against chunk 4 gives the same difference). tests/test_distributed.py runs
the same workload (`python tests/test_determinism.py --processes 2 ...`) over two processes.

Run as a script, this file is that worker: it writes its results as JSON (floats written with
`repr`, so exactly) to --out.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

TOLERANCE = 1e-6  # relative, float32
STEPS = 12  # inner training steps
CHUNKED = {"random-chunk3": "random", "population-chunk3": "population"}  # call -> the same call, default chunk
BOUNDS = {"lr": (1e-2, 1.0, "log"), "momentum": (0.0, 0.9, "linear"), "weight_decay": (1e-5, 1e-1, "log")}
WORKER = os.path.abspath(__file__)


# -- the worker (runs in a subprocess) ------------------------------------------------------------
def _start_jax(devices: int, processes: int, process_id: int, port: int):
    """JAX configured before it computes anything: float32, `devices` CPU devices, and with several
    processes the distributed runtime on loopback with gloo's CPU collectives."""
    import jax

    jax.config.update("jax_enable_x64", False)
    jax.config.update("jax_num_cpu_devices", devices)
    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=processes,
                                   process_id=process_id, initialization_timeout=60)
    return jax


def _trials(result) -> list:
    return [{"number": t.number, "value": float(t.value), "state": t.state, "tuner": t.tuner,
             "scores": {k: float(v) for k, v in sorted(t.scores.items())},
             "hparams": {k: np.asarray(v, np.float64).ravel().tolist() for k, v in sorted(t.hparams.items())}}
            for t in result.trials]


def _workload(log_dir: str | None, storage: str | None, names: list[str]) -> dict:
    """The calls `names` of the workload, each run twice; name -> [trials of the first run, of the repeat]."""
    import jax
    import optax

    import hypergrad as hg

    def optimizer(h):
        return optax.chain(optax.add_decayed_weights(h["weight_decay"]), optax.sgd(h["lr"], momentum=h["momentum"]))

    def objective(batch_size):
        return hg.Objective(hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3,
                                                 seed=0, batch_size=batch_size), optimizer, num_steps=STEPS)

    # searches on minibatches of 8 (every trial replays the same batches); tune full batch, which
    # compiles in half the time
    minibatch, full = objective(8), objective(None)
    space = hg.Space({name: (hg.LogUniform if scale == "log" else hg.Uniform)(lo, hi)
                      for name, (lo, hi, scale) in BOUNDS.items()})
    key = jax.random.key(3)
    log = None if log_dir is None else os.path.join(log_dir, f"log-{jax.process_index()}.jsonl")
    calls = {
        "random": lambda: hg.random_search(minibatch, space, key, 8, log=log),
        "random-chunk3": lambda: hg.random_search(minibatch, space, key, 8, chunk_size=3),
        # a study: the first run stores its trials, the repeat resumes and loads them all
        "random-study": lambda: hg.random_search(minibatch, space, key, 8, storage=storage, study="random"),
        "grid": lambda: hg.grid_search(minibatch, space, key, 2, log=log),
        "population": lambda: hg.tune(full, space, key, population=4, steps=3, log=log),
        "population-chunk3": lambda: hg.tune(full, space, key, population=4, steps=3, chunk_size=3),
    }
    return {name: [_trials(calls[name]()), _trials(calls[name]())] for name in names}


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="the determinism workload, results as JSON")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--storage", default=None, help="the study file of the random-study call")
    parser.add_argument("--calls", default="random,random-chunk3,grid,population,population-chunk3")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    jax = _start_jax(args.devices, args.processes, args.process_id, args.port)
    out = {"devices": jax.device_count(), "local_devices": jax.local_device_count(),
           "processes": jax.process_count(), "dtype": str(jax.numpy.zeros(()).dtype),
           "calls": _workload(args.log_dir, args.storage, args.calls.split(","))}
    with open(args.out, "w") as f:
        json.dump(out, f)


# -- comparisons (used by this file's tests and by test_distributed.py) ---------------------------
def run_worker(tmp_path, name: str, *extra: str) -> subprocess.Popen:
    """Starts the worker in a subprocess writing tmp_path/<name>.json; returns the process."""
    out = tmp_path / f"{name}.json"
    return subprocess.Popen([sys.executable, WORKER, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: dict, tmp_path, timeout: float = 120) -> dict:
    """Waits for the workers {name: process} (killing them all on a timeout or any failure) and
    returns {name: their JSON}."""
    try:
        for name, proc in procs.items():
            output, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker {name} failed:\n{output[-4000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in procs}


def _losses(trials: list) -> np.ndarray:
    return np.asarray([[t["value"], *t["scores"].values()] for t in trials], dtype=np.float64)


def _fractions(trials: list) -> np.ndarray:
    """Each trial's hyperparameters as fractions of their range, in the space's scale."""
    def fraction(name, values):
        lo, hi, scale = BOUNDS[name]
        f = np.log if scale == "log" else (lambda v: v)
        return (f(np.asarray(values)) - f(lo)) / (f(hi) - f(lo))
    return np.asarray([np.concatenate([fraction(n, v) for n, v in t["hparams"].items()]) for t in trials])


def assert_close(a: list, b: list, what: str) -> tuple[float, float]:
    """The trials `a` and `b` agree: same numbers, states, tuners and names; every value and score
    within `TOLERANCE` relative; hyperparameters equal (a search's draws) or, for a tuner's iterates,
    within `TOLERANCE` of their range. Returns the largest (relative, range) differences."""
    assert [(t["number"], t["state"], t["tuner"], list(t["scores"]), list(t["hparams"])) for t in a] == \
        [(t["number"], t["state"], t["tuner"], list(t["scores"]), list(t["hparams"])) for t in b], what
    x, y = _losses(a), _losses(b)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), what
    worst = float(np.max(np.abs(x - y) / np.abs(y)))
    assert worst <= TOLERANCE, f"{what}: relative difference {worst:.3g} > {TOLERANCE}"
    if a[0]["tuner"] is None:
        assert [t["hparams"] for t in a] == [t["hparams"] for t in b], f"{what}: the drawn settings differ"
    moved = float(np.max(np.abs(_fractions(a) - _fractions(b))))
    assert moved <= TOLERANCE, f"{what}: iterates differ by {moved:.3g} of their range > {TOLERANCE}"
    return worst, moved


# -- tests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def by_devices(tmp_path_factory):
    """The float32 workload with 1, 2 and 4 CPU devices in one process each (run side by side); the
    chunk sizes vary on 1 device (and random search's on 4: a sharded chunk of 8 against an
    unsharded chunk of 3), each compiled program costing seconds."""
    tmp = tmp_path_factory.mktemp("determinism")
    calls = {1: ",".join(CHUNKED) + ",random,grid,population", 2: "random,grid,population",
             4: "random-chunk3,random,grid,population"}
    procs = {f"devices{n}": run_worker(tmp, f"devices{n}", "--devices", str(n), "--calls", calls[n])
             for n in (1, 2, 4)}
    return finish(procs, tmp)


def test_the_workload_ran_in_float32_on_the_devices_asked_for(by_devices):
    for n in (1, 2, 4):
        run = by_devices[f"devices{n}"]
        assert (run["dtype"], run["devices"], run["processes"]) == ("float32", n, 1)


def test_a_repeated_call_is_bitwise_equal(by_devices):
    for name, run in by_devices.items():
        for call, (first, again) in run["calls"].items():
            assert first == again, f"{name}: {call} changed when run again"


def test_the_chunk_size_changes_values_by_at_most_1e6(by_devices):
    compared = 0
    for name, run in by_devices.items():
        for chunked, default in CHUNKED.items():
            if chunked in run["calls"]:
                assert_close(run["calls"][chunked][0], run["calls"][default][0], f"{name}: {chunked}")
                compared += 1
    assert compared == 3


def test_the_number_of_devices_changes_values_by_at_most_1e6(by_devices):
    one = by_devices["devices1"]["calls"]
    for n in (2, 4):
        for call, (first, _) in by_devices[f"devices{n}"]["calls"].items():
            assert_close(first, one[call][0], f"{n} devices against 1: {call}")
    assert set(by_devices["devices4"]["calls"]) == {"random-chunk3", "random", "grid", "population"}


def test_the_workload_has_distinct_trials(by_devices):
    """The comparisons above can fail: the trials differ from one another far beyond the bound."""
    values = [t["value"] for t in by_devices["devices1"]["calls"]["random"][0]]
    assert len(set(values)) == len(values)
    assert (max(values) - min(values)) / abs(min(values)) > 1e3 * TOLERANCE


if __name__ == "__main__":
    _main()
