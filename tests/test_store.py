"""The study store (`hypergrad.store`): resume equals an uninterrupted run for every strategy, a
different call is refused by name, load/list read a file back, and `Result.to_optuna` writes trials
Optuna reads back. Interruptions here are exceptions raised from the progress callback, right after
a chunk or step was committed; `test_store_reliability.py` kills real processes."""

import contextlib
import inspect
import json
import logging
import math
import os
import sqlite3
import sys
import threading
import time

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad._checks import check_log
from hypergrad._store_codec import (decode_hparams, decode_value, encode_hparams, encode_value, first_difference,
                                    identity, in_format)
from hypergrad.outer import DEFAULT_OUTER
from _helpers import Stop, fingerprint_format, stop_after


def assert_same_trials(a, b):
    """Trial numbers, states, tuners, hyperparameters (dtype included) and values equal bitwise."""
    assert [t.number for t in a.trials] == [t.number for t in b.trials] == list(range(len(a.trials)))
    for x, y in zip(a.trials, b.trials):
        assert (x.state, x.tuner) == (y.state, y.tuner), x.number
        assert x.value == y.value or (math.isnan(x.value) and math.isnan(y.value)), (x.number, x.value, y.value)
        assert x.scores.keys() == y.scores.keys()
        assert set(x.hparams) == set(y.hparams)
        for name, value in x.hparams.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == y.hparams[name].dtype and np.array_equal(value, y.hparams[name]), name
            else:
                assert value == y.hparams[name], name


@pytest.fixture(scope="module")
def ridge_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=5)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_random_search_resumes_skipping_stored_chunks(ridge_objective, key, tmp_path):
    db = tmp_path / "study.db"
    whole = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4)
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r", progress=stop_after(2))
    (info,) = hg.list_studies(db)
    assert (info.name, info.kind, info.state, info.num_trials) == ("r", "random", "running", 8)
    progress = stop_after(0)
    resumed = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r",
                               progress=progress)
    assert len(progress.calls) == 1  # only the third chunk ran
    assert_same_trials(whole, resumed)
    assert_same_trials(whole, hg.load_study(db, "r"))
    (info,) = hg.list_studies(db)
    assert (info.state, info.num_trials, info.strategy) == ("complete", 10, "random")
    assert info.best_value == whole.best_value
    again = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r",
                             progress=stop_after(0))
    assert_same_trials(whole, again)


def test_a_different_call_is_refused_by_the_field_that_differs(ridge_objective, ridge_problem, key, tmp_path):
    db = tmp_path / "study.db"
    hg.grid_search(ridge_objective, SPACE, key, 2, storage=db, study="g")
    assert_same_trials(hg.grid_search(ridge_objective, SPACE, key, 2), hg.load_study(db, "g"))
    cases = [
        (dict(points_per_axis=3), "arguments.points_per_axis"),
        (dict(key=jax.random.key(1)), r"key\[1\]"),
        (dict(space=hg.Space({"lr": hg.LogUniform(1e-3, 0.4), "weight_decay": hg.LogUniform(1e-4, 1.0)})),
         "space.lr.hi"),
        (dict(objective=hg.Objective(ridge_problem, ridge_objective.optimizer, num_steps=6)), "objective.num_steps"),
        (dict(objective=hg.Objective(ridge_problem, lambda h: optax.sgd(2 * h["lr"]), num_steps=5)),
         r"objective.optimizer.\w+"),
        (dict(objective=hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.6, seed=0),
                                     ridge_objective.optimizer, num_steps=5)), r"objective.problem.train_data\S*"),
    ]
    for change, field in cases:
        args = {"objective": ridge_objective, "space": SPACE, "key": key, "points_per_axis": 2, **change}
        with pytest.raises(ValueError, match=f"study 'g' .* different call: {field} differs"):
            hg.grid_search(args.pop("objective"), args.pop("space"), args.pop("key"), args.pop("points_per_axis"),
                           storage=db, study="g")
    with pytest.raises(ValueError, match="different call: kind differs"):
        hg.random_search(ridge_objective, SPACE, key, 4, storage=db, study="g")


MOMENTUM = 0.5  # a module-level value the optimizer below reads (the test edits it)


class Settings:
    """A plain object whose repr shows none of its values."""

    def __init__(self, momentum):
        self.momentum = momentum


def momentum_optimizer(h):
    return optax.sgd(h["lr"], momentum=MOMENTUM)


def held_optimizer(settings):
    return lambda h: optax.sgd(h["lr"], momentum=settings.momentum)


