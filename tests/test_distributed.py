"""Several processes on JAX's own runtime (issue 19, item 5).

The test starts two processes on loopback (`jax.distributed.initialize` with a free local port,
2 CPU devices each, gloo's CPU collectives), each running the float32 workload of
tests/test_determinism.py (random search, grid search, a population `tune`) with its trials split
over the 4 devices of both processes, and one lone process with one device as the reference.
Every process must return the same trials (bitwise), equal to the lone process's to 1e-6 relative,
and only process 0 may write the trial log. The processes are killed in a `finally` whatever
happens, and every wait has a timeout.
"""

import contextlib
import json
import os
import socket

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

import hypergrad as hg
from hypergrad._processes import checked_together

from _helpers import WORKER_START, free_port, two_workers
from test_determinism import assert_close, finish, run_worker

CALLS = "random,grid,population"
STUDY = "random-study"  # random search with storage=: process 0 writes, the repeat resumes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: JSON} of the two distributed processes ("process0", "process1") and the lone one."""
    tmp = tmp_path_factory.mktemp("distributed")
    port = str(free_port())
    procs = {}
    try:
        for i in (0, 1):
            logs = tmp / f"logs{i}"
            logs.mkdir()
            procs[f"process{i}"] = run_worker(tmp, f"process{i}", "--devices", "2",
                                              "--processes", "2", "--process-id", str(i), "--port", port,
                                              "--log-dir", str(logs), "--calls", f"{CALLS},{STUDY}",
                                              "--storage", str(tmp / "study.db"))
        procs["lone"] = run_worker(tmp, "lone", "--calls", CALLS, "--devices", "1")
    except BaseException:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        raise
    out = finish(procs, tmp, timeout=150)
    out["logs"] = {i: sorted(p.name for p in (tmp / f"logs{i}").iterdir()) for i in (0, 1)}
    out["stored"] = hg.load_study(str(tmp / "study.db"), "random")
    out["log0"] = [json.loads(line) for line in (tmp / "logs0" / "log-0.jsonl").read_text().splitlines()]
    return out


def test_the_processes_share_one_mesh_of_four_devices(runs):
    for i in (0, 1):
        run = runs[f"process{i}"]
        assert (run["processes"], run["devices"], run["local_devices"], run["dtype"]) == (2, 4, 2, "float32")


def test_every_process_returns_the_same_trials(runs):
    assert runs["process0"]["calls"] == runs["process1"]["calls"]


def test_two_processes_equal_one_to_1e6(runs):
    for call in CALLS.split(","):
        first, again = runs["process0"]["calls"][call]
        assert first == again, f"{call}: a repeated call changed over two processes"
        assert_close(first, runs["lone"]["calls"][call][0], f"two processes against one: {call}")


def test_process_0_alone_writes_the_study_and_every_process_resumes_it(runs):
    """The repeat of the study call resumed it on both processes (process 1 reading the file that
    process 0 wrote) and returned the first run's trials; the file holds them once."""
    for i in (0, 1):
        first, resumed = runs[f"process{i}"]["calls"][STUDY]
        assert resumed == first
        assert first == runs["process0"]["calls"]["random"][0]
    assert [t.number for t in runs["stored"].trials] == list(range(8))
    assert [t.value for t in runs["stored"].trials] == [t["value"] for t in runs["process0"]["calls"][STUDY][0]]


def test_process_0_alone_writes_the_log(runs):
    assert runs["logs"] == {0: ["log-0.jsonl"], 1: []}
    calls = runs["process0"]["calls"]
    # every call of the workload ran twice, each logging all its trials once
    expected = 2 * sum(len(calls[c][0]) for c in CALLS.split(","))
    assert len(runs["log0"]) == expected
    logged = [r["value"] for r in runs["log0"][:len(calls["random"][0])]]
    assert logged == [t["value"] for t in calls["random"][0]]


