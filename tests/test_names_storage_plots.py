"""Names and paths the user gives that reach the file system, the shell or matplotlib: a storage
URL is refused, not made a folder; the stale-lease hint is a shell command that works for any path
and study name; strategy labels and hyperparameter names are drawn literally; `plot_result`'s file
names stay distinct for distinct result names."""

import os
import pathlib
import shlex
import sqlite3
import time

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad import plots


def sgd(hparams):
    return optax.sgd(hparams["lr"])


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})


@pytest.mark.parametrize("url", ["sqlite:///study.db", "postgresql://user@host/db", "sqlite:////abs/study.db",
                                 pathlib.Path("sqlite:///study.db")])  # a Path folds it to 'sqlite:/study.db'
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


LABELS = ["_baseline", "", "cost_$x_$", "budget $5 vs $10"]


@pytest.fixture
def legends(monkeypatch):
    """file name -> the texts of every legend, tick label, axis label and title of the figure,
    read as it is saved (matplotlib's own Figure.savefig wrapped)."""
    from matplotlib.figure import Figure

    record, savefig = {}, Figure.savefig

    def recording_savefig(fig, fname, *args, **kwargs):
        out = savefig(fig, fname, *args, **kwargs)  # drawn first: a mathtext error would raise here
        texts = {"legend": [], "other": []}
        for ax in fig.axes:
            if ax.get_legend() is not None:
                texts["legend"] += [t.get_text() for t in ax.get_legend().get_texts()]
            texts["other"] += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
            texts["other"] += [t.get_text() for t in ax.get_xticklabels()]
        record[os.path.basename(str(fname))] = texts
        return out

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return record


def test_labels_and_hyperparameter_names_are_drawn_literally(ridge_problem, key, tmp_path, legends):
    pytest.importorskip("matplotlib")
    name = "cost_$x_$"  # a hyperparameter name matplotlib's mathtext cannot parse
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h[name]), num_steps=2)
    space = hg.Space({name: hg.LogUniform(1e-3, 0.5)})
    results = {label: hg.random_search(objective, space, jax.random.fold_in(key, i), num_trials=3)
               for i, label in enumerate(LABELS)}
    paths = hg.compare(results).plot(tmp_path)  # old: mathtext's ValueError, no file
    assert [os.path.basename(p) for p in paths] == ["best_value_vs_compute.png", "picked_hparams.png", "trials.png"]
    # every strategy in every legend, each text as written ('$' escaped, which matplotlib draws as '$'; a
    # leading '_' behind a zero-width space; '' as '')
    drawn = {"\u200b_baseline", "''", r"cost_\$x_\$", r"budget \$5 vs \$10"}
    for file, texts in legends.items():
        assert drawn <= set(texts["legend"]), (file, texts["legend"])
        assert "$" not in "".join(texts["legend"] + texts["other"]).replace(r"\$", ""), file
    assert r"cost_\$x_\$" in legends["picked_hparams.png"]["other"]  # the tick label of the hyperparameter
    paths = plots.plot_result(results["_baseline"], tmp_path / "single", name="$a$_b $")
    assert legends[os.path.basename(paths[0])]["other"][0] == r"\$a\$_b \$: best validation loss"


def test_plot_result_gives_distinct_names_distinct_files(ridge_problem, key, tmp_path):
    pytest.importorskip("matplotlib")
    objective = hg.Objective(ridge_problem, sgd, num_steps=2)
    result = hg.random_search(objective, SPACE, key, num_trials=2)
    names = ["ü", "é", "a/b", "a b", "a_b", ".", "", "-x"]
    files = [os.path.basename(plots.plot_result(result, tmp_path, name=name)[0]) for name in names]
    assert len(set(files)) == len(names), files  # old: ü, é, '' all result_curve.png; a/b, a b, a_b one file
    assert all(f.isascii() and not f.startswith((".", "-", "_")) and f.endswith("_curve.png") for f in files), files
    assert sorted(os.listdir(tmp_path)) == sorted(files + [f[:-len("curve.png")] + "picked_hparams.png" for f in files])
    assert files[names.index("a_b")] == "a_b_curve.png"  # a name safe for a file is its own prefix
    assert files[names.index("a b")].startswith("a_b-")  # readable, then the hash
    assert files[names.index("a b")] == "a_b-c8687a08_curve.png"  # stable: SHA-256, not Python's salted hash()


def test_a_windows_drive_is_not_taken_for_a_url_scheme(ridge_problem, key, tmp_path, monkeypatch):
    # 'C://Users/...' matched the URL pattern (a one-letter scheme); a drive letter is a path
    from hypergrad import store
    assert store.check_study("C://Users/me/study.db", "s") and store.check_study("C:/x/study.db", "s")


def test_plot_files_differ_on_a_file_system_that_ignores_case(ridge_problem, key, tmp_path):
    # 'Tune' and 'tune' were both their own file names: one file on macOS's or Windows' default file system
    pytest.importorskip("matplotlib")
    objective = hg.Objective(ridge_problem, sgd, num_steps=2)
    result = hg.random_search(objective, SPACE, key, num_trials=2)
    files = [os.path.basename(plots.plot_result(result, tmp_path, name=name)[0]) for name in ("Tune", "tune", "TUNE")]
    assert len({f.lower() for f in files}) == 3, files
    assert files[1] == "tune_curve.png"
