"""The study store under failure: processes killed with SIGKILL mid-search and mid-population-tune
resume to the uninterrupted result; a problem diverging on part of its space stores failed trials
that are never best; truncated and hand-edited files give clear errors and leave the rest readable;
two processes writing one study get a clear error, and the file stays intact.

Child processes run this very file's `child` (the same objective code, so the same study
fingerprint), with float64 and the suite's XLA flags inherited, and are always waited for."""

import functools
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg

HERE = os.path.dirname(os.path.abspath(__file__))
SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
DIVERGING = hg.Space({"lr": hg.LogUniform(1e-3, 1e40), "weight_decay": hg.LogUniform(1e-4, 1.0)})
CHILD = f"""
import sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, {HERE!r})
import test_store_reliability
test_store_reliability.child(*sys.argv[1:])
"""


def sgd(hparams):
    return optax.sgd(hparams["lr"])


@functools.cache
def objective():
    """One objective per process, so its compiled programs serve every call (they are cached by it)."""
    return hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0), sgd, num_steps=8)


def run(kind, storage=None, study=None, progress=False):
    """The call every process makes: a search of 24 trials in chunks of 2, or a population tune."""
    key = jax.random.key(0)
    if kind == "search":
        return hg.random_search(objective(), SPACE, key, 24, chunk_size=2, storage=storage, study=study,
                                progress=progress)
    return hg.tune(objective(), SPACE, key, population=4, halving=2, steps=4, chunk_size=4,
                   storage=storage, study=study, progress=progress)


def child(kind, storage, study, mode, count):
    """A child process: its progress callback kills the process with SIGKILL at the `count`-th
    commit ("kill"), once the store's writer thread has landed at least one of the queued commits
    (on a fast run all of them may still be queued, and the kill would interrupt a study with
    nothing stored), or sleeps `count` ms after each ("slow": to be killed from outside, or to hold
    the study while another process tries it)."""
    calls = []

    def progress(line):
        calls.append(line)
        if mode == "kill" and len(calls) == int(count):
            deadline = time.monotonic() + 60
            while not stored_numbers(storage, study) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "slow":
            time.sleep(int(count) / 1000)

    run(kind, storage, study, progress)