# -- process 0 refused or failing: every process stops -----------------------------------------------
_REFUSED_WORKER = r'''
import sqlite3
objective = hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0),
                         lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
out = {}
try:  # the study's lease is held by a live process (the test's)
    hg.random_search(objective, space, jax.random.key(0), 4, storage=os.path.join(tmp, "leased.db"), study="s")
except Exception as err:
    out["leased"] = f"{type(err).__name__}: {err}"
writes = []
if process == 0:  # process 0's second write fails (a full disk, say)
    def failing(self, trials, state):
        writes.append(1)
        if len(writes) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return write(self, trials, state)
    write, hg.store.StudyWriter._rows = hg.store.StudyWriter._rows, failing
try:
    hg.random_search(objective, space, jax.random.key(0), 8, chunk_size=2, storage=os.path.join(tmp, "full.db"),
                     study="s")
except Exception as err:
    out["failing"] = f"{type(err).__name__}: {err}"
hg.store.StudyWriter._rows = write if process == 0 else hg.store.StudyWriter._rows
hg.random_search(objective, space, jax.random.key(0), 2, storage=os.path.join(tmp, "key.db"), study="s")
try:  # process 1 given another key: its reader refuses the study, which process 0 holds open
    hg.random_search(objective, space, jax.random.key(process), 2, storage=os.path.join(tmp, "key.db"), study="s")
except Exception as err:
    out["key"] = f"{type(err).__name__}: {err}"
try:  # a log path refused (its directory is a file), checked where it is written: on process 0
    hg.random_search(objective, space, jax.random.key(0), 2, log=os.path.join(tmp, "worker.py", "log.jsonl"))
except Exception as err:
    out["log_refused"] = f"{type(err).__name__}: {err}"[:60]
try:  # process 0's log write fails (a full disk)
    hg.random_search(objective, space, jax.random.key(0), 4, chunk_size=2, log="/dev/full")
except Exception as err:
    out["log_full"] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"refused{process}.json"), "w") as f:
    json.dump(out, f)
'''


def test_when_process_0_is_refused_or_its_write_fails_every_process_raises(_refusals):
    """Process 0 refused a study (another live process writes it) or failing at a commit, process 1
    refusing a study (another key), process 0 refusing log= or failing to write it: the other
    processes raise the error too, instead of waiting in collectives it never reaches."""
    tmp_path, out = _refusals["refused"]
    assert out[0]["leased"].startswith("RuntimeError: study 's' in") and "is being written by pid" in out[0]["leased"]
    assert out[1]["leased"].startswith("RuntimeError: process 0 stopped this study with RuntimeError: study 's'")
    assert out[0]["failing"] == "OperationalError: database or disk is full"
    assert out[1]["failing"] == ("RuntimeError: process 0 stopped this study with OperationalError: database or disk "
                                 "is full")
    assert [t.number for t in hg.load_study(str(tmp_path / "full.db"), "s").trials] == [0, 1]
    # process 1 given another key: its reader refused the study and left process 0 waiting in the first chunk's
    # collective; both processes now refuse the call before the study opens (see the test below)
    for i in (0, 1):
        assert out[i]["key"].startswith("ValueError: several processes made different calls of random_search: "
                                        "process 1's call differs from process 0's in key."), out[i]["key"]
    assert hg.store._connect(str(tmp_path / "key.db")).execute("SELECT * FROM leases").fetchall() == []
    # the log checked and written on process 0 alone: its refusal or failed write left process 1 waiting
    assert out[0]["log_refused"].startswith("ValueError: log=")
    assert out[1]["log_refused"].startswith("ValueError: process 0 stopped this call with ValueE")
    assert out[0]["log_full"] == "OSError: [Errno 28] No space left on device"
    assert out[1]["log_full"] == ("RuntimeError: process 0 stopped this call with OSError: [Errno 28] No space left "
                                  "on device")


