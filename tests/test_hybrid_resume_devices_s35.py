"""A hybrid study resumed on more devices than it started on stays within its budget.

The resumed call runs the steps the first call's plan bought (stored with its checkpoint), but it ran
them at the padding of its own device count: 3 configurations planned on 1 device (3 rows a step) and
resumed on 2 ran as a chunk of 4, the padding row charged, and the study spent 30.48 runs of a budget of
30. It now runs them unpadded where the padding does not fit in what the budget has left."""

import json
import subprocess
import sys

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad import hybrid

from _helpers import Stop, stop_after

BUDGET = 30.0
SPACE = hg.Space({"momentum": hg.Choice([0.0, 0.5, 0.9]), "lr": hg.LogUniform(1e-2, 2.0)})


def _optimizer(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])


def _objective():  # the child's, described alike in the study's fingerprint
    problem = hg.problems.logistic("synthetic", num_examples=40, num_features=4, num_classes=3, seed=0, batch_size=8)
    return hg.Objective(problem, _optimizer, num_steps=4)


# argv: the study file; the same call as _call's, resumed on 2 devices
_RESUME = r"""
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
import optax
import hypergrad as hg
def _optimizer(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])
problem = hg.problems.logistic("synthetic", num_examples=40, num_features=4, num_classes=3, seed=0, batch_size=8)
objective = hg.Objective(problem, _optimizer, num_steps=4)
space = hg.Space({"momentum": hg.Choice([0.0, 0.5, 0.9]), "lr": hg.LogUniform(1e-2, 2.0)})
result = hg.hybrid_search(objective, space, jax.random.key(0), budget=30.0, storage=sys.argv[1], study="s")
print(json.dumps({"devices": jax.device_count(), "steps": result.info["steps"], "runs": result.runs,
                  "spent": float(result.spent()[-1]), "values": [float(t.value) for t in result.trials]}))
"""


def test_a_study_started_on_one_device_and_resumed_on_two_spends_within_its_budget(tmp_path):
    if jax.device_count() != 1:
        pytest.skip("the study must start on one device")
    objective = _objective()
    whole = hg.hybrid_search(objective, SPACE, jax.random.key(0), budget=BUDGET)
    db = str(tmp_path / "study.db")
    with pytest.raises(Stop):
        hg.hybrid_search(objective, SPACE, jax.random.key(0), budget=BUDGET, storage=db, study="s",
                         progress=stop_after(3))
    stored = hg.load_study(db, "s").trials
    assert 0 < len(stored) < len(whole.trials)
    out = subprocess.run([sys.executable, "-c", _RESUME, db], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2
    assert got["steps"] == whole.info["steps"]  # the first call's plan, as before
    assert got["runs"] == pytest.approx(got["spent"], rel=1e-12)
    assert got["runs"] <= BUDGET * (1 + 1e-9), got["runs"]  # was 30.48: the steps left charged 4 rows for 3
    assert got["runs"] == pytest.approx(whole.runs, rel=1e-9)  # unpadded, as on one device
    assert got["values"] == pytest.approx([float(t.value) for t in whole.trials], rel=1e-6)


def test_the_unpadded_chunk_divides_the_configurations_within_the_default_chunk():
    assert [hybrid._unpadded_chunk(n) for n in (1, 3, 4, 64, 67, 72, 128)] == [1, 3, 4, 64, 1, 36, 64]
