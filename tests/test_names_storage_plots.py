"""Names and paths the user gives that reach the file system, the shell or matplotlib: a storage
URL is refused, not made a folder; the stale-lease hint is a shell command that works for any path
and study name; strategy labels and hyperparameter names are drawn literally; `plot_result`'s file
names stay distinct for distinct result names."""

import os
import shlex
import sqlite3
import time

import optax
import pytest

import hypergrad as hg


def sgd(hparams):
    return optax.sgd(hparams["lr"])


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})


@pytest.mark.parametrize("url", ["sqlite:///study.db", "postgresql://user@host/db", "sqlite:////abs/study.db"])
def test_storage_url_is_refused_before_anything_is_made(ridge_problem, key, tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    objective = hg.Objective(ridge_problem, sgd, num_steps=2)
    with pytest.raises(ValueError, match=r"storage=.*URL.*plain file path.*study\.db.*to_optuna"):
        hg.random_search(objective, SPACE, key, num_trials=2, storage=url, study="s")
    with pytest.raises(ValueError, match=r"storage=.*URL.*to_optuna"):
        hg.load_study(url, "s")
    with pytest.raises(ValueError, match=r"storage=.*URL.*to_optuna"):
        hg.list_studies(url)
    assert os.listdir(tmp_path) == []  # no folder 'sqlite:' (or 'postgresql:') made


def test_the_stale_lease_hint_is_a_shell_command_that_works_for_any_path_and_name(ridge_problem, key, tmp_path):
    path = str(tmp_path / "my studies" / "s.db")
    study = "bob's \"search\" $HOME"
    objective = hg.Objective(ridge_problem, sgd, num_steps=2)
    first = hg.random_search(objective, SPACE, key, num_trials=2, storage=path, study=study)
    with sqlite3.connect(path) as conn:  # a writer on another host: never taken for stale
        conn.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (study, 1, "another-host", time.time()))
    conn.close()
    with pytest.raises(RuntimeError, match="remove its lease: ") as err:
        hg.random_search(objective, SPACE, key, num_trials=2, storage=path, study=study)
    command = str(err.value).split("remove its lease: ", 1)[1]
    argv = shlex.split(command)  # as a POSIX shell splits it
    assert argv[:2] == ["sqlite3", path] and len(argv) == 3
    with sqlite3.connect(path) as conn:  # what the sqlite3 shell would run
        conn.execute(argv[2])
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
    conn.close()
    again = hg.random_search(objective, SPACE, key, num_trials=2, storage=path, study=study)  # resumes
    assert [t.value for t in again.trials] == [t.value for t in first.trials]
