"""The study store read and opened while another process writes or creates it (hunt CONCURRENCY, session 33).

Interleavings are made by hand (a hook commits between two reads or just before a set-up; a second connection
holds a lock), so the tests are deterministic: `load_study` of a running tune study read its trials and its
checkpoint in separate snapshots and called a study whose next step landed between them damaged ("trial(s) [...]
missing (rows deleted by hand?) ... Use another study name"); a new file opened by two processes at once, or read
while being created, was called "truncated, damaged"; a call that lost a race to start the same study in a new
file crashed with a raw IntegrityError and left its trials in the shared log.
"""

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

import hypergrad as hg
from hypergrad import store
from hypergrad.results import Trial, TrialRecorder

TUNE_CALL = {"format": store.FINGERPRINT_FORMAT, "arguments": {"steps": 10, "warmup": 0}}


def _trial(number):
    return Trial(number=number, hparams={"lr": np.array(0.1 + number)}, value=1.0 / (number + 1),
                 scores={"val_loss": 1.0 / (number + 1)}, state="complete", flops=1.0, seconds=0.0, run_flops=1.0,
                 grad_norm=0.5, tuner=0)


def _step(writer, step):
    """One outer step of a population of two as `tune` commits it: its two trials and the checkpoint after them,
    in one transaction, written before this returns."""
    writer.add(_trial(2 * step))
    writer.add(_trial(2 * step + 1))
    writer.commit(lambda: {"step": step + 1, "number": 2 * step + 2, "state": {"z": np.arange(2.0) + step}})
    writer.flush()


def test_load_study_of_a_running_tune_study_is_one_snapshot(tmp_path, monkeypatch):
    path = str(tmp_path / "t.db")
    writer = store.open_study(path, "t", kind="tune", fingerprint=TUNE_CALL)
    try:
        for step in range(2):
            _step(writer, step)
        read_trials = store._read_trials

        def read_then_another_step(*args, **kwargs):  # the writer's next step lands just after the trials' read
            trials = read_trials(*args, **kwargs)
            monkeypatch.setattr(store, "_read_trials", read_trials)
            _step(writer, 2)
            return trials

        monkeypatch.setattr(store, "_read_trials", read_then_another_step)
        loaded = hg.load_study(path, "t")  # the state before that step, whole: not "missing (rows deleted...)"
        assert [t.number for t in loaded.trials] == [0, 1, 2, 3]
        assert [t.number for t in hg.load_study(path, "t").trials] == list(range(6))  # and the next read sees it
        assert hg.list_studies(path)[0].num_trials == 6
    finally:
        writer.close()


def test_a_new_store_file_opened_while_another_connection_holds_it_waits_for_it(tmp_path):
    """Two processes creating one store file at once: the second's switch to WAL found the file locked by the
    first's creation, and SQLite does not wait for a lock there, so it failed at once as 'not a readable
    hypergrad study file (database is locked): it was truncated, damaged'. It now waits (the busy timeout)."""
    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process's creation of the schema holds the new file
    opened = []

    def connect():
        try:
            opened.append(store._connect(path))
        except Exception as err:  # noqa: BLE001 - asserted below
            opened.append(err)

    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(0.3)  # the lock is held while the other connection tries (no timing is asserted)
    holder.execute("COMMIT")
    holder.close()
    thread.join()
    assert isinstance(opened[0], sqlite3.Connection), opened[0]
    try:
        assert opened[0].execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert opened[0].execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0].startswith("hypergrad")
    finally:
        opened[0].close()


def test_a_store_locked_past_the_busy_timeout_is_said_to_be_locked_not_damaged(tmp_path, monkeypatch):
    path = str(tmp_path / "s.db")
    store._connect(path).close()
    monkeypatch.setattr(store, "_BUSY_SECONDS", 0.2, raising=False)  # instead of 30 s
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write, longer than the busy timeout
    try:
        with pytest.raises(ValueError, match="is locked by another process") as caught:
            store.open_study(path, "s", kind="random", fingerprint={"format": store.FINGERPRINT_FORMAT})
        assert "truncated" not in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.open_study(path, "s", kind="random", fingerprint={"format": store.FINGERPRINT_FORMAT}).close()