def test_an_edited_global_or_object_attribute_is_a_different_call(ridge_problem, key, tmp_path, monkeypatch):
    """What a function reads at module level, or an attribute of a plain object it holds, changes
    the results as much as its code: resuming after editing one is refused by name, not mixed."""
    db = tmp_path / "study.db"
    by_global = hg.Objective(ridge_problem, momentum_optimizer, num_steps=5)
    settings = Settings(0.5)
    by_object = hg.Objective(ridge_problem, held_optimizer(settings), num_steps=5)
    hg.grid_search(by_global, SPACE, key, 2, storage=db, study="global")
    hg.grid_search(by_object, SPACE, key, 2, storage=db, study="object")
    monkeypatch.setattr(f"{__name__}.MOMENTUM", 0.0)
    settings.momentum = 0.0
    with pytest.raises(ValueError, match=r"objective.optimizer.globals.MOMENTUM differs \(0.5 stored, 0.0 now\)"):
        hg.grid_search(by_global, SPACE, key, 2, storage=db, study="global")
    with pytest.raises(ValueError, match=r"objective.optimizer.closure\[0\].fields.momentum differs"):
        hg.grid_search(by_object, SPACE, key, 2, storage=db, study="object")
    monkeypatch.setattr(f"{__name__}.MOMENTUM", 0.5)
    settings.momentum = 0.5
    assert_same_trials(hg.grid_search(by_global, SPACE, key, 2), hg.grid_search(by_global, SPACE, key, 2, storage=db,
                                                                                 study="global"))
    hg.grid_search(by_object, SPACE, key, 2, storage=db, study="object")


def test_a_study_stored_by_the_format_1_fingerprint_still_resumes(ridge_problem, key, tmp_path):
    """A study stored before fingerprints described globals is compared as it was made, not refused."""
    db = tmp_path / "study.db"
    objective = hg.Objective(ridge_problem, momentum_optimizer, num_steps=5)
    with pytest.raises(Stop):
        hg.random_search(objective, SPACE, key, 10, chunk_size=4, storage=db, study="r", progress=stop_after(1))
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()
        old = {k: in_format(v, 1) for k, v in json.loads(stored).items() if k != "format"}
        assert "globals" in stored and "globals" not in json.dumps(old)
        conn.execute("UPDATE studies SET fingerprint = ? WHERE name = 'r'", (json.dumps(old),))
    progress = stop_after(0)
    assert_same_trials(hg.random_search(objective, SPACE, key, 10, chunk_size=4),
                       hg.random_search(objective, SPACE, key, 10, chunk_size=4, storage=db, study="r",
                                        progress=progress))
    assert len(progress.calls) == 2  # the stored chunk was loaded
    with pytest.raises(ValueError, match="arguments.num_trials differs"):
        hg.random_search(objective, SPACE, key, 11, storage=db, study="r")


def warmup_cosine_adamw(peak):
    """A common optax recipe: its peak rate sits eight closures deep."""
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(optax.warmup_cosine_decay_schedule(0.0, peak, 2, 10), weight_decay=1e-4))


RECIPES = [warmup_cosine_adamw,
           lambda v: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.join_schedules(
               [optax.linear_schedule(0.0, v, 5), optax.cosine_decay_schedule(v, 45)], [5]))),
           lambda v: optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.adam)(
               learning_rate=optax.exponential_decay(v, 10, 0.9))),
           lambda v: optax.apply_if_finite(optax.chain(optax.clip(1.0), optax.adam(optax.exponential_decay(v, 10, 0.9))),
                                           5)]


def test_an_optimiser_differing_deep_in_its_closures_is_a_different_call(ridge_objective, ridge_problem, key,
                                                                         tmp_path):
    """Fingerprints follow closures to any depth: an outer optimiser (or one the objective holds)
    differing only in a schedule's value deep inside optax's chains is refused, not mixed."""
    for recipe in RECIPES:
        a, b = (hg.store.fingerprint("tune", ridge_objective, SPACE, key, outer=recipe(v)) for v in (0.1, 0.2))
        assert first_difference(a, b) is not None, recipe
        assert first_difference(a, hg.store.fingerprint("tune", ridge_objective, SPACE, key, outer=recipe(0.1))) is None
    held = [hg.Objective(ridge_problem, lambda h, tx=warmup_cosine_adamw(v): optax.chain(tx, optax.scale(h["lr"])),
                         num_steps=5) for v in (0.1, 0.2)]
    assert hg.store.objective_digest(held[0]) != hg.store.objective_digest(held[1])
    db = tmp_path / "study.db"
    hg.tune(ridge_objective, SPACE, key, steps=1, outer=warmup_cosine_adamw(0.1), storage=db, study="t")
    with pytest.raises(ValueError, match=r"different call: arguments.outer\S* differs"):
        hg.tune(ridge_objective, SPACE, key, steps=1, outer=warmup_cosine_adamw(1.0), storage=db, study="t")