# -- processes making different calls: refused on every process, naming the difference --------------
_DIFFERENT_WORKER = r'''
problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
key = jax.random.key(0)
four, two = (hg.random_search(objective, space, key, n) for n in (4, 2))
sgdm = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=5)
choice = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Choice([0.0, 0.9])})
calls = {  # each process's call: the same but for one thing
    "num_trials": lambda: hg.random_search(objective, space, key, 4 + 2 * process, chunk_size=2),
    "key": lambda: hg.random_search(objective, space, jax.random.key(process), 4),
    "data": lambda: hg.random_search(hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.5,
                                                                    seed=process), objective.optimizer, num_steps=5),
                                     space, key, 4),
    "steps": lambda: hg.tune(objective, space, key, steps=2 + process),
    # extends= Results of 4 and 2 trials (shown alike, "a Result"): process 0 returned its 4 at once while
    # process 1 ran 2 more trials, waiting for process 0 in their collectives for ever
    "extends": lambda: len(hg.random_search(objective, space, key, 4, extends=(four, two)[process]).trials),
    # a Structured family on process 0 alone: its rates' broadcast met process 1's all-gather for ever
    "family": lambda: hg.hybrid_search(hg.Structured(lambda config: sgdm) if process == 0 else sgdm, choice, key,
                                       budget=20),
    "same": lambda: len(hg.random_search(objective, space, key, 4).trials),
}
out = {}
for name, call in calls.items():
    try:
        out[name] = call()
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"different{process}.json"), "w") as f:
    json.dump(out, f)
'''


def test_processes_making_different_calls_are_refused_naming_the_difference(_refusals):
    """Process 1 given another num_trials, key, data set or number of tuner steps than process 0 ran other
    programs: it waited in a collective process 0 never reached, for ever, or gloo aborted with a
    "collective mismatch". Every process now refuses before anything runs, naming what differs. The
    same for random_search given extends= Results of other lengths (no study compared that call) and
    hybrid_search given an hg.Structured family on process 0 alone (its broadcast met an all-gather)."""
    _, out = _refusals["different"]
    for i in (0, 1):
        # a plain argument is compared first, with each process's value (tests/test_distributed_arguments.py)
        for name, what, shown in [("num_trials", "random_search", "4 on process 0, 6 on process 1"),
                                  ("steps", "tune", "2 on process 0, 3 on process 1")]:
            assert out[i][name] == (f"ValueError: several processes made different calls of {what}: {name}= differs: "
                                    f"{shown}; give the same {name}= on every process (every process must make the "
                                    "same call, or they run different programs and wait for each other for ever)"), \
                (i, name, out[i][name])
        assert out[i]["family"] == (
            "ValueError: several processes made different calls of hybrid_search: objective= differs: a Structured on "
            "process 0, a Objective on process 1; give the same kind of objective on every process: an hg.Objective "
            "on all, or an hg.Structured family on all (a family plans its programs from process 0's measured rates, "
            "which the others must wait for)"), (i, out[i]["family"])
        for name, differs in [("key", "key"), ("data", "objective"), ("extends", "arguments.extended_from")]:
            assert out[i][name] == (f"ValueError: several processes made different calls of "
                                    f"random_search: process 1's call differs "
                                    f"from process 0's in {differs}. Every process must make the same call (the same "
                                    "objective, data, space, key and arguments), or they run different programs and "
                                    "wait for each other for ever: load the same data in each, and seed the key the "
                                    "same (not with jax.process_index())"), (i, name, out[i][name])
        assert out[i]["same"] == 4  # the same call runs


