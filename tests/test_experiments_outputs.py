"""What the experiments write is never lost to the next run, a kill or a failure part-way: pages and
sidecars are replaced whole, reproduce.py keeps the previous log. Every test fakes the measurements
(seconds, no training)."""

import json
import os
import pathlib
import sys

import pytest

FOLDER = pathlib.Path(__file__).parent.parent.joinpath("experiments")


def import_experiment(name):
    sys.path.insert(0, str(FOLDER))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(FOLDER))


def test_a_page_and_sidecar_that_fail_part_way_leave_the_earlier_ones_whole(tmp_path):
    """_claims.write opened <name>.md and <name>.json with "w": a failure while dumping the sidecar (or a
    kill) left the new page beside a truncated sidecar. Both are now made in full first, then replaced."""
    claims = import_experiment("_claims")
    claim = claims.Claim("P", "c", "o", "held", "w")
    claims.write(str(tmp_path), "x", "old body", [claim], seconds=1.0, smoke=True, numbers={"a": 1})
    page, sidecar = (tmp_path / "x.md").read_text(), (tmp_path / "x.json").read_text()
    with pytest.raises(TypeError):
        claims.write(str(tmp_path), "x", "new body", [claim], seconds=2.0, smoke=True, numbers={"a": object()})
    assert (tmp_path / "x.md").read_text() == page and (tmp_path / "x.json").read_text() == sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md"]  # no temporary left


def test_write_atomically_keeps_the_old_file_until_the_new_one_is_whole(tmp_path, monkeypatch):
    claims = import_experiment("_claims")
    path = tmp_path / "f.txt"
    path.write_text("old")
    monkeypatch.setattr(claims.os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        claims.write_atomically(str(path), "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    monkeypatch.undo()
    os.chmod(path, 0o644)
    claims.write_atomically(str(path), "new")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o666 & ~mask


def test_seed_iris_keeps_its_earlier_report_when_stopped_while_writing(tmp_path, monkeypatch):
    """seed_iris.py wrote report.md and results.json with "w": stopped part-way, a run left them empty or
    cut. A stop before the new files are whole (here at the rename) leaves the earlier run's files."""
    seed_iris = import_experiment("seed_iris")
    row = {"library": "scikit-learn", "n_jobs": 1, "fit_s": 1.0, "refit_s": 0.1, "fits": 8,
           "best_params": {"alpha": 1e-4}, "cv_accuracy": 0.9, "cv_std": 0.01, "test_accuracy": 0.9}
    monkeypatch.setattr(seed_iris, "study", lambda library, smoke, n_jobs: dict(row))
    argv = ["--library", "scikit-learn", "--smoke", "--out", str(tmp_path)]
    seed_iris.main(argv)
    report, results = (tmp_path / "report.md").read_text(), (tmp_path / "results.json").read_text()
    row["cv_accuracy"] = 0.5
    claims = import_experiment("_claims")
    monkeypatch.setattr(claims.os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        seed_iris.main(argv)
    assert (tmp_path / "report.md").read_text() == report and (tmp_path / "results.json").read_text() == results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json"]


def test_reproduce_keeps_the_previous_runs_log(tmp_path, monkeypatch, capsys):
    """reproduce.py opened <name>.log with "w": the next run erased the log of a failed one. The previous
    log is now kept as <name>.previous.log."""
    reproduce = import_experiment("reproduce")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "x.py").write_text("import sys\nprint('first run failed')\nsys.exit(2)\n")
    monkeypatch.setattr(reproduce, "HERE", str(scripts))
    assert reproduce.run_one("x", str(tmp_path), False, "r1")[0] == 2
    (scripts / "x.py").write_text("print('second run')\n")
    assert reproduce.run_one("x", str(tmp_path), False, "r2")[0] == 0
    assert (tmp_path / "x.log").read_text() == "second run\n"
    assert (tmp_path / "x.previous.log").read_text() == "first run failed\n"
