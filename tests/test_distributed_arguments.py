"""Several processes given different arguments (README, Several machines): every process refuses the
call with one `ValueError` naming the argument, before anything compiles, instead of one process
raising while the other waits in a collective for ever, or the two pairing different collectives
(gloo's "collective mismatch" abort, an `IndexError` decoding another collective's buffer).

The tests of two processes share one run of two processes of one `jax.distributed` run on loopback
(`two_workers`: killed whatever happens, every wait bounded): each test's scenario runs there in turn,
in a folder of its own (its study and log files), its calls in order (a refusal followed by the call
showing that the processes still agree), and the test reads its scenario's outcome; the checks that
need no second process fake one (`jax.process_count` and the all-gather patched).
"""

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

import hypergrad as hg
from hypergrad._checks import shared_outcome
from hypergrad._processes import check_arguments_agree

from _helpers import WORKER_START, two_workers

# each process's calls, the same but for what a test gives process 1 (or process 0) alone
_ARGUMENTS_WORKER = WORKER_START + r'''
objective = hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0),
                         lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
key = jax.random.key(0)
first = process == 0
lines = []


def stop(line):  # a user's callable stopping the search on process 1 alone, at its second line
    lines.append(line)
    if process == 1 and len(lines) == 2:
        raise RuntimeError("stop")


def scenario(folder):  # the calls of a scenario whose files are in `folder`
    db, log = os.path.join(folder, "study.db"), os.path.join(folder, "trials.jsonl")
    calls = {
        "log": lambda: hg.random_search(objective, space, key, 4, log=log if first else None),
        "tune_log": lambda: hg.tune(objective, space, key, steps=2, log=log if first else None),
        "storage": lambda: hg.random_search(objective, space, key, 4, **(dict(storage=db, study="s") if first else {})),
        "num_trials": lambda: hg.random_search(objective, space, key, 4 if first else 0),
        "steps": lambda: hg.tune(objective, space, key, steps=2 if first else 0),
        "progress": lambda: hg.random_search(objective, space, key, 8, chunk_size=2, storage=db, study="p",
                                             progress=stop),
        "resumed": lambda: [t.value for t in hg.random_search(objective, space, key, 8, chunk_size=2, storage=db,
                                                              study="p").trials],
        "same": lambda: [t.value for t in hg.random_search(objective, space, key, 8, chunk_size=2).trials],
    }
    return calls


out = {}
for scenario_name, names in SCENARIOS.items():  # each in its own folder, its calls in order
    folder = os.path.join(tmp, scenario_name)
    os.makedirs(folder, exist_ok=True)
    calls = scenario(folder)
    out[scenario_name] = {}
    for name in names:
        try:
            out[scenario_name][name] = calls[name]()
        except Exception as err:
            out[scenario_name][name] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"arguments{process}.json"), "w") as f:
    json.dump(out, f)
'''

# each test's scenario: the calls it runs, in order, in a folder of its own
_SCENARIOS = {"log": ("log", "tune_log", "same"), "storage": ("storage", "same"),
              "invalid": ("num_trials", "steps", "same"), "progress": ("progress", "resumed", "same")}


@pytest.fixture(scope="module")
def _shared(tmp_path_factory):
    """Every scenario run in one launch of the two processes: {scenario: (its folder, each process's outcome
    of its calls: a result, or the error's type and message)}."""
    tmp = tmp_path_factory.mktemp("arguments")
    out = two_workers(tmp, f"SCENARIOS = {_SCENARIOS!r}\n" + _ARGUMENTS_WORKER, "arguments")
    return {name: (tmp / name, [out[i][name] for i in (0, 1)]) for name in _SCENARIOS}


def _refusal(what: str, name: str, shown: str, fix: str) -> str:
    return f"ValueError: several processes made different calls of {what}: {name}= differs: {shown}; {fix}"


_LOG_FIX = ("give log= on every process or on none (process 0 alone writes it: the path another process gives is "
            "not written, and may differ)")
_STUDY_FIX = ("give the same storage= on every process (process 0 alone writes the study; the others read it to "
              "resume, on a filesystem they all see)")


def _same_fix(name: str) -> str:
    return (f"give the same {name}= on every process (every process must make the same call, or they run different "
            "programs and wait for each other for ever)")