class Tuner:
    """An optimizer given as a bound method or as a callable object."""

    def __init__(self, scale):
        self.scale = scale

    def optimizer(self, h):
        return optax.sgd(h["lr"] * self.scale, momentum=MOMENTUM)

    def __call__(self, h):
        return self.optimizer(h)


class EditedTuner:
    """`Tuner` after an edit of its method's body: the same names, other code."""

    def __init__(self, scale):
        self.scale = scale

    def optimizer(self, h):
        return optax.adam(h["lr"] * self.scale)

    def __call__(self, h):
        return self.optimizer(h)


EditedTuner.__qualname__ = "Tuner"
for _name in ("__init__", "optimizer", "__call__"):
    getattr(EditedTuner, _name).__qualname__ = f"Tuner.{_name}"


def test_a_method_or_callable_object_is_fingerprinted_by_its_code(ridge_problem, key, tmp_path, monkeypatch):
    """A bound method is described as its function (code, closure, the globals it reads) and its
    object; a callable object by its class's functions: editing a global they read, or their code,
    is a different call."""
    def described(optimizer):
        return hg.store.fingerprint("grid", hg.Objective(ridge_problem, optimizer, num_steps=5), SPACE, key)

    tuner = Tuner(1.0)
    by_method, by_call = described(tuner.optimizer), described(tuner)
    assert first_difference(by_method, described(Tuner(1.0).optimizer)) is None
    assert first_difference(by_call, described(Tuner(1.0))) is None
    assert first_difference(by_call, described(Tuner(2.0))) == "objective.optimizer.fields.scale"
    edited = EditedTuner(1.0)
    assert first_difference(by_method, described(edited.optimizer)) == "objective.optimizer.method.code"
    assert first_difference(by_call, described(edited)) == "objective.optimizer.methods.Tuner.optimizer.code"
    monkeypatch.setattr(f"{__name__}.MOMENTUM", 0.0)
    assert first_difference(by_method, described(tuner.optimizer)) == "objective.optimizer.method.globals.MOMENTUM"
    assert first_difference(by_call, described(tuner)) == "objective.optimizer.methods.Tuner.optimizer.globals.MOMENTUM"
    db = tmp_path / "study.db"
    monkeypatch.setattr(f"{__name__}.MOMENTUM", 0.5)
    hg.grid_search(hg.Objective(ridge_problem, tuner.optimizer, num_steps=5), SPACE, key, 2, storage=db, study="m")
    monkeypatch.setattr(f"{__name__}.MOMENTUM", 0.0)
    with pytest.raises(ValueError, match=r"objective.optimizer.method.globals.MOMENTUM differs \(0.5 stored, 0.0 now\)"):
        hg.grid_search(hg.Objective(ridge_problem, tuner.optimizer, num_steps=5), SPACE, key, 2, storage=db, study="m")


NO_DECAY = frozenset({"bias", "scale", "embedding", "norm", "kernel_norm", "pos"})


def test_a_set_is_described_in_an_order_no_hash_seed_changes():
    """A set's iteration order (and repr) follows PYTHONHASHSEED: described sorted, the identical
    call resumes in a new process."""
    def optimizer(h):
        return optax.adamw(h["lr"], mask=lambda p: {k: k not in NO_DECAY for k in p})

    described = identity(optimizer)["globals"]["NO_DECAY"]
    assert described == {"frozenset": sorted(NO_DECAY)}
    assert identity({3, 1, 2}) == {"set": [1, 2, 3]} and identity({(2, "b"), (1, "a")}) == {"set": [[1, "a"], [2, "b"]]}


def test_a_description_too_large_is_refused_not_cut_short(ridge_problem, key, tmp_path):
    """Past its bound of objects a fingerprint would be blind to what follows: storage refuses the
    call, and the digest `extends=` compares never matches another objective's."""
    table = [(i,) for i in range(30_000)]  # a node each (numbers alone are no node)
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"] * (1 + 0 * len(table))), num_steps=5)
    with pytest.raises(ValueError, match="storage=, study=: this call cannot be checked on resume"):
        hg.grid_search(objective, SPACE, key, 2, storage=tmp_path / "s.db", study="big")
    assert hg.store.objective_digest(objective) != hg.store.objective_digest(objective)


def test_a_study_stored_by_the_format_2_fingerprint_still_resumes(ridge_objective, key, tmp_path):
    """A study stored before fingerprints followed closures to any depth is compared as it was made."""
    db = tmp_path / "study.db"
    with fingerprint_format(2), pytest.raises(Stop):
        hg.tune(ridge_objective, SPACE, key, steps=3, outer=warmup_cosine_adamw(0.1), storage=db, study="t",
                progress=stop_after(1))
    with sqlite3.connect(db) as conn:
        assert json.loads(conn.execute("SELECT fingerprint FROM studies").fetchone()[0])["format"] == 2
    progress = stop_after(0)
    assert_same_trials(hg.tune(ridge_objective, SPACE, key, steps=3, outer=warmup_cosine_adamw(0.1)),
                       hg.tune(ridge_objective, SPACE, key, steps=3, outer=warmup_cosine_adamw(0.1), storage=db,
                               study="t", progress=progress))
    assert len(progress.calls) == 3  # resumed after the stored first of its 4 reports (start, 3 steps)
    with pytest.raises(ValueError, match="arguments.steps differs"):
        hg.tune(ridge_objective, SPACE, key, steps=4, outer=warmup_cosine_adamw(0.1), storage=db, study="t")


