"""Names and paths the user gives that reach the file system, the shell or matplotlib: a storage
URL is refused, not made a folder; the stale-lease hint is a shell command that works for any path
and study name; strategy labels and hyperparameter names are drawn literally; `plot_result`'s file
names stay distinct for distinct result names."""

import os
import shlex
import socket
import sqlite3
import subprocess
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