# -- a call refused on one process alone: refused on every process ---------------------------------
_REFUSED_ALONE_WORKER = r'''
problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
key = jax.random.key(0)
first = process == 0
import dataclasses
earlier = hg.random_search(objective, space, key, 4)  # process 1 extends a Result of another strategy
extended = earlier if first else dataclasses.replace(earlier, strategy="grid")
both = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Uniform(0.0, 0.9)})
reads = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=5)
sgdm = hg.Objective(problem, lambda h: optax.sgd(lambda t: h["lr"][t], momentum=h["momentum"]), num_steps=5)
choice = lambda n: hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "momentum": hg.Choice([0.1 * i for i in range(n)])})
schedule = lambda n: hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(n,)), "momentum": hg.Choice([0.0, 0.9])})
os.chdir(tmp)
import optuna
def optuna_resumed(seed):  # a stored study resumed with a sampler seeded otherwise on process 1 alone
    run = lambda seed: hg.optuna_search(objective, space, key, 4, batch_size=2, storage="o.db", study="o",
                                        sampler=optuna.samplers.RandomSampler(seed=seed))
    run(0)
    return len(run(seed).trials)
calls = {  # each process's call: the same but for one thing process 1 alone gives invalid
    "key": lambda: hg.random_search(objective, space, key if first else 0, 4),
    "space": lambda: hg.grid_search(objective, space if first else {"lr": (1e-3, 0.5)}, key, 3),
    "objective": lambda: hg.tune(objective if first else problem, space, key, steps=2),
    "hybrid": lambda: hg.hybrid_search(objective, hg.Space({"lr": hg.LogUniform(1e-3, 0.5),
                                                          "momentum": hg.Choice([0.0, 0.9])}),
                                       key if first else 0, budget=20),
    "optuna": lambda: hg.optuna_search(objective, space, key if first else 0, 4),
    "extends": lambda: len(hg.random_search(objective, space, key, 4, extends=extended).trials),
    # another key on process 1 alone: its extends= trials are not its first draws, refused after the first gather
    "extends_key": lambda: len(hg.random_search(objective, space, key if first else jax.random.key(1), 6,
                                                extends=earlier).trials),
    # refused on process 1 alone after the first gather, by a difference compared only in studying():
    # init naming a hyperparameter its space lacks; the objective reading one its space lacks; a choice
    # of 3 options the budget cannot buy; a schedule of 3 entries read over 5 steps (planned())
    "starts": lambda: hg.tune(objective, space if first else both, key, steps=2, init={"lr": 0.01}),
    "runs": lambda: hg.tune(objective if first else reads, space, key, steps=2),
    "budget": lambda: hg.hybrid_search(objective, choice(2 if first else 3), key, budget=5),
    "planned": lambda: hg.hybrid_search(sgdm, schedule(5 if first else 3), key, budget=12),
    # refused by process 1's replay of the stored rounds, after every gather (no description holds a seed)
    "optuna_resumed": lambda: optuna_resumed(process),
    # one study file, named two ways: compared as the same path
    "storage": lambda: [t.value for t in hg.random_search(objective, space, key, 4, storage="s.db" if first
                                                          else os.path.join(".", "s.db"), study="s").trials],
    "same": lambda: [t.value for t in hg.random_search(objective, space, key, 4).trials],
}
out = {}
for name, call in calls.items():
    try:
        out[name] = call()
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"alone{process}.json"), "w") as f:
    json.dump(out, f)
'''


def test_a_call_refused_on_one_process_alone_is_refused_on_every_process(_refusals):
    """The key, space or objective invalid on process 1 alone (an int key, a dict for the space, a
    problem for the objective; an `extends=` Result of another strategy), in random_search,
    grid_search, tune, hybrid_search and optuna_search: process 1 refused the call at its own check
    while process 0 waited for it in the call's first collective, for ever. Process 1 now raises its
    own error and process 0 the same, naming process 1; the next calls still agree, and a study file
    named 's.db' on one process and './s.db' on the other is one path, not a difference. The same
    for a refusal on process 1 alone at a check that ran after the first gather, from a space or
    objective that differs (compared only when the study opens, where process 0 then waited): tune's
    starts and objective trace, hybrid_search's budget and plan, and random_search(extends=) given
    another key on process 1 (its kept trials were checked after the gather, and no study compared
    the call's key), and optuna_search resuming its study with a sampler seeded otherwise on process 1
    (its replay refused there, after every gather, while process 0 went on)."""
    _, out = _refusals["alone"]
    for name, what in [("key", "random_search"), ("space", "grid_search"), ("objective", "tune"),
                       ("hybrid", "hybrid_search"), ("optuna", "optuna_search"), ("extends", "random_search"),
                       ("extends_key", "random_search"),
                       ("starts", "tune"), ("runs", "tune"), ("budget", "hybrid_search"), ("planned", "hybrid_search")]:
        own = out[1][name]
        assert own.startswith("ValueError: ") and "process" not in own, (name, own)
        assert out[0][name] == (f"ValueError: {what}: process 1 refused its call with {own} (every process stops: "
                                "each must make the same call, and one that a process refuses would leave the "
                                "others waiting for it for ever)"), (name, out[0][name])
    assert out[1]["key"] == "ValueError: key=0 is an int; pass jax.random.key(0)"
    assert out[1]["space"].startswith("ValueError: space must be an hg.Space, got dict")
    assert out[1]["starts"].startswith("ValueError: init names ['lr'] disagree with the space")
    assert out[1]["runs"].startswith("ValueError: KeyError 'momentum' while tracing the objective")
    assert out[1]["budget"].startswith("ValueError: budget=5 runs cannot buy two hypergradients for each of 3")
    assert out[1]["planned"].startswith("ValueError: the optimiser indexes a hyperparameter past its end")
    assert out[1]["optuna_resumed"].startswith("ValueError: cannot resume this optuna_search study: its sampler")
    assert out[0]["optuna_resumed"] == ("ValueError: process 1 stopped this call (resuming its study) with "
                                        + out[1]["optuna_resumed"]), out[0]["optuna_resumed"]
    assert out[1]["extends_key"].startswith("ValueError: random_search(extends=...): its trials are not this search's")
    for i in (0, 1):
        assert len(out[i]["same"]) == 4 and out[i]["storage"] == out[i]["same"], out[i]["storage"]
    assert out[0]["same"] == out[1]["same"]