def test_the_computation_runs_at_most_one_commit_ahead_of_the_file(ridge_objective, key, tmp_path, monkeypatch):
    """A kill loses at most the commit in flight and the chunk computing: with writes slower than
    the chunks, every trial reported but one chunk's is already in the file (the writer's queue
    once grew without bound, and a kill lost hundreds of reported trials)."""
    db = tmp_path / "study.db"
    write = hg.store.StudyWriter._rows

    def slow(self, trials, state):
        time.sleep(0.03)
        write(self, trials, state)

    monkeypatch.setattr(hg.store.StudyWriter, "_rows", slow)
    behind = []

    def progress(line):
        reported = int(line.split("] ")[1].split("/")[0])
        with contextlib.closing(sqlite3.connect(db)) as conn:
            behind.append(reported - conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    hg.random_search(ridge_objective, SPACE, key, 24, chunk_size=2, storage=db, study="r", progress=progress)
    assert len(behind) == 12 and max(behind) <= 2, behind  # the chunk reported, its commit in flight
    assert len(hg.load_study(db, "r").trials) == 24


def _interrupt_inside_a_put(caller):
    """A trace function raising KeyboardInterrupt where Python's SIGINT handler can: in the queue's
    `Condition.notify` during the first `StudyWriter._submit` called from `caller` (the writer's
    `__init__`, submitting the file's set-up, or `commit`), after the lock of the waiting writer
    thread was released and before that waiter left the condition's list. Before the put it waits
    for the thread to be waiting, so the interrupt lands every time. Returns (tracer, writers hit)."""
    lines, start = inspect.getsourcelines(threading.Condition.notify)
    remove = start + next(i for i, line in enumerate(lines) if "waiters.remove" in line)
    writers = []

    def submitting(frame):
        while frame is not None:
            if frame.f_code is hg.store.StudyWriter._submit.__code__:
                return frame.f_locals["self"] if frame.f_back.f_code is caller.__code__ else None
            frame = frame.f_back
        return None

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == remove and not writers:
            writer = submitting(frame)
            if writer is not None:
                writers.append(writer)
                raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        if frame.f_code is hg.store.StudyWriter._submit.__code__ and frame.f_back.f_code is caller.__code__:
            thread, waiting = frame.f_locals["self"]._thread, frame.f_locals["self"]._queue.not_empty._waiters
            deadline = time.monotonic() + 5
            while thread is not None and not waiting and time.monotonic() < deadline:
                time.sleep(0.001)
            return None
        return local if frame.f_code is threading.Condition.notify.__code__ and not writers else None

    return tracer, writers


@pytest.mark.parametrize("caller", ["__init__", "commit"])
def test_ctrl_c_inside_the_writers_put_leaves_no_thread_behind(ridge_objective, key, tmp_path, caller):
    """Ctrl-C landing inside the writer's queue.put left a stale waiter in the queue's condition: the
    closing None woke it instead of the writer thread, which slept forever (a non-daemon thread: the
    interpreter never exited; in `__init__`, no caller held the writer to close it). The thread now
    ends, the commits made are in the file, and the same call resumes the study."""
    db = tmp_path / "study.db"
    tracer, writers = _interrupt_inside_a_put(getattr(hg.store.StudyWriter, caller))
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            hg.random_search(ridge_objective, SPACE, key, 24, chunk_size=2, storage=db, study="r")
    finally:
        sys.settrace(None)
    (writer,) = writers
    writer._thread.join(timeout=5)
    stuck = writer._thread.is_alive()
    if stuck:  # the old writer: wake it, for the pytest process to exit
        with writer._queue.not_empty:
            writer._queue.not_empty.notify_all()
        writer._queue.put(None)
        writer._thread.join(timeout=5)
    assert not stuck, "the store's writer thread outlived the interrupted call"
    numbers = [t.number for t in hg.load_study(db, "r").trials]
    assert numbers == list(range(len(numbers)))
    assert bool(numbers) == (caller == "commit")  # the interrupted commit was queued, so written
    assert len(hg.random_search(ridge_objective, SPACE, key, 24, chunk_size=2, storage=db, study="r").trials) == 24


def test_storage_and_study_come_together(ridge_objective, key, tmp_path):
    with pytest.raises(ValueError, match="storage= was given without study="):
        hg.random_search(ridge_objective, SPACE, key, 4, storage=tmp_path / "a.db")
    with pytest.raises(ValueError, match="study= was given without storage="):
        hg.tune(ridge_objective, SPACE, key, steps=2, study="s")
    with pytest.raises(ValueError, match="study=3 must be a non-empty string"):
        hg.grid_search(ridge_objective, SPACE, key, 2, storage=tmp_path / "a.db", study=3)
    with pytest.raises(ValueError, match="study='nope' is not in"):
        hg.random_search(ridge_objective, SPACE, key, 2, storage=tmp_path / "b.db", study="yes")
        hg.load_study(tmp_path / "b.db", "nope")
    assert not os.path.exists(tmp_path / "a.db")
    for storage in ("", ":memory:"):  # SQLite's temporary databases: nothing would be kept
        with pytest.raises(ValueError, match=f"storage='{storage}' keeps nothing .* give the path of a file"):
            hg.random_search(ridge_objective, SPACE, key, 2, storage=storage, study="s")
    with pytest.raises(ValueError, match="is a directory: give the path of a file in it, e.g. storage=.*study.db"):
        hg.grid_search(ridge_objective, SPACE, key, 2, storage=tmp_path, study="s")


@pytest.mark.parametrize("kwargs,reports", [(dict(population=4, warmup=8, halving=2, steps=5), 4),
                                            (dict(population=4, warmup=8, steps=3), 1),
                                            (dict(steps=4), 3)])
def test_tune_resumes_from_its_checkpoint(ridge_objective, key, tmp_path, kwargs, reports):
    """Killed after the warm-up's chunk (reports=1) or after a few steps, across a halving round."""
    db = tmp_path / "study.db"
    whole = hg.tune(ridge_objective, SPACE, key, **kwargs)
    with pytest.raises(Stop):
        hg.tune(ridge_objective, SPACE, key, **kwargs, storage=db, study="t", progress=stop_after(reports))
    stored = hg.load_study(db, "t")
    assert 0 < len(stored.trials) < len(whole.trials)
    resumed = hg.tune(ridge_objective, SPACE, key, **kwargs, storage=db, study="t")
    assert_same_trials(whole, resumed)
    assert_same_trials(whole, hg.load_study(db, "t"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT step, number FROM checkpoints").fetchall() == [(kwargs["steps"], len(whole.trials))]
    with pytest.raises(ValueError, match=r"arguments.outer\S* differs"):  # Adam 0.1, not the default 0.05
        hg.tune(ridge_objective, SPACE, key, **kwargs, outer=optax.adam(0.1), storage=db, study="t")


TUNE_INTS = dict(steps=2, population=2, warmup=4, halving=1, chunk_size=2, resample_key=True)
TUNE_NUMPY_INTS = dict(steps=np.int64(2), population=np.int32(2), warmup=np.int64(4), halving=np.int64(1),
                       chunk_size=np.int64(2), resample_key=np.bool_(True))


@pytest.mark.parametrize("first, again", [(TUNE_NUMPY_INTS, TUNE_INTS), (TUNE_INTS, TUNE_NUMPY_INTS)])
def test_a_tune_study_resumes_with_equal_ints_of_either_kind(ridge_objective, key, tmp_path, first, again):
    # warmup= and halving= reached the fingerprint as given, so a study opened with np.int64(1)
    # refused the same call with 1 ("arguments.halving differs"), and the other way round
    db = tmp_path / "study.db"
    with pytest.raises(Stop):
        hg.tune(ridge_objective, SPACE, key, **first, storage=db, study="t", progress=stop_after(3))
    resumed = hg.tune(ridge_objective, SPACE, key, **again, storage=db, study="t")
    assert_same_trials(hg.tune(ridge_objective, SPACE, key, **TUNE_INTS), resumed)
    # stored as the Python ints' description, the one earlier versions stored: their studies resume
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT fingerprint FROM studies WHERE name = 't'").fetchone()
    arguments = {name: value for name, value in TUNE_INTS.items() if name != "chunk_size"}
    assert json.loads(stored) == json.loads(hg.store._json(hg.store.fingerprint(
        "tune", ridge_objective, SPACE, key, method=hg.Reverse(), outer=DEFAULT_OUTER, init=None,
        **arguments)))


@pytest.mark.parametrize("kwargs", [dict(steps=2), dict(population=2, warmup=4, halving=1, steps=2)])
def test_resuming_a_finished_tune_study_returns_it_without_compiling(ridge_objective, key, tmp_path, kwargs):
    # the same call again (the documented way to get a study's Result back) compiled the outer
    # step, in a new process, before reading the checkpoint that said every step had run
    db = tmp_path / "study.db"
    first = hg.tune(ridge_objective, SPACE, key, **kwargs, storage=db, study="t")
    hg.clear_caches()  # as in a new process
    compilations = _compile.stats.compilations
    progress = stop_after(0)
    again = hg.tune(ridge_objective, SPACE, key, **kwargs, storage=db, study="t", progress=progress)
    assert _compile.stats.compilations == compilations and progress.calls == []
    assert_same_trials(first, again)
    assert (again.strategy, again.run_flops, again.compile_seconds, again.setup_seconds) == \
        (first.strategy, first.run_flops, first.compile_seconds, first.setup_seconds)
    assert again.info == json.loads(json.dumps(first.info)) and again.info["steps"] == kwargs["steps"]
    with pytest.raises(ValueError, match="arguments.steps differs"):  # still the stored call's alone
        hg.tune(ridge_objective, SPACE, key, **{**kwargs, "steps": 3}, storage=db, study="t")


def test_hybrid_search_resumes(ridge_objective, key, tmp_path):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.Choice([1e-3, 1e-1])})
    db = tmp_path / "study.db"
    whole = hg.hybrid_search(ridge_objective, space, key, budget=40)
    with pytest.raises(Stop):
        hg.hybrid_search(ridge_objective, space, key, budget=40, storage=db, study="h", progress=stop_after(2))
    assert_same_trials(whole, hg.hybrid_search(ridge_objective, space, key, budget=40, storage=db, study="h"))
    with pytest.raises(ValueError, match="arguments.budget differs"):
        hg.hybrid_search(ridge_objective, space, key, budget=50, storage=db, study="h")


def test_optuna_search_resumes_by_replaying_its_sampler(ridge_objective, key, tmp_path):
    optuna = pytest.importorskip("optuna")
    db = tmp_path / "study.db"
    whole = hg.optuna_search(ridge_objective, SPACE, key, 12, batch_size=4)
    with pytest.raises(Stop):
        hg.optuna_search(ridge_objective, SPACE, key, 12, batch_size=4, storage=db, study="o", progress=stop_after(2))
    progress = stop_after(0)
    resumed = hg.optuna_search(ridge_objective, SPACE, key, 12, batch_size=4, storage=db, study="o", progress=progress)
    assert len(progress.calls) == 1
    assert_same_trials(whole, resumed)
    with pytest.raises(Stop):
        hg.optuna_search(ridge_objective, SPACE, key, 12, batch_size=4, storage=db, study="u",
                         sampler=optuna.samplers.RandomSampler(seed=1), progress=stop_after(1))
    with pytest.raises(ValueError, match="proposed trial 0 differently"):
        hg.optuna_search(ridge_objective, SPACE, key, 12, batch_size=4, storage=db, study="u",
                         sampler=optuna.samplers.RandomSampler(seed=2))
    with pytest.raises(ValueError, match="study= was given without storage="):
        hg.optuna_search(ridge_objective, SPACE, key, 4, study="o")


def test_to_optuna_reads_back(ridge_objective, key, tmp_path):
    optuna = pytest.importorskip("optuna")
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(5,), independent=True),
                      "weight_decay": hg.Uniform(0.0, 1.0)})
    db = tmp_path / "study.db"
    tuned = hg.random_search(ridge_objective, space, key, 6, storage=db, study="t")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    hg.load_study(db, "t").to_optuna(url, "t")
    study = optuna.load_study(study_name="t", storage=url)
    assert len(study.trials) == len(tuned.trials)
    assert study.best_value == tuned.best_value
    for ours, theirs in zip(tuned.trials, study.trials):
        assert theirs.value == ours.value and theirs.user_attrs["number"] == ours.number
        assert theirs.params["weight_decay"] == float(ours.hparams["weight_decay"])
        assert theirs.distributions["weight_decay"] == optuna.distributions.FloatDistribution(0.0, 1.0)
        assert theirs.user_attrs["hparam_lr"] == ours.hparams["lr"].tolist()  # a schedule: a user attribute
        assert ("lr" in theirs.params) == bool(np.all(ours.hparams["lr"] == ours.hparams["lr"][0]))
        assert theirs.user_attrs["test_loss"] == ours.scores["test_loss"]
    constant = hg.random_search(ridge_objective, SPACE, key, 3, storage=db, study="c")  # scalar lr: a param
    constant.to_optuna(url, "c")
    read = optuna.load_study(study_name="c", storage=url).trials
    assert [t.params["lr"] for t in read] == [float(t.hparams["lr"]) for t in constant.trials]
    assert read[0].distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)
    with pytest.raises(ValueError, match="already exists"):
        tuned.to_optuna(url, "t")