def start_child(*args):
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=120):
    """Waits for the child (killing it past `timeout`); returns (return code, stderr)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def stored_numbers(db, study):
    """The trial numbers stored for `study` ([] while the child has not yet created the file's tables)."""
    if not os.path.exists(db):
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT number FROM trials WHERE study = ? ORDER BY number", (study,)).fetchall()
        except sqlite3.OperationalError:
            return []
    return [n for (n,) in rows]


def assert_same_trials(a, b):
    assert [t.number for t in a.trials] == [t.number for t in b.trials] == list(range(len(a.trials)))
    for x, y in zip(a.trials, b.trials):
        assert (x.state, x.tuner) == (y.state, y.tuner), x.number
        assert x.value == y.value or (math.isnan(x.value) and math.isnan(y.value)), (x.number, x.value, y.value)
        for name in x.hparams:
            assert np.array_equal(x.hparams[name], y.hparams[name]), (x.number, name)


def test_sigkill_mid_population_tune_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Killed (by itself, at a known point) after four of its five steps' commits, past two halving
    rounds (the last commits may still be queued: fewer are stored); the next test kills a search
    from outside at whatever point it reached."""
    db, kind = str(tmp_path / "study.db"), "tune"
    code, err = finish(start_child(kind, db, "s", "kill", 4))
    assert code == -signal.SIGKILL, err[-2000:]
    numbers = stored_numbers(db, "s")
    assert numbers == list(range(len(numbers))) and 0 < len(numbers)
    (info,) = hg.list_studies(db)
    assert info.state == "running"
    whole = run(kind)
    assert len(numbers) < len(whole.trials)
    assert_same_trials(whole, run(kind, db, "s"))
    assert stored_numbers(db, "s") == list(range(len(whole.trials)))  # nothing lost, nothing duplicated
    assert_same_trials(whole, hg.load_study(db, "s"))


def test_sigkill_mid_search_from_outside_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Killed by the parent at whatever point it reached (maybe inside a transaction): nothing
    lost, nothing duplicated."""
    db = str(tmp_path / "study.db")
    proc = start_child("search", db, "s", "slow", 150)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if len(stored_numbers(db, "s")) >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        code, err = finish(proc)
    assert code == -signal.SIGKILL, err[-2000:]
    whole = run("search")
    assert 4 <= len(stored_numbers(db, "s")) < len(whole.trials)
    assert_same_trials(whole, run("search", db, "s"))
    assert stored_numbers(db, "s") == list(range(len(whole.trials)))


def test_a_diverging_region_stores_failed_trials_never_best(tmp_path):
    db = tmp_path / "study.db"
    key = jax.random.key(0)
    result = hg.random_search(objective(), DIVERGING, key, 24, chunk_size=8, storage=db, study="d")
    failed = [t for t in result.trials if t.state == "fail"]
    assert 0 < len(failed) < len(result.trials)  # part of the space diverges; the study went on
    assert result.best_trial.state == "complete" and math.isfinite(result.best_value)
    loaded = hg.load_study(db, "d")
    assert_same_trials(result, loaded)
    assert all(math.isnan(t.value) or math.isinf(t.value) for t in loaded.trials if t.state == "fail")
    assert loaded.best_trial.number == result.best_trial.number
    (info,) = hg.list_studies(db)
    assert info.best_value == result.best_value and info.num_trials == 24

    def interrupt(line):
        raise KeyboardInterrupt  # after the first chunk's commit

    with pytest.raises(KeyboardInterrupt):
        hg.random_search(objective(), DIVERGING, key, 24, chunk_size=8, storage=db, study="e", progress=interrupt)
    assert_same_trials(result, hg.random_search(objective(), DIVERGING, key, 24, chunk_size=8, storage=db, study="e"))


def copy(source, target):
    """A copy of a study file as SQLite makes one (the newest commits may still sit in its WAL)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def _two_studies(tmp_path):
    db = tmp_path / "study.db"
    key = jax.random.key(0)
    a = hg.random_search(objective(), SPACE, key, 6, storage=db, study="a")
    b = hg.grid_search(objective(), SPACE, key, 2, storage=db, study="b")
    return db, a, b


def test_a_study_edited_by_hand_is_a_clear_error_and_the_rest_stays_readable(tmp_path):
    db, a, b = _two_studies(tmp_path)
    for column, value in [("hparams", "{broken"), ("value", b"\x00\x01"), ("state", "weird"),
                          ("scores", '{"val_loss": [1, 2]}')]:
        damaged = tmp_path / f"{column}.db"
        copy(db, damaged)
        with sqlite3.connect(damaged) as conn:
            conn.execute(f"UPDATE trials SET {column} = ? WHERE study = 'a' AND number = 3", (value,))
        with pytest.raises(ValueError, match=r"study 'a' in .* trial 3 is unreadable .* edited or damaged"):
            hg.load_study(damaged, "a")
        with pytest.raises(ValueError, match="trial 3 is unreadable"):
            hg.random_search(objective(), SPACE, jax.random.key(0), 6, storage=damaged, study="a")
        assert_same_trials(b, hg.load_study(damaged, "b"))
        assert [s.name for s in hg.list_studies(damaged)] == ["a", "b"]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE studies SET fingerprint = 'not json' WHERE name = 'b'")
    with pytest.raises(ValueError, match="stored call .fingerprint. is unreadable"):
        hg.grid_search(objective(), SPACE, jax.random.key(0), 2, storage=db, study="b")
    assert_same_trials(a, hg.load_study(db, "a"))


def test_a_truncated_or_foreign_file_is_a_clear_error(tmp_path):
    db, a, b = _two_studies(tmp_path)
    size = os.path.getsize(db)
    for cut in (100, size // 2, size - 1):
        damaged = tmp_path / f"cut{cut}.db"
        copy(db, damaged)
        with open(damaged, "r+b") as f:
            f.truncate(cut)
        for read, whole in ((lambda: hg.load_study(damaged, "a"), a), (lambda: hg.load_study(damaged, "b"), b)):
            try:
                assert_same_trials(whole, read())  # a study whose pages survived reads back whole
            except ValueError as err:
                assert str(damaged) in str(err) and ("truncated" in str(err) or "unreadable" in str(err))
    foreign = tmp_path / "notes.db"
    foreign.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(ValueError, match="not a readable hypergrad study file"):
        hg.random_search(objective(), SPACE, jax.random.key(0), 2, storage=foreign, study="a")
    with pytest.raises(ValueError, match="not a readable hypergrad study file"):
        hg.list_studies(foreign)
    assert foreign.read_text().startswith("these are my notes")  # left as it was
    other = tmp_path / "other.db"  # another program's SQLite database
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE studies (id INTEGER)")
    conn.close()
    with pytest.raises(ValueError, match="not a readable hypergrad study file"):
        hg.random_search(objective(), SPACE, jax.random.key(0), 2, storage=other, study="a")
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("studies",)]  # never written
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_two_processes_writing_one_study(tmp_path):
    """The second writer of a study gets a clear error naming the first; another study of the same
    file is written meanwhile; the file stays intact and both studies equal plain runs."""
    db = str(tmp_path / "study.db")
    proc = start_child("search", db, "x", "slow", 100)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if stored_numbers(db, "x"):
                break
            time.sleep(0.02)
        with pytest.raises(RuntimeError, match=f"study 'x' in .* is being written by pid {proc.pid}"):
            run("search", db, "x")
        other = hg.grid_search(objective(), SPACE, jax.random.key(0), 3, storage=db, study="y")
    finally:
        code, err = finish(proc)
    assert code == 0, err[-2000:]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert_same_trials(run("search"), hg.load_study(db, "x"))
    assert_same_trials(hg.grid_search(objective(), SPACE, jax.random.key(0), 3), other)
    assert {s.name: s.state for s in hg.list_studies(db)} == {"x": "complete", "y": "complete"}