@pytest.fixture(scope="module")
def _refusals(tmp_path_factory):
    """{scenario: (the folder, each process's JSON)} of the three scenarios above ("refused", "different",
    "alone"), run in turn in one launch of the two processes: each scenario's calls in its order, each
    scenario's study files named apart (leased.db, full.db, key.db; o.db, s.db), each its own JSON."""
    tmp = tmp_path_factory.mktemp("refusals")
    conn = hg.store._connect(str(tmp / "leased.db"))
    conn.execute("INSERT INTO leases VALUES ('s', ?, ?, 0.0)", (os.getpid(), socket.gethostname()))
    conn.close()
    refused = two_workers(tmp, WORKER_START + _REFUSED_WORKER + _DIFFERENT_WORKER + _REFUSED_ALONE_WORKER, "refused")
    return {"refused": (tmp, refused),
            **{name: (tmp, [json.loads((tmp / f"{name}{i}.json").read_text()) for i in (0, 1)])
               for name in ("different", "alone")}}


def _gathered_rows(monkeypatch, block, **arguments) -> np.ndarray:
    """The buffer this process sends from `checked_together(..., **arguments)` around `block`, with two
    processes faked (both rows this one's); whatever the block raises is let through."""
    sent = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda row: sent.append(np.asarray(row)) or
                        np.stack([sent[-1], sent[-1]]))
    with contextlib.suppress(Exception), checked_together("random_search", **arguments):
        block()
    return sent[-1]


def test_another_process_refusing_with_another_error_stops_this_one_and_a_path_is_compared_resolved(
        monkeypatch, tmp_path):
    """Without a second process (the all-gather faked): process 0 refusing its call with an error that
    is no ValueError or TypeError (optuna missing there alone, say) is a RuntimeError on process 1
    naming it; the same study file named 's.db' and './s.db' sends the same buffer."""
    def missing():
        raise ImportError("optuna_search needs optuna")

    refused = _gathered_rows(monkeypatch, missing, num_trials=4)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda row: np.stack([refused, np.asarray(row)]))
    with pytest.raises(RuntimeError, match=r"^random_search: process 0 refused its call with ImportError: optuna_"
                                           r"search needs optuna \(every process stops"):
        with checked_together("random_search", num_trials=4):
            pass
    with pytest.raises(ValueError, match="num_trials= differs: 4 on process 0, 5 on process 1"):
        with checked_together("random_search", num_trials=5):
            pass
    monkeypatch.chdir(tmp_path)
    assert np.array_equal(_gathered_rows(monkeypatch, lambda: None, storage="s.db"),
                          _gathered_rows(monkeypatch, lambda: None, storage=os.path.join(".", "s.db")))
    assert not np.array_equal(_gathered_rows(monkeypatch, lambda: None, storage="s.db"),
                              _gathered_rows(monkeypatch, lambda: None, storage="t.db"))