def test_values_and_structural_options_round_trip():
    space = hg.Space({"hidden": hg.Choice([(4,), (8, 8)]), "act": hg.Choice(["tanh", abs]),
                      "lr": hg.LogUniform(1e-3, 1.0, shape=(3,))})
    hparams = {"hidden": (8, 8), "act": abs, "lr": np.array([np.nan, np.inf, 1e-300], np.float32),
               "n": np.int32(3)}
    encoded = encode_hparams(hparams, space)
    back = decode_hparams(encoded, space)
    assert back["hidden"] == (8, 8) and back["act"] is abs and back["n"] == 3 and back["n"].dtype == np.int32
    assert back["lr"].dtype == np.float32 and np.array_equal(back["lr"], hparams["lr"], equal_nan=True)
    assert decode_hparams(encoded, None)["act"] == "<built-in function abs>"  # no space: its repr
    for value in (0.1 + 0.2, -math.inf, (1, "a", [2.5, None]), {"k": np.float64(1e-310)}):
        again = decode_value(encode_value(value))
        assert repr(again) == repr(value) or again == value


def test_a_process_other_than_0_reads_the_study_and_writes_nothing(ridge_objective, key, tmp_path, monkeypatch):
    """In a multi-process run process 0 alone writes; the others resume from what it stored."""
    db = tmp_path / "study.db"
    whole = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4)
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r", progress=stop_after(1))
    monkeypatch.setattr(hg.store, "is_writer", lambda: False)
    progress = stop_after(0)
    assert_same_trials(whole, hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r",
                                               progress=progress))
    assert len(progress.calls) == 2  # the stored first chunk was loaded, the other two ran
    (info,) = hg.list_studies(db)
    assert (info.num_trials, info.state) == (4, "running")  # nothing written
    with pytest.raises(ValueError, match="arguments.num_trials differs"):
        hg.random_search(ridge_objective, SPACE, key, 11, storage=db, study="r")
    hg.random_search(ridge_objective, SPACE, key, 3, storage=tmp_path / "none.db", study="r")
    assert not os.path.exists(tmp_path / "none.db")


