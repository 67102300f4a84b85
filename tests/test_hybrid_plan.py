"""hybrid_search's plan (the programs and the steps the budget buys) across device counts and
resumes. JAX fixes its device count when it starts, so each device count runs in a child process."""

import json
import subprocess
import sys

import optax
import pytest

import hypergrad as hg
from hypergrad import hybrid

from _helpers import Stop, stop_after

# argv: devices, then JSON [[study file, the progress call to stop at (0: none), the JSON file written], ...]:
# the calls run in turn in this one process
_CHILD = r"""
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
jax.config.update("jax_enable_x64", True)
import optax
import hypergrad as hg
problem = hg.problems.logistic("synthetic", num_examples=40, num_features=4, num_classes=3, seed=0, batch_size=8)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)
space = hg.Space({"momentum": hg.Choice([0.0, 0.5, 0.9]), "lr": hg.LogUniform(1e-2, 2.0)})
for db, stop, out_file in json.loads(sys.argv[2]):
    calls = [0]
    def progress(message):
        calls[0] += 1
        if calls[0] == stop:
            raise KeyboardInterrupt
    try:
        result = hg.hybrid_search(objective, space, jax.random.key(0), budget=30.0, storage=db, study="s",
                                  progress=progress if stop else False)
        got = {"steps": result.info["steps"], "trials": len(result.trials), "runs": result.runs,
               "tuners": [t.tuner for t in result.trials], "values": [float(t.value) for t in result.trials]}
    except KeyboardInterrupt:
        got = {"stored": len(hg.load_study(db, "s").trials)}
    with open(out_file, "w") as f:
        json.dump(got, f)
"""


def _run(tmp_path, devices: int, *calls: tuple[str, int]) -> list[dict]:
    """What each call (study file, progress call to stop at) returned, run in turn in one child process
    of `devices` devices."""
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    jobs = [(str(tmp_path / db), stop, str(tmp_path / f"out{devices}_{db}_{stop}.json")) for db, stop in calls]
    out = subprocess.run([sys.executable, str(child), str(devices), json.dumps(jobs)],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(open(out_file).read()) for _, _, out_file in jobs]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The uninterrupted call on one device, and a study of the same call stopped after 3 steps (in turn,
    in one child process)."""
    tmp_path = tmp_path_factory.mktemp("hybrid_plan")
    return tmp_path, *_run(tmp_path, 1, ("whole.db", 0), ("stopped.db", 3))


def test_a_study_resumed_on_more_devices_keeps_the_steps_it_started_with(one_device):
    """A study started on 1 device and resumed on 2 was planned anew there (3 configurations on 2
    devices padded to 4 rows bought 4 steps, not 6) and kept the 3 x 7 trials stored: the table held
    a 1-device plan's trials under info["steps"] == 4, a table neither device count makes. The
    checkpoint now stores the plan's steps, and the resumed call runs them."""
    tmp_path, whole, stopped = one_device
    assert stopped["stored"] < whole["trials"]  # stopped part-way
    (resumed,) = _run(tmp_path, 2, ("stopped.db", 0))
    assert (resumed["steps"], resumed["trials"]) == (whole["steps"], whole["trials"])
    assert resumed["tuners"] == whole["tuners"]
    assert resumed["values"] == pytest.approx(whole["values"], rel=1e-6)


def test_a_study_stored_without_its_steps_is_refused_past_the_steps_planned_now(key, tmp_path, monkeypatch):
    """A study stored before the checkpoint kept its steps, resumed where the budget buys fewer
    (its steps planned anew): refused, naming the steps, not finished with a mixed table."""
    problem = hg.problems.ridge(num_examples=12, num_features=2, noise=0.5, seed=0)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "weight_decay": hg.Choice([1e-3, 1e-1])})
    db = tmp_path / "old.db"
    with monkeypatch.context() as old:  # the checkpoint as it was stored before: the cohorts alone
        old.setattr(hybrid, "_PlannedSink", lambda writer, plan: writer)
        with pytest.raises(Stop):
            hg.hybrid_search(objective, space, key, budget=40, storage=db, study="h", progress=stop_after(3))
    evaluations = hybrid._evaluations
    monkeypatch.setattr(hybrid, "_evaluations", lambda *args: min(evaluations(*args), 2))  # steps cost more now
    with pytest.raises(ValueError, match=r"checkpoint is at outer step 2, past the 1 steps the budget buys now"):
        hg.hybrid_search(objective, space, key, budget=40, storage=db, study="h")