def test_a_store_file_being_created_reads_as_holding_no_study_not_as_damaged(tmp_path):
    """A reader polling a file another process is creating (the file exists, its schema not yet committed) was
    told 'not a readable hypergrad study file (no such table: meta): it was truncated, damaged'."""
    path = str(tmp_path / "new.db")
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("PRAGMA journal_mode = WAL")  # as `_connect` creates a store: WAL, then the schema in one
    creator.execute("BEGIN IMMEDIATE")  # transaction, not committed yet
    creator.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    try:
        assert hg.list_studies(path) == []
        with pytest.raises(ValueError, match=r"study='s' is not in .*; it holds \[\]"):
            hg.load_study(path, "s")
    finally:
        creator.execute("ROLLBACK")
        creator.close()
    store.open_study(path, "s", kind="random", fingerprint={"format": store.FINGERPRINT_FORMAT}).close()
    assert [s.name for s in hg.list_studies(path)] == ["s"]
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # an empty file: no study either
    assert hg.list_studies(str(empty)) == []


def test_a_study_another_process_started_in_a_new_file_meanwhile_is_refused_before_anything_is_written(
        tmp_path, monkeypatch):
    """Two processes starting the same study in a new file at once: the one whose set-up (in its writer's thread)
    came second, once the first had finished, took the study's free lease as its own new study and wrote its
    trial 0 again: a raw 'sqlite3.IntegrityError: UNIQUE constraint failed: trials.study, trials.number'."""
    path = str(tmp_path / "new.db")
    call = {"format": store.FINGERPRINT_FORMAT}
    _other_process_first(monkeypatch, path, call)
    writer = store.open_study(path, "s", kind="random", fingerprint=call)  # no file yet: set up in the background
    try:
        writer.add(_trial(0))
        with pytest.raises(RuntimeError, match="started by another process at the same moment"):
            writer.commit()
            writer.flush()
    finally:
        writer.close()
    conn = sqlite3.connect(path)
    try:  # the other's study as it left it, its lease free
        assert conn.execute("SELECT number, value FROM trials").fetchall() == [(0, 1.0)]
        assert conn.execute("SELECT created FROM studies").fetchall() == [(1.0,)]
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
    finally:
        conn.close()


def _other_process_first(monkeypatch, path, call):
    """Patches `store._opened` so that, just before this call's set-up opens the new file, another process has
    created study 's' in it, committed its trial 0 and ended."""
    opened = store._opened

    def the_other_process_first(*args, **kwargs):
        monkeypatch.setattr(store, "_opened", opened)
        conn = store._connect(path)
        with store._transaction(conn, path):
            store._register(conn, path, "s", "random", call, created=1.0)
            conn.execute(f"INSERT INTO trials (study, {store._TRIAL_COLUMNS}, runs, step) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", store._trial_row("s", _trial(0), None, None))
        conn.close()
        return opened(*args, **kwargs)

    monkeypatch.setattr(store, "_opened", the_other_process_first)


def test_a_call_refused_a_study_started_at_the_same_moment_logs_none_of_its_trials(tmp_path, monkeypatch):
    """The losing call of finding 2 had appended its first chunk's records (or all of them) to the shared log,
    under a study_created no study in the file has: the log showed trials 0.. twice."""
    path, log = str(tmp_path / "new.db"), tmp_path / "log.jsonl"
    call = {"format": store.FINGERPRINT_FORMAT}
    _other_process_first(monkeypatch, path, call)
    writer = store.open_study(path, "s", kind="random", fingerprint=call)
    recorder = TrialRecorder("random", str(log), None, total=2, sink=writer)
    try:
        recorder.add(_trial(0))
        recorder.add(_trial(1))
        with pytest.raises(RuntimeError, match="started by another process at the same moment"):
            recorder.report()
    finally:
        recorder.close()
        writer.close()
    assert log.read_text() == ""
    # a new study this call does start logs its trials at its first commit, each once
    writer = store.open_study(str(tmp_path / "other.db"), "s", kind="random", fingerprint=call)
    recorder = TrialRecorder("random", str(log), None, total=2, sink=writer)
    try:
        recorder.add(_trial(0))
        recorder.add(_trial(1))
        recorder.report()
        writer.flush()
    finally:
        recorder.close()
        writer.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["number"] for r in records] == [0, 1]
    assert {r["study_created"] for r in records} == {hg.list_studies(str(tmp_path / "other.db"))[0].created}