def test_a_resume_logs_each_trial_once(ridge_objective, key, tmp_path):
    """A process killed after logging a chunk but before its commit landed re-ran that chunk on
    resume and logged its trials a second time (408 log lines for 400 trials). The state is made
    here by deleting the last commit's rows: a resume now leaves out the trials the log already
    holds for the study; a new study of the same name (a new file) logs all of its own."""
    db, log = tmp_path / "study.db", tmp_path / "trials.jsonl"
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r", log=log,
                         progress=stop_after(2))
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM trials WHERE number >= 4")  # the second commit never landed
    resumed = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=db, study="r", log=log)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["number"] for r in records] == list(range(10))
    assert {(r["strategy"], r["study"]) for r in records} == {("random", "r")}
    assert [r["value"] for r in records] == [t.value for t in resumed.trials]
    hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=4, storage=tmp_path / "new.db", study="r", log=log)
    assert [json.loads(line)["number"] for line in log.read_text().splitlines()] == [*range(10), *range(10)]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_log_that_is_the_study_file_is_refused_by_name(ridge_objective, key, tmp_path, suffix, caplog):
    # log= naming the storage= file was accepted: SQLite's pages overwrote every record, and no trial was in the log.
    # Refused before anything compiles: each strategy checks its log against its storage with its first checks.
    db = tmp_path / "run.db"
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        for call in (lambda: hg.random_search(ridge_objective, SPACE, key, 4, storage=db, study="r",
                                              log=f"{db}{suffix}"),
                     lambda: hg.tune(ridge_objective, SPACE, key, steps=2, storage=str(db), study="t",
                                     log=tmp_path / ".." / tmp_path.name / f"run.db{suffix}"),
                     lambda: hg.grid_search(ridge_objective, SPACE, key, points_per_axis=2, storage=db, study="g",
                                            log=f"{db}{suffix}"),
                     lambda: hg.optuna_search(ridge_objective, SPACE, key, 4, storage=db, study="o",
                                              log=f"{db}{suffix}")):
            with pytest.raises(ValueError, match=r"log=.*is the study file storage=.*give the log its own path, e.g. "
                                                 r"log='.*run\.jsonl'"):
                call()
    assert [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()] == []
    hg.random_search(ridge_objective, SPACE, key, 4, storage=db, study="r", log=tmp_path / "run.jsonl")  # the fix