def test_a_log_given_on_process_0_alone_is_refused_on_every_process(_shared):
    """log= on process 0 alone (the "process 0 writes the log" idiom): process 0 checked the path and
    shared its verdict in an all-gather process 1 never made; process 0 decoded process 1's next
    collective as an outcome (IndexError) and hung, process 1 aborted (gloo's collective mismatch)."""
    tmp_path, out = _shared["log"]
    shown = "given on process 0, None on process 1"
    for i in (0, 1):
        assert out[i]["log"] == _refusal("random_search", "log", shown, _LOG_FIX), out[i]["log"]
        assert out[i]["tune_log"] == _refusal("tune", "log", shown, _LOG_FIX), out[i]["tune_log"]
        assert len(out[i]["same"]) == 8  # the processes still agree on the next call
    assert out[0]["same"] == out[1]["same"]
    assert not (tmp_path / "trials.jsonl").exists()  # refused before anything ran


def test_a_study_given_on_process_0_alone_is_refused_on_every_process(_shared):
    """storage= and study= on process 0 alone: process 1 skipped the study's all-gathers that process 0
    made (an IndexError on process 0, then a hang; a gloo abort on process 1)."""
    tmp_path, out = _shared["storage"]
    shown = f"{str(tmp_path / 'study.db')!r} on process 0, None on process 1"
    for i in (0, 1):
        assert out[i]["storage"] == _refusal("random_search", "storage", shown, _STUDY_FIX), out[i]["storage"]
        assert len(out[i]["same"]) == 8
    assert not (tmp_path / "study.db").exists()  # refused before the study was opened


def test_an_argument_invalid_on_one_process_alone_is_refused_on_every_process(_shared):
    """num_trials=0 (or tune's steps=0) on process 1 alone: process 1 refused it at once while process 0
    waited for it in the call's first collective, for ever (or a Gloo timeout once process 1 left)."""
    tmp_path, out = _shared["invalid"]
    for i in (0, 1):
        assert out[i]["num_trials"] == _refusal("random_search", "num_trials", "4 on process 0, 0 on process 1",
                                                _same_fix("num_trials")), out[i]["num_trials"]
        assert out[i]["steps"] == _refusal("tune", "steps", "2 on process 0, 0 on process 1", _same_fix("steps"))
        assert len(out[i]["same"]) == 8
    assert out[0]["same"] == out[1]["same"]


def test_a_progress_callable_raising_on_one_process_alone_stops_every_process(_shared):
    """A progress callable raising on process 1 alone: process 1 left the search while process 0 went on
    to the next chunk's collective (a gloo abort on both). Every process now stops at that report,
    the chunks before it committed, and the same call again resumes to the uninterrupted trials."""
    tmp_path, out = _shared["progress"]
    assert out[1]["progress"] == "RuntimeError: stop"
    assert out[0]["progress"] == "RuntimeError: process 1 stopped this call with RuntimeError: stop"
    for i in (0, 1):
        assert out[i]["resumed"] == out[i]["same"] and len(out[i]["same"]) == 8
    assert [(s.name, s.state, s.num_trials) for s in hg.list_studies(str(tmp_path / "study.db"))] == [("p", "complete", 8)]


# -- without a second process: the collective faked ---------------------------------------------------
def _fake_processes(monkeypatch, gathered):
    """Two processes as the checks see them: `jax.process_count()` is 2, and the all-gather returns
    `gathered(sent)`: the rows of both processes."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda sent: gathered(np.asarray(sent)))


def test_an_outcome_paired_with_another_collective_says_the_processes_are_out_of_step(monkeypatch):
    """A process whose outcome all-gather was paired with another collective's buffer (its first byte no
    outcome kind) raised `IndexError: tuple index out of range`; now a RuntimeError naming the cause."""
    _fake_processes(monkeypatch, lambda sent: np.stack([sent, np.full_like(sent, 224)]))
    with pytest.raises(RuntimeError, match="process 1 sent something else than its outcome of this call: the "
                                           "processes' collectives are out of step"):
        shared_outcome(None, "this call")


def test_arguments_paired_with_another_collective_say_the_processes_are_out_of_step(monkeypatch):
    _fake_processes(monkeypatch, lambda sent: np.stack([sent, np.zeros_like(sent)]))
    with pytest.raises(RuntimeError, match="random_search: the processes' collectives are out of step"):
        check_arguments_agree("random_search", num_trials=4)


def test_arguments_agreeing_pass_and_a_lone_process_gathers_nothing(monkeypatch):
    """Equal arguments (an array, a path, a numpy int read as the int it is) pass; in a lone process the
    check makes no collective at all."""
    arguments = dict(num_trials=np.int64(4), init={"lr": np.ones(3)}, log=None, outer=hg.Reverse())
    _fake_processes(monkeypatch, lambda sent: np.stack([sent, sent]))
    check_arguments_agree("tune", **arguments)
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda sent: pytest.fail("a lone process gathered"))
    check_arguments_agree("tune", **arguments)
