"""The study store read and opened while another process writes or creates it (hunt CONCURRENCY, session 33).

Interleavings are made by hand (a hook commits between two reads; a second connection holds a lock), so every
test is deterministic: `load_study` of a running tune study read its trials and its checkpoint in separate
snapshots and called a study whose next step landed between them damaged ("trial(s) [...] missing (rows deleted
by hand?) ... Use another study name").
"""

import math

import numpy as np
import pytest

import hypergrad as hg
from hypergrad import store
from hypergrad.results import Trial

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