def test_check_log_refuses_the_study_file_before_anything_runs(tmp_path):
    db = tmp_path / "run.db"
    with pytest.raises(ValueError, match="storage="):
        check_log(str(db) + "-shm", storage=db)
    assert check_log(tmp_path / "run.jsonl", storage=db) == tmp_path / "run.jsonl"
    assert check_log(db) == db  # no study: nothing to compare with


def test_a_resumed_study_logs_its_trials_beside_a_same_named_study_of_another_file(ridge_objective, key, tmp_path):
    # One log for a script, storage=f"seed{seed}.db", study="s": a resumed seed-1 study left out of the log every trial
    # whose number seed 0's study had logged (its records named the study's name alone). Records now name the file and
    # the study's creation time, and a resume dedups against its own study's records only.
    log = tmp_path / "trials.jsonl"
    hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=tmp_path / "seed0.db", study="s", log=log)
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, jax.random.key(1), 8, chunk_size=4, storage=tmp_path / "seed1.db",
                         study="s", log=log, progress=stop_after(1))
    hg.random_search(ridge_objective, SPACE, jax.random.key(1), 8, chunk_size=4, storage=tmp_path / "seed1.db",
                     study="s", log=log)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_file = {}
    for r in records:
        by_file.setdefault(os.path.basename(r.get("storage", "unnamed")), []).append(r["number"])
    assert by_file == {"seed0.db": list(range(8)), "seed1.db": list(range(8))}
    created = {r["storage"]: r["study_created"] for r in records}
    assert [s.created for s in hg.list_studies(tmp_path / "seed1.db")] == [created[str(tmp_path / "seed1.db")]]


