"""`Result.to_optuna` refuses hypergrad's own study store as its Optuna storage (store hunt s39, finding 3).

The README names the study file "study.db" (`storage="study.db"`); `to_optuna("sqlite:///study.db", ...)`
is an easy slip. Optuna's schema shares the table names `studies` and `trials` with the store, so it
added its eleven other tables to the file and then failed with its vague StorageInternalError. The
call now raises a ValueError naming `storage_url` and the fix (a file of Optuna's own) before Optuna
opens the file, which stays byte for byte as it was.
"""

import os
import re

import jax
import optax
import pytest

import hypergrad as hg

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _files(folder):
    """Every file in `folder` (the store, and any -wal or -shm beside it) with its bytes."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A two-trial random search kept in a study store, and the store's folder."""
    folder = tmp_path_factory.mktemp("store")
    objective = hg.Objective(hg.problems.ridge(num_examples=40, num_features=3, seed=0),
                             lambda h: optax.sgd(h["lr"]), num_steps=3)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
    result = hg.random_search(objective, space, jax.random.key(0), num_trials=2, storage=folder / "study.db",
                              study="rs")
    return result, folder


@pytest.mark.parametrize("url", ["sqlite:///study.db", "sqlite:///{abs}", "sqlite+pysqlite:///{abs}?timeout=5"])
def test_to_optuna_refuses_the_study_store_and_leaves_it_unchanged(stored, monkeypatch, url):
    result, folder = stored
    monkeypatch.chdir(folder)
    url = url.format(abs=folder / "study.db")
    before = _files(folder)
    with pytest.raises(ValueError, match=re.escape(f"storage_url={url!r} is hypergrad's own study store")
                       + r".*give Optuna a SQLite file of its own, e\.g\. 'sqlite:///optuna\.db'"):
        result.to_optuna(url, "rs")
    assert _files(folder) == before  # no Optuna table added, no -wal or -shm left
    assert len(hg.load_study(folder / "study.db", "rs").trials) == 2


def test_to_optuna_still_writes_a_file_of_its_own_beside_the_store(stored, tmp_path):
    result, folder = stored
    loaded = hg.load_study(folder / "study.db", "rs")
    study = loaded.to_optuna(f"sqlite:///{tmp_path / 'optuna.db'}", "rs")
    assert len(study.trials) == 2
    # an Optuna file is not mistaken for a store: a second study goes into it as before
    assert len(result.to_optuna(f"sqlite:///{tmp_path / 'optuna.db'}", "rs2").trials) == 2