def test_a_log_written_before_records_named_their_study_still_resumes_once(ridge_objective, key, tmp_path):
    # A record without "storage" (an older log) counts for every study of its name: the resume logs each trial once.
    db, log = tmp_path / "study.db", tmp_path / "trials.jsonl"
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=db, study="r", log=log,
                         progress=stop_after(2))
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM trials WHERE number >= 4")  # the second commit never landed
    older = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("storage", "study_created")}) + "\n"
                           for r in older))
    hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=db, study="r", log=log)
    assert [json.loads(line)["number"] for line in log.read_text().splitlines()] == list(range(8))


def test_a_second_thread_writing_the_same_study_is_refused_before_it_computes(ridge_objective, key, tmp_path):
    # A lease held by this very process counted as stale: a second thread took it over, computed the same trials, met a
    # raw sqlite3.IntegrityError at its commit, and its exit deleted the first thread's lease.
    db = tmp_path / "study.db"
    first_chunk, go_on, outcome = threading.Event(), threading.Event(), {}

    def progress(line):
        first_chunk.set()
        assert go_on.wait(60)

    def first():
        outcome["A"] = hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=db, study="s",
                                        progress=progress)
    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_chunk.wait(60)
        second = []
        with pytest.raises(RuntimeError, match=rf"study 's' in .* is being written by pid {os.getpid()}"):
            hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=db, study="s",
                             progress=second.append)
        assert second == []  # refused when it opened the study, before computing
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT pid FROM leases WHERE study = 's'").fetchall() == [(os.getpid(),)]
    finally:
        go_on.set()
        thread.join(60)
    assert len(outcome["A"].trials) == 8
    again = hg.random_search(ridge_objective, SPACE, key, 8, chunk_size=4, storage=db, study="s")  # released: resumes
    assert_same_trials(again, outcome["A"])


def test_list_studies_best_value_of_a_resample_key_tune_is_its_results_pick(logistic_minibatch_problem, key, tmp_path):
    """list_studies reported a resample_key tune's best_value as the minimum over every trial, each
    step's scored on its own key, below the Result's best_value (the pick among trials scored on the
    call's key, b5ed533). It now applies the Result's rule; other studies keep the plain minimum."""
    db = tmp_path / "study.db"
    objective = hg.Objective(logistic_minibatch_problem, lambda h: optax.chain(
        optax.add_decayed_weights(h["weight_decay"]), optax.sgd(h["lr"])), num_steps=6)
    result = hg.tune(objective, SPACE, jax.random.key(3), steps=4, outer=optax.adam(0.3), resample_key=True,
                     storage=db, study="t")
    plain = hg.random_search(objective, SPACE, key, 6, storage=db, study="r")
    every = min(t.value for t in result.trials if math.isfinite(t.value))
    assert every < result.best_value  # else this test could not tell the two rules apart
    listed = {s.name: s.best_value for s in hg.list_studies(db)}
    assert listed == {"t": result.best_value, "r": plain.best_value}
    assert listed["t"] == hg.load_study(db, "t").best_value


def test_an_array_of_equal_values_with_both_signs_of_zero_round_trips_exactly():
    # [0.0, -0.0, 0.0] was stored as {"fill": 0.0} (0.0 == -0.0) and read back without its negative zero
    for dtype in (np.float16, np.float32, np.float64):
        a = np.array([0.0, -0.0, 0.0], dtype)
        back = decode_value(json.loads(json.dumps(encode_value(a))))
        assert back.dtype == a.dtype and np.array_equal(np.signbit(back), np.signbit(a))
    same = np.full(4, -0.0, np.float32)  # one repeated value, sign included: still the short form
    assert "fill" in encode_value(same)["array"] and np.signbit(decode_value(encode_value(same))).all()
